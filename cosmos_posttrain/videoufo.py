"""The VideoUFO dataset stage: metadata, tar shards, safe extraction with a frame check, captions.

The stage is split into steps that Snakemake runs as separate jobs (download the CSV, download
one shard, extract one shard) and that `prepare_videoufo` also runs in sequence as a plain
command. Each shard's extraction knows how many clips the shards before it kept, so it stops
as soon as `num_videos` clips exist across shards, and later shards are never downloaded.
"""

from __future__ import annotations

import csv
import json
import logging
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .errors import CosmosPosttrainError, VideoError
from .fsutil import write_bytes_atomic, write_json_atomic
from .progress import progress
from .video_io import probe_video

log = logging.getLogger(__name__)

METADATA_FILE = "VideoUFO.csv"
MAX_TARS = 200
ID_COLUMN = "ID"
BRIEF_COLUMN = "Brief Caption"
DETAILED_COLUMN = "Detailed Caption"
CAPTION_MODES = ("concat", "detailed", "brief")


def shard_filename(index: int) -> str:
    """Path of shard `index` (1-based) inside the hub repository."""
    if not 1 <= index <= MAX_TARS:
        raise ValueError(f"VideoUFO shard index must be in 1..{MAX_TARS}, got {index}")
    return f"VideoUFO_tar/VideoUFO_{index}.tar"


@dataclass(frozen=True)
class Layout:
    """Where each piece of the stage lives under `storage_dir`."""

    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / METADATA_FILE

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def captions(self) -> Path:
        return self.root / "captions"

    def tar(self, index: int) -> Path:
        return self.root / "tars" / f"VideoUFO_{index}.tar"

    def shard_manifest(self, index: int) -> Path:
        return self.root / "manifests" / f"shard_{index}.json"

    def frame_cache(self, index: int) -> Path:
        """Frame counts of every member already checked, so a rerun decodes nothing twice."""
        return self.root / "manifests" / f".frames_{index}.json"

    @property
    def summary(self) -> Path:
        return self.root / "videoufo_manifest.json"


# --------------------------------------------------------------------------- captions


def caption_mode(use_brief_caption: bool = False, no_concat_brief: bool = False) -> str:
    """The reference's flags as one mode. `use_brief_caption` works on its own here."""
    if use_brief_caption:
        return "brief"
    return "detailed" if no_concat_brief else "concat"


def compose_caption(brief: str | None, detailed: str | None, mode: str) -> str:
    """Build the caption text for one row; an empty string means the row has no caption."""
    brief = (brief or "").strip()
    detailed = (detailed or "").strip()
    if mode == "brief":
        return brief
    if mode == "detailed":
        return detailed
    if mode == "concat":
        return " ".join(part for part in (brief, detailed) if part)
    raise ValueError(f"unknown caption mode {mode!r}; expected one of {CAPTION_MODES}")


def _canonical(column: str) -> str:
    return column.strip().lower().replace("_", " ")


def _metadata_columns(csv_path: Path) -> dict[str, str]:
    """Map our column names to the file's spelling (spaces or underscores both occur)."""
    with open(csv_path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    by_canonical = {_canonical(c): c for c in header}
    found, missing = {}, []
    for wanted in (ID_COLUMN, BRIEF_COLUMN, DETAILED_COLUMN):
        actual = by_canonical.get(_canonical(wanted))
        if actual is None:
            missing.append(wanted)
        else:
            found[wanted] = actual
    if missing:
        raise CosmosPosttrainError(
            f"{csv_path}: not a VideoUFO metadata CSV: missing column(s) {', '.join(missing)} "
            f"(header has {', '.join(header[:12]) or 'nothing'})"
        )
    return found


def check_metadata(csv_path: Path) -> None:
    """Fail early and clearly when the downloaded CSV is not the metadata (an HTML page, say)."""
    _metadata_columns(csv_path)


def read_captions(
    csv_path: str | Path, ids: Iterable[str], mode: str, chunksize: int = 100_000
) -> dict[str, str]:
    """Captions of the given clip IDs, reading only three columns of the CSV, in chunks.

    The metadata is 1.1 GB; loading it whole with every column would take many GB of memory.
    Rows whose caption is empty in this mode are left out, so the caller skips those clips.
    """
    csv_path = Path(csv_path)
    columns = _metadata_columns(csv_path)
    wanted = set(ids)
    found: dict[str, str] = {}
    if not wanted:
        return found
    reader = pd.read_csv(
        csv_path,
        usecols=list(columns.values()),
        dtype=str,
        keep_default_na=False,
        chunksize=chunksize,
        encoding="utf-8",
    )
    id_col, brief_col, detail_col = (columns[c] for c in (ID_COLUMN, BRIEF_COLUMN, DETAILED_COLUMN))
    for chunk in reader:
        hits = chunk[chunk[id_col].isin(wanted)]
        for cid, brief, detailed in zip(
            hits[id_col], hits[brief_col], hits[detail_col], strict=True
        ):
            caption = compose_caption(brief, detailed, mode)
            if caption and cid not in found:
                found[cid] = caption
        if len(found) == len(wanted):
            break
    return found


# --------------------------------------------------------------------------- tar members


@dataclass
class ShardReport:
    """What one shard's extraction did; written as the shard's manifest."""

    shard: int
    num_videos: int
    kept_before: int
    kept: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # member name -> reason
    exhausted: bool = False  # every member was looked at

    @property
    def kept_total(self) -> int:
        return self.kept_before + len(self.kept)

    def to_json(self) -> dict:
        data = asdict(self)
        data["kept_total"] = self.kept_total
        return data


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why a member must not be extracted, or None for a plain, well-named mp4 file."""
    name = member.name
    if not name.lower().endswith(".mp4"):
        return "not an .mp4 file"
    if not member.isfile():
        return "not a regular file (link or device)"
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name:
        return "unsafe path (absolute or '..')"
    stem = posixpath.basename(name)[: -len(".mp4")]
    if not stem or stem.startswith("."):
        return "unusable clip id"
    return None


def clip_id(member_name: str) -> str:
    """VideoUFO IDs are the file stem, e.g. `---MaV1RQGE.0.mp4` -> `---MaV1RQGE.0`."""
    return posixpath.basename(member_name)[: -len(".mp4")]


def _load_frame_cache(path: Path) -> dict[str, int | str]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def previous_total(manifest: str | Path | None) -> tuple[int, set[str]]:
    """Clips kept by the shards before this one, from the previous shard's manifest."""
    if manifest is None:
        return 0, set()
    data = json.loads(Path(manifest).read_text(encoding="utf-8"))
    return int(data["kept_total"]), set(data.get("kept_ids_so_far", []))


def extract_shard(
    storage_dir: str | Path,
    shard: int,
    num_videos: int,
    min_frames: int,
    mode: str,
    previous_manifest: str | Path | None = None,
) -> ShardReport:
    """Extract the valid clips of one shard until `num_videos` exist across shards.

    A clip is kept when its member is a safe mp4 file, its caption is non-empty in `mode`,
    and its stream holds at least `min_frames` frames. Videos are copied byte for byte.
    """
    layout = Layout(Path(storage_dir))
    before, seen_ids = previous_total(previous_manifest)
    report = ShardReport(shard=shard, num_videos=num_videos, kept_before=before)
    needed = num_videos - before
    cache_path = layout.frame_cache(shard)
    cache = _load_frame_cache(cache_path)
    written_before = set(cache.pop("__written__", []))  # type: ignore[arg-type]

    if needed > 0:
        with tarfile.open(layout.tar(shard), mode="r:") as tar:
            members = tar.getmembers()
            candidates = []
            for member in members:
                reason = _unsafe_reason(member)
                if reason:
                    report.skipped[member.name] = reason
                else:
                    candidates.append(member)
            captions = read_captions(layout.metadata, [clip_id(m.name) for m in candidates], mode)
            bar = progress(total=needed, desc=f"shard {shard}: clips kept", unit="clip")
            for member in candidates:
                if len(report.kept) >= needed:
                    break
                cid = clip_id(member.name)
                reason, data = _check_member(
                    tar, member, cid, captions, seen_ids, min_frames, cache
                )
                if reason:
                    report.skipped[member.name] = reason
                    continue
                _store_clip(layout, tar, member, cid, captions[cid], data)
                report.kept.append(cid)
                seen_ids.add(cid)
                bar.update(1)
            bar.close()
            report.exhausted = len(report.kept) < needed

    _remove_clips(layout, written_before - set(report.kept))
    cache["__written__"] = report.kept  # type: ignore[assignment]
    write_json_atomic(cache_path, cache, indent=None)

    data = report.to_json()
    data["kept_ids_so_far"] = sorted(seen_ids)
    write_json_atomic(layout.shard_manifest(shard), data)
    log.info(
        "shard %d: kept %d clips (%d in all of %d wanted), skipped %d members",
        shard,
        len(report.kept),
        report.kept_total,
        num_videos,
        len(report.skipped),
    )
    return report


def _remove_clips(layout: Layout, clip_ids: Iterable[str]) -> None:
    """Remove clips this stage wrote earlier and no longer selects (num_videos was lowered).

    Only files the stage itself wrote are touched: their IDs come from the frame caches.
    """
    for stale in sorted(clip_ids):
        log.info("removing %s: no longer among the selected clips", stale)
        (layout.videos / f"{stale}.mp4").unlink(missing_ok=True)
        (layout.captions / f"{stale}.json").unlink(missing_ok=True)


def _check_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    cid: str,
    captions: dict[str, str],
    seen_ids: set[str],
    min_frames: int,
    cache: dict,
) -> tuple[str | None, bytes | None]:
    """Why this member is not kept (None if kept), and its bytes if they had to be read.

    Frame counts are cached per (name, size), so a rerun reads only the clips it copies.
    """
    if cid in seen_ids:
        return "duplicate clip id (kept from an earlier member)", None
    if cid not in captions:
        return "no caption in the metadata (missing row or empty caption)", None
    key = f"{member.name}:{member.size}"
    frames = cache.get(key)
    data = None
    if frames is None:
        data = _read_member(tar, member)
        try:
            frames = probe_video(data).frames
        except VideoError as exc:
            frames = f"unreadable video: {str(exc).split(': ', 1)[-1]}"
        cache[key] = frames
    if isinstance(frames, str):
        return frames, data
    if frames < min_frames:
        return f"{frames} frames < min_frames {min_frames}", data
    return None, data


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise VideoError(f"{member.name}: cannot be read from the tar")
    with handle:
        return handle.read()


def _store_clip(
    layout: Layout,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    cid: str,
    caption: str,
    data: bytes | None = None,
) -> None:
    """Copy the clip unchanged and write its caption; both land atomically."""
    video = layout.videos / f"{cid}.mp4"
    if not (video.is_file() and video.stat().st_size == member.size):
        write_bytes_atomic(video, data if data is not None else _read_member(tar, member))
    caption_path = layout.captions / f"{cid}.json"
    payload = {"caption": caption}
    try:
        current = json.loads(caption_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        current = None
    if current != payload:
        write_json_atomic(caption_path, payload)


def write_summary(storage_dir: str | Path, shard_manifests: Iterable[str | Path]) -> dict:
    """Aggregate the shard manifests into one summary of the prepared dataset."""
    layout = Layout(Path(storage_dir))
    shards = [json.loads(Path(p).read_text(encoding="utf-8")) for p in shard_manifests]
    used = {s["shard"] for s in shards}
    for cache_path in sorted(layout.frame_cache(1).parent.glob(".frames_*.json")):
        index = int(cache_path.stem.rsplit("_", 1)[1])
        if index in used:
            continue
        cache = _load_frame_cache(cache_path)
        _remove_clips(layout, cache.get("__written__", []))
        cache["__written__"] = []
        write_json_atomic(cache_path, cache, indent=None)
        layout.shard_manifest(index).unlink(missing_ok=True)
    ids = [cid for shard in shards for cid in shard["kept"]]
    summary = {
        "num_videos": shards[-1]["num_videos"] if shards else 0,
        "num_clips": len(ids),
        "shards_used": [s["shard"] for s in shards],
        "clips": ids,
        "skipped": {f"shard_{s['shard']}:{k}": v for s in shards for k, v in s["skipped"].items()},
    }
    write_json_atomic(layout.summary, summary)
    return summary
