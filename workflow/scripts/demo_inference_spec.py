"""Snakemake script: write the demo's inference spec (rule demo_inference_spec)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.demo_data import write_demo_spec


def main(sm) -> None:
    write_demo_spec(sm.params.dataset_dir, sm.output.spec)


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
