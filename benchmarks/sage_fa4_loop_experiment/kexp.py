"""Time sage_fa4 variants against SageAttention's kernel at batch 2 x 84,480 tokens; check them."""
import json, os, sys, time
import torch
sys.path.insert(0, os.path.dirname(__file__))
from cosmos_posttrain import sage_hopper, sage_fa4
import sage_fa4_head, var
OUT = os.environ.get("OUT", "/tmp")
HAVE_SAGE = os.environ.get("HAVE_SAGE", "1") == "1"
if HAVE_SAGE:
    from sageattention import sm90_compile  # noqa
VARIANTS = json.loads(os.environ.get("VARIANTS", '{}'))
print(torch.cuda.get_device_name(), torch.__version__, flush=True)

def raw(name, si):
    if name == "sage":
        sage_hopper.select("sageattention"); return sage_hopper._run(si, torch.bfloat16)
    if name == "A0":
        return sage_fa4_head.attention(si.q, si.q_scale, si.k, si.k_scale, si.v)
    if name == "P":
        return sage_fa4.attention(si.q, si.q_scale, si.k, si.k_scale, si.v)
    return var.attention(VARIANTS[name], si.q, si.q_scale, si.k, si.k_scale, si.v)

def scaled(name, si):
    o = raw(name, si)
    return o if name == "sage" else (o.float() * si.v_scale[:, None]).to(torch.bfloat16)

def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()

names = (["sage"] if HAVE_SAGE else []) + ["A0", "P"] + list(VARIANTS)
def log(**r):
    print(json.dumps(r), flush=True)
    open(os.path.join(OUT, "kexp.jsonl"), "a").write(json.dumps(r) + "\n")

# checks: random 84,480 x 4 heads, and a mean of 3 in Q, K, V
for tag, mean, gain in (("random", 0.0, 1.0), ("random_q3", 0.0, 3.0), ("mean3", 3.0, 1.0)):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 84480, 4, 128, device="cuda", generator=g) for _ in range(3))
    q, k, v = ((q * gain + mean).bfloat16(), (k + mean).bfloat16(), (v + mean).bfloat16())
    si = sage_hopper.quantise(q, k, v)
    ref = scaled("A0", si)
    for n in names:
        t0 = time.time()
        try:
            o = scaled(n, si)
            log(check=tag, variant=n, rel_vs_A0=round(rel(o, ref), 5), norm_ratio=round(o.float().norm().item() / ref.float().norm().item(), 5), first_call_s=round(time.time() - t0, 1))
        except Exception as e:
            log(check=tag, variant=n, error=repr(e)[:300]); names.remove(n)

# timing: batch 2 x 84,480 x 16 heads, rounds alternating the variants
g = torch.Generator(device="cuda").manual_seed(1)
q, k, v = (torch.randn(2, 84480, 16, 128, device="cuda", generator=g).bfloat16() for _ in range(3))
si = sage_hopper.quantise(q, k, v)
for n in names:
    raw(n, si)
torch.cuda.synchronize()
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
t_end = time.time() + 20
while time.time() < t_end:  # heat to the working temperature
    for _ in range(20): a @ a
    torch.cuda.synchronize()
times = {n: [] for n in names}
for rnd in range(int(os.environ.get("ROUNDS", "6"))):
    for n in (names if rnd % 2 == 0 else names[::-1]):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        ev[0].record()
        for _ in range(5):
            raw(n, si)
        ev[1].record(); torch.cuda.synchronize()
        times[n].append(ev[0].elapsed_time(ev[1]) / 5)
for n in names:
    ts = sorted(times[n])
    log(timing=n, cfg=VARIANTS.get(n), median_ms=round(ts[len(ts) // 2], 2), min_ms=round(ts[0], 2), all=[round(t, 1) for t in times[n]])
