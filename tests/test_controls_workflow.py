"""Control jobs over clip groups, the DAG at 5,000 clips, and the previews."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import run_snakemake, write_dataset

from cosmos_posttrain.control_jobs import is_done, run_group
from cosmos_posttrain.controls import edge_preset
from cosmos_posttrain.errors import CosmosPosttrainError
from cosmos_posttrain.previews import write_previews
from cosmos_posttrain.video_io import probe_video, read_frames, write_video


@pytest.fixture
def dataset(tmp_path, make_clip) -> Path:
    clips = {f"c{i}": (make_clip(12, offset=5 * i), f"clip {i}") for i in range(3)}
    return write_dataset(tmp_path / "ds", clips)


def edge_stand_in(calls: list[str], fail: str = ""):
    """A control maker that needs no model: the clip's edges, written like the real ones."""

    def make():
        calls.append("loaded")

        def work(source: Path, target: Path) -> None:
            if source.stem == fail:
                raise CosmosPosttrainError(f"{source}: broken on purpose")
            frames = read_frames(source)
            write_video(target, edge_preset(frames), probe_video(source).fps)

        return work

    return make


def test_group_skips_done_clips_and_loads_once(dataset, tmp_path):
    calls: list[str] = []
    marker = tmp_path / "group_0.txt"
    done = run_group(dataset, "depth", ["c0", "c1", "c2"], marker, edge_stand_in(calls))
    assert done == ["c0", "c1", "c2"] and calls == ["loaded"]
    assert marker.read_text().split() == ["c0", "c1", "c2"]
    for cid in done:
        assert is_done(dataset / "videos" / f"{cid}.mp4", dataset / "depth" / f"{cid}.mp4")
    # a rerun loads nothing: every clip is complete
    calls.clear()
    run_group(dataset, "depth", ["c0", "c1", "c2"], marker, edge_stand_in(calls))
    assert calls == []
    # a truncated output (as a killed writer without atomic writes would leave) is redone
    target = dataset / "depth" / "c1.mp4"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    assert not is_done(dataset / "videos" / "c1.mp4", target)
    run_group(dataset, "depth", ["c1"], marker, edge_stand_in(calls))
    assert calls == ["loaded"] and probe_video(target).frames == 12
    assert not [p for p in (dataset / "depth").iterdir() if p.name.startswith(".")]


def test_group_reports_failures_after_the_others(dataset, tmp_path):
    marker = tmp_path / "m.txt"
    with pytest.raises(CosmosPosttrainError, match=r"1 of 3 seg videos failed:\n.*c1.mp4"):
        run_group(dataset, "seg", ["c0", "c1", "c2"], marker, edge_stand_in([], fail="c1"))
    assert sorted(p.stem for p in (dataset / "seg").glob("*.mp4")) == ["c0", "c2"]
    assert not marker.exists()


def test_dag_at_5000_clips_builds_in_seconds(tmp_path):
    root = tmp_path / "big"
    (root / "videos").mkdir(parents=True)
    for i in range(5000):
        (root / "videos" / f"clip{i:05d}.mp4").touch()
    config = {
        "dataset_dir": str(root),
        "videoufo": {"storage_dir": str(tmp_path / "u")},
        "controls": {"group_size": 50},
    }
    start = time.perf_counter()
    result = run_snakemake(tmp_path / "work", config, ["-n", "depth", "seg"])
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, flags=re.M))
    assert counts.get("depth_group") == "100" and counts.get("seg_group") == "100", counts
    assert elapsed < 60, elapsed


def test_previews(dataset, tmp_path):
    depth = dataset / "depth"
    run_group(dataset, "depth", ["c0"], tmp_path / "m", edge_stand_in([]))
    written = write_previews(dataset, ["c0", "c1"], tmp_path / "previews")
    first = probe_video(written["videos"][0])
    second = probe_video(written["videos"][1])
    # source | edge | vis | depth for c0; without depth for c1; panels 180 high
    assert first.height == 180 and first.width > second.width and first.frames == 12
    assert written["sheet"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert depth.is_dir()


def test_precomputed_vis_variants_feed_the_loader(dataset):
    import numpy as np
    import torch

    from cosmos_posttrain.control_jobs import vis_variants
    from cosmos_posttrain.data import SampleKey, SingleViewDataset

    source = dataset / "videos" / "c0.mp4"
    written = vis_variants(source, dataset / "vis" / "c0", 3, seed=0)
    assert [p.name for p in written] == ["0.mp4", "1.mp4", "2.mp4"]
    assert all(probe_video(p).frames == 12 for p in written)
    again = vis_variants(source, dataset / "vis" / "c0", 3, seed=0)  # skipped: already there
    assert [p.stat().st_mtime_ns for p in again] == [p.stat().st_mtime_ns for p in written]
    loader = SingleViewDataset(dataset, 9, "vis", "tiny")
    sample = loader.load(0, np.random.default_rng(5))
    assert sample["control"].shape == sample["video"].shape
    repeat = loader.load(0, np.random.default_rng(5))
    assert torch.equal(sample["control"], repeat["control"])
    # c1 has no variants: computed on the fly, same shape
    assert loader[SampleKey(1, 3)]["control"].shape == sample["video"].shape
