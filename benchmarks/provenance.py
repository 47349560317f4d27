"""What produced a benchmark row: the code's commit (marked when the tree had changes) and the
versions of the libraries whose kernels it timed."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "torch",
    "triton",
    "diffusers",
    "flash-attn-4",
    "nvidia-cutlass-dsl",
    "sageattention",
    "torchao",
    "nvidia-cudnn-frontend",
)


def git_commit() -> str | None:
    """Short HEAD hash, with "-dirty" when tracked files differ from it (None without git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        )
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], capture_output=True, cwd=REPO)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode else "")


def versions() -> dict[str, str]:
    """Installed versions of PACKAGES (absent ones left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def provenance() -> dict:
    return {"git_commit": git_commit(), "versions": versions()}
