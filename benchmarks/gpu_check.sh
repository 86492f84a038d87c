#!/usr/bin/env bash
# The first-GPU check of the CUDA back-end, in one go (benchmarks/README.md, "GPU"):
#   1. the build sees the device (fastprune.build_info()['cuda_available']);
#   2. every GPU test: tests/test_moments_cuda.py and tests/test_influence_cuda.py (shapes, dtypes,
#      layouts, streams, devices, the emulation cross-checks) and the CUDA tests of tests/test_moments.py;
#   3. compute-sanitizer memcheck, racecheck and synccheck over small workloads reaching every
#      fastprune kernel (the two test_sanitizer_workload tests), fastprune's kernels only;
#   4. the GPU benchmarks: achieved GB/s as a fraction of a device-to-device copy (moments and
#      the influence pass).
# Usage: benchmarks/gpu_check.sh [python]   (default: python; PYTHONPATH is set to this checkout)
# On a fresh device machine (the lent H200's image has torch, nvcc, pybind11, ninja, pytest,
# pytest-benchmark and hypothesis; its python is python3), build in place first:
#   FASTPRUNE_BUILD_CUDA=1 FASTPRUNE_CUDA_ARCHS=90 python3 setup.py build_ext --inplace \
#     && benchmarks/gpu_check.sh python3
# Exit status: non-zero on the first failing step. Output: the steps' own, plus a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TQDM_DISABLE=1
SAN=${COMPUTE_SANITIZER:-compute-sanitizer}

echo "== 1. device and build"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv || true
"$PY" - <<'PY'
import sys, fastprune
info = fastprune.build_info()
print({k: info[k] for k in ("cuda_built", "cuda_archs", "cuda_runtime_version", "cuda_device_count", "cuda_available")})
sys.exit(0 if info["cuda_available"] else "fastprune sees no CUDA device (build with nvcc on PATH, FASTPRUNE_BUILD_CUDA=1)")
PY

echo "== 2. GPU tests"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_moments_cuda.py tests/test_moments.py tests/test_influence_cuda.py

echo "== 3. compute-sanitizer"
for tool in memcheck racecheck synccheck; do
  extra=()
  [[ $tool == memcheck ]] && extra=(--leak-check full)
  [[ $tool == racecheck ]] && extra=(--racecheck-report hazard)
  echo "-- $tool"
  "$SAN" --tool "$tool" "${extra[@]}" --kernel-name kns=fastprune --error-exitcode 3 \
    "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_moments_cuda.py::test_sanitizer_workload \
    tests/test_influence_cuda.py::test_sanitizer_workload
done

echo "== 4. GPU benchmarks"
"$PY" -m pytest -q -p no:cacheprovider benchmarks/test_bench_moments.py benchmarks/test_bench_influence.py -k cuda \
  --benchmark-only -s
echo "gpu_check: all steps passed"
