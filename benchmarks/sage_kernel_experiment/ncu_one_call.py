"""One call of the kernel at batch 1 x 84,480 tokens, for Nsight Compute:
SAGE_2WG_STAGES=<variant> ncu -k regex:attn_kernel --launch-count 1 ... \
    python3 ncu_one_call.py <site>
"""

import os
import sys

import torch
from ab_one_build import D, call, load_build

from cosmos_posttrain import sage_hopper

module = load_build(sys.argv[1])
q, k, v = (torch.randn(1, 84480, 16, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
x = sage_hopper.quantise(q, k, v)
out = torch.empty_like(q)
call(module, x, out, os.environ.get("SAGE_2WG_STAGES", "0"))
torch.cuda.synchronize()
print("ok", float(out.float().abs().mean()))
