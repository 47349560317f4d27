"""The adaLN modulation of the Cosmos blocks computed once per latent frame, not once per token.

Cosmos 2.5 gives each latent frame its own timestep (conditioning frames keep theirs), and
diffusers' model forward copies the timestep embedding to every token before the blocks run.
Each block's three adaLN-Zero layers (SiLU, then 2048 -> 256 -> 6144 products) then run on
84,480 rows per clip at the seed shape, of which only 24 differ: in the trainer that is
forward, recompute and backward of about 1 TFLOP of products and several GiB of memory traffic
per block. Here they run on the first token of each frame, and shift, scale and gate are
broadcast over the frame's tokens: the same values up to rounding (tests/test_parallelize.py),
the same parameters and state-dict names.
"""

from __future__ import annotations

import inspect

import torch
from diffusers.models.transformers.transformer_cosmos import CosmosAdaLayerNormZero
from torch import nn


class FrameAdaLayerNormZero(CosmosAdaLayerNormZero):
    """diffusers' CosmosAdaLayerNormZero on the frame rows of the timestep embedding.

    `tokens_per_frame` is set by the model's forward pre-hook (`set_frame_adaln`) from the
    latents' shape; without it, or when the rows do not split into frames, this is diffusers'
    forward unchanged."""

    tokens_per_frame: int | None = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        embedded_timestep: torch.Tensor,
        temb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per_frame = self.tokens_per_frame
        batch, tokens, dim = hidden_states.shape
        if embedded_timestep.ndim != 3 or not per_frame or tokens % per_frame:
            return super().forward(hidden_states, embedded_timestep, temb)
        frames = tokens // per_frame
        emb = self.linear_2(self.linear_1(self.activation(embedded_timestep[:, ::per_frame])))
        if temb is not None:
            emb = emb + temb[:, ::per_frame]
        shift, scale, gate = (x.unsqueeze(2) for x in emb.chunk(3, dim=-1))  # (B, T, 1, D)
        normed = self.norm(hidden_states).unflatten(1, (frames, per_frame))
        normed = normed * (1 + scale) + shift
        gate = gate.expand(batch, frames, per_frame, dim)
        return normed.flatten(1, 2), gate.flatten(1, 2)


def _record_tokens_per_frame(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: tokens per latent frame from the latents (B, C, T, H, W) the model
    gets (`hidden_states` of the transformer, `latents` of the control branch)."""
    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    latents = bound.get("hidden_states", bound.get("latents"))
    _, patch_h, patch_w = model.config.patch_size
    per_frame = (latents.shape[-2] // patch_h) * (latents.shape[-1] // patch_w)
    for module in model.modules():
        if isinstance(module, FrameAdaLayerNormZero):
            module.tokens_per_frame = per_frame


def set_frame_adaln(model: nn.Module, enabled: bool = True) -> None:
    """Switch the adaLN layers of every block of a Cosmos model to the frame-wise forward
    (before wrapping, compiling or sharding the blocks); `enabled=False` switches them back
    (for benchmarks that compare both)."""
    old, new = (
        (CosmosAdaLayerNormZero, FrameAdaLayerNormZero)
        if enabled
        else (FrameAdaLayerNormZero, CosmosAdaLayerNormZero)
    )
    for module in model.modules():
        if type(module) is old:
            module.__class__ = new
    if _record_tokens_per_frame not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_record_tokens_per_frame, with_kwargs=True)
