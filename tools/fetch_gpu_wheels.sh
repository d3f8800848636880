#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels the GPU loan machine lacks for the Dask tests
# (dask, distributed and their five missing dependencies; about 3 MB, pure Python or abi3)
# into .whl/ (git-ignored), so that `run` can carry them there: pass carry [".whl"] and
# tools/gpu_check.sh installs them from disk before the tests.
# Usage: bash tools/fetch_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --dest .whl --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --implementation cp \
  dask distributed partd locket tblib zict tornado
ls .whl
