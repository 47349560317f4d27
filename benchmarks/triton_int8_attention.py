"""Prototype (removed after measuring): INT8 Q.K / FP8 P.V attention in Triton with SageAttention 2's arithmetic, timed against its kernel on an H100 (docs/BENCHMARKS.md, seventh session)."""

import os

import torch
import triton
import triton.language as tl

FP8 = torch.float8_e4m3fn


@triton.jit
def _attn(
    Q,
    QS,
    K,
    KS,
    VT,
    VS,
    O,
    sm_log2,
    sqb,
    sql,
    sqh,
    skb,
    skl,
    skh,
    svb,
    svh,
    svd,
    sob,
    sol,
    soh,
    H,
    L,
    NKB,
    D: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    WS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    q_ptr = tl.make_block_ptr(
        Q + b.to(tl.int64) * sqb + h * sqh, (L, D), (sql, 1), (pid_m * BM, 0), (BM, D), (1, 0)
    )
    k_ptr = tl.make_block_ptr(
        K + b.to(tl.int64) * skb + h * skh, (D, L), (1, skl), (0, 0), (D, BN), (0, 1)
    )
    v_ptr = tl.make_block_ptr(
        VT + b.to(tl.int64) * svb + h * svh, (L, D), (1, svd), (0, 0), (BN, D), (0, 1)
    )
    offs_m = pid_m * BM + tl.arange(0, BM)
    qs = (
        tl.load(QS + bh.to(tl.int64) * L + offs_m) * sm_log2
    )  # per-row scale, folded with log2e/sqrt(d)
    q = tl.load(q_ptr)
    m_i = tl.full([BM], -float("inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    ks_base = KS + bh.to(tl.int64) * NKB
    for start in tl.range(0, L, BN, warp_specialize=WS):
        k = tl.load(k_ptr)
        s = tl.dot(q, k, out_dtype=tl.int32).to(tl.float32)
        ks = tl.load(ks_base + start // BN)
        s = s * (qs * ks)[:, None]
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = tl.load(v_ptr)
        acc = tl.dot((p * 448.0).to(tl.float8e4nv, fp_downcast_rounding="rtne"), v, acc)
        m_i = m_new
        k_ptr = tl.advance(k_ptr, (0, BN))
        v_ptr = tl.advance(v_ptr, (BN, 0))
    offs_d = tl.arange(0, D)
    vs = tl.load(VS + bh.to(tl.int64) * D + offs_d)
    out = acc / (l_i * 448.0)[:, None] * vs[None, :]
    o_ptr = tl.make_block_ptr(
        O + b.to(tl.int64) * sob + h * soh, (L, D), (sol, 1), (pid_m * BM, 0), (BM, D), (1, 0)
    )
    tl.store(o_ptr, out.to(O.dtype.element_ty))


def quantise(q, k, v, bn):
    """INT8 Q per token, INT8 K (smoothed) per bn tokens, FP8 V per channel stored (B, H, D, L)."""
    B, L, H, D = q.shape
    qf = q.float()
    qa = qf.abs().amax(-1).clamp_min(1e-7)  # (B, L, H)
    q8 = (qf * (127 / qa[..., None])).round().to(torch.int8)
    qs = (qa / 127).permute(0, 2, 1).contiguous()  # (B, H, L)
    kf = k.float()
    kf = kf - kf.mean(1, keepdim=True)
    kg = kf.unflatten(1, (L // bn, bn))
    ka = kg.abs().amax(dim=(2, 4)).clamp_min(1e-7)  # (B, L/bn, H)
    k8 = (kg * (127 / ka[:, :, None, :, None])).round().to(torch.int8).flatten(1, 2)
    ks = (ka / 127).permute(0, 2, 1).contiguous()  # (B, H, L/bn)
    va = v.float().abs().amax(1).clamp_min(1e-7)  # (B, H, D)
    v8 = (v.float() * (448 / va[:, None])).to(FP8).permute(0, 2, 3, 1).contiguous()  # (B, H, D, L)
    return q8, qs, k8, ks, v8, (va / 448).contiguous()


def attention(inputs, out, bm=128, bn=128, warps=8, stages=2, ws=False):
    q8, qs, k8, ks, v8, vs = inputs
    B, L, H, D = q8.shape
    grid = (L // bm, B * H)
    _attn[grid](
        q8,
        qs,
        k8,
        ks,
        v8,
        vs,
        out,
        D**-0.5 * 1.4426950408889634,
        q8.stride(0),
        q8.stride(1),
        q8.stride(2),
        k8.stride(0),
        k8.stride(1),
        k8.stride(2),
        v8.stride(0),
        v8.stride(1),
        v8.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        H,
        L,
        L // bn,
        D=D,
        BM=bm,
        BN=bn,
        WS=ws,
        num_warps=warps,
        num_stages=stages,
    )
    return out


if __name__ == "__main__":
    import json
    import statistics
    import sys

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    B, L, H, D = (2, 84480, 16, 128) if dev == "cuda" else (1, 512, 2, 128)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, L, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    k = k + 4 * torch.randn(1, 1, H, D, device=dev, dtype=torch.bfloat16)
    ref = (
        torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
        .transpose(1, 2)
        .float()
    )
    flops = 4 * B * H * L * L * D
    configs = [
        tuple(int(x) if x.isdigit() else x == "ws" for x in c.split("/"))
        for c in sys.argv[1].split(",")
    ]
    results = []
    if dev == "cuda" and os.environ.get("SAGE"):
        sys.path.insert(0, os.getcwd())
        from cosmos_posttrain import sage_hopper

        x = sage_hopper.quantise(q, k, v)
        o = torch.empty_like(q)

        def sage():
            torch.ops.sageattention_sm90.qk_int8_sv_f8_accum_f32_fuse_v_scale_attn_inst_buf(
                x.q,
                x.k,
                x.v.transpose(1, 2),
                o,
                x.q_scale,
                x.k_scale,
                x.v_scale,
                0,
                0,
                2,
                D**-0.5,
                0,
            )
            return o


        results.append(("sage", sage))
    for bm, bn, warps, stages, ws in configs:
        inputs = quantise(q, k, v, bn)
        out = torch.empty_like(q)
        results.append(
            (
                f"tri {bm}/{bn}/{warps}/{stages}/{'ws' if ws else 'nows'}",
                lambda i=inputs, o=out, c=(bm, bn, warps, stages, ws): attention(i, o, *c),
            )
        )
    for name, fn in results:
        try:
            o = fn().float()
            err = float((o - ref).norm() / ref.norm())
            if dev != "cuda":
                print(name, "err", err)
                continue
            ts = []
            for _ in range(6):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                [fn() for _ in range(3)]
                e1.record()
                torch.cuda.synchronize()
                ts.append(e0.elapsed_time(e1) / 3)
            ms = statistics.median(ts[1:])
            print(
                json.dumps(
                    {
                        "kernel": name,
                        "ms": round(ms, 2),
                        "tflops": round(flops / ms / 1e9, 1),
                        "err": round(err, 5),
                        "gpu": torch.cuda.get_device_name(),
                    }
                ),
                flush=True,
            )
        except Exception as exc:
            print(
                json.dumps({"kernel": name, "error": f"{type(exc).__name__}: {exc}"[:400]}),
                flush=True,
            )
