"""SageAttention 2's Hopper kernel with its inputs quantised here, in PyTorch.

`sageattn` quantises Q, K and V in five separate kernels of its own before its attention kernel
(a K mean, a mean subtraction, Q and K INT8 passes, V's transpose and FP8 pass). Inside the
compiled Cosmos block those are opaque to torch.compile, and they cost about 2.5% of an
inference step at 84,480 tokens (docs/BENCHMARKS.md). Written as tensor expressions they fuse
into the block's own kernels, and the same attention kernel then reads the same formats:

- Q: INT8, one scale per 16 tokens and head (the kernel's per-warp granularity);
- K: smoothed by its mean over the tokens (softmax does not change when a channel's constant is
  taken from every key), INT8, one scale per 128 tokens and head;
- V: FP8 e4m3 with one scale per channel, stored (batch, head, channel, token) with the tokens
  of each group of 16 in the order the kernel's FP8 P.V product reads them.

The Cosmos self-attention takes a shorter way (`attention_from_projections`): Q and K come from
two Triton passes over the raw projections that also apply the attention's RMSNorms and RoPE
(sage_qk_prologue), which torch.compile otherwise spreads over several passes.

Two kernels read these inputs (`select` picks one, once): `sage_fa4`, the same arithmetic in
FlashAttention-4's Hopper kernel with P's row sums from the tensor cores, which needs the pinned
flash-attn-4 (about 6% faster a call and 4-5% a step, the same velocity error to 0.003 points;
docs/BENCHMARKS.md, thirteenth session), and where those packages are missing SageAttention 2's
own kernel (built from source).
"""

from __future__ import annotations

from importlib import metadata
from typing import NamedTuple

import torch
from torch import nn

from . import sage_qk_prologue
from .sage_qk_prologue import K_GROUP, Q_GROUP  # tokens per Q and per K scale

INT8_MAX = 127.0
FP8_MAX = 448.0
# V's token order inside each group of 16: output position p holds token V_ORDER[p]
V_ORDER = (0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15)
PER_WARP = 2  # the kernel's code for per-warp Q/K scales
NHD = 0  # the kernel's code for (batch, token, head, channel) tensors
# sage_fa4 builds on these packages' internals (FlashAttention-4's kernel class, quack's Hopper
# helpers), so it runs with exactly the versions it was checked with (docs/BENCHMARKS.md)
FA4_PINNED = {"flash-attn-4": "4.0.0b36", "quack-kernels": "0.6.5", "nvidia-cutlass-dsl": "4.8.1"}
KERNELS = ("fa4", "sageattention")  # `select`'s order of preference: the faster first
_kernel: str | None = None  # the Hopper kernel `_run` calls, "fa4" or "sageattention" (`select`)


class SageInputs(NamedTuple):
    q: torch.Tensor  # int8 (B, L, H, D)
    q_scale: torch.Tensor  # fp32 (B, H, L / 16)
    k: torch.Tensor  # int8 (B, L, H, D)
    k_scale: torch.Tensor  # fp32 (B, H, L / 128)
    v: torch.Tensor  # float8_e4m3fn (B, H, D, L), tokens reordered in groups of 16
    v_scale: torch.Tensor  # fp32 (B, H, D)


def _int8_groups(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 of fp32 `x` (B, L, H, D) with one scale per `group` tokens and head."""
    batch, tokens, heads, channels = x.shape
    grouped = x.unflatten(1, (tokens // group, group))
    amax = grouped.abs().amax(dim=(2, 4), keepdim=True).clamp_min(1e-7)
    quantised = (grouped * (INT8_MAX / amax)).round().to(torch.int8).flatten(1, 2)
    scale = (amax / INT8_MAX).reshape(batch, tokens // group, heads).transpose(1, 2)
    return quantised, scale.contiguous()


def quantise_v(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 V in the kernel's layout, and its per-channel scales, from a bf16/fp16 (B, L, H, D)
    tensor."""
    v_amax = v.abs().amax(dim=1).float().clamp_min(1e-7)  # (B, H, D)
    v8 = (v.float() * (FP8_MAX / v_amax[:, None])).to(torch.float8_e4m3fn)
    # a group's 16 tokens as (b, a, c) with token 8b + 2a + c, stored at 4a + 2b + c: V_ORDER
    v8 = v8.unflatten(1, (-1, 2, 4, 2)).permute(0, 5, 6, 1, 3, 2, 4).flatten(3).contiguous()
    return v8, v_amax / FP8_MAX


def quantise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> SageInputs:
    """The kernel's inputs from bf16/fp16 (B, L, H, D) tensors; L must divide by 128."""
    q8, q_scale = _int8_groups(q.float(), Q_GROUP)
    k32 = k.float()
    k8, k_scale = _int8_groups(k32 - k32.mean(dim=1, keepdim=True), K_GROUP)
    return SageInputs(q8.contiguous(), q_scale, k8.contiguous(), k_scale, *quantise_v(v))


def available(device: torch.device | str) -> bool:
    """Whether `device` is a Hopper GPU and one of the two kernels runs here (`select`). Asked
    once when the processors are set up, outside the compiled blocks."""
    device = torch.device(device)
    if device.type != "cuda" or torch.cuda.get_device_capability(device) != (9, 0):
        return False
    return select() is not None


def fa4_problem() -> str | None:
    """Why `sage_fa4` cannot run here (a package missing or of another version), or None."""
    for dist, version in FA4_PINNED.items():
        try:
            found = metadata.version(dist)
        except metadata.PackageNotFoundError:
            return f"needs {dist}=={version} (the project's sage-fa4 extra)"
        if found != version:
            return f"is built on {dist} {version}, and this is {found}"
    try:
        from . import sage_fa4  # noqa: F401
    except Exception as exc:  # an install that does not import
        return f"does not import: {type(exc).__name__}: {exc}"
    return None


def _sageattention_built() -> bool:
    try:  # importing the package registers its kernel as a torch op
        from sageattention import sm90_compile  # noqa: F401
    except ImportError:
        return False
    return True


def select(kernel: str | None = None) -> str | None:
    """The Hopper kernel `_run` calls from now on: `fa4` (sage_fa4, about 6% faster a call)
    where its pinned packages import, else `sageattention` where SageAttention 2 is built,
    else None. The first answer is kept (the compiled blocks read it as a constant); `kernel`
    forces one (benchmarks, tests)."""
    global _kernel
    if kernel is not None and kernel not in KERNELS:
        raise ValueError(f"sage's Hopper kernel {kernel!r}: one of {KERNELS}")
    if kernel is None and _kernel is not None:
        return _kernel
    for name in [kernel] if kernel else KERNELS:
        if (name == "fa4" and fa4_problem() is None) or (
            name == "sageattention" and _sageattention_built()
        ):
            _kernel = name
            return name
    if kernel:
        why = fa4_problem() if kernel == "fa4" else "is not built (SageAttention 2, from source)"
        raise RuntimeError(f"sage's Hopper kernel {kernel!r} {why}")
    return None


def takes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether `attention` takes these (B, L, H, D) tensors: 16-bit, 64 or 128 channels (128
    with sage_fa4, the size it was checked at), token counts that divide by 128 (other shapes
    go to `sageattn`, which pads)."""
    return (
        q.dtype in (torch.bfloat16, torch.float16)
        and _takes_channels(q.shape[-1])
        and q.shape[1] % K_GROUP == 0
        and k.shape[1] % K_GROUP == 0
        and v.shape[1] == k.shape[1]
    )


def _takes_channels(channels: int) -> bool:
    """Head sizes the selected kernel takes: sage_fa4 was checked at 128 only."""
    return channels in ((128,) if _kernel == "fa4" else (64, 128))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax(Q.Kᵀ/√D).V of (B, L, H, D) tensors through the Hopper kernel (see `available`
    and `takes`). With SageAttention's kernel, under torch.compile only: eager, these PyTorch
    passes are slower than `sageattn`'s own kernels (docs/BENCHMARKS.md); sage_fa4 has no
    such kernels, so its eager calls come here too."""
    return _run(quantise(q, k, v), q.dtype)


def attention_from_projections(
    attn: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor | None:
    """The attention of a Cosmos self-attention `attn` from its (B, L, H*D) q/k/v projections:
    its RMSNorms, RoPE and the INT8 quantisation of q and k in two Triton passes
    (sage_qk_prologue), V quantised here. Returns (B, L, H, D), or None where those passes do
    not take the inputs (the caller then normalises and rotates q and k and calls the kernel). Under
    torch.compile only, like `attention`."""
    if not (
        torch.compiler.is_compiling()
        and _takes_channels(query.shape[-1] // attn.heads)
        and sage_qk_prologue.takes(query, key, attn.heads, rope)
        and all(_bf16_rms_norm(norm) for norm in (attn.norm_q, attn.norm_k))
    ):
        return None
    q8, q_scale, k8, k_scale = sage_qk_prologue.qk_int8(
        query, key, attn.norm_q, attn.norm_k, rope, attn.heads
    )
    v8, v_scale = quantise_v(value.unflatten(2, (attn.heads, -1)))
    return _run(SageInputs(q8, q_scale, k8, k_scale, v8, v_scale), query.dtype)


def _bf16_rms_norm(norm: nn.Module) -> bool:
    """Whether `norm` is diffusers' RMSNorm with a bf16 weight and no bias, the norm the Triton
    passes compute."""
    from diffusers.models.normalization import RMSNorm

    weight = getattr(norm, "weight", None)
    return (
        type(norm) is RMSNorm
        and weight is not None
        and weight.dtype == torch.bfloat16
        and norm.bias is None
    )


@torch.library.custom_op("cosmos_posttrain::sage_fa4", mutates_args=())
def _sage_fa4(
    q: torch.Tensor,
    q_scale: torch.Tensor,
    k: torch.Tensor,
    k_scale: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    return _fa4_kernel(q, q_scale, k, k_scale, v)


@_sage_fa4.register_fake
def _(q, q_scale, k, k_scale, v):
    return q.new_empty(q.shape, dtype=torch.bfloat16)


def _fa4_kernel(q, q_scale, k, k_scale, v) -> torch.Tensor:
    """sage_fa4's kernel, imported on first call (it needs flash-attn-4 and compiles for the
    GPU); bf16 (B, L, H, D) before V's per-channel scale. The CPU tests put the kernel's
    contract here."""
    from . import sage_fa4

    return sage_fa4.attention(q, q_scale, k, k_scale, v)


def _run(inputs: SageInputs, dtype: torch.dtype) -> torch.Tensor:
    """The Hopper kernel `select` chose, on quantised inputs: a (B, L, H, D) output of
    `dtype`."""
    if _kernel == "fa4":
        out = torch.ops.cosmos_posttrain.sage_fa4(
            inputs.q, inputs.q_scale, inputs.k, inputs.k_scale, inputs.v
        )
        return (out * inputs.v_scale[:, None]).to(dtype)  # V's scale, per head and channel
    out = torch.empty(inputs.q.shape, dtype=dtype, device=inputs.q.device)
    torch.ops.sageattention_sm90.qk_int8_sv_f8_accum_f32_fuse_v_scale_attn_inst_buf(
        inputs.q,
        inputs.k,
        inputs.v.transpose(1, 2),  # for (B, L, H, D) Q and K the kernel takes V as (B, D, H, L)
        out,
        inputs.q_scale,
        inputs.k_scale,
        inputs.v_scale,
        NHD,
        0,  # not causal
        PER_WARP,
        inputs.q.shape[-1] ** -0.5,
        0,  # no log-sum-exp
    )
    return out
