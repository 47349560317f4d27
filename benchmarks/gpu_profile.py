"""Where a GPU call's time goes, for the benchmark scripts: kernel time by kind."""

from __future__ import annotations

from collections.abc import Callable

import torch

# substrings of kernel names, first match wins
KINDS = {
    "attention": ("flash", "fmha", "attention", "attn"),
    "quantisation": ("quant", "int8", "fp8"),
    "matmul": ("gemm", "Gemm", "nvjet", "cutlass", "xmma", "sm90_"),
    "optimizer": ("adam", "Adam", "foreach", "multi_tensor"),
}


def profile_gpu_time(call: Callable[[], object], rows: int = 25) -> dict[str, float]:
    """Run `call` once under the profiler; print its costliest kernels and return the seconds
    of kernel time summed by kind (attention, quantisation, matmul, optimizer, other)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    events = prof.key_averages()
    totals: dict[str, float] = {}
    for event in events:
        if event.device_type.name != "CUDA":
            continue
        kind = next((k for k, keys in KINDS.items() if any(s in event.key for s in keys)), "other")
        totals[kind] = totals.get(kind, 0.0) + event.device_time_total / 1e6
    if rows:
        print(events.table(sort_by="device_time_total", row_limit=rows, max_name_column_width=110))
    return {kind: round(seconds, 3) for kind, seconds in sorted(totals.items())}
