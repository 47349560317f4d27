"""GPU jobs on a workstation: each runs on GPUs no other job holds (file locks and
CUDA_VISIBLE_DEVICES), and waits while they are taken."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from cosmos_posttrain.gpus import GpuError, claim_gpus


def _job(tmp_path: Path, count: int) -> subprocess.Popen:
    """A job under the wrapper: prints the GPUs it sees, then runs until `release` exists."""
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="0,1",  # a machine with two GPUs
        COSMOS_GPU_LOCK_DIR=str(tmp_path / "locks"),
        PYTHONPATH=str(REPO),
    )
    env.pop("SLURM_JOB_ID", None)
    body = 'echo "$CUDA_VISIBLE_DEVICES"; while [ ! -e release ]; do sleep 0.05; done'
    return subprocess.Popen(
        [sys.executable, "-m", "cosmos_posttrain.gpus", str(count), "--", "sh", "-c", body],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_jobs_never_share_a_gpu_and_wait_for_free_ones(tmp_path):
    first, second = _job(tmp_path, 1), _job(tmp_path, 1)
    seen = {first.stdout.readline().strip(), second.stdout.readline().strip()}
    assert seen == {"0", "1"}
    both = _job(tmp_path, 2)  # needs both GPUs: waits until the two jobs end
    time.sleep(2)
    assert both.poll() is None
    (tmp_path / "release").touch()
    assert both.stdout.readline().strip() == "0,1"
    for job in (first, second, both):
        assert job.wait(timeout=30) == 0


def test_nothing_to_do_without_gpus_asked_or_under_slurm(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert claim_gpus(0, env, tmp_path) is None
    assert claim_gpus(1, {**env, "SLURM_JOB_ID": "7"}, tmp_path) is None
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1"}
    with pytest.raises(GpuError, match="asks for 3 GPUs, this machine has 2"):
        claim_gpus(3, env, tmp_path)
