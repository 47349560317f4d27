"""Check and time the variants against SageAttention's Hopper kernel on the same inputs."""

import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import variants as sage_fa4  # noqa: E402

from cosmos_posttrain import sage_hopper  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
HAVE_SAGE = os.environ.get("HAVE_SAGE") == "1"
CONFIGS = json.loads(os.environ.get("CONFIGS", "[{}]"))
rows = []


def log(**row):
    rows.append(row)
    print(json.dumps(row), flush=True)
    with open(os.path.join(OUT, "i8.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def inputs(batch, tokens, q_gain=1.0, heads=16, dim=128, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(batch, tokens, heads, dim, device="cuda", generator=g) for _ in range(3))
    return (q * q_gain).bfloat16(), k.bfloat16(), v.bfloat16()


def exact(q, k, v):
    o = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v)))
    return o.transpose(1, 2)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


if HAVE_SAGE:
    from sageattention import sm90_compile  # noqa: F401  (registers the kernel's torch op)


def sage_kernel(si):
    return sage_hopper._run(si, torch.bfloat16)


stage = sys.argv[1] if len(sys.argv) > 1 else "check"
print(torch.cuda.get_device_name(), torch.__version__, flush=True)

if stage in ("check", "all"):
    for gain in (1.0, 3.0):
        q, k, v = inputs(1, 4608, gain)
        ref = exact(q, k, v)
        si = sage_hopper.quantise(q, k, v)
        for cfg in CONFIGS:
            t0 = time.time()
            try:
                out = sage_fa4.sage_fa4(*si, **cfg)
                torch.cuda.synchronize()
                row = dict(
                    kind="check",
                    cfg=cfg,
                    gain=gain,
                    err_new=rel(out, ref),
                    compile_s=round(time.time() - t0, 1),
                )
                if HAVE_SAGE:
                    o2 = sage_kernel(si)
                    row.update(err_sage=rel(o2, ref), new_vs_sage=rel(out, o2))
                log(**row)
            except Exception as e:  # report and go on to the next configuration
                import traceback

                traceback.print_exc()
                log(kind="check", cfg=cfg, gain=gain, error=repr(e)[:2000])

if stage in ("time", "all"):
    q, k, v = inputs(2, 84480)
    si = sage_hopper.quantise(q, k, v)
    del q, k, v
    kernels = {
        f"fa4i8:{json.dumps(c, sort_keys=True)}": (lambda c=c: sage_fa4.sage_fa4(*si, **c))
        for c in CONFIGS
    }
    if HAVE_SAGE:
        kernels["sage"] = lambda: sage_kernel(si)
    outs = {}
    for name, fn in kernels.items():
        try:
            outs[name] = fn()
        except Exception as e:
            log(kind="time", name=name, error=repr(e)[:1000])
    kernels = {n: f for n, f in kernels.items() if n in outs}
    if "sage" in outs:
        for n in outs:
            log(kind="big_diff", name=n, vs_sage=rel(outs[n], outs["sage"]))
    del outs
    # heat: 15 s of calls, then alternate rounds
    end = time.time() + 15
    while time.time() < end:
        for fn in kernels.values():
            fn()
        torch.cuda.synchronize()
    times = {n: [] for n in kernels}
    for _ in range(6):
        for n, fn in kernels.items():
            start, stop = torch.cuda.Event(True), torch.cuda.Event(True)
            start.record()
            for _ in range(5):
                fn()
            stop.record()
            torch.cuda.synchronize()
            times[n].append(start.elapsed_time(stop) / 5)
    flops = 4 * 2 * 16 * 84480**2 * 128
    for n, ts in times.items():
        ts.sort()
        med = ts[len(ts) // 2]
        log(
            kind="time",
            name=n,
            ms_median=round(med, 2),
            ms_all=[round(t, 2) for t in ts],
            tflops=round(flops / med / 1e9, 1),
        )
