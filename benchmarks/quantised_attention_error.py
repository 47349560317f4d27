"""How far the two quantised attention kernels land from exact attention as attention sharpens.

Random weights give the benchmarks' model nearly uniform attention, where quantising the scores
costs little; trained video models attend more sharply. This emulates, in fp32 on the CPU, the
arithmetic of the two quantised kernels the project offers for inference, on the inputs the
project's own quantisation gives them (`sage_hopper.quantise`, `cudnn_fp8.quantise`):

- `sage` (SageAttention 2 on Hopper): INT8 Q with one scale per 16 tokens, INT8 K smoothed by
  its mean with one scale per 128 tokens, probabilities and V (one scale per channel) in FP8;
- `cudnn_fp8` (cuDNN's FP8 attention): FP8 Q and smoothed K with one scale each, probabilities,
  V (smoothed, one scale per channel) and the output in FP8;

and reports each one's relative error against exact attention, with the error of its Q.K
rounding alone, for queries scaled by 1-4 (sharper softmax) on random and on locally structured
inputs (queries and keys sharing a positional code on a 16 x 16 x 16 token grid). Rows go to
benchmarks/results/quantised_attention_error.jsonl. Run: `python
benchmarks/quantised_attention_error.py` (about a minute on two cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path

import torch
from provenance import provenance

from cosmos_posttrain import cudnn_fp8, sage_hopper

FP8 = torch.float8_e4m3fn
HEADS, CHANNELS, GRID = 2, 128, 16


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fp8_probabilities: bool = False
) -> torch.Tensor:
    """Softmax(Q.Kᵀ/√D).V of (B, H, L, D) tensors, optionally with FP8 probabilities in P.V."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    p = (scores - scores.amax(-1, keepdim=True)).exp()
    total = p.sum(-1, keepdim=True)
    if fp8_probabilities:
        p = (p * 448).to(FP8).float() / 448
    return p @ v / total


def sage_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What SageAttention's kernel reads, from the project's `sage_hopper.quantise`, as fp32
    (B, H, L, D) tensors (K smoothed)."""
    x = sage_hopper.quantise(*(t.transpose(1, 2) for t in (q, k, v)))

    def groups(t8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        steps = scale.repeat_interleave(t8.shape[1] // scale.shape[-1], dim=-1)
        return t8.float().transpose(1, 2) * steps[..., None]

    stored = x.v.float() * x.v_scale[..., None]  # (B, H, D, L), tokens reordered in 16s
    order = torch.argsort(torch.tensor(sage_hopper.V_ORDER))
    v_back = stored.unflatten(-1, (-1, 16))[..., order].flatten(-2).transpose(-1, -2)
    return groups(x.q, x.q_scale), groups(x.k, x.k_scale), v_back


def errors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, float]:
    ref = attention(q, k, v)

    def rel(out: torch.Tensor) -> float:
        return round(float((out - ref).norm() / ref.norm()), 5)

    sage_q, sage_k, sage_v = sage_inputs(q, k, v)
    x = cudnn_fp8.quantise(*(t.transpose(1, 2) for t in (q, k, v)))
    cudnn_q, cudnn_k = (
        (t.float() * s).transpose(1, 2) for t, s in ((x.q, x.q_descale), (x.k, x.k_descale))
    )
    fp8_out = attention(cudnn_q, cudnn_k, x.v.float().transpose(1, 2), True).to(FP8).float()
    cudnn = fp8_out * x.v_scale.transpose(1, 2) + x.v_mean.transpose(1, 2)
    return {
        "sage": rel(attention(sage_q, sage_k, sage_v, True)),
        "sage_qk_only": rel(attention(sage_q, sage_k, v)),
        "cudnn_fp8": rel(cudnn),
        "cudnn_fp8_qk_only": rel(attention(cudnn_q, cudnn_k, v)),
    }


def inputs(structured: bool, scale: float, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    tokens = GRID**3
    q, k, v = (torch.randn(1, HEADS, tokens, CHANNELS, generator=gen) for _ in range(3))
    if structured:  # nearby tokens share most of their code, so each query favours its region
        axes = torch.arange(float(GRID))
        grid = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)
        phase = grid @ (0.4 * torch.randn(3, CHANNELS // 2, generator=gen))
        code = torch.cat([phase.cos(), phase.sin()], -1)
        q, k = (0.5 * t + code for t in (q, k))
        q, k = (t / t.norm(dim=-1, keepdim=True) * math.sqrt(CHANNELS) for t in (q, k))
    return q * scale, k, v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="1,2,3,4")
    p.add_argument("--out", default="benchmarks/results/quantised_attention_error.jsonl")
    args = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    origin = provenance()  # commit and library versions, in every row
    for structured in (False, True):
        for scale in map(float, args.scales.split(",")):
            row = {
                "date": datetime.date.today().isoformat(),
                "torch": torch.__version__,
                "inputs": "local" if structured else "random",
                "query_scale": scale,
                "tokens": GRID**3,
                **errors(*inputs(structured, scale, gen)),
                **origin,
            }
            print(json.dumps(row), flush=True)
            with Path(args.out).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
