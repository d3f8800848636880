"""Dense modality blocks from list columns (one list of numbers per row, null = missing).

Two sources, one set of rules: an Arrow column is unpacked on the host
(:func:`arrow_list_to_dense`, NumPy out) and a cuDF column on the GPU
(:func:`cudf_list_to_dense`, CuPy out, nothing copied through the host but the distinct
cell lengths and a few counts for the checks). Every non-null cell must hold the same non-zero number of numbers with no
nulls inside; the errors name the column (and the rows of null entries).

The rule of every reader (Parquet files, Arrow tables, pandas/cuDF/Dask DataFrames): a
column typed as lists of integers or floats (:func:`is_numeric_list_type`) is a modality;
any other column, lists of booleans or strings included, is not.
"""

from __future__ import annotations

import numpy as np

from ..core.backend import VALUE_DTYPE, array_module, import_cudf, is_cudf, to_numpy
from ..core.validation import describe_rows


def is_list_type(arrow_type) -> bool:
    """True for Arrow ``list``, ``large_list`` and ``fixed_size_list`` types."""
    import pyarrow as pa

    return (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
            or pa.types.is_fixed_size_list(arrow_type))


def is_numeric_list_type(arrow_type) -> bool:
    """True for an Arrow list type (see :func:`is_list_type`) of integers or floats."""
    import pyarrow as pa

    return is_list_type(arrow_type) and (pa.types.is_integer(arrow_type.value_type)
                                         or pa.types.is_floating(arrow_type.value_type))


def cudf_numeric_list_columns(frame) -> list:
    """Names of the columns of a cuDF DataFrame typed as lists of numbers
    (:func:`is_numeric_list_type`), in order."""
    import cudf

    return [name for name in frame.columns if isinstance(frame[name].dtype, cudf.ListDtype)
            and is_numeric_list_type(frame[name].dtype.to_arrow())]


def pandas_to_arrow(frame):
    """A pandas DataFrame as a ``pyarrow.Table``, its index dropped. A column pyarrow cannot
    convert (an object column mixing lists with strings, say) raises ``TypeError`` naming
    the column and, for a mix of lists and other values, the first row of each, instead of
    pyarrow's ``ArrowInvalid``."""
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        for name in frame.columns:
            try:
                pa.Array.from_pandas(frame[name])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as column_error:
                reason = column_error.args[0] if column_error.args else column_error
                raise TypeError(f"column {name!r} cannot be read: {reason}"
                                f"{_mixed_cells(frame[name])}") from None
        raise TypeError(f"the DataFrame cannot be read: {error}") from None


def _mixed_cells(series) -> str:
    """``" (row 0 holds a list, row 3 a str)"`` for a pandas column mixing list cells with
    other non-null values, else ``""``."""
    import pandas as pd

    first = {}
    for row, cell in enumerate(series):
        if isinstance(cell, (list, tuple, np.ndarray)):
            first.setdefault("list", row)
        elif not pd.isna(cell):
            first.setdefault(type(cell).__name__, row)
    if "list" not in first or len(first) < 2:
        return ""
    other, row = next((kind, row) for kind, row in first.items() if kind != "list")
    return f" (row {first['list']} holds a list, row {row} a {other})"


def _cell_width(name: str, observed, lengths, width: int | None) -> int:
    """The common length d of the non-null cells (``lengths()``: every row's cell length,
    on the device of ``observed``), which must equal ``width`` when that is given; a column
    null in every row has d = ``width``. Raises ``ValueError`` otherwise. Only the distinct
    lengths reach the host."""
    if not bool(observed.any()):
        if width is None:
            raise ValueError(f"modality column {name!r} is null in every row")
        return width
    xp = array_module(observed)
    widths = to_numpy(xp.unique(lengths()[observed]))
    if widths.size != 1 or widths[0] == 0:
        raise ValueError(
            f"modality column {name!r}: non-null cells must all have the same non-zero "
            f"length, found lengths {widths.tolist()[:10]}"
        )
    if width is not None and widths[0] != width:
        raise ValueError(f"modality column {name!r} has cells of length {int(widths[0])}, "
                         f"expected {width}")
    return int(widths[0])


def _check_leaves(name: str, observed, d: int, null_count: int, null_leaves, numeric: bool,
                  type_name) -> None:
    """Raise unless the leaves of the observed cells (``d`` per cell, in row order) are
    numbers without nulls: ``ValueError`` naming the column and the rows whose cells hold a
    null entry (``null_leaves()``: the leaves' null flags, read only then), ``TypeError``
    for leaves of ``type_name`` that are not numbers."""
    if null_count:
        cells = np.unique(np.flatnonzero(to_numpy(null_leaves())) // d)
        rows = np.zeros(observed.shape[0], dtype=bool)
        rows[np.flatnonzero(to_numpy(observed))[cells]] = True
        raise ValueError(f"modality column {name!r}: {describe_rows(rows)} have null (or, "
                         "from pandas, NaN) entries inside a non-null cell; a missing "
                         "modality is a null cell")
    if not numeric:
        raise TypeError(f"modality column {name!r} holds {type_name}, expected numbers")


def _scatter_rows(observed, leaves, d: int):
    """(N, d) float32: the observed rows' ``leaves`` (n_observed · d,) in row order, NaN in
    the other rows."""
    xp = array_module(observed, leaves)
    dense = xp.full((observed.shape[0], d), xp.nan, dtype=VALUE_DTYPE)
    dense[observed] = leaves.astype(VALUE_DTYPE).reshape(-1, d)
    return dense


def arrow_list_to_dense(column, name: str, width: int | None = None):
    """(N, d) float32 NumPy values (NaN where missing) and (N,) bool observed of an Arrow
    list column (``Array`` or ``ChunkedArray``); ``width``: the d the cells must have
    (needed when every cell is null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (is_list_type(column.type) or pa.types.is_null(column.type)):
        raise TypeError(f"modality column {name!r} holds {column.type}, expected lists of "
                        "numbers")
    observed = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    d = _cell_width(name, observed, lambda: np.asarray(
        pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)), width)
    leaves = pc.list_flatten(column.filter(pa.array(observed)))
    _check_leaves(name, observed, d, leaves.null_count, leaves.is_null,
                  pa.types.is_floating(leaves.type) or pa.types.is_integer(leaves.type),
                  leaves.type)
    return _scatter_rows(observed, leaves.to_numpy(zero_copy_only=False), d), observed


def cudf_list_to_dense(series, name: str, width: int | None = None):
    """(N, d) float32 CuPy values (NaN where missing) and (N,) CuPy bool observed of a cuDF
    list Series, built on the device from the column's buffers; ``width`` as in
    :func:`arrow_list_to_dense`."""
    import cudf

    if not isinstance(series.dtype, cudf.ListDtype) \
            or isinstance(series.dtype.element_type, cudf.ListDtype):
        raise TypeError(f"modality column {name!r} holds {series.dtype}, expected lists of "
                        "numbers")
    missing = series.isna()
    observed = ~missing.values
    d = _cell_width(name, observed, lambda: series.list.len().fillna(0).values, width)
    leaves = series[~missing].list.leaves
    _check_leaves(name, observed, d, leaves.null_count, lambda: leaves.isna().values,
                  leaves.dtype.kind in "fiu", leaves.dtype)
    return _scatter_rows(observed, leaves.values, d), observed


def with_filled_columns(frame, table, columns):
    """``frame`` with its modality ``columns`` replaced by those of the Arrow ``table`` (same
    rows; ``list<float32>`` columns from :meth:`MultiModalArray.to_arrow`). Every completed
    column is ``list<float32>``, whatever the input's list and number types, as in the
    Parquet output of :func:`ul4m4_gpu.io.files.write_table`: the values are float32 from the
    packing on, so a float64 type would claim digits that are gone. A pyarrow-backed pandas
    column stays pyarrow-backed, an object column holds (d,) float32 arrays; a cuDF frame's
    columns are rebuilt through Arrow on the host."""
    out = frame.copy()
    if is_cudf(frame):
        filled = import_cudf().DataFrame.from_arrow(table)
        filled.index = frame.index
        for name in columns:
            out[name] = filled[name]
        return out
    import pandas as pd

    for name in columns:
        column = table.column(name)
        pyarrow_backed = getattr(frame[name].dtype, "pyarrow_dtype", None) is not None
        cells = (pd.arrays.ArrowExtensionArray(column) if pyarrow_backed
                 else column.to_pandas().to_numpy())
        out[name] = pd.Series(cells, index=frame.index, name=name)
    return out
