"""Video tokenizers: the Wan2.1 VAE for the real model, a pixel tokenizer for the tiny preset.

Both map uint8-range videos normalised to [-1, 1], shaped (B, 3, T, H, W), to normalised latents
(B, C, 1 + (T - 1) / 4, H / s, W / s) and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .experiments import TEMPORAL_FACTOR


class PixelTokenizer(nn.Module):
    """A weightless stand-in for the VAE: keeps every 4th frame and folds 2x2 pixels into channels.

    Decoding unfolds the pixels and interpolates the frames in between, so what comes out is the
    input at the kept frames and a recognisable video everywhere else. It needs no download,
    which is what the tiny demo requires.
    """

    temporal_factor = TEMPORAL_FACTOR
    spatial_factor = 2
    latent_channels = 12
    scale = 2.0  # brings pixel values in [-1, 1] to about unit variance

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        if (t - 1) % self.temporal_factor:
            raise ValueError(f"frame count {t} must be 1 + 4k")
        kept = video[:, :, :: self.temporal_factor]  # (B, 3, t', H, W)
        frames = kept.permute(0, 2, 1, 3, 4).reshape(-1, c, h, w)
        folded = F.pixel_unshuffle(frames, self.spatial_factor)
        latents = folded.reshape(b, -1, *folded.shape[1:]).permute(0, 2, 1, 3, 4)
        return latents * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = latents.shape
        frames = (latents / self.scale).permute(0, 2, 1, 3, 4).reshape(-1, c, h, w)
        pixels = F.pixel_shuffle(frames, self.spatial_factor)
        video = pixels.reshape(b, t, *pixels.shape[1:]).permute(0, 2, 1, 3, 4)
        if t == 1:
            return video
        # linear interpolation between kept frames: (B, 3, t, H, W) -> (B, 3, 4(t-1)+1, H, W)
        steps = torch.arange(self.temporal_factor, device=video.device, dtype=video.dtype)
        weights = (steps / self.temporal_factor).view(1, 1, 1, -1, 1, 1)
        start, end = video[:, :, :-1, None], video[:, :, 1:, None]
        between = start * (1 - weights) + end * weights  # (B, 3, t-1, 4, H, W)
        between = between.flatten(2, 3)
        return torch.cat([between, video[:, :, -1:]], dim=2)


class WanTokenizer(nn.Module):
    """The Wan2.1 VAE (diffusers `AutoencoderKLWan`) with the per-channel latent normalisation."""

    temporal_factor = TEMPORAL_FACTOR
    spatial_factor = 8
    latent_channels = 16

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode(video.to(self.vae.dtype)).latent_dist
        return (dist.mode().float() - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents * self.std + self.mean
        return self.vae.decode(z.to(self.vae.dtype)).sample.float()
