"""``MultiModalArray``: packed per-sample embeddings of several modalities, some missing.

Layout: ``values`` is one (N, D) float32 array with the modalities side by side
(D = Σ d_m, modality m in columns ``offsets[m]:offsets[m + 1]``), ``mask`` is (N, M) bool,
True where row i observes modality m. Missing slots hold NaN in ``values`` until they are
imputed. The arrays live on one device: NumPy on the CPU, CuPy on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..core.backend import (
    VALUE_DTYPE,
    array_module,
    device_module,
    is_cudf,
    is_cupy_array,
    is_torch_tensor,
    resolve_device,
    to_device,
    to_numpy,
)
from .list_columns import (
    arrow_list_to_dense,
    cudf_list_to_dense,
    cudf_numeric_list_columns,
    is_numeric_list_type,
    pandas_to_arrow,
)
from ..core.validation import (
    check_finite_observed,
    check_value_dtype,
    default_modality_names,
    describe_rows,
    in_fitted_order,
)


def _as_2d_float(x, name: str):
    """Coerce one modality's input to a 2-D float array on its own device, or raise."""
    if is_torch_tensor(x):
        x = to_numpy(x) if x.device.type == "cpu" else to_device(x, "cuda")
    if not is_cupy_array(x):
        x = _as_numpy(x, name)
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"modality {name!r} has non-numeric dtype {x.dtype}; expected a float or "
            "integer array of shape (n_samples, n_features)"
        )
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2:
        raise ValueError(
            f"modality {name!r} must be 2-D (n_samples, n_features), got shape {x.shape}"
        )
    if x.shape[1] == 0:
        raise ValueError(f"modality {name!r} has zero features")
    return x


def _as_numpy(x, name: str) -> np.ndarray:
    """``np.asarray(x)``, raising ``ValueError`` naming the modality and its rows when ``x``
    is a ragged sequence (rows of different lengths)."""
    try:
        return np.asarray(x)
    except ValueError as error:
        lengths = [len(row) if hasattr(row, "__len__") else None for row in x]
        odd = np.array([length != lengths[0] for length in lengths])
        if not odd.any():
            raise ValueError(f"modality {name!r} cannot be read as an array: {error}") from None
        first = "a single value" if lengths[0] is None else f"{lengths[0]} values"
        raise ValueError(
            f"modality {name!r} is ragged: {describe_rows(odd)} differ in length from row 0 "
            f"({first}); every row needs the same number of features"
        ) from None


def _check_value_range(values, observed, name: str) -> None:
    """Raise ``ValueError`` when observed values of one modality (N, d) lie beyond float32's
    range, so that packing them as float32 would turn them into inf."""
    if values.dtype == VALUE_DTYPE:
        return
    xp = array_module(values)
    bad = observed & (xp.abs(values) > np.finfo(VALUE_DTYPE).max).any(axis=1)
    if bool(bad.any()):
        raise ValueError(f"modality {name!r}: {describe_rows(bad)} have observed values beyond "
                         f"the range of {np.dtype(VALUE_DTYPE).name} (|x| > "
                         f"{float(np.finfo(VALUE_DTYPE).max):.3g})")


class MultiModalArray:
    """Per-sample embeddings of M modalities, packed into one array, with a missing mask.

    Parameters
    ----------
    values : (N, D) float32 (or float64) array (NumPy or CuPy); modality m in columns
        ``offsets[m]:offsets[m+1]``. Missing slots are ignored (NaN by convention).
    mask : (N, M) bool array on the same device; True where the modality is observed.
    dims : sequence of M positive ints, the width d_m of each modality.
    names : sequence of M distinct strings (default ``"m0", "m1", ...``).
    imputed : optional (N, M) bool array; True where a slot was filled by an imputer.

    The constructor validates shapes but does not copy; use the ``from_*`` builders for
    user data, which also check that observed values are finite.
    """

    def __init__(self, values, mask, dims, names=None, imputed=None):
        if mask is None or not hasattr(mask, "shape"):
            raise TypeError("mask must be an (N, M) bool array; to find the missing modalities "
                            "from NaN use MultiModalArray.from_modalities, or UL4M4Imputer("
                            "modalities=dims) on the (N, D) array itself")
        if not hasattr(values, "shape"):
            raise TypeError(f"values must be an (N, D) array, got {type(values).__name__}")
        dims = tuple(int(d) for d in dims)
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"dims must be a non-empty sequence of positive ints, got {dims}")
        names = default_modality_names(len(dims)) if names is None else tuple(map(str, names))
        if len(names) != len(dims):
            raise ValueError(f"got {len(names)} names for {len(dims)} modalities")
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be distinct, got {names}")
        if values.ndim != 2 or values.shape[1] != sum(dims):
            raise ValueError(
                f"values must have shape (N, {sum(dims)}) for dims {dims}, got {values.shape}"
            )
        if mask.shape != (values.shape[0], len(dims)):
            raise ValueError(
                f"mask must have shape (n_samples, n_modalities) = "
                f"{(values.shape[0], len(dims))}, got {mask.shape}"
            )
        if mask.dtype != bool:
            raise TypeError(f"mask must be boolean, got dtype {mask.dtype}")
        check_value_dtype(values.dtype, "values")
        array_module(values, mask, imputed)  # raises when devices are mixed
        self.values = values
        self.mask = mask
        self.dims = dims
        self.names = names
        self.imputed = imputed
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(dims)]))

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_modalities(cls, modalities: Sequence, mask=None, names=None, device: str = "auto"):
        """Pack a list of per-modality arrays.

        Parameters
        ----------
        modalities : sequence of M arrays of shape (N, d_m) (NumPy, CuPy or Torch; a 1-D
            array is one feature). Without ``mask``, a row whose values of modality m are
            all NaN is missing m; a row that is only partly NaN is an error.
        mask : optional (N, M) bool, True where observed. Values at missing slots are
            ignored (they may be NaN); observed values must be finite.
        names : optional M distinct names.
        device : ``"auto"``, ``"cpu"`` or ``"cuda"``: where the packed arrays live.
        """
        if isinstance(modalities, Mapping):
            raise TypeError("got a mapping; use MultiModalArray.from_dict")
        modalities = list(modalities)
        if not modalities:
            raise ValueError("need at least one modality, got an empty list")
        names = list(default_modality_names(len(modalities)) if names is None else names)
        if len(names) != len(modalities):
            raise ValueError(f"got {len(names)} names for {len(modalities)} modalities")
        device = resolve_device(device)
        xp = device_module(device)
        arrays = [to_device(_as_2d_float(x, n), device) for x, n in zip(modalities, names)]
        n_rows = {a.shape[0] for a in arrays}
        if len(n_rows) != 1:
            sizes = {n: a.shape[0] for n, a in zip(names, arrays)}
            raise ValueError(f"modalities have different numbers of rows: {sizes}")
        (n,) = n_rows
        if n == 0:
            raise ValueError("empty input: the modalities have 0 rows")
        if mask is None:
            mask = xp.stack([_observed_from_nan(a, name) for a, name in zip(arrays, names)], axis=1)
        else:
            mask = to_device(_as_bool_mask(mask), device)
            if mask.shape != (n, len(arrays)):
                raise ValueError(
                    f"mask has shape {tuple(mask.shape)}, expected (n_samples, n_modalities) "
                    f"= {(n, len(arrays))}"
                )
        for m, (a, name) in enumerate(zip(arrays, names)):
            check_finite_observed(a, mask[:, m], name)
            _check_value_range(a, mask[:, m], name)
        values = xp.concatenate([a.astype(VALUE_DTYPE, copy=False) for a in arrays], axis=1)
        dims = [a.shape[1] for a in arrays]
        out = cls(values, mask, dims, names)
        for m in range(out.n_modalities):
            out.modality(m)[~out.mask[:, m]] = np.nan
        return out

    @classmethod
    def from_dict(cls, modalities: Mapping, mask=None, device: str = "auto"):
        """Pack ``{name: (N, d_m) array}``; ``mask`` is (N, M) in the dict's order, or a
        ``{name: (N,) bool}`` mapping."""
        names = list(modalities)
        if isinstance(mask, Mapping):
            missing = [n for n in names if n not in mask]
            if missing:
                raise ValueError(f"mask mapping lacks modalities {missing}")
            mask = np.stack([to_numpy(_as_bool_mask(mask[n])) for n in names], axis=1)
        return cls.from_modalities([modalities[n] for n in names], mask=mask, names=names, device=device)

    @classmethod
    def from_arrow(cls, table, columns=None, device: str = "auto", widths=None):
        """Pack an Arrow table with one list column per modality (null = missing).

        ``columns`` names the modality columns (default: every column of lists of numbers,
        :func:`~ul4m4_gpu.io.list_columns.is_numeric_list_type`, as in Parquet files; lists of
        booleans or strings are not modalities). Every
        non-null cell of a column must have the same length; ``widths`` (optional
        ``{name: d_m}``, e.g. a fitted imputer's) fixes it, and lets a column be null in
        every row (new data missing that modality throughout).
        """
        if columns is None:
            columns = [f.name for f in table.schema if is_numeric_list_type(f.type)]
        return cls._from_list_columns(columns, table.column_names, table.column,
                                      arrow_list_to_dense, device, widths)

    @classmethod
    def from_dataframe(cls, frame, columns=None, device: str = "auto", widths=None):
        """Pack a pandas or cuDF DataFrame with one list-valued column per modality
        (null/None = missing); see :meth:`from_arrow`. A cuDF frame is unpacked on the GPU
        (its values never go through the host). A pandas column that cannot be converted to
        Arrow (lists mixed with strings, say) raises ``TypeError`` naming it."""
        if is_cudf(frame):
            if columns is None:
                columns = cudf_numeric_list_columns(frame)
            return cls._from_list_columns(columns, list(frame.columns), frame.__getitem__,
                                          cudf_list_to_dense, device, widths)
        if columns is not None:  # convert only those (the missing ones are named below)
            frame = frame[[name for name in columns if name in frame.columns]]
        return cls.from_arrow(pandas_to_arrow(frame), columns=columns, device=device,
                              widths=widths)

    @classmethod
    def _from_list_columns(cls, columns, available, column, to_dense, device, widths):
        """Pack the named list columns: ``column(name)`` gives one, ``to_dense(column,
        name, width)`` its (values, observed); ``widths``: optional ``{name: d_m}``."""
        if not columns:
            raise ValueError("the table has no column of lists of numbers to read as a "
                             "modality")
        widths = widths or {}
        arrays, masks = [], []
        for name in columns:
            if name not in available:
                raise ValueError(f"no column named {name!r}; columns are {available}")
            values, observed = to_dense(column(name), name, widths.get(name))
            arrays.append(values)
            masks.append(observed)
        mask = array_module(*masks).stack(masks, axis=1)
        return cls.from_modalities(arrays, mask=mask, names=columns, device=device)

    @classmethod
    def coerce(cls, data, device: str = "auto") -> "MultiModalArray":
        """Return ``data`` as a ``MultiModalArray``: one already, a dict, a list of arrays,
        a pandas/cuDF DataFrame or an Arrow table."""
        if isinstance(data, cls):
            return data
        if isinstance(data, Mapping):
            return cls.from_dict(data, device=device)
        module = type(data).__module__
        if module.startswith(("pandas", "cudf")):
            return cls.from_dataframe(data, device=device)
        if module.startswith("pyarrow"):
            return cls.from_arrow(data, device=device)
        if isinstance(data, (list, tuple)):
            return cls.from_modalities(data, device=device)
        raise TypeError(
            "expected a MultiModalArray, a list or dict of per-modality arrays, a DataFrame "
            f"or an Arrow table, got {type(data).__name__}"
        )

    # ------------------------------------------------------------------ accessors
    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_modalities(self) -> int:
        return len(self.dims)

    @property
    def device(self) -> str:
        return "cuda" if is_cupy_array(self.values) else "cpu"

    @property
    def shape(self) -> tuple[int, int]:
        """(N, D), so that scikit-learn counts and indexes the rows (train_test_split,
        cross-validation)."""
        return (self.n_samples, int(self.values.shape[1]))

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, rows) -> "MultiModalArray":
        """The rows ``rows`` (an int, a slice, indices or a boolean mask) as a new array;
        ``data[0:5]``, ``data[[3, 1]]``."""
        if isinstance(rows, tuple) and len(rows) == 2 and rows[1] in (Ellipsis, slice(None)):
            rows = rows[0]  # data[rows, ...] / data[rows, :], as scikit-learn indexes
        if isinstance(rows, tuple):
            raise IndexError("a MultiModalArray is indexed by rows only; select modalities "
                             "with .select(names) or .modality(name)")
        if isinstance(rows, (int, np.integer)):
            rows = slice(rows, rows + 1 if rows != -1 else None)
        if isinstance(rows, slice):
            imputed = None if self.imputed is None else self.imputed[rows]
            return MultiModalArray(self.values[rows], self.mask[rows], self.dims, self.names,
                                   imputed)
        return self.take(rows)

    def __array__(self, dtype=None, copy=None):
        """The packed (N, D) values as a NumPy array (NaN where missing), so that NumPy and
        scikit-learn read a completed MultiModalArray as a plain matrix."""
        values = to_numpy(self.values)
        return values if dtype is None else values.astype(dtype, copy=False)

    def __repr__(self) -> str:
        observed = float(to_numpy(self.mask).mean()) if self.n_samples else 0.0
        return (
            f"MultiModalArray(n_samples={self.n_samples}, dims={dict(zip(self.names, self.dims))}, "
            f"observed={observed:.1%}, device={self.device!r})"
        )

    def modality(self, m):
        """(N, d_m) view of modality ``m`` (an index or a name)."""
        m = self.index(m)
        return self.values[:, self.offsets[m]:self.offsets[m + 1]]

    def index(self, m) -> int:
        """The position of modality ``m`` given by index or name."""
        if isinstance(m, str):
            if m not in self.names:
                raise KeyError(f"no modality named {m!r}; modalities are {self.names}")
            return self.names.index(m)
        m = int(m)
        if not 0 <= m < self.n_modalities:
            raise IndexError(f"modality index {m} out of range for {self.n_modalities} modalities")
        return m

    def take(self, rows) -> "MultiModalArray":
        """A new array holding the given rows (indices or a boolean mask), copied."""
        xp = array_module(self.values)
        rows = xp.asarray(rows)
        imputed = None if self.imputed is None else self.imputed[rows]
        return MultiModalArray(self.values[rows], self.mask[rows], self.dims, self.names, imputed)

    def select(self, names) -> "MultiModalArray":
        """A new array holding the modalities ``names`` (a sequence of names or indices), in
        that order, copied."""
        order = [self.index(name) for name in names]
        xp = array_module(self.values)
        values = xp.concatenate([self.modality(m) for m in order], axis=1)
        imputed = None if self.imputed is None else self.imputed[:, order]
        return MultiModalArray(values, self.mask[:, order], [self.dims[m] for m in order],
                               [self.names[m] for m in order], imputed)

    def matched_to(self, names, dims, where: str = "X") -> "MultiModalArray":
        """These data with their modalities matched to those a model was fitted on, ``names``
        (M strings) of widths ``dims`` (M ints): the same names in another order give a
        reordered copy, default names (``m0``, ``m1``, ...) match by position (see
        :func:`~ul4m4_gpu.core.validation.in_fitted_order`). Raises ``ValueError`` naming
        ``where`` when the names or the widths differ."""
        order = in_fitted_order(self.names, names, where)
        data = self if order == self.names else self.select(order)
        if data.dims != tuple(dims):
            raise ValueError(f"{where} has modality dims {data.dims} but the model was fitted "
                             f"on {tuple(dims)}")
        return data

    def to(self, device: str) -> "MultiModalArray":
        """The same data on ``device`` (no copy when it is already there)."""
        device = resolve_device(device)
        if device == self.device:
            return self
        imputed = None if self.imputed is None else to_device(self.imputed, device)
        return MultiModalArray(to_device(self.values, device), to_device(self.mask, device),
                               self.dims, self.names, imputed)

    def to_numpy(self) -> list[np.ndarray]:
        """The modalities as a list of (N, d_m) float32 NumPy arrays (NaN where missing)."""
        return [to_numpy(self.modality(m)) for m in range(self.n_modalities)]

    def to_torch(self):
        """The packed (N, D) float32 values as a Torch tensor sharing memory (DLPack)."""
        import torch

        return torch.from_dlpack(self.values)

    def to_arrow(self):
        """An Arrow table with one ``list<float>`` column per modality, null where missing."""
        import pyarrow as pa

        mask = to_numpy(self.mask)
        columns = {}
        for m, name in enumerate(self.names):
            x = np.ascontiguousarray(to_numpy(self.modality(m)))
            flat = pa.array(x.reshape(-1))
            offsets = pa.array(np.arange(0, x.size + 1, self.dims[m], dtype=np.int32))
            lists = pa.ListArray.from_arrays(offsets, flat, mask=pa.array(~mask[:, m]))
            columns[name] = lists
        return pa.table(columns)

    def to_pandas(self):
        """A pandas DataFrame with one list-valued column per modality (None where missing)."""
        return self.to_arrow().to_pandas()


def _as_bool_mask(mask):
    if is_torch_tensor(mask):
        mask = to_numpy(mask)
    if not is_cupy_array(mask):
        mask = np.asarray(mask)
    if mask.dtype != bool:
        if mask.dtype.kind not in "biu" or not ((mask == 0) | (mask == 1)).all():
            raise TypeError(f"mask must be boolean (or 0/1 integers), got dtype {mask.dtype}")
        mask = mask.astype(bool)
    return mask


def _observed_from_nan(x, name: str):
    """(N,) bool: rows of ``x`` with no NaN are observed, all-NaN rows are missing."""
    xp = array_module(x)
    if x.dtype.kind != "f":
        return xp.ones(x.shape[0], dtype=bool)
    nan = xp.isnan(x)
    all_nan, any_nan = nan.all(axis=1), nan.any(axis=1)
    partial = to_numpy(any_nan & ~all_nan)
    if partial.any():
        raise ValueError(
            f"modality {name!r}: {describe_rows(partial)} are partly NaN; a missing modality "
            "must be NaN in every feature (or pass an explicit mask)"
        )
    return ~all_nan
