#!/usr/bin/env bash
# bench/gpu_check.sh: what a session with a lent CUDA machine runs, once, in under 8 minutes.
#
#   1. the GPU correctness tests: python -m pytest tests/spike_kernels -q, real Triton kernels
#      on CUDA tensors (TRITON_INTERPRET unset);
#   2. the benchmarks (LIF, spiking attention, SpikeBERT training step), one pytest run each,
#      merged into one JSON, then rendered as Markdown;
#   3. meanwhile, on the CPUs: the sm_90 compile harness (bench/sm90.py: registers, spills,
#      access widths of every kernel the ops launch) and the performance model it feeds
#      (bench/perf_model.py), so that the measured tables sit next to the predicted ones.
#
# Usage, from the repository root on the CUDA machine:   bash bench/gpu_check.sh
# Needs only the machine's own PyTorch, Triton and pytest. Peers and pytest-benchmark are
# optional: wheels found in .whl/ (bench/fetch_wheels.sh downloads them; carry .whl along)
# are unpacked into a scratch folder, without network, for whatever is not installed; peers
# still missing are skipped with a message, and without pytest-benchmark a plain timer
# writes the same JSON.
#
# Output, in $OUT when set (the device tool's output folder), else bench/results/:
#   <run id>.json + latest-gpu.json (results), gpu-bench.md (tables), gpu-*.log (each stage),
#   sm90.json (compile harness) + perf-model.md (the README's "Performance model" section).
# Environment: GPU_CHECK_BUDGET (seconds for everything, default 450), BENCH_GIT_COMMIT (the
# commit to record where the copy has no .git), GPU_CHECK_FULL=1 (--benchmark-full: the full
# matrix, which does not fit the default budget), GPU_CHECK_TESTS (the test paths, default
# tests/spike_kernels), GPU_CHECK_ALLOW_CPU=1 (run on a CPU: tries this script's plumbing).
set -euo pipefail
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BUDGET=${GPU_CHECK_BUDGET:-450}
RESULTS=${OUT:-$REPO/bench/results}
mkdir -p "$RESULTS"
export BENCH_RESULTS_DIR=$RESULTS
export BENCH_RUN_ID=${BENCH_RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)-cuda}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
FULL=""
[[ "${GPU_CHECK_FULL:-0}" == 1 ]] && FULL=--benchmark-full

# ---- optional extras from .whl/, offline, only for distributions not already installed
if compgen -G "$REPO/.whl/*.whl" > /dev/null; then
    DEPS=$(mktemp -d /tmp/gpu-check-deps.XXXXXX)
    for whl in "$REPO"/.whl/*.whl; do
        dist=$(basename "$whl" | cut -d- -f1)
        if python -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" \
                2> /dev/null; then
            continue
        fi
        echo "gpu_check: unpacking $(basename "$whl") (not installed here)"
        python -m zipfile -e "$whl" "$DEPS"  # a pure-Python wheel is a zip of site-packages
    done
    export PYTHONPATH="$PYTHONPATH:$DEPS"
fi

# ---- the machine: stop early where there is no GPU
python - <<'EOF'
import importlib.metadata as m
import os
import sys

import torch

if not torch.cuda.is_available():
    if os.environ.get("GPU_CHECK_ALLOW_CPU") != "1":  # 1: test this script's plumbing on a CPU
        sys.exit("gpu_check: torch sees no CUDA device; this script is for a GPU machine")
    print("gpu_check: no CUDA device; running on the CPU (GPU_CHECK_ALLOW_CPU=1)")


def v(d):
    try:
        return m.version(d)
    except m.PackageNotFoundError:
        return "missing"
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
print(f"gpu_check: {name}, torch {torch.__version__} (CUDA "
      f"{torch.version.cuda}), " + ", ".join(f"{d} {v(d)}" for d in (
          "triton", "numpy", "pytest", "pytest-benchmark", "spikingjelly", "snntorch",
          "transformers")))
EOF

# ---- stages, each under its own timeout, all within BUDGET (20 s kept for the tables)
FAILED=()
clamp() {  # clamp SECONDS: the stage's limit, or less when the budget is running out
    local left=$((BUDGET - SECONDS - 20))
    echo $(($1 < left ? $1 : left))
}
stage() {  # stage NAME LIMIT COMMAND...: run under a timeout, log to $RESULTS/gpu-NAME.log
    local name=$1 limit=$2
    shift 2
    if ((limit < 30)); then
        echo "gpu_check: $name not run: the ${BUDGET}s budget is spent"
        FAILED+=("$name(no time)")
        return 0
    fi
    echo "gpu_check: == $name (at ${SECONDS}s, timeout ${limit}s)"
    local rc=0
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$RESULTS/gpu-$name.log" || rc=$?
    local note=""
    ((rc == 124)) && note=" (timed out)"
    echo "gpu_check: == $name exit $rc$note at ${SECONDS}s"
    ((rc == 0)) || FAILED+=("$name(exit $rc$note)")
}
bench_stage() {  # bench_stage NAME SECONDS FILE: one benchmark file, deadline before timeout
    local name=$1 limit file=$3
    limit=$(clamp "$2")
    local deadline=$((limit - (limit > 150 ? 50 : limit / 3)))
    stage "$name" "$limit" python -m pytest "$file" -q -p no:cacheprovider --benchmark \
        --benchmark-deadline "$deadline" ${FULL:+"$FULL"}
}

# ---- the compile harness, on the CPUs while the GPU tests run (it launches nothing)
echo "gpu_check: == sm90 compile harness in the background (at ${SECONDS}s)"
( timeout -k 10 "$(clamp 170)" python bench/sm90.py --jobs 6 -q --json "$RESULTS/sm90.json" \
    && python bench/perf_model.py --results "$RESULTS/sm90.json" > "$RESULTS/perf-model.md" ) \
    > "$RESULTS/gpu-sm90.log" 2>&1 &
SM90_PID=$!

# shellcheck disable=SC2086  # GPU_CHECK_TESTS may name several paths
stage tests "$(clamp 150)" python -m pytest ${GPU_CHECK_TESTS:-tests/spike_kernels} -q \
    -p no:cacheprovider --durations=10
sm90_rc=0
wait "$SM90_PID" || sm90_rc=$?  # before the timed benchmarks: no compile load under them
echo "gpu_check: == sm90 exit $sm90_rc at ${SECONDS}s: $(tail -n 1 "$RESULTS/gpu-sm90.log")"
((sm90_rc == 0)) || FAILED+=("sm90(exit $sm90_rc)")
bench_stage bench-lif 170 bench/test_bench_lif.py
bench_stage bench-attention 45 bench/test_bench_attention.py
bench_stage bench-train-step 65 bench/test_bench_train_step.py

# ---- the tables
if [[ -f "$RESULTS/$BENCH_RUN_ID.json" ]]; then
    python bench/render.py "$RESULTS/$BENCH_RUN_ID.json" -o "$RESULTS/gpu-bench.md"
    cat "$RESULTS/gpu-bench.md"
else
    echo "gpu_check: no benchmark results were written"
    FAILED+=("results(none)")
fi
[[ -s "$RESULTS/perf-model.md" ]] && cat "$RESULTS/perf-model.md"
echo "gpu_check: done in ${SECONDS}s; results in $RESULTS"
if ((${#FAILED[@]})); then
    echo "gpu_check: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "gpu_check: all stages passed"
