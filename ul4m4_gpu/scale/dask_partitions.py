"""The inputs of the Dask imputer, validated on the workers: row blocks of a 2-D dask array
or of a dask DataFrame of numeric columns, split into modalities as the single-machine
imputer splits them (:func:`~ul4m4_gpu.io.inputs.read_input`, the ``modalities``
parameter); of ``(values, mask, dims)`` dask arrays; or of a dask DataFrame whose list
columns are unpacked by the rules of :meth:`MultiModalArray.from_dataframe`; and the
completed DataFrame partitions of its transform.

Each row block becomes a delayed (values, mask) pair computed from the input's graph, so a
partition lost with its worker is recomputed from lineage. Errors about a block name it and
number its rows in the whole data ("partition 2 (global rows from 400): ...").
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from ..core.backend import (
    VALUE_DTYPE,
    array_module,
    device_module,
    is_cudf,
    is_cupy_array,
    resolve_device,
    to_device,
    to_numpy,
)
from ..core.validation import check_finite_modalities
from ..io.data import MultiModalArray
from ..io.inputs import (
    append_indicators,
    check_carries_modalities,
    column_names,
    frame_modalities,
    matrix_modalities,
    output_float,
    read_input,
)
from ..io.list_columns import (
    with_filled_columns,
    arrow_list_to_dense,
    cudf_list_to_dense,
    cudf_numeric_list_columns,
    is_numeric_list_type,
    pandas_to_arrow,
)


@dataclass
class DaskMultiModalArray:
    """The distributed twin of :class:`MultiModalArray`: dask arrays chunked by rows only.

    values : (N, D) float32 dask array; mask : (N, M) bool dask array with the same row
    chunks; dims : M ints; names : M strings; imputed : optional (N, M) bool dask array.
    Also accepted by :class:`DaskUL4M4Imputer` as input (like a ``(values, mask, dims)``
    tuple).
    """

    values: object
    mask: object
    dims: tuple
    names: tuple
    imputed: object = None

    def compute(self, client=None, timeout: float | None = 600) -> MultiModalArray:
        """Gather to a local :class:`MultiModalArray` (through ``client`` when given, with
        ``timeout`` seconds at most)."""
        parts = [self.values, self.mask] + ([] if self.imputed is None else [self.imputed])
        if client is None:
            import dask

            arrays = dask.compute(*parts)
        else:
            futures = client.compute(parts)
            arrays = [future.result(timeout=timeout) for future in futures]
        imputed = arrays[2] if len(arrays) > 2 else None
        return MultiModalArray(arrays[0], arrays[1], self.dims, self.names, imputed)


@dataclass
class Partitions:
    """The row blocks of an input as delayed, validated (values (n, D) float32, mask (n, M)
    bool) pairs; ``meta`` the type of its per-row outputs: an array meta, a device name, or
    None."""

    blocks: list
    dims: tuple
    names: tuple
    meta: object  # the per-row outputs' type: an array meta, a device name, or None


def _move(x, device: str):
    """``x`` on ``device`` ("auto": where it already is); "cuda" on a worker without a
    usable GPU raises :func:`~ul4m4_gpu.core.backend.resolve_device`'s ``RuntimeError``."""
    return x if device == "auto" else to_device(x, resolve_device(device))


@contextlib.contextmanager
def _in_partition(index, offset, local: bool = False):
    """Re-raise a ``ValueError`` / ``TypeError`` about one row block with the block named:
    "partition 2 (global rows from 400): ...", where ``offset``, the block's first global
    row, numbers the rows of the message in the whole data; "partition 2 (rows numbered
    within the partition): ..." where it is None (unknown) or the message numbers them
    within the block (``local``; "..., which starts at global row 400" when known)."""
    try:
        yield
    except (ValueError, TypeError) as error:
        if offset is None:
            where = "rows numbered within the partition"
        elif local:
            where = f"rows numbered within the partition, which starts at global row {offset}"
        else:
            where = f"global rows from {offset}"
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"partition {index} ({where}): {error}") from None


def _prepare_block(values, mask, dims, names, device, index, offset):
    """One row block, validated: (values float32, mask bool) on the chosen device.

    index : the block's position among the blocks; offset : its first global row, or None
    where unknown (both name the block and its rows in errors, see :func:`_in_partition`)."""
    values, mask = _move(values, device), _move(mask, device)
    with _in_partition(index, offset):
        if values.ndim != 2 or values.shape[1] != sum(dims):
            raise ValueError(f"values block has shape {tuple(values.shape)}, expected "
                             f"(n, {sum(dims)})")
        if mask.shape != (values.shape[0], len(dims)):
            raise ValueError(f"mask block has shape {tuple(mask.shape)}, expected "
                             f"{(values.shape[0], len(dims))} (values and mask must have the "
                             "same row chunks)")
        if mask.dtype != bool:
            raise TypeError(f"mask must be boolean, got {mask.dtype}")
        values = values.astype(VALUE_DTYPE, copy=False)
        check_finite_modalities(values, mask, dims, names, offset or 0)
    return values, mask


def block_device(block, device: str) -> str:
    """The concrete device a block is processed on: ``device`` (the imputer's parameter)
    when "cpu" / "cuda", else the block's own (CuPy or cuDF: "cuda")."""
    if device != "auto":
        return resolve_device(device)
    return "cuda" if is_cupy_array(block) or is_cudf(block) else "cpu"


def _grouped_block(block, modalities, dims, names, device, index, offset):
    """(values (n, D) float32, mask (n, M) bool) of one row block of a 2-D array or one
    partition of a DataFrame of numeric columns, split into modalities by
    :func:`~ul4m4_gpu.io.inputs.read_input` (NaN marks missing) on :func:`block_device`;
    errors name the block as :func:`_prepare_block`'s do."""
    where = block_device(block, device)
    if block.shape[0] == 0:  # read_input refuses empty inputs
        xp = device_module(where)
        return xp.empty((0, sum(dims)), dtype=VALUE_DTYPE), xp.empty((0, len(dims)), dtype=bool)
    with _in_partition(index, offset, local=True):
        data = read_input(block, modalities, where).data
    return _prepare_block(data.values, data.mask, dims, names, device, index, offset)


def _frame_device(frame, device: str) -> str:
    """The concrete device of a DataFrame partition's arrays: "auto" follows the partition
    (cuDF: "cuda"); "cuda" on a worker without a usable GPU raises as :func:`_move`."""
    if device == "auto":
        return "cuda" if is_cudf(frame) else "cpu"
    return resolve_device(device)


def _layout_entry(is_list: bool, n_nulls: int, n_rows: int, lengths):
    """("list", sorted non-null lengths) | ("null",) | ("other",) of one column;
    ``lengths()`` gives the non-null cells' lengths of a list column (on either device;
    only the distinct ones reach the host)."""
    if n_nulls == n_rows:
        return ("null",)
    if is_list:
        found = lengths()
        return ("list", tuple(to_numpy(array_module(found).unique(found)).tolist()))
    return ("other",)


def _numeric_list_columns(frame) -> list[str]:
    """The columns of a pandas or cuDF DataFrame (a partition, or an empty meta) typed as
    lists of numbers: the modalities it declares, whatever its cells hold (object columns
    declare nothing)."""
    if is_cudf(frame):
        return cudf_numeric_list_columns(frame)
    return [name for name, dtype in frame.dtypes.items()
            if hasattr(dtype, "pyarrow_dtype") and is_numeric_list_type(dtype.pyarrow_dtype)]


def _frame_layout(frame):
    """Per column of one partition: ("list", sorted non-null lengths) for a column of lists
    of numbers (:func:`~ul4m4_gpu.io.list_columns.is_numeric_list_type`, the rule of Parquet
    files) | ("null",) | ("other",); and the partition's row count. A cuDF partition is
    inspected on the GPU."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if is_cudf(frame):
        lists = set(_numeric_list_columns(frame))
        n = len(frame)
        return n, {name: _layout_entry(name in lists, frame[name].null_count, n,
                                       lambda s=frame[name]: s.list.len().dropna().values)
                   for name in frame.columns}
    table = pandas_to_arrow(frame)
    n = table.num_rows
    return n, {field.name: _layout_entry(
        is_numeric_list_type(field.type),
        n if pa.types.is_null(field.type) else table.column(field.name).null_count, n,
        lambda c=table.column(field.name): np.asarray(pc.list_value_length(c).drop_null()))
        for field in table.schema}


def _merge_layouts(*parts):
    return [item for part in parts for item in (part if isinstance(part, list) else [part])]


def _frame_block(frame, columns, dims, device, index, offset=None):
    """(values (n, D) float32, mask (n, M) bool) on ``device`` of one DataFrame partition,
    each modality column unpacked to its width in ``dims`` by
    :func:`~ul4m4_gpu.io.list_columns.arrow_list_to_dense` (a cuDF partition: by
    :func:`~ul4m4_gpu.io.list_columns.cudf_list_to_dense`, on the GPU); a modality null in
    every row of the partition is all-missing (NaN, False). ``index`` and ``offset`` name
    the partition and number its rows in errors, as for :func:`_prepare_block`."""
    import pyarrow as pa

    device = _frame_device(frame, device)
    xp = device_module(device)
    if is_cudf(frame):
        n, to_dense = len(frame), cudf_list_to_dense
        cells = {c: frame[c] for c in columns if c in frame.columns}
        null_counts = {c: column.null_count for c, column in cells.items()}
    else:
        table = pandas_to_arrow(frame)
        n, to_dense = table.num_rows, arrow_list_to_dense
        cells = {c: table.column(c) for c in columns if c in table.column_names}
        null_counts = {c: n if pa.types.is_null(column.type) else column.null_count
                       for c, column in cells.items()}
    values = xp.full((n, sum(dims)), np.nan, dtype=VALUE_DTYPE)
    mask = xp.zeros((n, len(dims)), dtype=bool)
    bounds = np.concatenate([[0], np.cumsum(dims)])
    with _in_partition(index, offset):
        missing_columns = [c for c in columns if c not in cells]
        if missing_columns:
            raise ValueError(f"no columns {missing_columns}")
        for m, name in enumerate(columns):
            if null_counts[name] < n:
                dense, observed = to_dense(cells[name], name, dims[m])
                values[:, bounds[m]:bounds[m + 1]] = to_device(dense, device)
                mask[:, m] = to_device(observed, device)
        check_finite_modalities(values, mask, dims, columns, offset or 0)
    return values, mask


def _check_column_labels(frame) -> None:
    """Raise ``TypeError`` unless every column label of the (dask) DataFrame is a string:
    modality names are strings, and Arrow would turn other labels into strings."""
    labels = [name for name in frame.columns if not isinstance(name, str)]
    if labels:
        raise TypeError(f"DataFrame column labels must be strings (they name the modalities), "
                        f"got {labels[:10]}; rename the columns, e.g. X.rename(columns=str)")


def is_dask_frame(X) -> bool:
    module = type(X).__module__
    if not module.startswith(("dask", "dask_cudf", "dask_expr")):
        return False
    try:
        import dask.dataframe as dd
    except ImportError:
        return False
    return isinstance(X, dd.DataFrame)


def dask_arrays(X):
    """(values, mask, dims, names) dask arrays with equal row chunks, one column chunk."""
    import dask.array as da

    if isinstance(X, DaskMultiModalArray):
        X = (X.values, X.mask, X.dims, X.names)
    if not isinstance(X, (tuple, list)) or len(X) not in (3, 4):
        raise TypeError(
            "X must be a (values, mask, dims[, names]) tuple of dask arrays, a "
            f"DaskMultiModalArray or a dask DataFrame with list columns, got {type(X).__name__}"
        )
    values, mask, dims = X[:3]
    if not isinstance(values, da.Array) or not isinstance(mask, da.Array):
        raise TypeError("values and mask must be dask arrays (dask.array.Array)")
    dims = tuple(int(d) for d in dims)
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty sequence of positive ints, got {dims}")
    names = tuple(f"m{m}" for m in range(len(dims))) if len(X) < 4 or X[3] is None \
        else tuple(map(str, X[3]))
    if len(names) != len(dims) or len(set(names)) != len(names):
        raise ValueError(f"need {len(dims)} distinct modality names, got {names}")
    if values.ndim != 2 or values.shape[1] != sum(dims):
        raise ValueError(f"values must have shape (N, {sum(dims)}) for dims {dims}, got "
                         f"{values.shape}")
    if values.dtype.kind not in "biuf":
        raise TypeError(f"values must be numeric, got dtype {values.dtype}")
    if mask.ndim != 2 or mask.shape[1] != len(dims):
        raise ValueError(f"mask must have shape (N, {len(dims)}), got {mask.shape}")
    if mask.dtype != bool:
        raise TypeError(f"mask must be boolean, got dtype {mask.dtype}")
    if values.numblocks[1] != 1:
        values = values.rechunk({1: -1})
    if mask.numblocks[1] != 1:
        mask = mask.rechunk({1: -1})
    known = not any(math.isnan(c) for c in values.chunks[0] + mask.chunks[0])
    if known:
        if values.shape[0] != mask.shape[0]:
            raise ValueError(f"values have {values.shape[0]} rows but mask has {mask.shape[0]}")
        if mask.chunks[0] != values.chunks[0]:
            mask = mask.rechunk({0: values.chunks[0]})
    elif values.numblocks[0] != mask.numblocks[0]:
        raise ValueError("values and mask have unknown row chunks and different numbers "
                         "of blocks; call compute_chunk_sizes() or rechunk them alike")
    return values, mask, dims, names


@dataclass(frozen=True)
class DaskInput:
    """An input of the Dask imputer, classified on the client from its metadata alone.

    kind : "matrix" (a 2-D dask array, NaN where missing), "frame" (a dask DataFrame of
        numeric columns), "list-frame" (a dask DataFrame of list columns) or "arrays" (a
        ``(values, mask, dims[, names])`` tuple or a :class:`DaskMultiModalArray`).
    X : the input: a matrix rechunked to one column chunk; the arrays as
        ``(values, mask, dims, names)`` (:func:`dask_arrays`).
    modalities : the imputer's parameter (for "matrix" and "frame").
    dims, names : the modalities, or None for a "list-frame" (its partitions tell them).
    columns : for "matrix" and "frame", the M (d_m,) positions of each modality's columns.
    feature_labels : for "frame", the labels of its modality columns in frame order.
    """

    kind: str
    X: object
    modalities: object = None
    dims: tuple | None = None
    names: tuple | None = None
    columns: tuple | None = None
    feature_labels: tuple | None = None

    @property
    def features(self):
        """What scikit-learn's feature checks read (as ``ImputerInput.features``): the
        empty meta of a frame's modality columns, a (0, D) array for a matrix, else None."""
        if self.kind == "frame":
            return self.X._meta.iloc[:0, np.sort(np.concatenate(self.columns))]
        if self.kind == "matrix":
            return np.empty((0, self.X.shape[1]))
        return None

    def feature_names(self, dims, names) -> list[str]:
        """The output's D modality column names (:func:`~ul4m4_gpu.io.inputs.column_names`)
        for the fitted ``dims`` and ``names``."""
        return column_names(names, dims, self.columns, self.feature_labels)


def read_dask_input(X, modalities) -> DaskInput:
    """Classify ``X`` (the input of ``DaskUL4M4Imputer``) from its metadata; raises
    ``TypeError`` / ``ValueError`` naming the problem. A dask DataFrame is read by its list
    columns when ``modalities`` is None and its meta holds a list-typed or object column,
    by its numeric columns otherwise."""
    import dask.array as da

    if is_dask_frame(X):
        meta = X._meta
        if modalities is None and (_numeric_list_columns(meta) or any(
                dtype == object for dtype in meta.dtypes)):
            _check_column_labels(X)
            return DaskInput("list-frame", X)
        columns, names = frame_modalities(meta, modalities)
        labels = meta.columns[np.sort(np.concatenate(columns))]
        return DaskInput("frame", X, modalities, tuple(len(c) for c in columns), names,
                         columns, tuple(str(label) for label in labels))
    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D dask array, got {X.ndim}-D of shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X must hold numbers, got dtype {X.dtype}")
        columns, names = matrix_modalities(X.shape[1], modalities)
        X = X if X.numblocks[1] == 1 else X.rechunk({1: -1})
        return DaskInput("matrix", X, modalities, tuple(len(c) for c in columns), names,
                         columns)
    values, mask, dims, names = dask_arrays(X)
    if modalities is not None:
        check_carries_modalities(modalities, "a tuple of dask arrays or a DaskMultiModalArray",
                                 dims)
    return DaskInput("arrays", (values, mask, dims, names), dims=dims, names=names)


def partitions_of(inp: DaskInput, device: str, session) -> Partitions:
    """The row blocks of ``inp`` (the input of ``DaskUL4M4Imputer.fit``) as delayed,
    validated (values, mask) pairs; ``device`` as the imputer's parameter."""
    import dask

    if inp.kind == "list-frame":
        return _frame_partitions(inp.X, device, session)
    if inp.kind in ("frame", "matrix"):
        if inp.kind == "frame":  # the partitions' global rows are not known here
            parts = inp.X.to_delayed()
            offsets, meta = [None] * len(parts), None
        else:
            parts, offsets = inp.X.to_delayed().ravel(), _row_offsets(inp.X)
            meta = inp.X._meta if device == "auto" else None
        grouped = dask.delayed(_grouped_block, pure=False)
        blocks = [grouped(part, inp.modalities, inp.dims, inp.names, device, i, offsets[i])
                  for i, part in enumerate(parts)]
        return Partitions(blocks, inp.dims, inp.names, meta)
    values, mask, dims, names = inp.X
    offsets = _row_offsets(values)
    prepare = dask.delayed(_prepare_block, pure=False)
    blocks = [prepare(v, m, dims, names, device, i, offsets[i])
              for i, (v, m) in enumerate(zip(values.to_delayed().ravel(),
                                             mask.to_delayed().ravel()))]
    return Partitions(blocks, dims, names, values._meta if device == "auto" else None)


def _row_offsets(array) -> list:
    """The first global row of each row block of a dask array (None for each where the
    row chunks are unknown)."""
    if any(math.isnan(c) for c in array.chunks[0]):
        return [None] * array.numblocks[0]
    return np.concatenate([[0], np.cumsum(array.chunks[0])]).astype(int).tolist()


def _frame_partitions(frame, device: str, session) -> Partitions:
    import dask

    _check_column_labels(frame)
    parts = frame.to_delayed()
    layout = dask.delayed(_frame_layout, pure=False)
    futures = session.client.compute([layout(p) for p in parts])
    gathered = session.result(session.reduce(futures, _merge_layouts), "DataFrame layout")
    gathered = gathered if isinstance(gathered, list) else [gathered]
    if sum(part[0] for part in gathered) == 0:
        raise ValueError("empty input: the DataFrame has 0 rows")
    unobserved = [name for name in _numeric_list_columns(frame._meta)
                  if all(part[1].get(name, ("null",))[0] == "null" for part in gathered)]
    if unobserved:
        raise ValueError(f"modalities {unobserved} are observed in no training row")
    columns, dims = [], []
    for name in frame.columns:
        kinds = [part[1].get(name, ("null",)) for part in gathered]
        if not any(k[0] == "list" for k in kinds):
            continue
        if any(k[0] == "other" for k in kinds):
            raise ValueError(f"column {name!r} holds lists of numbers in some partitions "
                             "and other values in others")
        widths = sorted({w for k in kinds if k[0] == "list" for w in k[1]})
        if len(widths) != 1 or widths[0] == 0:
            raise ValueError(f"modality column {name!r}: non-null cells must all have the "
                             f"same non-zero length, found lengths {widths[:10]}")
        columns.append(str(name))
        dims.append(int(widths[0]))
    if not columns:
        raise ValueError(
            "the DataFrame has no columns of lists of numbers to read as modalities; note "
            "that dask turns object columns of Python lists into strings unless "
            "dask.config.set({'dataframe.convert-string': False}) is set when the frame is "
            "built: prefer pyarrow list dtypes, e.g. pd.ArrowDtype(pa.list_(pa.float32())); "
            "for numeric columns, pass modalities=..."
        )
    offsets = np.concatenate([[0], np.cumsum([part[0] for part in gathered])]).tolist()
    block = dask.delayed(_frame_block, pure=False)
    blocks = [block(p, columns, tuple(dims), device, i, offsets[i])
              for i, p in enumerate(parts)]
    meta = None
    if device == "auto" and is_cudf(frame._meta):
        meta = "cuda"
    return Partitions(blocks, tuple(dims), tuple(columns), meta)


def output_meta(device: str, like, ndim: int, dtype):
    """Empty array of the type a per-row dask output has: that of ``device`` (the imputer's
    parameter) when it is "cpu"/"cuda", else following ``like`` (an array's meta, or a device name)."""
    from dask.array.utils import meta_from_array

    if device != "auto":
        like = device
    if like is not None and not isinstance(like, str):
        return meta_from_array(like, ndim=ndim, dtype=dtype)
    try:
        return device_module(like or "cpu").empty((0,) * ndim, dtype=dtype)
    except ImportError:  # CuPy absent on the client: NumPy meta over CuPy chunks
        return np.empty((0,) * ndim, dtype=dtype)


def _completed_meta(frame, columns, add_indicator: bool = False):
    """``frame`` (typically an empty meta) with its modality columns typed as completed,
    then the bool indicator columns when ``add_indicator``."""
    import pyarrow as pa

    empty = pa.array([None] * len(frame), pa.list_(pa.float32()))
    out = with_filled_columns(frame, pa.table({name: empty for name in columns}), columns)
    if add_indicator:
        append_indicators(out, columns, np.zeros((len(out), len(columns)), dtype=bool))
    return out


def grouped_meta(inp: DaskInput, add_indicator: bool):
    """The empty result of completing a "matrix" or "frame" input: a (0, D [+ M]) array of
    the matrix's chunk type and :func:`~ul4m4_gpu.io.inputs.output_float` dtype; the
    frame's meta with its modality columns kept (a float column stays of its dtype, as
    ``UL4M4Imputer`` keeps it) and the bool indicators appended."""
    from dask.array.utils import meta_from_array

    n_indicators = len(inp.names) if add_indicator else 0
    if inp.kind == "matrix":
        meta = meta_from_array(inp.X._meta, ndim=2, dtype=output_float(inp.X.dtype))
        return meta.reshape(0, inp.X.shape[1] + n_indicators)
    out = inp.X._meta.copy()
    if add_indicator:
        append_indicators(out, inp.names, np.zeros((0, len(inp.names)), dtype=bool))
    return out
