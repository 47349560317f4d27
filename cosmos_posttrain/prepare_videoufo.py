"""`python -m cosmos_posttrain.prepare_videoufo`: the VideoUFO stage as one command.

Same flags as the reference's `scripts/prepare_videoufo_dataset.py`. The Snakemake target
`prepare_videoufo` runs the same steps as separate, incremental jobs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli import run_cli
from .hub import download_file
from .videoufo import (
    METADATA_FILE,
    Layout,
    caption_mode,
    check_metadata,
    extract_shard,
    previous_total,
    shard_filename,
    write_summary,
)

log = logging.getLogger("cosmos_posttrain.prepare_videoufo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage_dir", required=True, help="where the dataset is written")
    p.add_argument("--num_videos", type=int, default=8, help="clips to keep (default 8)")
    p.add_argument("--num_tars", type=int, default=1, help="most shards to download (1..200)")
    p.add_argument("--min_frames", type=int, default=93, help="fewest frames a clip may have")
    p.add_argument("--use_brief_caption", action="store_true", help="brief captions only")
    p.add_argument("--no_concat_brief", action="store_true", help="detailed captions only")
    p.add_argument("--skip_download", action="store_true", help="use the tars already there")
    p.add_argument("--skip_metadata", action="store_true", help="use the CSV already there")
    p.add_argument("--repo_id", default="WenhaoWang/VideoUFO")
    p.add_argument("--revision", default="main")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.num_videos < 1:
        p.error("--num_videos must be at least 1")
    if not 1 <= args.num_tars <= 200:
        p.error("--num_tars must be in 1..200")
    return args


def prepare(args: argparse.Namespace) -> dict:
    layout = Layout(Path(args.storage_dir))
    hub = dict(repo_type="dataset", revision=args.revision, retries=args.retries)
    if not layout.metadata.is_file():
        if args.skip_metadata:
            raise FileNotFoundError(f"{layout.metadata}: missing, and --skip_metadata was given")
        download_file(args.repo_id, METADATA_FILE, layout.metadata, **hub)
    check_metadata(layout.metadata)
    mode = caption_mode(args.use_brief_caption, args.no_concat_brief)
    manifests: list[Path] = []
    for shard in range(1, args.num_tars + 1):
        previous = manifests[-1] if manifests else None
        if previous_total(previous)[0] >= args.num_videos:
            break
        if not layout.tar(shard).is_file():
            if args.skip_download:
                raise FileNotFoundError(f"{layout.tar(shard)}: missing, and --skip_download given")
            download_file(args.repo_id, shard_filename(shard), layout.tar(shard), **hub)
        extract_shard(layout.root, shard, args.num_videos, args.min_frames, mode, previous)
        manifests.append(layout.shard_manifest(shard))
    summary = write_summary(layout.root, manifests)
    if summary["num_clips"] < args.num_videos:
        log.warning(
            "only %d of %d clips found in %d shard(s); raise --num_tars for more",
            summary["num_clips"],
            args.num_videos,
            len(manifests),
        )
    log.info("%d clips in %s and %s", summary["num_clips"], layout.videos, layout.captions)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: prepare(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
