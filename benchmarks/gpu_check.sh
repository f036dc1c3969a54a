#!/usr/bin/env bash
# One-shot GPU check for a lent GPU machine (the `device` tool: offline, torch and the build
# tools preinstalled): build with the CUDA kernels, run every CUDA test, then the CUDA
# benchmarks. Writes its reports to OUTDIR (default $OUT, else /tmp/gpu-check).
#
#   bash benchmarks/gpu_check.sh [OUTDIR]
#
# Sized for a 15-minute device budget: about 1-2 min build, 1-2 min tests, a few minutes of
# compute-sanitizer, 2-3 min benchmarks (each step has its own timeout).
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nvcc --version | tail -2
} 2>&1 | tee "$out/gpu.txt"

start=$(date +%s)
# offline: the build dependencies (scikit-build-core, pybind11, cmake, ninja) come from the image
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) $py -m pip install --no-build-isolation --no-deps -e . -q 2>&1 | tail -20 \
  | tee "$out/build.txt"
echo "build: $(( $(date +%s) - start )) s" | tee -a "$out/build.txt"
$py -c "import compmech as cm; from compmech import _cuda; print(cm.build_info(), 'runtime', _cuda.runtime_version(), 'devices', _cuda.device_count())" \
  2>&1 | tee -a "$out/build.txt"

timeout 420 $py -m pytest tests/test_cuda.py tests/test_train.py -q -p no:cacheprovider -rs 2>&1 | tail -40 \
  | tee "$out/tests.txt"

# memory errors, shared-memory races and barrier misuse in every kernel variant (small sizes)
for tool in memcheck racecheck synccheck; do
  timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 $py benchmarks/gpu_sanitize.py 2>&1 | tail -8 \
    | tee "$out/sanitize-$tool.txt"
done

COMPMECH_BENCH_JSON="$out/bench.json" timeout 420 $py -m pytest benchmarks/bench_cuda.py -q -p no:cacheprovider \
  --benchmark-json="$out/bench_full.json" 2>&1 | tail -45 | tee "$out/bench.txt"
