# Experiment: a second copy of the sm90 kernel whose K and V tiles are double-buffered (each load
# issued one tile further ahead); the fused-V-scale entry point picks it when SAGE_KV_STAGES=2.
set -e
python3 - <<'PY'
f = "csrc/qattn/qk_int_sv_f8_cuda_sm90.cu"
s = open(f).read()
start = s.index("template<uint32_t CTA_Q, uint32_t CTA_K, uint32_t NUM_THREADS")
end = s.index("torch::Tensor qk_int8_sv_f8_accum_f32_attn_inst_buf(")
k = s[start:end]

def sub(text, old, new, count=None):
    n = text.count(old)
    assert n >= 1 and (count is None or n == count), (old, n)
    return text.replace(old, new, 1)

k = sub(k, "__global__ void qk_int8_sv_f8_attn_kernel(", "__global__ void qk_int8_sv_f8_attn_kernel_kv2(", 1)
k = sub(k, "  int8_t *sK = (int8_t*)(smem_ + CTA_Q * head_dim * sizeof(int8_t));\n"
           "  int8_t *sV = (int8_t*)(smem_ + CTA_Q * head_dim * sizeof(int8_t) + CTA_K * head_dim * sizeof(int8_t));\n",
        "  int8_t *sK_ring = smem_ + CTA_Q * head_dim;\n  int8_t *sV_ring = sK_ring + 2 * CTA_K * head_dim;\n", 1)
k = sub(k, "  __shared__ __align__(8) uint64_t barrier_K;\n  __shared__ __align__(8) uint64_t barrier_V;\n",
        "  __shared__ __align__(8) uint64_t barrier_K[2];\n  __shared__ __align__(8) uint64_t barrier_V[2];\n", 1)
k = sub(k, "    init_barrier(&barrier_K, 1);\n    init_barrier(&barrier_V, 1);\n",
        "    init_barrier(&barrier_K[0], 1);\n    init_barrier(&barrier_V[0], 1);\n"
        "    init_barrier(&barrier_K[1], 1);\n    init_barrier(&barrier_V[1], 1);\n", 1)
k = sub(k, "  // load Q, K, V\n",
        "  const uint32_t n_tiles = div_ceil(mask_mode == MaskMode::kCausal ? min(kv_len, (bx + 1) * CTA_Q) : kv_len, CTA_K);\n"
        "  // load Q, K, V\n", 1)
k = sub(k, "    expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_K);\n"
           "    expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_V);\n", "", 1)
k = sub(k, "    load_async_4D(sK, &tensorMapK, &barrier_K, 0, 0, kv_head_id, batch_id);\n"
           "    load_async_4D(sV, &tensorMapV, &barrier_V, 0, 0, kv_head_id, batch_id);\n",
        "    for (uint32_t t = 0; t < 2 && t < n_tiles; t++)\n    {\n"
        "      expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_K[t]);\n"
        "      expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_V[t]);\n"
        "      load_async_4D(sK_ring + t * CTA_K * head_dim, &tensorMapK, &barrier_K[t], 0, t * CTA_K, kv_head_id, batch_id);\n"
        "      load_async_4D(sV_ring + t * CTA_K * head_dim, &tensorMapV, &barrier_V[t], t * CTA_K, 0, kv_head_id, batch_id);\n"
        "    }\n", 1)
ring = ("    const uint32_t buf = ({t}) & 1;\n    const int phase = (({t}) >> 1) & 1;\n"
        "    int8_t *sK = sK_ring + buf * CTA_K * head_dim;\n    int8_t *sV = sV_ring + buf * CTA_K * head_dim;\n"
        "    wait(&barrier_K[buf], phase);\n")
k = sub(k, "    wait(&barrier_K, p);\n", ring.format(t="iter - 1"), 2)
k = sub(k, "    wait(&barrier_K, p);\n", ring.format(t="num_iterations - 1"), 1)
k = k.replace("    wait(&barrier_V, p);\n", "    wait(&barrier_V[buf], phase);\n")
k = sub(k, "      expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_K);\n"
           "      load_async_4D(sK, &tensorMapK, &barrier_K, 0, iter * CTA_K, kv_head_id, batch_id);\n",
        "      if (iter + 1 < num_iterations)\n      {\n"
        "        expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_K[buf]);\n"
        "        load_async_4D(sK, &tensorMapK, &barrier_K[buf], 0, (iter + 1) * CTA_K, kv_head_id, batch_id);\n      }\n", 1)
k = sub(k, "      expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_V);\n"
           "      load_async_4D(sV, &tensorMapV, &barrier_V, iter * CTA_K, 0, kv_head_id, batch_id);\n",
        "      if (iter + 1 < num_iterations)\n      {\n"
        "        expect_bytes<(CTA_K * head_dim) * sizeof(int8_t)>(&barrier_V[buf]);\n"
        "        load_async_4D(sV, &tensorMapV, &barrier_V[buf], (iter + 1) * CTA_K, 0, kv_head_id, batch_id);\n      }\n", 1)
assert "barrier_K," not in k and "barrier_V," not in k and "&barrier_K)" not in k, "single-buffer use left"
s = s[:end] + k + s[end:]

host = ("            auto* kernel = qk_int8_sv_f8_attn_kernel<CTA_Q, CTA_K, NUM_THREADS, HEAD_DIM,  static_cast<QuantGranularity>(QK_QUANT_GRAN), static_cast<QuantGranularity>(QK_QUANT_GRAN), DTypeOut, mask_mode, RETURN_LSE, true>;\n"
        "            size_t sMemSize = CTA_Q * HEAD_DIM * sizeof(int8_t) + CTA_K * HEAD_DIM * sizeof(int8_t) + CTA_K * HEAD_DIM * sizeof(int8_t);\n")
assert s.count(host) == 1
s = s.replace(host,
    "            const char *kv_env = std::getenv(\"SAGE_KV_STAGES\");\n"
    "            const bool kv2 = kv_env != nullptr && kv_env[0] == '2';\n"
    "            auto* kernel = kv2 ? qk_int8_sv_f8_attn_kernel_kv2<CTA_Q, CTA_K, NUM_THREADS, HEAD_DIM,  static_cast<QuantGranularity>(QK_QUANT_GRAN), static_cast<QuantGranularity>(QK_QUANT_GRAN), DTypeOut, mask_mode, RETURN_LSE, true>\n"
    "                               : qk_int8_sv_f8_attn_kernel<CTA_Q, CTA_K, NUM_THREADS, HEAD_DIM,  static_cast<QuantGranularity>(QK_QUANT_GRAN), static_cast<QuantGranularity>(QK_QUANT_GRAN), DTypeOut, mask_mode, RETURN_LSE, true>;\n"
    "            size_t sMemSize = CTA_Q * HEAD_DIM * sizeof(int8_t) + (kv2 ? 4 : 2) * CTA_K * HEAD_DIM * sizeof(int8_t);\n")
open(f, "w").write("#include <cstdlib>\n" + s)
PY
