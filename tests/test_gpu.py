"""Real-GPU checks (marked ``gpu``; skipped without CuPy and a CUDA device): the CuPy path
agrees with the NumPy path, stays on the device, and hands over to Torch without a copy."""

import numpy as np
import pytest

from ul4m4_gpu import MultiModalArray, UL4M4Imputer, greedy_complete, partial_distances

pytestmark = pytest.mark.gpu


def separated_data(n=300, dims=(6, 4, 3), seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(4, sum(dims)))
    x = centres[rng.integers(4, size=n)] + rng.normal(size=(n, sum(dims)))
    mask = rng.random((n, len(dims))) < 0.6
    mask[~mask.any(axis=1), 0] = True
    offsets = np.cumsum((0,) + dims)
    return [x[:, offsets[m]:offsets[m + 1]] for m in range(len(dims))], mask


def test_cuda_and_cpu_fits_agree():
    import cupy

    blocks, mask = separated_data()
    results = {}
    for device in ("cpu", "cuda"):
        data = MultiModalArray.from_modalities(blocks, mask=mask, device=device)
        imp = UL4M4Imputer(n_clusters=4, random_state=0, device=device).fit(data)
        out = imp.transform(data)
        assert isinstance(out.values, cupy.ndarray) == (device == "cuda")
        results[device] = (cupy.asnumpy(imp.labels_) if device == "cuda" else imp.labels_,
                           cupy.asnumpy(out.values) if device == "cuda" else out.values)
    np.testing.assert_array_equal(results["cpu"][0], results["cuda"][0])
    np.testing.assert_allclose(results["cpu"][1], results["cuda"][1], rtol=1e-4, atol=1e-3)


def test_low_level_functions_on_cupy_match_numpy():
    import cupy

    rng = np.random.default_rng(1)
    dims = [3, 5]
    z = rng.normal(size=(40, 8))
    mask = rng.random((40, 2)) < 0.7
    centers = rng.normal(size=(6, 8))
    centers_mask = rng.random((6, 2)) < 0.8
    centers_mask[~centers_mask.any(axis=1), 0] = True
    on_gpu = [cupy.asarray(a) for a in (z, mask, centers, centers_mask)]
    np.testing.assert_allclose(
        cupy.asnumpy(partial_distances(*on_gpu, dims)),
        partial_distances(z, mask, centers, centers_mask, dims), rtol=1e-10)
    gpu_done, _ = greedy_complete(*on_gpu, dims)
    cpu_done, _ = greedy_complete(z, mask, centers, centers_mask, dims)
    np.testing.assert_allclose(cupy.asnumpy(gpu_done), cpu_done, rtol=1e-10)


def test_to_torch_shares_device_memory():
    blocks, mask = separated_data(n=50)
    data = MultiModalArray.from_modalities(blocks, mask=mask, device="cuda")
    tensor = data.to_torch()
    assert tensor.is_cuda and tensor.data_ptr() == data.values.data.ptr
