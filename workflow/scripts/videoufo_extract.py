"""Snakemake script: extract the valid clips of one VideoUFO shard (checkpoint videoufo_extract)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.videoufo import extract_shard


def main(sm) -> None:
    p = sm.params
    previous = sm.input.previous[0] if sm.input.previous else None
    extract_shard(
        p.storage_dir, int(sm.wildcards.shard), p.num_videos, p.min_frames, p.caption_mode, previous
    )


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
