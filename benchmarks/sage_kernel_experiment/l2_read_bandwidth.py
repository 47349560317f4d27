"""How fast the SMs read a buffer that sits in L2, the way every CTA of SageAttention's kernel
streams one head's K and V: each program reads the whole buffer from its own starting point."""

import functools
import json
import statistics

import torch
import triton
import triton.language as tl


@triton.jit
def read_all(buf, out, n_chunks, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for i in range(n_chunks):
        chunk = (i + pid * 13) % n_chunks
        acc += tl.load(buf + chunk * BLOCK + offs, cache_modifier=".cg")
    tl.store(out + pid * BLOCK + offs, acc)


BLOCK = 4096  # int32: 16 KiB a step
CASES = ((21.6, 132 * 3, 4), (21.6, 132 * 4, 8), (10.8, 132 * 4, 8), (4.0, 132 * 4, 8))
for megabytes, programs, warps in CASES:
    n_chunks = int(megabytes * 1e6 / (BLOCK * 4))
    buf = torch.randint(0, 100, (n_chunks * BLOCK,), dtype=torch.int32, device="cuda")
    out = torch.empty(programs * BLOCK, dtype=torch.int32, device="cuda")

    run = functools.partial(read_all[(programs,)], buf, out, n_chunks, BLOCK=BLOCK, num_warps=warps)

    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    total = programs * n_chunks * BLOCK * 4
    row = {"buffer_MB": megabytes, "programs": programs, "warps": warps, "ms": round(ms, 3)}
    print(json.dumps({**row, "TB_per_s_to_SMs": round(total / ms / 1e9, 2)}), flush=True)
