"""Snakemake script: precomputed blur variants for one group of clips (rule vis_group)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.control_jobs import vis_group

run_snakemake_job(snakemake.log[0], lambda: vis_group(snakemake))  # noqa: F821
