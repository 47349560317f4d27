"""The configuration schema, the environment files and the demo through the workflow."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

from cosmos_posttrain.config_schema import config_problems
from cosmos_posttrain.demo_data import DEMO_CLIPS
from cosmos_posttrain.video_io import probe_video

SCHEMA = REPO / "config" / "config.schema.yaml"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_shipped_configs_are_valid():
    base = load("config.yaml")
    assert config_problems(base, SCHEMA) == []
    merged = {**base, **load("demo.yaml")}
    assert config_problems(merged, SCHEMA) == []
    assert base["videoufo"]["repo_id"] == "WenhaoWang/VideoUFO"
    assert base["videoufo"]["min_frames"] == 93


def test_unknown_keys_and_wrong_types_are_named():
    config = load("config.yaml")
    config["videoufo"]["num_vidoes"] = 3
    config["videoufo"]["num_tars"] = 500
    config["train"]["num_frames"] = "93"
    config["datset_dir"] = "x"
    problems = config_problems(config, SCHEMA)
    text = "\n".join(problems)
    assert "videoufo.num_vidoes: unknown key" in text
    assert "videoufo.num_tars: 500 is greater than the maximum of 200" in text
    assert "train.num_frames: '93' is not of type 'integer'" in text
    assert "datset_dir: unknown key" in text
    assert len(problems) == 4


def test_workflow_refuses_a_bad_config(tmp_path):
    result = run_snakemake(tmp_path, {"videoufo": {"storage_dir": "s", "num_vidoes": 2}}, ["-n"])
    assert result.returncode != 0
    assert "videoufo.num_vidoes: unknown key" in result.stdout + result.stderr


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_conda_envs_match_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["dev"]
    by_name = {_requirement_name(p): p for p in pins}
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        for spec in pip:
            if spec.startswith("-e"):
                continue
            name = _requirement_name(spec)
            assert name in by_name, f"{env.name}: {name} is not declared in pyproject.toml"
            assert spec.replace(" ", "") == by_name[name].replace(" ", ""), (
                f"{env.name}: {spec} differs from pyproject's {by_name[name]}"
            )


@pytest.mark.parametrize("rulefile", sorted((REPO / "rules").glob("*.smk")), ids=lambda p: p.name)
def test_every_rule_has_one_log(rulefile: Path):
    text = rulefile.read_text()
    rules = re.split(r"^(?:rule|checkpoint) ", text, flags=re.M)[1:]
    for body in rules:
        if any(f"\n    {action}:" in body for action in ("script", "shell", "run")):
            assert body.count("\n    log:") == 1, body.splitlines()[0]
        else:  # a target: only inputs
            assert "\n    output:" not in body, body.splitlines()[0]


def test_demo_dataset_through_the_workflow(tmp_path):
    config = {**load("demo.yaml"), "results_dir": "results/demo"}
    result = run_snakemake(tmp_path, config, ["validate_dataset"])
    assert result.returncode == 0, result.stderr
    manifest = (tmp_path / "results/demo/dataset/manifest.tsv").read_text().splitlines()
    assert len(manifest) == 1 + len(DEMO_CLIPS)
    for clip in DEMO_CLIPS:
        info = probe_video(tmp_path / "results/demo_dataset/videos" / f"{clip.id}.mp4")
        assert info.frames == clip.frames
        assert info.width <= 320 and info.width % 2 == 0 and info.height % 2 == 0
        caption = (tmp_path / "results/demo_dataset/captions" / f"{clip.id}.json").read_text()
        assert clip.caption in caption
    # the demo target chains everything after it (checked by `make demo`, not here)
    dry = run_snakemake(tmp_path, config, ["-n", "demo"])
    assert dry.returncode == 0, dry.stderr
    for rule in ("demo_base", "train", "demo_eval", "convert", "inference", "preview_controls"):
        assert f"\n{rule} " in dry.stdout, rule
