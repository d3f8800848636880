"""Dense modality blocks from list columns (one list of numbers per row, null = missing).

Two sources, one set of rules: an Arrow column is unpacked on the host
(:func:`arrow_list_to_dense`, NumPy out) and a cuDF column on the GPU
(:func:`cudf_list_to_dense`, CuPy out, nothing copied through the host but the distinct
cell lengths and a few counts for the checks). Every non-null cell must hold the same non-zero number of numbers with no
nulls inside; the errors name the column.
"""

from __future__ import annotations

import numpy as np

from .backend import VALUE_DTYPE, array_module, to_numpy


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


def cudf_list_columns(frame) -> list:
    """Names of the list-typed columns of a cuDF DataFrame, in order."""
    import cudf

    return [name for name in frame.columns if isinstance(frame[name].dtype, cudf.ListDtype)]


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


def _check_leaves(name: str, null_count: int, numeric: bool, type_name) -> None:
    if null_count:
        raise ValueError(f"modality column {name!r}: null entries inside a non-null cell")
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
    _check_leaves(name, leaves.null_count,
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
    _check_leaves(name, leaves.null_count, leaves.dtype.kind in "fiu", leaves.dtype)
    return _scatter_rows(observed, leaves.values, d), observed
