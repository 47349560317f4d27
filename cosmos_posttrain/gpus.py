"""GPUs of its own for every GPU job on a workstation: `python -m cosmos_posttrain.gpus N --
cmd ...` runs cmd on N GPUs that no other job of this user holds.

Snakemake counts the `gpu` resource of running jobs (never more than `--resources gpu=K`) but
does not say which GPUs a job gets, so every job would start at cuda:0. Each job therefore takes
free GPU ids under file locks, held until it ends, and sees only those through
CUDA_VISIBLE_DEVICES. Under SLURM, which gives each job its own GPUs, nothing changes.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path

from .cli import run_cli
from .errors import CosmosPosttrainError

LOCK_DIR = Path(
    os.environ.get("COSMOS_GPU_LOCK_DIR")
    or Path(tempfile.gettempdir()) / f"cosmos_posttrain_gpus_{os.getuid()}"
)
_held: list[int] = []  # lock file descriptors, open for the life of the process


class GpuError(CosmosPosttrainError):
    """A job asks for more GPUs than this machine has."""


def machine_gpus(env: MutableMapping[str, str]) -> list[str]:
    """The GPUs jobs share: CUDA_VISIBLE_DEVICES when set, else those nvidia-smi lists."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def claim_gpus(
    count: int,
    env: MutableMapping[str, str] = os.environ,
    lock_dir: Path = LOCK_DIR,
    poll: float = 1.0,
) -> list[str] | None:
    """Lock `count` free GPUs, waiting while they are taken, and restrict `env` (this process
    and its children) to them. None when there is nothing to do: no GPUs asked for or present,
    or a SLURM job."""
    if count <= 0 or "SLURM_JOB_ID" in env:
        return None
    gpus = machine_gpus(env)
    if not gpus:
        return None
    if count > len(gpus):
        raise GpuError(f"a job asks for {count} GPUs, this machine has {len(gpus)}: {gpus}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        taken: list[tuple[str, int]] = []
        for gpu in gpus:
            fd = os.open(lock_dir / f"gpu{gpu.strip()}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            taken.append((gpu, fd))
            if len(taken) == count:
                break
        if len(taken) == count:
            break
        for _, fd in taken:  # all or nothing: two jobs never hold half of what each needs
            os.close(fd)
        time.sleep(poll)
    for _, fd in taken:
        os.set_inheritable(fd, True)  # held across exec and by the job's children
        _held.append(fd)
    if "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the numbering nvidia-smi uses
    chosen = [gpu for gpu, _ in taken]
    env["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    return chosen


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        description="Run a command on N GPUs that no other job of this machine holds.",
        usage="python -m cosmos_posttrain.gpus N -- command [args...]",
    )
    p.add_argument("count", type=int, help="GPUs to claim (0: none)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="after --: what to run")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given after --")

    def action() -> None:
        claim_gpus(args.count)
        os.execvp(command[0], command)

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
