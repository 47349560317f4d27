"""Dataset validation: every problem reported at once, each with its file; the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_snakemake

from cosmos_posttrain.errors import DatasetError
from cosmos_posttrain.validate import main as validate_main
from cosmos_posttrain.validate import manifest_tsv, validate_dataset

NUM_FRAMES = 30


def write_clip(root: Path, cid: str, data: bytes, caption: str | None = "A clip.") -> None:
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "videos" / f"{cid}.mp4").write_bytes(data)
    if caption is not None:
        (root / "captions" / f"{cid}.json").write_text(json.dumps({"caption": caption}))


@pytest.fixture
def good_dataset(tmp_path, make_clip) -> Path:
    root = tmp_path / "ds"
    write_clip(root, "a", make_clip(40), "First clip, with ünïcode.")
    write_clip(root, "b", make_clip(35, offset=5))
    (root / "captions" / "b.json").unlink()
    (root / "captions" / "b.txt").write_text("Caption from a text file.\n")
    write_clip(root, "c", make_clip(40, offset=10), None)
    (root / "captions" / "c.json").write_text(json.dumps({"prompt": "A prompt key."}))
    (root / "depth").mkdir()
    (root / "depth" / "a.mp4").write_bytes(make_clip(40, offset=3))
    return root


def test_valid_dataset_manifest(good_dataset):
    records = validate_dataset(good_dataset, NUM_FRAMES)
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == ["a", "b", "c"]
    assert by_id["a"].frames == 40 and by_id["b"].frames == 35
    assert (by_id["a"].width, by_id["a"].height) == (64, 48)
    assert by_id["a"].fps == 24.0 and by_id["a"].duration_s == pytest.approx(40 / 24, abs=1e-3)
    assert by_id["a"].caption_chars == len("First clip, with ünïcode.")
    assert by_id["a"].controls == "depth" and by_id["b"].controls == ""
    header = manifest_tsv(records).splitlines()[0].split("\t")
    assert header == [
        "id",
        "frames",
        "fps",
        "width",
        "height",
        "duration_s",
        "caption_chars",
        "controls",
    ]


def test_every_problem_in_one_message(good_dataset, make_clip):
    root = good_dataset
    write_clip(root, "nocaption", make_clip(40), None)
    (root / "captions" / "orphan.json").write_text(json.dumps({"caption": "no video"}))
    write_clip(root, "badjson", make_clip(40))
    (root / "captions" / "badjson.json").write_text('{"caption": "unterminated')
    write_clip(root, "nokey", make_clip(40))
    (root / "captions" / "nokey.json").write_text(json.dumps({"description": "x"}))
    write_clip(root, "empty", make_clip(40), "   ")
    write_clip(root, "notobject", make_clip(40))
    (root / "captions" / "notobject.json").write_text(json.dumps(["a list"]))
    write_clip(root, "garbage", b"\x00not an mp4 at all" * 100)
    write_clip(root, "truncated", make_clip(40)[: len(make_clip(40)) // 2])
    write_clip(root, "short", make_clip(12))
    write_clip(root, "depthlen", make_clip(40))
    (root / "depth" / "depthlen.mp4").write_bytes(make_clip(39))
    (root / "seg").mkdir()
    write_clip(root, "segsize", make_clip(40))
    (root / "seg" / "segsize.mp4").write_bytes(make_clip(40, size=(32, 48)))
    (root / "seg" / "ghost.mp4").write_bytes(make_clip(40))
    (root / "videos" / "notes.txt").write_text("stray")
    (root / "videos" / "clip.avi").write_bytes(b"stray")
    (root / "videos" / ".DS_Store").write_bytes(b"hidden files are ignored")

    with pytest.raises(DatasetError) as info:
        validate_dataset(root, NUM_FRAMES)
    message = str(info.value)
    expected = {
        "videos/nocaption.mp4": "no caption",
        "captions/orphan.json": "caption without a video",
        "captions/badjson.json": "invalid JSON",
        "captions/nokey.json": "no caption key",
        "captions/empty.json": "empty caption",
        "captions/notobject.json": "JSON must be an object",
        "videos/garbage.mp4": "cannot be opened as a video",
        "videos/truncated.mp4": "truncated",
        "videos/short.mp4": f"has only 12 frames, training needs num_frames={NUM_FRAMES}",
        "depth/depthlen.mp4": "39 frames, its source has 40",
        "seg/segsize.mp4": "32x48, its source is 64x48",
        "seg/ghost.mp4": "without a source clip",
        "videos/notes.txt": "stray file",
        "videos/clip.avi": "stray file",
    }
    lines = info.value.problems
    for path, words in expected.items():
        hits = [line for line in lines if f"{root}/{path}:" in line]
        assert hits, f"{path} not reported in:\n{message}"
        assert words in hits[0], hits[0]
    assert len(lines) == len(expected), message
    assert message.startswith(f"dataset {root} has {len(expected)} problems:")
    assert ".DS_Store" not in message


def test_required_control_missing(good_dataset):
    with pytest.raises(DatasetError) as info:
        validate_dataset(good_dataset, NUM_FRAMES, required_controls=("depth", "seg"))
    problems = info.value.problems
    assert any("seg: missing folder" in p for p in problems)
    assert any(p.startswith(f"{good_dataset}/videos/b.mp4: no depth video") for p in problems)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        validate_dataset(tmp_path / "nope", NUM_FRAMES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="videos: missing folder"):
        validate_dataset(tmp_path / "empty", NUM_FRAMES)


def test_command_line(good_dataset, tmp_path, capsys):
    manifest = tmp_path / "m.tsv"
    assert (
        validate_main([str(good_dataset), "--num_frames", "30", "--manifest", str(manifest)]) == 0
    )
    assert len(manifest.read_text().splitlines()) == 4
    assert validate_main([str(good_dataset), "--num_frames", "38"]) == 1
    assert "videos/b.mp4: has only 35 frames" in capsys.readouterr().err


def test_workflow_rule_on_a_user_folder(good_dataset, tmp_path):
    work = tmp_path / "work"
    config = {
        "dataset_dir": str(good_dataset),
        "train": {"num_frames": NUM_FRAMES},
        "videoufo": {"storage_dir": str(tmp_path / "unused")},
    }
    result = run_snakemake(work, config, ["validate_dataset"])
    assert result.returncode == 0, result.stderr
    assert len((work / "results/dataset/manifest.tsv").read_text().splitlines()) == 4
    # Editing the folder makes the rule run again, and a problem fails it with the message.
    (good_dataset / "captions" / "a.json").write_text("{}")
    result = run_snakemake(work, config, ["validate_dataset"])
    assert result.returncode != 0
    assert "captions/a.json: no caption key" in result.stdout + result.stderr
    assert not (work / "results/dataset/manifest.tsv").exists()
