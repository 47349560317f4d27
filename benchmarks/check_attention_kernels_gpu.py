"""GPU check of the attention-kernel choice on the product path (tiny models, bf16 autocast).

`attention_kernel="auto"` against `sdpa`: the velocity and the control branch's gradients of
the same inputs (bf16 base, fp32 branch, as the trainer runs them). Alone it goes through
`parallelize` with compile and `save_attention`; under torchrun with 2 processes the `auto`
run uses Ulysses CP=2 (NCCL) against one process with SDPA. Prints the kernel PyTorch's flash
backend runs and the relative differences (bf16 rounding of two kernels: well under 1%).
Run: `python benchmarks/check_attention_kernels_gpu.py` or
`torchrun --nproc_per_node=2 benchmarks/check_attention_kernels_gpu.py`.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist
from diffusers import CosmosTransformer3DModel

from cosmos_posttrain.context_parallel import shard_time
from cosmos_posttrain.models import TINY_CONTROLNET, TINY_TRANSFORMER, controlnet_from_base
from cosmos_posttrain.objective import predict_velocity
from cosmos_posttrain.parallelize import parallelize


def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    base = CosmosTransformer3DModel(**TINY_TRANSFORMER).cuda().bfloat16().requires_grad_(False)
    ctrl = controlnet_from_base(base, **TINY_CONTROLNET).cuda().float()
    with torch.no_grad():  # non-zero projections so the branch matters
        for param in ctrl.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return base, ctrl


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    t, h, w = 8, 32, 56
    data = dict(
        x=torch.randn(1, 12, t, h, w, generator=g),
        timestep=torch.rand(1, 1, t, 1, 1, generator=g),
        text=torch.randn(1, 16, TINY_TRANSFORMER["crossattn_proj_in_channels"], generator=g),
        cond=torch.zeros(1, 1, t, h, w),
        padding=torch.zeros(1, 1, 2 * h, 2 * w),
        control=torch.randn(1, 12, t, h, w, generator=g),
    )
    return {key: value.cuda() for key, value in data.items()}


def run(pair, kernel: str, group, compile: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity (whole clip) and the branch's flattened gradient of sum(velocity^2)."""
    base, ctrl = (copy.deepcopy(m) for m in pair)
    for model in (base, ctrl):
        parallelize(
            model, cp_group=group, attention_kernel=kernel, recompute="save_attention",
            compile=compile,
        )  # fmt: skip
    data = inputs()
    if group is not None:
        for key in ("x", "timestep", "cond", "control"):
            data[key] = shard_time(data[key], group)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = predict_velocity(
            base, ctrl, data["x"], data["timestep"], data["text"], data["cond"],
            data["padding"], data["control"],
        )  # fmt: skip
    out.float().square().sum().backward()
    grad = torch.cat([p.grad.flatten() for p in ctrl.parameters() if p.grad is not None])
    if group is not None:  # shard losses add up: sum the gradients, gather the frames
        dist.all_reduce(grad, group=group)
        parts = [torch.empty_like(out) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, out.contiguous(), group=group)
        out = torch.cat(parts, dim=2)
    return out.float().detach(), grad


def main() -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    group = None
    if world > 1:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl")
        group = dist.group.WORLD
    pair = models()
    ref_v, ref_g = run(pair, "sdpa", None, compile=False)
    torch._dynamo.reset()
    v, g = run(pair, "auto", group, compile=group is None)
    if group is None or dist.get_rank() == 0:
        print(
            f"world {world}: flash backend runs {torch.nn.attention.current_flash_attention_impl()}"
            f"; velocity rel. diff {float((v - ref_v).norm() / ref_v.norm()):.4f}"
            f"; gradient rel. diff {float((g - ref_g).norm() / ref_g.norm()):.4f}"
        )
    if group is not None:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
