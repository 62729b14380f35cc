#!/usr/bin/env bash
# bench/fetch_wheels.sh: download the benchmarks' optional extras as wheels into .whl/
# (git-ignored), for bench/gpu_check.sh to unpack offline on a lent GPU machine whose image
# has only PyTorch and Triton: run this here, then carry .whl with the run (about 1.5 MB).
#
#   bash bench/fetch_wheels.sh            # peers + pytest-benchmark (+ pytest, in case)
#
# Versions are those the CPU benchmarks were measured with. All are pure-Python wheels, so
# they fit any Python version on the GPU machine; gpu_check.sh only unpacks those whose
# distribution is not installed there. (spikebert's training-step benchmark also needs
# transformers and its compiled dependencies; they are not fetched: see bench/README.md.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python -m pip download --no-deps --only-binary=:all: -d .whl \
    spikingjelly==2.0.0 loguru==0.7.3 snntorch==1.0.0 \
    pytest-benchmark==5.2.3 py-cpuinfo==9.0.0 \
    pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 packaging==26.2 Pygments==2.20.0
ls -la .whl
