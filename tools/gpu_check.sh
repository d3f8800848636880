#!/usr/bin/env bash
# One-shot device check for a GPU loan (see README "GPU"): installs nothing from the network.
#   1. the device-path tests on real CuPy and CUDA (the point of the loan), 90 s at most;
#   2. benchmarks/bench_gpu.py (N = 1M, K = 256), 110 s at most; every figure is written to
#      the JSON as soon as it is measured, so a run cut short keeps what it measured;
#   3. the rest of the suite (device="auto" means the CPU there), with the 80 s left.
# Each step is stopped with SIGINT, so that pytest still prints its failures and summary.
# Writes nvidia-smi.txt, versions.txt, tests-device.log, bench_gpu.log, bench_gpu.json,
# tests-rest.log and JUnit XML under $OUT. Budget: under 5 minutes on one H200.
# Usage: OUT=/some/dir bash tools/gpu_check.sh
# With .whl/ carried (tools/fetch_gpu_wheels.sh), dask is installed from it first so that
# the Dask tests on device partitions run on the GPU too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset NUMBA_ENABLE_CUDASIM
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 \
  || { echo "install failed"; tail -5 "$OUT/install.log"; exit 1; }
if [ -d .whl ]; then  # wheels carried from tools/fetch_gpu_wheels.sh (the Dask tests need them)
  python3 -m pip install -q --no-index --find-links .whl dask distributed >> "$OUT/install.log" 2>&1 \
    || echo "dask wheels did not install: the Dask tests will skip (see $OUT/install.log)"
fi
python3 -c "import cupy, numba.cuda; print('cupy', cupy.__version__, 'gpus', cupy.cuda.runtime.getDeviceCount(), 'numba.cuda', numba.cuda.is_available())" \
  | tee "$OUT/versions.txt"

pytest_flags=(-q -p no:cacheprovider -rfEs --durations=15)
if python3 -c "import pytest_timeout" 2>/dev/null; then
  pytest_flags+=(--timeout=60)  # one hung test must not eat the step
fi
device_tests=(tests/test_device_path.py tests/test_gpu.py tests/test_kernels.py)
stop() { timeout -s INT -k 15 "$@"; }

stop 90 python3 -m pytest "${pytest_flags[@]}" --junitxml="$OUT/junit-device.xml" \
  "${device_tests[@]}" 2>&1 | tee "$OUT/tests-device.log"
device_rc=${PIPESTATUS[0]}
stop 110 python3 benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}
rest_flags=()
for module in "${device_tests[@]}"; do rest_flags+=("--ignore=$module"); done
if python3 -c "import xdist" 2>/dev/null; then
  rest_flags+=(-n 4)  # CPU tests: four processes of the machine's 16 cores
fi
stop 80 python3 -m pytest "${pytest_flags[@]}" --junitxml="$OUT/junit-rest.xml" "${rest_flags[@]}" \
  2>&1 | tee "$OUT/tests-rest.log"
rest_rc=${PIPESTATUS[0]}
echo "device tests rc=$device_rc bench rc=$bench_rc other tests rc=$rest_rc"
exit $(( device_rc != 0 || bench_rc != 0 || rest_rc != 0 ))
