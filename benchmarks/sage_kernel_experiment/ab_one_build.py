"""Time SageAttention's sm90 kernel (SAGE_2WG_STAGES=0) against the experiment's variants of
one build, in one process: the entry point reads the variable at every call. One build per
process, because CPython keeps the first extension module of a name.

    python3 ab_one_build.py <site with the built sageattention> 0,331,332
"""

import functools
import glob
import importlib.machinery
import importlib.util
import json
import os
import statistics
import sys

import torch

from cosmos_posttrain import sage_hopper

B, H, D = 2, 16, 128


def load_build(site: str):
    """The built `_qattn_sm90` extension under `site`."""
    path = glob.glob(os.path.join(site, "sageattention", "_qattn_sm90*.so"))[0]
    loader = importlib.machinery.ExtensionFileLoader("_qattn_sm90", path)
    spec = importlib.util.spec_from_file_location("_qattn_sm90", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def call(module, x, out, variant: str) -> None:
    os.environ["SAGE_2WG_STAGES"] = variant
    module.qk_int8_sv_f8_accum_f32_fuse_v_scale_attn_inst_buf(
        x.q, x.k, x.v.transpose(1, 2), out, x.q_scale, x.k_scale, x.v_scale, 0, 0, 2, D**-0.5, 0
    )


def inputs(length: int):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, length, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    k = k + torch.randn(1, 1, H, D, device="cuda", dtype=torch.bfloat16) * 4
    return q, k, v


def timed(fn, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 5)
    return times


def main() -> None:
    module = load_build(sys.argv[1])
    variants = sys.argv[2].split(",")
    for length in (4608, 84480):
        q, k, v = inputs(length)
        ref = (
            torch.nn.functional.scaled_dot_product_attention(
                *(t.transpose(1, 2) for t in (q, k, v))
            )
            .transpose(1, 2)
            .float()
        )
        x = sage_hopper.quantise(q, k, v)
        outs = {name: torch.full_like(q, float("nan")) for name in variants}
        for name in variants:
            call(module, x, outs[name], name)
        torch.cuda.synchronize()
        times = {name: [] for name in variants}
        for _ in range(7 if length > 10000 else 5):  # interleaved; the first round is warm-up
            for name in variants:
                times[name] += timed(functools.partial(call, module, x, outs[name], name), 1)
        flops = 4 * B * H * length * length * D
        first = outs[variants[0]]
        for name in variants:
            out, ms = outs[name], statistics.median(times[name][1:])
            row = {
                "L": length, "stages": name, "ms": round(ms, 3),
                "tflops": round(flops / ms / 1e9, 1),
                "rel_err_vs_bf16_sdpa": round(float((out.float() - ref).norm() / ref.norm()), 5),
                "nan": bool(torch.isnan(out).any()),
                "all_ms": [round(t, 3) for t in times[name][1:]],
                "bit_identical_to_original": bool(torch.equal(out, first)),
                "max_abs_diff_vs_original": float((out.float() - first.float()).abs().max()),
                "gpu": torch.cuda.get_device_name(),
            }  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
