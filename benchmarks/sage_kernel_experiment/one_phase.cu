
// ---- cosmos-posttrain experiment: one tensor-core phase per tile -------------------------------
// The kernels above wait on the tensor cores twice a tile (Q.K^T, then P.V). Here a warpgroup
// issues the P.V of tile j-1 and the Q.K^T of tile j as one batch and waits once, then runs the
// softmax of tile j. P.V accumulates straight into the output registers (rescaled in fp32 before
// each batch), which keeps the live set at ~144 registers: three warpgroups per SM still fit.
// PINGPONG: the warpgroups of a CTA take turns to issue their batch (named barriers), so that one
// warpgroup's softmax runs while another's products do.


// cp_online_softmax, but the maxima only move in a warp where some row's maximum grew: where none
// did, m, d and the output stay as they are (the factors would all be exactly 1), and the caller
// skips the output's rescale. Returns whether the warp rescales.
template <uint32_t num_tiles_k>
__device__ __forceinline__ bool cp_online_softmax_lazy(float RS[][num_tiles_k][8], float m[][2], float d[][2],
                                                       const float scale, float o_scale[2])
{
  float tile_max[2];
#pragma unroll
  for (uint32_t k = 0; k < 2; k++)
  {
    float t = -5000000.0f;
#pragma unroll
    for (uint32_t fk = 0; fk < num_tiles_k; fk++)
    {
      t = max(t, max(max(RS[0][fk][k * 2 + 0], RS[0][fk][k * 2 + 1]), max(RS[0][fk][k * 2 + 4], RS[0][fk][k * 2 + 5])));
    }
    t = fmaf(t, scale, -S_FP8_OFFSET);
    t = max(t, __shfl_xor_sync(0xffffffff, t, 0x1));
    tile_max[k] = max(t, __shfl_xor_sync(0xffffffff, t, 0x2));
  }
  const bool rescale = __any_sync(0xffffffff, tile_max[0] > m[0][0] || tile_max[1] > m[0][1]);
  if (rescale)
  {
#pragma unroll
    for (uint32_t k = 0; k < 2; k++)
    {
      const float m_prev = m[0][k];
      m[0][k] = max(m_prev, tile_max[k]);
      o_scale[k] = math::ptx_exp2(m_prev - m[0][k]);
      d[0][k] *= o_scale[k];
    }
  }
#pragma unroll
  for (uint32_t k = 0; k < 2; k++)
  {
    const float negative_m = -m[0][k];
#pragma unroll
    for (uint32_t fk = 0; fk < num_tiles_k; fk++)
    {
      RS[0][fk][k * 2 + 0] = math::ptx_exp2(fmaf(RS[0][fk][k * 2 + 0], scale, negative_m));
      RS[0][fk][k * 2 + 1] = math::ptx_exp2(fmaf(RS[0][fk][k * 2 + 1], scale, negative_m));
      RS[0][fk][k * 2 + 4] = math::ptx_exp2(fmaf(RS[0][fk][k * 2 + 4], scale, negative_m));
      RS[0][fk][k * 2 + 5] = math::ptx_exp2(fmaf(RS[0][fk][k * 2 + 5], scale, negative_m));
    }
  }
  return rescale;
}

// softmax of one tile's int32 scores: FP8 probabilities, the output's rescale factors, m and d
template <uint32_t num_tiles_k, uint32_t num_tiles_pv_inner, bool LAZY>
__device__ __forceinline__ bool cp_tile_softmax(int32_t RS[][num_tiles_k][8], uint32_t RS_f8[][num_tiles_pv_inner][4],
                                                float m[][2], float d[][2], float o_scale[2], const bool last,
                                                const float log2_scale, const float dequant_scale,
                                                const uint32_t first_key, const uint32_t kv_len, const uint32_t lane_id)
{
  float RS_f32[1][num_tiles_k][8];
  float exp_scale = log2_scale * dequant_scale;
  if (!last)
  {
#pragma unroll
    for (uint32_t fk = 0; fk < num_tiles_k; fk++)
    {
#pragma unroll
      for (uint32_t k = 0; k < 8; k++) RS_f32[0][fk][k] = __int2float_rz(RS[0][fk][k]);
    }
  }
  else
  {
    exp_scale = log2_scale;
#pragma unroll
    for (uint32_t fk = 0; fk < num_tiles_k; fk++)
    {
#pragma unroll
      for (uint32_t k = 0; k < 8; k++)
      {
        RS_f32[0][fk][k] = __int2float_rz(RS[0][fk][k]) * dequant_scale;
        const uint32_t k_idx = first_key + fk * 16 + 2 * (lane_id % 4) + 8 * (k / 4) + k % 2;
        if (k_idx >= kv_len) RS_f32[0][fk][k] = -5000000.0f;
      }
    }
  }
  bool rescale = true;
  if constexpr (LAZY)
  {
    rescale = cp_online_softmax_lazy<num_tiles_k>(RS_f32, m, d, exp_scale, o_scale);
  }
  else
  {
    cp_online_softmax<num_tiles_k>(RS_f32, m, d, exp_scale, o_scale);
  }
#pragma unroll
  for (uint32_t fk = 0; fk < num_tiles_k; fk++)
  {
    d[0][0] += (RS_f32[0][fk][0] + RS_f32[0][fk][1] + RS_f32[0][fk][4] + RS_f32[0][fk][5]);
    d[0][1] += (RS_f32[0][fk][2] + RS_f32[0][fk][3] + RS_f32[0][fk][6] + RS_f32[0][fk][7]);
  }
  RS_32_to_8<1, num_tiles_k>(RS_f32, RS_f8);
  return rescale;
}

__device__ __forceinline__ void cp_named_sync(uint32_t id, uint32_t count)
{
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void cp_named_arrive(uint32_t id, uint32_t count)
{
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
}

template <uint32_t WGS, uint32_t CTA_K, uint32_t STAGES, bool PINGPONG, bool LAZY, uint32_t head_dim, QuantGranularity Q_GRAN, QuantGranularity K_GRAN, typename DTypeOut>
__global__ void __launch_bounds__(128 * WGS, (WGS == 1) ? 2 : 1) cp_reorder_attn_kernel(
    const __grid_constant__ CUtensorMap tensorMapQ, const __grid_constant__ CUtensorMap tensorMapK,
    const __grid_constant__ CUtensorMap tensorMapV,
    float *__restrict__ Q_scale, float *__restrict__ K_scale, float *__restrict__ V_scale,
    DTypeOut *O, uint32_t stride_bz_o, uint32_t stride_h_o, uint32_t stride_seq_o,
    const uint32_t qo_len, const uint32_t kv_len, const uint32_t num_kv_groups, float sm_scale)
{
  constexpr uint32_t CTA_Q = 64 * WGS;
  constexpr uint32_t consumer_warps = 4 * WGS;
  constexpr uint32_t num_tiles_k = CTA_K / 16;
  constexpr uint32_t num_tiles_qk_inner = head_dim / 32;
  constexpr uint32_t num_tiles_v = head_dim / 16;
  constexpr uint32_t num_tiles_pv_inner = CTA_K / 32;
  constexpr uint32_t tile_bytes = CTA_K * head_dim;

  const uint32_t wg = threadIdx.x / 128;
  const uint32_t warp_idx = (threadIdx.x % 128) / 32;
  const uint32_t lane_id = threadIdx.x % 32;
  const uint32_t batch_id = blockIdx.z;
  const uint32_t bx = blockIdx.x;
  const uint32_t head_id = blockIdx.y;
  const uint32_t num_qo_heads = gridDim.y;
  const uint32_t kv_head_id = head_id / num_kv_groups;
  const uint32_t n = div_ceil(kv_len, CTA_K);

  extern __shared__ __align__(128) int8_t smem_[];
  const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_)) & 1023;
  int8_t *sQ = smem_ + ((1024 - misalign) & 1023);
  int8_t *sK = sQ + CTA_Q * head_dim;
  int8_t *sV = sK + STAGES * tile_bytes;

  __shared__ __align__(8) uint64_t bar_Q;
  __shared__ __align__(8) uint64_t bar_K_full[STAGES];
  __shared__ __align__(8) uint64_t bar_V_full[STAGES];
  __shared__ uint32_t released_K[STAGES];
  __shared__ uint32_t released_V[STAGES];

  if (threadIdx.x == 0)
  {
    init_barrier(&bar_Q, 1);
#pragma unroll
    for (uint32_t s = 0; s < STAGES; s++)
    {
      init_barrier(&bar_K_full[s], 1);
      init_barrier(&bar_V_full[s], 1);
      released_K[s] = 0;
      released_V[s] = 0;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0)
  {
    expect_bytes<CTA_Q * head_dim>(&bar_Q);
#pragma unroll
    for (uint32_t w = 0; w < WGS; w++)
    {
      load_async_4D(sQ + w * 64 * head_dim, &tensorMapQ, &bar_Q, 0, bx * CTA_Q + w * 64, head_id, batch_id);
    }
    for (uint32_t it = 0; it < STAGES && it < n; it++)
    {
      expect_bytes<tile_bytes>(&bar_K_full[it]);
      load_async_4D(sK + it * tile_bytes, &tensorMapK, &bar_K_full[it], 0, it * CTA_K, kv_head_id, batch_id);
      expect_bytes<tile_bytes>(&bar_V_full[it]);
      load_async_4D(sV + it * tile_bytes, &tensorMapV, &bar_V_full[it], it * CTA_K, 0, kv_head_id, batch_id);
    }
  }

  const uint32_t warps_per_head = div_ceil(qo_len, 64) * 4;
  const uint32_t warp_in_head = bx * (CTA_Q / 16) + wg * 4 + warp_idx;
  const bool rows_exist = warp_in_head * 16 < qo_len;
  uint32_t q_scale_idx;
  if constexpr (Q_GRAN == QuantGranularity::kPerWarp)
  {
    q_scale_idx = (batch_id * num_qo_heads + head_id) * warps_per_head + warp_in_head;
  }
  else
  {
    static_assert(Q_GRAN == QuantGranularity::kPerThread);
    q_scale_idx = ((batch_id * num_qo_heads + head_id) * warps_per_head + warp_in_head) * 8 + lane_id / 4;
  }
  const uint32_t kv_head_flat = batch_id * (num_qo_heads / num_kv_groups) + kv_head_id;
  uint32_t k_scale_idx;
  constexpr uint32_t k_scale_step = (K_GRAN == QuantGranularity::kPerThread) ? 4 : 1;
  if constexpr (K_GRAN == QuantGranularity::kPerThread)
  {
    k_scale_idx = kv_head_flat * (n * 4) + lane_id % 4;
  }
  else
  {
    k_scale_idx = kv_head_flat * n;
  }

  int32_t RS[1][num_tiles_k][8];
  uint32_t RS_f8[1][num_tiles_pv_inner][4];
  float RO[1][num_tiles_v][8];
  float m[1][2] = {{-5000000.0f, -5000000.0f}};
  float d[1][2] = {{1.0f, 1.0f}};
  float o_scale[2];
#pragma unroll
  for (uint32_t fv = 0; fv < num_tiles_v; fv++)
  {
#pragma unroll
    for (uint32_t k = 0; k < 8; k++) RO[0][fv][k] = 0.0f;
  }
  const float q_scale = rows_exist ? Q_scale[q_scale_idx] : 0.0f;
  const float log2_scale = sm_scale * math::log2e;
  const int8_t *sQ_wg = sQ + wg * 64 * head_dim;
  const uint32_t row = bx * CTA_Q + wg * 64 + warp_idx * 16 + lane_id / 4;
  const uint32_t turn_id = 1 + wg;
  const uint32_t next_turn_id = 1 + (wg + 1) % WGS;
  if constexpr (PINGPONG)
  {
    if (wg == WGS - 1) cp_named_arrive(1, 256);  // warpgroup 0 goes first
  }

  wait(&bar_Q, 0);

  // phase 0: Q.K^T of tile 0; phase it (1..n-1): P.V of tile it-1 and Q.K^T of tile it, one
  // wait; phase n: P.V of tile n-1
  auto release = [&](uint32_t it_k, uint32_t it_v, bool has_k, bool has_v) {
    if (lane_id == 0)
    {
      const uint32_t sk = it_k % STAGES, sv = it_v % STAGES;
      if (has_k && atomicAdd(&released_K[sk], 1) % consumer_warps == consumer_warps - 1 && it_k + STAGES < n)
      {
        expect_bytes<tile_bytes>(&bar_K_full[sk]);
        load_async_4D(sK + sk * tile_bytes, &tensorMapK, &bar_K_full[sk], 0, (it_k + STAGES) * CTA_K, kv_head_id, batch_id);
      }
      if (has_v && atomicAdd(&released_V[sv], 1) % consumer_warps == consumer_warps - 1 && it_v + STAGES < n)
      {
        expect_bytes<tile_bytes>(&bar_V_full[sv]);
        load_async_4D(sV + sv * tile_bytes, &tensorMapV, &bar_V_full[sv], (it_v + STAGES) * CTA_K, 0, kv_head_id, batch_id);
      }
    }
  };
  auto issue_qk = [&](uint32_t it) {
    const int8_t *sK_s = sK + (it % STAGES) * tile_bytes;
    wgmma::wgmma_s8s8s32<CTA_K, 0, head_dim>(RS[0], (int8_t*)sQ_wg, (int8_t*)sK_s);
#pragma unroll
    for (uint32_t k_it = 1; k_it < num_tiles_qk_inner; k_it++)
    {
      wgmma::wgmma_s8s8s32<CTA_K, 1, head_dim>(RS[0], (int8_t*)&sQ_wg[k_it * 32], (int8_t*)&sK_s[k_it * 32]);
    }
  };
  auto issue_pv = [&](uint32_t it) {
    const int8_t *sV_s = sV + (it % STAGES) * tile_bytes;
#pragma unroll
    for (uint32_t v_it = 0; v_it < num_tiles_pv_inner; v_it++)
    {
      wgmma::wgmma_f8f8f32<head_dim, 1, CTA_K>(RO[0], RS_f8[0][v_it], (int8_t*)&sV_s[v_it * 32]);
    }
  };
  auto softmax = [&](uint32_t it) {
    const float dequant_scale = q_scale * K_scale[k_scale_idx + it * k_scale_step];
    return cp_tile_softmax<num_tiles_k, num_tiles_pv_inner, LAZY>(RS, RS_f8, m, d, o_scale, it + 1 == n, log2_scale,
                                                    dequant_scale, it * CTA_K, kv_len, lane_id);
  };
  auto turn_begin = [&]() {
    if constexpr (PINGPONG) cp_named_sync(turn_id, 256);
  };
  auto turn_end = [&](bool final_phase) {
    if constexpr (PINGPONG)
    {
      if (!(final_phase && wg == WGS - 1)) cp_named_arrive(next_turn_id, 256);
    }
  };

  wait(&bar_K_full[0], 0);
  turn_begin();
  wgmma::warpgroup_arrive();
  issue_qk(0);
  wgmma::warpgroup_commit_batch();
  turn_end(false);
  wgmma::warpgroup_wait<0>();
  release(0, 0, true, false);
  softmax(0);

  for (uint32_t it = 1; it < n; it++)
  {
    wait(&bar_K_full[it % STAGES], (it / STAGES) & 1);
    wait(&bar_V_full[(it - 1) % STAGES], ((it - 1) / STAGES) & 1);
    turn_begin();
    wgmma::warpgroup_arrive();
    issue_pv(it - 1);
    issue_qk(it);
    wgmma::warpgroup_commit_batch();
    turn_end(false);
    wgmma::warpgroup_wait<0>();
    release(it, it - 1, true, true);
    if (softmax(it))
    {
#pragma unroll
      for (uint32_t fv = 0; fv < num_tiles_v; fv++)
      {
#pragma unroll
        for (uint32_t k = 0; k < 8; k++) RO[0][fv][k] *= o_scale[(k % 4) / 2];
      }
    }
  }

  wait(&bar_V_full[(n - 1) % STAGES], ((n - 1) / STAGES) & 1);
  turn_begin();
  wgmma::warpgroup_arrive();
  issue_pv(n - 1);
  wgmma::warpgroup_commit_batch();
  turn_end(true);
  wgmma::warpgroup_wait<0>();

  normalize_d<1, num_tiles_v, ComputeUnit::kCudaCore>(RO, m, d);
  const float *v_scale_ptr = V_scale + kv_head_flat * head_dim + (lane_id % 4) * 2;
#pragma unroll
  for (uint32_t fv = 0; fv < num_tiles_v; fv++)
  {
    const float2 lo = *((const float2*)(v_scale_ptr + fv * 16));
    const float2 hi = *((const float2*)(v_scale_ptr + fv * 16 + 8));
    RO[0][fv][0] *= lo.x; RO[0][fv][1] *= lo.y; RO[0][fv][2] *= lo.x; RO[0][fv][3] *= lo.y;
    RO[0][fv][4] *= hi.x; RO[0][fv][5] *= hi.y; RO[0][fv][6] *= hi.x; RO[0][fv][7] *= hi.y;
  }
  DTypeOut *O_row = O + batch_id * stride_bz_o + head_id * stride_h_o + row * stride_seq_o + (lane_id % 4) * 2;
#pragma unroll
  for (uint32_t fv = 0; fv < num_tiles_v; fv++)
  {
#pragma unroll
    for (uint32_t half_row = 0; half_row < 2; half_row++)
    {
      if (row + 8 * half_row < qo_len)
      {
        DTypeOut *p = O_row + half_row * 8 * stride_seq_o + fv * 16;
        const float2 a = ((float2*)(RO[0][fv]))[half_row];
        const float2 b = ((float2*)(RO[0][fv]))[half_row + 2];
        if constexpr (std::is_same<DTypeOut, half>::value)
        {
          ((half2*)p)[0] = __float22half2_rn(a);
          ((half2*)(p + 8))[0] = __float22half2_rn(b);
        }
        else
        {
          ((nv_bfloat162*)p)[0] = __float22bfloat162_rn(a);
          ((nv_bfloat162*)(p + 8))[0] = __float22bfloat162_rn(b);
        }
      }
    }
  }
}

template <uint32_t WGS, uint32_t STAGES, bool PINGPONG, bool LAZY, uint32_t CTA_K, uint32_t head_dim, QuantGranularity GRAN, typename DTypeOut>
void cp_reorder_launch(const CUtensorMap &q, const CUtensorMap &k, const CUtensorMap &v,
                       float *q_scale, float *k_scale, float *v_scale, DTypeOut *o,
                       uint32_t stride_bz_o, uint32_t stride_h_o, uint32_t stride_seq_o,
                       uint32_t qo_len, uint32_t kv_len, uint32_t num_kv_groups, float sm_scale, dim3 grid)
{
  auto *kernel = cp_reorder_attn_kernel<WGS, CTA_K, STAGES, PINGPONG, LAZY, head_dim, GRAN, GRAN, DTypeOut>;
  const size_t smem = 1024 + 64 * WGS * head_dim + 2 * STAGES * CTA_K * head_dim;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  kernel<<<grid, 128 * WGS, smem>>>(q, k, v, q_scale, k_scale, v_scale, o, stride_bz_o, stride_h_o,
                                    stride_seq_o, qo_len, kv_len, num_kv_groups, sm_scale);
}
#define CP_REORDER(W, S, P, Z) cp_reorder_launch<W, S, P, Z, CTA_K, HEAD_DIM, G, DTypeOut>(q2, k2, v2, qs, ks, vs, o, stride_bz_o, stride_h_o, stride_seq_o, qo_len, kv_len, num_kv_groups, sm_scale, grid2)
// ---- end of the one-phase experiment ---------------------------------------------------------
