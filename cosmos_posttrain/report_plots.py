"""The report's figures as PNG: what the dataset holds, how training went, what the demo scored.

Snakemake's report shows PNGs inline, so every figure is a file made by matplotlib (Agg, no
display needed) from what the stages already write: the manifest TSV, the TensorBoard events
of a run and the demo's eval.json.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CosmosPosttrainError
from .fsutil import atomic_output

DPI = 100
FIGSIZE = (7.0, 3.6)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _save(fig, path: str | os.PathLike[str]) -> Path:
    """Write a figure atomically; no timestamp in the PNG, so reruns give the same bytes."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"id": str, "controls": str}, keep_default_na=False)


def _histogram(values: np.ndarray, title: str, xlabel: str, out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    bins = min(30, max(1, len(np.unique(values))))
    ax.hist(values, bins=bins, color="#4c72b0", edgecolor="white")
    ax.set(title=title, xlabel=xlabel, ylabel="clips")
    ax.yaxis.set_major_locator(_integer_ticks())
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def dataset_histograms(
    manifest: str | os.PathLike[str],
    frames_png: str | os.PathLike[str],
    durations_png: str | os.PathLike[str],
    resolutions_png: str | os.PathLike[str],
) -> list[Path]:
    """Frame counts, durations (histograms) and resolutions (clips per width x height)."""
    table = read_manifest(manifest)
    n = len(table)
    written = [
        _histogram(
            table["frames"].to_numpy(), f"Frames per clip ({n} clips)", "frames", frames_png
        ),
        _histogram(
            table["duration_s"].to_numpy(), f"Duration ({n} clips)", "seconds", durations_png
        ),
    ]
    sizes = Counter(f"{w}x{h}" for w, h in zip(table["width"], table["height"], strict=True))
    shown = sizes.most_common(20)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.barh([s for s, _ in reversed(shown)], [c for _, c in reversed(shown)], color="#55a868")
    hidden = len(sizes) - len(shown)
    more = f", {hidden} more not shown" if hidden > 0 else ""
    ax.set(title=f"Resolutions ({len(sizes)} distinct{more})", xlabel="clips")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, resolutions_png))
    return written


def read_scalars(
    tensorboard_dir: str | os.PathLike[str], tag: str
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one scalar tag over every event file of a run, by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        raise CosmosPosttrainError(
            f"{tensorboard_dir}: no '{tag}' scalars; has the run logged an iteration yet?"
        )
    latest = {e.step: e.value for e in sorted(events.Scalars(tag), key=lambda e: e.wall_time)}
    steps = np.array(sorted(latest))
    return steps, np.array([latest[s] for s in steps])


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = np.array([values[: i + 1].mean() for i in range(window - 1)])
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def training_curves(
    run_dir: str | os.PathLike[str],
    loss_png: str | os.PathLike[str],
    lr_png: str | os.PathLike[str],
    title: str = "",
) -> list[Path]:
    """Loss (per iteration and a running mean) and learning rate from the run's TensorBoard."""
    tensorboard = Path(run_dir) / "tensorboard"
    steps, loss = read_scalars(tensorboard, "train/loss")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    window = max(1, len(loss) // 20)
    ax.plot(steps, loss, color="#4c72b0", alpha=0.3, linewidth=0.8, label="per iteration")
    ax.plot(steps, _smooth(loss, window), color="#4c72b0", label=f"mean of {window}")
    ax.set(title=f"Training loss {title}".strip(), xlabel="iteration", ylabel="loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written = [_save(fig, loss_png)]
    steps, lr = read_scalars(tensorboard, "train/lr")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(steps, lr, color="#c44e52")
    ax.set(title=f"Learning rate {title}".strip(), xlabel="iteration", ylabel="learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, lr_png))
    return written


def eval_chart(eval_json: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Edge F1 per clip: the base alone against the base with the trained branch."""
    result = json.loads(Path(eval_json).read_text(encoding="utf-8"))
    clips = sorted(result["per_clip"])
    base = [result["per_clip"][c]["base"] for c in clips]
    control = [result["per_clip"][c]["control"] for c in clips]
    x = np.arange(len(clips))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.bar(x - 0.2, base, 0.4, label="base alone", color="#8c8c8c")
    ax.bar(x + 0.2, control, 0.4, label="with the trained branch", color="#4c72b0")
    ax.set_xticks(x, clips, rotation=30, ha="right")
    ax.set(
        title=f"Edge agreement (Canny F1, preset {result.get('preset', 'medium')})",
        ylabel="F1 against the control",
    )
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_png)
