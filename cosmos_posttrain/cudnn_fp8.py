"""FP8 self-attention through cuDNN's fused kernel (sdpa_fp8), for inference on Hopper.

cuDNN's FP8 attention takes e4m3 Q, K and V with one descale factor each, rounds the softmax
probabilities to FP8 for the P.V product, and on Hopper writes its output in FP8 too (16-bit
output is a Blackwell feature). On an H100 at 84,480 tokens it runs a batch-2 call in 126 ms
against 137 ms for SageAttention 2's INT8/FP8 kernel, but twice as far from exact attention
(docs/BENCHMARKS.md), so it is a choice that trades accuracy for speed.

The quantisation is written here as tensor expressions, so that torch.compile fuses it into the
block around the kernel, which is an opaque custom op:

- Q: one scale for the tensor, its largest magnitude mapped to FP8's 448;
- K: minus its mean over the tokens first (softmax does not change when every key loses the same
  vector), then one scale;
- V: minus its mean over the tokens, per channel, then one scale per channel onto half of
  FP8's range. Every row of P sums to 1, so O = P.V' * scale + mean: the mean and the scales
  come back after the kernel, which sees V with descale 1. Its FP8 output is a weighted mean
  of V' rows, within 224, plus what rounding P to FP8 adds to the weights (at most 1/16 of
  them), so it stays inside FP8's 448 with no scale of its own; a power of two costs FP8 no
  precision.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, NamedTuple

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
V_MAX = FP8_MAX / 2  # V's channels go onto this, so the output cannot reach FP8_MAX (see above)
OP_NAME = "cosmos_posttrain::cudnn_fp8_sdpa"


class Fp8Inputs(NamedTuple):
    q: torch.Tensor  # float8_e4m3fn (B, L, H, D), contiguous
    q_descale: torch.Tensor  # fp32 (1, 1, 1, 1)
    k: torch.Tensor  # float8_e4m3fn (B, S, H, D), contiguous, smoothed
    k_descale: torch.Tensor  # fp32 (1, 1, 1, 1)
    v: torch.Tensor  # float8_e4m3fn (B, S, H, D), contiguous, smoothed and scaled per channel
    v_scale: torch.Tensor  # fp32 (B, 1, H, D): what the kernel's output is multiplied by
    v_mean: torch.Tensor  # fp32 (B, 1, H, D): what is added after that


def _per_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = x.abs().amax().clamp_min(1e-7)
    return (x * (FP8_MAX / amax)).to(FP8), (amax / FP8_MAX).reshape(1, 1, 1, 1)


def quantise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Fp8Inputs:
    """The kernel's inputs from (B, L, H, D) tensors of any float dtype."""
    q8, q_descale = _per_tensor(q.float())
    k32 = k.float()
    k8, k_descale = _per_tensor(k32 - k32.mean(dim=1, keepdim=True))
    v32 = v.float()
    v_mean = v32.mean(dim=1, keepdim=True)
    smoothed = v32 - v_mean
    v_scale = smoothed.abs().amax(dim=1, keepdim=True).clamp_min(1e-7) / V_MAX
    v8 = (smoothed / v_scale).to(FP8)
    return Fp8Inputs(
        q8.contiguous(), q_descale, k8.contiguous(), k_descale, v8.contiguous(), v_scale, v_mean
    )


class _Uid(enum.IntEnum):
    """The tensors of the cuDNN graph, by the numbers the variant pack names them with."""

    Q, K, V, OUT, Q_DESCALE, K_DESCALE, V_DESCALE, S_DESCALE, S_SCALE, O_SCALE, S_AMAX, O_AMAX = (
        range(12)
    )


class _Graph(NamedTuple):
    graph: Any  # cudnn.pygraph
    handle: Any  # cudnn.Handle
    workspace_bytes: int
    # the scales that never change, and the two amax outputs the kernel writes and nobody reads
    fixed: dict[int, torch.Tensor]


@functools.cache
def _handle(device_index: int) -> Any:
    import cudnn

    with torch.cuda.device(device_index):
        return cudnn.create_handle()


@functools.cache
def _graph(
    batch: int, heads: int, q_len: int, kv_len: int, channels: int, scale: float, device: int
) -> _Graph:
    """cuDNN's FP8 attention for these sizes, built once (about a second) and kept."""
    with torch.cuda.device(device):
        return _build(batch, heads, q_len, kv_len, channels, scale, device)


def _build(
    batch: int, heads: int, q_len: int, kv_len: int, channels: int, scale: float, device: int
) -> _Graph:
    import cudnn

    handle = _handle(device)
    fp8, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(
        io_data_type=fp8, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle
    )

    def bshd(length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(B, H, L, D) dims and their strides over (B, L, H, D) memory."""
        dims = (batch, heads, length, channels)
        return dims, (length * heads * channels, channels, heads * channels, 1)

    def fp8_input(uid: int, length: int) -> Any:
        dims, stride = bshd(length)
        return graph.tensor(uid=uid, dim=dims, stride=stride, data_type=fp8)

    def scalar(uid: int) -> Any:
        return graph.tensor(uid=uid, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=fp32)

    o, _, s_amax, o_amax = graph.sdpa_fp8(
        q=fp8_input(_Uid.Q, q_len),
        k=fp8_input(_Uid.K, kv_len),
        v=fp8_input(_Uid.V, kv_len),
        descale_q=scalar(_Uid.Q_DESCALE),
        descale_k=scalar(_Uid.K_DESCALE),
        descale_v=scalar(_Uid.V_DESCALE),
        descale_s=scalar(_Uid.S_DESCALE),
        scale_s=scalar(_Uid.S_SCALE),
        scale_o=scalar(_Uid.O_SCALE),
        generate_stats=False,
        attn_scale=scale,
        use_causal_mask=False,
    )
    dims, stride = bshd(q_len)
    o.set_uid(_Uid.OUT).set_output(True).set_data_type(fp8).set_dim(dims).set_stride(stride)
    for uid, amax in ((_Uid.S_AMAX, s_amax), (_Uid.O_AMAX, o_amax)):
        amax.set_uid(uid).set_output(True).set_data_type(fp32)
        amax.set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1))
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()

    def constant(value: float) -> torch.Tensor:
        return torch.full((1, 1, 1, 1), value, device=f"cuda:{device}")

    fixed = {
        _Uid.V_DESCALE: constant(1.0),  # V's scales are applied after the kernel
        _Uid.S_SCALE: constant(FP8_MAX),  # the probabilities, at most 1, onto FP8's range
        _Uid.S_DESCALE: constant(1 / FP8_MAX),
        _Uid.O_SCALE: constant(1.0),
        _Uid.S_AMAX: constant(0.0),  # written by the kernel, read by nobody
        _Uid.O_AMAX: constant(0.0),
    }
    return _Graph(graph, handle, graph.get_workspace_size(), fixed)


@torch.library.custom_op(OP_NAME, mutates_args=(), device_types="cuda")
def fp8_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_descale: torch.Tensor,
    k_descale: torch.Tensor, scale: float,
) -> torch.Tensor:  # fmt: skip
    """FP8 softmax(Q.Kᵀ * scale).V of contiguous (B, L, H, D) FP8 tensors, V with descale 1;
    the output is FP8 (B, L, H, D)."""
    import cudnn

    batch, q_len, heads, channels = q.shape
    built = _graph(batch, heads, q_len, k.shape[1], channels, scale, q.device.index)
    out = torch.empty(q.shape, dtype=FP8, device=q.device)
    pack = {
        **built.fixed,
        _Uid.Q: q, _Uid.K: k, _Uid.V: v, _Uid.OUT: out,
        _Uid.Q_DESCALE: q_descale, _Uid.K_DESCALE: k_descale,
    }  # fmt: skip
    workspace = torch.empty(built.workspace_bytes, dtype=torch.uint8, device=q.device)
    with torch.cuda.device(q.device):
        stream = torch.cuda.current_stream(q.device).cuda_stream
        cudnn.set_stream(handle=built.handle, stream=stream)
        built.graph.execute({int(uid): t for uid, t in pack.items()}, workspace, built.handle)
    return out


@fp8_sdpa.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_descale: torch.Tensor,
    k_descale: torch.Tensor, scale: float,
) -> torch.Tensor:  # fmt: skip
    return q.new_empty(q.shape)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax(Q.Kᵀ/√D).V of (B, L, H, D) tensors through cuDNN's FP8 kernel, in q's dtype."""
    inputs = quantise(q, k, v)
    out = torch.ops.cosmos_posttrain.cudnn_fp8_sdpa(
        inputs.q, inputs.k, inputs.v, inputs.q_descale, inputs.k_descale, q.shape[-1] ** -0.5
    )
    return (out.float() * inputs.v_scale + inputs.v_mean).to(q.dtype)


def problem(device: torch.device | str) -> str | None:
    """Why the kernel cannot run on `device`, or None when it can: a Hopper GPU, the
    nvidia-cudnn-frontend package, and a cuDNN that builds the FP8 graph (tried on a small
    shape here, so that a missing piece shows when the processors are set up)."""
    device = torch.device(device)
    if device.type != "cuda" or torch.cuda.get_device_capability(device) != (9, 0):
        return f"runs on NVIDIA Hopper GPUs (compute capability 9.0), not {device}"
    try:
        import cudnn
    except Exception as exc:  # not installed, or an install that does not import
        return f"needs the nvidia-cudnn-frontend package: {type(exc).__name__}: {exc}"
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        _graph(1, 1, 128, 128, 128, 128**-0.5, index)
    except Exception as exc:  # the backend declines the graph: too old a cuDNN
        return f"cuDNN {cudnn.backend_version_string()} cannot build it: {exc}"[:500]
    return None
