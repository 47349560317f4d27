"""Depth control videos with Depth Anything V2 (transformers).

`python -m cosmos_posttrain.depth --input_video V --output_video O --encoder vits|vitl` (the
reference's command). Frames are fed as RGB (the reference's pipeline fed BGR, inconsistent with
its own on-the-fly path), in batches on the GPU when there is one. The relative depth is
normalised with the minimum and maximum over the whole video, not per frame, so brightness means
the same nearness in every frame; grey is replicated to 3 channels and written as H.264 with the
source's frame count, size and fps.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cli import run_cli
from .errors import CosmosPosttrainError
from .progress import progress
from .video_io import iter_frames, probe_video, write_video

log = logging.getLogger("cosmos_posttrain.depth")

ENCODERS = {
    "vits": "depth-anything/Depth-Anything-V2-Small-hf",
    "vitb": "depth-anything/Depth-Anything-V2-Base-hf",
    "vitl": "depth-anything/Depth-Anything-V2-Large-hf",
}


def tiny_depth_anything_config():
    """Depth Anything V2's architecture at toy width (a 32-wide Dinov2 backbone on 56-pixel
    inputs): random-weight models for the CPU tests and the benchmarks' TINY mode."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[16] * 4,
        fusion_hidden_size=16,
        head_hidden_size=16,
    )


def load_pretrained(model_id: str, what: str, loader) -> object:
    """Load a transformers model or processor, with an error that says what to do offline."""
    try:
        return loader(model_id)
    except (OSError, ValueError) as exc:  # ValueError: a folder without a usable config
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise CosmosPosttrainError(
            f"cannot load the {what} '{model_id}': {reason}. Without network access, download "
            f"it once elsewhere (`hf download {model_id} --local-dir DIR`) and pass that local "
            "folder DIR as the model id, or set HF_HOME to a cache that holds it."
        ) from exc


class DepthEstimator:
    """A Depth Anything model and its processor, loaded once for many videos."""

    def __init__(self, model, processor, device: torch.device, batch_size: int = 16) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, model_id: str, device: torch.device | None = None, batch_size: int = 16
    ) -> DepthEstimator:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = load_pretrained(
            model_id,
            "depth model",
            lambda m: AutoModelForDepthEstimation.from_pretrained(m, dtype=dtype),
        )
        processor = load_pretrained(model_id, "depth processor", AutoImageProcessor.from_pretrained)
        return cls(model, processor, device, batch_size)

    @torch.no_grad()
    def relative_depth(
        self, frames: Iterable[np.ndarray], total: int | None = None, desc: str = "depth"
    ) -> np.ndarray:
        """(T, H, W) float32 relative depth (larger = nearer) at the frames' own size."""
        out: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        bar = progress(total=total, desc=desc, unit="frame")

        def flush() -> None:
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            pixels = inputs["pixel_values"].to(next(self.model.parameters()).dtype)
            predicted = self.model(pixel_values=pixels).predicted_depth.float()
            height, width = batch[0].shape[:2]
            resized = F.interpolate(
                predicted[:, None], size=(height, width), mode="bicubic", align_corners=False
            )[:, 0]
            out.extend(resized.cpu().numpy())
            bar.update(len(batch))
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        bar.close()
        if not out:
            raise CosmosPosttrainError("no frames to estimate depth from")
        return np.stack(out)


def normalise_video(depth: np.ndarray) -> np.ndarray:
    """Min-max over the whole video to uint8, grey replicated to 3 channels: (T, H, W, 3)."""
    low, high = float(depth.min()), float(depth.max())
    scaled = (depth - low) / (high - low) if high > low else np.zeros_like(depth)
    grey = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def depth_video(
    estimator: DepthEstimator, input_video: str | Path, output_video: str | Path
) -> Path:
    """Write the depth video of one clip (atomically): same frame count, size and fps."""
    info = probe_video(input_video)
    if info.width % 2 or info.height % 2:
        raise CosmosPosttrainError(
            f"{input_video}: {info.width}x{info.height} has an odd side; H.264 (yuv420p) needs "
            "even sizes, so the depth video could not match it"
        )
    depth = estimator.relative_depth(
        iter_frames(input_video), info.frames, desc=Path(input_video).name
    )
    if len(depth) != info.frames:
        raise CosmosPosttrainError(
            f"{input_video}: decoded {len(depth)} frames, the stream holds {info.frames}"
        )
    write_video(output_video, normalise_video(depth), info.fps)
    return Path(output_video)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input_video", required=True)
    p.add_argument("--output_video", required=True)
    p.add_argument("--encoder", choices=sorted(ENCODERS), default="vits")
    p.add_argument("--model", help="any Depth Anything model id or local folder (wins)")
    p.add_argument("--batch_size", type=int, default=16)
    args = p.parse_args(argv)

    def action() -> None:
        probe_video(args.input_video)  # a bad input fails before the model is loaded
        estimator = DepthEstimator.from_pretrained(
            args.model or ENCODERS[args.encoder], batch_size=args.batch_size
        )
        depth_video(estimator, args.input_video, args.output_video)

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
