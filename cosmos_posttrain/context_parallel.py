"""Ulysses context parallelism for the diffusers Cosmos models (ours: diffusers has no plan),
in the self-attention processor that also calls the chosen kernel (attention_kernels.py).

The video tokens of one clip are split along latent time over the ranks of a context-parallel
group. Everything per token (patch embedding, adaLN, MLP, cross-attention to the full text,
the output layer) runs on the local shard unchanged. Self-attention needs every token: an
all-to-all turns sequence shards into head shards, attention runs over the whole sequence for
H / cp heads, and a second all-to-all turns the result back. RoPE positions are those of the
whole clip, sliced for the shard.

Both processors here also shape the matrix products for the GPU (measured in
docs/BENCHMARKS.md): the self-attention projects q, k and v in one product, and the
cross-attention splits its queries so that its backward pass fills the GPU. In a guided
sampling call the self-attention of the first blocks runs once for the guided and the unguided
half (`repeated_video_halves`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single_autograd

from . import attention_kernels
from .attention_kernels import Kernel, attention_kernel, sdpa_attention


def _seq_to_heads(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """(B, S/cp, H, D) sequence shard -> (B, S, H/cp, D) head shard."""
    cp = dist.get_world_size(group)
    b, s, h, d = x.shape
    chunks = x.reshape(b, s, cp, h // cp, d).permute(2, 0, 1, 3, 4).contiguous()
    gathered = all_to_all_single_autograd(chunks, None, None, group)
    return gathered.permute(1, 0, 2, 3, 4).reshape(b, cp * s, h // cp, d)


def _heads_to_seq(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """(B, S, H/cp, D) head shard -> (B, S/cp, H, D) sequence shard."""
    cp = dist.get_world_size(group)
    b, s, h, d = x.shape
    chunks = x.reshape(b, cp, s // cp, h, d).permute(1, 0, 2, 3, 4).contiguous()
    gathered = all_to_all_single_autograd(chunks, None, None, group)
    return gathered.permute(1, 2, 0, 3, 4).reshape(b, s // cp, cp * h, d)


def _fused_qkv(attn, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k and v from one matrix product with the three weights stacked. The parameters stay
    as they are (checkpoints and gradients unchanged); a 6144-wide product runs faster than
    three 2048-wide ones, and the backward pass gets one input-gradient product, not three
    and two additions."""
    layers = (attn.to_q, attn.to_k, attn.to_v)
    weight = torch.cat([layer.weight for layer in layers])
    bias = None if attn.to_q.bias is None else torch.cat([layer.bias for layer in layers])
    return F.linear(hidden_states, weight, bias).chunk(3, dim=-1)


class CosmosSelfAttention:
    """The self-attention of a Cosmos block (as diffusers' CosmosAttnProcessor2_0 computes it)
    with a chosen kernel and, under context parallelism, the two all-to-alls around it.
    `repeated_halves` (set by `repeated_video_halves`) says that the second half of the batch
    holds the same input as the first: the first half is computed and used for both."""

    def __init__(
        self, group: dist.ProcessGroup | None = None, kernel: Kernel = sdpa_attention
    ) -> None:
        self.group = group
        self.kernel = kernel
        self.repeated_halves = False

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        image_rotary_emb=None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("CosmosSelfAttention serves self-attention only")
        batch = hidden_states.shape[0]
        if self.repeated_halves and batch % 2 == 0:
            half = self.attend(attn, hidden_states[: batch // 2], attention_mask, image_rotary_emb)
            return torch.cat([half, half])
        return self.attend(attn, hidden_states, attention_mask, image_rotary_emb)

    def attend(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        from diffusers.models.embeddings import apply_rotary_emb

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, S, H*D) -> (B, H, S, D)
            return x.unflatten(2, (attn.heads, -1)).transpose(1, 2)

        query, key, value = _fused_qkv(attn, hidden_states)
        if self.group is None and image_rotary_emb is not None and attention_mask is None:
            projected = attention_kernels.PROJECTED.get(self.kernel)
            out = projected and projected(attn, query, key, value, image_rotary_emb)
            if out is not None:  # the kernel normalised and rotated q and k itself
                return attn.to_out[1](attn.to_out[0](out.flatten(2, 3)))
        query, key, value = attn.norm_q(heads(query)), attn.norm_k(heads(key)), heads(value)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
        if attention_mask is not None:
            raise ValueError("Cosmos self-attention takes no mask")
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # (B, S, H, D)
        if self.group is not None:
            q, k, v = (_seq_to_heads(t, self.group) for t in (q, k, v))
        out = self.kernel(q, k, v)
        if self.group is not None:
            out = _heads_to_seq(out, self.group)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class CosmosCrossAttention:
    """The cross-attention of a Cosmos block (video tokens to the text), as diffusers'
    CosmosAttnProcessor2_0 computes it, with the video queries split into `query_splits` rows
    of the batch. Each row attends to the same text, so the output is unchanged, and the
    gradients of the shared keys and values sum over the rows. Why: attention's backward pass
    works in tiles of keys, and 512 text tokens x 16 heads make few tiles for the H100's 132
    SMs; four rows were the fastest of 1, 2, 4 and 8 (docs/BENCHMARKS.md)."""

    def __init__(self, query_splits: int = 4) -> None:
        self.query_splits = query_splits

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        image_rotary_emb=None,
    ) -> torch.Tensor:
        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("CosmosCrossAttention attends to the text, without a mask")
        if image_rotary_emb is not None:
            raise ValueError("Cosmos cross-attention takes no RoPE")

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, S, H*D) -> (B, S, H, D)
            return x.unflatten(2, (attn.heads, -1))

        # the RMSNorms of diffusers' processor, on the head dimension in either layout
        query = attn.norm_q(heads(attn.to_q(hidden_states)))
        key = attn.norm_k(heads(attn.to_k(encoder_hidden_states)))
        value = heads(attn.to_v(encoder_hidden_states))
        b, s, h, d = query.shape
        splits = self.query_splits if s % self.query_splits == 0 else 1
        query = query.reshape(b * splits, s // splits, h, d)
        key, value = (t.repeat_interleave(splits, dim=0) for t in (key, value))
        out = sdpa_attention(query, key, value).reshape(b, s, h * d).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class ShardedRope(nn.Module):
    """RoPE of the whole clip (cp times the local frames), rows of this rank's frames."""

    def __init__(self, rope: nn.Module, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.rope = rope
        self.group = group

    def forward(self, hidden_states: torch.Tensor, fps: int | None = None):
        cp, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        b, c, t, h, w = hidden_states.shape
        whole = hidden_states.new_zeros(1).expand(b, c, t * cp, h, w)  # shape only, no memory
        cos, sin = self.rope(whole, fps=fps)
        rows = cos.shape[0] // cp
        return cos[rank * rows : (rank + 1) * rows], sin[rank * rows : (rank + 1) * rows]


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a CosmosTransformer3DModel or CosmosControlNetModel."""
    blocks = getattr(model, "transformer_blocks", None)
    return blocks if blocks is not None else model.control_blocks


def set_self_attention(
    model: nn.Module, group: dist.ProcessGroup | None = None, kernel: str = "sdpa"
) -> None:
    """Give every block of a Cosmos model our self-attention processor: the kernel named
    `kernel` (attention_kernels.py; auto picks one for the model's device), and Ulysses context
    parallelism over `group` when one is given."""
    cp = dist.get_world_size(group) if group is not None else 1
    call = attention_kernel(kernel, next(model.parameters()).device)
    for block in blocks_of(model):
        if block.attn1.heads % cp:
            raise ValueError(f"context_parallel_size={cp} must divide {block.attn1.heads} heads")
        block.attn1.set_processor(CosmosSelfAttention(group, call))
    if group is not None and not isinstance(model.rope, ShardedRope):
        model.rope = ShardedRope(model.rope, group)


@contextlib.contextmanager
def repeated_video_halves(*models: nn.Module) -> Iterator[None]:
    """Within this, the second half of the models' batch holds the same video input as the
    first and only the text differs (the guided and unguided halves of a sampling step). The
    first block of a Cosmos model meets the text only after its self-attention (the control
    branch's residuals are added after the block), so that self-attention, the costliest call
    of the block, runs on the first half for both. Models without the project's processor are
    left as they are."""
    processors = [
        getattr(blocks_of(m)[0].attn1, "processor", None) for m in models if m is not None
    ]
    ours = [p for p in processors if isinstance(p, CosmosSelfAttention)]
    for processor in ours:
        processor.repeated_halves = True
    try:
        yield
    finally:
        for processor in ours:
            processor.repeated_halves = False


def set_cross_attention(model: nn.Module, query_splits: int = 4) -> None:
    """Give every block of a Cosmos model our cross-attention processor (queries split in
    `query_splits`; 1 computes it as diffusers does). Blocks that also attend to an image
    context (diffusers' CosmosAttention, with q_img/k_img/v_img) keep diffusers' processor."""
    if query_splits < 1:
        raise ValueError(f"query_splits={query_splits}: must be >= 1")
    for block in blocks_of(model):
        if getattr(block.attn2, "q_img", None) is None:
            block.attn2.set_processor(CosmosCrossAttention(query_splits))


def shard_time(x: torch.Tensor, group: dist.ProcessGroup, dim: int = 2) -> torch.Tensor:
    """This rank's contiguous slice of latent frames."""
    cp, rank = dist.get_world_size(group), dist.get_rank(group)
    if x.shape[dim] % cp:
        raise ValueError(f"{x.shape[dim]} latent frames do not split over {cp} ranks")
    return x.chunk(cp, dim=dim)[rank].contiguous()
