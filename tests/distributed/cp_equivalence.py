"""Run under torchrun with 2 CPU processes (gloo): CP=2 equals one process, forward and grads.
The CP run goes through `parallelize` (our processors and the frame-wise adaLN) and the
one-process reference is diffusers' model as it comes, with a different timestep per frame."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from diffusers import CosmosControlNetModel, CosmosTransformer3DModel

from cosmos_posttrain.context_parallel import shard_time
from cosmos_posttrain.models import TINY_CONTROLNET, TINY_TRANSFORMER, controlnet_from_base
from cosmos_posttrain.objective import predict_velocity
from cosmos_posttrain.parallelize import parallelize


def build() -> tuple[CosmosTransformer3DModel, CosmosControlNetModel]:
    torch.manual_seed(0)
    base = CosmosTransformer3DModel(**TINY_TRANSFORMER).requires_grad_(False)
    ctrl = controlnet_from_base(base, **TINY_CONTROLNET)
    with torch.no_grad():  # non-zero projections so the branch matters
        for p in ctrl.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return base, ctrl


def inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    t, h, w = 4, 8, 12
    return dict(
        x=torch.randn(1, 12, t, h, w, generator=g),
        timestep=torch.rand(1, 1, t, 1, 1, generator=g),
        text=torch.randn(1, 16, 2304, generator=g),
        cond=torch.zeros(1, 1, t, h, w),
        padding=torch.zeros(1, 1, 2 * h, 2 * w),
        control=torch.randn(1, 12, t, h, w, generator=g),
        target=torch.randn(1, 12, t, h, w, generator=g),
    )


def run(cp_group=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    base, ctrl = build()
    data = inputs()
    total = data["target"].numel()
    if cp_group is not None:
        for model in (base, ctrl):
            parallelize(model, cp_group=cp_group, recompute="none")
        for key in ("x", "timestep", "cond", "control", "target"):
            data[key] = shard_time(data[key], cp_group)
    out = predict_velocity(
        base,
        ctrl,
        data["x"],
        data["timestep"],
        data["text"],
        data["cond"],
        data["padding"],
        data["control"],
    )
    loss = ((out - data["target"]) ** 2).sum() / total
    loss.backward()
    grads = {n: p.grad.clone() for n, p in ctrl.named_parameters() if p.grad is not None}
    if cp_group is not None:
        for grad in grads.values():
            dist.all_reduce(grad, group=cp_group)
        pieces = [torch.empty_like(out) for _ in range(dist.get_world_size(cp_group))]
        dist.all_gather(pieces, out.detach().contiguous(), group=cp_group)
        out = torch.cat(pieces, dim=2)
    return out.detach(), grads


def main() -> int:
    dist.init_process_group("gloo")
    reference_out, reference_grads = run(None)
    out, grads = run(dist.group.WORLD)
    worst_out = ((out - reference_out).abs().max() / reference_out.abs().max()).item()
    worst_grad = max(
        ((grads[k] - g).abs().max() / (g.abs().max() + 1e-12)).item()
        for k, g in reference_grads.items()
    )
    if dist.get_rank() == 0:
        print(
            json.dumps(
                {"forward_rel": worst_out, "grad_rel": worst_grad, "grads": len(reference_grads)}
            )
        )
    dist.destroy_process_group()
    return 0 if worst_out < 1e-5 and worst_grad < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
