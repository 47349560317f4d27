import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import variants as exp  # noqa: F401
from sageattention import sm90_compile  # noqa

from cosmos_posttrain import sage_hopper


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


for B, L, H, gain, mean in [
    (1, 84480, 16, 1.0, 0.0),
    (1, 84480, 16, 3.0, 0.0),
    (1, 8192, 4, 1.0, 3.0),
    (1, 84480, 4, 1.0, 3.0),
]:
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, L, H, 128, device="cuda", generator=g) for _ in range(3))
    q = q * gain + mean
    k = k + mean
    v = v + mean
    q, k, v = (t.bfloat16() for t in (q, k, v))
    si = sage_hopper.quantise(q, k, v)
    sage_hopper.select("sageattention")
    s = sage_hopper._run(si, torch.bfloat16)
    sage_hopper.select("fa4")
    m = sage_hopper._run(si, torch.bfloat16)
    f = m
    print(
        (B, L, H, gain, mean),
        "magic_vs_sage",
        round(rel(m, s), 4),
        "fold_vs_sage",
        round(rel(f, s), 4),
        "norms",
        s.float().norm().item(),
        m.float().norm().item(),
        flush=True,
    )
