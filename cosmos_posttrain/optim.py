"""AdamW over the trained parameters and the reference's lambda-linear learning-rate schedule."""

from __future__ import annotations

import torch
from omegaconf import DictConfig


def build_optimizer(params: list[torch.nn.Parameter], config: DictConfig) -> torch.optim.AdamW:
    opt = config.optimizer
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(
        params,
        lr=opt.lr,
        betas=tuple(opt.betas),
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        fused=fused or None,
    )


def lr_factor(
    step: int, warm_up: int, cycle: int, f_start: float, f_max: float, f_min: float
) -> float:
    """Linear warm-up from f_start to f_max, then linear decay to f_min at `cycle`."""
    if warm_up > 0 and step < warm_up:
        return f_start + (f_max - f_start) * step / warm_up
    span = max(1, cycle - warm_up)
    return max(f_min, f_max - (f_max - f_min) * (step - warm_up) / span)


def build_scheduler(optimizer: torch.optim.Optimizer, config: DictConfig):
    sched = config.scheduler
    cycle = sched.cycle_lengths[0] or config.trainer.max_iter
    args = (sched.warm_up_steps[0], cycle, sched.f_start[0], sched.f_max[0], sched.f_min[0])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, *args))
