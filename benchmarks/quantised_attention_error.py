"""How far the two quantised attention kernels land from exact attention as attention sharpens.

Random weights give the benchmarks' model nearly uniform attention, where quantising the scores
costs little; trained video models attend more sharply. This emulates, in fp32 on the CPU, the
arithmetic of the two quantised kernels the project offers for inference:

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

FP8 = torch.float8_e4m3fn
HEADS, CHANNELS, GRID = 2, 128, 16


def attention(q, k, v, fp8_probabilities: bool = False) -> torch.Tensor:
    """Softmax(Q.Kᵀ/√D).V of (B, H, L, D) tensors, optionally with FP8 probabilities in P.V."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    p = (scores - scores.amax(-1, keepdim=True)).exp()
    total = p.sum(-1, keepdim=True)
    if fp8_probabilities:
        p = (p * 448).to(FP8).float() / 448
    return p @ v / total


def fp8_tensor(x: torch.Tensor) -> torch.Tensor:
    amax = x.abs().amax()
    return (x * 448 / amax).to(FP8).float() * amax / 448


def fp8_channels(v: torch.Tensor) -> torch.Tensor:
    amax = v.abs().amax(-2, keepdim=True)
    return (v * 448 / amax).to(FP8).float() * amax / 448


def int8_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    grouped = x.unflatten(-2, (-1, group))
    step = grouped.abs().amax((-1, -2), keepdim=True) / 127
    return ((grouped / step).round().clamp(-127, 127) * step).flatten(-3, -2)


def errors(q, k, v) -> dict[str, float]:
    ref = attention(q, k, v)

    def rel(out: torch.Tensor) -> float:
        return round(float((out - ref).norm() / ref.norm()), 5)

    k = k - k.mean(-2, keepdim=True)  # both kernels smooth K (softmax does not see it)
    v_mean = v.mean(-2, keepdim=True)
    sage_qk = (int8_groups(q, 16), int8_groups(k, 128))
    cudnn_qk = (fp8_tensor(q), fp8_tensor(k))
    cudnn = fp8_tensor(attention(*cudnn_qk, fp8_channels(v - v_mean), True)) + v_mean
    return {
        "sage": rel(attention(*sage_qk, fp8_channels(v), True)),
        "sage_qk_only": rel(attention(*sage_qk, v)),
        "cudnn_fp8": rel(cudnn),
        "cudnn_fp8_qk_only": rel(attention(*cudnn_qk, v)),
    }


def inputs(structured: bool, scale: float, gen: torch.Generator):
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
