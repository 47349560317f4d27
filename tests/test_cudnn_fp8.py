"""The inputs `cudnn_fp8` prepares for cuDNN's FP8 attention, and what it does with the output.

cuDNN's kernel needs a Hopper GPU (its speed and error are in docs/BENCHMARKS.md). Here the
quantised tensors are read back and compared with the originals, and the whole path runs
through a CPU stand-in registered for the project's op: it checks the op's contract and
computes cuDNN's FP8 arithmetic in fp32 (FP8 inputs, probabilities rounded to FP8 at scale 448
for the P.V product, FP8 output).
"""

from __future__ import annotations

import pytest
import torch

from cosmos_posttrain import cudnn_fp8

B, L, H, D = 2, 256, 3, 128
FP8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def qkv():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, L, H, D, generator=gen) for _ in range(3))
    k = k + 4 * torch.randn(1, 1, H, D, generator=gen)  # a channel bias, as trained keys have
    v = v + 3 * torch.randn(1, 1, H, D, generator=gen)  # and values
    v[..., :8] *= 20  # a few loud channels: they must not coarsen the others
    return tuple(t.bfloat16() for t in (q, k, v))


def fp8_bound(x: torch.Tensor) -> torch.Tensor:
    """Half a step of FP8 e4m3 at `x`: 1/16 of it for normal numbers, 2^-10 below them."""
    return torch.maximum(x.abs() / 16, torch.full_like(x, 2.0**-10)) * 1.001


def test_formats_scales_and_smoothing(qkv):
    q, k, v = (t.float() for t in qkv)
    inputs = cudnn_fp8.quantise(*qkv)
    for name in ("q", "k", "v"):
        tensor = getattr(inputs, name)
        assert tensor.dtype == FP8 and tensor.shape == (B, L, H, D) and tensor.is_contiguous()
    for name in ("q_descale", "k_descale"):
        assert getattr(inputs, name).shape == (1, 1, 1, 1)
    assert inputs.v_scale.shape == inputs.v_mean.shape == (B, 1, H, D)
    # Q: the largest magnitude on FP8's largest value, every element within half a step
    assert torch.allclose(inputs.q_descale.flatten(), q.abs().amax() / 448)
    assert inputs.q.float().abs().max() == 448
    scaled = q / inputs.q_descale
    assert ((inputs.q.float() - scaled).abs() <= fp8_bound(scaled)).all()
    # K: its mean over the tokens taken off first, so the channel bias costs no precision
    smoothed = k - k.mean(dim=1, keepdim=True)
    assert torch.allclose(inputs.k_descale.flatten(), smoothed.abs().amax() / 448)
    assert inputs.k_descale.item() < k.abs().amax().item() / 448 / 2
    # V: mean and one scale per channel come back after the kernel
    assert torch.allclose(inputs.v_mean, v.mean(dim=1, keepdim=True))
    channel_amax = inputs.v.float().abs().amax(dim=1)
    assert (channel_amax == 448).all()  # every channel uses FP8's whole range, quiet ones too
    scaled = (v - inputs.v_mean) / inputs.v_scale
    assert ((inputs.v.float() - scaled).abs() <= fp8_bound(scaled)).all()


@pytest.fixture(scope="module")
def stand_in():
    """cuDNN's FP8 attention on the CPU, under the project's op; records each call's length."""
    calls = []

    def kernel(q, k, v, q_descale, k_descale, scale):
        b, n, h, d = q.shape
        assert q.dtype == k.dtype == v.dtype == FP8
        assert q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
        assert k.shape == v.shape and k.shape[0] == b and k.shape[2:] == (h, d)
        assert q_descale.shape == k_descale.shape == (1, 1, 1, 1)
        assert q_descale.dtype == k_descale.dtype == torch.float32
        scores = torch.einsum("blhd,bmhd->bhlm", q.float() * q_descale, k.float() * k_descale)
        scores = scores * scale
        p = (scores - scores.amax(dim=-1, keepdim=True)).exp()
        p8 = (p * 448).to(FP8).float() / 448  # the probabilities the P.V product reads
        out = torch.einsum("bhlm,bmhd->blhd", p8, v.float()) / p.sum(-1).transpose(1, 2)[..., None]
        calls.append(n)
        return out.to(FP8).contiguous()  # as cuDNN writes it

    torch.library.register_kernel(cudnn_fp8.OP_NAME, "cpu", kernel)
    return calls


def exact(q, k, v) -> torch.Tensor:
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def relative(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref).norm() / ref.norm())


def test_attention_through_the_ops_contract_is_attention(qkv, stand_in):
    ref = exact(*qkv)
    out = cudnn_fp8.attention(*qkv)
    assert stand_in[-1] == L
    assert out.dtype == qkv[0].dtype and out.shape == qkv[0].shape
    assert relative(out, ref) < 0.03
    # what V's smoothing and channel scales buy: the part of the output that varies between
    # queries (the mean of V is nearly all of it here) keeps FP8's precision
    centre = ref.mean(dim=1, keepdim=True)
    assert relative(out.float() - centre, ref - centre) < 0.15
    # callers hand over slices of the fused q/k/v product: not contiguous, same result
    views = torch.cat(qkv, dim=-1).split(D, dim=-1)
    assert not views[0].is_contiguous()
    assert torch.equal(cudnn_fp8.attention(*views), out)
    # fp32 inputs (a tiny model) come back in fp32
    assert cudnn_fp8.attention(*(t.float() for t in qkv)).dtype == torch.float32


def test_compiled_attention_is_one_graph_around_the_op(qkv, stand_in):
    compiled = torch.compile(cudnn_fp8.attention, fullgraph=True)
    before = len(stand_in)
    out = compiled(*qkv)
    assert len(stand_in) == before + 1
    assert torch.allclose(out.float(), cudnn_fp8.attention(*qkv).float(), atol=2e-2)


def test_the_kernel_asked_for_where_it_cannot_run_says_why(monkeypatch):
    import sys

    from cosmos_posttrain.attention_kernels import AttentionKernelError, attention_kernel

    with pytest.raises(AttentionKernelError, match="'cudnn_fp8' runs on NVIDIA Hopper"):
        attention_kernel("cudnn_fp8", "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setitem(sys.modules, "cudnn", None)  # as if not installed
    with pytest.raises(AttentionKernelError, match="needs the nvidia-cudnn-frontend package"):
        attention_kernel("cudnn_fp8", "cuda")
