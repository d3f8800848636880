"""What ``UL4M4Imputer`` takes and what its ``transform`` gives back: the input's own type
(cuML's ``output_type="input"``), the observed values bit for bit.

=====================================  ============================================
input                                  output (``output_type="input"``)
=====================================  ============================================
NumPy / CuPy (N, D) array, NaN missing  the same type, (N, D) float (float64 for
                                       integers), its device
Torch (N, D) tensor                    a Torch tensor on the input's device
pandas DataFrame of numeric columns    a DataFrame: same index, columns, order;
                                       other (passthrough) columns kept
pandas/cuDF DataFrame of list columns  the same frame, list columns completed
Arrow table of list columns            an Arrow table, other columns kept
dict name → (N, d_m) arrays            a dict of (N, d_m) arrays
list of (N, d_m) arrays                a list of (N, d_m) arrays (a list of
                                       rows of numbers is a 2-D array)
MultiModalArray                        a MultiModalArray (``imputed`` set)
=====================================  ============================================

A 2-D input (array, tensor, numeric DataFrame) is split into modalities by the
``modalities`` parameter (:func:`~ul4m4_gpu.io.columns.modality_columns`): each column its
own modality when None; a modality is missing in a row when all its columns are NaN there
(partly NaN is an error). ``add_indicator`` appends the (N, M) missing-modality indicators
(1 / True where the modality was missing), named ``missingindicator_<modality>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..core.backend import array_module, is_cudf, is_cupy_array, is_torch_tensor, to_device, to_numpy
from .columns import as_widths, modality_columns
from .data import MultiModalArray
from .list_columns import is_numeric_list_type, pandas_to_arrow, with_filled_columns

#: The values of ``output_type``: "input" follows the input (table above); the others
#: convert the (N, D [+ M]) result, in the order of ``get_feature_names_out()``.
OUTPUT_TYPES = ("input", "multimodal", "numpy", "cupy", "pandas")
INDICATOR_PREFIX = "missingindicator_"


@dataclass
class ImputerInput:
    """One input read for the imputer.

    data : the modalities as a validated :class:`MultiModalArray` (float32 packing);
    kind : "array", "torch", "frame" (numeric columns), "list-frame", "arrow", "dict",
        "list" or "multimodal"; original : the input as given; columns : for the 2-D kinds,
        the M (d_m,) int64 positions of each modality's columns in ``original``;
    feature_labels : for a DataFrame, the (D,) labels of its modality columns in frame
        order, as strings (else None).
    """

    data: MultiModalArray
    kind: str
    original: object
    columns: tuple | None = None
    feature_labels: tuple | None = None

    def output_positions(self) -> np.ndarray:
        """The positions, in ``original``, of the modality columns in their own order."""
        return np.sort(np.concatenate(self.columns))

    @property
    def n_features(self) -> int:
        """D, the number of modality columns (Σ d_m)."""
        return int(sum(self.data.dims))

    def feature_names(self) -> list[str]:
        """The D names of the output's modality columns (:func:`column_names`)."""
        return column_names(self.data.names, self.data.dims, self.columns, self.feature_labels)

    def features(self):
        """What scikit-learn's checks of feature names and counts read from a 2-D input: the
        modality columns of a DataFrame, the array itself, or an empty (0, D) placeholder
        (a tensor, a CuPy array)."""
        if self.kind == "frame":
            return self.original.iloc[:0, self.output_positions()]
        if self.kind == "array" and not is_cupy_array(self.original):
            return self.original
        return np.empty((0, self.n_features))


def read_input(X, modalities, device: str) -> ImputerInput:
    """``X`` as an :class:`ImputerInput` on ``device``; raises ``ValueError`` / ``TypeError``
    naming the problem (see the module docstring for what is accepted)."""
    if _is_sparse(X):
        from sklearn.utils import check_array

        check_array(X, accept_sparse=False, input_name="X")  # raises: dense data is required
    if isinstance(X, MultiModalArray):
        check_carries_modalities(modalities, "a MultiModalArray", X.dims)
        return ImputerInput(X.to(device), "multimodal", X)
    if isinstance(X, Mapping):
        check_carries_modalities(modalities, "a dict of modalities")
        return ImputerInput(MultiModalArray.from_dict(X, device=device), "dict", X)
    module = type(X).__module__
    if module.startswith("pyarrow"):
        check_carries_modalities(modalities, "an Arrow table")
        return ImputerInput(MultiModalArray.from_arrow(X, device=device), "arrow", X)
    if module.startswith(("pandas", "cudf")) and hasattr(X, "columns"):
        if modalities is None and _has_list_columns(X):
            return ImputerInput(MultiModalArray.from_dataframe(X, device=device), "list-frame", X)
        return _read_frame(X, modalities, device)
    if isinstance(X, (list, tuple)) and modalities is None and _of_arrays(X):
        return ImputerInput(MultiModalArray.from_modalities(X, device=device), "list", X)
    return _read_matrix(X, modalities, device)


def _is_sparse(X) -> bool:
    return type(X).__module__.startswith("scipy.sparse")


def _of_arrays(items) -> bool:
    """Whether a list holds per-modality arrays (objects with ``ndim``: NumPy, CuPy, Torch)
    rather than rows of numbers (a 2-D array written as nested lists)."""
    return bool(items) and all(hasattr(item, "ndim") for item in items)


def check_carries_modalities(modalities, what: str, dims=None) -> None:
    """``ValueError`` unless ``modalities`` is None (or, for a MultiModalArray, its own
    widths): such inputs carry their modalities."""
    if modalities is None or (dims is not None and as_widths(modalities) == tuple(dims)):
        return
    raise ValueError(f"X is {what}, which carries its own modalities; modalities applies to "
                     f"a 2-D array or a DataFrame of numeric columns (leave it None), got "
                     f"{modalities!r}")


def _has_list_columns(frame) -> bool:
    """Whether a DataFrame holds a column of lists of numbers (a modality per column)."""
    if is_cudf(frame):
        from .list_columns import cudf_numeric_list_columns

        return bool(cudf_numeric_list_columns(frame))
    candidates = [name for name, dtype in frame.dtypes.items()
                  if dtype == object or hasattr(dtype, "pyarrow_dtype")]
    if not candidates:
        return False
    schema = pandas_to_arrow(frame[candidates]).schema
    return any(is_numeric_list_type(field.type) for field in schema)


def _read_frame(frame, modalities, device: str) -> ImputerInput:
    """A DataFrame of numeric columns: the modalities' columns by label (every numeric
    column its own modality when ``modalities`` is None); other columns pass through."""
    columns, names = frame_modalities(frame, modalities)
    blocks = [frame.iloc[:, positions].to_numpy(dtype=_float_of(frame.dtypes.iloc[positions]),
                                                na_value=np.nan)
              for positions in columns]
    data = MultiModalArray.from_modalities(blocks, names=names, device=device)
    labels = frame.columns[np.sort(np.concatenate(columns))]
    return ImputerInput(data, "frame", frame, columns, tuple(str(label) for label in labels))


def frame_modalities(frame, modalities) -> tuple[tuple, tuple]:
    """``(columns, names)`` of :func:`~ul4m4_gpu.io.columns.modality_columns` for a pandas
    DataFrame of numeric columns (its labels and dtypes only: an empty frame, a dask
    DataFrame's meta, will do): every numeric, non-bool column its own modality, named by
    its label, when ``modalities`` is None. Raises ``TypeError`` for a cuDF frame and for a
    modality column that does not hold numbers, ``ValueError`` when there is no modality."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if is_cudf(frame):
        raise TypeError("a cuDF DataFrame of numeric columns is not supported; pass "
                        "frame.to_cupy() with modalities=..., or list columns")
    labels = frame.columns
    if modalities is None:
        numeric = [label for label, dtype in frame.dtypes.items()
                   if is_numeric_dtype(dtype) and not is_bool_dtype(dtype)]
        if not numeric:
            raise ValueError("the DataFrame has no numeric columns and no columns of lists of "
                             "numbers to read as modalities")
        modalities = {str(label): [label] for label in numeric}
    columns, names = modality_columns(modalities, len(labels), labels, cover=False)
    for positions in columns:
        for position in positions:
            dtype = frame.dtypes.iloc[position]
            if not is_numeric_dtype(dtype) or is_bool_dtype(dtype):
                raise TypeError(f"column {labels[position]!r} of a modality must hold numbers, "
                                f"got dtype {dtype}")
    return columns, names


def _float_of(dtypes) -> np.dtype:
    """The float dtype holding columns of ``dtypes`` exactly: float32 when all are float32,
    else float64."""
    return np.dtype(np.float32) if all(np.dtype(d) == np.float32 for d in dtypes) \
        else np.dtype(np.float64)


def _read_matrix(X, modalities, device: str) -> ImputerInput:
    """An (N, D) NumPy / CuPy array, Torch tensor or array-like: checked as scikit-learn
    checks arrays (NaN allowed), then split into modalities."""
    kind = "torch" if is_torch_tensor(X) else "array"
    if kind == "torch" or is_cupy_array(X):
        matrix = X if is_cupy_array(X) else to_device(X, "cuda" if X.device.type == "cuda"
                                                       else "cpu")
        if matrix.ndim != 2:
            raise ValueError(f"Expected a 2-D array, got {matrix.ndim}-D of shape "
                             f"{tuple(matrix.shape)}; reshape your data")
        if matrix.dtype.kind not in "biuf":
            raise TypeError(f"X must hold numbers, got dtype {matrix.dtype}")
    else:
        from sklearn.utils import check_array

        X = matrix = check_array(X, dtype="numeric", ensure_all_finite="allow-nan",
                                 input_name="X")
    columns, names = matrix_modalities(matrix.shape[1], modalities)
    data = MultiModalArray.from_modalities([matrix[:, positions] for positions in columns],
                                           names=names, device=device)
    return ImputerInput(data, kind, X, columns)


def matrix_modalities(n_columns: int, modalities) -> tuple[tuple, tuple]:
    """``(columns, names)`` of :func:`~ul4m4_gpu.io.columns.modality_columns` for an (N, D)
    array of ``n_columns`` = D columns: each column its own modality, named ``x<j>``, when
    ``modalities`` is None."""
    if modalities is None:
        columns, _ = modality_columns([1] * n_columns, n_columns)
        return columns, tuple(f"x{j}" for j in range(n_columns))
    return modality_columns(modalities, n_columns)


def column_names(names, dims, columns=None, feature_labels=None) -> list[str]:
    """The D names of the modality columns of an output: ``feature_labels`` (a DataFrame's
    column labels) when given, else ``x<j>`` for a 2-D input split by ``columns`` (j the
    column's position), else ``<modality>_<j>`` (the name alone when d_m = 1) for the
    ``names`` and ``dims`` of an input keyed by modality."""
    if feature_labels is not None:
        return list(feature_labels)
    if columns is not None:
        return [f"x{position}" for position in np.sort(np.concatenate(columns))]
    return [name if d == 1 else f"{name}_{j}" for name, d in zip(names, dims) for j in range(d)]


def completed_output(inp: ImputerInput, completed: MultiModalArray, add_indicator: bool,
                     output_type: str, names=None):
    """The completion ``completed`` (the modalities of ``inp.data``, every slot filled) in
    the type ``output_type`` asks for (see the module docstring); observed values are the
    input's own, bit for bit. ``names``: the output column labels of ``output_type="pandas"``
    (:func:`column_names`)."""
    missing = completed.imputed
    if output_type == "multimodal" or (output_type == "input" and inp.kind == "multimodal"):
        return completed
    if output_type == "input" and inp.kind in ("list-frame", "arrow", "dict", "list"):
        return _keyed_output(inp, completed, missing, add_indicator)
    if output_type == "input" and inp.kind == "frame":
        return _frame_output(inp, completed, missing, add_indicator)
    matrix = _matrix_output(inp, completed, missing, add_indicator)
    if output_type == "input":  # an array or a tensor
        if inp.kind == "torch":
            import torch

            return torch.as_tensor(matrix, device=inp.original.device)
        return to_device(matrix, "cuda" if is_cupy_array(inp.original) else "cpu")
    if output_type == "pandas":
        import pandas as pd

        index = inp.original.index if inp.kind == "frame" else None
        return pd.DataFrame(to_numpy(matrix), columns=names, index=index)
    return to_device(matrix, "cuda" if output_type == "cupy" else "cpu")


def _matrix_output(inp: ImputerInput, completed, missing, add_indicator: bool):
    """(N, D [+ M]) float array on the completion's device: for a 2-D input its own modality
    columns in its order (its float dtype, float64 for integers), filled where missing;
    otherwise the packed completed values."""
    xp = array_module(completed.values)
    if inp.columns is None:
        matrix = completed.values
    else:
        positions = inp.output_positions()
        if inp.kind == "frame":
            source = inp.original.iloc[:, positions]
            source = source.to_numpy(dtype=_float_of(source.dtypes), na_value=np.nan)
        else:
            source = inp.original[:, positions] if len(positions) < inp.original.shape[1] \
                else inp.original
        source = to_device(source, completed.device)
        dtype = output_float(source.dtype)
        # packed column of each output column: the rank of its position in the packing
        packed_of = xp.asarray(np.argsort(np.concatenate(inp.columns)))
        packed_missing = xp.repeat(missing, list(completed.dims), axis=1)[:, packed_of]
        matrix = xp.where(packed_missing, completed.values[:, packed_of].astype(dtype),
                          source.astype(dtype))
    if add_indicator:
        matrix = xp.concatenate([matrix, missing.astype(matrix.dtype)], axis=1)
    return matrix


def output_float(dtype) -> np.dtype:
    """The dtype of a completed column of input dtype ``dtype``: its own for float32 and
    wider floats, float64 for integers and narrower floats."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" and dtype.itemsize >= 4 else np.dtype(np.float64)


def _frame_output(inp: ImputerInput, completed, missing, add_indicator: bool):
    """The input DataFrame, copied, with its modality columns filled (their dtypes kept for
    floats; integer columns are never missing) and the indicators appended as bools."""
    frame = inp.original
    out = frame.copy()
    values = to_numpy(completed.values)
    flags = to_numpy(missing)
    packed = 0
    for m, positions in enumerate(inp.columns):
        for position in positions:
            label = frame.columns[position]
            if flags[:, m].any():
                column = out[label].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
                column[flags[:, m]] = values[flags[:, m], packed]
                out[label] = column.astype(frame.dtypes.iloc[position], copy=False)
            packed += 1
    if add_indicator:
        append_indicators(out, completed.names, flags)
    return out


def _keyed_output(inp: ImputerInput, completed, missing, add_indicator: bool):
    """Inputs keyed by modality (list columns, dicts, lists): each modality filled in its
    own container type; the indicators as bool columns / entries."""
    flags = to_numpy(missing)
    if inp.kind in ("list-frame", "arrow"):
        table = completed.to_arrow()
        if inp.kind == "arrow":
            out = inp.original
            for name in completed.names:
                out = out.set_column(out.column_names.index(name), name, table.column(name))
            if add_indicator:
                for m, name in enumerate(completed.names):
                    out = out.append_column(INDICATOR_PREFIX + name, _bool_array(flags[:, m]))
            return out
        out = with_filled_columns(inp.original, table, completed.names)
        if add_indicator:
            append_indicators(out, completed.names, flags)
        return out
    originals = list(inp.original.values()) if inp.kind == "dict" else list(inp.original)
    filled = []
    for m, original in enumerate(originals):
        block = to_device(original, completed.device)
        block = block.reshape(-1, 1) if block.ndim == 1 else block
        dtype = output_float(block.dtype)
        out = block.astype(dtype, copy=True)
        rows = missing[:, m]
        out[rows] = completed.modality(m)[rows].astype(dtype)
        filled.append(to_device(out, "cuda" if is_cupy_array(original) else "cpu"))
    keys = list(completed.names)
    if add_indicator:
        filled += [to_numpy(missing[:, m]) for m in range(completed.n_modalities)]
        keys += [INDICATOR_PREFIX + name for name in completed.names]
    return dict(zip(keys, filled)) if inp.kind == "dict" else filled


def append_indicators(frame, names, flags) -> None:
    """Append to the pandas or cuDF DataFrame ``frame``, in place, a bool column
    ``missingindicator_<name>`` per modality of ``names``, from the (n, M) bool ``flags``
    (on the frame's device)."""
    for m, name in enumerate(names):
        frame[INDICATOR_PREFIX + name] = flags[:, m]


def _bool_array(flags):
    import pyarrow as pa

    return pa.array(np.asarray(flags, dtype=bool))
