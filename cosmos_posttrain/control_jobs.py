"""One Snakemake job per group of clips for the precomputed controls (depth, seg).

Each job loads its models once (and only if a clip of its group still needs them), skips clips
whose control video is already complete, writes every video atomically, and reports all clips
that failed at the end, after doing the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .errors import CosmosPosttrainError, VideoError
from .fsutil import write_text_atomic
from .progress import progress
from .video_io import probe_video

log = logging.getLogger("cosmos_posttrain.controls")


def is_done(source: Path, control: Path) -> bool:
    """A control video counts as done when it matches its source frame for frame and in size."""
    if not control.is_file():
        return False
    try:
        a, b = probe_video(source), probe_video(control)
    except VideoError:
        return False
    return (a.frames, a.width, a.height) == (b.frames, b.width, b.height)


def run_group(
    dataset_dir: str | Path,
    kind: str,
    clips: list[str],
    marker: str | Path,
    make: Callable[[], Callable[[Path, Path], object]],
) -> list[str]:
    """Process a group; `make()` builds the per-clip function (and loads models) on first need."""
    dataset = Path(dataset_dir)
    work = None
    done, failed = [], []
    for cid in progress(clips, desc=f"{kind} videos", unit="clip"):
        source, target = dataset / "videos" / f"{cid}.mp4", dataset / kind / f"{cid}.mp4"
        if is_done(source, target):
            log.info("%s: %s video already complete, skipped", cid, kind)
            done.append(cid)
            continue
        work = work or make()
        try:
            work(source, target)
            done.append(cid)
        except (CosmosPosttrainError, OSError) as exc:
            log.error("%s: %s", cid, exc)
            failed.append(f"{source}: {exc}")
    if failed:
        raise CosmosPosttrainError(
            f"{len(failed)} of {len(clips)} {kind} videos failed:\n" + "\n".join(failed)
        )
    write_text_atomic(marker, "".join(f"{cid}\n" for cid in done))
    return done


def depth_group(sm) -> list[str]:
    from .depth import DepthEstimator, depth_video

    def make():
        estimator = DepthEstimator.from_pretrained(sm.params.model, batch_size=sm.params.batch_size)
        return lambda source, target: depth_video(estimator, source, target)

    return run_group(sm.params.dataset_dir, "depth", list(sm.params.clips), sm.output[0], make)


def seg_group(sm) -> list[str]:
    from .seg import Prompt, Segmenter, seg_video

    def make():
        segmenter = Segmenter.from_pretrained(sm.params.sam_model, sm.params.grounding_model)
        prompt = Prompt("prompt", sm.params.prompt)
        return lambda source, target: seg_video(
            segmenter, source, target, prompt, sm.params.on_empty
        )

    return run_group(sm.params.dataset_dir, "seg", list(sm.params.clips), sm.output[0], make)


def vis_variants(source: Path, folder: Path, count: int, seed: int) -> list[Path]:
    """`count` draws of the reference's training blur recipe for one clip, each a whole video.

    Bilateral filters of diameter up to 50 cost seconds per frame on a CPU, far slower than a
    training step consumes clips; precomputed once, a variant costs the loader one decode.
    Draws are seeded by (seed, clip id, variant), so reruns give the same videos.
    """
    import zlib

    import numpy as np

    from .controls import blur_control, random_blur_params
    from .video_io import read_frames, write_video

    frames = read_frames(source)
    fps = probe_video(source).fps
    written = []
    for k in range(count):
        target = folder / f"{k}.mp4"
        if target.is_file() and probe_video(target).frames == len(frames):
            written.append(target)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(source.stem.encode()), k])
        write_video(target, blur_control(frames, random_blur_params(rng)), fps)
        written.append(target)
    return written


def vis_group(sm) -> list[str]:
    dataset = Path(sm.params.dataset_dir)
    done = []
    for cid in progress(sm.params.clips, desc="vis draws", unit="clip"):
        vis_variants(
            dataset / "videos" / f"{cid}.mp4",
            dataset / "vis" / cid,
            sm.params.variants,
            sm.params.seed,
        )
        done.append(cid)
    write_text_atomic(sm.output[0], "".join(f"{cid}\n" for cid in done))
    return done
