"""Video reading and writing with PyAV.

Frame counts come from the demuxed packets of the video stream, never from the container
header alone: a header that lies (or a file cut short) is caught because the two disagree.
Counting packets reads the whole file but decodes nothing, so it costs milliseconds where a
full decode (`ffprobe -count_frames`) costs hundreds.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import VideoError
from .fsutil import atomic_output

# The stream parameters we need (size, rate, packet index) come from the mp4 header, so the
# usual probing, which decodes frames to guess codec details, is skipped. It is most of the
# cost of opening a file.
_FAST_OPEN = {"probesize": "32"}

VideoSource = str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class VideoInfo:
    """What the dataset checks and the manifest need to know about one clip."""

    frames: int
    header_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


def _describe(src: VideoSource) -> str:
    return "<in-memory video>" if isinstance(src, bytes) else str(src)


def _open(src: VideoSource, options: dict[str, str] | None = None) -> av.container.InputContainer:
    target = io.BytesIO(src) if isinstance(src, bytes) else os.fspath(src)
    try:
        return av.open(target, options=options or {})
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{_describe(src)}: cannot be opened as a video ({exc})") from exc


def probe_video(src: VideoSource, check_complete: bool = True) -> VideoInfo:
    """Count the frames of the first video stream from its packets.

    With `check_complete`, a stream that holds fewer packets than the container declares is
    reported as truncated instead of silently yielding a shorter clip.
    """
    with _open(src, _FAST_OPEN) as container:
        if not container.streams.video:
            raise VideoError(f"{_describe(src)}: has no video stream")
        stream = container.streams.video[0]
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
        except av.error.FFmpegError as exc:
            raise VideoError(f"{_describe(src)}: unreadable after {count} frames ({exc})") from exc
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        info = VideoInfo(
            frames=count,
            header_frames=int(stream.frames or 0),
            fps=float(rate),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
        )
    if count == 0:
        raise VideoError(f"{_describe(src)}: the video stream holds no frames")
    if check_complete and info.header_frames and count < info.header_frames:
        raise VideoError(
            f"{_describe(src)}: truncated: the container declares {info.header_frames} frames "
            f"but the stream holds only {count}"
        )
    return info


def iter_frames(
    path: VideoSource, start: int = 0, count: int | None = None
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3) from `start` on, `count` of them or to the end."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                if index >= start:
                    yield frame.to_ndarray(format="rgb24")
                    if count is not None and index + 1 - start >= count:
                        return
                index += 1
        except av.error.FFmpegError as exc:
            raise VideoError(
                f"{_describe(path)}: decoding failed at frame {index} ({exc})"
            ) from exc


def read_frames(path: VideoSource, start: int = 0, count: int | None = None) -> np.ndarray:
    """Decode frames into one (T, H, W, 3) uint8 array; fewer than `count` is an error."""
    frames = list(iter_frames(path, start, count))
    if count is not None and len(frames) < count:
        raise VideoError(
            f"{_describe(path)}: asked for {count} frames from frame {start}, got {len(frames)}"
        )
    if not frames:
        raise VideoError(f"{_describe(path)}: no frames decoded")
    return np.stack(frames)


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    crf: int = 18,
) -> int:
    """Write RGB uint8 frames as H.264 (yuv420p) mp4, atomically; return the frame count.

    yuv420p needs even sizes, so frames with an odd width or height are refused rather than
    silently cropped.
    """
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    out = Path(path)
    written = 0
    with atomic_output(out) as tmp:
        # faststart puts the index first: players stream it, and a cut-short copy is
        # detected as truncated rather than unreadable.
        with av.open(
            os.fspath(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
        ) as container:
            stream = None
            for frame in frames:
                if stream is None:
                    height, width = frame.shape[:2]
                    if height % 2 or width % 2:
                        raise VideoError(f"{out}: H.264 needs even sizes, got {width}x{height}")
                    stream = container.add_stream("libx264", rate=rate)
                    stream.width, stream.height = width, height
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                video_frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(frame), format="rgb24"
                )
                container.mux(stream.encode(video_frame))
                written += 1
            if stream is None:
                raise VideoError(f"{out}: no frames to write")
            container.mux(stream.encode(None))
    return written
