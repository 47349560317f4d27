"""Which Q/K scale groups does sage_fa4 use? Strongly varying group scales, several hypotheses."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
from test_sage_hopper import contract

from cosmos_posttrain import sage_hopper

torch.manual_seed(0)
B, L, H, D = 1, 1024, 2, 128
q, k, v = (torch.randn(B, L, H, D) for _ in range(3))
qf = torch.tensor([0.3, 1.0, 3.0, 0.5, 2.0, 1.5, 0.7, 4.0])[
    torch.arange(L // 16) % 8
].repeat_interleave(16)
kf = torch.tensor([0.5, 2.0, 1.0, 3.0])[torch.arange(L // 128) % 4].repeat_interleave(128)
q = q * qf[None, :, None, None] * 1.5
k = k * kf[None, :, None, None]
q, k, v = (t.bfloat16().cuda() for t in (q, k, v))
si = sage_hopper.quantise(q, k, v)
sage_hopper.select("fa4")
real = torch.ops.cosmos_posttrain.sage_fa4(*si[:5]).float().cpu()
ins = [t.cpu() for t in si[:5]]
G = L // 16
hyps = {
    "right": torch.arange(G),
    "wg_swap": torch.arange(G) ^ 4,
    "warp_rev": torch.arange(G) ^ 3,
    "warp_rev_wg": torch.arange(G) ^ 7,
    "pair_swap": torch.arange(G) ^ 1,
}
for name, perm in hyps.items():
    qs = ins[1][..., perm]
    ref = contract(ins[0], qs, ins[2], ins[3], ins[4])
    print(name, ((real - ref).norm() / ref.norm()).item())
T = L // 128
for name, perm in {
    "k_next": (torch.arange(T) + 1) % T,
    "k_prev": (torch.arange(T) - 1) % T,
    "k_rev": torch.arange(T).flip(0),
}.items():
    ref = contract(ins[0], ins[1], ins[2], ins[3][..., perm], ins[4])
    print(name, ((real - ref).norm() / ref.norm()).item())
# the same with Sage's kernel for scale
try:
    from sageattention import sm90_compile  # noqa

    sage_hopper.select("sageattention")
    out_s = sage_hopper._run(si, torch.bfloat16).float().cpu() / si.v_scale.cpu()[:, None]
    ref = contract(*ins)
    print("sage_vs_right", ((out_s - ref).norm() / ref.norm()).item())
except Exception as e:
    print("no sage", e)
