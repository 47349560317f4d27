"""What the user sees while training runs: log lines, a progress bar, TensorBoard, W&B."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .progress import terminal_bar

log = logging.getLogger("cosmos_posttrain.train")


class Metrics:
    """Rank-0 reporting. One line per logging interval in the reference's form:
    `[Iteration 100/2000] Loss: 0.234, LR: 4.95e-05, Time: 1.23s/it`."""

    def __init__(
        self,
        run_dir: Path,
        max_iter: int,
        start: int,
        logging_iter: int,
        wandb_mode: str,
        config: dict,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.max_iter, self.logging_iter = max_iter, logging_iter
        self.losses: list[float] = []
        self.last_time = time.perf_counter()
        self.last_iter = start
        self.writer = self.wandb = self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start)
        if wandb_mode != "disabled":
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError(
                    f"job.wandb_mode={wandb_mode} needs the 'wandb' package; install it or set "
                    "job.wandb_mode=disabled"
                ) from exc
            self.wandb = wandb.init(
                project=config["job"]["project"],
                group=config["job"]["group"],
                name=config["job"]["name"],
                mode=wandb_mode,
                config=config,
                dir=str(run_dir),
                resume="allow",
                id=config["job"]["name"],
            )
        self.bar = terminal_bar(total=max_iter, initial=start, desc="training")

    def step(self, iteration: int, loss: float, lr: float, grad_norm: float) -> None:
        """Record iteration `iteration` (1-based count of finished iterations)."""
        if not self.enabled:
            return
        self.losses.append(loss)
        self.writer.add_scalar("train/loss", loss, iteration)
        self.writer.add_scalar("train/lr", lr, iteration)
        self.writer.add_scalar("train/grad_norm", grad_norm, iteration)
        if self.wandb is not None:
            self.wandb.log(
                {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm}, step=iteration
            )
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        if iteration % self.logging_iter == 0 or iteration == self.max_iter:
            now = time.perf_counter()
            per_it = (now - self.last_time) / max(1, iteration - self.last_iter)
            mean_loss = sum(self.losses) / len(self.losses)
            line = (
                f"[Iteration {iteration}/{self.max_iter}] Loss: {mean_loss:.3f}, "
                f"LR: {lr:.2e}, Time: {per_it:.2f}s/it"
            )
            (self.bar.write if self.bar is not None else log.info)(line)
            self.writer.add_scalar("train/s_per_it", per_it, iteration)
            self.writer.flush()
            self.losses, self.last_time, self.last_iter = [], now, iteration

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
