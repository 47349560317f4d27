"""Ulysses context parallelism on CPU: 2 gloo processes under torchrun equal one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, write_dataset


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


def _dataset(root: Path, make_clip) -> Path:
    clips = {f"c{i}": (make_clip(20, offset=10 * i), f"street {i}") for i in range(2)}
    return write_dataset(root / "ds", clips)


def _train(root: Path, name: str, data: Path, nproc: int, *extra: str, iterations: int = 2) -> dict:
    """`iterations` of the tiny preset (resuming what `root/name` holds); the final model part
    of the checkpoint, net.* and net_ema.*."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    launcher = (
        [sys.executable]
        if nproc == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
        ]
    )
    cmd = [
        *launcher,
        "-m",
        "cosmos_posttrain.train",
        "--",
        "experiment=transfer2_singleview_posttrain_edge_example",
        "preset=tiny",
        f"dataloader_train.dataset.dataset_dir={data}",
        "dataloader_train.dataset.num_frames=13",
        "model.config.state_t=4",
        f"trainer.max_iter={iterations}",
        "checkpoint.save_iter=2",
        f"output_root={root / name}",
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    ckpt = (
        root
        / name
        / "cosmos_transfer2_posttrain/local_single_view"
        / f"transfer2_singleview_posttrain_edge_example/checkpoints/iter_{iterations:09d}"
    )
    converted = root / f"{name}_{iterations}_{nproc}.pt"
    dcp_to_torch_save(ckpt / "model", converted)
    return torch.load(converted, weights_only=True)


def _assert_close(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.allclose(value, b[key], rtol=1e-4, atol=1e-6), key


def test_training_with_cp2_matches_one_process(tmp_path, make_clip):
    data = _dataset(tmp_path, make_clip)
    one = _train(tmp_path, "one", data, 1)
    cp2 = _train(tmp_path, "cp2", data, 2, "model_parallel.context_parallel_size=2")
    _assert_close(one, cp2)


def test_dp2_matches_one_process_with_accumulation_2(tmp_path, make_clip):
    data = _dataset(tmp_path, make_clip)
    accum = _train(tmp_path, "accum2", data, 1, "trainer.grad_accum_iter=2")
    dp2 = _train(tmp_path, "dp2", data, 2, "trainer.grad_accum_iter=1")
    _assert_close(accum, dp2)


def test_sharded_checkpoint_resumes_bit_for_bit_and_on_one_rank(tmp_path, make_clip):
    """FSDP2 + DCP: a 2-rank run stopped at iteration 2 and resumed on 2 ranks equals the
    uninterrupted 2-rank run exactly; resumed on 1 rank (accumulating 2 clips, the same global
    batch) it equals it within float rounding."""
    import shutil

    import torch

    data = _dataset(tmp_path, make_clip)
    whole = _train(tmp_path, "whole", data, 2, iterations=4)
    _train(tmp_path, "part", data, 2, iterations=2)
    shutil.copytree(tmp_path / "part", tmp_path / "part_on_one")
    resumed = _train(tmp_path, "part", data, 2, iterations=4)
    assert whole.keys() == resumed.keys()
    assert any(k.startswith("net_ema.") for k in whole)
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key
    on_one = _train(tmp_path, "part_on_one", data, 1, "trainer.grad_accum_iter=2", iterations=4)
    _assert_close(whole, on_one)
