"""Post-training on CPU with the tiny preset: config, checks, checkpoints, resume, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_snakemake, write_dataset
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from cosmos_posttrain.checkpoint import PARTS, Checkpointer
from cosmos_posttrain.experiments import ConfigError, build_config, check_config, run_dir
from cosmos_posttrain.train import main as train_main

EXPERIMENT = "transfer2_singleview_posttrain_edge_example"
SEED_COMMAND = [
    "--config=cosmos_transfer2/singleview_config.py",
    "--",
    f"experiment={EXPERIMENT}",
    "dataloader_train.dataset.dataset_dir=DATASET",
    "dataloader_train.sampler.dataset=${dataloader_train.dataset}",
    "trainer.max_iter=2000",
    "checkpoint.save_iter=500",
    "job.wandb_mode=disabled",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_clip) -> Path:
    clips = {f"clip{i}": (make_clip(20, offset=o), f"street {i}") for i, o in enumerate((0, 30))}
    return write_dataset(tmp_path_factory.mktemp("train_ds"), clips)


def tiny_args(dataset: Path, *extra: str) -> list[str]:
    return [
        "--",
        f"experiment={EXPERIMENT}",
        "preset=tiny",
        f"dataloader_train.dataset.dataset_dir={dataset}",
        "dataloader_train.sampler.dataset=${dataloader_train.dataset}",
        "trainer.logging_iter=2",
        "trainer.grad_accum_iter=2",
        *extra,
    ]


def test_seed_command_line_is_accepted():
    args = [a.replace("DATASET", "/data/x") for a in SEED_COMMAND[2:]]
    config = build_config(args, "cosmos_transfer2/singleview_config.py")
    assert config.dataloader_train.sampler.dataset.dataset_dir == "/data/x"
    assert config.trainer.max_iter == 2000 and config.checkpoint.save_iter == 500
    assert config.optimizer.lr == 5e-5 and list(config.scheduler.warm_up_steps) == [1000]
    assert config.trainer.grad_accum_iter == 4 and config.ema.rate == 0.10
    for kind in ("edge", "depth", "seg", "vis"):
        name = f"transfer2_singleview_posttrain_{kind}_example"
        cfg = build_config(
            [
                f"experiment={name}",
                "optimizer.lr=1e-5",
                "checkpoint.load_path=/x.pt",
                "model.config.state_t=20",
                "dataloader_train.dataset.num_frames=77",
                "scheduler.warm_up_steps=[10]",
            ]
        )
        assert cfg.model.config.hint_key == kind and cfg.job.name == name
        check_config(cfg)
        assert run_dir(cfg).parts[-3:] == ("cosmos_transfer2_posttrain", "local_single_view", name)


def test_output_root_from_environment(monkeypatch):
    monkeypatch.setenv("IMAGINAIRE_OUTPUT_ROOT", "/somewhere")
    assert str(run_dir(build_config([f"experiment={EXPERIMENT}"]))).startswith("/somewhere/")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_itr=3"], "unknown configuration key 'trainer.max_itr'"),
        (["experiment=nope"], "unknown experiment 'nope'"),
        ([], None),
    ],
)
def test_unknown_keys_are_errors(overrides, message):
    items = [f"experiment={EXPERIMENT}", *overrides]
    if message is None:
        build_config(items)
        return
    with pytest.raises(ConfigError, match=message):
        build_config(items)


@pytest.mark.parametrize(
    ("overrides", "world", "message"),
    [
        (
            ["model.config.state_t=20"],
            1,
            "num_frames=93 does not match model.config.state_t=20: num_frames must be",
        ),
        (["model_parallel.context_parallel_size=5"], 5, "must divide model.config.state_t (24)"),
        (["model_parallel.context_parallel_size=3"], 3, "must divide the attention heads (16)"),
        (["model_parallel.context_parallel_size=2"], 3, "must divide the world size (3)"),
        (["model.config.attention_kernel=sage"], 1, "sage has no backward: it is for inference"),
        (
            ["model.config.attention_kernel=cudnn_fp8"],
            1,
            "cudnn_fp8 has no backward: it is for inference",
        ),
        (["model.config.attention_kernel=flash"], 1, "'flash': training takes auto, sdpa or fa4"),
    ],
)
def test_launch_checks(overrides, world, message):
    config = build_config([f"experiment={EXPERIMENT}", *overrides])
    with pytest.raises(ConfigError) as info:
        check_config(config, world)
    assert message in str(info.value)


def test_checks_before_launch_through_the_command(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMAGINAIRE_OUTPUT_ROOT", str(tmp_path))
    # clips shorter than num_frames (the dataset's clips have 20 frames)
    assert (
        train_main(
            tiny_args(dataset, "dataloader_train.dataset.num_frames=21", "model.config.state_t=6")
        )
        == 1
    )
    assert "has only 20 frames, training needs num_frames=21" in capsys.readouterr().err
    # the depth experiment needs depth/
    args = tiny_args(dataset)
    args[1] = "experiment=transfer2_singleview_posttrain_depth_example"
    assert train_main(args) == 1
    assert "depth: missing folder; this experiment needs depth/<id>.mp4" in capsys.readouterr().err
    assert not (tmp_path / "cosmos_transfer2_posttrain").exists()


def _train(dataset: Path, root: Path, *extra: str, timeout: int = 300) -> subprocess.Popen:
    env = dict(os.environ, IMAGINAIRE_OUTPUT_ROOT=str(root), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "cosmos_posttrain.train", *tiny_args(dataset, *extra)]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _final_model(root: Path, iteration: int, tmp: Path) -> dict[str, torch.Tensor]:
    folder = root / "cosmos_transfer2_posttrain/local_single_view" / EXPERIMENT / "checkpoints"
    out = tmp / f"model_{root.name}.pt"
    dcp_to_torch_save(folder / f"iter_{iteration:09d}" / "model", out)
    return torch.load(out, weights_only=True)


def test_sigkill_and_rerun_equals_uninterrupted(dataset, tmp_path):
    extra = ("trainer.max_iter=9", "checkpoint.save_iter=3")
    whole = _train(dataset, tmp_path / "whole", *extra)
    killed = _train(dataset, tmp_path / "killed", *extra)
    ckpts = tmp_path / "killed/cosmos_transfer2_posttrain/local_single_view" / EXPERIMENT
    deadline = time.time() + 240
    while not (ckpts / "checkpoints/iter_000000003").is_dir():
        assert killed.poll() is None, killed.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (ckpts / "checkpoints/iter_000000009").exists()
    output = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, output
    assert "[Iteration 4/9] Loss:" in output and "Saving checkpoint..." in output
    resumed = _train(dataset, tmp_path / "killed", *extra)
    resumed_out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, resumed_out
    assert "resumed from" in resumed_out
    a = _final_model(tmp_path / "whole", 9, tmp_path)
    b = _final_model(tmp_path / "killed", 9, tmp_path)
    assert a.keys() == b.keys() and any(k.startswith("net_ema.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    layout = ckpts / "checkpoints"
    assert (layout / "latest_checkpoint.txt").read_text().strip() == "iter_000000009"
    for it in (3, 6, 9):
        for part in PARTS:
            assert (layout / f"iter_{it:09d}" / part / ".metadata").is_file()
    assert not list(layout.glob(".partial-*"))
    assert (ckpts / "tensorboard").is_dir() and (ckpts / "config.yaml").is_file()


def test_kill_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    ckpt = Checkpointer(tmp_path)
    states = {part: {"x": torch.ones(3) * i} for i, part in enumerate(PARTS)}
    ckpt.save(10, states)
    real_save = dcp.save

    def dies_after_model(state, checkpoint_id):
        real_save(state, checkpoint_id=checkpoint_id)
        if Path(checkpoint_id).name == "model":
            raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(dcp, "save", dies_after_model)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(20, states)
    monkeypatch.setattr(dcp, "save", real_save)
    assert ckpt.latest() == tmp_path / "iter_000000010"
    assert not (tmp_path / "iter_000000020").exists()
    loaded = {"model": {"x": torch.zeros(3)}}
    Checkpointer(tmp_path).load(ckpt.latest(), loaded)
    assert torch.equal(loaded["model"]["x"], torch.zeros(3))
    # the next successful save cleans the unusable partial folder, never a checkpoint
    ckpt.save(30, states)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "iter_000000010",
        "iter_000000030",
        "latest_checkpoint.txt",
    ]
    # a complete folder newer than latest_checkpoint.txt (kill between rename and update) wins
    (tmp_path / "latest_checkpoint.txt").write_text("iter_000000010\n")
    assert ckpt.latest() == tmp_path / "iter_000000030"


def test_overfitting_one_clip_loss_falls(dataset, tmp_path, monkeypatch):
    from cosmos_posttrain.models import build_models, freeze
    from cosmos_posttrain.trainer import step_generator, training_loss

    config = build_config(
        [
            f"experiment={EXPERIMENT}",
            "preset=tiny",
            f"dataloader_train.dataset.dataset_dir={dataset}",
            "model.config.text_dropout=0",
        ]
    )
    from cosmos_posttrain.data import SampleKey, SingleViewDataset, collate

    cpu = torch.device("cpu")
    models = build_models(config, cpu)
    trained = freeze(models)
    optimizer = torch.optim.AdamW(trained, lr=2e-3)
    batch = collate([SingleViewDataset(dataset, 9, "edge", "tiny")[SampleKey(0, 1)]])
    losses = []
    for _step in range(40):
        loss = training_loss(models, batch, config, step_generator(0, 0, 0, 0), cpu)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses


def test_snakemake_target_runs_a_few_iterations(dataset, tmp_path):
    config = {
        "dataset_dir": str(dataset),
        "videoufo": {"storage_dir": str(tmp_path / "unused")},
        "train": {
            "preset": "tiny",
            "num_frames": 9,
            "max_iter": 4,
            "save_iter": 2,
            "lr": 1e-3,
            "warm_up_steps": 2,
            "grad_accum_iter": 1,
            "output_root": str(tmp_path / "out"),
            "overrides": ["trainer.logging_iter=1"],
        },
    }
    result = run_snakemake(tmp_path / "work", config, ["train_edge"])
    assert result.returncode == 0, result.stderr
    run = tmp_path / "out/cosmos_transfer2_posttrain/local_single_view" / EXPERIMENT
    assert (run / "checkpoints/latest_checkpoint.txt").read_text().strip() == "iter_000000004"
    log = (tmp_path / "work/results/logs/train_edge.log").read_text()
    assert "[Iteration 4/4] Loss:" in log
    # a failed rerun never touches checkpoints: raise max_iter with a bad override
    config["train"]["overrides"] = ["trainer.max_itr=9"]
    failed = run_snakemake(tmp_path / "work", config, ["train_edge"])
    assert failed.returncode != 0
    assert (run / "checkpoints/iter_000000004/model/.metadata").is_file()
    assert (run / "checkpoints/iter_000000002/model/.metadata").is_file()


def _config(dataset: Path, root: Path, *extra: str):
    return build_config(
        [
            f"experiment={EXPERIMENT}",
            "preset=tiny",
            f"dataloader_train.dataset.dataset_dir={dataset}",
            f"output_root={root}",
            "trainer.logging_iter=1",
            *extra,
        ]
    )


def test_samples_async_checkpoints_and_logging(dataset, tmp_path, caplog):
    from cosmos_posttrain.trainer import train
    from cosmos_posttrain.video_io import probe_video

    caplog.set_level("INFO")
    config = _config(
        dataset,
        tmp_path,
        "trainer.max_iter=2",
        "checkpoint.save_iter=1",
        "trainer.sample_every=2",
        "trainer.sample_steps=2",
        "checkpoint.dcp_async_mode_enabled=true",
    )
    run = train(config)
    for name in ("reg", "ema"):
        info = probe_video(run / "samples" / f"iter_000000002_{name}.mp4")
        assert (info.frames, info.width, info.height) == (9, 3 * 48, 32)  # input|control|output
    assert Checkpointer(run / "checkpoints").latest().name == "iter_000000002"
    assert "[Iteration 1/2] Loss:" in caplog.text and "s/it" in caplog.text
    assert (run / "tensorboard").is_dir()


def test_diverged_loss_stops_and_saves_nothing(dataset, tmp_path):
    from cosmos_posttrain.trainer import TrainingDiverged, train

    config = _config(dataset, tmp_path, "trainer.max_iter=3", "trainer.max_loss=1e-9")
    with pytest.raises(TrainingDiverged, match=r"\[Iteration 1\] loss .* not finite or above"):
        train(config)
    assert not (run_dir(config) / "checkpoints").exists()


def test_hub_access_is_checked_first(monkeypatch):
    from fakehub import FakeHub, unused_local_url

    from cosmos_posttrain.errors import HubError
    from cosmos_posttrain.hub import check_repo_access

    with FakeHub() as hub:
        hub.add_file("nvidia/Cosmos-Transfer2.5-2B", "x.json", b"{}", repo_type="model")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)
        check_repo_access("nvidia/Cosmos-Transfer2.5-2B")
        with pytest.raises(HubError, match="nvidia/Nope: repository not found .* HF_TOKEN"):
            check_repo_access("nvidia/Nope")
        hub.gated.add("nvidia/Cosmos-Reason1-7B")
        hub.add_file("nvidia/Cosmos-Reason1-7B", "x.json", b"{}", repo_type="model")
        with pytest.raises(HubError, match="Cosmos-Reason1-7B: the repository is gated.*HF_TOKEN"):
            check_repo_access("nvidia/Cosmos-Reason1-7B")
    url = unused_local_url()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", url)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_ETAG_TIMEOUT", 1)
    with pytest.raises(HubError, match=f"cannot reach the Hugging Face hub at {url}"):
        check_repo_access("nvidia/Cosmos-Transfer2.5-2B")
