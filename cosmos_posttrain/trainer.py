"""Post-training of the control branch: the loop, top to bottom.

Parallelism, checkpoints, data and metrics live in the modules this one calls.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from .checkpoint import CONTROLNET_CONFIG, Checkpointer
from .context_parallel import shard_time
from .controls import edge_preset
from .data import ResumableSampler, SingleViewDataset, clip_loader
from .distributed import (
    World,
    all_ranks_ok,
    average_gradients,
    cp_sum,
    fsdp_mesh,
    full_value,
    init_world,
    shutdown,
)
from .ema import PowerEMA
from .errors import CosmosPosttrainError
from .experiments import check_config, control_kind, run_dir
from .metrics import Metrics
from .models import Models, build_models, freeze
from .objective import (
    NoisyInput,
    flow_loss,
    make_noisy_input,
    predict_velocity,
    sample_num_conditional,
    sample_sigma,
)
from .optim import build_optimizer, build_scheduler
from .parallelize import fsdp_loss_scale, parallelize
from .sampling import generate_latents, side_by_side, to_uint8_frames
from .validate import validate_dataset
from .video_io import write_video

log = logging.getLogger("cosmos_posttrain.train")


class TrainingDiverged(CosmosPosttrainError):
    """The loss became NaN/Inf or exploded; nothing of that state was saved."""


def step_generator(seed: int, iteration: int, micro: int, dp_rank: int) -> torch.Generator:
    """All randomness of one micro-step, reproducible after a resume."""
    return torch.Generator().manual_seed(
        ((seed * 1_000_003 + iteration) * 64 + micro) * 4096 + dp_rank
    )


def train(config: DictConfig) -> Path:
    """Run (or resume) the experiment; return its run folder."""
    world = init_world(config.trainer.device, int(config.model_parallel.context_parallel_size))
    try:
        return _train(config, world)
    finally:
        shutdown()


def _train(config: DictConfig, world: World) -> Path:
    check_config(config, world.size)
    control = control_kind(config)
    dataset_cfg = config.dataloader_train.dataset
    if config.dataloader_train.batch_size != 1:
        raise CosmosPosttrainError("dataloader_train.batch_size must be 1 (one clip per rank)")
    if world.is_main:  # the same checks as `snakemake validate_dataset`, before any heavy work
        required = (control,) if control in ("depth", "seg") else ()
        validate_dataset(dataset_cfg.dataset_dir, int(dataset_cfg.num_frames), required)
    run = run_dir(config)
    checkpointer = Checkpointer(run / "checkpoints", config.checkpoint.dcp_async_mode_enabled)

    models = build_models(config, world.device)
    models.controlnet.float()  # fp32 master weights; the forward runs in bf16 on GPUs
    freeze(models)
    sharded = world.size > 1 and bool(config.model_parallel.fsdp)
    cfg = config.model.config
    for model in (models.transformer, models.controlnet):
        parallelize(
            model,
            cp_group=world.cp_group,
            attention_kernel=str(cfg.attention_kernel),
            recompute=str(cfg.recompute) if cfg.gradient_checkpointing else "none",
            compile=bool(cfg.compile),
            fsdp_mesh=fsdp_mesh(world) if sharded and model is models.controlnet else None,
        )
    loss_scale = fsdp_loss_scale(world.cp) if sharded else 1.0
    # FSDP replaced the parameters with sharded ones: collect the trained ones again
    trained = [p for p in models.controlnet.parameters() if p.requires_grad]
    ema = PowerEMA(models.controlnet, config.ema.rate) if config.ema.enabled else None
    optimizer = build_optimizer(trained, config)
    scheduler = build_scheduler(optimizer, config)

    dataset = SingleViewDataset(
        dataset_cfg.dataset_dir,
        int(dataset_cfg.num_frames),
        control,
        dataset_cfg.resolution,
        cache_frames=dataset_cfg.cache_frames,
    )
    sample_clip = dataset.ids[0]
    if config.trainer.sample_every and len(dataset.ids) > 1:
        dataset.ids = dataset.ids[1:]  # the sample clip is held out of training
    sampler = ResumableSampler(
        len(dataset),
        world.dp_rank,
        world.dp,
        config.dataloader_train.sampler.seed,
        config.dataloader_train.sampler.shuffle,
    )
    start = 0
    latest = checkpointer.latest()
    if latest is not None:
        start = resume(checkpointer, latest, models, optimizer, scheduler, ema, sampler)
        log.info("resumed from %s at iteration %d", latest, start)
    loader = clip_loader(
        dataset,
        sampler,
        int(config.dataloader_train.num_workers),
        int(config.dataloader_train.prefetch_factor),
        pin_memory=world.device.type == "cuda",
    )
    metrics = Metrics(
        run,
        config.trainer.max_iter,
        start,
        config.trainer.logging_iter,
        config.job.wandb_mode,
        OmegaConf.to_container(config),
        world.is_main,
    )
    if world.is_main:
        run.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, run / "config.yaml")

    # every rank takes part (FSDP gathers, CP shards); rank 0 writes the videos
    sampling = bool(config.trainer.sample_every)
    sampler_start, consumed = sampler.state_dict(), 0
    batches = iter(loader)
    accum = int(config.trainer.grad_accum_iter)
    for iteration in range(start, config.trainer.max_iter):
        loss_sum = 0.0
        for micro in range(accum):
            batch = next(batches)
            consumed += 1
            # keyed by the global micro-batch index: DP=2 draws what one process with
            # grad_accum_iter=2 draws
            generator = step_generator(
                config.trainer.seed, iteration, micro * world.dp + world.dp_rank, 0
            )
            loss = training_loss(
                models, batch, config, generator, world.device, cp_group=world.cp_group
            )
            (loss * loss_scale / accum).backward()
            loss_sum += cp_sum(loss.item(), world) / accum
        if not sharded:  # FSDP reduced the gradients already
            average_gradients(trained, world)
        grad_norm = full_value(
            torch.nn.utils.clip_grad_norm_(trained, config.trainer.clip_grad_norm)
        )
        healthy = (
            math.isfinite(loss_sum)
            and math.isfinite(grad_norm)
            and (loss_sum < config.trainer.max_loss)
        )
        if not all_ranks_ok(healthy, world):
            raise TrainingDiverged(
                f"[Iteration {iteration + 1}] loss {loss_sum} / gradient norm {grad_norm} is not "
                f"finite or above trainer.max_loss; stopped before the update. The last good "
                f"checkpoint is {checkpointer.latest() or 'none (nothing was saved)'}; lower "
                "optimizer.lr or check the data."
            )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(models.controlnet, iteration)
        done = iteration + 1
        metrics.step(done, loss_sum, scheduler.get_last_lr()[0], grad_norm)
        if sampling and done % config.trainer.sample_every == 0:
            save_samples(models, ema, dataset, sample_clip, config, run / "samples", done, world)
        if done % config.checkpoint.save_iter == 0 or done == config.trainer.max_iter:
            if world.is_main:
                log.info("[Iteration %d/%d] Saving checkpoint...", done, config.trainer.max_iter)
            checkpointer.save(
                done,
                checkpoint_states(
                    models,
                    optimizer,
                    scheduler,
                    ema,
                    sampler.state_after(sampler_start, consumed),
                    done,
                ),
                {CONTROLNET_CONFIG: models.controlnet.to_json_string()},
            )
    checkpointer.wait()
    metrics.close()
    return run


def training_loss(
    models: Models,
    batch: dict,
    config: DictConfig,
    generator: torch.Generator,
    device: torch.device,
    with_control: bool = True,
    cp_group=None,
) -> torch.Tensor:
    """The rectified-flow loss of one clip through the base and (unless the base itself is
    being trained) the control branch."""
    cfg = config.model.config
    video = batch["video"].to(device).float() / 127.5 - 1
    control = batch["control"].to(device).float() / 127.5 - 1
    with torch.no_grad():
        x0 = models.tokenizer.encode(video)
        control_latents = models.tokenizer.encode(control) if with_control else None
        text = models.text_encoder.encode(list(batch["caption"]))
    drop = torch.rand(text.shape[0], generator=generator) < cfg.text_dropout
    text = text * (~drop).to(text.dtype).to(device).view(-1, 1, 1)
    sigma = sample_sigma(x0.shape[0], cfg.shift, generator).to(device)
    num_conditional = sample_num_conditional(list(cfg.conditional_frames_probs), generator)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    noisy = make_noisy_input(x0, noise, sigma, num_conditional, cfg.conditional_frame_timestep)
    padding_mask = batch["padding_mask"].to(device)
    total = None
    if cp_group is not None:  # this rank's latent frames; every rank drew the same noise
        total = noisy.target.numel()
        noisy = NoisyInput(
            *(
                shard_time(t, cp_group)
                for t in (noisy.x_t, noisy.timestep, noisy.cond_mask, noisy.target)
            )
        )
        control_latents = shard_time(control_latents, cp_group) if with_control else None
    autocast = device.type == "cuda" and cfg.dtype == "bfloat16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        pred = predict_velocity(
            models.transformer,
            models.controlnet if with_control else None,
            noisy.x_t,
            noisy.timestep,
            text,
            noisy.cond_mask,
            padding_mask,
            control_latents,
        )
    return flow_loss(pred, noisy, total)


def checkpoint_states(
    models, optimizer, scheduler, ema, sampler_state: dict, iteration: int
) -> dict:
    model = {f"net.controlnet.{k}": v for k, v in models.controlnet.state_dict().items()}
    if ema is not None:
        model.update({f"net_ema.controlnet.{k}": v for k, v in ema.state_dict().items()})
    return {
        "model": model,
        "optim": get_optimizer_state_dict(models.controlnet, optimizer),
        "scheduler": scheduler.state_dict(),
        "trainer": {"iteration": iteration, "sampler": sampler_state},
    }


def resume(
    checkpointer: Checkpointer, folder: Path, models: Models, optimizer, scheduler, ema, sampler
) -> int:
    states = checkpoint_states(models, optimizer, scheduler, ema, sampler.state_dict(), 0)
    checkpointer.load(folder, states)
    controlnet_state = {
        k.removeprefix("net.controlnet."): v
        for k, v in states["model"].items()
        if k.startswith("net.controlnet.")
    }
    models.controlnet.load_state_dict(controlnet_state)
    if ema is not None:
        ema.load_state_dict(
            {
                k.removeprefix("net_ema.controlnet."): v
                for k, v in states["model"].items()
                if k.startswith("net_ema.")
            }
        )
    set_optimizer_state_dict(models.controlnet, optimizer, states["optim"])
    scheduler.load_state_dict(states["scheduler"])
    sampler.load_state_dict(states["trainer"]["sampler"])
    return int(states["trainer"]["iteration"])


@torch.no_grad()
def save_samples(
    models: Models,
    ema: PowerEMA | None,
    dataset: SingleViewDataset,
    clip_id: str,
    config: DictConfig,
    folder: Path,
    iteration: int,
    world: World,
) -> None:
    """Input | control | generated, from the current and the EMA weights, on a fixed clip
    (held out of training when the dataset has more than one). Every rank runs it (the
    models may be sharded); rank 0 writes."""
    device = world.device
    holdout = SingleViewDataset(
        dataset.root, dataset.num_frames, dataset.control, dataset.resolution, is_train=False
    )
    sample = holdout.load(holdout.ids.index(clip_id), np.random.default_rng(0))
    if dataset.control == "edge":  # a fixed preset, as at inference, not a random draw
        frames = sample["video"].permute(1, 2, 3, 0).numpy()
        sample["control"] = torch.from_numpy(edge_preset(frames)).permute(3, 0, 1, 2)
    video = sample["video"][None].to(device).float() / 127.5 - 1
    control = sample["control"][None].to(device).float() / 127.5 - 1
    control_latents = models.tokenizer.encode(control)
    text = models.text_encoder.encode([sample["caption"]])
    shape = (
        tuple(control_latents.shape[:1])
        + (models.transformer.config.out_channels,)
        + tuple(control_latents.shape[2:])
    )
    variants = [("reg", None)] + ([("ema", ema)] if ema is not None else [])
    backup = {k: v.clone() for k, v in models.controlnet.state_dict().items()}
    cfg = config.trainer
    for name, weights in variants:
        if weights is not None:
            weights.copy_to(models.controlnet)
        latents = generate_latents(
            models.transformer,
            models.controlnet,
            text,
            torch.zeros_like(text),
            control_latents,
            shape,
            sample["padding_mask"][None].to(device),
            cfg.sample_steps,
            cfg.sample_guidance,
            config.model.config.shift,
            seed=int(cfg.seed),
            cp_group=world.cp_group,
        )
        if not world.is_main:
            continue
        generated = models.tokenizer.decode(latents)[0]
        frames = side_by_side(
            to_uint8_frames(video[0]),
            to_uint8_frames(control[0]),
            to_uint8_frames(generated[:, : video.shape[2]]),
        )
        path = folder / f"iter_{iteration:09d}_{name}.mp4"
        write_video(path, frames, sample["fps"])
        log.info("[Iteration %d] sample written to %s", iteration, path)
    models.controlnet.load_state_dict(backup)
