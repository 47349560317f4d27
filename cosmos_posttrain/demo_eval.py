"""Does the demo learn? Loss, edge agreement of generated videos with their control, swap test.

Edge agreement is the F1 score of Canny edges of the generated frames against the control's
edges at 0-pixel tolerance (at 1 pixel even noise scores high at this size). The swap test gives
clip A's caption with clip B's control: a branch that learned to follow its control must agree
more with B's edges than with A's own.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpointer, load_controlnet_weights
from .cli import run_cli
from .controls import edge_preset
from .data import SingleViewDataset
from .experiments import build_config
from .fsutil import write_json_atomic
from .models import build_models
from .progress import progress
from .sampling import generate_latents, side_by_side, to_uint8_frames
from .video_io import write_video

log = logging.getLogger("cosmos_posttrain.demo_eval")


def edge_f1(frames: np.ndarray, target_edges: np.ndarray, preset: str = "medium") -> float:
    """F1 of the Canny edges of `frames` against `target_edges` (both (T, H, W, 3) uint8)."""
    predicted = edge_preset(frames, preset)[..., 0] > 0
    target = target_edges[..., 0] > 0
    hits = np.logical_and(predicted, target).sum()
    if hits == 0:
        return 0.0
    precision, recall = hits / predicted.sum(), hits / target.sum()
    return float(2 * precision * recall / (precision + recall))


def tensorboard_losses(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in sorted(events.Scalars("train/loss"), key=lambda e: e.step)]


def evaluate(
    dataset_dir: str | Path,
    base_path: str | Path,
    run_dir: str | Path,
    out_dir: str | Path,
    steps: int = 20,
    seed: int = 0,
    preset: str = "medium",
) -> dict:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    latest = Checkpointer(run_dir / "checkpoints").latest()
    if latest is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no complete checkpoint to evaluate")
    config = build_config(
        [
            "experiment=transfer2_singleview_posttrain_edge_example",
            "preset=tiny",
            f"checkpoint.load_path={base_path}",
            f"dataloader_train.dataset.dataset_dir={dataset_dir}",
        ]
    )
    models = build_models(config, torch.device("cpu"))
    load_controlnet_weights(latest, models.controlnet, use_ema=True)
    models.transformer.eval()
    models.controlnet.eval()
    dataset = SingleViewDataset(
        dataset_dir, int(config.dataloader_train.dataset.num_frames), "edge", "tiny", is_train=False
    )
    clips = []
    for index in range(len(dataset)):
        sample = dataset.load(index, np.random.default_rng(0))
        frames = sample["video"].permute(1, 2, 3, 0).numpy()
        clips.append(
            {
                "id": sample["key"],
                "frames": frames,
                "edges": edge_preset(frames, preset),
                "caption": sample["caption"],
                "mask": sample["padding_mask"],
                "fps": sample["fps"],
            }
        )

    def generate(clip: dict, edges: np.ndarray | None) -> np.ndarray:
        text = models.text_encoder.encode([clip["caption"]])
        control = None
        if edges is not None:
            tensor = torch.from_numpy(edges).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
            control = models.tokenizer.encode(tensor)
        video = torch.from_numpy(clip["frames"]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        shape = tuple(models.tokenizer.encode(video).shape)
        latents = generate_latents(
            models.transformer,
            models.controlnet if edges is not None else None,
            text,
            None,
            control,
            shape,
            clip["mask"][None],
            steps,
            0.0,
            config.model.config.shift,
            seed,
        )
        return to_uint8_frames(models.tokenizer.decode(latents)[0])

    base_scores, control_scores = [], []
    for clip in progress(clips, desc="evaluating clips", unit="clip"):
        base_video = generate(clip, None)
        controlled = generate(clip, clip["edges"])
        base_scores.append(edge_f1(base_video, clip["edges"], preset))
        control_scores.append(edge_f1(controlled, clip["edges"], preset))
        write_video(
            out_dir / f"{clip['id']}.mp4",
            side_by_side(clip["frames"], clip["edges"], base_video, controlled),
            clip["fps"],
        )
    swap_given, swap_own = [], []
    for a in clips:
        partner = next(
            (
                b
                for b in clips
                if b["frames"].shape == a["frames"].shape
                and b["id"].split("_")[0] != a["id"].split("_")[0]
            ),
            None,
        )
        if partner is None:
            continue
        swapped = generate(a, partner["edges"])
        swap_given.append(edge_f1(swapped, partner["edges"], preset))
        swap_own.append(edge_f1(swapped, a["edges"], preset))
    losses = tensorboard_losses(run_dir)
    tenth = max(1, len(losses) // 10)
    result = {
        "checkpoint": str(latest),
        "loss_first_10pct": float(np.mean(losses[:tenth])),
        "loss_last_10pct": float(np.mean(losses[-tenth:])),
        "edge_f1_base_alone": float(np.mean(base_scores)),
        "edge_f1_with_control": float(np.mean(control_scores)),
        "swap_f1_given_control": float(np.mean(swap_given)) if swap_given else None,
        "swap_f1_own_edges": float(np.mean(swap_own)) if swap_own else None,
        "per_clip": {
            c["id"]: {"base": b, "control": s}
            for c, b, s in zip(clips, base_scores, control_scores, strict=True)
        },
        "videos": str(out_dir),
    }
    result["loss_falls"] = result["loss_last_10pct"] < result["loss_first_10pct"]
    result["f1_ratio"] = result["edge_f1_with_control"] / max(result["edge_f1_base_alone"], 1e-9)
    result["preset"] = preset
    result["swap_follows_control"] = bool(swap_given) and (
        result["swap_f1_given_control"] > result["swap_f1_own_edges"]
    )
    write_json_atomic(out_dir / "eval.json", result)
    return result


def summary(result: dict) -> str:
    return (
        f"[edge preset {result.get('preset', 'medium')}] "
        f"loss {result['loss_first_10pct']:.3f} -> {result['loss_last_10pct']:.3f} "
        f"({'falls' if result['loss_falls'] else 'DOES NOT FALL'}); edge F1 base alone "
        f"{result['edge_f1_base_alone']:.3f} -> with control {result['edge_f1_with_control']:.3f} "
        f"({result['f1_ratio']:.1f}x); swap test: {result['swap_f1_given_control']:.3f} against "
        f"the given control vs {result['swap_f1_own_edges']:.3f} against the clip's own edges"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset_dir")
    p.add_argument("base_path")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--preset", default="medium", help="edge preset of control and measurement")
    args = p.parse_args(argv)
    return run_cli(
        lambda: print(
            summary(
                evaluate(
                    args.dataset_dir,
                    args.base_path,
                    args.run_dir,
                    args.out_dir,
                    args.steps,
                    preset=args.preset,
                )
            )
        )
    )


if __name__ == "__main__":
    sys.exit(main())
