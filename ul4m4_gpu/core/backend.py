"""Device choice and array-module dispatch: one code path for NumPy (CPU) and CuPy (GPU).

Every numeric function in the library asks :func:`array_module` for the module of its
inputs and writes its array code against that module, in the manner of cuML's Python layer.
CuPy is an optional import: nothing here requires it on a CPU machine.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

DEVICES = ("auto", "cpu", "cuda")

#: dtype of packed modality values on every device.
VALUE_DTYPE = np.float32


def _import_cupy() -> ModuleType | None:
    """Return the ``cupy`` module when it is importable and sees a GPU, else ``None``."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # a CuPy install without a driver or device
        return None
    return cupy


def gpu_available() -> bool:
    """True when CuPy is installed and a CUDA device is visible."""
    return _import_cupy() is not None


def resolve_device(device: str) -> str:
    """Map ``"auto" | "cpu" | "cuda"`` to the concrete device, ``"cpu"`` or ``"cuda"``.

    ``"auto"`` picks CUDA when CuPy and a GPU are present and the CPU otherwise, silently.
    ``"cuda"`` without them raises a ``RuntimeError`` that says what is missing.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu"
    has_gpu = gpu_available()
    if device == "cuda" and not has_gpu:
        raise RuntimeError(
            "device='cuda' was requested but no CUDA GPU is usable: install CuPy "
            "(pip install 'ul4m4-gpu[gpu]' or the conda environment.yml) on a machine "
            "with an NVIDIA GPU, or use device='cpu' / 'auto'"
        )
    return "cuda" if has_gpu else "cpu"


def is_cupy_array(x) -> bool:
    """True when ``x`` is a CuPy ndarray (without importing CuPy when it is absent)."""
    return type(x).__module__.startswith("cupy")


def is_cudf(x) -> bool:
    """True when ``x`` is a cuDF object (DataFrame, Series), without importing cuDF."""
    return type(x).__module__.startswith("cudf")


def import_cudf() -> ModuleType | None:
    """The ``cudf`` module when it is installed, else ``None``."""
    try:
        return importlib.import_module("cudf")
    except ImportError:
        return None


def array_module(*arrays) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) of the given arrays; they must agree."""
    modules = {is_cupy_array(a) for a in arrays if a is not None}
    if len(modules) > 1:
        raise TypeError("inputs mix NumPy and CuPy arrays; move them to one device first")
    if modules == {True}:
        return importlib.import_module("cupy")
    return np


def device_module(device: str) -> ModuleType:
    """The array module for a concrete device name (``"cpu"`` or ``"cuda"``)."""
    return importlib.import_module("cupy") if device == "cuda" else np


def to_device(x, device: str):
    """Move an array (NumPy, CuPy or anything DLPack-capable) to ``device`` without a
    copy when it is already there; Torch tensors as :func:`exportable_tensor` gives them)."""
    if device == "cuda":
        cupy = importlib.import_module("cupy")
        return cupy.asarray(exportable_tensor(x) if is_torch_tensor(x) else x)
    return to_numpy(x)


def is_torch_tensor(x) -> bool:
    """True when ``x`` is a Torch tensor (without importing Torch)."""
    return type(x).__module__.startswith("torch")


def exportable_tensor(x):
    """A Torch tensor detached, in a dtype NumPy and CuPy know: a floating dtype they lack
    (bfloat16, the float8 types) becomes float32, which holds each of its values exactly;
    other tensors are returned detached, unchanged."""
    import torch

    x = x.detach()
    if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
        x = x.to(torch.float32)
    return x


def to_numpy(x) -> np.ndarray:
    """A NumPy view or copy of ``x`` (CuPy arrays are copied to the host, Torch CPU
    tensors are shared, bfloat16/float8 ones converted to float32, see
    :func:`exportable_tensor`)."""
    if is_cupy_array(x):
        return x.get()
    if is_torch_tensor(x):
        return exportable_tensor(x).cpu().numpy()
    return np.asarray(x)
