"""Snakemake script: check dataset_dir and write its manifest (rule validate_dataset)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.validate import validate_dataset, write_manifest


def main(sm) -> None:
    records = validate_dataset(sm.params.dataset_dir, sm.params.num_frames, workers=sm.threads)
    write_manifest(records, sm.output[0])
    print(f"{sm.params.dataset_dir}: {len(records)} clips OK")


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
