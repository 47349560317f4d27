"""The reference's rectified-flow objective and the shared model call.

x_t = sigma * noise + (1 - sigma) * x0, the model predicts the velocity noise - x0. sigma comes
from a logit-normal u mapped through the shift s: sigma = s u / (1 + (s - 1) u). The first 0, 1
or 2 latent frames are given clean (conditional frames) and carry no loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sample_sigma(batch: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    u = torch.sigmoid(torch.randn(batch, generator=generator))
    return shift * u / (1 + (shift - 1) * u)


def sample_num_conditional(probs: list[float], generator: torch.Generator) -> int:
    return int(torch.multinomial(torch.tensor(probs, dtype=torch.float), 1, generator=generator))


@dataclass
class NoisyInput:
    x_t: torch.Tensor  # (B, C, T, H, W), clean latents on the conditional frames
    timestep: torch.Tensor  # (B, 1, T, 1, 1) sigma per frame, cond_timestep on conditional ones
    cond_mask: torch.Tensor  # (B, 1, T, H, W), 1 on conditional frames
    target: torch.Tensor  # noise - x0


def make_noisy_input(
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    num_conditional: int,
    cond_timestep: float,
) -> NoisyInput:
    b, _, t, h, w = x0.shape
    s = sigma.view(b, 1, 1, 1, 1).to(x0.dtype)
    x_t = s * noise + (1 - s) * x0
    indicator = torch.zeros(b, 1, t, 1, 1, dtype=x0.dtype, device=x0.device)
    indicator[:, :, :num_conditional] = 1
    cond_mask = indicator.expand(b, 1, t, h, w)
    x_t = cond_mask * x0 + (1 - cond_mask) * x_t
    timestep = indicator * cond_timestep + (1 - indicator) * s
    return NoisyInput(x_t, timestep, cond_mask, noise - x0)


def flow_loss(pred: torch.Tensor, batch: NoisyInput, total: int | None = None) -> torch.Tensor:
    """MSE over every element; conditional frames count as exact predictions (zero error).

    With `total` (the element count of the whole clip) a context-parallel shard returns its
    part of the sum, so the parts add up to the loss of the whole clip.
    """
    keep = 1 - batch.cond_mask
    squared = (pred.float() - batch.target.float()) ** 2 * keep
    return squared.mean() if total is None else squared.sum() / total


def predict_velocity(
    transformer: torch.nn.Module,
    controlnet: torch.nn.Module | None,
    x_t: torch.Tensor,
    timestep: torch.Tensor,
    text: torch.Tensor,
    cond_mask: torch.Tensor,
    padding_mask: torch.Tensor,
    control_latents: torch.Tensor | None = None,
    control_scale: float = 1.0,
) -> torch.Tensor:
    """One call of the control branch (if any) and the base, as the diffusers pipeline does."""
    hints = None
    if controlnet is not None and control_latents is not None:
        hints = controlnet(
            controls_latents=control_latents,
            latents=x_t,
            timestep=timestep,
            encoder_hidden_states=text,
            condition_mask=cond_mask,
            conditioning_scale=control_scale,
            padding_mask=padding_mask,
            return_dict=False,
        )[0]
    return transformer(
        hidden_states=x_t,
        timestep=timestep,
        encoder_hidden_states=text,
        block_controlnet_hidden_states=hints,
        condition_mask=cond_mask,
        padding_mask=padding_mask,
        return_dict=False,
    )[0]
