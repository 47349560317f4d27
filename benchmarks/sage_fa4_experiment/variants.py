"""Experiment: SageAttention's arithmetic (INT8 Q.K^T with per-16-token Q scales and per-128-key K
scales, FP8 e4m3 P.V, P scaled onto FP8's range) inside FlashAttention-4's Hopper forward kernel
(warp-specialised: a TMA producer warpgroup, two consumer warpgroups taking turns, the next
tile's Q.K^T issued before this tile's softmax).

It takes the inputs `cosmos_posttrain.sage_hopper` already makes for SageAttention's kernel: Q and
K INT8 (B, L, H, D), their scales (B, H, L/16) and (B, H, L/128), V FP8 (B, H, D, L) with the
tokens of each group of 16 in V_ORDER. That order is exactly the one that lets the Q.K^T
accumulator's registers be used as the FP8 A operand of P.V without moving bytes between
threads. V's per-channel scale is applied by the caller.
"""

import math
import os
from dataclasses import dataclass

import cutlass
import cutlass.cute as cute
import cutlass.utils.hopper_helpers as sm90_utils_basic
import torch
from cutlass import Float32, Int32, const_expr
from cutlass.cute.nvgpu import warpgroup
from cutlass.utils import LayoutEnum
from flash_attn.cute import flash_fwd_sm90 as fwd90
from flash_attn.cute import utils as fa_utils
from flash_attn.cute.cute_dsl_utils import to_cute_aux_tensor, to_cute_tensor
from flash_attn.cute.softmax import Softmax
from flash_attn.cute.utils import AuxData
from quack import layout_utils
from quack import sm90_utils as quack_sm90

FP8_OFFSET = math.log2(448.0)  # P = exp2(s - max + offset) lies in [0, 448]


class _Sm90Utils:
    """quack.sm90_utils as FA4's Hopper module sees it, with two 8-bit cases it lacks: V in FP8
    stored keys-contiguous (the only B layout 8-bit wgmma takes), and an INT32 accumulator for
    INT8 Q.K^T. Everything else is quack's."""

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


fwd90.sm90_utils = _Sm90Utils()


@dataclass
class OffsetSoftmax(Softmax):
    """Online softmax whose probabilities are scaled by 448 (2**FP8_OFFSET) so that FP8 keeps
    their precision, as SageAttention does; the row sums carry the same factor."""

    @staticmethod
    def create(scale_log2, num_rows, arch=80, softmax_scale=None):
        return OffsetSoftmax(
            scale_log2,
            num_rows,
            cute.make_rmem_tensor(num_rows, Float32),
            cute.make_rmem_tensor(num_rows, Float32),
            arch,
            softmax_scale,
        )

    @cute.jit
    def online_softmax(
        self,
        acc_S,
        is_first: cutlass.Constexpr[bool] = False,
        check_inf: cutlass.Constexpr[bool] = True,
    ):
        scores = layout_utils.reshape_acc_to_mn(acc_S)
        row_scale = cute.make_fragment_like(self.row_max, Float32)
        for r in cutlass.range(cute.size(self.row_max), unroll_full=True):
            row = scores[r, None].load()
            if const_expr(is_first):
                new_max = fa_utils.fmax_reduce(row, init_val=None, arch=self.arch)
            else:
                new_max = fa_utils.fmax_reduce(row, init_val=self.row_max[r], arch=self.arch)
            new_max = cute.arch.warp_reduction_max(new_max, threads_in_group=4)
            old_max = self.row_max[r]
            self.row_max[r] = new_max
            bias = new_max * self.scale_log2 - FP8_OFFSET
            p = cute.math.exp2(row * self.scale_log2 - bias, fastmath=True)
            if const_expr(is_first):
                row_scale[r] = 1.0
                self.row_sum[r] = fa_utils.fadd_reduce(p, init_val=None, arch=self.arch)
            else:
                row_scale[r] = cute.math.exp2((old_max - new_max) * self.scale_log2, fastmath=True)
                self.row_sum[r] = fa_utils.fadd_reduce(
                    p, init_val=self.row_sum[r] * row_scale[r], arch=self.arch
                )
            scores[r, None].store(p)
        return row_scale


@dataclass
class FoldedOffsetSoftmax(OffsetSoftmax):
    """OffsetSoftmax on raw (integer-valued) scores with the tile's dequantisation scale `c`
    (already in log2 units) folded into the exponent's FMA; row maxima are kept in log2 units.
    With `magic` the raw scores arrive as floats 1.5 * 2**23 + s (an integer add on the INT32
    score instead of a conversion); that constant is taken out in the same FMA."""

    magic: cutlass.Constexpr[float] = 0.0

    @staticmethod
    def create(scale_log2, num_rows, arch=80, softmax_scale=None):
        return FoldedOffsetSoftmax(
            scale_log2,
            num_rows,
            cute.make_rmem_tensor(num_rows, Float32),
            cute.make_rmem_tensor(num_rows, Float32),
            arch,
            softmax_scale,
            FoldedOffsetSoftmax.magic_default,
        )

    @cute.jit
    def online_softmax_scaled(self, acc_S, c: Float32, is_first: cutlass.Constexpr[bool] = False):
        scores = layout_utils.reshape_acc_to_mn(acc_S)
        row_scale = cute.make_fragment_like(self.row_max, Float32)
        c_inv = cute.arch.rcp_approx(c)
        for r in cutlass.range(cute.size(self.row_max), unroll_full=True):
            row = scores[r, None].load()
            if const_expr(is_first):
                raw_max = fa_utils.fmax_reduce(row, init_val=None, arch=self.arch)
            else:
                raw_max = fa_utils.fmax_reduce(
                    row, init_val=self.row_max[r] * c_inv + self.magic, arch=self.arch
                )
            raw_max = cute.arch.warp_reduction_max(raw_max, threads_in_group=4)
            new_max = (raw_max - self.magic) * c
            old_max = self.row_max[r]
            self.row_max[r] = new_max
            bias = new_max - FP8_OFFSET + self.magic * c
            p = cute.math.exp2(row * c - bias, fastmath=True)
            if const_expr(is_first):
                row_scale[r] = 1.0
                self.row_sum[r] = fa_utils.fadd_reduce(p, init_val=None, arch=self.arch)
            else:
                row_scale[r] = cute.math.exp2(old_max - new_max, fastmath=True)
                self.row_sum[r] = fa_utils.fadd_reduce(
                    p, init_val=self.row_sum[r] * row_scale[r], arch=self.arch
                )
            scores[r, None].store(p)
        return row_scale


FoldedOffsetSoftmax.magic_default = 0.0
MAGIC_BITS = 0x4B400000  # the bits of 1.5 * 2**23: adding an integer below 2**22 adds it exactly
MAGIC = 12582912.0


def acc_as_fp8_operand(acc: cute.Tensor) -> cute.Tensor:
    """The Q.K^T accumulator ((2, 2, N/8), M, N) viewed as the FP8 A operand of P.V
    (((4 keys), 2 rows, 2 key halves), M, (N/32, N)): the keys a thread holds at accumulator
    columns 2t, 2t+1, 8+2t, 9+2t become operand positions 4t..4t+3 (and 16 higher), which V's
    token order undoes."""
    lay = acc.layout
    s0, s1, s2 = lay.stride[0]
    view = cute.make_layout(
        (((2, 2), 2, 2), lay.shape[1], (lay.shape[0][2] // 4, lay.shape[2])),
        stride=(((s0, s2), s1, 2 * s2), lay.stride[1], (4 * s2, lay.stride[2])),
    )
    return cute.make_tensor(acc.iterator, view)


def store_fp8_operand(tOrP: cute.Tensor, scores: cute.Tensor) -> None:
    """P in FP8 into the P.V operand registers, in the order `acc_as_fp8_operand` gives."""
    src = acc_as_fp8_operand(scores)
    dst = tOrP
    if const_expr(cute.rank(tOrP.shape[0]) == 3 and tOrP.shape[0][0] == 4):
        lay = tOrP.layout  # ((4 keys, 2 rows, 2 key halves), M, K): split the 4 as (2, 2)
        a, b, c = lay.stride[0]
        dst = cute.make_tensor(
            tOrP.iterator,
            cute.make_layout(
                (((2, 2), 2, 2), lay.shape[1], (lay.shape[2], 1)),
                stride=(((a, 2 * a), b, c), lay.stride[1], (lay.stride[2], 0)),
            ),
        )
    if const_expr(os.environ.get("I8_DEBUG") == "1"):
        print("tOrP", tOrP.layout, "dst", dst.layout, "src", src.layout)
    dst.store(src.load().to(cutlass.Float8E4M3FN))


def _unused_score_mod(score, *args, **kwargs):  # never traced: apply_score_mod is overridden
    return score


class SageAttentionSm90(fwd90.FlashAttentionForwardSm90):
    """FA4's Hopper forward with INT8 Q.K^T and FP8 P.V (see the module docstring)."""

    def __init__(
        self,
        head_dim: int = 128,
        tile_m: int = 128,
        tile_n: int = 128,
        num_stages: int = 2,
        intra_wg_overlap: bool = True,
        fold: bool = False,
        magic: bool = False,
        v_scale_in_kernel: bool = False,
    ):
        self.fold = fold or magic
        self.magic = magic
        self.v_scale_in_kernel = v_scale_in_kernel
        super().__init__(
            cutlass.BFloat16,  # the output's type; Q/K/V types come from the tensors
            head_dim,
            head_dim,
            1,
            is_causal=False,
            is_local=False,
            pack_gqa=False,
            tile_m=tile_m,
            tile_n=tile_n,
            num_stages=num_stages,
            num_threads=384,
            Q_in_regs=False,
            intra_wg_overlap=intra_wg_overlap,
            mma_pv_is_rs=True,
            score_mod=_unused_score_mod,
            mask_mod=None,
            has_aux_tensors=True,
        )

    def _check_type(self, *types):
        pass

    def _get_tiled_mma(self):
        k_major = warpgroup.OperandMajorMode.K
        tiled_mma_qk = sm90_utils_basic.make_trivial_tiled_mma(
            cutlass.Int8,
            cutlass.Int8,
            k_major,
            k_major,
            Int32,
            atom_layout_mnk=(self.tile_m // 64, 1, 1),
            tiler_mn=(64, self.tile_n),
        )
        tiled_mma_pv = sm90_utils_basic.make_trivial_tiled_mma(
            cutlass.Float8E4M3FN,
            cutlass.Float8E4M3FN,
            k_major,
            k_major,
            Float32,
            atom_layout_mnk=(self.tile_m // 64, 1, 1),
            tiler_mn=(64, self.tile_hdimv),
            a_source=warpgroup.OperandSource.RMEM,
        )
        return tiled_mma_qk, tiled_mma_pv

    def _get_shared_storage_cls(self):
        # O (bf16) is staged where Q (int8) was, so that buffer holds the larger of the two
        q_bytes = max(cute.cosize(self.sQ_layout), cute.cosize(self.sO_layout) * 2)
        sQ_struct = cute.struct.Align[cute.struct.MemRange[cutlass.Int8, q_bytes], 1024]
        sK_struct = cute.struct.Align[
            cute.struct.MemRange[cutlass.Int8, cute.cosize(self.sK_layout)], 1024
        ]
        sV_struct = cute.struct.Align[
            cute.struct.MemRange[cutlass.Float8E4M3FN, cute.cosize(self.sV_layout)], 1024
        ]
        sP_struct = cute.struct.Align[cute.struct.MemRange[cutlass.Float8E4M3FN, 0], 1024]
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
            sP: sP_struct

        return SharedStorage

    def mma(self, *args, **kwargs):
        # the softmax object is made inside the parent's mma from its module's `Softmax`
        saved = fwd90.Softmax
        fwd90.Softmax = FoldedOffsetSoftmax if self.fold else OffsetSoftmax
        FoldedOffsetSoftmax.magic_default = MAGIC if self.magic else 0.0
        aux_data = kwargs["aux_data"] if "aux_data" in kwargs else args[23]
        self._v_scale = aux_data.tensors[2]
        try:
            return super().mma(*args, **kwargs)
        finally:
            fwd90.Softmax = saved

    @cute.jit
    def epilogue(
        self,
        acc_O,
        lse,
        mO,
        mLSE,
        sO,
        seqlen,
        gmem_tiled_copy_O,
        tma_atom_O,
        tiled_mma,
        tidx,
        m_block,
        head_idx,
        batch_idx,
    ):
        """V's per-channel scale on the normalised output, then FA4's epilogue."""
        if const_expr(self.v_scale_in_kernel):
            coords = tiled_mma.get_slice(tidx).partition_C(
                cute.make_identity_tensor((self.tile_m, self.tile_hdimv))
            )
            for i in cutlass.range_constexpr(cute.size(acc_O)):
                acc_O[i] = acc_O[i] * self._v_scale[batch_idx, head_idx, coords[i][1]]
        fwd90.FlashAttentionForwardSm90.epilogue(
            self,
            acc_O,
            lse,
            mO,
            mLSE,
            sO,
            seqlen,
            gmem_tiled_copy_O,
            tma_atom_O,
            tiled_mma,
            tidx,
            m_block,
            head_idx,
            batch_idx,
        )

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
        aux_data: AuxData = AuxData(),  # noqa: B008 (FlashAttention-4's own signature)
        fastdiv_mods=None,
    ):
        """INT32 scores to fp32, dequantised: a thread's rows lie in its warp's 16 (one Q
        scale), a tile's keys in one K group (one K scale)."""
        q_scale, k_scale = aux_data.tensors[0], aux_data.tensors[1]
        warp = cute.arch.make_warp_uniform(cute.arch.warp_idx()) - 4  # consumer warps
        q_group = m_block * (self.tile_m // 16) + warp
        scale = q_scale[batch_idx, head_idx, q_group] * k_scale[batch_idx, head_idx, n_block]
        scale = scale * softmax_scale
        scores = cute.make_rmem_tensor_like(acc_S, Float32)
        if const_expr(self.magic):
            bits = cute.make_rmem_tensor_like(acc_S, Int32)
            bits.store(acc_S.load() + MAGIC_BITS)
            return cute.recast_tensor(bits, Float32), scale * fa_utils.LOG2_E
        if const_expr(self.fold):
            scores.store(acc_S.load().to(Float32))
            return scores, scale * fa_utils.LOG2_E
        scores.store(acc_S.load().to(Float32) * scale)
        return scores, None

    @cute.jit
    def first_half_block_overlap(
        self,
        n_block,
        mma_qk_fn,
        kv_consumer_state,
        pipeline_k,
        tOrP,
        smem_copy_params,
        softmax,
        seqlen,
        scores_scale=None,
        acc_O=None,
        mask_fn=None,
        score_mod_fn=None,
        is_first_block=False,
    ):
        pipeline_k.consumer_wait(kv_consumer_state, pipeline_k.consumer_try_wait(kv_consumer_state))
        acc_S = mma_qk_fn(B_idx=kv_consumer_state.index, wg_wait=0)
        pipeline_k.consumer_release(kv_consumer_state)
        scores, c = score_mod_fn(acc_S, n_block=n_block, seqlen=seqlen)
        if const_expr(self.fold):
            softmax.online_softmax_scaled(scores, c, is_first=is_first_block)
        else:
            softmax.online_softmax(scores, is_first=is_first_block)
        store_fp8_operand(tOrP, scores)
        return kv_consumer_state

    @cute.jit
    def mma_one_n_block_intrawg_overlap(
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
        check_inf: cutlass.Constexpr = True,
    ):
        smem_pipe_read_v = smem_pipe_read.clone()
        smem_pipe_read.advance()
        pipeline_k.consumer_wait(smem_pipe_read, pipeline_k.consumer_try_wait(smem_pipe_read))
        self.warp_scheduler_barrier_sync()
        acc_S = mma_qk_fn(B_idx=smem_pipe_read.index, wg_wait=-1)  # this tile's Q.K^T
        pipeline_v.consumer_wait(smem_pipe_read_v, pipeline_v.consumer_try_wait(smem_pipe_read_v))
        mma_pv_fn(B_idx=smem_pipe_read_v.index, wg_wait=-1)  # the previous tile's P.V
        self.warp_scheduler_barrier_arrive()
        warpgroup.wait_group(1)
        pipeline_k.consumer_release(smem_pipe_read)
        scores, c = score_mod_fn(acc_S, n_block=n_block, seqlen=seqlen)
        if const_expr(self.fold):
            row_scale = softmax.online_softmax_scaled(scores, c)
        else:
            row_scale = softmax.online_softmax(scores)
        warpgroup.wait_group(0)
        pipeline_v.consumer_release(smem_pipe_read_v)
        store_fp8_operand(tOrP, scores)
        softmax.rescale_O(acc_O, row_scale)
        return smem_pipe_read


_COMPILED: dict = {}


def sage_fa4(
    q8: torch.Tensor,
    q_scale: torch.Tensor,
    k8: torch.Tensor,
    k_scale: torch.Tensor,
    v8: torch.Tensor,
    v_scale: torch.Tensor,
    **config,
) -> torch.Tensor:
    """softmax(Q.K^T/sqrt(D)).V of sage_hopper's quantised inputs; (B, L, H, D) bf16."""
    batch, tokens, heads, dim = q8.shape
    assert tokens % 128 == 0 and k8.shape[1] % 128 == 0
    out = torch.empty(q8.shape, dtype=torch.bfloat16, device=q8.device)
    v_nhd = v8.permute(0, 3, 1, 2)  # (B, L, H, D) view, tokens contiguous
    tensors = [
        to_cute_tensor(q8),
        to_cute_tensor(k8),
        to_cute_tensor(v_nhd, leading_dim=1),
        to_cute_tensor(out),
    ]
    aux = [to_cute_aux_tensor(t) for t in (q_scale, k_scale, v_scale)]
    key = (dim, tuple(sorted(config.items())))
    if key not in _COMPILED:
        kernel = SageAttentionSm90(head_dim=dim, **config)
        stream = cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)
        _COMPILED[key] = cute.compile(
            kernel,
            *tensors,
            None,
            dim**-0.5,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            AuxData(aux, None),
            None,
            None,
            stream,
            options="--enable-tvm-ffi",
        )
    _COMPILED[key](
        q8,
        k8,
        v_nhd.view(torch.uint8),
        out,
        None,
        dim**-0.5,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        AuxData([q_scale, k_scale, v_scale], None),
        None,
        None,
    )
    if config.get("v_scale_in_kernel"):
        return out
    return out * v_scale.to(torch.bfloat16)[:, None]
