"""Distributed training on CPU (gloo): Ulysses context parallelism and data parallelism over 2
processes, on one node or on two, equal one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, free_port, run_python, write_dataset


def test_cp2_forward_and_gradients_equal_one_process():
    script = Path(__file__).parent / "distributed" / "cp_equivalence.py"
    stdout = run_python(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        timeout=300,
    )
    line = next(s for s in stdout.splitlines() if s.startswith("{"))
    measured = json.loads(line)
    assert measured["forward_rel"] < 1e-5 and measured["grad_rel"] < 1e-5, measured
    assert measured["grads"] > 0


def _dataset(root: Path, make_clip) -> Path:
    clips = {f"c{i}": (make_clip(20, offset=10 * i), f"street {i}") for i in range(2)}
    return write_dataset(root / "ds", clips)


def _train(
    root: Path, name: str, data: Path, nproc: int, *extra: str, nodes: int = 1, iterations: int = 2
) -> dict:
    """`iterations` of the tiny preset (resuming what `root/name` holds); the final model part
    of the checkpoint, net.* and net_ema.*. With nodes > 1,
    that many torchrun agents of nproc processes each meet at a c10d rendezvous on 127.0.0.1,
    as the nodes of a cluster do; their output goes to <root>/<name>.log."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nodes > 1:
        torchrun += [
            f"--nnodes={nodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{free_port()}",
            f"--rdzv_id={name}",
        ]
    elif nproc > 1:
        torchrun.append("--standalone")
    cmd = [
        *(torchrun if nproc * nodes > 1 else [sys.executable]),
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
    agents = [
        subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(nodes)
    ]
    outputs = [agent.communicate(timeout=600)[0] for agent in agents]
    (root / f"{name}.log").write_text("\n".join(outputs))
    for agent, output in zip(agents, outputs, strict=True):
        assert agent.returncode == 0, output
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


@pytest.fixture(scope="module")
def dp2(tmp_path_factory, make_clip) -> tuple[Path, Path, dict]:
    """The reference: data parallelism over 2 processes on one node (torchrun --standalone)."""
    root = tmp_path_factory.mktemp("dp2")
    data = _dataset(root, make_clip)
    return root, data, _train(root, "dp2", data, 2, "trainer.grad_accum_iter=1")


def test_dp2_matches_one_process_with_accumulation_2(dp2):
    root, data, model = dp2
    accum = _train(root, "accum2", data, 1, "trainer.grad_accum_iter=2")
    _assert_close(accum, model)


def test_two_nodes_match_one_node(dp2):
    """2 nodes x 1 process (a c10d rendezvous, as across machines) equal 1 node x 2 processes."""
    import torch

    root, data, one_node = dp2
    two_nodes = _train(root, "two_nodes", data, 1, "trainer.grad_accum_iter=1", nodes=2)
    ranks = re.findall(
        r"rank (\d) of (\d), local rank (\d) on node \S+ \(node rank (\d)\)",
        (root / "two_nodes.log").read_text(),
    )
    assert sorted(ranks) == [("0", "2", "0", "0"), ("1", "2", "0", "1")], ranks
    assert one_node.keys() == two_nodes.keys()
    for key, value in one_node.items():
        assert torch.equal(value, two_nodes[key]), key


def test_local_rank_not_rank_picks_the_gpu(monkeypatch):
    """On node 2 of 2 with 4 GPUs each, global rank 5 is local rank 1: cuda:1, not cuda:5."""
    import torch

    from cosmos_posttrain.distributed import init_world

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr("torch.distributed.is_initialized", lambda: True)  # no process group
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = init_world("auto")
    assert world.device == torch.device("cuda", 1) and chosen == [world.device]
    assert (world.rank, world.size, world.local_rank) == (5, 8, 1)


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
