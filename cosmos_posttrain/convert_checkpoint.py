"""`python -m cosmos_posttrain.convert_checkpoint <iter_dir>/model <iter_dir>`: DCP to PyTorch.

Writes into the iteration folder, as the reference's converter does:
- `model.pt`: everything in the DCP `model` part (`net.*` trained and `net_ema.*` EMA weights);
- `model_ema_fp32.pt`, `model_ema_bf16.pt`: the EMA weights under the plain `net.*` names;
- `controlnet_diffusers/`: the EMA control branch as a diffusers folder that
  `CosmosControlNetModel.from_pretrained` and `Cosmos2_5_TransferPipeline` load directly.

Every file is written atomically, and `torch.load(..., weights_only=True)` reads them.
Unlike the reference, existing outputs are never deleted first: each one is replaced in a
single rename once its new version is complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from .checkpoint import CONTROLNET_CONFIG, Checkpointer, is_complete
from .cli import run_cli
from .errors import CosmosPosttrainError
from .fsutil import atomic_output
from .progress import progress

log = logging.getLogger("cosmos_posttrain.convert")

EMA_PREFIX, NET_PREFIX = "net_ema.", "net."
DIFFUSERS_FOLDER = "controlnet_diffusers"


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def ema_state(full: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """The `net_ema.*` tensors renamed to `net.*`; an error if the checkpoint has none."""
    ema = {
        NET_PREFIX + k[len(EMA_PREFIX) :]: v for k, v in full.items() if k.startswith(EMA_PREFIX)
    }
    if not ema:
        raise CosmosPosttrainError(
            f"{source}: the checkpoint holds no EMA weights (net_ema.*); it was trained with "
            "ema.enabled=false, so only model.pt can be written"
        )
    return ema


def convert(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Convert one DCP `model` folder; return the paths written."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / ".metadata").is_file():
        raise CosmosPosttrainError(f"{model_dir}: not a DCP checkpoint folder (no .metadata)")
    out_dir.mkdir(parents=True, exist_ok=True)
    config_file = model_dir.parent / CONTROLNET_CONFIG
    bar = progress(total=4 if config_file.is_file() else 3, desc="converting", unit="file")

    def done(name: str, path: Path) -> None:
        written[name] = path
        log.info("wrote %s: %s", name, path)
        bar.update(1)

    written: dict[str, Path] = {}
    with atomic_output(out_dir / "model.pt") as tmp:
        dcp_to_torch_save(model_dir, tmp)
    done("model", out_dir / "model.pt")
    full = torch.load(written["model"], map_location="cpu", weights_only=True, mmap=True)
    ema = ema_state(full, model_dir)
    _save({k: v.float() for k, v in ema.items()}, out_dir / "model_ema_fp32.pt")
    done("ema_fp32", out_dir / "model_ema_fp32.pt")
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in ema.items()}
    _save(bf16, out_dir / "model_ema_bf16.pt")
    done("ema_bf16", out_dir / "model_ema_bf16.pt")
    if config_file.is_file():
        target = write_diffusers_folder(ema, config_file, out_dir / DIFFUSERS_FOLDER)
        done("diffusers", target)
    else:
        log.warning("%s missing: no diffusers folder written", config_file)
    bar.close()
    return written


def write_diffusers_folder(ema: dict[str, torch.Tensor], config_file: Path, target: Path) -> Path:
    """Save the EMA control branch with `save_pretrained`, replacing `target` in one rename."""
    from diffusers import CosmosControlNetModel

    config = json.loads(config_file.read_text(encoding="utf-8"))
    controlnet = CosmosControlNetModel.from_config(config)
    prefix = NET_PREFIX + "controlnet."
    state = {k[len(prefix) :]: v for k, v in ema.items() if k.startswith(prefix)}
    controlnet.load_state_dict(state, strict=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        controlnet.save_pretrained(staging)
        backup = None
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
        os.replace(staging, target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def latest_model_dir(checkpoints_dir: str | os.PathLike[str]) -> Path:
    """`<checkpoints>/<latest>/model`, the default input of the Snakemake target."""
    latest = Checkpointer(checkpoints_dir).latest()
    if latest is None or not is_complete(latest):
        raise CosmosPosttrainError(f"{checkpoints_dir}: no complete checkpoint to convert")
    return latest / "model"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input_dir", help="<iter_dir>/model, a DCP folder")
    p.add_argument("output_dir", help="where the .pt files go (normally <iter_dir>)")
    args = p.parse_args(argv)
    return run_cli(lambda: convert(args.input_dir, args.output_dir))


if __name__ == "__main__":
    sys.exit(main())
