"""A CPU stand-in for CuPy, in the spirit of Numba's CUDA simulator: it lets the tests run
the library's ``device="cuda"`` orchestration (CuPy arrays + CUDA kernels) on a machine
without a GPU.

Installed as ``sys.modules["cupy"]`` by the ``cupy_sim`` fixture (see conftest.py) while
``NUMBA_ENABLE_CUDASIM=1`` runs the CUDA kernels, so every ``xp`` call of the library goes
through this module and every kernel launch through Numba's simulator. The arithmetic is
NumPy's; what the simulator adds is CuPy's *contract*, the things that break code written
and tested only against NumPy:

* device arrays (:class:`ndarray`) refuse to mix with host arrays in ufuncs and array
  functions (CuPy raises ``TypeError``; move data with ``asarray``/``get`` instead);
* reductions return 0-d device arrays, not NumPy scalars (CuPy's "Difference between
  CuPy and NumPy");
* only the module-level names listed in :data:`NAMES` exist (each is in CuPy's
  comparison table with NumPy's signature); anything else raises ``AttributeError``;
* every device → host transfer (``get``, ``asnumpy``, ``float``/``int``/``bool``,
  ``item``, ``tolist``, formatting) and every operation whose output size depends on the
  data, for which CuPy waits for the device (boolean-mask indexing, ``bincount``,
  ``flatnonzero``, ``unique``) is counted in :data:`transfers`, so a test can pin the
  number of host round trips per Lloyd iteration.

Not simulated: boolean-mask assignment (counted by none), ``numpy.asarray(device_array)`` (a real CuPy array refuses it; here the
subclass slips through), scalar indexing (``x[i]`` gives a NumPy scalar here, a 0-d array
in CuPy, and is not counted as a transfer: Numba's simulator indexes kernel arguments the
same way), streams, memory pools, and CuPy's own kernels' round-off.
"""

from __future__ import annotations

import collections
import types

import numpy as np

#: Counts of device → host transfers by kind since the last :func:`reset_transfers`.
transfers: collections.Counter = collections.Counter()


def reset_transfers() -> None:
    transfers.clear()


def _host_view(x):
    return x.view(np.ndarray) if isinstance(x, ndarray) else x


def _is_host_array(x) -> bool:
    return type(x) is np.ndarray and x.ndim > 0


def _refuse_host_arrays(args, where: str) -> None:
    for a in args:
        if isinstance(a, (list, tuple)):
            _refuse_host_arrays(a, where)
        elif _is_host_array(a):
            raise TypeError(f"cupy_sim: {where} got a NumPy array; CuPy does not convert "
                            "host arrays implicitly (use cupy.asarray)")


def _to_host_args(args):
    if isinstance(args, (list, tuple)):
        return type(args)(_to_host_args(a) for a in args)
    if isinstance(args, dict):
        return {k: _to_host_args(v) for k, v in args.items()}
    return _host_view(args)


def _on_device(result):
    """Wrap a NumPy result as device arrays; scalars become 0-d arrays, as in CuPy."""
    if isinstance(result, tuple):
        return tuple(_on_device(r) for r in result)
    if isinstance(result, list):
        return [_on_device(r) for r in result]
    if isinstance(result, np.ndarray):
        return result.view(ndarray)
    if isinstance(result, np.generic):
        return np.asarray(result).view(ndarray)
    return result


class ndarray(np.ndarray):
    """A device array: NumPy memory with CuPy's rules (see the module docstring)."""

    __module__ = "cupy"

    def get(self) -> np.ndarray:
        transfers["get"] += 1
        return np.array(self.view(np.ndarray))

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_host_arrays(inputs, f"ufunc {ufunc.__name__}")
        if out is not None:
            _refuse_host_arrays(out, f"ufunc {ufunc.__name__} out=")
            kwargs["out"] = _to_host_args(out)
        result = getattr(ufunc, method)(*_to_host_args(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _on_device(result)

    def __array_function__(self, func, types_, args, kwargs):
        _refuse_host_arrays(args, func.__name__)
        _refuse_host_arrays(list(kwargs.values()), func.__name__)
        return _on_device(func(*_to_host_args(args), **_to_host_args(kwargs)))

    def __getitem__(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, np.ndarray) and p.dtype == bool and p.ndim for p in parts):
            transfers["boolean index"] += 1  # CuPy needs the True count on the host
        return np.ndarray.__getitem__(self, _to_host_args(index))

    def _scalar(self, kind: str):
        transfers[kind] += 1
        return self.view(np.ndarray)[()] if self.ndim == 0 else self.view(np.ndarray).item()

    def __float__(self):
        return float(self._scalar("float"))

    def __int__(self):
        return int(self._scalar("int"))

    def __index__(self):
        return int(self._scalar("index"))

    def __bool__(self):
        return bool(self._scalar("bool"))

    def item(self, *args):
        transfers["item"] += 1
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        transfers["tolist"] += 1
        return self.view(np.ndarray).tolist()

    def __format__(self, spec):
        transfers["format"] += 1
        return format(self.view(np.ndarray), spec)


# Module-level names the simulator serves; each is verified in CuPy's comparison table
# (docs.cupy.dev/en/latest/reference/comparison.html) with NumPy's signature for the
# arguments the library passes. Add a name only after checking it there.
_CREATORS = ("asarray", "array", "ascontiguousarray")  # accept host data (a host → device copy)
_FUNCTIONS = (
    "abs", "all", "any", "arange", "argmin", "argmax", "argsort", "bincount", "concatenate",
    "cumsum", "einsum", "empty", "empty_like", "exp", "flatnonzero", "full", "full_like",
    "isfinite", "isinf", "isnan", "left_shift", "maximum", "minimum", "ones", "ones_like",
    "repeat", "searchsorted", "sqrt", "stack", "take", "tensordot", "unique", "where", "zeros",
    "zeros_like",
)
#: ``cupy.linalg`` functions served (cuSOLVER in CuPy; NumPy's LAPACK here).
_LINALG = ("eigh", "solve")
_SIZE_FROM_DATA = ("bincount", "flatnonzero", "unique")  # CuPy syncs to size the output
#: Keyword arguments refused although CuPy takes them, with the reason.
_REFUSED_KWARGS = {
    ("unique", "axis"): "CuPy's unique(axis=...) is a Python-level quicksort with host "
                        "syncs per comparison (cupy/cupy#8326); unique 1-D keys instead",
}
_CONSTANTS = ("bool_", "float32", "float64", "int32", "int64", "uint8", "uint64", "inf", "nan",
              "newaxis", "dtype")
NAMES = frozenset(_CREATORS + _FUNCTIONS + _CONSTANTS)


def _creator(name):
    numpy_function = getattr(np, name)

    def create(obj, *args, **kwargs):
        return _on_device(numpy_function(_to_host_args(obj), *args, **kwargs))

    create.__name__ = name
    return create


def _function(name, namespace=np):
    numpy_function = getattr(namespace, name)

    def call(*args, **kwargs):
        for key in kwargs:
            if (name, key) in _REFUSED_KWARGS:
                raise TypeError(f"cupy_sim: {name}({key}=...): {_REFUSED_KWARGS[name, key]}")
        if name in _SIZE_FROM_DATA:
            transfers[name] += 1
        _refuse_host_arrays(args, name)
        _refuse_host_arrays(list(kwargs.values()), name)
        return _on_device(numpy_function(*_to_host_args(args), **_to_host_args(kwargs)))

    call.__name__ = name
    return call


class _Generator:
    """``cupy.random.default_rng(seed)``: the methods the benchmarks use, NumPy's streams."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=np.float64):
        return _on_device(self._rng.standard_normal(size, dtype=dtype))

    def integers(self, low, high=None, size=None):
        return _on_device(self._rng.integers(low, high, size))

    def random(self, size=None):
        return _on_device(self._rng.random(size))


def asnumpy(x, **kwargs) -> np.ndarray:
    return x.get() if isinstance(x, ndarray) else np.asarray(x, **kwargs)


def build_module() -> types.ModuleType:
    """A fresh ``cupy`` module object backed by this simulator."""
    module = types.ModuleType("cupy", __doc__)
    for name in _CREATORS:
        setattr(module, name, _creator(name))
    for name in _FUNCTIONS:
        setattr(module, name, _function(name))
    for name in _CONSTANTS:
        setattr(module, name, getattr(np, name))
    module.ndarray = ndarray
    module.asnumpy = asnumpy
    module.cuda = types.SimpleNamespace(  # one device; the default stream is current
        runtime=types.SimpleNamespace(
            getDeviceCount=lambda: 1,
            getDeviceProperties=lambda device: {"name": b"cupy_sim (CPU)"}),
        get_current_stream=lambda: types.SimpleNamespace(ptr=0),
        Device=lambda device=0: types.SimpleNamespace(synchronize=lambda: None))
    module.random = types.SimpleNamespace(default_rng=_Generator)
    module.linalg = types.SimpleNamespace(**{name: _function(name, np.linalg)
                                             for name in _LINALG})
    module.__getattr__ = _missing_name
    return module


def _missing_name(name):
    raise AttributeError(f"cupy_sim does not serve cupy.{name}: check CuPy's comparison "
                         "table, then add it to tests/cupy_sim.py")
