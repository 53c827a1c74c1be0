#!/usr/bin/env bash
# TensorRT on an x86 host with an NVIDIA GPU, through the project's own code, in under 10 minutes:
# the quickstart (EfficientNet-Lite0) for target jetson with the local runner: its ONNX and QDQ ONNX
# made here, fp32/fp16/int8 engines built by convert.tensorrt, each benchmarked and validated by the
# TensorRT runtime adapter, with trtexec's figures parsed beside ours.
#
#   bash bench/gpu_check.sh [OUT]              # default OUT: build/gpu-check
#   bash bench/gpu_check.sh --summarize OUT    # the summary of a finished run only
#
# Needs: nvidia-smi, TensorRT 10.x Python bindings (pip install tensorrt-cu12), cuda-python matching the
# driver's CUDA, trtexec on PATH or TRTEXEC_BIN, and this project's venv (./setup.sh). Exit 0 when every
# engine was built, timed, validated and compared with trtexec; 1 otherwise; 2 when a prerequisite is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
RECIPE="$ROOT/recipes/efficientnet-lite0.yaml"
MINUTES=10

summarize() {  # summarize RUN_DIR: one line per variant; exit 1 unless each is ok with trtexec figures
    "$PY" - "$1" <<'EOF'
import json, sys
from pathlib import Path

results = json.loads((Path(sys.argv[1]) / "results.json").read_text())
bad = 0
for v in results["variants"]:
    b = v.get("benchmark") or {}
    tool = (b.get("tools") or {}).get("trtexec") or {}
    vs = (b.get("vs_tools") or {}).get("trtexec") or {}
    cosine = (v.get("validation") or {}).get("cosine")
    line = (f"{v['name']:6} {v['status']:10} p50 {b.get('p50_ms', float('nan')):8.3f} ms  "
            f"trtexec p50 {tool.get('p50_ms', float('nan')):8.3f} ms  ours/trtexec {vs.get('p50_ratio', '-')}  "
            f"cosine {cosine if cosine is not None else '-'}")
    if tool.get("error"):
        line += f"  trtexec: {tool['error']}"
    print(line)
    bad += v["status"] != "ok" or "p50_ms" not in tool
print("gpu check: " + ("ok" if not bad else f"{bad} variant(s) without an ok engine and trtexec figures"))
sys.exit(1 if bad else 0)
EOF
}

if [ "${1:-}" = "--summarize" ]; then
    summarize "${2:?give the run folder}/efficientnet-lite0/jetson"
    exit
fi
OUT="${1:-$ROOT/build/gpu-check}"

missing() { echo "gpu check: $*" >&2; exit 2; }
command -v nvidia-smi >/dev/null || missing "needs an NVIDIA GPU: nvidia-smi not found"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    || missing "nvidia-smi cannot reach the GPU driver"
"$PY" -c 'import tensorrt; from builder.backends.tensorrt.runtime import check_version; check_version(tensorrt.__version__);
print("TensorRT", tensorrt.__version__)' \
    || missing "needs TensorRT 10.x's Python bindings in $PY (pip install tensorrt-cu12)"
"$PY" -c 'from cuda.bindings import runtime as c; from builder.backends.tensorrt.runtime import cuda_call;
print("CUDA devices:", cuda_call(c, "cudaGetDeviceCount"))' \
    || missing "cuda-python cannot use the GPU (pip install cuda-python matching the driver's CUDA)"
"$PY" -c 'from builder.backends.tensorrt import trtexec; b = trtexec.trtexec_binary(); print("trtexec:", b); raise SystemExit(b is None)' \
    || missing "trtexec not found: put it on PATH or set TRTEXEC_BIN (TensorRT's tar package has it in bin/)"

started=$SECONDS
status=0
timeout "$((MINUTES * 60))" "$PY" -m builder.host.cli run "$RECIPE" -t jetson --runner local \
    --variant fp32 --variant fp16 --variant int8 --out "$OUT" || status=$?
[ "$status" = 124 ] && { echo "gpu check: not finished in $MINUTES minutes" >&2; exit 1; }
echo "gpu check: builder run exited $status after $((SECONDS - started)) s"
summarize "$OUT/efficientnet-lite0/jetson"
