"""Every CUDA kernel, with the argument types the library really launches it with, compiled
by the real CUDA compiler (NVVM) on this machine, GPU or not; the simulator tests run the
kernels' Python, which accepts code that Numba's CUDA target rejects.

The argument types are recorded while the ``device="cuda"`` path runs on the simulators
(estimator fit + transform on float32 data, the low-level functions on float64 data); the
kernels are then compiled in a process with the simulator off (tests/compile_kernels.py).
A kernel given only float32 data must compile to PTX without float64 instructions: one
float64 literal in its loop would run it at a fraction of the GPU's float32 rate.
"""

import collections
import json
import os
import pickle
import pkgutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import ul4m4_gpu.kernels
from synthetic import DIMS, K, explicit_init, make_data
from ul4m4_gpu import MultiModalArray, UL4M4Imputer, greedy_complete, lloyd
from ul4m4_gpu.kernels import launching
from ul4m4_gpu.core.normalise import fit_modality_stats, normalise

SCRIPT = Path(__file__).with_name("compile_kernels.py")
#: Set by .ci/run, which installs the compiler: there its absence fails instead of skipping.
REQUIRE_COMPILER = os.environ.get("UL4M4_REQUIRE_PTX") == "1"


def compiler_env() -> dict:
    """This process's environment with Numba's simulator off."""
    return {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}


@pytest.fixture(scope="module", autouse=True)
def cuda_compiler():
    """Skip, saying why, where the CUDA compiler (the ``ptx`` extra) is absent."""
    probe = subprocess.run([sys.executable, str(SCRIPT), "--probe"], env=compiler_env(),
                           capture_output=True, text=True, timeout=300, check=False)
    if probe.returncode == 3 and not REQUIRE_COMPILER:
        pytest.skip("the CUDA compiler is not installed (pip install -e \".[ptx]\"): "
                    + probe.stdout.strip())
    assert probe.returncode == 0, probe.stdout + probe.stderr[-2000:]


def cuda_kernels() -> set:
    """(module, name) of every ``*_cuda`` kernel in the kernels package."""
    found = set()
    for info in pkgutil.iter_modules(ul4m4_gpu.kernels.__path__):
        module = __import__(f"ul4m4_gpu.kernels.{info.name}", fromlist=["_"])
        found |= {(module.__name__, name) for name in vars(module) if name.endswith("_cuda")}
    return found


def argument_type(value):
    """Numba's type of a kernel argument (a simulated device array types as its memory)."""
    return numba.typeof(value.view(np.ndarray) if isinstance(value, np.ndarray) else value)


def run_device_path(device_cupy):
    """The device path on float32 (the estimator, with each completion rule and a soft fill
    whose temperature is chosen at fit) and on float64 data (the functions)."""
    x, mask = make_data(n=200)
    data = MultiModalArray(x, mask, DIMS).to("cuda")
    for completion, n_candidates in (("paper", 1), ("overlap", 3), ("nearest", 2)):
        UL4M4Imputer(n_clusters=K, random_state=0, device="cuda", completion=completion,
                     n_candidates=n_candidates).fit(data).transform(data)
    mean, scale = fit_modality_stats(x, mask, DIMS)
    z = device_cupy.asarray(np.nan_to_num(normalise(x, mask, mean, scale, DIMS)), np.float64)
    rows_mask = device_cupy.asarray(mask)
    centers, centers_mask = (device_cupy.asarray(a) for a in explicit_init(x, mask))
    fit = lloyd(z, rows_mask, DIMS, centers.astype(np.float64), centers_mask)
    greedy_complete(z, rows_mask, fit.centers, fit.centers_mask, DIMS)


def test_every_launched_kernel_compiles_and_float32_stays_float32(cupy_sim, device_cupy,
                                                                  monkeypatch, tmp_path):
    launched = collections.defaultdict(set)
    real_launch = launching.launch

    def recording_launch(kernel, blocks, threads, *args):
        name = (kernel.py_func.__module__, kernel.py_func.__name__)
        launched[name].add(tuple(argument_type(a) for a in args))
        real_launch(kernel, blocks, threads, *args)

    monkeypatch.setattr(launching, "launch", recording_launch)
    run_device_path(device_cupy)
    assert set(launched) == cuda_kernels(), "a CUDA kernel was never launched, so never compiled"

    signatures, records = tmp_path / "signatures.pkl", tmp_path / "ptx.json"
    signatures.write_bytes(pickle.dumps(dict(launched)))
    done = subprocess.run([sys.executable, str(SCRIPT), str(signatures), str(records)],
                          check=False, env=compiler_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads(records.read_text())
    assert len(results) == sum(len(v) for v in launched.values())
    float64_data = [r for r in results if any("float64" in a for a in r["arguments"])]
    float32_only = [r for r in results if r not in float64_data]
    assert float32_only and float64_data
    for record in float32_only:
        assert record["float64_instructions"] == [], record
    # the detector sees float64 where the data is float64
    assert all(r["float64_instructions"] for r in float64_data)
