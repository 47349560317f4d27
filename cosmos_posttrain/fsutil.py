"""Atomic file writes: a killed job must never leave a half-written file that looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The temporary file has the final file's name inside a hidden folder next to it: dataset
    scans skip it, the final `os.replace` is atomic on every POSIX file system, and writers
    that record the file name (`torch.save` does) produce the same bytes as a direct write.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp = folder / final.name
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def copy_stream_atomic(src: BinaryIO, path: str | os.PathLike[str], chunk: int = 1 << 20) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        while block := src.read(chunk):
            out.write(block)
