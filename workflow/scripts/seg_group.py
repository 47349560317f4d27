"""Snakemake script: segmentation videos for one group of clips (rule seg_group)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.control_jobs import seg_group

run_snakemake_job(snakemake.log[0], lambda: seg_group(snakemake))  # noqa: F821
