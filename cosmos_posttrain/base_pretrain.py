"""Pre-training the tiny base model for the demo: the stand-in for NVIDIA's released weights.

No released checkpoint exists for the tiny preset, and a control branch trained on a frozen
*random* base does not learn (measured while designing the demo). So the demo first trains the
whole tiny transformer briefly with the same objective and data, without control, saves it as
`transformer.*` weights, and post-training then loads it through `checkpoint.load_path`
exactly as it loads the real base.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from .cli import run_cli
from .data import ResumableSampler, SingleViewDataset, clip_loader
from .experiments import build_config, latent_frames
from .fsutil import atomic_output
from .models import build_models
from .optim import lr_factor
from .progress import terminal_bar
from .trainer import step_generator, training_loss

log = logging.getLogger("cosmos_posttrain.base_pretrain")


def pretrain_base(
    dataset_dir: str | Path,
    out_path: str | Path,
    iterations: int,
    lr: float = 1e-3,
    seed: int = 0,
    num_frames: int = 9,
    log_every: int = 50,
) -> list[float]:
    """Train the tiny transformer from scratch; write `transformer.*` weights; return losses."""
    config = build_config(
        [
            "experiment=transfer2_singleview_posttrain_edge_example",
            "preset=tiny",
            f"dataloader_train.dataset.dataset_dir={dataset_dir}",
            f"trainer.seed={seed}",
            f"dataloader_train.dataset.num_frames={num_frames}",
            f"model.config.state_t={latent_frames(num_frames)}",
        ]
    )
    device = torch.device("cpu")
    models = build_models(config, device)
    transformer = models.transformer.requires_grad_(True).train()
    params = list(transformer.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    warm_up = min(100, iterations // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warm_up, iterations, 0.01, 1.0, 0.1)
    )
    dataset = SingleViewDataset(dataset_dir, num_frames, "edge", "tiny", cache_frames=True)
    batches = iter(
        clip_loader(dataset, ResumableSampler(len(dataset), seed=seed), workers=0, prefetch=0)
    )
    losses: list[float] = []
    start = time.perf_counter()
    bar = terminal_bar(total=iterations, desc="base pre-training")
    for iteration in range(iterations):
        batch = next(batches)
        loss = training_loss(
            models, batch, config, step_generator(seed, iteration, 0, 0), device, with_control=False
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
        if (iteration + 1) % log_every == 0 or iteration + 1 == iterations:
            recent = losses[-log_every:]
            log.info(
                "[Base %d/%d] Loss: %.3f, LR: %.2e, Time: %.2fs/it",
                iteration + 1,
                iterations,
                sum(recent) / len(recent),
                schedule.get_last_lr()[0],
                (time.perf_counter() - start) / (iteration + 1),
            )
    if bar is not None:
        bar.close()
    state = {f"transformer.{k}": v.detach().clone() for k, v in transformer.state_dict().items()}
    with atomic_output(out_path) as tmp:
        torch.save(state, tmp)
    log.info("base model written to %s", out_path)
    return losses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset_dir")
    p.add_argument("out_path")
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_frames", type=int, default=9)
    args = p.parse_args(argv)
    return run_cli(
        lambda: pretrain_base(
            args.dataset_dir, args.out_path, args.iterations, args.lr, args.seed, args.num_frames
        )
    )


if __name__ == "__main__":
    sys.exit(main())
