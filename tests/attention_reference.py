"""Exact attention in fp32, which the quantised kernels' tests measure their error against."""

from __future__ import annotations

import torch


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax(Q.Kᵀ/√D).V of (B, L, H, D) tensors, in fp32."""
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
