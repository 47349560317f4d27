"""Ulysses context parallelism on CPU: 2 gloo processes under torchrun equal one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_cp2_forward_and_gradients_equal_one_process():
    script = Path(__file__).parent / "distributed" / "cp_equivalence.py"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(s for s in result.stdout.splitlines() if s.startswith("{"))
    measured = json.loads(line)
    assert measured["forward_rel"] < 1e-5 and measured["grad_rel"] < 1e-5, measured
    assert measured["grads"] > 0
