"""Training configuration: the reference's key names, its four experiments, and presets.

The seed's command line (`experiment=... dataloader_train.dataset.dataset_dir=D
'dataloader_train.sampler.dataset=${dataloader_train.dataset}' trainer.max_iter=...`) is parsed
here with OmegaConf: dotted overrides, `${...}` interpolation, and an error for unknown keys.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import CosmosPosttrainError

TEMPORAL_FACTOR = 4  # video frames per latent frame of the tokenizers (the first frame alone)


def latent_frames(num_frames: int) -> int:
    """Latent frames (`model.config.state_t`) of a clip of `num_frames` frames."""
    return (num_frames - 1) // TEMPORAL_FACTOR + 1


CONTROL_KINDS = ("edge", "depth", "seg", "vis")
EXPERIMENT_PREFIX = "transfer2_singleview_posttrain_"
DEFAULT_OUTPUT_ROOT = "/tmp/imaginaire4-output"
KNOWN_CONFIG_FILES = ("cosmos_transfer2/singleview_config.py", "singleview_config.py")


class ConfigError(CosmosPosttrainError):
    """A training configuration or override is wrong; the message names the key."""


BASE: dict[str, Any] = {
    "job": {
        "project": "cosmos_transfer2_posttrain",
        "group": "local_single_view",
        "name": "",
        "wandb_mode": "disabled",  # online | offline | disabled
    },
    "output_root": DEFAULT_OUTPUT_ROOT,  # $IMAGINAIRE_OUTPUT_ROOT wins when set
    "model": {
        "preset": "2b",  # 2b | tiny
        "config": {
            "state_t": 24,
            "hint_key": "edge",
            "conditional_frames_probs": [0.4, 0.4, 0.2],  # P(0, 1, 2 conditional latent frames)
            "conditional_frame_timestep": 0.1,
            "text_dropout": 0.2,
            "shift": 5.0,
            "gradient_checkpointing": True,
            # with gradient_checkpointing: full | save_attention (keep the attention outputs,
            # recompute the rest: 29% faster at the seed shape, 12 GiB more; docs/BENCHMARKS.md)
            "recompute": "save_attention",
            # torch.compile each block: 16% off a GPU step and 8.5 GiB less; with it the seed
            # shape fits one 80 GB GPU encoders included (68.0 GiB, docs/BENCHMARKS.md)
            "compile": True,
            # self-attention kernel: auto (FlashAttention-4 when flash-attn-4 is installed and the
            # GPU is a Hopper or Blackwell, else PyTorch SDPA) | sdpa | fa4 | sage | cudnn_fp8
            # (the last two quantised, for inference);
            # FA4 takes an H100 step from 14.2 s to 12.1 s (docs/BENCHMARKS.md)
            "attention_kernel": "auto",
            "dtype": "bfloat16",  # training precision of the forward pass
        },
        "pretrained": {
            "repo_id": "nvidia/Cosmos-Transfer2.5-2B",
            "revision": "diffusers/general",
            "controlnet_revision": "diffusers/controlnet/general/{control}",
            "text_encoder_repo_id": "nvidia/Cosmos-Reason1-7B",
            "text_encoder_revision": "main",
        },
        "text_encoder": {"max_length": 512},
    },
    "dataloader_train": {
        "dataset": {
            "dataset_dir": "PLACEHOLDER_UPDATE_DATASET_PATH",
            "num_frames": 93,
            "video_size": [704, 1280],
            "resolution": "720",
            "hint_key": "control_input_edge",
            "is_train": True,
            "caption_type": "t2w_qwen2p5_7b",
            "control_input_type": "edge",
            "cache_frames": False,  # keep decoded clips in memory (small datasets only)
        },
        "sampler": {"dataset": None, "shuffle": True, "seed": 0},
        "batch_size": 1,
        "num_workers": 4,
        "prefetch_factor": 2,
    },
    "optimizer": {"lr": 5e-5, "betas": [0.9, 0.999], "weight_decay": 1e-3, "eps": 1e-8},
    "scheduler": {
        "warm_up_steps": [1000],
        "cycle_lengths": [0],  # 0: trainer.max_iter
        "f_start": [1e-6],
        "f_max": [1.0],
        "f_min": [0.0],
    },
    "trainer": {
        "max_iter": 5000,
        "grad_accum_iter": 4,
        "logging_iter": 10,
        "clip_grad_norm": 1.0,
        "seed": 0,
        "sample_every": 200,
        "sample_steps": 35,
        "sample_guidance": 3.0,
        "device": "auto",  # auto | cpu | cuda
        "max_loss": 1e4,  # a loss above this (or NaN/Inf) stops the run
    },
    "checkpoint": {
        "save_iter": 1000,
        "load_path": "",
        "load_training_state": False,
        "strict_resume": False,
        "dcp_async_mode_enabled": False,
    },
    "ema": {"enabled": True, "rate": 0.10},
    # fsdp: shard the control branch, its gradients and optimizer state over all ranks (FSDP2);
    # off: replicate it and all-reduce the gradients
    "model_parallel": {"context_parallel_size": 1, "fsdp": True},
}

# The tiny preset: small enough to train on 2 CPU cores in minutes (the demo and the tests).
TINY_OVERRIDES: dict[str, Any] = {
    "model": {
        "preset": "tiny",
        "config": {
            "state_t": 3,
            "gradient_checkpointing": False,
            "compile": False,  # on a CPU the compilation costs more than it saves
            "dtype": "float32",
        },
        "text_encoder": {"max_length": 32},
    },
    "dataloader_train": {
        "dataset": {
            "num_frames": 9,
            "resolution": "tiny",
            "video_size": [32, 56],
            "cache_frames": True,
        },
        "num_workers": 0,
    },
    "optimizer": {"lr": 1e-3},
    "scheduler": {"warm_up_steps": [20]},
    "trainer": {
        "grad_accum_iter": 1,
        "sample_every": 0,
        "sample_steps": 20,
        "clip_grad_norm": 1.0,
        "logging_iter": 10,
    },
    "checkpoint": {"save_iter": 100},
}


def experiment_names() -> list[str]:
    return [f"{EXPERIMENT_PREFIX}{kind}_example" for kind in CONTROL_KINDS]


def _experiment(name: str) -> dict[str, Any]:
    if name not in experiment_names():
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(experiment_names())}")
    kind = name[len(EXPERIMENT_PREFIX) : -len("_example")]
    config = copy.deepcopy(BASE)
    config["job"]["name"] = name
    config["model"]["config"]["hint_key"] = kind
    dataset = config["dataloader_train"]["dataset"]
    dataset["hint_key"] = f"control_input_{kind}"
    dataset["control_input_type"] = {"seg": "segcolor"}.get(kind, kind)
    return config


def _deep_update(target: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def build_config(overrides: list[str], config_file: str | None = None) -> DictConfig:
    """Resolve `experiment=...` plus dotted overrides into a read-only, fully resolved config.

    `preset=tiny` (or `model.preset=tiny`) applies the tiny preset before the other overrides.
    """
    if config_file and not any(config_file.endswith(k) for k in KNOWN_CONFIG_FILES):
        raise ConfigError(
            f"--config={config_file}: only the single-view config is provided "
            f"({KNOWN_CONFIG_FILES[0]})"
        )
    experiment = None
    rest = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if key.lstrip("+") == "experiment":
            experiment = value
        else:
            rest.append(item)
    if experiment is None:
        raise ConfigError(f"no experiment=...; choose one of {', '.join(experiment_names())}")
    config = _experiment(experiment)
    preset = next(
        (i.split("=", 1)[1] for i in rest if i.split("=", 1)[0] in ("preset", "model.preset")), None
    )
    rest = [i for i in rest if i.split("=", 1)[0] != "preset"]
    if preset == "tiny":
        _deep_update(config, copy.deepcopy(TINY_OVERRIDES))
    elif preset not in (None, "2b"):
        raise ConfigError(f"unknown preset {preset!r}; known: 2b, tiny")
    base = OmegaConf.create(config)
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(rest))
        resolved = OmegaConf.create(OmegaConf.to_container(merged, resolve=True))
    except ConfigKeyError as exc:
        key = getattr(exc, "full_key", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"unknown configuration key {key!r} ({str(exc).splitlines()[0]})"
        ) from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad override: {str(exc).splitlines()[0]}") from exc
    env_root = os.environ.get("IMAGINAIRE_OUTPUT_ROOT")
    if env_root:
        resolved.output_root = env_root
    OmegaConf.set_readonly(resolved, True)
    return resolved


def run_dir(config: DictConfig) -> Path:
    """<output_root>/<project>/<group>/<name>: fixed per experiment, which makes resume work."""
    job = config.job
    return Path(config.output_root) / job.project / job.group / job.name


def control_kind(config: DictConfig) -> str:
    return str(config.model.config.hint_key)


def check_config(config: DictConfig, world_size: int = 1) -> None:
    """The launch checks that need no data: frame count vs state_t, CP divisibility, ranges."""
    problems = []
    state_t = int(config.model.config.state_t)
    num_frames = int(config.dataloader_train.dataset.num_frames)
    frames = (state_t - 1) * TEMPORAL_FACTOR + 1
    if num_frames != frames:
        problems.append(
            f"dataloader_train.dataset.num_frames={num_frames} does not match model.config."
            f"state_t={state_t}: num_frames must be (state_t - 1) * {TEMPORAL_FACTOR} + 1 = "
            f"{frames}"
        )
    cp = int(config.model_parallel.context_parallel_size)
    heads = 16 if config.model.preset == "2b" else 2
    if cp < 1:
        problems.append(f"model_parallel.context_parallel_size={cp} must be at least 1")
    else:
        for what, value in (
            ("model.config.state_t", state_t),
            ("the attention heads", heads),
            ("the world size", world_size),
        ):
            if value % cp:
                problems.append(
                    f"model_parallel.context_parallel_size={cp} must divide {what} ({value})"
                )
    if config.job.wandb_mode not in ("online", "offline", "disabled"):
        problems.append(
            f"job.wandb_mode={config.job.wandb_mode!r}: use online, offline or disabled"
        )
    probs = list(config.model.config.conditional_frames_probs)
    if len(probs) != 3 or abs(sum(probs) - 1) > 1e-6 or min(probs) < 0:
        problems.append(
            "model.config.conditional_frames_probs must be 3 probabilities summing to 1"
        )
    # torch and diffusers: only when checked
    from .attention_kernels import KERNELS, TRAINING_KERNELS

    kernel = str(config.model.config.attention_kernel)
    if kernel not in TRAINING_KERNELS:
        known = kernel in KERNELS
        forward_only = f" ({kernel} has no backward: it is for inference)" if known else ""
        problems.append(
            f"model.config.attention_kernel={kernel!r}: training takes auto, sdpa or fa4"
            + forward_only
        )
    if config.trainer.grad_accum_iter < 1 or config.trainer.max_iter < 1:
        problems.append("trainer.max_iter and trainer.grad_accum_iter must be at least 1")
    if config.checkpoint.save_iter < 1:
        problems.append("checkpoint.save_iter must be at least 1")
    if problems:
        raise ConfigError(
            "invalid training configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )
