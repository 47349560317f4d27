"""Power-function EMA (EDM2 style) of the trained weights, kept in fp32.

beta(it) = (1 - 1/(it + 1)) ** (gamma + 1), gamma the largest real root of
x^3 + 7x^2 + (16 - s^-2) x + (12 - s^-2) for the relative width s (0.10 in the reference).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def power_ema_gamma(rate: float) -> float:
    s2 = rate**-2
    roots = np.roots([1, 7, 16 - s2, 12 - s2])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def clean_name(name: str) -> str:
    """A parameter's name without the activation-checkpoint wrapper's prefix, as state dicts
    name it."""
    return name.replace("_checkpoint_wrapped_module.", "")


class PowerEMA:
    """fp32 shadow copies of a module's parameters, updated after each optimizer step."""

    def __init__(self, module: nn.Module, rate: float = 0.10) -> None:
        self.gamma = power_ema_gamma(rate)
        self.shadow = {
            clean_name(n): p.detach().float().clone() for n, p in module.named_parameters()
        }

    def beta(self, iteration: int) -> float:
        return (1 - 1 / (iteration + 1)) ** (self.gamma + 1)

    @torch.no_grad()
    def update(self, module: nn.Module, iteration: int) -> None:
        beta = self.beta(iteration)
        for name, param in module.named_parameters():
            if param.requires_grad:
                self.shadow[clean_name(name)].mul_(beta).add_(
                    param.detach().float(), alpha=1 - beta
                )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for name, param in module.named_parameters():
            param.copy_(self.shadow[clean_name(name)].to(param.dtype))
