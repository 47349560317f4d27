"""Snakemake script: build the embedded demo dataset (rule demo_dataset)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.demo_data import build_demo_dataset

run_snakemake_job(snakemake.log[0], lambda: build_demo_dataset(snakemake.params.out_dir))  # noqa: F821
