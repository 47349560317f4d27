"""Caption modes, the chunked CSV reader, the hub download wrapper and the command."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import pytest
from fakehub import FakeHub

from cosmos_posttrain.errors import CosmosPosttrainError, HubError
from cosmos_posttrain.hub import download_file
from cosmos_posttrain.prepare_videoufo import main as prepare_main
from cosmos_posttrain.videoufo import (
    caption_mode,
    clip_id,
    compose_caption,
    read_captions,
    shard_filename,
)


def test_caption_modes():
    assert caption_mode() == "concat"
    assert caption_mode(no_concat_brief=True) == "detailed"
    # the reference only honours use_brief_caption together with no_concat_brief
    assert caption_mode(use_brief_caption=True) == "brief"
    assert caption_mode(use_brief_caption=True, no_concat_brief=True) == "brief"
    assert compose_caption(" Brief. ", " Detailed. ", "concat") == "Brief. Detailed."
    assert compose_caption("Brief.", "", "concat") == "Brief."
    assert compose_caption("Brief.", "Detailed.", "detailed") == "Detailed."
    assert compose_caption("Brief.", "Detailed.", "brief") == "Brief."
    assert compose_caption(" ", "\n", "concat") == ""
    with pytest.raises(ValueError, match="unknown caption mode"):
        compose_caption("a", "b", "both")


def test_ids_and_shards():
    assert clip_id("VideoUFO_1/---MaV1RQGE.0.mp4") == "---MaV1RQGE.0"
    assert shard_filename(7) == "VideoUFO_tar/VideoUFO_7.tar"
    with pytest.raises(ValueError):
        shard_filename(201)


def write_csv(path, rows, header=("ID", "Brief_Caption", "Detailed_Caption", "Topic")):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_read_captions_in_chunks_with_underscored_columns(tmp_path):
    path = tmp_path / "meta.csv"
    rows = [(f"id{i}", f"b{i}", f'd{i}, "x"\nline', "t") for i in range(1000)]
    rows.append(("---dash.0", "", "", "t"))
    write_csv(path, rows)
    wanted = ["id3", "id998", "---dash.0", "absent"]
    got = read_captions(path, wanted, "concat", chunksize=100)
    assert got == {"id3": 'b3 d3, "x"\nline', "id998": 'b998 d998, "x"\nline'}


def test_not_a_metadata_csv(tmp_path):
    path = tmp_path / "VideoUFO.csv"
    path.write_text("<html>rate limited</html>\n")
    with pytest.raises(CosmosPosttrainError, match="not a VideoUFO metadata CSV"):
        read_captions(path, ["x"], "concat")


@pytest.fixture
def small_hub():
    with FakeHub() as hub:
        hub.add_file("org/data", "f.bin", b"x" * 5000)
        yield hub


def test_download_retries_server_errors(tmp_path, small_hub):
    small_hub.fail_next("f.bin", status=500, times=2, method="GET")
    dest = download_file(
        "org/data",
        "f.bin",
        tmp_path / "out" / "f.bin",
        retries=3,
        retry_wait=0,
        endpoint=small_hub.url,
    )
    assert dest.read_bytes() == b"x" * 5000
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["f.bin"]


def test_download_gives_up_with_clear_error(tmp_path, small_hub):
    small_hub.fail_next("f.bin", status=500, times=5, method="GET")
    with pytest.raises(HubError, match=r"f.bin failed after 2 tries"):
        download_file(
            "org/data", "f.bin", tmp_path / "f.bin", retries=2, retry_wait=0, endpoint=small_hub.url
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(HubError, match="does not exist in org/data@main"):
        download_file(
            "org/data", "missing.bin", tmp_path / "m", retry_wait=0, endpoint=small_hub.url
        )
    with pytest.raises(HubError, match="repository org/other .* not found"):
        download_file("org/other", "f.bin", tmp_path / "m", retry_wait=0, endpoint=small_hub.url)


def test_command_with_reference_flags(tmp_path, hub, videoufo, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    storage = tmp_path / "ufo"
    args = [
        "--storage_dir",
        str(storage),
        "--num_videos",
        "4",
        "--num_tars",
        "2",
        "--min_frames",
        "30",
        "--use_brief_caption",
    ]
    assert prepare_main(args) == 0
    kept = sorted(p.stem for p in (storage / "videos").glob("*.mp4"))
    assert kept == sorted(["---MaV1RQGE.0", "good.1", "good.2", "s2good.0"])
    caption = json.loads((storage / "captions" / "good.2.json").read_text())
    assert caption == {"caption": "Brief two."}
    # offline rerun with the skip flags reuses what is there
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert prepare_main([*args[:-1], "--skip_download", "--skip_metadata"]) == 0
    assert json.loads((storage / "captions" / "good.2.json").read_text())["caption"] == (
        "Brief two. Detailed two."
    )
    # a missing tar with --skip_download is an error naming the file
    (storage / "tars" / "VideoUFO_2.tar").unlink()
    assert prepare_main([*args[:-1], "--num_videos", "6", "--skip_download"]) == 1


def test_unsafe_members_never_written(tmp_path, make_clip):
    """A tar with only unsafe members keeps nothing, even with a matching caption row."""
    from cosmos_posttrain.videoufo import Layout, extract_shard

    layout = Layout(tmp_path / "ufo")
    (layout.root / "tars").mkdir(parents=True)
    write_csv(layout.metadata, [("evil.0", "b", "d", "t"), ("abs.0", "b", "d", "t")])
    buffer = io.BytesIO()
    data = make_clip(40)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("../../evil.0.mp4", "/abs.0.mp4"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layout.tar(1).write_bytes(buffer.getvalue())
    report = extract_shard(layout.root, 1, 5, 30, "concat")
    assert report.kept == [] and report.exhausted
    assert all("unsafe path" in why for why in report.skipped.values())
    assert not (layout.root / "videos").exists()
    assert not list(tmp_path.parent.glob("evil.0*"))
