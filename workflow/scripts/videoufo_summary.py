"""Snakemake script: summarise the shard manifests (rule prepare_videoufo)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.videoufo import write_summary


def main(sm) -> None:
    summary = write_summary(sm.params.storage_dir, list(sm.input))
    print(f"{summary['num_clips']} clips prepared from shards {summary['shards_used']}")


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
