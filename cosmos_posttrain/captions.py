"""Caption files of a dataset: `captions/<id>.json` with a `caption` key, as the reference reads.

The reference also accepts the keys `text` and `prompt`, a `<id>.txt` file, and a `metas/`
folder; so do we. Unlike the reference, a missing or empty caption is an error, never a
silent "a video".
"""

from __future__ import annotations

import json
from pathlib import Path

CAPTION_KEYS = ("caption", "text", "prompt")
CAPTION_SUFFIXES = (".json", ".txt")
CAPTION_FOLDERS = ("captions", "metas")


class CaptionError(ValueError):
    """The caption file exists but holds no usable caption; the message says why."""


def caption_folder(dataset_dir: Path) -> Path:
    """`captions/`, or the reference's older `metas/` when only that exists."""
    for name in CAPTION_FOLDERS:
        if (dataset_dir / name).is_dir():
            return dataset_dir / name
    return dataset_dir / CAPTION_FOLDERS[0]


def read_caption(path: Path) -> str:
    """Return the stripped caption text of one `.json` or `.txt` caption file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CaptionError(f"not UTF-8 text ({exc.reason})") from exc
    if path.suffix == ".txt":
        text = raw
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CaptionError(f"invalid JSON (line {exc.lineno}: {exc.msg})") from exc
        if not isinstance(data, dict):
            raise CaptionError(f"JSON must be an object, got {type(data).__name__}")
        key = next((k for k in CAPTION_KEYS if k in data), None)
        if key is None:
            raise CaptionError(f"no caption key (expected one of {', '.join(CAPTION_KEYS)})")
        text = data[key]
        if not isinstance(text, str):
            raise CaptionError(f"'{key}' must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise CaptionError("empty caption")
    return text


def find_caption_file(folder: Path, clip_id: str) -> Path | None:
    for suffix in CAPTION_SUFFIXES:
        candidate = folder / f"{clip_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_caption(dataset_dir: Path, clip_id: str) -> str:
    """The caption of one clip; raises CaptionError naming the file when there is none."""
    folder = caption_folder(dataset_dir)
    path = find_caption_file(folder, clip_id)
    if path is None:
        raise CaptionError(f"{folder / clip_id}.json: no caption file for clip {clip_id}")
    try:
        return read_caption(path)
    except CaptionError as exc:
        raise CaptionError(f"{path}: {exc}") from exc
