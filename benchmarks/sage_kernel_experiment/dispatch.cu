            // cosmos-posttrain experiment: SAGE_2WG_STAGES=<warpgroups><stages> (22, 23, 32, 33, 34) picks
            // the shared-tile kernel, 0 the original
            if constexpr (!IS_CAUSAL && !RETURN_LSE && HEAD_DIM == 128 && QK_QUANT_GRAN == 2 && std::is_same<DTypeOut, nv_bfloat16>::value)
            {
              const char *stages_env = std::getenv("SAGE_2WG_STAGES");
              const int variant = stages_env ? std::atoi(stages_env) : 0;  // warpgroups, stages, fused
              const int wgs = variant >= 500 ? (variant / 10) % 10 : (variant >= 100 ? variant / 100 : 1);
              if (variant > 0 && qo_len % 16 == 0)
              {
                CUtensorMap q2 = create_tensor_map_4D<64, HEAD_DIM>(reinterpret_cast<int8_t*>(query.data_ptr()), batch_size, num_qo_heads, qo_len, HEAD_DIM, stride_bz_q, stride_h_q, stride_seq_q);
                CUtensorMap k2 = create_tensor_map_4D<CTA_K, HEAD_DIM>(reinterpret_cast<int8_t*>(key.data_ptr()), batch_size, num_kv_heads, kv_len, HEAD_DIM, stride_bz_k, stride_h_k, stride_seq_k);
                CUtensorMap v2 = create_tensor_map_4D<HEAD_DIM, CTA_K>(reinterpret_cast<int8_t*>(value.data_ptr()), batch_size, num_kv_heads, HEAD_DIM, value.size(3), stride_bz_v, stride_h_v, stride_d_v);
                dim3 grid2(div_ceil(qo_len, 64 * wgs), num_qo_heads, batch_size);
                constexpr QuantGranularity G = static_cast<QuantGranularity>(QK_QUANT_GRAN);
                float *qs = reinterpret_cast<float*>(query_scale.data_ptr());
                float *ks = reinterpret_cast<float*>(key_scale.data_ptr());
                float *vs = reinterpret_cast<float*>(value_scale.data_ptr());
                DTypeOut *o = reinterpret_cast<DTypeOut*>(output.data_ptr());
                if (variant == 9)
                {
                  TORCH_CHECK(kv_len % CTA_K == 0 && qo_len % 64 == 0, "pipelined experiment: lengths");
                  auto *kernel = cp_pipelined_attn_kernel<CTA_K, HEAD_DIM, DTypeOut>;
                  const size_t smem = 1024 + 64 * HEAD_DIM + 4 * CTA_K * HEAD_DIM;
                  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
                  kernel<<<dim3(qo_len / 64, num_qo_heads, batch_size), 128, smem>>>(q2, k2, v2, qs, ks, vs, o, stride_bz_o, stride_h_o, stride_seq_o, qo_len, kv_len, num_kv_groups, sm_scale);
                  return lse;
                }
                switch (variant)
                {
                  case 734: CP_REORDER(3, 4, false, true); break;
                  case 834: CP_REORDER(3, 4, true, true); break;
                  case 833: CP_REORDER(3, 3, true, true); break;
                  case 512: CP_REORDER(1, 2, false, false); break;
                  case 524: CP_REORDER(2, 4, false, false); break;
                  case 624: CP_REORDER(2, 4, true, false); break;
                  case 626: CP_REORDER(2, 6, true, false); break;
                  case 533: CP_REORDER(3, 3, false, false); break;
                  case 534: CP_REORDER(3, 4, false, false); break;
                  case 633: CP_REORDER(3, 3, true, false); break;
                  case 634: CP_REORDER(3, 4, true, false); break;
                  case 111: CP_LAUNCH(1, 1, true, false, false); break;
                  case 114: CP_LAUNCH(1, 1, true, false, true); break;
                  case 124: CP_LAUNCH(1, 2, true, false, true); break;
                  default: CP_LAUNCH(3, 3, true, false, false); break;
                }
                return lse;
              }
            }
