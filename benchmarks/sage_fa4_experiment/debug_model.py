"""Compare sage_fa4 with SageAttention's kernel on the model's own attention inputs."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sageattention import sm90_compile  # noqa: E402,F401

from cosmos_posttrain import sage_hopper  # noqa: E402

orig_run = sage_hopper._run
count = [0]


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run(inputs, dtype):
    saved = sage_hopper._kernel
    sage_hopper._kernel = "sageattention"
    ref = orig_run(inputs, dtype)
    sage_hopper._kernel = "fa4"
    out = orig_run(inputs, dtype)
    sage_hopper._kernel = saved
    count[0] += 1
    n = count[0]
    if n <= 12 or rel(out, ref) > 0.1:
        qs, ks = inputs.q_scale, inputs.k_scale
        c = (qs.amax() * ks.amax()).item()
        print(
            f"call {n} {tuple(inputs.q.shape)} fa4_vs_sage={rel(out, ref):.4f} "
            f"qs=[{qs.min().item():.3g},{qs.max().item():.3g}] "
            f"ks=[{ks.min().item():.3g},{ks.max().item():.3g}] "
            f"vs=[{inputs.v_scale.min().item():.3g},{inputs.v_scale.max().item():.3g}] "
            f"cmax={c:.3g} nan={torch.isnan(out).any().item()} "
            f"ref_norm={ref.float().norm().item():.3g} out_norm={out.float().norm().item():.3g}",
            flush=True,
        )
    return ref


sage_hopper._run = run
import bench_inference_gpu  # noqa: E402

sys.argv = [
    "bench",
    "--variants",
    "separate:sage",
    "--measure",
    "1",
    "--steps",
    "1",
    "--out",
    os.path.join(os.environ.get("OUT", "/tmp"), "dbg.jsonl"),
]
bench_inference_gpu.main()
