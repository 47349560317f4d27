"""Snakemake script: download one file of a hub repository (rules videoufo_metadata, _tar)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.hub import download_file
from cosmos_posttrain.videoufo import METADATA_FILE, check_metadata


def main(sm) -> None:
    p = sm.params
    path = download_file(
        p.repo_id,
        p.filename,
        sm.output[0],
        revision=p.revision,
        retries=p.retries,
        retry_wait=p.retry_wait,
    )
    if p.filename == METADATA_FILE:
        check_metadata(path)


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
