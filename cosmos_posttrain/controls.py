"""Control inputs computed from RGB frames: edge (Canny) and vis (blur), as the reference does.

One module serves training (random parameters drawn once per clip from a seeded generator),
previews and inference (named presets). Frames are uint8 arrays (T, H, W, 3); so is the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

EDGE_PRESETS: dict[str, tuple[int, int]] = {
    "none": (20, 50),
    "very_low": (20, 50),
    "low": (50, 100),
    "medium": (100, 200),
    "high": (200, 300),
    "very_high": (300, 400),
}


def edge_control(frames: np.ndarray, t_lower: int, t_upper: int) -> np.ndarray:
    """Per-frame Canny on the RGB frame, replicated to 3 channels of 0/255."""
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        edges = cv2.Canny(np.ascontiguousarray(frame), t_lower, t_upper)
        out[i] = edges[..., None]
    return out


def random_edge_thresholds(rng: np.random.Generator) -> tuple[int, int]:
    """The reference's training draw: t_lower in [20, 100), t_upper = t_lower + [50, 150)."""
    lower = int(rng.integers(20, 100))
    return lower, lower + int(rng.integers(50, 150))


def edge_preset(frames: np.ndarray, preset: str = "medium") -> np.ndarray:
    if preset not in EDGE_PRESETS:
        raise ValueError(f"unknown edge preset {preset!r}; known: {', '.join(EDGE_PRESETS)}")
    return edge_control(frames, *EDGE_PRESETS[preset])


@dataclass(frozen=True)
class BlurParams:
    """One draw of the reference's blur recipe; fixed for a whole clip."""

    pre_downsize: int  # area downsize factor before blurring (1 = none)
    bilateral: tuple[int, float, float] | None  # d, sigmaColor, sigmaSpace
    gaussian: tuple[int, float] | None  # odd ksize, sigma
    down_up: int  # bicubic down-then-up factor


BLUR_PRESETS: dict[str, BlurParams] = {
    "low": BlurParams(2, (30, 150.0, 100.0), None, 4),
    "medium": BlurParams(2, (30, 150.0, 100.0), None, 10),
    "high": BlurParams(2, (30, 150.0, 100.0), None, 16),
}
BLUR_PRESETS["very_low"] = BLUR_PRESETS["low"]
BLUR_PRESETS["very_high"] = BLUR_PRESETS["high"]


def random_blur_params(rng: np.random.Generator) -> BlurParams:
    """The reference's training draw (bilateral 0.3, gaussian 0.5, both 0.2)."""
    pre = int(rng.choice([1, 2, 3, 4]))
    choice = rng.choice(3, p=[0.3, 0.5, 0.2])
    bilateral = gaussian = None
    if choice in (0, 2):
        bilateral = (
            int(rng.integers(15, 50)),
            float(rng.uniform(100, 300)),
            float(rng.uniform(50, 150)),
        )
    if choice in (1, 2):
        ksize = int(rng.integers(21, 30)) | 1
        gaussian = (ksize, float(rng.uniform(10.5, 14.5)))
    return BlurParams(pre, bilateral, gaussian, int(rng.integers(4, 18)))


def blur_control(frames: np.ndarray, params: BlurParams) -> np.ndarray:
    """Apply one blur draw to every frame of the clip."""
    height, width = frames.shape[1:3]
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        img = frame
        if params.pre_downsize > 1:
            size = (max(1, width // params.pre_downsize), max(1, height // params.pre_downsize))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        if params.bilateral is not None:
            d, sigma_color, sigma_space = params.bilateral
            img = cv2.bilateralFilter(img, d, sigma_color, sigma_space)
        if params.gaussian is not None:
            ksize, sigma = params.gaussian
            img = cv2.GaussianBlur(img, (ksize, ksize), sigma)
        if params.pre_downsize > 1:
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        factor = params.down_up
        small = (max(1, width // factor), max(1, height // factor))
        img = cv2.resize(img, small, interpolation=cv2.INTER_CUBIC)
        out[i] = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)
    return out


def blur_preset(frames: np.ndarray, preset: str = "medium") -> np.ndarray:
    if preset not in BLUR_PRESETS:
        raise ValueError(f"unknown blur preset {preset!r}; known: {', '.join(BLUR_PRESETS)}")
    return blur_control(frames, BLUR_PRESETS[preset])


def training_control(kind: str, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The control computed on the fly during training, parameters drawn once per clip."""
    if kind == "edge":
        return edge_control(frames, *random_edge_thresholds(rng))
    if kind == "vis":
        return blur_control(frames, random_blur_params(rng))
    raise ValueError(f"control {kind!r} is not computed on the fly (it is read from its folder)")
