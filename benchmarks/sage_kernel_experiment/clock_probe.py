"""Does SageAttention's kernel (and, for contrast, a bf16 matrix product) slow down when the SM
clock drops? Times both cold, then again after the GPU is heated to its power cap by products."""

import json
import os
import time

import sageattention  # noqa: F401 - registers torch.ops.sageattention_sm90
import torch

from cosmos_posttrain import sage_hopper

out = open(os.path.join(os.environ["OUT"], "clock_probe.jsonl"), "a")


def emit(**r):
    r["t"] = time.strftime("%H:%M:%S")
    r["t_ms"] = int(time.time() * 1000)
    print(json.dumps(r), flush=True)
    out.write(json.dumps(r) + "\n")
    out.flush()


B, H, D, L = 2, 16, 128, 84480
torch.manual_seed(0)
q, k, v = (torch.randn(B, L, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
x = sage_hopper.quantise(q, k, v)
del q, k, v
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)


def t_attn(n=1):
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n):
        sage_hopper._run(x, torch.bfloat16)
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n


def t_mm(n=20):
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n):
        a @ b
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n


t_attn()
t_mm(3)
torch.cuda.synchronize()
time.sleep(5)  # warm-up, then let it cool
for phase in ("cold", "heated"):
    if phase == "heated":
        t0 = time.time()
        while time.time() - t0 < 40:
            t_mm(50)
    emit(phase=phase, what="mm_8192_ms", each=[round(t_mm(), 3) for _ in range(3)])
    emit(phase=phase, what="attn_ms", each=[round(t_attn(), 2) for _ in range(6)])
    emit(phase=phase, what="mm_8192_ms_after", each=[round(t_mm(), 3) for _ in range(3)])
    if phase == "cold":
        time.sleep(1)
