"""The pieces the trainer calls: objective, EMA, schedule, data geometry, controls, samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cosmos_posttrain.controls import (
    EDGE_PRESETS,
    blur_preset,
    edge_control,
    random_blur_params,
    random_edge_thresholds,
    training_control,
)
from cosmos_posttrain.data import (
    ResumableSampler,
    SampleKey,
    SingleViewDataset,
    nearest_bucket,
    resize_and_pad,
)
from cosmos_posttrain.ema import PowerEMA, power_ema_gamma
from cosmos_posttrain.objective import flow_loss, make_noisy_input, sample_sigma
from cosmos_posttrain.optim import lr_factor
from cosmos_posttrain.tokenizers import PixelTokenizer


def test_sigma_distribution_is_shifted_logit_normal():
    sigma = sample_sigma(200_000, 5.0, torch.Generator().manual_seed(0))
    u = torch.sigmoid(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(sigma, 5 * u / (1 + 4 * u))
    assert 0 < sigma.min() and sigma.max() < 1
    assert sigma.median() == pytest.approx(5 * 0.5 / (1 + 4 * 0.5), abs=0.01)  # u's median 0.5


def test_conditional_frames_are_clean_and_carry_no_loss():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 12, 3, 4, 4, generator=g), torch.randn(1, 12, 3, 4, 4, generator=g)
    batch = make_noisy_input(x0, noise, torch.tensor([0.7]), 2, 0.1)
    assert torch.equal(batch.x_t[:, :, :2], x0[:, :, :2])
    assert torch.allclose(batch.x_t[:, :, 2], 0.7 * noise[:, :, 2] + 0.3 * x0[:, :, 2])
    assert batch.timestep.flatten().tolist() == pytest.approx([0.1, 0.1, 0.7])
    assert torch.equal(batch.target, noise - x0)
    pred = batch.target.clone()
    pred[:, :, :2] += 100  # errors on conditional frames do not count
    assert flow_loss(pred, batch) == 0
    pred[:, :, 2] += 1
    assert flow_loss(pred, batch).item() == pytest.approx(1 / 3)  # mean over every element


def test_power_ema():
    assert power_ema_gamma(0.10) == pytest.approx(6.937, abs=1e-3)
    module = torch.nn.Linear(2, 1, bias=False)
    ema = PowerEMA(module, 0.10)
    assert [round(ema.beta(i), 3) for i in (0, 10, 100, 1000)] == [0.0, 0.469, 0.924, 0.992]
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema.update(module, 0)  # beta 0: the average is the weights themselves
    assert torch.equal(ema.shadow["weight"], torch.ones(1, 2))
    assert ema.shadow["weight"].dtype == torch.float32


def test_learning_rate_schedule():
    args = (1000, 5000, 1e-6, 1.0, 0.0)
    assert lr_factor(0, *args) == pytest.approx(1e-6)
    assert lr_factor(500, *args) == pytest.approx(0.5, abs=1e-3)
    assert lr_factor(1000, *args) == 1.0
    assert lr_factor(3000, *args) == pytest.approx(0.5)
    assert lr_factor(5000, *args) == 0.0 and lr_factor(6000, *args) == 0.0


@pytest.mark.parametrize(
    ("size", "bucket", "target"),
    [
        ((1920, 1080), "16,9", (1280, 704)),
        ((640, 480), "4,3", (960, 704)),
        ((512, 512), "1,1", (960, 960)),
        ((1080, 1920), "9,16", (704, 1280)),
        ((640, 272), "16,9", (1280, 704)),
        ((176, 144), "4,3", (960, 704)),
    ],
)
def test_reference_buckets(size, bucket, target):
    assert nearest_bucket(*size, "720") == (bucket, target)


def test_resize_keeps_aspect_and_pads_with_mask():
    video = torch.randint(0, 255, (2, 3, 272, 640), dtype=torch.uint8)
    out, mask = resize_and_pad(video, (1280, 704))
    assert out.shape == (2, 3, 704, 1280)
    assert mask[0, :544].sum() == 0 and mask[0, 544:].min() == 1  # 272 * 2 = 544 real rows


@pytest.mark.parametrize("size", [(30, 56), (10, 50), (32, 20)])
def test_padding_equals_torch_reflect_and_replicate(size):
    """The uint8 gather pads exactly as torch's reflect (or, for pads wider than the picture,
    replicate) padding does."""
    import torch.nn.functional as F

    video = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
    out, _ = resize_and_pad(video, (size[1], 32) if size[1] >= 56 else (56, size[0]))
    h, w = video.shape[2:]
    pad = (0, out.shape[3] - w, 0, out.shape[2] - h)
    mode = "reflect" if pad[1] < w and pad[3] < h else "replicate"
    assert torch.equal(out, F.pad(video.float(), pad, mode=mode).to(torch.uint8))


def test_segmentation_resize_never_blends_colours():
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]], dtype=torch.uint8)
    labels = torch.randint(0, 4, (30, 50))
    video = colours[labels].permute(2, 0, 1)[None]  # (1, 3, 30, 50)
    out, _ = resize_and_pad(video, (56, 32), nearest=True)
    seen = {tuple(c) for c in out[0].permute(1, 2, 0).reshape(-1, 3).tolist()}
    assert seen <= {tuple(c) for c in colours.tolist()}


def test_canny_equals_opencv_and_presets():
    import cv2

    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    edges = edge_control(frames, 50, 120)
    for i in range(3):
        assert np.array_equal(edges[i, ..., 1], cv2.Canny(frames[i], 50, 120))
    assert set(np.unique(edges)) <= {0, 255}
    assert EDGE_PRESETS["medium"] == (100, 200)
    for _ in range(50):
        lower, upper = random_edge_thresholds(np.random.default_rng(_))
        assert 20 <= lower < 100 and 50 <= upper - lower < 150


def test_blur_is_deterministic_per_seed():
    frames = np.random.default_rng(1).integers(0, 255, (2, 32, 48, 3), dtype=np.uint8)
    a = training_control("vis", frames, np.random.default_rng(7))
    b = training_control("vis", frames, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.shape == frames.shape
    params = random_blur_params(np.random.default_rng(3))
    assert params.pre_downsize in (1, 2, 3, 4) and 4 <= params.down_up <= 17
    assert blur_preset(frames, "medium").std() < frames.std()


def test_pixel_tokenizer_roundtrip():
    tok = PixelTokenizer()
    video = torch.rand(1, 3, 9, 32, 56) * 2 - 1
    latents = tok.encode(video)
    assert latents.shape == (1, 12, 3, 16, 28)
    back = tok.decode(latents)
    assert back.shape == video.shape
    assert torch.allclose(back[:, :, ::4], video[:, :, ::4], atol=1e-6)  # kept frames exact


def test_dataset_skips_a_clip_that_fails(tmp_path, make_clip, caplog):
    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    (root / "captions").mkdir()
    (root / "videos" / "a_bad.mp4").write_bytes(b"broken")
    (root / "videos" / "b_good.mp4").write_bytes(make_clip(20))
    for cid in ("a_bad", "b_good"):
        (root / "captions" / f"{cid}.json").write_text(json.dumps({"caption": cid}))
    dataset = SingleViewDataset(root, 9, "edge", "tiny")
    sample = dataset[SampleKey(0, 3)]
    assert sample["key"] == "b_good" and "skipping clip a_bad" in caplog.text
    assert sample["video"].shape == (3, 9, 32, 48) and sample["control"].shape == (3, 9, 32, 48)
    again = dataset[SampleKey(0, 3)]
    assert again["start"] == sample["start"] and torch.equal(again["control"], sample["control"])


def test_sampler_shards_and_resumes():
    ranks = [ResumableSampler(10, r, 2, seed=3) for r in range(2)]
    firsts = [[k.index for k, _ in zip(iter(s), range(5), strict=False)] for s in ranks]
    assert sorted(firsts[0] + firsts[1]) == list(range(10))
    sampler = ResumableSampler(7, seed=1)
    stream = iter(sampler)
    head = [next(stream) for _ in range(9)]
    state = sampler.state_dict()
    tail = [next(stream) for _ in range(6)]
    fresh = ResumableSampler(7, seed=1)
    fresh.load_state_dict(state)
    assert [next(iter(fresh)) for _ in range(1)] == tail[:1]
    assert len({k.seed for k in head + tail}) == len(head + tail)
    assert math.isclose(len(sampler), 7)


def test_edge_f1():
    from cosmos_posttrain.controls import edge_preset
    from cosmos_posttrain.demo_eval import edge_f1

    yy, xx = np.mgrid[0:32, 0:48]
    frame = np.where((xx > 12) & (xx < 36) & (yy > 8) & (yy < 24), 220, 30).astype(np.uint8)
    frames = np.repeat(np.stack([frame] * 3, -1)[None], 2, axis=0)
    edges = edge_preset(frames)
    assert edge_f1(frames, edges) == 1.0
    assert edge_f1(np.full_like(frames, 128), edges) == 0.0
    shifted = np.roll(np.roll(frames, 5, axis=2), 4, axis=1)
    assert 0.0 <= edge_f1(shifted, edges) < 0.5
