"""The VideoUFO stage end to end through Snakemake against a fake hub on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MIN_FRAMES, run_snakemake
from fakehub import unused_local_url

from cosmos_posttrain.video_io import probe_video

REPO_ID = "WenhaoWang/VideoUFO"


def config_for(storage: Path, **videoufo) -> dict:
    settings = {
        "storage_dir": str(storage),
        "num_videos": 3,
        "num_tars": 2,
        "min_frames": MIN_FRAMES,
        "retry_wait": 0.1,
    }
    settings.update(videoufo)
    return {"videoufo": settings, "dataset_dir": str(storage), "train": {"num_frames": MIN_FRAMES}}


def clips(storage: Path) -> list[str]:
    return sorted(p.stem for p in (storage / "videos").glob("*.mp4"))


def caption(storage: Path, cid: str) -> str:
    return json.loads((storage / "captions" / f"{cid}.json").read_text(encoding="utf-8"))["caption"]


def tar_requests(hub, index: int) -> list:
    return [r for r in hub.requests if r.path.endswith(f"VideoUFO_{index}.tar")]


def test_exact_count_stops_early_and_never_escapes(tmp_path, hub, videoufo):
    storage = tmp_path / "work" / "videoufo"
    result = run_snakemake(tmp_path / "work", config_for(storage), ["prepare_videoufo"], hub.url)
    assert result.returncode == 0, result.stderr
    expected = videoufo.valid_order[:3]
    assert clips(storage) == sorted(expected)
    for cid in expected:
        video = storage / "videos" / f"{cid}.mp4"
        assert probe_video(video).frames >= MIN_FRAMES
        # copied, not re-encoded: the bytes are the member's
        assert video.stat().st_size in {len(b) for b in _member_sizes(videoufo)}
    assert caption(storage, "---MaV1RQGE.0") == (
        'A "quoted" brief. Café naïve — 日本語, "quotes", commas'
    )
    assert caption(storage, "good.1") == "Brief one. Detailed one."
    # shard 1 was enough: shard 2 was never downloaded
    assert tar_requests(hub, 1) and not tar_requests(hub, 2)
    assert not (storage / "tars" / "VideoUFO_2.tar").exists()
    # the unsafe members went nowhere
    assert not list(tmp_path.rglob("evil.0*"))
    assert not list(tmp_path.rglob("link.0*")) and not list(tmp_path.rglob("dev.0*"))
    assert (storage / "VideoUFO.csv").read_bytes() == videoufo.csv
    skipped = json.loads((storage / "manifests" / "shard_1.json").read_text())["skipped"]
    assert "unsafe path" in skipped["../evil.0.mp4"]
    assert "not a regular file" in skipped["VideoUFO_1/link.0.mp4"]
    assert "not a regular file" in skipped["VideoUFO_1/dev.0.mp4"]
    assert skipped["VideoUFO_1/readme.txt"] == "not an .mp4 file"
    assert "truncated" in skipped["VideoUFO_1/corrupt.0.mp4"]
    assert "cannot be opened" in skipped["VideoUFO_1/garbage.0.mp4"]
    assert "no caption" in skipped["VideoUFO_1/nocap.0.mp4"]
    assert "< min_frames" in skipped["VideoUFO_1/short.0.mp4"]

    # Rerunning the target does nothing.
    again = run_snakemake(tmp_path / "work", config_for(storage), ["prepare_videoufo"], hub.url)
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr

    # Raising num_videos reuses shard 1 (no new download) and takes the rest from shard 2,
    # skipping the clip without a metadata row and the short one.
    n_before = len(tar_requests(hub, 1))
    more = run_snakemake(
        tmp_path / "work", config_for(storage, num_videos=5), ["prepare_videoufo"], hub.url
    )
    assert more.returncode == 0, more.stderr
    assert clips(storage) == sorted(videoufo.valid_order[:5])
    assert len(tar_requests(hub, 1)) == n_before
    assert len([r for r in tar_requests(hub, 2) if r.method == "GET"]) == 1
    summary = json.loads((storage / "videoufo_manifest.json").read_text())
    assert summary["num_clips"] == 5 and summary["shards_used"] == [1, 2]

    # Lowering it again gives exactly that many clips.
    fewer = run_snakemake(
        tmp_path / "work", config_for(storage, num_videos=2), ["prepare_videoufo"], hub.url
    )
    assert fewer.returncode == 0, fewer.stderr
    assert clips(storage) == sorted(videoufo.valid_order[:2])
    assert sorted(p.stem for p in (storage / "captions").glob("*.json")) == clips(storage)


def _member_sizes(videoufo) -> list[bytes]:
    import io
    import tarfile

    out = []
    for data in videoufo.tars.values():
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    out.append(tar.extractfile(member).read())
    return out


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, {"s2good.1": "Only detailed five.", "s2brief.2": "Only brief six."}),
        ({"no_concat_brief": True}, {"s2good.1": "Only detailed five.", "good.1": "Detailed one."}),
        ({"use_brief_caption": True}, {"s2brief.2": "Only brief six.", "good.1": "Brief one."}),
    ],
    ids=["concat", "detailed", "brief"],
)
def test_caption_modes_replace_clips_without_caption(tmp_path, hub, videoufo, flags, expected):
    storage = tmp_path / "videoufo"
    config = config_for(storage, num_videos=6, **flags)
    result = run_snakemake(tmp_path, config, ["prepare_videoufo"], hub.url)
    assert result.returncode == 0, result.stderr
    kept = clips(storage)
    for cid, text in expected.items():
        assert caption(storage, cid) == text
    if flags.get("use_brief_caption"):
        # s2good.1 has no brief caption: skipped, so only 5 clips exist in both shards
        assert "s2good.1" not in kept and len(kept) == 5
    elif flags.get("no_concat_brief"):
        assert "s2brief.2" not in kept and len(kept) == 5
    else:
        assert kept == sorted(videoufo.valid_order)
    assert "nocap.0" not in kept


def test_server_error_then_recovery(tmp_path, hub, videoufo):
    hub.fail_next("VideoUFO_1.tar", status=500, times=1, method="GET")
    hub.fail_next("VideoUFO.csv", status=503, times=2)
    storage = tmp_path / "videoufo"
    result = run_snakemake(tmp_path, config_for(storage), ["prepare_videoufo"], hub.url)
    assert result.returncode == 0, result.stderr
    assert (storage / "tars" / "VideoUFO_1.tar").read_bytes() == videoufo.tars[1]
    assert len(clips(storage)) == 3


def test_body_cut_short_is_retried(tmp_path, hub, videoufo):
    hub.truncate_next("VideoUFO_1.tar", times=2, fraction=0.3)
    storage = tmp_path / "videoufo"
    result = run_snakemake(tmp_path, config_for(storage), ["prepare_videoufo"], hub.url)
    assert result.returncode == 0, result.stderr
    assert (storage / "tars" / "VideoUFO_1.tar").read_bytes() == videoufo.tars[1]


def test_body_always_cut_short_leaves_no_file(tmp_path, hub):
    hub.truncate_next("VideoUFO_1.tar", times=100, fraction=0.3)
    storage = tmp_path / "videoufo"
    config = config_for(storage, download_retries=1)
    result = run_snakemake(tmp_path, config, ["prepare_videoufo"], hub.url)
    assert result.returncode != 0
    assert "VideoUFO_1.tar" in result.stdout + result.stderr
    assert not (storage / "tars").exists() or not list((storage / "tars").iterdir())
    assert not (storage / "videos").exists()


def test_unreachable_hub_names_url_and_endpoint(tmp_path):
    url = unused_local_url()
    storage = tmp_path / "videoufo"
    config = config_for(storage, download_retries=1)
    result = run_snakemake(tmp_path, config, ["prepare_videoufo"], url)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{url}/datasets/{REPO_ID}/resolve/main/VideoUFO.csv" in output
    assert f"HF_ENDPOINT={url}" in output
    assert "cannot reach the Hugging Face hub" in output
    leftovers = [p for p in storage.rglob("*")] if storage.exists() else []
    assert [p for p in leftovers if p.is_file()] == []
