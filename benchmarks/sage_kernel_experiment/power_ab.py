"""Is SageAttention's kernel power-limited in the inference step? The kernel as built (value 0)
against a variant of the same build, picked at every call by the environment variable AB_ENV
(SAGE_2WG_STAGES=333: the eighth session's shared-tile kernel; SAGE_KV_STAGES=2: kv_ring.sh),
(A) alone under sustained load and (B) inside guided inference steps, alternating."""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, "benchmarks")
import sageattention  # noqa: F401 - registers torch.ops.sageattention_sm90 (the patched build)
import torch

from cosmos_posttrain import sage_hopper

VARS = os.environ.get("AB", "0,333").split(",")
ENV = os.environ.get("AB_ENV", "SAGE_2WG_STAGES")
out = open(os.path.join(os.environ["OUT"], "power_ab.jsonl"), "a")


def emit(**r):
    r["t"] = time.strftime("%H:%M:%S")
    print(json.dumps(r), flush=True)
    out.write(json.dumps(r) + "\n")
    out.flush()


B, H, D, L = 2, 16, 128, 84480
torch.manual_seed(0)
q, k, v = (torch.randn(B, L, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
k = k + torch.randn(1, 1, H, D, device="cuda", dtype=torch.bfloat16) * 4
x = sage_hopper.quantise(q, k, v)


def run(var):
    os.environ[ENV] = var
    return sage_hopper._run(x, torch.bfloat16)


o = {var: run(var) for var in VARS}
torch.cuda.synchronize()
emit(phase="identity", same=[bool(torch.equal(o[VARS[0]], o[v_])) for v_ in VARS])


def block(var, n):
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n):
        run(var)
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n


if "A" in os.environ.get("PARTS", "AB"):
    for var in VARS:
        block(var, 3)
    emit(phase="cold", **{var: round(block(var, 10), 2) for var in VARS})
    block(VARS[0], int(os.environ.get("HEAT", "150")))
    res = {var: [] for var in VARS}
    for r in range(int(os.environ.get("ROUNDS", "8"))):
        for var in VARS if r % 2 == 0 else VARS[::-1]:
            res[var].append(round(block(var, 20), 2))
    emit(phase="hot", **{var: {"median": statistics.median(t), "all": t} for var, t in res.items()})
x = o = q = k = v = None  # free the attention inputs before the model is built
torch.cuda.empty_cache()

if "B" in os.environ.get("PARTS", "AB"):
    from diffusers import CosmosControlNetModel, CosmosTransformer3DModel

    from cosmos_posttrain.context_parallel import set_cross_attention, set_self_attention
    from cosmos_posttrain.frame_adaln import set_frame_adaln
    from cosmos_posttrain.models import CONTROLNET_2B, TRANSFORMER_2B
    from cosmos_posttrain.parallelize import compile_blocks
    from cosmos_posttrain.sampling import guided_velocity

    dev, dt = torch.device("cuda"), torch.bfloat16
    base = CosmosTransformer3DModel(**TRANSFORMER_2B).to(dev, dt).eval().requires_grad_(False)
    ctrl = CosmosControlNetModel(**CONTROLNET_2B).to(dev, dt).eval().requires_grad_(False)
    for m in (base, ctrl):
        set_frame_adaln(m)
        set_self_attention(m, None, "sage")
        set_cross_attention(m)
        compile_blocks(m)
    g = torch.Generator(device=dev).manual_seed(0)
    c, t, h, w = TRANSFORMER_2B["out_channels"], 24, 88, 160
    xx = torch.randn(1, c, t, h, w, device=dev, dtype=dt, generator=g)
    control = torch.randn(1, c, t, h, w, device=dev, dtype=dt, generator=g)
    text = torch.randn(
        1, 512, TRANSFORMER_2B["crossattn_proj_in_channels"], device=dev, dtype=dt, generator=g
    )
    uncond = torch.randn_like(text)
    cond_mask = torch.zeros(1, 1, t, h, w, device=dev, dtype=dt)
    padding = torch.zeros(1, 1, h * 8, w * 8, device=dev, dtype=dt)
    ts_ = torch.full((1, 1, t, 1, 1), 0.5, device=dev, dtype=dt)

    def step(var):
        os.environ[ENV] = var
        with torch.no_grad():
            r = guided_velocity(
                base,
                ctrl,
                xx,
                ts_,
                text,
                uncond,
                cond_mask,
                padding,
                control,
                1.0,
                3.0,
                share_first_rows=True,
            )
        torch.cuda.synchronize()
        return r

    t0 = time.perf_counter()
    va = step(VARS[0])
    emit(phase="compile", s=round(time.perf_counter() - t0, 1))
    vb = {var: step(var).float() for var in VARS}
    ref = vb[VARS[0]]
    emit(
        phase="step_identity",
        rel_diff={var: float((vb[var] - ref).norm() / ref.norm()) for var in VARS},
    )
    res = {var: [] for var in VARS}
    for r in range(int(os.environ.get("STEPS", "5"))):
        for var in VARS if r % 2 == 0 else VARS[::-1]:
            t0 = time.perf_counter()
            step(var)
            res[var].append(round(time.perf_counter() - t0, 3))
    emit(
        phase="steps",
        **{
            var: {
                "median": statistics.median(tt),
                "s_per_chunk": round(35 * statistics.median(tt), 1),
                "all": tt,
            }
            for var, tt in res.items()
        },
    )
