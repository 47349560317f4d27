"""The Triton passes of sage_qk_prologue at the seed shape on a GPU: agreement with the chain they
replace, time against torch.compile's version of that chain, and the kernel configurations.

One guided call's q/k/v projections (batch 2 x 84,480 tokens, 16 heads of 128 channels, slices
of one fused product; random values with a channel bias in k; random bf16 RMSNorm weights; a
RoPE table with repeated halves, as Cosmos builds it). Rows, to
benchmarks/results/sage_qk_prologue.jsonl:
- `agreement`: the share of INT8 values (and scales) that differ from the eager chain
  (diffusers' RMSNorm and RoPE, then sage_hopper.quantise) and from its compiled version, and
  by how much;
- `time`: ms per call of the compiled chain (q, k and v), of the Triton passes with V quantised
  by the compiled sage_hopper.quantise_v, and of the Triton passes alone;
- `config`: ms of each pass over its configurations (tokens and heads per program, warps).
Run on a GPU machine: `python benchmarks/bench_sage_qk_prologue.py`.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import time
from pathlib import Path

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.normalization import RMSNorm
from provenance import provenance

from cosmos_posttrain import sage_hopper, sage_qk_prologue

B, L, H, D = 2, 84480, 16, 128


def ms_per_call(fn, iters: int = 30) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/sage_qk_prologue.jsonl")
    p.add_argument("--note", default="")
    args = p.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    qkv = torch.randn(B, L, 3 * H * D, device=dev, dtype=torch.bfloat16) * 2
    qkv[..., H * D : 2 * H * D] += torch.randn(H * D, device=dev, dtype=torch.bfloat16) * 2
    q, k, v = qkv.chunk(3, dim=-1)
    norms = [RMSNorm(D, eps=1e-6).to(dev, torch.bfloat16) for _ in range(2)]
    for norm in norms:
        with torch.no_grad():
            norm.weight.copy_(torch.rand(D) + 0.5)
    angles = torch.rand(L, D // 2, device=dev) * 6
    angles = torch.cat([angles, angles], -1)
    rope = (angles.cos().contiguous(), angles.sin().contiguous())
    base = {"date": datetime.date.today().isoformat(), "gpu": torch.cuda.get_device_name()}
    base.update(provenance(), shape=[B, L, H, D], note=args.note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(**row) -> None:
        line = json.dumps({**base, **row})
        print(line, flush=True)
        with out.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def chain(q, k, v) -> sage_hopper.SageInputs:  # what the processor did before
        def normed(x, norm):
            x = norm(x.unflatten(2, (H, -1)).transpose(1, 2))
            return apply_rotary_emb(x, rope, use_real=True, use_real_unbind_dim=-2).transpose(1, 2)

        return sage_hopper.quantise(
            normed(q, norms[0]), normed(k, norms[1]), v.unflatten(2, (H, -1))
        )

    def passes(q, k, v) -> sage_hopper.SageInputs:  # what it does now
        q8, q_scale, k8, k_scale = sage_qk_prologue.qk_int8(q, k, *norms, rope, H)
        return sage_hopper.SageInputs(
            q8, q_scale, k8, k_scale, *sage_hopper.quantise_v(v.unflatten(2, (H, -1)))
        )

    def differences(got, want) -> dict:
        result = {}
        for name in ("q", "q_scale", "k", "k_scale", "v", "v_scale"):
            diff = (getattr(got, name).float() - getattr(want, name).float()).abs()
            result[name] = {
                "share": round(float((diff > 0).float().mean()), 7),
                "max": float(diff.max()),
            }
        return result

    with torch.no_grad():
        ours = passes(q, k, v)
        write(kind="agreement", against="eager chain", differ=differences(ours, chain(q, k, v)))
        compiled_chain, compiled_passes = torch.compile(chain), torch.compile(passes)
        write(
            kind="agreement",
            against="compiled chain",
            differ=differences(compiled_passes(q, k, v), compiled_chain(q, k, v)),
        )
        write(
            kind="time",
            ms_compiled_chain=round(ms_per_call(lambda: compiled_chain(q, k, v)), 3),
            ms_passes_and_compiled_v=round(ms_per_call(lambda: compiled_passes(q, k, v)), 3),
            ms_passes=round(
                ms_per_call(lambda: sage_qk_prologue.qk_int8(q, k, *norms, rope, H)), 3
            ),
            kernel_1=sage_qk_prologue.KERNEL_1,
            kernel_2=sage_qk_prologue.KERNEL_2,
        )
        sweep(q, k, norms[0].weight, rope, write)


def sweep(q, k, weight, rope, write) -> None:
    """Each pass alone over its configurations (outputs not checked: only the sums' order
    changes with them)."""
    cos, sin = rope
    q8 = torch.empty((B, L, H, D), dtype=torch.int8, device=q.device)
    k8 = torch.empty_like(q8)
    q_scale = torch.empty((B, H, L // 16), device=q.device)
    k_scale = torch.empty((B, H, L // 128), device=q.device)
    mean = torch.zeros((B, H, D), device=q.device)
    strides = (q.stride(0), q.stride(1))

    def first(block: int, heads: int, warps: int, k_sum: torch.Tensor) -> None:
        sage_qk_prologue._q_int8_k_sums[(H // heads, L // block, B)](
            q, k, weight, weight, cos, sin, q8, q_scale, k_sum, *strides, 1e-6, 1e-6, L, H,
            HALF=D // 2, BLOCK=block, HEADS=heads, num_warps=warps,
        )  # fmt: skip

    def second(heads: int, warps: int) -> None:
        sage_qk_prologue._k_int8[(H // heads, L // 128, B)](
            k, weight, cos, sin, mean, k8, k_scale, *strides, 1e-6, L, H,
            HALF=D // 2, HEADS=heads, num_warps=warps,
        )  # fmt: skip

    for block, heads, warps in itertools.product((32, 64, 128), (1, 2, 4, 8), (2, 4, 8, 16)):
        if block == 128 and warps < 8:
            continue
        k_sum = torch.empty((B, H, L // block, D), device=q.device)
        ms = timed(functools.partial(first, block, heads, warps, k_sum))
        write(kind="config", kernel=1, block=block, heads=heads, warps=warps, ms=ms)
    for heads, warps in itertools.product((1, 2, 4, 8), (4, 8, 16)):
        ms = timed(functools.partial(second, heads, warps))
        write(kind="config", kernel=2, heads=heads, warps=warps, ms=ms)


def timed(fn) -> float | str:
    try:
        return round(ms_per_call(fn), 3)
    except Exception as exc:  # noqa: BLE001 - a configuration that does not compile is a row too
        return repr(exc)[:200]


if __name__ == "__main__":
    main()
