"""Test configuration: without a usable GPU, the CUDA kernels run in Numba's simulator and
tests marked ``gpu`` are skipped; with one, device="auto" means the CPU outside the
device-path test modules (see ``DEVICE_TEST_MODULES``)."""

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


#: Test modules of the device path; in every other module device="auto" means the CPU, also
#: on a GPU machine, so that their results stay NumPy arrays for np.testing (CuPy refuses
#: implicit conversion to NumPy) and they test what they say they test.
DEVICE_TEST_MODULES = ("test_device_path", "test_gpu")


@pytest.fixture(autouse=True)
def _auto_device_is_the_cpu_outside_device_tests(request, monkeypatch):
    if HAS_GPU and request.module.__name__ not in DEVICE_TEST_MODULES:
        import ul4m4_gpu.core.backend

        monkeypatch.setattr(ul4m4_gpu.core.backend, "gpu_available", lambda: False)


@pytest.fixture
def cupy_sim(device_cupy):
    """The simulator's own module (tests/cupy_sim.py: ``transfers``, ``ndarray``), for the
    tests of what only the simulator can count; skipped on a GPU machine."""
    if HAS_GPU:
        pytest.skip("counts host transfers of the CuPy simulator; a real GPU is present")
    import cupy_sim as sim

    return sim


@pytest.fixture
def device_cupy(monkeypatch):
    """The CuPy module the ``device="cuda"`` path uses in this test: the real one on a GPU
    machine, the simulator (installed as ``cupy``) elsewhere."""
    if HAS_GPU:
        import cupy

        return cupy
    import sys

    import cupy_sim as sim

    module = sim.build_module()
    monkeypatch.setitem(sys.modules, "cupy", module)
    sim.reset_transfers()
    return module


@pytest.fixture
def device_cudf(device_cupy, monkeypatch):
    """The cuDF module for this test: the real one on a GPU machine that has it, else
    tests/cudf_sim.py installed as ``cudf`` (device buffers from ``device_cupy``)."""
    if HAS_GPU:
        try:
            import cudf

            return cudf
        except ImportError:
            pass
    import sys

    import cudf_sim as sim

    module = sim.build_module()
    monkeypatch.setitem(sys.modules, "cudf", module)
    return module
