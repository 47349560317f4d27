"""Model FLOPs of Cosmos-Transfer2.5-2B (28 base blocks + 4 control blocks, width 2048), counted
like shared/bench's baseline: the benchmarks' TFLOP/s and MFU all divide these."""

from __future__ import annotations

DIM = 2048
BASE_BLOCKS = 28
CONTROL_BLOCKS = 4


def block_flops(tokens: int, dim: int = DIM) -> tuple[float, float]:
    """(linear, self-attention) FLOPs of one block's forward over `tokens` video tokens: the
    q/k/v/out (4 d^2), cross-attention q/out (2 d^2) and MLP (8 d^2) products, and QK^T + PV."""
    linear = 2 * tokens * (4 * dim * dim + 2 * dim * dim + 8 * dim * dim)
    attention = 4 * tokens * tokens * dim
    return linear, attention


def forward_flops(tokens: int) -> float:
    """One forward of the base and the control branch."""
    return (BASE_BLOCKS + CONTROL_BLOCKS) * sum(block_flops(tokens))


def training_step_flops(tokens: int) -> tuple[float, float]:
    """(forward, backward) of one clip: the backward takes input gradients only through the
    frozen base, weight gradients too in the control branch; recompute is not counted."""
    linear, attention = block_flops(tokens)
    backward = BASE_BLOCKS * (linear + 2.5 * attention) + CONTROL_BLOCKS * (
        2 * linear + 2.5 * attention
    )
    return forward_flops(tokens), backward
