"""Snakemake script: depth videos for one group of clips, the model loaded once (depth_group)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.control_jobs import depth_group

run_snakemake_job(snakemake.log[0], lambda: depth_group(snakemake))  # noqa: F821
