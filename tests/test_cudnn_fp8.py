"""The inputs `cudnn_fp8` prepares for cuDNN's FP8 attention, and what it does with the output.

cuDNN's kernel needs a Hopper GPU (its speed and error are in docs/BENCHMARKS.md). Here the
quantised tensors are read back and compared with the originals, and the whole path runs
through a CPU stand-in registered for the project's op: it checks the op's contract and
computes cuDNN's FP8 arithmetic in fp32 (FP8 inputs, probabilities rounded to FP8 at scale 448
for the P.V product, the row sums from the unrounded ones, FP8 output). On a Hopper GPU with
the cudnn package, the real kernel is compared with the stand-in.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import exact_attention

from cosmos_posttrain import cudnn_fp8

B, L, H, D = 2, 256, 3, 128
FP8 = torch.float8_e4m3fn


def make_qkv(tokens: int = L, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, tokens, H, D, generator=gen) for _ in range(3))
    k = k + 4 * torch.randn(1, 1, H, D, generator=gen)  # a channel bias, as trained keys have
    v = v + 3 * torch.randn(1, 1, H, D, generator=gen)  # and values
    v[..., :8] *= 20  # a few loud channels: they must not coarsen the others
    return tuple(t.bfloat16().to(device) for t in (q, k, v))


@pytest.fixture(scope="module")
def qkv():
    return make_qkv()


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
    # V: mean and one scale per channel come back after the kernel; every channel, quiet ones
    # too, spans half of FP8's range, which leaves the output room for P's rounding
    assert torch.allclose(inputs.v_mean, v.mean(dim=1, keepdim=True))
    assert (inputs.v.float().abs().amax(dim=1) == 224).all()
    scaled = (v - inputs.v_mean) / inputs.v_scale
    assert ((inputs.v.float() - scaled).abs() <= fp8_bound(scaled)).all()


def stand_in(q, k, v, q_descale, k_descale, scale) -> torch.Tensor:
    """cuDNN's FP8 attention on the CPU, checking the op's contract first."""
    b, n, h, d = q.shape
    assert q.dtype == k.dtype == v.dtype == FP8
    assert q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
    assert k.shape == v.shape and k.shape[0] == b and k.shape[2:] == (h, d)
    assert q_descale.shape == k_descale.shape == (1, 1, 1, 1)
    assert q_descale.dtype == k_descale.dtype == torch.float32
    q, k, v, q_descale, k_descale = (t.cpu() for t in (q, k, v, q_descale, k_descale))
    scores = torch.einsum("blhd,bmhd->bhlm", q.float() * q_descale, k.float() * k_descale)
    p = (scores * scale - (scores * scale).amax(dim=-1, keepdim=True)).exp()
    p8 = (p * 448).to(FP8).float() / 448  # the probabilities the P.V product reads
    out = torch.einsum("bhlm,bmhd->blhd", p8, v.float()) / p.sum(-1).transpose(1, 2)[..., None]
    return out.to(FP8).contiguous()  # as cuDNN writes it


@pytest.fixture(scope="module")
def cpu_kernel():
    """The stand-in under the op's name for CPU tensors, for this module's tests only; it
    records each call's token count."""
    calls = []

    def kernel(*args):
        calls.append(args[0].shape[1])
        return stand_in(*args)

    with torch.library._scoped_library("cosmos_posttrain", "IMPL") as lib:
        lib.impl("cudnn_fp8_sdpa", kernel, "CPU")
        yield calls


def relative(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref).norm() / ref.norm())


def test_attention_through_the_ops_contract_is_attention(qkv, cpu_kernel):
    ref = exact_attention(*qkv)
    out = cudnn_fp8.attention(*qkv)
    assert cpu_kernel[-1] == L
    assert out.dtype == qkv[0].dtype and out.shape == qkv[0].shape
    # most of the output is V's channel bias (the mean alone lands 2.5% away): the bound is
    # for the whole path, and the next one for the part that varies between queries, which
    # keeps FP8's precision thanks to V's smoothing and channel scales
    assert relative(out, ref) < 0.006
    centre = ref.mean(dim=1, keepdim=True)
    assert relative(out.float() - centre, ref - centre) < 0.15
    # the processor hands over views: slices of the fused q/k/v product, and (B, H, L, D)
    # tensors transposed to (B, L, H, D); the kernel gets contiguous tensors all the same
    views = torch.cat(qkv, dim=-1).split(D, dim=-1)
    transposed = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in qkv]
    for inputs in (views, transposed):
        assert not inputs[0].is_contiguous()
        assert torch.equal(cudnn_fp8.attention(*inputs), out)
    # fp32 inputs (a tiny model) come back in fp32
    assert cudnn_fp8.attention(*(t.float() for t in qkv)).dtype == torch.float32


def test_compiled_attention_is_one_graph_around_the_op(qkv, cpu_kernel):
    compiled = torch.compile(cudnn_fp8.attention, fullgraph=True)
    before = len(cpu_kernel)
    out = compiled(*[t.transpose(1, 2).contiguous().transpose(1, 2) for t in qkv])
    assert len(cpu_kernel) == before + 1
    assert torch.allclose(out.float(), cudnn_fp8.attention(*qkv).float(), atol=2e-2)


def test_the_kernel_asked_for_where_it_cannot_run_says_why(monkeypatch):
    import sys

    from cosmos_posttrain.attention_kernels import AttentionKernelError, attention_kernel

    with pytest.raises(AttentionKernelError, match="'cudnn_fp8' runs on NVIDIA Hopper"):
        attention_kernel("cudnn_fp8", "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setitem(sys.modules, "cudnn", None)  # as if not installed
    with pytest.raises(AttentionKernelError, match="needs the nvidia-cudnn-frontend package"):
        attention_kernel("cudnn_fp8", "cuda")

    class OldCudnn:  # a cuDNN whose backend declines the FP8 graph
        @staticmethod
        def backend_version_string() -> str:
            return "8.9.0"

    def decline(*args):
        raise RuntimeError("no engine proposed a plan")

    monkeypatch.setitem(sys.modules, "cudnn", OldCudnn)
    monkeypatch.setattr(cudnn_fp8, "_graph", decline)
    with pytest.raises(AttentionKernelError, match="cuDNN 8.9.0 cannot build it: no engine"):
        attention_kernel("cudnn_fp8", "cuda")


@pytest.mark.skipif(
    not torch.cuda.is_available() or cudnn_fp8.problem("cuda") is not None,
    reason="needs a Hopper GPU and the nvidia-cudnn-frontend package",
)
@pytest.mark.parametrize("tokens", [256, 1000])  # 1000: the last key block is partial
def test_the_real_kernel_computes_what_the_stand_in_does(tokens):
    qkv = make_qkv(tokens, "cuda")
    inputs = cudnn_fp8.quantise(*qkv)
    args = (inputs.q, inputs.k, inputs.v, inputs.q_descale, inputs.k_descale, D**-0.5)
    real = torch.ops.cosmos_posttrain.cudnn_fp8_sdpa(*args).float().cpu()
    emulated = stand_in(*args).float()
    # against exact attention of the quantised inputs, the kernel lands where the stand-in
    # does: it rounds the same probabilities to FP8, but scaled by the running maximum of the
    # keys seen so far rather than the row's, so the two round independently and differ by
    # about √2 times that rounding (4% here) while a wrong scale or layout is far off
    q, k = (t.float() * descale for t, descale in ((args[0], args[3]), (args[1], args[4])))
    exact = exact_attention(q, k, args[2].float()).cpu()
    errors = {"real": relative(real, exact), "emulated": relative(emulated, exact)}
    print(tokens, errors, relative(real, emulated))  # shown with pytest -s
    assert errors["real"] < 1.5 * errors["emulated"], errors
    assert relative(real, emulated) < 0.06, errors
    out = cudnn_fp8.attention(*qkv).cpu()
    ref = exact_attention(*qkv).cpu()
    centre = ref.mean(dim=1, keepdim=True)
    assert relative(out.float() - centre, ref - centre) < 0.15
