"""Q and K for SageAttention's Hopper kernel straight from the self-attention's q and k
projections: RMSNorm, RoPE and INT8 quantisation in two Triton passes.

Under torch.compile the same chain (diffusers' RMSNorm and RoPE, then `sage_hopper.quantise`)
becomes several passes over q and k: the K mean over all tokens and the per-group maxima each
read the tensors again, and the norms are recomputed in every pass. Here the first pass
normalises, rotates and quantises q (one scale per 16 tokens is local to a tile) and sums the
rotated k per tile; the second computes k again, takes the mean, and quantises it with one scale
per 128 tokens. q is read once and k twice, which the K mean makes necessary. Per guided call
at the seed shape on an H100, q, k and v take 2.4 ms this way (1.7 ms of them these passes)
against 3.9 ms for the compiled chain (docs/BENCHMARKS.md).
The arithmetic is the eager chain's, with its bf16 roundings after the norm, its weight and the
rotation; only the order of fp32 sums differs.
"""

from __future__ import annotations

import os

import torch

try:  # Triton comes with CUDA builds of torch; the pure-PyTorch path needs none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs without Triton
    triton = None

# the Hopper kernel's Q and K groups, which sage_hopper's PyTorch quantisation uses too (the
# test compares the two quantisations)
Q_GROUP = 16  # tokens per Q scale: one warp's rows
K_GROUP = 128  # tokens per K scale: one key block of the kernel
ROUND = 12582912.0  # 1.5 * 2**23: x + ROUND - ROUND rounds |x| < 2**22 half to even
# tokens and heads per program, and warps, of the two passes: the fastest of 40 and 12
# configurations at the seed shape on an H100 (docs/BENCHMARKS.md)
KERNEL_1 = {"block": 64, "heads": 2, "warps": 4}
KERNEL_2 = {"heads": 4, "warps": 8}


if triton is not None:
    # jitted code reads module globals only as constexprs
    _ROUND = tl.constexpr(ROUND)
    _Q_GROUP = tl.constexpr(Q_GROUP)
    _K_GROUP = tl.constexpr(K_GROUP)
    INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")

    @triton.jit
    def _bf16(x):
        """x rounded to bf16 (to nearest, ties to even), kept in fp32. Triton's CPU interpreter,
        which the tests run, truncates in its bf16 conversion; there the rounding is done on
        the bits."""
        if INTERPRETED:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            return bits.to(tl.float32, bitcast=True)
        return x.to(tl.bfloat16).to(tl.float32)

    @triton.jit
    def _tables(cos_ptr, sin_ptr, t, c, HALF: tl.constexpr):
        """The RoPE table rows of tokens `t`: cos and sin, each as its two halves of channels."""
        at = t[:, None] * (2 * HALF) + c
        return (
            tl.load(cos_ptr + at),
            tl.load(cos_ptr + at + HALF),
            tl.load(sin_ptr + at),
            tl.load(sin_ptr + at + HALF),
        )

    @triton.jit
    def _norm_rope(x_ptr, w_ptr, at, c, cos_lo, cos_hi, sin_lo, sin_hi, eps, HALF: tl.constexpr):
        """One head's (tokens, D) tile at `at`: diffusers' RMSNorm (fp32 statistics, bf16
        result, times the bf16 weight in bf16) and RoPE with the halves rotated
        (use_real_unbind_dim=-2), rounded to bf16 where the eager chain rounds; returned as
        fp32 halves."""
        lo = tl.load(x_ptr + at).to(tl.float32)
        hi = tl.load(x_ptr + at + HALF).to(tl.float32)
        inv = tl.math.rsqrt((tl.sum(lo * lo, axis=1) + tl.sum(hi * hi, axis=1)) / (2 * HALF) + eps)
        lo = _bf16(_bf16(lo * inv[:, None]) * tl.load(w_ptr + c).to(tl.float32))
        hi = _bf16(_bf16(hi * inv[:, None]) * tl.load(w_ptr + c + HALF).to(tl.float32))
        return _bf16(lo * cos_lo - hi * sin_lo), _bf16(hi * cos_hi + lo * sin_hi)

    @triton.jit
    def _int8(x, factor):
        """round(x * factor) half to even, as INT8 (|x * factor| <= 127)."""
        return ((x * factor + _ROUND) - _ROUND).to(tl.int8)

    @triton.jit
    def _q_int8_k_sums(
        q_ptr, k_ptr, wq_ptr, wk_ptr, cos_ptr, sin_ptr, q8_ptr, q_scale_ptr, k_sum_ptr,
        stride_b, stride_t, eps_q, eps_k, tokens, heads,
        HALF: tl.constexpr, BLOCK: tl.constexpr, HEADS: tl.constexpr,
    ):  # fmt: skip
        """Pass 1, one (BLOCK tokens, HEADS heads) tile of one clip: q normalised, rotated and
        quantised (one scale per 16 tokens and head); k normalised and rotated, summed over
        the tile's tokens into k_sum (batch, head, tile, D)."""
        t0 = tl.program_id(1) * BLOCK
        b = tl.program_id(2)
        t = t0 + tl.arange(0, BLOCK)
        c = tl.arange(0, HALF)[None, :]
        cos_lo, cos_hi, sin_lo, sin_hi = _tables(cos_ptr, sin_ptr, t, c, HALF)
        groups: tl.constexpr = BLOCK // _Q_GROUP
        for i in tl.static_range(HEADS):
            h = tl.program_id(0) * HEADS + i
            at = b * stride_b + t[:, None] * stride_t + h * 2 * HALF + c
            q_lo, q_hi = _norm_rope(
                q_ptr, wq_ptr, at, c, cos_lo, cos_hi, sin_lo, sin_hi, eps_q, HALF
            )
            row_max = tl.maximum(tl.max(tl.abs(q_lo), axis=1), tl.max(tl.abs(q_hi), axis=1))
            amax = tl.maximum(tl.max(tl.reshape(row_max, (groups, _Q_GROUP)), axis=1), 1e-7)
            scales = (b * heads + h) * (tokens // _Q_GROUP) + t0 // _Q_GROUP + tl.arange(0, groups)
            tl.store(q_scale_ptr + scales, amax / 127.0)
            factor = tl.broadcast_to((127.0 / amax)[:, None], (groups, _Q_GROUP))
            factor = tl.reshape(factor, (BLOCK,))[:, None]
            out = q8_ptr + (b * tokens + t[:, None]) * (heads * 2 * HALF) + h * 2 * HALF + c
            tl.store(out, _int8(q_lo, factor))
            tl.store(out + HALF, _int8(q_hi, factor))
            k_lo, k_hi = _norm_rope(
                k_ptr, wk_ptr, at, c, cos_lo, cos_hi, sin_lo, sin_hi, eps_k, HALF
            )
            sums = k_sum_ptr + ((b * heads + h) * (tokens // BLOCK) + t0 // BLOCK) * 2 * HALF + c
            tl.store(sums, tl.sum(k_lo, axis=0)[None, :])
            tl.store(sums + HALF, tl.sum(k_hi, axis=0)[None, :])

    @triton.jit
    def _k_int8(
        k_ptr, wk_ptr, cos_ptr, sin_ptr, mean_ptr, k8_ptr, k_scale_ptr,
        stride_b, stride_t, eps_k, tokens, heads,
        HALF: tl.constexpr, HEADS: tl.constexpr,
    ):  # fmt: skip
        """Pass 2, one (128 tokens, HEADS heads) tile: k normalised and rotated again, its mean
        over all tokens subtracted, quantised with one scale per 128 tokens and head."""
        t0 = tl.program_id(1) * _K_GROUP
        b = tl.program_id(2)
        t = t0 + tl.arange(0, _K_GROUP)
        c = tl.arange(0, HALF)[None, :]
        cos_lo, cos_hi, sin_lo, sin_hi = _tables(cos_ptr, sin_ptr, t, c, HALF)
        for i in tl.static_range(HEADS):
            h = tl.program_id(0) * HEADS + i
            at = b * stride_b + t[:, None] * stride_t + h * 2 * HALF + c
            k_lo, k_hi = _norm_rope(
                k_ptr, wk_ptr, at, c, cos_lo, cos_hi, sin_lo, sin_hi, eps_k, HALF
            )
            mean = mean_ptr + (b * heads + h) * 2 * HALF + c
            k_lo -= tl.load(mean)
            k_hi -= tl.load(mean + HALF)
            amax = tl.maximum(tl.maximum(tl.max(tl.abs(k_lo)), tl.max(tl.abs(k_hi))), 1e-7)
            tl.store(
                k_scale_ptr + (b * heads + h) * (tokens // _K_GROUP) + t0 // _K_GROUP, amax / 127.0
            )
            out = k8_ptr + (b * tokens + t[:, None]) * (heads * 2 * HALF) + h * 2 * HALF + c
            tl.store(out, _int8(k_lo, 127.0 / amax))
            tl.store(out + HALF, _int8(k_hi, 127.0 / amax))


def takes(q: torch.Tensor, k: torch.Tensor, heads: int, rope: tuple[torch.Tensor, ...]) -> bool:
    """Whether these (B, L, H*D) projections go through the Triton passes: a CUDA device with
    Triton, bf16, 64 or 128 channels a head, L a multiple of 128, q and k laid out alike with
    contiguous channels, and a float32 (L, D) RoPE table."""
    if triton is None or q.device.type != "cuda" or q.shape != k.shape or q.stride() != k.stride():
        return False
    batch, tokens, width = q.shape
    dim = width // heads
    return (
        q.dtype == k.dtype == torch.bfloat16
        and dim in (64, 128)
        and tokens % K_GROUP == 0
        and q.stride(-1) == 1
        and all(
            t.dtype == torch.float32 and t.shape == (tokens, dim) and t.is_contiguous()
            for t in rope
        )
    )


@torch.library.custom_op("cosmos_posttrain::sage_qk_int8", mutates_args=())
def _qk_int8(
    q: torch.Tensor,
    k: torch.Tensor,
    weight_q: torch.Tensor,
    weight_k: torch.Tensor,
    eps_q: float,
    eps_k: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, tokens, width = q.shape
    dim = width // heads
    q8 = torch.empty((batch, tokens, heads, dim), dtype=torch.int8, device=q.device)
    k8 = torch.empty_like(q8)
    q_scale = torch.empty((batch, heads, tokens // Q_GROUP), dtype=torch.float32, device=q.device)
    k_scale = torch.empty((batch, heads, tokens // K_GROUP), dtype=torch.float32, device=q.device)
    block = KERNEL_1["block"]
    per_1, per_2 = (c["heads"] if heads % c["heads"] == 0 else 1 for c in (KERNEL_1, KERNEL_2))
    k_sum = torch.empty((batch, heads, tokens // block, dim), dtype=torch.float32, device=q.device)
    _q_int8_k_sums[(heads // per_1, tokens // block, batch)](
        q, k, weight_q, weight_k, cos, sin, q8, q_scale, k_sum, q.stride(0), q.stride(1),
        eps_q, eps_k, tokens, heads, HALF=dim // 2, BLOCK=block, HEADS=per_1,
        num_warps=KERNEL_1["warps"],
    )  # fmt: skip
    mean = k_sum.sum(dim=2) / tokens
    _k_int8[(heads // per_2, tokens // K_GROUP, batch)](
        k, weight_k, cos, sin, mean, k8, k_scale, k.stride(0), k.stride(1), eps_k, tokens, heads,
        HALF=dim // 2, HEADS=per_2, num_warps=KERNEL_2["warps"],
    )  # fmt: skip
    return q8, q_scale, k8, k_scale


@_qk_int8.register_fake
def _(q, k, weight_q, weight_k, eps_q, eps_k, cos, sin, heads):
    batch, tokens, width = q.shape
    shape = (batch, tokens, heads, width // heads)
    return (
        q.new_empty(shape, dtype=torch.int8),
        q.new_empty((batch, heads, tokens // Q_GROUP), dtype=torch.float32),
        q.new_empty(shape, dtype=torch.int8),
        q.new_empty((batch, heads, tokens // K_GROUP), dtype=torch.float32),
    )


def qk_int8(
    q: torch.Tensor,
    k: torch.Tensor,
    norm_q: torch.nn.Module,
    norm_k: torch.nn.Module,
    rope: tuple[torch.Tensor, torch.Tensor],
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """INT8 Q and K with their scales (sage_hopper.SageInputs' first four fields) from (B, L, H*D)
    projections, the attention's two RMSNorms and its RoPE table (cos, sin); see `takes`."""
    cos, sin = rope
    return _qk_int8(q, k, norm_q.weight, norm_k.weight, norm_q.eps, norm_k.eps, cos, sin, heads)
