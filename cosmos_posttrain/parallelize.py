"""How the Cosmos models run on the hardware, applied in torchtitan's order: context parallelism
(the attention processors) and the frame-wise adaLN, activation recompute, torch.compile, then
FSDP2.

Recompute policies, since self-attention over 84,480 tokens is about 90% of a step's FLOPs:
- "full": every block's activations are recomputed in the backward pass (least memory);
- "save_attention": the attention outputs are kept and everything else is recomputed, so the
  costly kernel runs once (about 20 GiB more at the seed shape, measured in docs/BENCHMARKS.md);
- "none": nothing is recomputed (does not fit at the seed shape).
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from .context_parallel import blocks_of, set_cross_attention, set_self_attention
from .frame_adaln import set_frame_adaln

RECOMPUTE_POLICIES = ("none", "full", "save_attention")

_ATTENTION_OPS = {
    getattr(torch.ops.aten, name).default
    for name in (
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
    )
    if hasattr(torch.ops.aten, name)
}


def _save_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def apply_recompute(model: nn.Module, policy: str) -> None:
    """Wrap each block in a checkpoint (state-dict keys are unchanged by the wrapper)."""
    if policy not in RECOMPUTE_POLICIES:
        raise ValueError(f"recompute policy {policy!r}: use one of {RECOMPUTE_POLICIES}")
    if policy == "none":
        return
    blocks = blocks_of(model)
    for i, block in enumerate(blocks):
        kwargs = {}
        if policy == "save_attention":
            kwargs["context_fn"] = functools.partial(
                create_selective_checkpoint_contexts, _save_attention
            )
        blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False, **kwargs)


def compile_blocks(model: nn.Module) -> None:
    """torch.compile each block: fuses the memory-bound work (norms, RoPE, adaLN, GELU)
    around the matrix products; one graph serves all blocks of a model."""
    for block in blocks_of(model):
        block.compile()


def apply_fsdp(model: nn.Module, mesh) -> None:
    """FSDP2 per block, then the rest of the model: parameters sharded over `mesh`, gathered
    in bf16 for compute, gradients reduced in fp32 (the fp32 master weights stay sharded).
    FSDP averages gradients over the whole mesh; `fsdp_loss_scale` says how to get a sum over
    CP ranks and a mean over DP ranks from that."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if mesh.device_type == "cpu":  # CPU tests compare against fp32 single-process runs
        policy = MixedPrecisionPolicy()
    for block in blocks_of(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def fsdp_loss_scale(cp: int) -> float:
    """FSDP's reduction divides by all cp * dp ranks, but each CP rank holds part of one clip's
    loss (to be summed) and DP ranks hold different clips (to be averaged): scale the loss by
    cp before the backward. (A custom divide factor would need NCCL's PREMUL_SUM, not gloo.)"""
    return float(cp)


def parallelize(
    model: nn.Module,
    *,
    cp_group: dist.ProcessGroup | None = None,
    attention_kernel: str = "auto",
    cross_attention_splits: int = 4,
    frame_adaln: bool = True,
    recompute: str = "full",
    compile: bool = False,
    fsdp_mesh=None,
) -> nn.Module:
    """Apply everything above to one Cosmos model, in the order that composes. The attention
    kernel `auto` picks FA4 where it runs (see attention_kernels.attention_kernel);
    `frame_adaln` computes the blocks' adaLN once per latent frame (frame_adaln.py)."""
    set_self_attention(model, cp_group, attention_kernel)
    set_cross_attention(model, cross_attention_splits)
    if frame_adaln:
        set_frame_adaln(model)
    apply_recompute(model, recompute)
    if compile:
        compile_blocks(model)
    if fsdp_mesh is not None:
        apply_fsdp(model, fsdp_mesh)
    return model
