"""SageAttention's Q and K straight from the q/k projections (sage_qk_prologue): the Triton
passes against the eager chain they replace, and the attention processor's use of them.

The passes are Triton kernels; here Triton's CPU interpreter runs them (in a subprocess, since
TRITON_INTERPRET must be set before Triton is imported). Their speed on an H100 is in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import run_python
from diffusers import CosmosTransformer3DModel
from diffusers.models.embeddings import apply_rotary_emb

from cosmos_posttrain import attention_kernels, sage_hopper, sage_qk_prologue
from cosmos_posttrain.attention_kernels import sdpa_attention
from cosmos_posttrain.context_parallel import CosmosSelfAttention
from cosmos_posttrain.models import TINY_TRANSFORMER


def test_triton_passes_quantise_as_the_eager_chain_does():
    pytest.importorskip("triton")
    script = Path(__file__).parent / "interpreted" / "sage_qk_prologue.py"
    stdout = run_python([str(script)], timeout=300, TRITON_INTERPRET="1")
    cases = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [c["case"] for c in cases] == ["cosmos rope, D=64", "random rope, D=128"]
    for case in cases:
        assert case["strided"], case  # the inputs were slices of one fused product
        # the scales are the same numbers; an INT8 value differs by one step at most, where
        # the fp32 sums of the two ways round a value across a half step (a few in 10^4)
        assert case["q_scale_rel"] < 1e-6 and case["k_scale_rel"] < 1e-6, case
        for field in ("q", "k"):
            assert case[f"{field}_max"] <= 1 and case[f"{field}_differ"] < 1e-3, case


@pytest.fixture
def attention():
    """The first self-attention of the tiny Cosmos model with bf16 weights, its input and its
    RoPE table."""
    model = CosmosTransformer3DModel(**TINY_TRANSFORMER).bfloat16()
    attn = model.transformer_blocks[0].attn1
    latents = torch.zeros(1, TINY_TRANSFORMER["in_channels"], 2, 16, 16)
    rope = model.rope(latents)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, rope[0].shape[0], attn.heads * 64, generator=gen).bfloat16()
    return attn, hidden, rope


def test_processor_hands_the_projections_to_a_kernel_that_takes_them(attention, monkeypatch):
    attn, hidden, rope = attention
    processor = CosmosSelfAttention(kernel=sdpa_attention)
    plain = processor(attn, hidden, image_rotary_emb=rope)
    calls = []

    def projected(attn, query, key, value, rope):  # the processor's own steps, done here
        calls.append(query.shape)
        heads = [x.unflatten(2, (attn.heads, -1)).transpose(1, 2) for x in (query, key, value)]
        query, key = attn.norm_q(heads[0]), attn.norm_k(heads[1])
        query, key = (
            apply_rotary_emb(x, rope, use_real=True, use_real_unbind_dim=-2) for x in (query, key)
        )
        return sdpa_attention(*(x.transpose(1, 2) for x in (query, key, heads[2])))

    monkeypatch.setattr(attention_kernels, "PROJECTED", {sdpa_attention: projected})
    assert torch.equal(processor(attn, hidden, image_rotary_emb=rope), plain)
    assert calls == [(2, hidden.shape[1], attn.heads * 64)]  # raw (B, S, H*D) projections
    # a kernel entry that declines (returns None) leaves the processor's own path
    monkeypatch.setattr(attention_kernels, "PROJECTED", {sdpa_attention: lambda *a: None})
    assert torch.equal(processor(attn, hidden, image_rotary_emb=rope), plain)


def test_sage_takes_the_projections_only_on_a_gpu_inside_compiled_blocks(attention):
    attn, hidden, rope = attention
    assert attention_kernels.PROJECTED[attention_kernels.sage_hopper_attention] is (
        sage_hopper.attention_from_projections
    )
    query, key, value = hidden, hidden, hidden
    assert sage_hopper.attention_from_projections(attn, query, key, value, rope) is None
    assert not sage_qk_prologue.takes(query, key, attn.heads, rope)  # CPU tensors
    # the passes compute diffusers' RMSNorm with a bf16 weight (the inference models' dtype)
    assert sage_hopper._bf16_rms_norm(attn.norm_q) and sage_hopper._bf16_rms_norm(attn.norm_k)
    assert not sage_hopper._bf16_rms_norm(copy.deepcopy(attn.norm_q).float())
    assert not sage_hopper._bf16_rms_norm(torch.nn.LayerNorm(64).bfloat16())
