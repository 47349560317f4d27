"""Segmentation control videos: SAM2 video propagation (transformers), prompted on frame 0.

`python -m cosmos_posttrain.seg --input_video V --output_video O --mode prompt|box|points
[--prompt "person, car"] [--box x1,y1,x2,y2] [--points "x,y;x,y" --labels 1,0] [--visualize]`.

In prompt mode Grounding DINO finds boxes on frame 0 (box threshold 0.15, text threshold 0.25,
retried at 0.1/0.1 when nothing is found), one object per box. The output is a colour-coded
instance video: at most 100 objects ordered by area, each drawn in one fixed colour from a fixed
palette for the whole video (the reference drew random colours that change between runs), on
black, as H.264 with the source's frame count, size and fps.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cli import run_cli
from .depth import load_pretrained
from .errors import CosmosPosttrainError
from .progress import progress
from .video_io import probe_video, read_frames, write_video

log = logging.getLogger("cosmos_posttrain.seg")

SAM2_MODEL = "facebook/sam2.1-hiera-large"
GROUNDING_MODEL = "IDEA-Research/grounding-dino-base"
MAX_OBJECTS = 100
THRESHOLDS = ((0.15, 0.25), (0.1, 0.1))


def tiny_sam2_video_config():
    """SAM2.1's video architecture at toy size (one Hiera block per stage on 256-pixel inputs):
    random-weight models for the CPU tests and the controls benchmark's TINY mode."""
    from transformers import Sam2VideoConfig

    return Sam2VideoConfig(
        vision_config={
            "model_type": "sam2_vision_model",
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "blocks_per_stage": [1, 1, 1, 1],
                "image_size": [256, 256],
                "window_positional_embedding_background_size": [2, 2],
            },
            "backbone_feature_sizes": [[64, 64], [32, 32], [16, 16]],
        },
        prompt_encoder_config={"image_size": 256},
        image_size=256,
        memory_attention_num_layers=1,
        memory_attention_rope_feat_sizes=[16, 16],
    )


def tiny_grounding_dino_config(vocab_size: int):
    """Grounding DINO's architecture at toy size (an 8-wide Swin on 64-pixel inputs, a 16-wide
    one-layer BERT over `vocab_size` words): for the CPU tests and the benchmark's TINY mode."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    return GroundingDinoConfig(
        backbone_config=SwinConfig(
            window_size=7,
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            image_size=64,
            out_features=["stage2", "stage3", "stage4"],
            out_indices=[2, 3, 4],
        ),
        text_config=BertConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=64,
        ),
        d_model=32,  # GroupNorm(32, d_model)
        num_queries=3,
        encoder_layers=1,
        decoder_layers=2,  # 1 fails to tie weights
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        max_text_len=32,
    )


def palette(n: int = MAX_OBJECTS) -> np.ndarray:
    """n distinct, fixed RGB colours, never black or dark: (n, 3) uint8.

    Greedy farthest-point picks from a 6-level RGB grid (channel max >= 153), starting at pure
    red, so any two colours differ by at least 51 in some channel and stay apart after H.264's
    chroma error. (Golden-ratio hues drew colours 0 and 89 almost identical.)
    """
    levels = np.arange(0, 256, 51)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[grid.max(1) >= 153].astype(np.int64)
    if n > len(grid):
        raise ValueError(f"palette: at most {len(grid)} colours, asked for {n}")
    chosen = [int(np.flatnonzero((grid == [255, 0, 0]).all(1))[0])]
    distance = ((grid - grid[chosen[0]]) ** 2).sum(1)
    while len(chosen) < n:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, ((grid - grid[chosen[-1]]) ** 2).sum(1))
    return grid[chosen].astype(np.uint8)


class SegInputError(CosmosPosttrainError):
    """A box, point list or label list on the command line is not usable."""


def parse_box(text: str, width: int, height: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise SegInputError(f"--box {text!r}: expected x1,y1,x2,y2 numbers") from exc
    if len(values) != 4:
        raise SegInputError(f"--box {text!r}: expected 4 numbers x1,y1,x2,y2, got {len(values)}")
    x1, y1, x2, y2 = values
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise SegInputError(
            f"--box {text!r} is outside the {width}x{height} frame or empty "
            "(need 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height)"
        )
    return values


def parse_points(
    points: str, labels: str, width: int, height: int
) -> tuple[list[list[float]], list[int]]:
    try:
        coords = [[float(v) for v in p.split(",")] for p in points.split(";") if p.strip()]
    except ValueError as exc:
        raise SegInputError(f'--points {points!r}: expected "x,y;x,y"') from exc
    if not coords or any(len(c) != 2 for c in coords):
        raise SegInputError(f'--points {points!r}: expected "x,y;x,y" pairs')
    try:
        values = [int(v) for v in labels.split(",") if v.strip()]
    except ValueError as exc:
        raise SegInputError(f"--labels {labels!r}: expected comma-separated 1 or 0") from exc
    if len(values) != len(coords) or any(v not in (0, 1) for v in values):
        raise SegInputError(
            f"--labels {labels!r}: need one label (1 = object, 0 = background) per point, "
            f"{len(coords)} point(s) given"
        )
    for x, y in coords:
        if not (0 <= x < width and 0 <= y < height):
            raise SegInputError(f"--points: ({x}, {y}) is outside the {width}x{height} frame")
    return coords, values


@dataclass
class Prompt:
    mode: str  # prompt | box | points
    text: str = ""
    box: str = ""
    points: str = ""
    labels: str = ""


class Segmenter:
    """SAM2 video (and Grounding DINO for text prompts), loaded once for many videos."""

    def __init__(
        self,
        sam_model,
        sam_processor,
        detector=None,
        detector_processor=None,
        device: torch.device | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.sam = sam_model.to(self.device).eval()
        self.sam_processor = sam_processor
        self.detector = detector.to(self.device).eval() if detector is not None else None
        self.detector_processor = detector_processor

    @classmethod
    def from_pretrained(
        cls,
        sam_id: str = SAM2_MODEL,
        grounding_id: str | None = GROUNDING_MODEL,
        device: torch.device | None = None,
    ) -> Segmenter:
        from transformers import (
            AutoModelForZeroShotObjectDetection,
            AutoProcessor,
            Sam2VideoModel,
            Sam2VideoProcessor,
        )

        device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        sam = load_pretrained(sam_id, "SAM2 model", Sam2VideoModel.from_pretrained)
        processor = load_pretrained(sam_id, "SAM2 processor", Sam2VideoProcessor.from_pretrained)
        detector = detector_processor = None
        if grounding_id:
            detector = load_pretrained(
                grounding_id,
                "Grounding DINO model",
                AutoModelForZeroShotObjectDetection.from_pretrained,
            )
            detector_processor = load_pretrained(
                grounding_id, "Grounding DINO processor", AutoProcessor.from_pretrained
            )
        return cls(sam, processor, detector, detector_processor, device)

    @torch.no_grad()
    def detect(self, frame: np.ndarray, text: str) -> list[list[float]]:
        """Boxes for a text prompt on one frame, highest score first; retried at 0.1/0.1."""
        if self.detector is None:
            raise CosmosPosttrainError("prompt mode needs a Grounding DINO model")
        labels = ". ".join(p.strip() for p in text.replace(".", ",").split(",") if p.strip())
        inputs = self.detector_processor(images=frame, text=labels + ".", return_tensors="pt")
        inputs = inputs.to(self.device)
        outputs = self.detector(**inputs)
        for box_threshold, text_threshold in THRESHOLDS:
            result = self.detector_processor.post_process_grounded_object_detection(
                outputs,
                inputs["input_ids"],
                threshold=box_threshold,
                text_threshold=text_threshold,
                target_sizes=[frame.shape[:2]],
            )[0]
            if len(result["boxes"]):
                order = torch.argsort(result["scores"], descending=True)
                return result["boxes"][order][:MAX_OBJECTS].tolist()
        return []

    @torch.no_grad()
    def masks(self, frames: np.ndarray, prompt: Prompt) -> np.ndarray:
        """(N, T, H, W) bool masks of the objects prompted on frame 0, propagated to all."""
        height, width = frames.shape[1:3]
        session = self.sam_processor.init_video_session(
            video=frames, inference_device=self.device, video_storage_device="cpu"
        )
        # The session keeps the obj_ids list it was given and empties it as objects are run,
        # so it gets a copy: `ids` must still list every object here.
        if prompt.mode == "prompt":
            boxes = self.detect(frames[0], prompt.text)
            if not boxes:
                return np.zeros((0, *frames.shape[:3]), dtype=bool)
            ids = list(range(1, len(boxes) + 1))
            self.sam_processor.add_inputs_to_inference_session(
                session, frame_idx=0, obj_ids=list(ids), input_boxes=[boxes], clear_old_inputs=True
            )
        elif prompt.mode == "box":
            ids = [1]
            box = parse_box(prompt.box, width, height)
            self.sam_processor.add_inputs_to_inference_session(
                session, frame_idx=0, obj_ids=list(ids), input_boxes=[[box]], clear_old_inputs=True
            )
        elif prompt.mode == "points":
            ids = [1]
            coords, labels = parse_points(prompt.points, prompt.labels, width, height)
            self.sam_processor.add_inputs_to_inference_session(
                session,
                frame_idx=0,
                obj_ids=list(ids),
                input_points=[[coords]],
                input_labels=[[labels]],
            )
        else:
            raise SegInputError(f"--mode {prompt.mode!r}: use prompt, box or points")
        self.sam(inference_session=session, frame_idx=0)
        out = np.zeros((len(ids), *frames.shape[:3]), dtype=bool)
        row = {obj_id: i for i, obj_id in enumerate(ids)}
        for output in progress(
            self.sam.propagate_in_video_iterator(session),
            total=len(frames),
            desc="propagating masks",
            unit="frame",
        ):
            masks = self.sam_processor.post_process_masks(
                [output.pred_masks], original_sizes=[[height, width]], binarize=True
            )[0]
            rows = [row[obj_id] for obj_id in output.object_ids]
            out[rows, output.frame_idx] = masks[:, 0].cpu().numpy().astype(bool)
        return out


def colour_frames(masks: np.ndarray) -> np.ndarray:
    """(N, T, H, W) masks -> (T, H, W, 3) uint8: the largest object first, smaller ones on top,
    each in its own fixed colour, black where there is nothing."""
    count, frames, height, width = masks.shape
    out = np.zeros((frames, height, width, 3), dtype=np.uint8)
    if count == 0:
        return out
    areas = masks.reshape(count, -1).sum(1)
    order = np.argsort(-areas, kind="stable")[:MAX_OBJECTS]
    colours = palette()
    for rank, index in enumerate(order):
        out[masks[index]] = colours[rank]
    return out


def seg_video(
    segmenter: Segmenter,
    input_video: str | Path,
    output_video: str | Path,
    prompt: Prompt,
    on_empty: str = "error",
    masks_path: str | Path | None = None,
) -> Path:
    info = probe_video(input_video)
    if info.width % 2 or info.height % 2:
        raise CosmosPosttrainError(
            f"{input_video}: {info.width}x{info.height} has an odd side; H.264 needs even sizes"
        )
    frames = read_frames(input_video)
    masks = segmenter.masks(frames, prompt)
    if not masks.any():
        message = f"{input_video}: nothing was segmented ({prompt.mode} {prompt.text or ''})"
        if on_empty == "error":
            raise CosmosPosttrainError(message + "; use --on_empty black for an all-black video")
        log.warning("%s; writing an all-black video", message)
    write_video(output_video, colour_frames(masks), info.fps)
    if masks_path is not None:
        from .fsutil import atomic_output

        with atomic_output(masks_path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, masks=masks)
    return Path(output_video)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input_video", required=True)
    p.add_argument("--output_video", required=True)
    p.add_argument("--mode", choices=("prompt", "box", "points"), default="prompt")
    p.add_argument("--prompt", default="person, car, vehicle, building, tree, road, sky")
    p.add_argument("--box", default="")
    p.add_argument("--points", default="")
    p.add_argument("--labels", default="")
    p.add_argument("--visualize", action="store_true", help="accepted; the video is always written")
    p.add_argument("--on_empty", choices=("error", "black"), default="error")
    p.add_argument("--masks", help="also save the binary masks (npz) here")
    p.add_argument("--sam_model", default=SAM2_MODEL)
    p.add_argument("--grounding_model", default=GROUNDING_MODEL)
    args = p.parse_args(argv)
    prompt = Prompt(args.mode, args.prompt, args.box, args.points, args.labels)

    def action() -> None:
        info = probe_video(args.input_video)
        if args.mode == "box":
            parse_box(args.box, info.width, info.height)  # bad input fails before loading models
        if args.mode == "points":
            parse_points(args.points, args.labels, info.width, info.height)
        segmenter = Segmenter.from_pretrained(
            args.sam_model, args.grounding_model if args.mode == "prompt" else None
        )
        seg_video(segmenter, args.input_video, args.output_video, prompt, args.on_empty, args.masks)

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
