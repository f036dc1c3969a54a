#!/usr/bin/env bash
# The GPU check, sized for a first contact with a lent GPU machine (one command of at most
# 600 s, at most 8 result files, only the console's last 12 KB come back):
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUTDIR]        (OUTDIR default: $OUT, else /tmp/gpu-check)
#
# Steps, in order of value, each with a time-out taken from one deadline (GPU_CHECK_DEADLINE,
# default 540 s after the start):
#   1. build    pip install -e . with the CUDA kernels for this GPU only, -lineinfo     build.log
#   2. smoke    one call of every kernel, synchronised (CUDA_LAUNCH_BLOCKING=1,
#               COMPMECH_CUDA_DEBUG=1), about 10 s                                      smoke.txt
#   3. tests    the GPU tests only (-m cuda; the CPU ones run in CI)                    tests.txt
#   4. bench    benchmarks/bench_cuda.py at quick sizes, then full sizes if time        bench.txt, bench.json,
#               remains (the full figures replace the quick ones only when complete)    bench_full.json
#   5. sanitize compute-sanitizer memcheck, racecheck, synccheck over every kernel
#               variant (our kernels only, uncached allocations), one merged report     sanitize.txt
# and summary.txt (machine, versions, one line per step), also printed last so that the console
# tail alone tells the story. Logs are written as they stream; the build log is kept whole.
#
# --dry-run runs the same script on a machine without a GPU: no build (the installed package),
# the smoke and sanitizer calls on the CPU emulation (no compute-sanitizer), the GPU tests and
# benchmarks as they are (they skip). tests/test_gpu_check.py runs it this way, with
# GPU_CHECK_QUICK=1 (fewer sanitizer variants, one emulated sanitizer pass, no trainer test).
set -uo pipefail

dry=0
if [[ "${1:-}" == "--dry-run" ]]; then dry=1; shift; fi
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
start=$(date +%s)
deadline=$((start + ${GPU_CHECK_DEADLINE:-540}))
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PYTHONUNBUFFERED=1
# the CUDA tools are often installed without being on the PATH
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do [[ -d $d ]] && PATH=$PATH:$d; done
export PATH

left() { echo $((deadline - $(date +%s))); }
# time-out for a step: at most $1 seconds, and never past the deadline minus $2 reserved seconds
budget() { local l=$(( $(left) - ${2:-0} )); (( l > $1 )) && l=$1; (( l < 0 )) && l=0; echo "$l"; }

declare -a rows=()
# row NAME STATUS SECONDS NOTE
row() { rows+=("$(printf '%-9s %-8s %5ss  %s' "$1" "$2" "$3" "$4")"); }
status_of() {  # exit code -> word
  case "$1" in 0) echo ok ;; 124|137) echo TIMEOUT ;; *) echo "FAILED($1)" ;; esac
}
# run NAME LIMIT FILE CMD...: streams CMD's output into FILE (appending) and the console tail;
# sets $rc and $secs.
run() {
  local name=$1 limit=$2 file=$3
  shift 3
  local t0=$(date +%s)
  if (( limit < 5 )); then rc=124; secs=0; echo "[$name] no time left" | tee -a "$file"; return; fi
  echo "[$name] $(date -u +%H:%M:%S) limit ${limit}s: $*" >> "$file"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$file" | tail -n "${TAIL:-12}"
  rc=${PIPESTATUS[0]}
  secs=$(( $(date +%s) - t0 ))
}
summary() {
  {
    echo "== GPU check summary ($(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - start )) s of $(( deadline - start )) s$( ((dry)) && echo ', DRY RUN on the CPU emulation'))"
    cat "$tmp/env.txt" 2>/dev/null
    printf '%s\n' "${rows[@]}"
    echo "files: $(cd "$out" && ls | tr '\n' ' ')"
  } > "$out/summary.txt"
  echo
  cat "$out/summary.txt"
}

# ---- machine and versions -------------------------------------------------------------------
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
    --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu visible', torch.cuda.is_available())" 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -1 | sed 's/^/nvcc: /'
  command -v compute-sanitizer >/dev/null || echo "compute-sanitizer: not found"
  $py - <<'PY'
import importlib.util as u
need = ["torch", "numpy", "scipy", "pytest", "hypothesis", "pytest_benchmark", "scikit_build_core", "pybind11"]
missing = [m for m in need if u.find_spec(m) is None]
print("python modules missing:", " ".join(missing) if missing else "none")
PY
} > "$tmp/env.txt" 2>&1
cat "$tmp/env.txt"

# ---- 1. build -------------------------------------------------------------------------------
if (( dry )); then
  echo "[build] dry run: using the installed package" > "$out/build.log"
  rc=0; secs=0
else
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
  # offline: the build dependencies (scikit-build-core, pybind11, cmake, ninja) come from the image
  TAIL=5 COMPMECH_CUDA_LINEINFO=ON COMPMECH_CUDA_ARCHITECTURES=${cap:+${cap}-real} \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) run build "$(budget 300 150)" "$out/build.log" \
    $py -m pip install --no-build-isolation --no-deps -e . -v
fi
if (( rc == 0 )); then
  $py -c "import compmech as cm; from compmech import _backend; print('build_info', cm.build_info())" \
    >> "$out/build.log" 2>&1 || rc=1
fi
note=$(grep -m1 -o "build_info.*" "$out/build.log" | cut -c1-110)
row build "$(status_of $rc)" "$secs" "${note:-see build.log}"
if (( rc != 0 )); then
  echo "---- build failed: the errors in build.log (whole log in the file) ----"
  grep -n -i -E "error|fatal|not found|No module" "$out/build.log" | head -60
  summary
  exit 1
fi

# ---- 2. smoke test --------------------------------------------------------------------------
smoke_args=(); (( dry )) && smoke_args=(--emulate)
CUDA_LAUNCH_BLOCKING=1 COMPMECH_CUDA_DEBUG=1 TAIL=15 run smoke "$(budget 60 60)" "$out/smoke.txt" \
  $py benchmarks/gpu_smoke.py "${smoke_args[@]}"
row smoke "$(status_of $rc)" "$secs" "$(grep -m1 -E '^smoke: (all|[0-9]+ FAILED)' "$out/smoke.txt" | cut -c1-110)"
smoke_rc=$rc

# ---- 3. GPU tests ---------------------------------------------------------------------------
# A fault in the smoke test poisons the CUDA context of later processes too rarely to skip
# the tests; they run with COMPMECH_CUDA_DEBUG=1 so a fault names its kernel.
tests=tests; (( dry )) && tests=tests/test_cuda.py  # (dry run: collecting every test file is slow here)
COMPMECH_CUDA_DEBUG=1 TAIL=25 run tests "$(budget 200 200)" "$out/tests.txt" \
  $py -m pytest "$tests" -m cuda -q -p no:cacheprovider -rfEs --no-header
t_rc=$rc; t_secs=$secs
# the trainer's CUDA test is not marked (it lives with the CPU trainer tests)
secs=0
if ! (( dry )) || [[ -z ${GPU_CHECK_QUICK:-} ]]; then
  TAIL=4 run tests "$(budget 60 180)" "$out/tests.txt" \
    $py -m pytest tests/test_train.py -k cuda -q -p no:cacheprovider -rfEs --no-header
  (( rc != 0 && rc != 5 )) && t_rc=$rc
fi
row tests "$(status_of $t_rc)" "$((t_secs + secs))" \
  "$(grep -E '(passed|failed|skipped|error|deselected)' "$out/tests.txt" | grep -E ' in [0-9.]+s' | head -1 | tr -d '=' | cut -c1-110)"

# ---- 4. benchmarks: quick sizes, then full sizes if time remains -----------------------------
bench() {  # bench LABEL LIMIT JSON_DIR
  COMPMECH_BENCH_QUICK=$([[ $1 == quick ]] && echo 1 || echo 0) COMPMECH_BENCH_JSON="$3/bench.json" TAIL=30 \
    run "bench-$1" "$2" "$out/bench.txt" $py -m pytest benchmarks/bench_cuda.py -q -p no:cacheprovider \
    --no-header --benchmark-json="$3/bench_full.json" --benchmark-columns=median,rounds
}
bench quick "$(budget 120 150)" "$out"
row bench "$(status_of $rc)" "$secs" "quick sizes: $(grep -c -E '^test_.*(cuda|torch|fill|gpu|cpu)' "$out/bench.txt") rows in bench.txt"
if (( $(left) > 150 + 150 )); then
  bench full "$(budget 240 150)" "$tmp"
  if (( rc == 0 )) && [[ -s "$tmp/bench.json" ]]; then
    mv "$tmp/bench.json" "$tmp/bench_full.json" "$out/"
    row bench "ok" "$secs" "full sizes (replace the quick figures in the JSON files)"
  elif (( rc == 0 )); then
    row bench "ok" "$secs" "full sizes: no figures (every benchmark skipped)"
  else
    row bench "$(status_of $rc)" "$secs" "full sizes incomplete: the JSON files hold the quick figures"
  fi
else
  row bench SKIPPED 0 "full sizes: not enough time left ($(left) s)"
fi

# ---- 5. compute-sanitizer, last ---------------------------------------------------------------
san="$out/sanitize.txt"
: > "$san"
for tool in memcheck racecheck synccheck; do
  n_left=$(( 3 - $(grep -c '^\[sanitize-' "$san") ))
  lim=$(( $(left) / n_left - 5 ))
  if (( dry )) && [[ -n ${GPU_CHECK_QUICK:-} && $tool != memcheck ]]; then
    # quick dry run (the test of this script): one emulated pass stands for all three
    printf '[sanitize-%s] quick dry run: the memcheck pass stands for this one\nsanitize: ok (not rerun)\n' \
      "$tool" >> "$san"
    rc=0; secs=0
  elif (( dry )); then
    TAIL=3 run "sanitize-$tool" "$(budget "$lim")" "$san" $py benchmarks/gpu_sanitize.py --emulate \
      ${GPU_CHECK_QUICK:+--quick}
  elif command -v compute-sanitizer >/dev/null; then
    filter=--kernel-name
    compute-sanitizer --help 2>/dev/null | grep -q -- '--kernel-name' || filter=--filter
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 TAIL=6 run "sanitize-$tool" "$(budget "$lim")" "$san" \
      compute-sanitizer --tool "$tool" "$filter" kns=compmech --error-exitcode 9 --print-limit 30 \
      $py benchmarks/gpu_sanitize.py
  else
    rc=127; secs=0; echo "[sanitize-$tool] compute-sanitizer not on PATH" >> "$san"
  fi
  section=$(awk -v h="[sanitize-$tool]" 'index($0, h) == 1 { f = 1 } f' "$san")  # this pass's lines
  errs=$(grep -E '(ERROR SUMMARY|RACECHECK SUMMARY)' <<<"$section" | tail -1 | cut -c1-80)
  row "${tool:0:9}" "$(status_of $rc)" "$secs" "${errs:-$(tail -1 <<<"$section" | cut -c1-80)}"
done

summary
exit $(( smoke_rc != 0 || t_rc != 0 ))
