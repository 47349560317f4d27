"""The benchmarks' switch between the self-attention processor's one q/k/v product (the
product's way, context_parallel._fused_qkv) and diffusers' three (the `/unfused` training
variants, and the FP8 inference variant, measured that way)."""

from __future__ import annotations

import torch

from cosmos_posttrain import context_parallel

FUSED = context_parallel._fused_qkv


def three_products(attn, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k and v as diffusers projects them."""
    return tuple(layer(hidden_states) for layer in (attn.to_q, attn.to_k, attn.to_v))


def use_fused_qkv(fused: bool) -> None:
    """Every CosmosSelfAttention call from now on projects q, k and v in one product or three
    (the processor looks the function up at call time; compiled graphs need a reset)."""
    context_parallel._fused_qkv = FUSED if fused else three_products
