"""Control previews: for a few clips, the source next to each control, as mp4 and a PNG sheet.

Edge and vis are shown at the inference presets (medium), depth and seg where the dataset has
them; a person checks at a glance that the controls line up with the video.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .controls import blur_preset, edge_preset
from .fsutil import atomic_output
from .video_io import probe_video, read_frames, write_video

PANEL_HEIGHT = 180


def _fit(frames: np.ndarray, height: int = PANEL_HEIGHT) -> np.ndarray:
    """Scale (T, H, W, 3) frames to a common panel height, even width."""
    h, w = frames.shape[1:3]
    width = max(2, int(round(w * height / h / 2)) * 2)
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def _label(frames: np.ndarray, text: str) -> np.ndarray:
    out = frames.copy()
    for frame in out:
        cv2.putText(
            frame, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA
        )
    return out


def clip_panels(dataset_dir: Path, clip_id: str, max_frames: int = 48) -> list[np.ndarray]:
    """Labelled panels: source, edge, vis, and depth / seg where present."""
    video = dataset_dir / "videos" / f"{clip_id}.mp4"
    frames = read_frames(video, 0, min(max_frames, probe_video(video).frames))
    panels = [
        ("source", frames),
        ("edge (medium)", edge_preset(frames)),
        ("vis (medium)", blur_preset(frames)),
    ]
    for kind in ("depth", "seg"):
        path = dataset_dir / kind / f"{clip_id}.mp4"
        if path.is_file():
            panels.append((kind, read_frames(path, 0, len(frames))))
    return [_label(_fit(f), name) for name, f in panels]


def write_previews(
    dataset_dir: str | Path, clip_ids: list[str], out_dir: str | Path
) -> dict[str, list[Path]]:
    """One mp4 per clip (panels side by side) and one PNG contact sheet (middle frames)."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    videos, rows = [], []
    for clip_id in clip_ids:
        panels = clip_panels(dataset_dir, clip_id)
        count = min(len(p) for p in panels)
        strip = np.concatenate([p[:count] for p in panels], axis=2)
        path = out_dir / f"{clip_id}.mp4"
        write_video(path, strip, probe_video(dataset_dir / "videos" / f"{clip_id}.mp4").fps)
        videos.append(path)
        rows.append(strip[count // 2])
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows])
    sheet_path = out_dir / "contact_sheet.png"
    with atomic_output(sheet_path) as tmp:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        tmp.write_bytes(encoded.tobytes())
    return {"videos": videos, "sheet": [sheet_path]}
