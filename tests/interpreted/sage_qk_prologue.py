"""Run by tests/test_sage_qk_prologue.py under TRITON_INTERPRET=1 (Triton's CPU interpreter, set
before Triton is imported): the two Triton passes of sage_qk_prologue against the eager chain
they replace (diffusers' RMSNorm and RoPE, then sage_hopper.quantise). Prints one JSON line
per case: how many INT8 values differ and by how much, and the largest scale difference."""

from __future__ import annotations

import json

import torch
from diffusers import CosmosTransformer3DModel
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.normalization import RMSNorm

from cosmos_posttrain import sage_hopper, sage_qk_prologue
from cosmos_posttrain.models import TINY_TRANSFORMER


def compare(name: str, heads: int, dim: int, rope, eps: float, gen: torch.Generator) -> dict:
    tokens = rope[0].shape[0]
    width = heads * dim
    # slices of one fused q/k/v product, as the attention processor hands them over
    qkv = torch.randn(2, tokens, 3 * width, generator=gen) * 3
    qkv[..., width : 2 * width] += 2 * torch.randn(width, generator=gen)  # a channel bias in k
    q, k, _ = qkv.bfloat16().split(width, dim=-1)
    norms = []
    for _ in range(2):
        norm = RMSNorm(dim, eps=eps).bfloat16()
        with torch.no_grad():
            norm.weight.copy_(torch.rand(dim, generator=gen) + 0.5)
        norms.append(norm)

    def eager(x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
        x = norm(x.unflatten(2, (heads, -1)).transpose(1, 2))
        return apply_rotary_emb(x, rope, use_real=True, use_real_unbind_dim=-2).transpose(1, 2)

    with torch.no_grad():
        expected = sage_hopper.quantise(eager(q, norms[0]), eager(k, norms[1]), eager(k, norms[1]))
        got = sage_qk_prologue.qk_int8(q, k, *norms, rope, heads)
    result = {"case": name, "strided": not q.is_contiguous()}
    for field, value in zip(("q", "q_scale", "k", "k_scale"), got, strict=True):
        want = getattr(expected, field)
        assert value.shape == want.shape and value.dtype == want.dtype, field
        diff = (value.float() - want.float()).abs()
        if value.dtype == torch.int8:
            result[f"{field}_differ"] = float((diff > 0).float().mean())
            result[f"{field}_max"] = float(diff.max())
        else:
            result[f"{field}_rel"] = float((diff / want.abs()).max())
    return result


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    # the tiny Cosmos model's own RoPE table (64 channels a head; the halves repeat)
    model = CosmosTransformer3DModel(**TINY_TRANSFORMER)
    latents = torch.zeros(1, TINY_TRANSFORMER["in_channels"], 4, 16, 32)  # 4 x 8 x 16 tokens
    rope = tuple(t.float().contiguous() for t in model.rope(latents))
    print(json.dumps(compare("cosmos rope, D=64", 2, 64, rope, 1e-5, gen)))
    # 128 channels with unrelated halves, as a general table
    angles = torch.rand(256, 128, generator=gen) * 6
    rope = (angles.cos(), angles.sin())
    print(json.dumps(compare("random rope, D=128", 4, 128, rope, 1e-6, gen)))


if __name__ == "__main__":
    main()
