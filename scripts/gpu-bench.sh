#!/usr/bin/env bash
# The CUDA matrix on a bare GPU machine (no package index, 64 MiB per call), prepared here.
#
#   here:             bash scripts/gpu-bench.sh pack [pack options]   bundle + parts in .gpu/, and the calls to make
#   GPU machine:      bash scripts/gpu-bench.sh stage                 keep this call's parts (exit 4: more to come)
#   GPU machine:      bash scripts/gpu-bench.sh all                   stage, then run; files for the trip back in $OUT
#   here:             bash scripts/gpu-bench.sh collect DIR           the returned files into results/<platform-id>/
#   here:             bash scripts/gpu-bench.sh rehearse              every step on this machine, in a Python like the
#                                                                     GPU machine's, the GPU parts on their "not available" paths
#
# Environment: DVM_GPU_PYTHON (the GPU machine's python; default /opt/torch/.venv/bin/python3 or python3),
# DVM_GPU_ROOT (staging folder, default /tmp/dvm-gpu), DVM_GPU_FROM (the carried parts, default .gpu),
# DVM_GPU_REPEATS (default 3), OUT (default ./gpu-out).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

device_python() {
  if [ -n "${DVM_GPU_PYTHON:-}" ]; then echo "$DVM_GPU_PYTHON"
  elif [ -x /opt/torch/.venv/bin/python3 ]; then echo /opt/torch/.venv/bin/python3
  else command -v python3; fi
}
here_python() {
  if [ -x .venv/bin/python ]; then echo .venv/bin/python; else command -v python3; fi
}

root="${DVM_GPU_ROOT:-/tmp/dvm-gpu}"
out="${OUT:-$PWD/gpu-out}"
command="${1:-help}"
shift || true
case "$command" in
  pack)
    exec "$(here_python)" -m dvm.harness.gpukit pack "$@" ;;
  plan)
    exec "$(here_python)" -m dvm.harness.gpukit plan "$@" ;;
  stage)
    py="$(device_python)"
    exec "$py" -m dvm.harness.gpukit stage --root "$root" "$@" ;;
  run)
    py="$(device_python)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
    exec "$py" -m dvm.harness.gpukit run --root "$root" --out "$out" --repeats "${DVM_GPU_REPEATS:-3}" "$@" ;;
  all)
    py="$(device_python)"
    "$py" -m dvm.harness.gpukit stage --from "${DVM_GPU_FROM:-.gpu}" --root "$root"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
    exec "$py" -m dvm.harness.gpukit run --root "$root" --out "$out" --repeats "${DVM_GPU_REPEATS:-3}" "$@" ;;
  collect)
    exec "$(here_python)" -m dvm.harness.gpukit collect "$@" ;;
  rehearse)
    exec "$(here_python)" -m dvm.harness.gpukit.rehearse "$@" ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    [ "$command" = help ] || [ "$command" = -h ] || [ "$command" = --help ] || exit 2 ;;
esac
