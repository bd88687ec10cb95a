#!/usr/bin/env bash
# The GPU check: the suite's CUDA-marked tests, then one timed epoch of every model on
# ml-1m-sized planted data, in fp32 and under bf16 autocast. About 3-6 minutes on one GPU
# (each step has its own time limit; the whole stays under 8 minutes).
#
#   benchmarks/gpu_check.sh                 # on a machine with a GPU
#   benchmarks/gpu_check.sh --device cpu    # the same steps on the CPU, at a small size
#                                           # (checks the script; the CUDA tests skip)
#
# Prints the test summary and a table; with $OUT set, writes $OUT/gpu_check.json (the
# table's rows, the device, torch's version) and $OUT/cuda_tests.txt (the pytest output).
# Run it from anywhere: it works in the repository it belongs to. Needs a Python with torch
# (a CUDA build for --device cuda), this package installed (pip install -e . --no-deps works
# where torch, PyG and the rest are already there) and pytest.
set -euo pipefail

device=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --device=*) device="${1#*=}"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (only --device cuda|cpu)" >&2; exit 2 ;;
    esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu_check.sh: --device cuda or cpu" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
out=${OUT:-}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== environment"
"$python" - "$device" <<'PY'
import sys
import torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, "
              f"bf16 {torch.cuda.is_bf16_supported()}")
elif sys.argv[1] == "cuda":
    sys.exit("gpu_check.sh: --device cuda, but torch sees no CUDA device (a CPU build of "
             "torch, or no driver); use --device cpu to check the script")
PY

echo "== CUDA-marked tests (pytest -m cuda)"
status=0
timeout 240 "$python" -m pytest -q -p no:cacheprovider -o addopts="" -m cuda -rs tests \
    >"$log" 2>&1 || status=$?
tail -n 25 "$log"
if [ -n "$out" ]; then mkdir -p "$out"; cp "$log" "$out/cuda_tests.txt"; fi
# 5: nothing collected; a CPU machine skips every CUDA test, which is a pass here
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    echo "gpu_check.sh: CUDA tests failed (exit $status); timing anyway" >&2
fi

echo "== one timed epoch of each model (fp32 and bf16 autocast)"
if [ "$device" = cuda ]; then
    size=(--users 6040 --items 3706 --per-user 190)   # ml-1m's size, ~1M interactions
else
    size=(--users 600 --items 400 --per-user 30)      # small: the CPU run checks the script
fi
timeout 300 "$python" benchmarks/scaling.py epoch --device "$device" --bf16 "${size[@]}" \
    ${out:+--out "$out/gpu_check.json"}
exit "$status"
