# Apply the experiment to SageAttention's source tree (thu-ml/SageAttention d1a57a5, run from its
# root), then build it for sm_90a as usual: the kernels are appended to
# csrc/qattn/qk_int_sv_f8_cuda_sm90.cu and the fused-V-scale entry point dispatches on
# SAGE_2WG_STAGES (0 or unset: SageAttention's own kernel).
set -e
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3 - "$here" <<'PY'
import sys
here = sys.argv[1]
f = "csrc/qattn/qk_int_sv_f8_cuda_sm90.cu"
s = open(f).read()
anchor = "torch::Tensor qk_int8_sv_f8_accum_f32_attn_inst_buf("
assert s.count(anchor) == 1
s = s.replace(anchor, open(f"{here}/shared_tiles.cu").read() + open(f"{here}/pipelined.cu").read() + open(f"{here}/one_phase.cu").read() + anchor)
anchor2 = "            CHECK_SHAPE(value_scale, batch_size, num_kv_heads, head_dim);\n"
assert s.count(anchor2) == 1
s = s.replace(anchor2, anchor2 + open(f"{here}/dispatch.cu").read())
open(f, "w").write("#include <cstdlib>\n" + s)
PY
