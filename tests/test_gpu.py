"""Real-GPU checks (marked ``gpu``; skipped without CuPy and a CUDA device). The CuPy path's
agreement with the NumPy path is tests/test_device_path.py, which runs on the real GPU there
and on the simulators elsewhere; here, what only hardware shows: the DLPack handoff to a
CUDA tensor."""

import numpy as np
import pytest

from ul4m4_gpu import MultiModalArray

pytestmark = pytest.mark.gpu


def test_to_torch_shares_device_memory():
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(50, 6)), rng.normal(size=(50, 4))]
    data = MultiModalArray.from_modalities(blocks, mask=rng.random((50, 2)) < 0.7,
                                           device="cuda")
    tensor = data.to_torch()
    assert tensor.is_cuda and tensor.data_ptr() == data.values.data.ptr
