"""SageAttention's arithmetic in FlashAttention-4's Hopper kernel: the `sage` kernel on an H100.

SageAttention 2's own Hopper kernel runs one warpgroup per 64 query rows, each alternating
between its tensor-core products and its softmax. FlashAttention-4's Hopper forward (CuTe DSL,
the FlashAttention-3 design) has a producer warpgroup that loads K and V by TMA and two consumer
warpgroups that take turns on the tensor cores, so that one's softmax runs while the other's
products do. This module keeps that kernel and changes what it computes, to the numbers
SageAttention computes, on the inputs `sage_hopper` prepares for it:

- Q.K^T in INT8 (Q one scale per 16 tokens, K smoothed by its mean and one scale per 128 keys),
  accumulated in INT32. The score becomes a float by an integer add of the bits of 1.5 * 2**23
  (exact: a score is below 2**22 in magnitude) instead of a conversion instruction, and the
  constant, the two scales and the softmax scale go into the exponent's one FMA. The two scales
  are loaded before the tile's Q.K^T is waited for.
- P scaled onto FP8's range (exp2 of the score minus the row maximum plus log2(448)), rounded to
  e4m3 and multiplied by V in FP8 (e4m3, one scale per channel, applied by the caller).
- The P.V operand is the Q.K^T accumulator's own registers: a thread holds keys 2t, 2t+1, 8+2t,
  9+2t of each 16 where the FP8 operand wants 4t..4t+3, and V's token order
  (`sage_hopper.V_ORDER`, the one SageAttention's kernel reads too) undoes exactly that.
- Each tile's P.V goes into fresh fp32 registers and is added to O there, as SageAttention does:
  the FP8 product's own accumulator keeps about 22 bits, and summed over 660 tiles it lost about
  40% of the output's norm on the model's attention inputs.
- P's row sums by the tensor cores: after each P.V, P times 8 columns of ones in shared memory
  (the smallest FP8 product), instead of 64 adds a tile in each thread. The kernel issues about
  13% fewer instructions, and it sums the rounded P that P.V multiplies (SageAttention sums P
  before rounding; the outputs differ by 0.2-0.5%).
- FlashAttention-4's loop without its intra-warpgroup overlap (this tile's softmax while the
  previous tile's P.V runs): ptxas moves the wait for that P.V up before the exponentials (its
  SASS shows it), so nothing overlaps, and the plain loop, with fewer registers live, was about
  4% faster.

What it is for: `sage` on a Hopper GPU, where `sage_hopper` selects it before SageAttention 2's
own kernel (which needs a build from source; this needs only the pinned packages). Its output is
the same as SageAttention's kernel up to the accumulation order and the row sums, and a call
takes about 6% less time (docs/BENCHMARKS.md, thirteenth session). It builds on
FlashAttention-4's kernel class and quack's Hopper helpers, so `sage_hopper` runs it only with
the versions in `sage_hopper.FA4_PINNED`; it is compiled on first use.
"""

import math
from dataclasses import dataclass

import cutlass
import cutlass.cute as cute
import cutlass.utils.hopper_helpers as hopper_helpers
import torch
from cutlass import Float32, Int32, const_expr
from cutlass.cute.nvgpu import warpgroup
from cutlass.utils import LayoutEnum
from flash_attn.cute import flash_fwd_sm90
from flash_attn.cute import utils as fa4_utils
from flash_attn.cute.cute_dsl_utils import to_cute_aux_tensor, to_cute_tensor
from flash_attn.cute.softmax import Softmax
from flash_attn.cute.utils import AuxData
from quack import layout_utils
from quack import sm90_utils as quack_sm90

from .sage_qk_prologue import K_GROUP, Q_GROUP  # tokens per K and Q scale (Q: a warp's rows)

FP8_OFFSET = math.log2(448.0)  # P = exp2(s - max + FP8_OFFSET) fills e4m3's range [0, 448]
MAGIC_BITS = 0x4B400000  # the float 1.5 * 2**23 as bits: adding an integer below 2**22 adds it
MAGIC = 12582912.0  # ... exactly, to the value 1.5 * 2**23
TILE_M = 128  # query rows per CTA: two consumer warpgroups of 64
TILE_N = K_GROUP  # keys per tile: one K scale each
ONES = 8  # columns of the ones matrix that sums P: the narrowest FP8 product
CONSUMER_WARP0 = 4  # warps 0-3 are the producer warpgroup
MMA_ARG_SP, MMA_ARG_TIDX = 7, 15  # positions in FlashAttention-4's call of `mma`
_NO_AUX = AuxData()


class _HopperHelpers:
    """quack's Hopper helpers as FlashAttention-4's module reaches them while this kernel
    compiles (`attention` puts them there and back), with the two 8-bit cases they lack: FP8 V
    kept keys-contiguous in shared memory (8-bit products read both operands K-major), and an
    INT32 accumulator for INT8 Q.K^T. Everything else goes to quack unchanged."""

    def __getattr__(self, name):
        return getattr(quack_sm90, name)

    @staticmethod
    def make_smem_layout(dtype, layout, tile, stage=None, *args, **kwargs):
        if dtype in (cutlass.Float8E4M3FN, cutlass.Float8E5M2):
            layout = LayoutEnum.COL_MAJOR
        return quack_sm90.make_smem_layout(dtype, layout, tile, stage, *args, **kwargs)

    @staticmethod
    def gemm_zero_init(
        tiled_mma, shape, tCrA, tCrB, A_idx=None, B_idx=None, wg_wait=-1, swap_AB=False
    ):
        if not isinstance(tiled_mma.op, warpgroup.MmaI8Op):
            return quack_sm90.gemm_zero_init(
                tiled_mma, shape, tCrA, tCrB, A_idx, B_idx, wg_wait, swap_AB
            )
        acc = cute.make_rmem_tensor(tiled_mma.partition_shape_C(shape), Int32)
        rA = tCrA if A_idx is None else tCrA[None, None, None, A_idx]
        rB = tCrB if B_idx is None else tCrB[None, None, None, B_idx]
        quack_sm90.gemm(tiled_mma, acc, rA, rB, zero_init=True, wg_wait=wg_wait)
        return acc


@dataclass
class _ScaledSoftmax(Softmax):
    """Online softmax over one tile of raw scores (1.5 * 2**23 + the INT32 score, as floats),
    with the tile's dequantisation scale `c` (in log2 units) applied in the exponent's FMA.
    Row maxima are kept in log2 units; P and the row sums carry the factor 448. The row sums
    come from the tensor cores (`add_row_sums`), not from adds here."""

    @staticmethod
    def create(scale_log2, num_rows, arch=80, softmax_scale=None):
        row_max = cute.make_rmem_tensor(num_rows, Float32)
        row_sum = cute.make_rmem_tensor(num_rows, Float32)
        return _ScaledSoftmax(scale_log2, num_rows, row_max, row_sum, arch, softmax_scale)

    @cute.jit
    def add_tile(
        self,
        acc_O: cute.Tensor,
        tile: cute.Tensor,
        row_scale: cute.Tensor,
        is_first: cutlass.Constexpr[bool] = False,
    ) -> None:
        """O = O * row_scale + this tile's P.V, in fp32 registers: O stays exact fp32 across
        tiles (the FP8 product's accumulator keeps only about 22 bits, which over 660 tiles
        loses a visible part of O, as SageAttention's authors note). One FMA an element."""
        if const_expr(is_first):
            acc_O.store(tile.load())
        else:
            out = layout_utils.reshape_acc_to_mn(acc_O)
            new = layout_utils.reshape_acc_to_mn(tile)
            for r in cutlass.range(cute.size(row_scale), unroll_full=True):
                out[r, None].store(out[r, None].load() * row_scale[r] + new[r, None].load())

    @cute.jit
    def scaled_online_softmax(self, acc_S, c: Float32, is_first: cutlass.Constexpr[bool] = False):
        scores = layout_utils.reshape_acc_to_mn(acc_S)
        row_scale = cute.make_fragment_like(self.row_max, Float32)
        c_inv = cute.arch.rcp_approx(c)
        for r in cutlass.range(cute.size(self.row_max), unroll_full=True):
            row = scores[r, None].load()
            if const_expr(is_first):
                raw_max = fa4_utils.fmax_reduce(row, init_val=None, arch=self.arch)
            else:
                raw_max = fa4_utils.fmax_reduce(
                    row, init_val=self.row_max[r] * c_inv + MAGIC, arch=self.arch
                )
            raw_max = cute.arch.warp_reduction_max(raw_max, threads_in_group=4)
            new_max = (raw_max - MAGIC) * c
            old_max = self.row_max[r]
            self.row_max[r] = new_max
            p = cute.math.exp2(row * c - (new_max - FP8_OFFSET + MAGIC * c), fastmath=True)
            if const_expr(is_first):
                row_scale[r] = 1.0
            else:
                row_scale[r] = cute.math.exp2(old_max - new_max, fastmath=True)
            scores[r, None].store(p)
        return row_scale

    @cute.jit
    def add_row_sums(
        self, sums: cute.Tensor, row_scale: cute.Tensor, is_first: cutlass.Constexpr[bool] = False
    ) -> None:
        """Adds a tile's row sums (P times ones: every column, so every thread of a row's quad,
        holds the whole sum) at the running maximum. A quarter each, because `finalize` adds
        the quad's four as it does for sums kept per thread."""
        sums_mn = layout_utils.reshape_acc_to_mn(sums)
        for r in cutlass.range(cute.size(row_scale), unroll_full=True):
            quarter = sums_mn[r, 0] * Float32(0.25)
            if const_expr(is_first):
                self.row_sum[r] = quarter
            else:
                self.row_sum[r] = self.row_sum[r] * row_scale[r] + quarter


def _store_p_as_fp8_operand(tOrP: cute.Tensor, probs: cute.Tensor) -> None:
    """P (the Q.K^T accumulator's registers, ((2 keys, 2 rows, N/8), M, N)) in FP8 into the P.V
    operand (((4 keys), 2 rows, 2 key halves), M, N/32), register for register: operand keys
    4t+i take accumulator keys 2t, 2t+1, 8+2t, 9+2t (and 16 higher), which V's token order
    undoes. Both sides are written with the 4 split as (2, 2)."""
    acc, op = probs.layout, tOrP.layout
    s0, s1, s2 = acc.stride[0]
    src = cute.make_layout(
        (((2, 2), 2, 2), acc.shape[1], (acc.shape[0][2] // 4, acc.shape[2])),
        stride=(((s0, s2), s1, 2 * s2), acc.stride[1], (4 * s2, acc.stride[2])),
    )
    a, b, c = op.stride[0]
    dst = cute.make_layout(
        (((2, 2), 2, 2), op.shape[1], (op.shape[2], 1)),
        stride=(((a, 2 * a), b, c), op.stride[1], (op.stride[2], 0)),
    )
    p = cute.make_tensor(probs.iterator, src).load()
    cute.make_tensor(tOrP.iterator, dst).store(p.to(cutlass.Float8E4M3FN))


def _pv_into_fresh_tile(mma_pv_fn, acc_O: cute.Tensor, B_idx, wg_wait: int) -> cute.Tensor:
    """P.V of one tile into fresh fp32 registers instead of O: FlashAttention-4 hands over its
    product bound to O (a partial of quack's gemm_w_idx); the same product, another
    accumulator."""
    fn = mma_pv_fn
    while fn.func is not quack_sm90.gemm_w_idx:
        fn = fn.func
    tiled_mma, _, tOrP, tOrVt = fn.args
    tile = cute.make_rmem_tensor_like(acc_O, Float32)
    quack_sm90.gemm_w_idx(tiled_mma, tile, tOrP, tOrVt, True, B_idx=B_idx, wg_wait=wg_wait)
    return tile


@cute.jit
def _raw_scores(acc_S: cute.Tensor) -> cute.Tensor:
    """The tile's INT32 scores as floats 1.5 * 2**23 + score, by one integer add each."""
    bits = cute.make_rmem_tensor_like(acc_S, Int32)
    bits.store(acc_S.load() + MAGIC_BITS)
    return cute.recast_tensor(bits, Float32)


def _scores_unused(score, *args, **kwargs):
    """Stands for a score modifier so that FlashAttention-4 routes the scores through
    `apply_score_mod`, which the kernel below replaces; never called."""
    return score


class SageAttentionKernel(flash_fwd_sm90.FlashAttentionForwardSm90):
    """FlashAttention-4's Hopper forward with SageAttention's arithmetic (module docstring).
    Q/K/V types come from the tensors; the output is bf16. Aux tensors: Q and K scales."""

    def __init__(self, head_dim: int):
        super().__init__(
            cutlass.BFloat16,
            head_dim,
            head_dim,
            1,
            is_causal=False,
            is_local=False,
            pack_gqa=False,
            tile_m=TILE_M,
            tile_n=TILE_N,
            num_stages=2,
            num_threads=384,
            Q_in_regs=False,
            intra_wg_overlap=False,  # see the module docstring
            mma_pv_is_rs=True,
            score_mod=_scores_unused,
            mask_mod=None,
            has_aux_tensors=True,
        )

    def _check_type(self, *types):
        """INT8 Q and K, FP8 V, bf16 O: checked by `attention` (`_check_inputs`) instead."""

    def _get_tiled_mma(self):
        k_major = warpgroup.OperandMajorMode.K
        tiled_mma_qk = hopper_helpers.make_trivial_tiled_mma(
            cutlass.Int8,
            cutlass.Int8,
            k_major,
            k_major,
            Int32,
            atom_layout_mnk=(self.tile_m // 64, 1, 1),
            tiler_mn=(64, self.tile_n),
        )
        return tiled_mma_qk, self._p_times(self.tile_hdimv)

    def _p_times(self, columns: int):
        """The FP8 product of P (in registers) with a `columns`-wide matrix in shared memory,
        accumulated in fp32: P.V, and P times ones for the row sums."""
        k_major = warpgroup.OperandMajorMode.K
        return hopper_helpers.make_trivial_tiled_mma(
            cutlass.Float8E4M3FN,
            cutlass.Float8E4M3FN,
            k_major,
            k_major,
            Float32,
            atom_layout_mnk=(self.tile_m // 64, 1, 1),
            tiler_mn=(64, columns),
            a_source=warpgroup.OperandSource.RMEM,
        )

    def _get_shared_storage_cls(self):
        # the epilogue stages O (bf16) where Q (int8) was: that buffer holds the larger
        q_bytes = max(cute.cosize(self.sQ_layout), cute.cosize(self.sO_layout) * 2)
        sQ_struct = cute.struct.Align[cute.struct.MemRange[cutlass.Int8, q_bytes], 1024]
        sK_struct = cute.struct.Align[
            cute.struct.MemRange[cutlass.Int8, cute.cosize(self.sK_layout)], 1024
        ]
        sV_struct = cute.struct.Align[
            cute.struct.MemRange[cutlass.Float8E4M3FN, cute.cosize(self.sV_layout)], 1024
        ]
        # FlashAttention-4's P buffer holds the ones matrix (P itself stays in registers), kept
        # like V (keys contiguous) as (tile_n, ONES); `mma` takes it from FlashAttention-4
        self.sP_layout = _HopperHelpers.make_smem_layout(
            cutlass.Float8E4M3FN, LayoutEnum.ROW_MAJOR, (self.tile_n, ONES)
        )
        sP_struct = cute.struct.Align[
            cute.struct.MemRange[cutlass.Float8E4M3FN, cute.cosize(self.sP_layout)], 1024
        ]
        mbar_Q = cute.struct.MemRange[cutlass.Int64, 2]
        mbar_K = cute.struct.MemRange[cutlass.Int64, self.num_stages * 2]
        mbar_V = cute.struct.MemRange[cutlass.Int64, self.num_stages * 2]

        @cute.struct
        class SharedStorage:
            mbar_ptr_Q: mbar_Q
            mbar_ptr_K: mbar_K
            mbar_ptr_V: mbar_V
            sV: sV_struct
            sQ: sQ_struct
            sK: sK_struct
            sP: sP_struct  # the ones matrix

        return SharedStorage

    def mma(self, *args, **kwargs):
        """FlashAttention-4's consumer loop, tracing with `_ScaledSoftmax` as its softmax (it
        builds the object from its module's `Softmax` name). Before it: the ones matrix filled
        and the row-sum product set up (`_row_sums`); FlashAttention-4 gets no P buffer."""
        args = list(args)
        ones, tidx = args[MMA_ARG_SP], args[MMA_ARG_TIDX]
        args[MMA_ARG_SP] = None
        ones.fill(1.0)  # 1 KB by every consumer thread: the same bytes, so no barrier
        cute.arch.fence_view_async_shared()  # visible to the tensor cores' reads
        self._row_sums = self._row_sum_product(ones, tidx)
        saved = flash_fwd_sm90.Softmax
        flash_fwd_sm90.Softmax = _ScaledSoftmax
        try:
            return super().mma(*args, **kwargs)
        finally:
            flash_fwd_sm90.Softmax = saved

    def _row_sum_product(self, ones: cute.Tensor, tidx):
        """P (the P.V operand's registers) times the ones matrix: an m64n8 FP8 product of this
        thread's warpgroup, its B operand, and its accumulator's shape."""
        tiled_mma = self._p_times(ONES)
        warp_group = cute.arch.make_warp_uniform(tidx // self.num_threads_per_warp_group)
        thread_layout = cute.make_layout(self.num_wg_mma, stride=self.num_threads_per_warp_group)
        wg_mma = tiled_mma.get_slice(thread_layout(warp_group))
        operand = wg_mma.make_fragment_B(wg_mma.partition_B(layout_utils.transpose_view(ones)))
        return tiled_mma, operand, wg_mma.partition_shape_C((self.tile_m, ONES))

    @cute.jit
    def apply_score_mod(
        self,
        thr_mma_qk,
        batch_idx,
        head_idx,
        m_block,
        acc_S,
        n_block,
        softmax_scale,
        seqlen,
        aux_data: AuxData = _NO_AUX,
        fastdiv_mods=None,
    ):
        """The tile's dequantisation scale in log2 units: a thread's rows lie in its warp's 16
        (one Q scale), the tile's keys in one K group (one K scale). Called before the tile's
        Q.K^T is waited for, so that the two loads are in flight meanwhile (`acc_S` unused)."""
        q_scale, k_scale = aux_data.tensors[0], aux_data.tensors[1]
        warp = cute.arch.make_warp_uniform(cute.arch.warp_idx()) - CONSUMER_WARP0
        q_group = m_block * (self.tile_m // Q_GROUP) + warp
        c = q_scale[batch_idx, head_idx, q_group] * k_scale[batch_idx, head_idx, n_block]
        return c * softmax_scale * fa4_utils.LOG2_E

    @cute.jit
    def mma_one_n_block(
        self,
        smem_pipe_read,
        n_block,
        mma_qk_fn,
        mma_pv_fn,
        pipeline_k,
        pipeline_v,
        acc_O,
        tOrP,
        smem_copy_params,
        softmax,
        seqlen,
        scores_scale=None,
        score_mod_fn=None,
        mask_fn=None,
        is_first_n_block: cutlass.Constexpr = False,
        check_inf: cutlass.Constexpr = True,
    ):
        """One tile (whole tiles: no masks): its Q.K^T, softmax, P into the P.V operand, P.V
        into fresh registers and P's row sums, both added at the running maximum. The other
        consumer warpgroup's products run during this one's softmax (FlashAttention-4's
        scheduler barriers)."""
        c = score_mod_fn(None, n_block=n_block, seqlen=seqlen)
        pipeline_k.consumer_wait(smem_pipe_read, pipeline_k.consumer_try_wait(smem_pipe_read))
        acc_S = mma_qk_fn(B_idx=smem_pipe_read.index, wg_wait=-1)
        self.warp_scheduler_barrier_arrive()
        warpgroup.wait_group(0)
        pipeline_k.consumer_release(smem_pipe_read)
        scores = _raw_scores(acc_S)
        row_scale = softmax.scaled_online_softmax(scores, c, is_first=is_first_n_block)
        _store_p_as_fp8_operand(tOrP, scores)
        pipeline_v.consumer_wait(smem_pipe_read, pipeline_v.consumer_try_wait(smem_pipe_read))
        self.warp_scheduler_barrier_sync()
        tile = _pv_into_fresh_tile(mma_pv_fn, acc_O, smem_pipe_read.index, -1)
        sum_mma, ones, sums_shape = self._row_sums
        sums = cute.make_rmem_tensor(sums_shape, Float32)
        quack_sm90.gemm(sum_mma, sums, tOrP, ones, zero_init=True, wg_wait=0)
        pipeline_v.consumer_release(smem_pipe_read)
        softmax.add_tile(acc_O, tile, row_scale, is_first=is_first_n_block)
        softmax.add_row_sums(sums, row_scale, is_first=is_first_n_block)
        smem_pipe_read.advance()
        return smem_pipe_read


_compiled: dict[int, object] = {}


def _check_inputs(q8, q_scale, k8, k_scale, v8) -> None:
    """The formats the kernel reads: a wrong one would give wrong numbers, not an error."""
    batch, tokens, heads, dim = q8.shape
    keys = k8.shape[1]
    expected = {
        "q": (q8, torch.int8, (batch, tokens, heads, dim)),
        "k": (k8, torch.int8, (batch, keys, heads, dim)),
        "v": (v8, torch.float8_e4m3fn, (batch, heads, dim, keys)),
        "q_scale": (q_scale, torch.float32, (batch, heads, tokens // Q_GROUP)),
        "k_scale": (k_scale, torch.float32, (batch, heads, keys // TILE_N)),
    }
    for name, (tensor, dtype, shape) in expected.items():
        if tensor.dtype != dtype or tuple(tensor.shape) != shape or not tensor.is_contiguous():
            raise ValueError(
                f"sage_fa4: {name} must be contiguous {dtype} {shape}, not "
                f"{tensor.dtype} {tuple(tensor.shape)}"
            )
    if dim != 128 or tokens % TILE_M or keys % TILE_N:
        raise ValueError(
            f"sage_fa4 takes 128 channels a head and token counts that divide by 128, "
            f"not {dim} channels, {tokens} queries and {keys} keys"
        )


def attention(
    q8: torch.Tensor,
    q_scale: torch.Tensor,
    k8: torch.Tensor,
    k_scale: torch.Tensor,
    v8: torch.Tensor,
) -> torch.Tensor:
    """softmax(Q.K^T / sqrt(D)).V of `sage_hopper`'s quantised inputs (Q/K int8 (B, L, H, D),
    scales (B, H, L/16) and (B, H, L/128), V e4m3 (B, H, D, L) in V_ORDER), as bf16
    (B, L, H, D) before V's per-channel scale. L must divide by 128."""
    _check_inputs(q8, q_scale, k8, k_scale, v8)
    dim = q8.shape[-1]
    out = torch.empty(q8.shape, dtype=torch.bfloat16, device=q8.device)
    v_tokens_last = v8.permute(0, 3, 1, 2)  # (B, L, H, D) with the tokens contiguous
    scale = dim**-0.5
    if dim not in _compiled:
        stream = cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)
        tensors = (
            to_cute_tensor(q8),
            to_cute_tensor(k8),
            to_cute_tensor(v_tokens_last, leading_dim=1),
            to_cute_tensor(out),
        )
        aux = AuxData([to_cute_aux_tensor(q_scale), to_cute_aux_tensor(k_scale)], None)
        saved = flash_fwd_sm90.sm90_utils
        flash_fwd_sm90.sm90_utils = _HopperHelpers()  # read while the kernel traces, only
        try:
            # FlashAttention-4's launcher arguments: no LSE, varlen, paging, window, sink, sparsity
            _compiled[dim] = cute.compile(
                SageAttentionKernel(dim),
                *tensors,
                None,
                scale,
                *([None] * 9),
                aux,
                None,
                None,
                stream,
                options="--enable-tvm-ffi",
            )
        finally:
            flash_fwd_sm90.sm90_utils = saved
    _compiled[dim](
        q8,
        k8,
        v_tokens_last.view(torch.uint8),
        out,
        None,
        scale,
        *([None] * 9),
        AuxData([q_scale, k_scale], None),
        None,
        None,
    )
    return out
