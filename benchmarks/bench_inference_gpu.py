"""Seconds per 93-frame 720p chunk of inference on one GPU, with variants side by side.

The 2B architecture (frozen base + 4-block control branch) with random weights in bf16, at the seed
shape (latents 16 x 24 x 88 x 160, 84,480 tokens; text 512 x 100352). One denoising step with
guidance is two model calls (guided and unguided); a chunk is `--steps` (35) of them. Each variant
runs `--measure` steps of the project's model call (`objective.predict_velocity`, as the sampler
makes it) after one warm-up step, and the chunk time is extrapolated from the median step;
`--whole-chunk` also times the `--steps` steps back to back. The variants: the unguided and guided
calls separately or batched into one call, the attention backend, and `torch.compile` of the
transformer blocks; the backend `sage` is SageAttention (INT8 Q.K) through the project's attention
processor, `sage_warp` the same with one Q/K scale per warp instead of per thread, and `cudnn_fp8`
is cuDNN's FP8 attention (the same processor). Extras: `token_adaln` runs the blocks' adaLN per
token as diffusers does (the project runs it per latent frame, frame_adaln.py); `unshared` computes
the first blocks' self-attention for both guidance rows (the sampler shares it,
context_parallel.repeated_video_halves); `cublaslt` sends the matrix products through cuBLASLt
instead of PyTorch's default cuBLAS; `cdtune` compiles with Inductor's coordinate-descent tuning of
its generated kernels; `qk_torch` leaves the q/k RMSNorm, RoPE and quantisation of `sage` to
torch.compile instead of the Triton passes of sage_qk_prologue; on a Hopper GPU `sage_fa4` runs
`sage` through sage_fa4 (the same arithmetic in FlashAttention-4's kernel, what sage_hopper
selects where its pinned packages are installed) and `sage_lib` through SageAttention 2's own
kernel (what it selects otherwise); without either, `sage` runs what sage_hopper selects; `fp8`
(last, it quantises the models in place) runs the blocks' linear layers in FP8 (torchao, dynamic
per-row scales). `--quality` first measures how far one velocity prediction of each kernel lands
from an fp32 reference (mem-efficient SDPA in fp32), and again with FP8 layers when a variant has
them; each variant's row then has the same error of its own model call (`rel_err`: compiled, with
its kernel and extras).
Results go to benchmarks/results/inference.jsonl.
Run on a GPU machine: `python benchmarks/bench_inference_gpu.py`; `TINY=1` runs a toy copy on
the CPU to check the script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import torch
from diffusers import CosmosControlNetModel, CosmosTransformer3DModel
from diffusers.models.attention_dispatch import attention_backend
from gpu_profile import profile_gpu_time
from model_flops import forward_flops
from provenance import provenance
from qkv_products import use_fused_qkv

from cosmos_posttrain import attention_kernels, sage_hopper
from cosmos_posttrain.attention_kernels import deactivate_fa4
from cosmos_posttrain.context_parallel import (
    blocks_of,
    set_cross_attention,
    set_self_attention,
    shard_time,
)
from cosmos_posttrain.distributed import init_world
from cosmos_posttrain.frame_adaln import set_frame_adaln
from cosmos_posttrain.models import CONTROLNET_2B, TINY_CONTROLNET, TINY_TRANSFORMER, TRANSFORMER_2B
from cosmos_posttrain.objective import predict_velocity
from cosmos_posttrain.parallelize import compile_blocks
from cosmos_posttrain.sampling import guided_velocity

TINY = os.environ.get("TINY") == "1"


def sage_warp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SageAttention 2's Hopper kernel with per-warp Q/K scales (sageattn() picks per-thread)."""
    from sageattention import sageattn_qk_int8_pv_fp8_cuda_sm90

    return sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, tensor_layout="NHD", qk_quant_gran="per_warp")


def sage_path(model: torch.nn.Module, compiled: bool) -> str:
    """What a sage-kind variant ran: a Hopper kernel fed by sage_hopper (the kernel
    attention_kernels picked, inside compiled blocks; which one, sage_fa4 or SageAttention's),
    or sageattn's own kernels."""
    kernel = blocks_of(model)[0].attn1.processor.kernel
    hopper = kernel is attention_kernels.sage_hopper_attention and compiled
    return f"sage_hopper:{sage_hopper.select()}" if hopper else "sageattn"


def quantise_fp8(*models: torch.nn.Module) -> None:
    """The blocks' linear layers in FP8 (torchao: dynamic per-row activation and weight scales,
    torch._scaled_mm); embeddings, projections and the final layer stay bf16."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    for model in models:
        for block in blocks_of(model):
            quantize_(block, config, filter_fn=lambda m, _: isinstance(m, torch.nn.Linear))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--measure", type=int, default=3)
    p.add_argument(
        "--variants",
        default="separate:native,batched:native,batched:_native_cudnn,"
        "batched:_native_cudnn:compile",
    )
    p.add_argument("--out", default="benchmarks/results/inference.jsonl")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--quality-kernels", default="sdpa,sage,fa4")
    p.add_argument(
        "--whole-chunk",
        action="store_true",
        help="also time --steps steps back to back (the GPU at its working temperature) "
        "instead of only extrapolating from the median of --measure",
    )
    p.add_argument("--profile", action="store_true", help="also profile one step's kernels")
    p.add_argument("--profile-rows", type=int, default=25, help="kernels listed by --profile")
    args = p.parse_args()
    # under torchrun, every process takes part in each call: Ulysses CP over all of them
    world = init_world("cpu" if TINY else "cuda", int(os.environ.get("WORLD_SIZE", "1")))
    device = world.device
    dtype = torch.float32 if TINY else torch.bfloat16
    t_kw, c_kw = (TINY_TRANSFORMER, TINY_CONTROLNET) if TINY else (TRANSFORMER_2B, CONTROLNET_2B)
    base = CosmosTransformer3DModel(**t_kw).to(device, dtype).eval().requires_grad_(False)
    ctrl = CosmosControlNetModel(**c_kw).to(device, dtype).eval().requires_grad_(False)
    channels = t_kw["out_channels"]
    t, h, w = (4, 16, 28) if TINY else (24, 88, 160)
    text_dim, text_len = t_kw["crossattn_proj_in_channels"], 32 if TINY else 512
    g = torch.Generator(device=device).manual_seed(0)  # the same draws on every rank
    x = torch.randn(1, channels, t, h, w, device=device, dtype=dtype, generator=g)
    control = torch.randn(1, channels, t, h, w, device=device, dtype=dtype, generator=g)
    text = torch.randn(1, text_len, text_dim, device=device, dtype=dtype, generator=g)
    uncond = torch.randn(1, text_len, text_dim, device=device, dtype=dtype, generator=g)
    spatial = 2 if TINY else 8
    padding = torch.zeros(1, 1, h * spatial, w * spatial, device=device, dtype=dtype)
    cond_mask = torch.zeros(1, 1, t, h, w, device=device, dtype=dtype)
    timestep = torch.full((1, 1, t, 1, 1), 0.5, device=device, dtype=dtype)
    tokens = t * (h // 2) * (w // 2)
    if world.cp > 1:
        x, control, cond_mask, timestep = (
            shard_time(v, world.cp_group) for v in (x, control, cond_mask, timestep)
        )
    name = "cpu" if TINY else torch.cuda.get_device_name()
    origin = provenance()  # commit and library versions, in every row
    compiled = False

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def use_kernel(kernel: str) -> None:
        if kernel != "fa4":
            deactivate_fa4()  # SDPA's flash backend back to Flash-2
        for model in (base, ctrl):  # the processors inference.py gets from parallelize
            set_self_attention(model, world.cp_group, kernel)
            set_cross_attention(model)

    blas = torch.backends.cuda.preferred_blas_library() if device.type == "cuda" else None
    frame_adaln_now = True  # as parallelize sets it up for inference.py
    for model in (base, ctrl):
        set_frame_adaln(model)
    projected_entries = attention_kernels.PROJECTED  # the module's table, put back by name
    attention_kernels.KERNELS["sage_warp"] = sage_warp_attention
    # SageAttention with its own quantisation kernels (sageattn), as `sage` ran before sage_hopper
    attention_kernels.KERNELS["sage_own"] = attention_kernels.sage_attention
    inputs = (x, timestep, text, cond_mask, padding, control)
    # the Hopper kernel `sage` runs by default (sage_hopper.select), before a variant forces one
    hopper = device.type == "cuda" and sage_hopper.available(device)
    hopper_default = sage_hopper.select() if hopper else None
    reference = None
    if args.quality and world.cp == 1:
        reference = quality(args, base, ctrl, inputs, use_kernel)
    quantised = False
    kernel_now = None

    for variant in args.variants.split(","):
        mode, backend, *extra = variant.split(":")
        if "fp8" in extra and not quantised:
            if compiled:
                torch._dynamo.reset()  # recompile the blocks around the FP8 layers
            quantise_fp8(base, ctrl)
            quantised = True
            # the stacked-weight product is not measured on torchao's FP8 weights: the FP8
            # rows were taken with diffusers' three products
            use_fused_qkv(False)
            if reference is not None:
                fp8_quality(args, base, ctrl, inputs, use_kernel, reference)
        known = {
            "compile",
            "fp8",
            "token_adaln",
            "unshared",
            "cublaslt",
            "cdtune",
            "autotune",
            "qk_torch",
            "sage_fa4",
            "sage_lib",
        }
        if not set(extra) <= known:
            raise SystemExit(f"variant {variant!r}: extras are {', '.join(sorted(known))}")
        if ("cdtune" in extra) != torch._inductor.config.coordinate_descent_tuning:
            torch._inductor.config.coordinate_descent_tuning = "cdtune" in extra
            torch._dynamo.reset()  # compile the blocks afresh with the other setting
        if ("autotune" in extra) != torch._inductor.config.max_autotune_gemm:
            # Inductor times its Triton matrix products against cuBLAS, with the elementwise
            # work after them (the MLP's GELU) fused in, and keeps the faster
            torch._inductor.config.max_autotune_gemm = "autotune" in extra
            torch._dynamo.reset()
        if device.type == "cuda":  # the matrix products through cuBLASLt's heuristics or cuBLAS
            torch.backends.cuda.preferred_blas_library("cublaslt" if "cublaslt" in extra else blas)
        frame_adaln = "token_adaln" not in extra
        if frame_adaln != frame_adaln_now:
            for model in (base, ctrl):
                set_frame_adaln(model, frame_adaln)
            frame_adaln_now = frame_adaln
            torch._dynamo.reset()  # the blocks' norms changed class: compile them afresh
        projected = {} if "qk_torch" in extra else projected_entries
        if projected != attention_kernels.PROJECTED:
            attention_kernels.PROJECTED = projected
            torch._dynamo.reset()  # the processor takes the other path: compile it afresh
        if "compile" in extra and not compiled:
            for model in (base, ctrl):
                compile_blocks(model)
            compiled = True

        own_kernel = backend in attention_kernels.KERNELS  # through the project's processor
        kernel = backend if own_kernel else "sdpa"
        if compiled and kernel != kernel_now:
            # compile the blocks afresh around the new kernel: recompiling them in place for a
            # third kernel passes dynamo's recompile limit, and the blocks then run eagerly
            torch._dynamo.reset()
        if hopper_default is not None and kernel == "sage":
            hopper_kernel = (
                "fa4" if "sage_fa4" in extra else "sageattention" if "sage_lib" in extra else None
            ) or hopper_default
            if sage_hopper.select() != hopper_kernel:
                sage_hopper.select(hopper_kernel)
                torch._dynamo.reset()  # the blocks call the other kernel: compile them afresh
        use_kernel(kernel)
        kernel_now = kernel
        backend = "native" if own_kernel else backend

        shared = "unshared" not in extra  # the first blocks' self-attention, as in sampling

        def step(mode: str = mode, backend: str = backend, shared=shared) -> torch.Tensor:
            with torch.no_grad(), attention_backend(backend):
                if mode == "batched":  # the sampler's call
                    return guided_velocity(
                        base,
                        ctrl,
                        x,
                        timestep,
                        text,
                        uncond,
                        cond_mask,
                        padding,
                        control,
                        1.0,
                        3.0,
                        share_first_rows=shared,
                    )
                v = predict_velocity(base, ctrl, x, timestep, text, cond_mask, padding, control)
                v_u = predict_velocity(base, ctrl, x, timestep, uncond, cond_mask, padding, control)
                return v + 3.0 * (v - v_u)

        record = {
            "date": datetime.date.today().isoformat(),
            "gpu": name,
            "variant": variant,
            "torch": torch.__version__,
            **origin,
            "tokens": tokens,
            "world_size": world.size,
            "cp": world.cp,
            "fp8_linear": quantised,  # once quantised, every later variant runs FP8 too
            "frame_adaln": frame_adaln,
            "coordinate_descent_tuning": "cdtune" in extra,
            "max_autotune_gemm": "autotune" in extra,
            "blas": str(torch.backends.cuda.preferred_blas_library()) if blas else None,
            "shared_first_rows": shared and mode == "batched",
            "sage_path": sage_path(base, compiled) if "sage" in variant else None,
        }
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            step()
            sync()
            record["warmup_s"] = round(time.perf_counter() - start, 2)
            times = []
            for _ in range(args.measure):
                start = time.perf_counter()
                step()
                sync()
                times.append(time.perf_counter() - start)
            median = sorted(times)[len(times) // 2]
            flops = 2 * forward_flops(tokens) / world.cp  # per GPU
            record.update(
                s_per_step=round(median, 3),
                s_per_chunk=round(median * args.steps, 1),
                steps=args.steps,
                tflops=round(flops / median / 1e12, 1),
                mfu=round(flops / median / 989e12, 3),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1)
                if device.type == "cuda"
                else None,
            )
            if args.whole_chunk:
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                sync()
                record["s_whole_chunk"] = round(time.perf_counter() - start, 1)
            if reference is not None:  # one velocity of the variant's model call, as --quality
                with torch.no_grad(), attention_backend(backend):
                    v = predict_velocity(base, ctrl, *inputs).float()
                record["rel_err"] = round(relative_error(v, reference), 5)
            if args.profile and device.type == "cuda":
                record["gpu_time_by_kind"] = profile_gpu_time(step, rows=args.profile_rows)
        except Exception as exc:  # noqa: BLE001 - a failed variant is a result too
            record["error"] = repr(exc)[:300]
        if not world.is_main:
            continue
        print(json.dumps(record), flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def write_quality(args, results: dict[str, float]) -> None:
    record = {
        "date": datetime.date.today().isoformat(),
        "gpu": "cpu" if TINY else torch.cuda.get_device_name(),
        "quality": "relative error of one velocity vs fp32 mem-efficient SDPA",
        **provenance(),
        **{f"rel_err_{k}": round(v, 5) for k, v in results.items()},
    }
    print(json.dumps(record), flush=True)
    with Path(args.out).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def relative_error(velocity: torch.Tensor, reference: torch.Tensor) -> float:
    return float((velocity - reference).norm() / reference.norm())


def kernel_errors(kernels, use_kernel, velocity, reference: torch.Tensor) -> dict[str, float]:
    """Relative error of `velocity()` against `reference` with each kernel in turn."""
    results = {}
    for kernel in kernels:
        use_kernel(kernel)
        results[kernel] = relative_error(velocity(), reference)
    return results


def quality_kernels(args) -> tuple[str, ...]:
    """The kernels --quality compares (the CPU toy run has only sdpa)."""
    return tuple(args.quality_kernels.split(",")) if not TINY else ("sdpa",)


@torch.no_grad()
def fp8_quality(args, base, ctrl, inputs, use_kernel, reference: torch.Tensor) -> None:
    """The same error with the FP8 linear layers, per kernel (the models are bf16 already)."""
    errors = kernel_errors(
        quality_kernels(args),
        use_kernel,
        lambda: predict_velocity(base, ctrl, *inputs).float(),
        reference,
    )
    write_quality(args, {f"{kernel}+fp8": error for kernel, error in errors.items()})


@torch.no_grad()
def quality(args, base, ctrl, inputs, use_kernel) -> torch.Tensor:
    """Relative error of one velocity prediction per kernel against an fp32 reference, which
    is returned."""
    x, timestep, text, cond_mask, padding, control = inputs

    def velocity(dtype: torch.dtype, backend: str) -> torch.Tensor:
        cast = [t.to(dtype) for t in inputs]
        base.to(dtype)
        ctrl.to(dtype)
        with attention_backend(backend):
            v = predict_velocity(base, ctrl, cast[0], cast[1], cast[2], cast[3], cast[4], cast[5])
        return v.float()

    torch.backends.cuda.matmul.allow_tf32 = False
    use_kernel("sdpa")
    reference = velocity(torch.float32, "_native_efficient" if not TINY else "native")
    kernels = quality_kernels(args)
    dtype = torch.bfloat16 if not TINY else torch.float32
    results = kernel_errors(kernels, use_kernel, lambda: velocity(dtype, "native"), reference)
    base.to(x.dtype)
    ctrl.to(x.dtype)
    write_quality(args, results)
    return reference


if __name__ == "__main__":
    main()
