"""Launching on SLURM: the command and the scheduler requests each config gives, and the
workflow on a real SLURM cluster (two nodes on this machine) through the shipped
profiles/slurm, where the dataset stage and a two-node CPU training (train.launcher srun) give
what a local run gives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, free_port, run_snakemake
from slurm_cluster import LocalSlurm, install_slurm
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from cosmos_posttrain.slurm import (
    Job,
    SlurmError,
    current_job,
    main,
    srun_command,
    srun_environment,
)

EXPERIMENT = "transfer2_singleview_posttrain_edge_example"

RUN = "outputs/cosmos_transfer2_posttrain/local_single_view/" + EXPERIMENT


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[LocalSlurm]:
    reason = install_slurm()
    if reason:
        pytest.skip(f"no SLURM to test with: {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), nodes=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def fitted_profile(folder: Path, partition: str) -> Path:
    """profiles/slurm as shipped, with this cluster's partition and requests it can meet."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    for entry in [profile["default-resources"], *profile["set-resources"].values()]:
        if "slurm_partition" in entry:
            entry["slurm_partition"] = partition
        if "cpus_per_task" in entry:
            entry["cpus_per_task"] = 1
        if "mem_mb" in entry:
            entry["mem_mb"] = min(entry["mem_mb"], 400)
    profile["default-resources"]["runtime"] = 15
    profile.update(
        {
            "latency-wait": 5,
            "slurm-init-seconds-before-status-checks": 1,
            "slurm-status-command": "squeue",  # no accounting database here
            "slurm-keep-successful-logs": True,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def final_model(workdir: Path, iteration: int) -> dict[str, torch.Tensor]:
    checkpoint = workdir / RUN / "checkpoints" / f"iter_{iteration:09d}" / "model"
    dcp_to_torch_save(checkpoint, workdir / "model.pt")
    return torch.load(workdir / "model.pt", weights_only=True)


@pytest.mark.slurm
def test_dataset_and_two_node_training_through_slurm_equal_a_local_run(
    slurm, tmp_path, monkeypatch
):
    for name in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(name, slurm.env[name])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same kernels in both runs
    train = {
        "preset": "tiny",
        "device": "cpu",
        "num_frames": 9,
        "max_iter": 3,
        "save_iter": 3,
        "lr": 1e-3,
        "warm_up_steps": 1,
        "grad_accum_iter": 1,
        "output_root": "outputs",
        "overrides": ["trainer.logging_iter=1"],
    }
    config = {
        "dataset_dir": "results/demo_dataset",
        "videoufo": {"storage_dir": "unused"},
        "train": {**train, "nproc_per_node": 2},
    }
    local = run_snakemake(tmp_path / "local", config, ["train_edge"])
    assert local.returncode == 0, local.stderr

    config["train"] = {
        **train,
        "launcher": "srun",
        "nnodes": 2,
        "nproc_per_node": 1,
        "rdzv_port": free_port(),
    }
    profile = fitted_profile(tmp_path / "profile", slurm.partition)
    work = tmp_path / "slurm"
    extra = ["--workflow-profile", str(profile)]
    cluster = run_snakemake(work, config, ["train_edge"], extra=extra)
    assert cluster.returncode == 0, cluster.stderr + slurm.logs()

    # every job went through sbatch: the dataset stage and the training
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", cluster.stderr)
    assert len(submitted) == 3, cluster.stderr
    assert (work / ".snakemake/slurm_logs/rule_train").is_dir()
    manifest = "results/dataset/manifest.tsv"
    assert (work / manifest).read_text() == (tmp_path / "local" / manifest).read_text()

    # one torchrun per SLURM node, each its own node rank, one world of two
    log = (work / "results/logs/train_edge.log").read_text()
    pattern = r"rank (\d) of (\d), local rank 0 on node (n\d) \(node rank (\d)\)"
    ranks = set(re.findall(pattern, log))
    assert {(r, w) for r, w, _, _ in ranks} == {("0", "2"), ("1", "2")}, log
    assert {n for _, _, n, _ in ranks} == {"n1", "n2"}, log
    assert {g for _, _, _, g in ranks} == {"0", "1"}, log
    assert "[Iteration 3/3] Loss:" in log

    a, b = final_model(tmp_path / "local", 3), final_model(work, 3)
    assert a.keys() == b.keys() and any(k.startswith("net_ema.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_srun_command_starts_one_torchrun_per_node():
    job = Job("42", ["gpu07", "gpu08", "gpu09"], 32)
    program = ["-m", "cosmos_posttrain.train", "--", "preset=tiny"]
    cmd = srun_command(job, "10.0.0.7", 2, 8, 29500, program)
    assert cmd[:8] == [
        "srun",
        "--overlap",
        "--kill-on-bad-exit=1",
        "--nodes=2",
        "--nodelist=gpu07,gpu08",  # the first node hosts the rendezvous, so it takes part
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=32",
    ]
    assert cmd[8:] == [
        "torchrun",
        "--nnodes=2",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=10.0.0.7:29500",
        "--rdzv_id=42",
        *program,
    ]


def test_srun_environment_keeps_only_the_job_id():
    step = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "n1", "SLURM_NNODES": "1", "HOME": "/h"}
    step |= {"SLURM_CONF": "/etc/slurm.conf", "SRUN_CPUS_PER_TASK": "4"}
    assert srun_environment(step) == {
        "SLURM_JOB_ID": "42",
        "SLURM_CONF": "/etc/slurm.conf",
        "HOME": "/h",
    }


def test_outside_a_slurm_job_the_launch_says_so(monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(SlurmError, match="SLURM_JOB_ID is not set"):
        current_job({})
    assert main(["--nnodes=2", "--", "-m", "cosmos_posttrain.train"]) == 1
    assert "error: SLURM_JOB_ID is not set" in capsys.readouterr().err


RULE_RESOURCES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

snakefile, configfile, rule = sys.argv[1:]
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(configfiles=[Path(configfile)]),
        snakefile=Path(snakefile),
        workdir=Path.cwd(),
    )._workflow
    resources = workflow.get_rule(rule).resources.items()
    print(json.dumps({k: r.value for k, r in resources if k[0] != "_" and k != "tmpdir"}))
"""


def rule_resources(workdir: Path, config: dict, rule: str) -> dict:
    """What a rule asks of the scheduler under this config (the SLURM plugin's input)."""
    (workdir / "resources.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-c", RULE_RESOURCES, str(REPO / "Snakefile"), "resources.yaml", rule],
        cwd=workdir,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_launcher_and_resources_follow_the_config(tmp_path):
    base = {"dataset_dir": "results/demo_dataset", "videoufo": {"storage_dir": "unused"}}
    srun = {"launcher": "srun", "nnodes": 2, "nproc_per_node": 4, "rdzv_port": 29511}
    cases = [
        (
            {},
            "Shell command: python -m cosmos_posttrain.gpus 1 -- torchrun --standalone"
            " --nproc_per_node=1 -m cosmos_posttrain.train",
            {"gpu": 1, "nodes": 1, "tasks": 1},
        ),
        (
            {"device": "cpu"},
            "Shell command: torchrun --standalone --nproc_per_node=1 -m",
            {"gpu": 0, "nodes": 1},
        ),
        (
            srun,
            "python -m cosmos_posttrain.slurm --nnodes=2 --nproc_per_node=4 --rdzv_port=29511"
            " -- -m cosmos_posttrain.train --config=",
            # GPUs per node as gres; the plugin's --gpus would be a total over the nodes
            {"gpu": 0, "gres": "gpu:4", "nodes": 2, "tasks": 2, "tasks_per_gpu": 0},
        ),
        ({**srun, "device": "cpu"}, None, {"gpu": 0, "nodes": 2, "tasks": 2}),
    ]
    for train, command, requests in cases:
        config = {**base, "train": train}
        resources = rule_resources(tmp_path, config, "train")
        assert resources.items() >= requests.items(), (train, resources)
        assert resources.get("gres") == requests.get("gres"), (train, resources)
        if command:
            result = run_snakemake(tmp_path, config, ["-n", "-p", "--forceall", "train_edge"])
            assert result.returncode == 0, result.stderr
            assert command in result.stdout, result.stdout
    # inference asks as training does (config is the last case's)
    assert rule_resources(tmp_path, config, "inference") == resources
    two_nodes = {**base, "train": {"nnodes": 2}}
    result = run_snakemake(tmp_path, two_nodes, ["-n", "train_edge"])
    assert result.returncode != 0
    assert "train.nnodes=2 needs train.launcher: srun" in result.stdout + result.stderr
