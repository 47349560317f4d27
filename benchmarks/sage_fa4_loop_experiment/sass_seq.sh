# usage: sass_seq.sh NAME  -> the DSL's own cubin: registers and the compressed key-instruction sequence
cd /tmp/ptx/$1 || exit 1
c=$(ls cutlass*.cubin|head -1); CO=/tmp/py312/lib/python3.12/site-packages/triton/backends/nvidia/bin/cuobjdump
$CO -res-usage "$c" 2>/dev/null | grep -o "REG:[0-9]*.*STACK:[0-9]*" | sed "s/^/$1 /"
$CO -sass "$c" 2>/dev/null > k.sass
grep -o "IGMMA[^ ]*\|QGMMA[^ ]*\|WARPGROUP.DEPBAR.LE gsb0, 0x[01]\|BAR.ARV\|BAR.SYNC[^ ]*\|MUFU.EX2\|F2FP[^ ]*\|SHFL[^ ]*\|LDG[^ ]*\|STL[^ ]*\|LDL[^ ]*" k.sass | sed 's/WARPGROUP.DEPBAR.LE gsb0, /WAIT/; s/F2FP.SATFINITE.E4M3.F32.PACK_AB_MERGE_C/F2FP/; s/\.64x128x32//; s/.DEFER_BLOCKING//' |
 awk '{if ($0==prev) c++; else {if (prev!="") printf "%s%s ", prev, (c>1?"x"c:""); prev=$0; c=1}} END{printf "%s%s\n", prev, (c>1?"x"c:"")}'
