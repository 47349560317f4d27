"""The self-attention kernels the Cosmos attention processor can call, on (B, S, H, D) tensors.

sdpa: PyTorch's scaled_dot_product_attention through diffusers' dispatcher (any device).
fa4: FlashAttention-4 (flash-attn-4) registered into SDPA's flash backend by PyTorch; Hopper and
Blackwell GPUs, forward and backward, the exact-attention kernel measured fastest on an H100.
sage: SageAttention, quantised and forward only, for inference (on Hopper: sage_hopper, with
sage_fa4 over flash-attn-4 where its pinned packages are installed, else SageAttention 2's
kernel where it is built).
cudnn_fp8: cuDNN's FP8 attention on Hopper GPUs, forward only, for inference (cudnn_fp8.py).
`auto` picks fa4 where it runs and sdpa elsewhere. Measurements: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from torch.nn import attention
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import cudnn_fp8, sage_hopper
from .errors import CosmosPosttrainError


class AttentionKernelError(CosmosPosttrainError):
    """A kernel that was asked for cannot run here (the command line prints the reason)."""


Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return dispatch_attention_fn(q, k, v, dropout_p=0.0, is_causal=False)


def fa4_dtype(q: torch.Tensor) -> torch.dtype | None:
    """The 16-bit dtype FA4 runs in for `q`, or None where there is none. Under autocast that is
    the autocast dtype even when q is fp32: the trained branch keeps fp32 weights, and its fp32
    RMSNorm of q and k gives fp32 tensors that SDPA would have cast down anyway."""
    half = (torch.bfloat16, torch.float16)
    if q.dtype in half:
        return q.dtype
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        return dtype if dtype in half else None
    return None


def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    dtype = fa4_dtype(q)
    if dtype is None:  # fp32 without autocast (a tiny model on a GPU): FA4 takes 16-bit only
        return sdpa_attention(q, k, v)
    q, k, v = (t.to(dtype).transpose(1, 2) for t in (q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def sage_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SageAttention, forward only (inference): INT8 Q.K with smoothed K; SageAttention 2 built
    from source adds FP8 P.V kernels for Hopper (see `sage_hopper_attention`). PyPI's 1.0.6
    (Triton) is slower than bf16 SDPA on Hopper. Speed and accuracy: docs/BENCHMARKS.md."""
    try:
        from sageattention import sageattn
    except ImportError as exc:
        fa4 = sage_hopper.fa4_problem()
        raise AttentionKernelError(
            "attention kernel 'sage' needs a CUDA GPU and either, on a Hopper GPU, flash-attn-4 "
            "(the sage-fa4 extra; 128 channels a head, token counts that divide by 128) or the "
            "sageattention package "
            "(SageAttention 2 built from github.com/thu-ml/SageAttention; PyPI has only the "
            "slower 1.0.6)" + (f"; here the FlashAttention-4 kernel {fa4}" if fa4 else "")
        ) from exc
    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def sage_hopper_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`sage` on a Hopper GPU: the inputs quantised by `sage_hopper`, which torch.compile fuses
    into the block, and the kernel it selected. Where that is SageAttention's, eager calls (the
    blocks not compiled) and shapes it does not take go to sageattn, whose own quantisation
    kernels are faster than the unfused PyTorch passes. Where it is sage_fa4 (sageattn may be
    absent), eager calls quantise here too, and shapes it does not take (other head sizes, token
    counts that do not divide by 128) get exact attention."""
    fa4 = sage_hopper.select() == "fa4"
    if sage_hopper.takes(q, k, v) and (torch.compiler.is_compiling() or fa4):
        return sage_hopper.attention(q, k, v)
    return sdpa_attention(q, k, v) if fa4 else sage_attention(q, k, v)


KERNELS: dict[str, Kernel] = {
    "sdpa": sdpa_attention,
    "fa4": fa4_attention,
    "sage": sage_attention,
    "cudnn_fp8": cudnn_fp8.attention,
}
# kernels with an entry from the raw (B, S, H*D) q/k/v projections, which applies the
# attention's q/k RMSNorms and RoPE itself: (attn, q, k, v, rope) -> (B, S, H, D), or None where
# it does not take them
PROJECTED: dict[Kernel, Callable] = {sage_hopper_attention: sage_hopper.attention_from_projections}
TRAINING_KERNELS = ("auto", "sdpa", "fa4")  # sage and cudnn_fp8 have no backward


def fa4_problem(device: torch.device | str) -> str | None:
    """Why the FA4 kernel cannot run on `device`, or None when it can."""
    if "FA4" not in getattr(attention, "list_flash_attention_impls", list)():
        return f"needs torch >= 2.11 (this is torch {torch.__version__})"
    try:
        import flash_attn.cute  # noqa: F401
    except Exception as exc:  # not installed, or an install that does not import
        return (
            "needs the flash-attn-4 package (pip install 'flash-attn-4[cu13]', or [cu12]): "
            f"{type(exc).__name__}: {exc}"
        )
    device = torch.device(device)
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] not in (9, 10):
        return (
            f"runs on NVIDIA Hopper or Blackwell GPUs (compute capability 9.x/10.x), not {device}"
        )
    return None


def activate_fa4() -> None:
    """Route PyTorch's SDPA flash backend to FlashAttention-4 (CuTe kernels with Hopper's
    wgmma/TMA path, forward and backward). PyTorch registers the kernels itself, so autograd
    and torch.compile keep seeing plain SDPA. The switch is process-wide: every SDPA call that
    takes the flash backend runs FA4 afterwards (on sm90, PyTorch prefers cuDNN for its default
    choice, so other models' default SDPA calls mostly keep cuDNN)."""
    if attention.current_flash_attention_impl() == "FA4":
        return
    from torch.nn.attention._fa4 import register_flash_attention_fa4

    attention.register_flash_attention_impl(
        "FA4",
        register_fn=functools.partial(
            register_flash_attention_fa4, module_path="cosmos_posttrain.fa4_kernels"
        ),
    )
    attention.activate_flash_attention_impl("FA4")


def deactivate_fa4() -> None:
    """Give SDPA's flash backend back to PyTorch's own kernel (FlashAttention-2): for the
    benchmarks that compare kernels in one process. A no-op where FA4 is not active."""
    if getattr(attention, "current_flash_attention_impl", lambda: None)() == "FA4":
        attention.restore_flash_attention_impl()


def attention_kernel(name: str, device: torch.device | str) -> Kernel:
    """The kernel called `name` (auto: fa4 where it runs, else sdpa), ready to call on `device`:
    FA4 is checked and activated here, with an error that says what is missing."""
    if name == "auto":
        name = "fa4" if fa4_problem(device) is None else "sdpa"
    if name not in KERNELS:
        raise AttentionKernelError(
            f"attention kernel {name!r}: use auto or one of {tuple(KERNELS)}"
        )
    if name == "fa4":
        if problem := fa4_problem(device):
            raise AttentionKernelError(f"attention kernel 'fa4' {problem}")
        activate_fa4()
    if name == "cudnn_fp8" and (problem := cudnn_fp8.problem(device)):
        raise AttentionKernelError(f"attention kernel 'cudnn_fp8' {problem}")
    if name == "sage" and sage_hopper.available(device):
        return sage_hopper_attention
    return KERNELS[name]
