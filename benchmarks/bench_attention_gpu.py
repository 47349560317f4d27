"""Self-attention kernels at the seed shape: speed of forward and forward+backward, and error.

Attention is 91% of a post-training step's FLOPs and 85% of an inference call's, so the kernel
decides both. Shape: one clip of 84,480 video tokens, 16 heads of 128 (bf16, no mask), batch 1
(training) and 2 (inference's guided and unguided calls batched). Kernels: PyTorch SDPA's flash
(FlashAttention-2, `flash2`) and cuDNN backends; the project's `fa4` (flash-attn-4 registered
into SDPA by PyTorch) and `sage` (SageAttention, forward only) from attention_kernels.py;
`fa4_direct` (flash-attn-4's own autograd function) and `fa4_tile:MxN` (its Hopper forward with
another tile, forward only) to see what the registry and the tile choice cost; `cudnn_fp8`
(cuDNN's FP8 attention, forward only; eager, and `cudnn_fp8_compiled` with its quantisation
compiled as the blocks run it).
Error is relative to an fp32 reference (mem-efficient SDPA in fp32), for the output and for the
three input gradients. Results go to benchmarks/results/attention.jsonl.
Run on a GPU machine: `python benchmarks/bench_attention_gpu.py`.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
from pathlib import Path

import torch
from model_flops import block_flops
from provenance import provenance
from torch.nn.attention import SDPBackend, sdpa_kernel

from cosmos_posttrain import attention_kernels, cudnn_fp8, sage_hopper


def sdpa_with(backend: SDPBackend):
    def run(q, k, v):
        with sdpa_kernel(backend):
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
        return out.transpose(1, 2)

    return run


def fa4_direct(q, k, v):
    """flash-attn-4's own autograd function, to see what PyTorch's registry costs."""
    from flash_attn.cute import flash_attn_func

    return flash_attn_func(q, k, v)[0]


def fa4_tile(spec: str):
    """flash-attn-4's Hopper forward with another tile ("128x176"): forward only."""
    tile = tuple(int(n) for n in spec.split("x"))

    def run(q, k, v):
        from flash_attn.cute.interface import _flash_attn_fwd

        return _flash_attn_fwd(q, k, v, tile_mn=tile, mma_pv_is_rs=True, intra_wg_overlap=True)[0]

    return run


def forward_backward(kernel, inputs, grad_out) -> None:
    kernel(*inputs).backward(grad_out)


def timed(fn, warmup: int, iters: int) -> float:
    """Median seconds of `fn` over `iters` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def relative(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref).norm() / ref.norm())


def measure(kernel, inputs, grad_out, forward_only: bool, reference, fwd_flops, args) -> dict:
    """Seconds, TFLOP/s and error against the fp32 reference of one kernel."""
    ref_out, ref_grads = reference
    with torch.no_grad():
        fwd = timed(functools.partial(kernel, *inputs), 2, args.iters)
    row = {"fwd_s": round(fwd, 5), "fwd_tflops": round(fwd_flops / fwd / 1e12, 1)}
    out = kernel(*inputs)
    errors = {"err_out": relative(out.detach(), ref_out)}
    if not forward_only:
        out.backward(grad_out)
        grads = zip("qkv", inputs, ref_grads, strict=True)
        errors.update({f"err_d{n}": relative(t.grad, ref) for n, t, ref in grads})
        both = timed(functools.partial(forward_backward, kernel, inputs, grad_out), 1, args.iters)
        row.update(
            fwd_bwd_s=round(both, 5), bwd_tflops=round(2.5 * fwd_flops / (both - fwd) / 1e12, 1)
        )
    return {**row, **{key: float(f"{val:.3g}") for key, val in errors.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=84480)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--batches", default="1,2")
    p.add_argument("--kernels", default="flash2,cudnn,fa4_direct,fa4")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/attention.jsonl")
    args = p.parse_args()
    origin = provenance()  # commit and library versions, in every row
    kernels = {
        "flash2": sdpa_with(SDPBackend.FLASH_ATTENTION),
        "cudnn": sdpa_with(SDPBackend.CUDNN_ATTENTION),
        "fa4": attention_kernels.fa4_attention,
        "fa4_direct": fa4_direct,
        # INT8 Q.K, FP8 P.V on sm90, forward only: the inputs quantised by sage_hopper, eager
        "sage": sage_hopper.attention,
        # what `sage` runs inside the compiled blocks: the same, the quantisation fused
        "sage_compiled": torch.compile(attention_kernels.attention_kernel("sage", "cuda")),
        # SageAttention's own quantisation kernels (sageattn: per-thread scales)
        "sage_own": attention_kernels.sage_attention,
        # FP8 Q.K and P.V in cuDNN's fused kernel (Hopper), forward only
        "cudnn_fp8": cudnn_fp8.attention,
        "cudnn_fp8_compiled": torch.compile(cudnn_fp8.attention),
    }
    gen = torch.Generator("cuda").manual_seed(0)
    for batch in map(int, args.batches.split(",")):
        shape = (batch, args.tokens, args.heads, args.head_dim)
        q, k, v = (torch.randn(shape, device="cuda", generator=gen) for _ in range(3))
        grad_out = torch.randn(shape, device="cuda", generator=gen)
        ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
        ref_out = sdpa_with(SDPBackend.EFFICIENT_ATTENTION)(*ref_in)
        ref_out.backward(grad_out)
        ref_grads = [t.grad for t in ref_in]
        reference = (ref_out.detach(), ref_grads)
        del ref_in
        fwd_flops = batch * block_flops(args.tokens, args.heads * args.head_dim)[1]
        for name in args.kernels.split(","):
            if name == "fa4":
                attention_kernels.activate_fa4()
            else:
                attention_kernels.deactivate_fa4()
            forward_only = name.startswith(("fa4_tile:", "sage", "cudnn_fp8"))
            kernel = fa4_tile(name.split(":")[1]) if name.startswith("fa4_tile:") else kernels[name]
            inputs = [t.bfloat16().requires_grad_(not forward_only) for t in (q, k, v)]
            g = grad_out.bfloat16()
            try:
                row = measure(kernel, inputs, g, forward_only, reference, fwd_flops, args)
            except Exception as exc:  # a kernel that cannot run here is a result, not a crash
                row = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            row = {
                "date": datetime.date.today().isoformat(),
                "gpu": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "kernel": name,
                "batch": batch,
                "tokens": args.tokens,
                "heads": args.heads,
                "head_dim": args.head_dim,
                **row,
                **origin,
            }
            print(json.dumps(row), flush=True)
            with Path(args.out).open("a") as f:
                f.write(json.dumps(row) + "\n")
            inputs = g = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
