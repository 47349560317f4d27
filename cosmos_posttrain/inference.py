"""`[torchrun ...] -m cosmos_posttrain.inference -i spec.jsonl -o outputs/ --checkpoint-path
<iter>/model_ema_bf16.pt --experiment transfer2_singleview_posttrain_edge_example`.

Generates one video per spec entry with the fine-tuned control branch: the input is resized to
the nearest resolution bucket, the control is read or computed on the fly, and long videos are
generated in chunks of `num_video_frames_per_chunk` frames, each conditioned on the last
`num_conditional_frames` frames of the previous one. Several processes split each video by
Ulysses context parallelism over `--context-parallel-size` ranks (all of them by default, as
the reference does); groups of ranks beyond that split the entries.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from .checkpoint import is_complete, load_controlnet_weights
from .cli import run_cli, split_overrides
from .controls import blur_preset, edge_preset
from .data import nearest_bucket, resize_and_pad
from .depth import ENCODERS as DEPTH_ENCODERS
from .depth import DepthEstimator, normalise_video
from .distributed import World, init_world, shutdown
from .errors import CosmosPosttrainError
from .experiments import build_config, control_kind, latent_frames
from .fsutil import write_json_atomic
from .inference_spec import InferenceSpec, SpecError, load_specs
from .models import Models, build_models, load_state_file, sync_shared_modules
from .parallelize import parallelize
from .progress import progress
from .sampling import generate_latents, side_by_side, to_uint8_frames
from .seg import GROUNDING_MODEL, SAM2_MODEL, Prompt, Segmenter, colour_frames
from .video_io import probe_video, read_frames, write_video

log = logging.getLogger("cosmos_posttrain.inference")

DEFAULT_CONTROL_MODELS = {  # the same defaults as the depth and seg commands
    "depth_model": DEPTH_ENCODERS["vits"],
    "sam_model": SAM2_MODEL,
    "grounding_model": GROUNDING_MODEL,
}


def load_control_branch(models: Models, checkpoint: Path) -> None:
    """Fine-tuned weights from a converted `.pt`, a diffusers folder or a DCP iteration folder."""
    if checkpoint.is_file():
        parts = load_state_file(checkpoint)
        if not parts["controlnet"]:
            raise CosmosPosttrainError(f"{checkpoint}: holds no control-branch weights")
        state = {
            k: v.to(next(models.controlnet.parameters()).dtype)
            for k, v in parts["controlnet"].items()
        }
        models.controlnet.load_state_dict(state)
    elif (checkpoint / "config.json").is_file():
        from diffusers import CosmosControlNetModel

        loaded = CosmosControlNetModel.from_pretrained(checkpoint)
        models.controlnet.load_state_dict(loaded.state_dict())
    elif is_complete(checkpoint):
        load_controlnet_weights(checkpoint, models.controlnet, use_ema=True)
    else:
        raise CosmosPosttrainError(
            f"{checkpoint}: not a .pt file, a diffusers folder or a complete checkpoint folder"
        )
    sync_shared_modules(models.transformer, models.controlnet)


class Guardrail:
    """NVIDIA's safety checker when the `cosmos_guardrail` package is installed."""

    def __init__(self, disabled: bool, device: torch.device) -> None:
        self.checker = None
        if disabled:
            log.info("guardrails disabled (--disable-guardrails)")
            return
        try:
            from cosmos_guardrail import CosmosSafetyChecker
        except ImportError:
            log.warning("the cosmos_guardrail package is not installed: no guardrail is active")
            return
        self.checker = CosmosSafetyChecker().to(device)

    def text_ok(self, prompt: str) -> bool:
        return self.checker is None or bool(self.checker.check_text_safety(prompt))

    def video(self, frames: np.ndarray) -> np.ndarray:
        return frames if self.checker is None else self.checker.check_video_safety(frames)


def _to_model(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].to(device).float() / 127.5 - 1


def _pad_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """Repeat the last frame up to `count` frames, as the reference pads its input."""
    if len(frames) >= count:
        return frames[:count]
    return np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), axis=0)])


class ControlModels:
    """Depth Anything and SAM2 + Grounding DINO for entries without a control_path, loaded on
    first use (most runs give control videos, and these models take GPU memory)."""

    def __init__(
        self, device: torch.device, depth_model: str, sam_model: str, grounding_model: str
    ) -> None:
        self.device = device
        self.ids = {"depth": depth_model, "sam": sam_model, "grounding": grounding_model}
        self._depth = None
        self._seg = None

    def depth(self, video: np.ndarray) -> np.ndarray:
        if self._depth is None:
            self._depth = DepthEstimator.from_pretrained(self.ids["depth"], self.device)
        return normalise_video(self._depth.relative_depth(iter(video), len(video)))

    def seg(self, video: np.ndarray, text: str) -> np.ndarray:
        if self._seg is None:
            self._seg = Segmenter.from_pretrained(
                self.ids["sam"], self.ids["grounding"], self.device
            )
        masks = self._seg.masks(video, Prompt("prompt", text))
        if not masks.any():
            log.warning("nothing was segmented for %r: the seg control is all black", text)
        return colour_frames(masks)


def control_frames(
    spec: InferenceSpec,
    kind: str,
    video: np.ndarray,
    target: tuple[int, int],
    computed: ControlModels | None = None,
) -> np.ndarray:
    """The control video at the generation size: read from control_path, or computed from the
    input (edge and vis presets on the CPU; depth and seg with `computed`'s models)."""
    control = next(c for c in spec.controls if c.kind == kind)
    if control.control_path is not None:
        frames = torch.from_numpy(read_frames(control.control_path, 0, len(video)))
        resized, _ = resize_and_pad(frames.permute(0, 3, 1, 2), target, nearest=kind == "seg")
        return resized.permute(0, 2, 3, 1).numpy()
    if kind == "edge":
        return edge_preset(video, control.preset)
    if kind == "vis":
        return blur_preset(video, control.preset)
    if computed is not None:
        return (
            computed.depth(video)
            if kind == "depth"
            else computed.seg(video, control.control_prompt)
        )
    raise SpecError(
        f"line {spec.line}: {kind} has no control_path; compute it first "
        f"(`python -m cosmos_posttrain.{kind}`) and give the video as control_path"
    )


@torch.no_grad()
def generate_entry(
    spec: InferenceSpec,
    models: Models,
    config: DictConfig,
    kind: str,
    out_dir: Path,
    world: World,
    guardrail: Guardrail,
    scheduler=None,
    computed: ControlModels | None = None,
) -> Path | None:
    """Generate one entry; every rank of a context-parallel group takes part, the first of
    them writes the outputs (whose path it returns; the others return None)."""
    device = world.device
    writer = world.rank % world.cp == 0
    if not guardrail.text_ok(spec.prompt):
        raise CosmosPosttrainError(f"{spec.name}: the prompt was refused by the guardrail")
    info = probe_video(spec.video_path)
    frames = read_frames(spec.video_path, 0, min(info.frames, spec.max_frames or info.frames))
    _, target = nearest_bucket(info.width, info.height, spec.resolution)
    resized, mask = resize_and_pad(torch.from_numpy(frames).permute(0, 3, 1, 2), target)
    video = resized.permute(0, 2, 3, 1).numpy()
    control = control_frames(spec, kind, video, target, computed)
    weight = next(c.control_weight for c in spec.controls if c.kind == kind)
    text = models.text_encoder.encode([spec.prompt]).to(device)
    negative = models.text_encoder.encode([spec.negative_prompt]).to(device)
    chunk = spec.num_video_frames_per_chunk
    if (chunk - 1) % models.tokenizer.temporal_factor:
        raise SpecError(f"{spec.name}: num_video_frames_per_chunk={chunk} must be 1 + 4k")
    overlap = spec.num_conditional_frames
    stride = chunk - overlap
    starts = list(range(0, max(1, len(video) - overlap), stride)) if stride > 0 else [0]
    padding_mask = mask[None].to(device)
    output: list[np.ndarray] = []
    steps = len(starts) * spec.num_steps
    bar = progress(total=steps, desc=spec.name, unit="step") if writer else None
    for index, start in enumerate(starts):
        ctrl = _to_model(_pad_frames(control[start:], chunk), device)
        control_latents = models.tokenizer.encode(ctrl)
        cond_latents, num_cond = None, 0
        if index > 0 and overlap > 0:
            previous = _pad_frames(np.concatenate(output)[-overlap:], overlap)
            context = np.concatenate(
                [previous, np.zeros((chunk - overlap, *previous.shape[1:]), dtype=np.uint8)]
            )
            cond_latents = models.tokenizer.encode(_to_model(context, device))
            num_cond = 1 + (overlap - 1 + models.tokenizer.temporal_factor - 1) // (
                models.tokenizer.temporal_factor
            )
        shape = (1, models.transformer.config.out_channels, *control_latents.shape[2:])
        latents = generate_latents(
            models.transformer,
            models.controlnet,
            text,
            negative,
            control_latents,
            shape,
            padding_mask,
            spec.num_steps,
            spec.guidance,
            config.model.config.shift,
            seed=spec.seed + index,
            cond_latents=cond_latents,
            num_conditional=num_cond,
            cond_timestep=config.model.config.conditional_frame_timestep,
            control_scale=weight,
            scheduler=scheduler,
            progress=bar,
            cp_group=world.cp_group,
        )
        generated = to_uint8_frames(models.tokenizer.decode(latents)[0])
        output.append(generated if index == 0 else generated[overlap:])
    if not writer:
        return None
    bar.close()
    result = np.concatenate(output)[: len(video)]
    # the content sits top-left; the padding mask's first column and row measure it
    height, width = int((mask[0, :, 0] == 0).sum()), int((mask[0, 0, :] == 0).sum())
    height, width = height - height % 2, width - width % 2  # H.264 needs even sizes
    result = guardrail.video(result[:, :height, :width])
    if spec.keep_input_resolution and (width, height) != (info.width, info.height):
        result = resize_frames(result, info.width - info.width % 2, info.height - info.height % 2)
    shown = result
    if spec.show_input:
        shown = side_by_side(resize_frames(frames, result.shape[2], result.shape[1]), result)
    path = out_dir / f"{spec.name}.mp4"
    write_video(path, shown, info.fps)
    if spec.show_control_condition:
        shown_control = resize_frames(
            control[:, :height, :width], result.shape[2], result.shape[1], nearest=True
        )
        write_video(out_dir / f"{spec.name}_control_{kind}.mp4", shown_control, info.fps)
    write_json_atomic(out_dir / f"{spec.name}.json", spec.resolved())
    log.info("%s: %d frames written to %s", spec.name, len(result), path)
    return path


def resize_frames(frames: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    import cv2

    if frames.shape[1:3] == (height, width):
        return frames
    mode = cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=mode) for f in frames])


def run(
    spec_path: str,
    out_dir: str,
    checkpoint: str,
    experiment: str,
    overrides: list[str],
    spec_overrides: dict,
    disable_guardrails: bool,
    context_parallel_size: int = 0,
    control_models: dict[str, str] | None = None,
) -> list[Path]:
    specs = load_specs(spec_path, spec_overrides)  # every spec problem before any model loads
    config = build_config([f"experiment={experiment}", *overrides])
    kind = control_kind(config)
    for spec in specs:
        if kind not in {c.kind for c in spec.controls}:
            raise SpecError(
                f"{spec_path}:{spec.line}: the checkpoint is a {kind} branch, the "
                f"entry gives only {', '.join(c.kind for c in spec.controls)}"
            )
    cp = context_parallel_size or int(os.environ.get("WORLD_SIZE", "1"))
    for spec in specs:  # each chunk's latent frames are split over the CP ranks
        latent = latent_frames(spec.num_video_frames_per_chunk)
        if latent % cp:
            raise SpecError(
                f"{spec_path}:{spec.line}: num_video_frames_per_chunk="
                f"{spec.num_video_frames_per_chunk} gives {latent} latent frames, which "
                f"do not split over context_parallel_size={cp}; use --context-parallel-size 1 "
                "to split the entries over the processes instead"
            )
    world = init_world(config.trainer.device, cp)
    try:
        models = build_models(config, world.device)
        models.transformer.eval()
        models.controlnet.eval()
        load_control_branch(models, Path(checkpoint))
        for model in (models.transformer, models.controlnet):  # CP, and compile if asked
            parallelize(
                model,
                cp_group=world.cp_group,
                attention_kernel=str(config.model.config.attention_kernel),
                recompute="none",
                compile=bool(config.model.config.compile),
            )
        scheduler = None
        if config.model.preset == "2b":
            from diffusers import UniPCMultistepScheduler

            pre = config.model.pretrained
            scheduler = UniPCMultistepScheduler.from_pretrained(
                pre.repo_id, subfolder="scheduler", revision=pre.revision
            )
        guardrail = Guardrail(disable_guardrails, world.device)
        out = Path(out_dir)
        computed = ControlModels(world.device, **(control_models or DEFAULT_CONTROL_MODELS))
        mine = specs[world.dp_rank :: world.dp]
        written = [
            generate_entry(s, models, config, kind, out, world, guardrail, scheduler, computed)
            for s in mine
        ]
        return [path for path in written if path is not None]
    finally:
        shutdown()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv, overrides = split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-i", "--input", required=True, help="spec .json or .jsonl")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "--checkpoint-path",
        required=True,
        help="model_ema_bf16.pt, a diffusers folder, or a checkpoint iteration folder",
    )
    p.add_argument("--experiment", default="transfer2_singleview_posttrain_edge_example")
    p.add_argument("--disable-guardrails", action="store_true")
    p.add_argument(
        "--context-parallel-size",
        type=int,
        default=0,
        help="ranks that split each video (default: all of them); 1 splits the entries instead",
    )
    for key, default in DEFAULT_CONTROL_MODELS.items():
        p.add_argument(
            f"--{key.replace('_', '-')}",
            default=default,
            help="hub id or folder, for controls computed on the fly",
        )
    for name, kind in (
        ("num-steps", int),
        ("guidance", float),
        ("seed", int),
        ("max-frames", int),
        ("num-video-frames-per-chunk", int),
        ("num-conditional-frames", int),
        ("resolution", str),
    ):
        p.add_argument(f"--{name}", type=kind, default=None, help="overrides every spec entry")
    args = p.parse_args(argv)
    args.overrides = overrides
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec_overrides = {
        key: getattr(args, key)
        for key in (
            "num_steps",
            "guidance",
            "seed",
            "max_frames",
            "num_video_frames_per_chunk",
            "num_conditional_frames",
            "resolution",
        )
        if getattr(args, key) is not None
    }
    return run_cli(
        lambda: run(
            args.input,
            args.output,
            args.checkpoint_path,
            args.experiment,
            args.overrides,
            spec_overrides,
            args.disable_guardrails,
            args.context_parallel_size,
            {key: getattr(args, key) for key in DEFAULT_CONTROL_MODELS},
        )
    )


if __name__ == "__main__":
    sys.exit(main())
