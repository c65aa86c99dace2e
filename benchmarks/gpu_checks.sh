#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one prepared run: step.py, subsets.py and the
# cache read on CUDA, each under its own timeout; step.py prints the measured CUDA rows per
# pass (the chunk size of evaluation). Outputs go to OUT (default: gpu_figures/).
#
#   bash benchmarks/gpu_checks.sh [OUT]          # from the repository root; about 8 minutes
set -u
OUT=${1:-gpu_figures}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch, sys; ok = torch.cuda.is_available(); print(torch.cuda.get_device_name(0) if ok else 'no CUDA device'); sys.exit(0 if ok else 1)" || exit 1

run() {  # name, timeout in s, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name (timeout ${limit} s): $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    cat "$OUT/$name.txt"
    echo "== $name: exit $rc$([ $rc -eq 124 ] && echo ' (timed out)')"
}

run step 150 python benchmarks/step.py --device cuda --repeats 10
run subsets 150 python benchmarks/subsets.py --device cuda --samples 4096 --batch-size 1024 --repeats 3
run cache_read 180 python benchmarks/data_pipeline.py --surveys 4000 --workers 8 --device cuda --reads-only \
    --workdir "${TMPDIR:-/tmp}/miam_gpu_checks"
