"""The adaLN modulation of the Cosmos models computed once per latent frame, not once per token.

Cosmos 2.5 gives each latent frame its own timestep (conditioning frames keep theirs), and
diffusers' model forward copies the timestep embedding to every token before the blocks run.
Each block's three adaLN-Zero layers (SiLU, then 2048 -> 256 -> 6144 products) and the output
layer's adaLN then run on 84,480 rows per clip at the seed shape, of which only 24 differ: in
the trainer that is forward, recompute and backward of about 1 TFLOP of products and several
GiB of memory traffic per block. Here they run on the first token of each frame, and shift,
scale and gate are broadcast over the frame's tokens: the same values up to rounding
(tests/test_parallelize.py), the same parameters and state-dict names.
"""

from __future__ import annotations

import functools
import inspect

import torch
from diffusers.models.transformers.transformer_cosmos import (
    CosmosAdaLayerNorm,
    CosmosAdaLayerNormZero,
)
from torch import nn


class _FrameRows:
    """What the two frame-wise layers share. The model's forward pre-hook (`set_frame_adaln`)
    sets `frame_size` from the latents: an empty tensor of shape (tokens per frame, 0). The
    count travels as a tensor size, not an int attribute, so that torch.compile takes a new
    resolution as a dynamic size (as it does diffusers' per-token tensors) instead of compiling
    the blocks again for every value."""

    frame_size: torch.Tensor | None = None

    def frame_embedding(
        self,
        hidden_states: torch.Tensor,
        embedded_timestep: torch.Tensor,
        temb: torch.Tensor | None,
        width: int,
    ) -> torch.Tensor | None:
        """The modulation rows (B, T, width) from the first token of each frame, or None where
        the rows are not frames (one timestep per clip, no frame size, tokens that do not
        split into it): the caller then runs diffusers' forward unchanged."""
        if self.frame_size is None or embedded_timestep.ndim != 3:
            return None
        per_frame = self.frame_size.shape[0]
        if not per_frame or hidden_states.shape[1] % per_frame:
            return None
        emb = self.linear_2(self.linear_1(self.activation(embedded_timestep[:, ::per_frame])))
        return emb if temb is None else emb + temb[:, ::per_frame, :width]

    def modulate(
        self, hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """LayerNorm, then each frame's tokens scaled and shifted by that frame's row."""
        frames = shift.shape[1]
        normed = self.norm(hidden_states).unflatten(1, (frames, -1))
        return (normed * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)).flatten(1, 2)


class FrameAdaLayerNormZero(_FrameRows, CosmosAdaLayerNormZero):
    """diffusers' CosmosAdaLayerNormZero (the blocks' three norms) on the frame rows."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        embedded_timestep: torch.Tensor,
        temb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.frame_embedding(
            hidden_states, embedded_timestep, temb, 3 * hidden_states.shape[-1]
        )
        if emb is None:
            return super().forward(hidden_states, embedded_timestep, temb)
        shift, scale, gate = emb.chunk(3, dim=-1)
        gate = gate.unsqueeze(2).expand(-1, -1, hidden_states.shape[1] // gate.shape[1], -1)
        return self.modulate(hidden_states, shift, scale), gate.flatten(1, 2)


class FrameAdaLayerNorm(_FrameRows, CosmosAdaLayerNorm):
    """diffusers' CosmosAdaLayerNorm (the output layer's norm) on the frame rows."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        embedded_timestep: torch.Tensor,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.frame_embedding(hidden_states, embedded_timestep, temb, 2 * self.embedding_dim)
        if emb is None:
            return super().forward(hidden_states, embedded_timestep, temb)
        return self.modulate(hidden_states, *emb.chunk(2, dim=-1))


FRAME_WISE = {CosmosAdaLayerNormZero: FrameAdaLayerNormZero, CosmosAdaLayerNorm: FrameAdaLayerNorm}


@functools.cache
def _forward_signature(model_class: type) -> inspect.Signature:
    return inspect.signature(model_class.forward)


def _record_frame_size(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: tokens per latent frame from the latents (B, C, T, H, W) the model
    gets (`hidden_states` of the transformer, `latents` of the control branch)."""
    bound = _forward_signature(type(model)).bind(model, *args, **kwargs).arguments
    latents = bound.get("hidden_states", bound.get("latents"))
    _, patch_h, patch_w = model.config.patch_size
    per_frame = (latents.shape[-2] // patch_h) * (latents.shape[-1] // patch_w)
    size = latents.new_empty(per_frame, 0)  # no memory: only its shape is read
    for module in model.modules():
        if isinstance(module, _FrameRows):
            module.frame_size = size


def set_frame_adaln(model: nn.Module, enabled: bool = True) -> None:
    """Switch the adaLN layers of a Cosmos model to the frame-wise forward (before wrapping,
    compiling or sharding the blocks); `enabled=False` switches them back (for benchmarks that
    compare both)."""
    swap = FRAME_WISE if enabled else {new: old for old, new in FRAME_WISE.items()}
    for module in model.modules():
        if type(module) in swap:
            module.__class__ = swap[type(module)]
    if _record_frame_size not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_record_frame_size, with_kwargs=True)
