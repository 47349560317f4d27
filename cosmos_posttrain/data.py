"""The training dataset: random contiguous windows, the reference's resolution buckets, controls.

Every random choice of a sample (window start, edge thresholds, blur draw) comes from a
generator seeded by (seed, epoch, position), never from global state, so a resumed run and a
run with a different number of loader workers see exactly the same samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .captions import CaptionError, load_caption
from .controls import training_control
from .errors import VideoError
from .video_io import probe_video, read_frames

log = logging.getLogger(__name__)

# (width, height) per aspect ratio, as the reference's VIDEO_RES_SIZE_INFO; "tiny" for the demo.
RESOLUTIONS: dict[str, dict[str, tuple[int, int]]] = {
    "720": {
        "16,9": (1280, 704),
        "4,3": (960, 704),
        "1,1": (960, 960),
        "3,4": (704, 960),
        "9,16": (704, 1280),
    },
    "tiny": {"16,9": (56, 32), "4,3": (48, 32), "1,1": (40, 40), "3,4": (32, 48), "9,16": (32, 56)},
}
PRECOMPUTED_CONTROLS = {"depth": "depth", "seg": "seg"}


def nearest_bucket(width: int, height: int, resolution: str) -> tuple[str, tuple[int, int]]:
    """The bucket whose aspect ratio is nearest (in log space) to the clip's."""
    table = RESOLUTIONS[resolution]
    ratio = math.log(width / height)

    def distance(key: str) -> float:
        w, h = (int(x) for x in key.split(","))
        return abs(math.log(w / h) - ratio)

    key = min(table, key=distance)
    return key, table[key]


def _pad_index(size: int, padded: int, reflect: bool) -> torch.Tensor:
    """Source index of each output position when padding `size` to `padded` at the end:
    reflection without repeating the edge (as torch's "reflect"), or the edge repeated."""
    index = torch.arange(padded)
    beyond = index >= size
    index[beyond] = (2 * (size - 1) - index[beyond]) if reflect else size - 1
    return index


def resize_and_pad(
    video: torch.Tensor, target: tuple[int, int], nearest: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize the largest side preserving aspect, then reflection-pad to `target` (W, H).

    `video` is (T, C, H, W) uint8. Returns the padded video and a (1, H, W) mask, 1 = padding.
    Segmentation colours are resized with nearest neighbours so they never blend.
    """
    tw, th = target
    _, _, h, w = video.shape
    scale = min(tw / w, th / h)
    nw, nh = max(1, min(tw, round(w * scale))), max(1, min(th, round(h * scale)))
    if (nw, nh) != (w, h):
        mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BICUBIC
        video = TF.resize(video, [nh, nw], interpolation=mode, antialias=not nearest)
    pad_w, pad_h = tw - nw, th - nh
    mask = torch.zeros(1, th, tw)
    if pad_w or pad_h:
        reflect = pad_w < nw and pad_h < nh  # else replicate the edge
        rows, cols = _pad_index(nh, th, reflect), _pad_index(nw, tw, reflect)
        video = video[:, :, rows][:, :, :, cols]  # a gather: stays uint8, no arithmetic
        mask[:, nh:, :] = 1
        mask[:, :, nw:] = 1
    return video, mask


@dataclass(frozen=True)
class SampleKey:
    """What the sampler hands the dataset: which clip, and the seed of its random draws."""

    index: int
    seed: int


class SingleViewDataset(Dataset):
    """`videos/<id>.mp4` + `captions/<id>.json` (+ `depth/`, `seg/`) as training samples."""

    def __init__(
        self,
        dataset_dir: str | Path,
        num_frames: int,
        control: str,
        resolution: str = "720",
        is_train: bool = True,
        max_retries: int = 10,
        cache_frames: bool = False,
    ) -> None:
        self.root = Path(dataset_dir)
        self.num_frames = num_frames
        self.control = control
        self.resolution = resolution
        self.is_train = is_train
        self.max_retries = max_retries
        # Whole clips, decoded and resized once. Only for datasets that fit in memory (the demo):
        # a window sliced from a resized clip equals the resized window.
        self.cache_frames = cache_frames
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.ids = sorted(
            p.stem for p in (self.root / "videos").glob("*.mp4") if not p.name.startswith(".")
        )
        if not self.ids:
            raise VideoError(f"{self.root / 'videos'}: no .mp4 clips to train on")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: SampleKey | int) -> dict:
        if isinstance(key, int):
            key = SampleKey(key, key)
        for attempt in range(self.max_retries):
            index = (key.index + attempt) % len(self.ids)
            try:
                return self.load(index, np.random.default_rng(key.seed))
            except (VideoError, CaptionError, OSError, ValueError) as exc:
                log.warning("skipping clip %s: %s", self.ids[index], exc)
        raise VideoError(f"{self.root}: {self.max_retries} clips in a row failed to load")

    def load(self, index: int, rng: np.random.Generator) -> dict:
        cid = self.ids[index]
        video_path = self.root / "videos" / f"{cid}.mp4"
        info = probe_video(video_path)
        if info.frames < self.num_frames:
            raise VideoError(f"{video_path}: has only {info.frames} frames, need {self.num_frames}")
        start = int(rng.integers(0, info.frames - self.num_frames + 1)) if self.is_train else 0
        bucket, target = nearest_bucket(info.width, info.height, self.resolution)
        video, padding_mask = self._frames(video_path, start, target)
        variants = self._vis_variants(cid) if self.control == "vis" else []
        if self.control in PRECOMPUTED_CONTROLS:
            ctrl_path = self.root / PRECOMPUTED_CONTROLS[self.control] / f"{cid}.mp4"
            control, _ = self._frames(ctrl_path, start, target, nearest=self.control == "seg")
        elif variants:  # precomputed blur draws (target `vis`): one at random, one decode
            control, _ = self._frames(variants[int(rng.integers(len(variants)))], start, target)
        else:
            hwc = video.permute(0, 2, 3, 1).numpy()
            control = torch.from_numpy(training_control(self.control, hwc, rng)).permute(0, 3, 1, 2)
        return {
            "video": video.permute(1, 0, 2, 3).contiguous(),  # (3, T, H, W) uint8
            "control": control.permute(1, 0, 2, 3).contiguous(),
            "padding_mask": padding_mask,
            "caption": load_caption(self.root, cid),
            "fps": info.fps,
            "key": cid,
            "start": start,
            "aspect_ratio": bucket,
        }

    def _vis_variants(self, cid: str) -> list[Path]:
        folder = self.root / "vis" / cid
        return sorted(folder.glob("*.mp4")) if folder.is_dir() else []

    def _frames(
        self, path: Path, start: int, target: tuple[int, int], nearest: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, 3, H, W) uint8 window resized and padded to `target`, and its padding mask."""
        if not self.cache_frames:
            frames = torch.from_numpy(read_frames(path, start, self.num_frames))
            return resize_and_pad(frames.permute(0, 3, 1, 2), target, nearest)
        key = (str(path), target, nearest)
        if key not in self._cache:
            frames = torch.from_numpy(read_frames(path)).permute(0, 3, 1, 2)
            self._cache[key] = resize_and_pad(frames, target, nearest)
        video, mask = self._cache[key]
        if video.shape[0] < start + self.num_frames:
            raise VideoError(f"{path}: fewer frames than the window {start}+{self.num_frames}")
        return video[start : start + self.num_frames], mask


class ResumableSampler(Sampler[SampleKey]):
    """Endless shuffled order over epochs, sharded over data-parallel ranks, resumable.

    Its state is (epoch, position, dp_size): after `load_state_dict` it yields exactly what the
    uninterrupted run would have yielded next, also with another number of data-parallel ranks
    (positions are global: rank r takes r, r + dp, ...). Ranks of one context-parallel group
    share a data-parallel rank and so see the same clips. Loader workers run ahead of training,
    so the trainer saves `state_after(start, consumed)`, not the sampler's own position.
    """

    def __init__(
        self, size: int, dp_rank: int = 0, dp_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        self.size, self.dp_rank, self.dp_size = size, dp_rank, dp_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.position = 0, 0

    def _order(self, epoch: int) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.dp_size)
        order += order[: per_rank * self.dp_size - len(order)]  # pad so ranks stay in step
        return order[self.dp_rank :: self.dp_size]

    def __iter__(self) -> Iterator[SampleKey]:
        while True:
            order = self._order(self.epoch)
            while self.position < len(order):
                # keyed by the global position, so the draws do not depend on the DP layout
                position = self.position * self.dp_size + self.dp_rank
                seed = (self.seed * 1_000_003 + self.epoch) * 10_007 + position
                key = SampleKey(order[self.position], seed)
                self.position += 1
                yield key
            self.epoch, self.position = self.epoch + 1, 0

    def __len__(self) -> int:
        return math.ceil(self.size / self.dp_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "dp_size": self.dp_size}

    def state_after(self, start: dict, consumed: int) -> dict:
        """The state once `consumed` more keys than at `start` have been used by training."""
        epoch, position = divmod(int(start["position"]) + consumed, len(self))
        return {"epoch": int(start["epoch"]) + epoch, "position": position, "dp_size": self.dp_size}

    def load_state_dict(self, state: dict) -> None:
        saved_dp = int(state.get("dp_size", self.dp_size))
        consumed = int(state["position"]) * saved_dp  # global keys used in this epoch
        self.epoch, self.position = int(state["epoch"]), consumed // self.dp_size


def clip_loader(
    dataset: Dataset, sampler: Sampler, workers: int, prefetch: int, pin_memory: bool = False
) -> DataLoader:
    """One clip per step from `workers` processes that decode ahead of training."""
    return DataLoader(
        dataset,
        batch_size=1,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=prefetch if workers else None,
        persistent_workers=workers > 0,
    )


def collate(samples: list[dict]) -> dict:
    batch: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch
