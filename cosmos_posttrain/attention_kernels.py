"""The self-attention kernels the Cosmos attention processor can call, on (B, S, H, D) tensors.

sdpa: PyTorch's scaled_dot_product_attention through diffusers' dispatcher (any device).
fa4: FlashAttention-4 (flash-attn-4) registered into SDPA's flash backend by PyTorch; Hopper and
Blackwell GPUs, forward and backward, the exact-attention kernel measured fastest on an H100.
sage: SageAttention, quantised and forward only, for inference.
`auto` picks fa4 where it runs and sdpa elsewhere. Measurements: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import functools

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return dispatch_attention_fn(q, k, v, dropout_p=0.0, is_causal=False)


def activate_fa4() -> None:
    """Route PyTorch's SDPA flash backend to FlashAttention-4 (the flash-attn-4 package: CuTe
    kernels with Hopper's wgmma/TMA path, forward and backward). PyTorch registers the kernels
    itself, so autograd and torch.compile keep seeing plain SDPA."""
    from torch.nn import attention

    if "FA4" not in getattr(attention, "list_flash_attention_impls", list)():
        raise RuntimeError(
            f"attention kernel 'fa4' needs torch >= 2.11 (this is torch {torch.__version__})"
        )
    try:
        import flash_attn.cute  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "attention kernel 'fa4' needs the flash-attn-4 package (pip install "
            "'flash-attn-4[cu13]') and an NVIDIA Hopper or Blackwell GPU"
        ) from exc
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


def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if q.dtype not in (torch.bfloat16, torch.float16):
        return sdpa_attention(q, k, v)  # FA4 takes 16-bit inputs only (an fp32 tiny model on a GPU)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
    return out.transpose(1, 2)


def sage_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SageAttention, forward only (inference): INT8 Q.K with smoothed K. SageAttention 2
    (built from source) runs FP8 P.V with Hopper kernels: 833 TFLOP/s on an H100 against
    FA4's 681, 217 s per chunk against 244 s; PyPI's 1.0.6 (Triton) is slower than bf16 SDPA
    on Hopper. Measured in docs/BENCHMARKS.md."""
    try:
        from sageattention import sageattn
    except ImportError as exc:
        raise RuntimeError(
            "attention kernel 'sage' needs the sageattention package (SageAttention 2 built "
            "from github.com/thu-ml/SageAttention for Hopper; PyPI has only the slower 1.0.6) "
            "and a CUDA GPU"
        ) from exc
    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


KERNELS = {"sdpa": sdpa_attention, "fa4": fa4_attention, "sage": sage_attention}


def fa4_available(device: torch.device | str) -> bool:
    """Whether the FA4 kernel can run here: a Hopper or Blackwell GPU, PyTorch's FA4 registry
    and the flash-attn-4 package."""
    from importlib.util import find_spec

    from torch.nn import attention

    device = torch.device(device)
    return (
        device.type == "cuda"
        and torch.cuda.get_device_capability(device)[0] in (9, 10)
        and "FA4" in getattr(attention, "list_flash_attention_impls", list)()
        and find_spec("flash_attn") is not None
        and find_spec("flash_attn.cute") is not None
    )


def resolve_attention_kernel(kernel: str, device: torch.device | str) -> str:
    """`auto` becomes the fastest kernel that runs here (fa4, else sdpa); others stay as named."""
    if kernel == "auto":
        return "fa4" if fa4_available(device) else "sdpa"
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel {kernel!r}: use auto or one of {tuple(KERNELS)}")
    return kernel
