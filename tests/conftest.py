"""Test configuration: without a usable GPU, the CUDA kernels run in Numba's simulator and
tests marked ``gpu`` are skipped."""

import os

import pytest


def _gpu_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAS_GPU = _gpu_present()
if not HAS_GPU:
    # must be set before numba.cuda is first imported
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cupy_sim(monkeypatch):
    """Serve ``import cupy`` from the CPU simulator (tests/cupy_sim.py) for one test, so
    the ``device="cuda"`` path runs here; skipped where a real GPU can run it instead."""
    if HAS_GPU:
        pytest.skip("a real GPU is present: the gpu-marked tests cover the CuPy path")
    import sys

    import cupy_sim as sim

    monkeypatch.setitem(sys.modules, "cupy", sim.build_module())
    sim.reset_transfers()
    return sim


@pytest.fixture
def cudf_sim(cupy_sim, monkeypatch):
    """Serve ``import cudf`` from tests/cudf_sim.py (device buffers from the CuPy
    simulator) for one test."""
    import sys

    import cudf_sim as sim

    monkeypatch.setitem(sys.modules, "cudf", sim.build_module())
    return sim
