"""The MLP's first product and its GELU in one cuBLASLt call, for inference.

Each Cosmos block's MLP widens 2048 channels to 8192 and applies GELU. torch.compile cannot fuse
the GELU into cuBLAS's product, so at 84,480 tokens a guided step writes and reads back the
widened activations once more per block (about 2.5 s of a 93-frame chunk on an H100,
docs/BENCHMARKS.md). cuBLASLt can apply GELU in the product's epilogue, in fp32 before the bf16
rounding, but only GELU's tanh form. That differs from the erf form the model was trained with by
at most 4.7e-4 (at inputs near -2.7), while bf16 rounds an activation near 1 by up to 3.9e-3;
the velocity's error against an fp32 erf-GELU model is measured in docs/BENCHMARKS.md.
Inference only; training keeps diffusers' exact GELU.
"""

from __future__ import annotations

import torch
from diffusers.models.activations import GELU


@torch.library.custom_op("cosmos_posttrain::linear_gelu_tanh", mutates_args=())
def linear_gelu_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x @ weightᵀ + bias) as one product (an opaque op, so compile keeps it whole)."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch._addmm_activation(bias, flat, weight.t(), use_gelu=True)
    return out.view(*x.shape[:-1], weight.shape[0])


@linear_gelu_tanh.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class EpilogueGELU(GELU):
    """diffusers' GELU (a linear layer, then GELU) as `linear_gelu_tanh`; same parameters."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight, bias = self.proj.weight, self.proj.bias
        if bias is None:
            bias = weight.new_zeros(weight.shape[0])
        return linear_gelu_tanh(hidden_states.to(weight.dtype), weight, bias)


def set_gelu_epilogue(model: torch.nn.Module, enabled: bool = True) -> int:
    """Swap the class of every erf-GELU MLP input layer of `model` (or back); returns how many."""
    swapped = 0
    for module in model.modules():
        if enabled and type(module) is GELU and module.approximate == "none":
            module.__class__ = EpilogueGELU
            swapped += 1
        elif not enabled and type(module) is EpilogueGELU:
            module.__class__ = GELU
            swapped += 1
    return swapped
