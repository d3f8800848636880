#!/usr/bin/env bash
# One-shot device check for a GPU loan (see README "GPU"): installs nothing from the network,
# runs the whole test suite with the GPU tests enabled (real CUDA, no simulator), then the GPU
# benchmark. Writes tests.log, bench_gpu.log, bench_gpu.json and nvidia-smi.txt under $OUT.
# Budget: under 5 minutes on one H200.   Usage: OUT=/some/dir bash tools/gpu_check.sh
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
timeout 170 python3 -m pytest -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 110 python3 benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
