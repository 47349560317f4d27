"""Generating a clip with the flow model: Euler steps on the shifted sigma schedule, with the
reference's guidance form v = cond + g (cond - uncond). Used for training samples and the demo's
evaluation; inference reuses it through the same model call."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .context_parallel import repeated_video_halves, shard_time
from .objective import predict_velocity


def sigma_schedule(steps: int, shift: float) -> torch.Tensor:
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def guided_velocity(
    transformer,
    controlnet,
    x: torch.Tensor,
    timestep: torch.Tensor,
    text: torch.Tensor,
    uncond_text: torch.Tensor,
    cond_mask: torch.Tensor,
    padding_mask: torch.Tensor,
    control_latents: torch.Tensor | None,
    control_scale: float,
    guidance: float,
    share_first_rows: bool = True,
) -> torch.Tensor:
    """v = cond + guidance (cond - uncond), the guided and unguided halves in one batched call.
    The halves hold the same videos, so the first blocks' self-attention runs once for both
    (`repeated_video_halves`; `share_first_rows=False` computes both, for benchmarks)."""
    with repeated_video_halves(*((transformer, controlnet) if share_first_rows else ())):
        both = predict_velocity(
            transformer,
            controlnet,
            torch.cat([x, x]),
            torch.cat([timestep, timestep]),
            torch.cat([text, uncond_text]),
            torch.cat([cond_mask, cond_mask]),
            padding_mask,
            None if control_latents is None else torch.cat([control_latents] * 2),
            control_scale,
        )
    v, v_u = both.chunk(2)
    return v + guidance * (v - v_u)


@torch.no_grad()
def generate_latents(
    transformer,
    controlnet,
    text: torch.Tensor,
    uncond_text: torch.Tensor | None,
    control_latents: torch.Tensor | None,
    shape: tuple[int, ...],
    padding_mask: torch.Tensor,
    steps: int,
    guidance: float,
    shift: float,
    seed: int,
    cond_latents: torch.Tensor | None = None,
    num_conditional: int = 0,
    cond_timestep: float = 0.1,
    control_scale: float = 1.0,
    scheduler=None,
    progress=None,
    cp_group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Denoise from pure noise. With a diffusers `scheduler` (UniPC for the released model, as
    its pipeline does) its sigmas and steps are used; without one, Euler steps on the shifted
    schedule. `progress` (a tqdm bar) advances once per step. With a context-parallel group
    (models switched to Ulysses CP), each rank denoises its slice of latent frames, since every
    update is per element, and the whole clip is gathered at the end."""
    device = text.device
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator).to(device)
    b, _, t, h, w = shape
    indicator = torch.zeros(b, 1, t, 1, 1, device=device)
    indicator[:, :, :num_conditional] = 1
    cond_mask = indicator.expand(b, 1, t, h, w)
    cond = cond_latents if cond_latents is not None else torch.zeros(shape, device=device)
    if cp_group is not None:
        x, indicator, cond_mask, cond = (
            shard_time(v, cp_group) for v in (x, indicator, cond_mask, cond)
        )
        if control_latents is not None:
            control_latents = shard_time(control_latents, cp_group)
    exact = (x - cond) * cond_mask  # the true velocity on conditional frames, as the pipeline
    if scheduler is not None:
        scheduler.set_timesteps(steps, device=device)
        sigmas = [float(v) for v in scheduler.sigmas[: len(scheduler.timesteps)]]
        timesteps = list(scheduler.timesteps)
    else:
        sigmas = sigma_schedule(steps, shift).tolist()
    for i in range(steps):
        sigma = sigmas[i]
        x_in = cond_mask * cond + (1 - cond_mask) * x
        timestep = indicator * cond_timestep + (1 - indicator) * sigma
        if guidance and uncond_text is not None:
            v = guided_velocity(
                transformer,
                controlnet,
                x_in,
                timestep,
                text,
                uncond_text,
                cond_mask,
                padding_mask,
                control_latents,
                control_scale,
                guidance,
            )
        else:
            v = predict_velocity(
                transformer,
                controlnet,
                x_in,
                timestep,
                text,
                cond_mask,
                padding_mask,
                control_latents,
                control_scale,
            )
        v = exact + v.float() * (1 - cond_mask)
        if scheduler is not None:
            x = scheduler.step(v, timesteps[i], x, return_dict=False)[0]
        else:
            x = x + (sigmas[i + 1] - sigma) * v
        if progress is not None:
            progress.update(1)
    x = cond_mask * cond + (1 - cond_mask) * x
    if cp_group is not None:
        pieces = [torch.empty_like(x) for _ in range(dist.get_world_size(cp_group))]
        dist.all_gather(pieces, x.contiguous(), group=cp_group)
        x = torch.cat(pieces, dim=2)
    return x


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def side_by_side(*videos: np.ndarray) -> np.ndarray:
    """Frames of several (T, H, W, 3) videos placed left to right."""
    return np.concatenate(videos, axis=2)
