# usage: ptx_one.sh NAME CFGJSON
export PYTHONPATH=/tmp/fa4src:/tmp/fa4src/nvidia_cutlass_dsl/dsl_packages:/work/main CUTE_DSL_KEEP_PTX=1 CUTE_DSL_KEEP_CUBIN=1 CUTE_DSL_ARCH=sm_90a PYTHONWARNINGS=ignore LOCAL_PTX=1
d=/tmp/ptx/$1; rm -rf $d; mkdir -p $d; export CUTE_DSL_DUMP_DIR=$d
cd $d && /tmp/py312/bin/python - "$2" <<'PY' >/dev/null 2>&1
import sys, json, torch
sys.path.insert(0, "/work/main/.i8")
import var
cfg = json.loads(sys.argv[1])
L,H=1536,2
q8 = torch.zeros(1, L, H, 128, dtype=torch.int8); k8=q8.clone()
v8 = torch.zeros(1, H, 128, L, dtype=torch.float8_e4m3fn)
qs = torch.ones(1, H, L // 16); ks = torch.ones(1, H, L // 128)
var.attention(cfg, q8, qs, k8, ks, v8)
PY
p=$(ls $d/*.ptx | head -1)
[ -z "$p" ] && { echo "$1: no ptx"; exit 1; }
ptxas -arch=sm_90a -O3 -v -o $d/k.cubin $p 2>&1 | grep -v "^$" | sed "s/^/$1: /" | grep -iv "compiling entry\|Function properties\|bytes stack frame, 0 bytes spill" 
