
// ---- cosmos-posttrain experiment: two consumer warpgroups share each K/V tile ----------------
// The kernel above gives every 64 query rows their own CTA, so each CTA streams all of K and V
// from L2: at 84,480 tokens that is ~0.9 TB per batch-2 call. Here a CTA holds WGS x 64 query
// rows (WGS warpgroups, each doing exactly the per-row arithmetic of the kernel above) that read
// the same K and V tiles from a ring of STAGES buffers: 1/WGS of the L2 traffic. The last warp
// to be done with a buffer refills it (no producer warp: 3 x 128 threads at 168 registers fill
// the register file).
// Online softmax of one tile for a warpgroup's 64 rows (two per thread), as update_mdo computes
// it, except that the output's rescale factors are returned instead of applied: the caller
// folds them into the accumulation after P.V as one FMA per element, RO = RO * o_scale + RO_temp,
// instead of a multiply before and an add after.
template <uint32_t num_tiles_k>
__device__ __forceinline__ void cp_online_softmax(float RS[][num_tiles_k][8], float m[][2], float d[][2],
                                                  const float scale, float o_scale[2])
{
#pragma unroll
  for (uint32_t k = 0; k < 2; k++)
  {
    float tile_max = -5000000.0f;
#pragma unroll
    for (uint32_t fk = 0; fk < num_tiles_k; fk++)
    {
      tile_max = max(tile_max, max(max(RS[0][fk][k * 2 + 0], RS[0][fk][k * 2 + 1]),
                                   max(RS[0][fk][k * 2 + 4], RS[0][fk][k * 2 + 5])));
    }
    tile_max = fmaf(tile_max, scale, -S_FP8_OFFSET);
    tile_max = max(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 0x1));
    tile_max = max(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 0x2));
    const float m_prev = m[0][k];
    m[0][k] = max(m_prev, tile_max);
    o_scale[k] = math::ptx_exp2(m_prev - m[0][k]);
    d[0][k] *= o_scale[k];
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
}

// cp_online_softmax with the tile's row maxima taken as balanced trees (depth 5, not 10)
template <uint32_t num_tiles_k>
__device__ __forceinline__ void cp_online_softmax_tree(float RS[][num_tiles_k][8], float m[][2], float d[][2],
                                                       const float scale, float o_scale[2])
{
#pragma unroll
  for (uint32_t k = 0; k < 2; k++)
  {
    float part[num_tiles_k];
#pragma unroll
    for (uint32_t fk = 0; fk < num_tiles_k; fk++)
    {
      part[fk] = max(max(RS[0][fk][k * 2 + 0], RS[0][fk][k * 2 + 1]), max(RS[0][fk][k * 2 + 4], RS[0][fk][k * 2 + 5]));
    }
#pragma unroll
    for (uint32_t w = num_tiles_k / 2; w > 0; w /= 2)
    {
#pragma unroll
      for (uint32_t i = 0; i < w; i++) part[i] = max(part[i], part[i + w]);
    }
    float tile_max = fmaf(part[0], scale, -S_FP8_OFFSET);
    tile_max = max(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 0x1));
    tile_max = max(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 0x2));
    const float m_prev = m[0][k];
    m[0][k] = max(m_prev, tile_max);
    o_scale[k] = math::ptx_exp2(m_prev - m[0][k]);
    d[0][k] *= o_scale[k];
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
}

template <uint32_t WGS, uint32_t CTA_K, uint32_t STAGES, bool FUSED, bool TREE, bool DIRECT, uint32_t head_dim, QuantGranularity Q_GRAN, QuantGranularity K_GRAN, typename DTypeOut>
__global__ void __launch_bounds__(128 * WGS, (WGS == 1) ? (DIRECT ? 4 : 3) : 1) cp_two_wg_attn_kernel(
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

  const uint32_t wg = threadIdx.x / 128;  // each warpgroup: 64 query rows
  const uint32_t warp_idx = (threadIdx.x % 128) / 32;
  const uint32_t lane_id = threadIdx.x % 32;
  const uint32_t batch_id = blockIdx.z;
  const uint32_t bx = blockIdx.x;
  const uint32_t head_id = blockIdx.y;
  const uint32_t num_qo_heads = gridDim.y;
  const uint32_t kv_head_id = head_id / num_kv_groups;
  const uint32_t num_iterations = div_ceil(kv_len, CTA_K);

  extern __shared__ __align__(128) int8_t smem_[];
  const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_)) & 1023;
  int8_t *sQ = smem_ + ((1024 - misalign) & 1023);
  int8_t *sK = sQ + CTA_Q * head_dim;
  int8_t *sV = sK + STAGES * tile_bytes;

  __shared__ __align__(8) uint64_t bar_Q;
  __shared__ __align__(8) uint64_t bar_K_full[STAGES];
  __shared__ __align__(8) uint64_t bar_V_full[STAGES];
  __shared__ uint32_t released_K[STAGES];  // warps done with a stage, counted up forever
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

  // thread 0 fills the ring; after that, the last warp to release a stage refills it
  if (threadIdx.x == 0)
  {
    expect_bytes<CTA_Q * head_dim>(&bar_Q);
#pragma unroll
    for (uint32_t w = 0; w < WGS; w++)  // the map's box is 64 rows
    {
      load_async_4D(sQ + w * 64 * head_dim, &tensorMapQ, &bar_Q, 0, bx * CTA_Q + w * 64, head_id, batch_id);
    }
    for (uint32_t it = 0; it < STAGES && it < num_iterations; it++)
    {
      expect_bytes<tile_bytes>(&bar_K_full[it]);
      load_async_4D(sK + it * tile_bytes, &tensorMapK, &bar_K_full[it], 0, it * CTA_K, kv_head_id, batch_id);
      expect_bytes<tile_bytes>(&bar_V_full[it]);
      load_async_4D(sV + it * tile_bytes, &tensorMapV, &bar_V_full[it], it * CTA_K, 0, kv_head_id, batch_id);
    }
  }

  const uint32_t warps_per_head = div_ceil(qo_len, 64) * 4;  // the scales' layout: 16 rows a warp
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
  const uint32_t num_block_k = div_ceil(kv_len, CTA_K);
  const uint32_t kv_head_flat = batch_id * (num_qo_heads / num_kv_groups) + kv_head_id;
  uint32_t k_scale_idx;
  constexpr uint32_t k_scale_step = (K_GRAN == QuantGranularity::kPerThread) ? 4 : 1;
  if constexpr (K_GRAN == QuantGranularity::kPerThread)
  {
    k_scale_idx = kv_head_flat * (num_block_k * 4) + lane_id % 4;
  }
  else
  {
    k_scale_idx = kv_head_flat * num_block_k;
  }

  int32_t RS[1][num_tiles_k][8];
  float RO[1][num_tiles_v][8];
  float m[1][2] = {{-5000000.0f, -5000000.0f}};
  float d[1][2] = {{1.0f, 1.0f}};
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

  wait(&bar_Q, 0);

  for (uint32_t it = 0; it < num_iterations; it++)
  {
    const uint32_t s = it % STAGES;
    const int filled = (it / STAGES) & 1;
    int8_t *sK_s = sK + s * tile_bytes;
    int8_t *sV_s = sV + s * tile_bytes;
    const float dequant_scale = q_scale * K_scale[k_scale_idx + it * k_scale_step];

    wait(&bar_K_full[s], filled);
    wgmma::warpgroup_arrive();
    wgmma::wgmma_s8s8s32<CTA_K, 0, head_dim>(RS[0], (int8_t*)sQ_wg, sK_s);
#pragma unroll
    for (uint32_t k_it = 1; k_it < num_tiles_qk_inner; k_it++)
    {
      wgmma::wgmma_s8s8s32<CTA_K, 1, head_dim>(RS[0], (int8_t*)&sQ_wg[k_it * 32], &sK_s[k_it * 32]);
    }
    wgmma::warpgroup_commit_batch();
    wgmma::warpgroup_wait<0>();
    if (lane_id == 0)
    {
      if (atomicAdd(&released_K[s], 1) % consumer_warps == consumer_warps - 1 && it + STAGES < num_iterations)
      {
        expect_bytes<tile_bytes>(&bar_K_full[s]);
        load_async_4D(sK_s, &tensorMapK, &bar_K_full[s], 0, (it + STAGES) * CTA_K, kv_head_id, batch_id);
      }
    }

    // as the kernel above: the dequantisation goes into the exponent's scale, except on the
    // last tile, whose keys past kv_len are masked after it
    float RS_f32[1][num_tiles_k][8];
    float exp_scale = log2_scale * dequant_scale;
    if (it + 1 < num_iterations)
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
          const uint32_t k_idx = it * CTA_K + fk * 16 + 2 * (lane_id % 4) + 8 * (k / 4) + k % 2;
          if (k_idx >= kv_len) RS_f32[0][fk][k] = -5000000.0f;
        }
      }
    }

    float o_scale[2];
    if constexpr (TREE)
    {
      cp_online_softmax_tree<num_tiles_k>(RS_f32, m, d, exp_scale, o_scale);
    }
    else if constexpr (FUSED)
    {
      cp_online_softmax<num_tiles_k>(RS_f32, m, d, exp_scale, o_scale);
    }
    else
    {
      update_mdo<1, num_tiles_k, num_tiles_v, false, true, false>(RS_f32, RO, m, d, exp_scale);
    }
    if constexpr (TREE)
    {
      // the tile's row sums as balanced trees: depth 5 instead of a chain of 8 adds into d
#pragma unroll
      for (uint32_t k = 0; k < 2; k++)
      {
        float part[num_tiles_k];
#pragma unroll
        for (uint32_t fk = 0; fk < num_tiles_k; fk++)
        {
          part[fk] = (RS_f32[0][fk][k * 2 + 0] + RS_f32[0][fk][k * 2 + 1]) + (RS_f32[0][fk][k * 2 + 4] + RS_f32[0][fk][k * 2 + 5]);
        }
#pragma unroll
        for (uint32_t w = num_tiles_k / 2; w > 0; w /= 2)
        {
#pragma unroll
          for (uint32_t i = 0; i < w; i++) part[i] += part[i + w];
        }
        d[0][k] += part[0];
      }
    }
    else
    {
#pragma unroll
      for (uint32_t fk = 0; fk < num_tiles_k; fk++)
      {
        d[0][0] += (RS_f32[0][fk][0] + RS_f32[0][fk][1] + RS_f32[0][fk][4] + RS_f32[0][fk][5]);
        d[0][1] += (RS_f32[0][fk][2] + RS_f32[0][fk][3] + RS_f32[0][fk][6] + RS_f32[0][fk][7]);
      }
    }
    uint32_t RS_f8[1][num_tiles_pv_inner][4];
    RS_32_to_8<1, num_tiles_k>(RS_f32, RS_f8);

    if constexpr (DIRECT)
    {
      // P.V accumulated by the tensor cores straight into the output (no fp32 buffer per tile)
#pragma unroll
      for (uint32_t fv = 0; fv < num_tiles_v; fv++)
      {
#pragma unroll
        for (uint32_t k = 0; k < 8; k++) RO[0][fv][k] *= o_scale[(k % 4) / 2];
      }
      wait(&bar_V_full[s], filled);
      wgmma::warpgroup_arrive();
#pragma unroll
      for (uint32_t v_it = 0; v_it < num_tiles_pv_inner; v_it++)
      {
        wgmma::wgmma_f8f8f32<head_dim, 1, CTA_K>(RO[0], RS_f8[0][v_it], &sV_s[v_it * 32]);
      }
      wgmma::warpgroup_commit_batch();
      wgmma::warpgroup_wait<0>();
    }
    else
    {
      wait(&bar_V_full[s], filled);
      float RO_temp[1][num_tiles_v][8];
      wgmma::warpgroup_arrive();
      wgmma::wgmma_f8f8f32<head_dim, 0, CTA_K>(RO_temp[0], RS_f8[0][0], &sV_s[0]);
  #pragma unroll
      for (uint32_t v_it = 1; v_it < num_tiles_pv_inner; v_it++)
      {
        wgmma::wgmma_f8f8f32<head_dim, 1, CTA_K>(RO_temp[0], RS_f8[0][v_it], &sV_s[v_it * 32]);
      }
      wgmma::warpgroup_commit_batch();
      wgmma::warpgroup_wait<0>();
#pragma unroll
      for (uint32_t fv = 0; fv < num_tiles_v; fv++)
      {
#pragma unroll
        for (uint32_t k = 0; k < 8; k++)
        {
          if constexpr (FUSED)
          {
            RO[0][fv][k] = fmaf(RO[0][fv][k], o_scale[(k % 4) / 2], RO_temp[0][fv][k]);
          }
          else
          {
            RO[0][fv][k] += RO_temp[0][fv][k];
          }
        }
      }
    }
    if (lane_id == 0)
    {
      if (atomicAdd(&released_V[s], 1) % consumer_warps == consumer_warps - 1 && it + STAGES < num_iterations)
      {
        expect_bytes<tile_bytes>(&bar_V_full[s]);
        load_async_4D(sV_s, &tensorMapV, &bar_V_full[s], (it + STAGES) * CTA_K, 0, kv_head_id, batch_id);
      }
    }
  }

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
    for (uint32_t half_row = 0; half_row < 2; half_row++)  // rows `row` and `row + 8`
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

template <uint32_t WGS, uint32_t STAGES, bool FUSED, bool TREE, bool DIRECT, uint32_t CTA_K, uint32_t head_dim, QuantGranularity GRAN, typename DTypeOut>
void cp_two_wg_launch(const CUtensorMap &q, const CUtensorMap &k, const CUtensorMap &v,
                      float *q_scale, float *k_scale, float *v_scale, DTypeOut *o,
                      uint32_t stride_bz_o, uint32_t stride_h_o, uint32_t stride_seq_o,
                      uint32_t qo_len, uint32_t kv_len, uint32_t num_kv_groups, float sm_scale, dim3 grid)
{
  auto *kernel = cp_two_wg_attn_kernel<WGS, CTA_K, STAGES, FUSED, TREE, DIRECT, head_dim, GRAN, GRAN, DTypeOut>;
  const size_t smem = 1024 + 64 * WGS * head_dim + 2 * STAGES * CTA_K * head_dim;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  kernel<<<grid, 128 * WGS, smem>>>(q, k, v, q_scale, k_scale, v_scale, o, stride_bz_o, stride_h_o,
                              stride_seq_o, qo_len, kv_len, num_kv_groups, sm_scale);
}
// used inside SageAttention's dispatch macros, where a #define cannot stand
#define CP_LAUNCH(W, S, F, R, X) cp_two_wg_launch<W, S, F, R, X, CTA_K, HEAD_DIM, G, DTypeOut>(q2, k2, v2, qs, ks, vs, o, stride_bz_o, stride_h_o, stride_seq_o, qo_len, kv_len, num_kv_groups, sm_scale, grid2)
// ---- end of the experiment's kernel ---------------------------------------------------------

