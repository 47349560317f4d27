"""Dataset validation: every problem of a dataset folder, each with its file, in one message.

Layout (the reference's): `videos/<id>.mp4`, `captions/<id>.json` (or `.txt`, or `metas/`),
optional `depth/<id>.mp4` and `seg/<id>.mp4` that must match their source clip frame for
frame. A valid dataset gets a manifest: one row per clip, for people and for later stages.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .captions import CAPTION_SUFFIXES, CaptionError, caption_folder, read_caption
from .cli import run_cli
from .errors import DatasetError, VideoError
from .fsutil import write_text_atomic
from .progress import progress
from .video_io import VideoInfo, probe_video

CONTROL_FOLDERS = ("depth", "seg")


@dataclass
class ClipRecord:
    """One manifest row."""

    id: str
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    caption_chars: int
    controls: str


def _probe(path: Path) -> VideoInfo | str:
    try:
        return probe_video(path)
    except VideoError as exc:
        return str(exc).split(": ", 1)[-1]


def _probe_all(paths: list[Path], workers: int) -> dict[Path, VideoInfo | str]:
    """Probe many videos; in worker processes when there are enough to pay for them."""
    if workers > 1 and len(paths) > 32:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(
                progress(
                    pool.map(_probe, paths, chunksize=8),
                    total=len(paths),
                    desc="checking videos",
                    unit="clip",
                )
            )
    else:
        results = [_probe(p) for p in progress(paths, desc="checking videos", unit="clip")]
    return dict(zip(paths, results, strict=True))


def _scan(folder: Path, suffixes: tuple[str, ...]) -> tuple[dict[str, Path], list[Path]]:
    """Files of a folder by stem; hidden files are ignored, anything else is a stray."""
    found: dict[str, Path] = {}
    strays: list[Path] = []
    if not folder.is_dir():
        return found, strays
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in suffixes:
            if entry.stem in found:
                strays.append(entry)  # a second caption file for the same clip
            else:
                found[entry.stem] = entry
        else:
            strays.append(entry)
    return found, strays


def validate_dataset(
    dataset_dir: str | os.PathLike[str],
    num_frames: int,
    required_controls: tuple[str, ...] = (),
    workers: int = 1,
) -> list[ClipRecord]:
    """Check the whole folder; return the manifest rows or raise DatasetError with all problems."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(str(root), [f"{root}: the dataset folder does not exist"])
    problems: list[str] = []
    videos, strays = _scan(root / "videos", (".mp4",))
    if not (root / "videos").is_dir():
        problems.append(f"{root / 'videos'}: missing folder (clips go in videos/<id>.mp4)")
    elif not videos:
        problems.append(f"{root / 'videos'}: no .mp4 files")
    problems += [f"{p}: stray file; videos/ holds only .mp4 clips" for p in strays]

    cap_dir = caption_folder(root)
    captions, cap_strays = _scan(cap_dir, CAPTION_SUFFIXES)
    problems += [
        f"{p}: stray file; {cap_dir.name}/ holds <id>.json or <id>.txt" for p in cap_strays
    ]
    for cid, path in captions.items():
        if cid not in videos:
            problems.append(f"{path}: caption without a video (no videos/{cid}.mp4)")

    controls: dict[str, dict[str, Path]] = {}
    for name in CONTROL_FOLDERS:
        files, ctrl_strays = _scan(root / name, (".mp4",))
        problems += [f"{p}: stray file; {name}/ holds only .mp4 videos" for p in ctrl_strays]
        for cid, path in files.items():
            if cid not in videos:
                problems.append(f"{path}: {name} video without a source clip (no videos/{cid}.mp4)")
        if name in required_controls and not (root / name).is_dir():
            problems.append(f"{root / name}: missing folder; this experiment needs {name}/<id>.mp4")
        controls[name] = files

    to_probe = list(videos.values()) + [p for files in controls.values() for p in files.values()]
    infos = _probe_all(to_probe, workers)

    records: list[ClipRecord] = []
    for cid, video in videos.items():
        clip_problems = len(problems)
        caption = ""
        cap_path = captions.get(cid)
        if cap_path is None:
            problems.append(f"{video}: no caption ({cap_dir.name}/{cid}.json is missing)")
        else:
            try:
                caption = read_caption(cap_path)
            except CaptionError as exc:
                problems.append(f"{cap_path}: {exc}")
        info = infos[video]
        if isinstance(info, str):
            problems.append(f"{video}: {info}")
            continue
        if info.frames < num_frames:
            problems.append(
                f"{video}: has only {info.frames} frames, training needs num_frames={num_frames}"
            )
        present = []
        for name, files in controls.items():
            ctrl = files.get(cid)
            if ctrl is None:
                if name in required_controls:
                    problems.append(f"{video}: no {name} video ({name}/{cid}.mp4 is missing)")
                continue
            present.append(name)
            ctrl_info = infos[ctrl]
            if isinstance(ctrl_info, str):
                problems.append(f"{ctrl}: {ctrl_info}")
            elif ctrl_info.frames != info.frames:
                problems.append(f"{ctrl}: {ctrl_info.frames} frames, its source has {info.frames}")
            elif (ctrl_info.width, ctrl_info.height) != (info.width, info.height):
                problems.append(
                    f"{ctrl}: {ctrl_info.width}x{ctrl_info.height}, its source is "
                    f"{info.width}x{info.height}"
                )
        if len(problems) == clip_problems:
            records.append(
                ClipRecord(
                    cid,
                    info.frames,
                    round(info.fps, 3),
                    info.width,
                    info.height,
                    round(info.duration, 3),
                    len(caption),
                    ",".join(present),
                )
            )
    if problems:
        raise DatasetError(str(root), problems)
    return records


def manifest_tsv(records: list[ClipRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[f.name for f in fields(ClipRecord)], delimiter="\t", lineterminator="\n"
    )
    writer.writeheader()
    for record in records:
        writer.writerow(asdict(record))
    return buffer.getvalue()


def write_manifest(records: list[ClipRecord], path: str | os.PathLike[str]) -> None:
    write_text_atomic(path, manifest_tsv(records))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Check a dataset folder and write its manifest.")
    p.add_argument("dataset_dir")
    p.add_argument("--num_frames", type=int, default=93, help="frames one training sample needs")
    p.add_argument(
        "--require",
        action="append",
        default=[],
        choices=CONTROL_FOLDERS,
        help="control folder the experiment needs (repeatable)",
    )
    p.add_argument("--manifest", help="where to write the manifest TSV")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def action() -> None:
        records = validate_dataset(
            args.dataset_dir, args.num_frames, tuple(args.require), args.workers
        )
        if args.manifest:
            write_manifest(records, args.manifest)
        print(f"{args.dataset_dir}: {len(records)} clips OK")

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
