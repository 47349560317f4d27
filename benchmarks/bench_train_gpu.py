"""Seconds per training step at the seed shape, on one or several GPUs, with variants.

The Cosmos-Transfer2.5-2B architecture (frozen 28-block base in bf16 + trainable 4-block
control branch with fp32 master weights, random weights), one clip of 93 x 704 x 1280 per data-
parallel rank (latents 16 x 24 x 88 x 160 = 84,480 tokens, text 512 x 100352), through the
project's own code: `parallelize` (attention processor and Ulysses CP, recompute policy,
compile, FSDP2), `objective` (noisy input, velocity, loss), fused AdamW, power EMA.

Variants are `recompute:mode[:kernel[/flags][:cross]]`:
- recompute in none|full|save_attention;
- mode in eager|compile|autotune (compile with Inductor's max-autotune GEMMs);
- the self-attention kernel (attention_kernels.py: sdpa by default here, fa4, auto), with
  `/unfused` after it projecting q, k and v in three products instead of the processor's one,
  and `/token_adaln` running the blocks' adaLN per token as diffusers does, not per frame;
- `cross` as `backend[/splits]`: the diffusers attention backend for everything else that goes
  through its dispatcher, the cross-attention above all (default `native`, PyTorch's own
  choice: cuDNN on Hopper), and how many rows the cross-attention's queries are split into
  (default 4, as in parallelize).
`--encoders` also keeps the text encoder (Qwen2.5-VL-7B architecture) and the
Wan2.1 VAE on the GPU and runs both in every step, as the trainer does. Model FLOPs are counted
like shared/bench's baseline (forward + a backward with input gradients only through the frozen
base; recompute not counted); MFU is against 989 TFLOP/s. One JSON line per variant goes to
`--out`. Launch: `torchrun --nproc_per_node=N benchmarks/bench_train_gpu.py --cp K`.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from diffusers import CosmosControlNetModel, CosmosTransformer3DModel
from diffusers.models.attention_dispatch import attention_backend
from gpu_profile import profile_gpu_time
from model_flops import training_step_flops
from provenance import provenance
from qkv_products import use_fused_qkv
from torch.distributed.device_mesh import init_device_mesh

from cosmos_posttrain.context_parallel import shard_time
from cosmos_posttrain.distributed import average_gradients, init_world
from cosmos_posttrain.ema import PowerEMA
from cosmos_posttrain.experiments import latent_frames
from cosmos_posttrain.models import CONTROLNET_2B, TRANSFORMER_2B, is_trained
from cosmos_posttrain.objective import NoisyInput, flow_loss, make_noisy_input, predict_velocity
from cosmos_posttrain.parallelize import fsdp_loss_scale, parallelize
from cosmos_posttrain.text_encoders import concat_normalised_layers

PEAK_TFLOPS = 989.0


def text_encoder_7b(device: torch.device) -> torch.nn.Module:
    """Qwen2.5-VL-7B's architecture (Cosmos-Reason1), random weights, bf16."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=128000,
        ),
        vision_config=dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584
        ),
    )
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    return model.eval().requires_grad_(False)


def train_step(args, world, encoders, use_fsdp: bool, state, iteration: int) -> float:
    """One optimizer step on one clip per data-parallel rank, as the trainer takes it."""
    base, ctrl, trained, optimizer, ema, g = state
    device = world.device
    t, h, w = latent_frames(args.frames), args.height // 8, args.width // 8
    if encoders is not None:
        tokenizer, text_model = encoders
        frames = torch.rand(1, 3, args.frames, args.height, args.width, device=device)
        x0 = tokenizer.encode(frames * 2 - 1)
        control = tokenizer.encode(frames.flip(-1) * 2 - 1)
        ids = torch.randint(0, 150000, (1, 512), device=device, generator=g)
        with torch.no_grad():
            out = text_model(input_ids=ids, output_hidden_states=True)
        text = concat_normalised_layers(out.hidden_states).to(torch.bfloat16)
        del out
    else:
        x0 = torch.randn(1, 16, t, h, w, device=device, generator=g)
        control = torch.randn(1, 16, t, h, w, device=device, generator=g)
        text = torch.randn(1, 512, 100352, device=device, generator=g, dtype=torch.bfloat16)
    noise = torch.randn(x0.shape, device=device, generator=g)
    sigma = torch.rand(1, device=device, generator=g)
    noisy = make_noisy_input(x0, noise, sigma, 1, 0.0001)
    padding = torch.zeros(1, 1, args.height, args.width, device=device)
    total = None
    if world.cp_group is not None:
        total = noisy.target.numel()
        noisy = NoisyInput(*(shard_time(x, world.cp_group) for x in vars(noisy).values()))
        control = shard_time(control, world.cp_group)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        pred = predict_velocity(
            base, ctrl, noisy.x_t, noisy.timestep, text, noisy.cond_mask, padding, control
        )
    loss = flow_loss(pred, noisy, total)
    (loss * (fsdp_loss_scale(world.cp) if use_fsdp else 1.0)).backward()
    if not use_fsdp:
        average_gradients(trained, world)
    torch.nn.utils.clip_grad_norm_(trained, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ema.update(ctrl, iteration)
    return float(loss.detach())


def time_checkpoints(folder: Path, state) -> dict:
    """Seconds a save blocks training, synchronous and asynchronous (DCP), and until written."""
    from types import SimpleNamespace

    from cosmos_posttrain.checkpoint import Checkpointer
    from cosmos_posttrain.trainer import checkpoint_states

    _, ctrl, _, optimizer, ema, _ = state
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    states = checkpoint_states(
        SimpleNamespace(controlnet=ctrl), optimizer, scheduler, ema, {"epoch": 0}, 1
    )
    timings = {}
    for mode in ("sync", "async"):
        checkpointer = Checkpointer(folder / mode, async_mode=mode == "async")
        start = time.perf_counter()
        checkpointer.save(1, states)
        timings[f"ckpt_{mode}_blocking_s"] = round(time.perf_counter() - start, 2)
        checkpointer.wait()
        timings[f"ckpt_{mode}_total_s"] = round(time.perf_counter() - start, 2)
    size = sum(f.stat().st_size for f in (folder / "sync").rglob("*") if f.is_file())
    timings["ckpt_gib"] = round(size / 2**30, 2)
    return timings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cp", type=int, default=1)
    p.add_argument("--variants", default="full:eager,save_attention:eager,save_attention:compile")
    p.add_argument("--frames", type=int, default=93)
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--measure", type=int, default=3)
    p.add_argument("--encoders", action="store_true")
    p.add_argument("--fsdp", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--out", default="benchmarks/results/train_step.jsonl")
    p.add_argument("--profile", action="store_true", help="also profile one step's kernels")
    p.add_argument(
        "--checkpoint-dir",
        default="",
        help="also time a checkpoint save there (the trainer's states), sync and async",
    )
    args = p.parse_args()

    world = init_world("cuda", args.cp)
    device = world.device
    use_fsdp = args.fsdp == "on" or (args.fsdp == "auto" and world.size > 1)
    mesh = init_device_mesh("cuda", (world.size,)) if use_fsdp else None
    t, h, w = latent_frames(args.frames), args.height // 8, args.width // 8
    tokens = t * (h // 2) * (w // 2)
    origin = provenance()  # commit and library versions, in every row
    encoders = None
    if args.encoders:
        from diffusers import AutoencoderKLWan

        from cosmos_posttrain.tokenizers import WanTokenizer

        vae = AutoencoderKLWan().to(device, torch.bfloat16).eval().requires_grad_(False)
        encoders = (WanTokenizer(vae).to(device), text_encoder_7b(device))

    for variant in args.variants.split(","):
        # recompute:mode[:kernel[/flags][:backend[/splits]]], as the docstring says
        recompute, mode, *rest = variant.split(":")
        kernel, *flags = (rest[0] if rest else "sdpa").split("/")
        cross, _, splits = (rest[1] if len(rest) > 1 else "native").partition("/")
        if (
            len(rest) > 2
            or mode not in ("eager", "compile", "autotune")
            or not set(flags) <= {"unfused", "token_adaln"}
            or not (splits or "4").isdigit()
            or int(splits or 4) < 1
        ):
            raise SystemExit(
                f"variant {variant!r}: use recompute:eager|compile|autotune"
                "[:kernel[/unfused][/token_adaln][:backend[/splits]]]"
            )
        use_fused_qkv("unfused" not in flags)
        splits = int(splits or 4)
        torch._dynamo.reset()  # each variant compiles afresh (no shared recompile budget)
        torch._inductor.config.max_autotune_gemm = mode == "autotune"
        gc.collect()
        torch.cuda.empty_cache()
        torch.manual_seed(0)
        with torch.device(device):
            base = CosmosTransformer3DModel(**TRANSFORMER_2B).to(torch.bfloat16)
            ctrl = CosmosControlNetModel(**CONTROLNET_2B)  # fp32 master weights
        base.requires_grad_(False)
        for name, param in ctrl.named_parameters():
            param.requires_grad_(is_trained(name))
        for model in (base, ctrl):
            parallelize(
                model,
                cp_group=world.cp_group,
                attention_kernel=kernel,
                cross_attention_splits=splits,
                frame_adaln="token_adaln" not in flags,
                recompute=recompute,
                compile=mode in ("compile", "autotune"),
                fsdp_mesh=mesh if model is ctrl else None,
            )
        trained = [q for q in ctrl.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=1e-5, fused=True)
        ema = PowerEMA(ctrl)
        g = torch.Generator(device=device).manual_seed(1000 + world.dp_rank)

        state = (base, ctrl, trained, optimizer, ema, g)

        def step(iteration: int, state=state, cross=cross) -> float:
            with attention_backend(cross):
                return train_step(args, world, encoders, use_fsdp, state, iteration)

        record = {
            "date": datetime.date.today().isoformat(),
            "gpu": torch.cuda.get_device_name(),
            "world_size": world.size,
            "cp": world.cp,
            "dp": world.dp,
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "tokens": tokens,
            "recompute": recompute,
            "compile": mode != "eager",
            "max_autotune_gemm": mode == "autotune",
            "attention_kernel": kernel,
            "fused_qkv": "unfused" not in flags,
            "frame_adaln": "token_adaln" not in flags,
            "cross_attention_backend": cross,
            "cross_attention_splits": splits,
            "fsdp": use_fsdp,
            "encoders": args.encoders,
            "torch": torch.__version__,
            **origin,
        }
        try:
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for i in range(1 if mode == "eager" else 2):
                step(i)
            torch.cuda.synchronize()
            record["warmup_s"] = round(time.perf_counter() - start, 1)
            times = []
            for i in range(args.measure):
                if world.size > 1:
                    dist.barrier()
                torch.cuda.synchronize()
                start = time.perf_counter()
                loss = step(10 + i)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            median = sorted(times)[len(times) // 2]
            forward, backward = training_step_flops(tokens)
            per_gpu = (forward + backward) / world.cp  # a CP group shares one clip
            peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device=device)
            if world.size > 1:
                dist.all_reduce(peak, op=dist.ReduceOp.MAX)
            record.update(
                s_per_step=round(median, 3),
                clips_per_s=round(world.dp / median, 4),
                peak_gib=round(float(peak), 1),
                tflops_per_gpu=round(per_gpu / median / 1e12, 1),
                mfu=round(per_gpu / median / (PEAK_TFLOPS * 1e12), 3),
                loss=round(loss, 4),
                times=[round(x, 3) for x in times],
            )
            if args.checkpoint_dir:
                record.update(time_checkpoints(Path(args.checkpoint_dir) / variant, state))
            if args.profile:  # every rank steps (collectives); the main rank prints
                record["gpu_time_by_kind"] = profile_gpu_time(
                    functools.partial(step, 99), rows=25 if world.is_main else 0
                )
        except torch.OutOfMemoryError:
            record["error"] = "OOM"
        except Exception as exc:  # noqa: BLE001 - a failed variant is a result too
            record["error"] = repr(exc)[:400]
        if world.is_main:
            print(json.dumps(record), flush=True)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        del base, ctrl, optimizer, ema, trained, state
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    main()
