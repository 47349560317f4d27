"""DCP checkpoints that never lose work.

Layout (the reference's): <run>/checkpoints/iter_{:09d}/{model,optim,scheduler,trainer}/ and
<run>/checkpoints/latest_checkpoint.txt. A save is written into a hidden `.partial-` folder and
renamed to `iter_X` only once all four parts are complete, and `latest_checkpoint.txt` is then
replaced atomically: a kill at any moment leaves the previous checkpoint usable. Nothing here
ever deletes a complete checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from .fsutil import write_text_atomic

log = logging.getLogger(__name__)

PARTS = ("model", "optim", "scheduler", "trainer")
CONTROLNET_CONFIG = "controlnet_config.json"  # the trained branch's diffusers config
ITER_RE = re.compile(r"^iter_(\d{9})$")


def iter_name(iteration: int) -> str:
    return f"iter_{iteration:09d}"


def is_complete(folder: Path) -> bool:
    return all((folder / part / ".metadata").is_file() for part in PARTS)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class Checkpointer:
    def __init__(self, checkpoints_dir: str | Path, async_mode: bool = False) -> None:
        self.dir = Path(checkpoints_dir)
        self.async_mode = async_mode
        self._pending: tuple[list[Future], Path, Path, int] | None = None

    @property
    def latest_file(self) -> Path:
        return self.dir / "latest_checkpoint.txt"

    def latest(self) -> Path | None:
        """The newest complete checkpoint: latest_checkpoint.txt, or a newer complete folder
        left by a kill between the rename and the update of that file."""
        candidates = []
        if self.latest_file.is_file():
            named = self.dir / self.latest_file.read_text(encoding="utf-8").strip()
            if is_complete(named):
                candidates.append(named)
            else:
                log.warning(
                    "%s names %s, which is not a complete checkpoint", self.latest_file, named.name
                )
        if self.dir.is_dir():
            candidates += [
                p for p in self.dir.iterdir() if ITER_RE.match(p.name) and is_complete(p)
            ]
        return max(candidates, key=lambda p: p.name, default=None)

    def save(
        self,
        iteration: int,
        states: dict[str, dict[str, Any]],
        extra_files: dict[str, str] | None = None,
    ) -> None:
        """Write the four parts of `states` for `iteration` (asynchronously if configured).

        `extra_files` (name -> text) land in the checkpoint folder too, e.g. the architecture
        that conversion needs to build a diffusers folder.
        """
        self.wait()
        final = self.dir / iter_name(iteration)
        if final.exists():
            log.info("%s exists already; not overwritten", final)
            return
        token = uuid.uuid4().hex[:8] if _rank() == 0 else ""
        if dist.is_available() and dist.is_initialized():
            holder = [token]
            dist.broadcast_object_list(holder, src=0)
            token = holder[0]
        staging = self.dir / f".partial-{iter_name(iteration)}-{token}"
        if _rank() == 0 and extra_files:
            staging.mkdir(parents=True, exist_ok=True)
            for name, text in extra_files.items():
                (staging / name).write_text(text, encoding="utf-8")
        if self.async_mode:
            futures = [dcp.async_save(states[p], checkpoint_id=staging / p) for p in PARTS]
            self._pending = (futures, staging, final, iteration)
            return
        for part in PARTS:
            dcp.save(states[part], checkpoint_id=staging / part)
        self._publish(staging, final, iteration)

    def wait(self) -> None:
        """Finish an asynchronous save; called before the next save and at the end."""
        if self._pending is None:
            return
        futures, staging, final, iteration = self._pending
        self._pending = None
        for future in futures:
            future.result()
        self._publish(staging, final, iteration)

    def _publish(self, staging: Path, final: Path, iteration: int) -> None:
        _barrier()
        if _rank() == 0:
            os.replace(staging, final)
            write_text_atomic(self.latest_file, final.name + "\n")
            for stale in self.dir.glob(".partial-*"):  # earlier interrupted saves, never loadable
                shutil.rmtree(stale, ignore_errors=True)
            log.info("[Iteration %d] Saved checkpoint %s", iteration, final)
        _barrier()

    def load(self, folder: Path, states: dict[str, dict[str, Any]]) -> None:
        """Load the parts named in `states`, in place."""
        for part, state in states.items():
            dcp.load(state, checkpoint_id=folder / part)


def load_controlnet_weights(folder: str | Path, controlnet, use_ema: bool = True) -> None:
    """Load the trained (or EMA) control-branch weights of a checkpoint folder into `controlnet`."""
    prefix = "net_ema.controlnet." if use_ema else "net.controlnet."
    template = {
        f"{prefix}{k}": v.detach().clone().float() for k, v in controlnet.state_dict().items()
    }
    dcp.load(template, checkpoint_id=Path(folder) / "model")
    controlnet.load_state_dict({k.removeprefix(prefix): v for k, v in template.items()})
