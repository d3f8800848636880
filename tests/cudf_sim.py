"""A CPU stand-in for the few cuDF calls the library makes, backed by pyarrow, with its
device buffers served by tests/cupy_sim.py (like that module, it runs the GPU code path on
a machine without a GPU). Each call mirrors the cuDF API documented at
docs.rapids.ai/api/cudf/stable:

* ``read_parquet(path, columns=, row_groups=, use_pandas_metadata=)``;
* ``DataFrame``: ``len``, ``columns``, ``index``, ``df[name]`` (get; set from a Series or a
  device array, a new name appending the column, as cuDF does), ``iloc[a:b]``,
  ``copy()``, ``drop(columns=)``, ``to_arrow(preserve_index=)``, ``DataFrame.from_arrow``;
* ``Series``: ``len``, ``dtype`` (a ``ListDtype``, with ``element_type`` and ``to_arrow()``,
  for list columns), ``null_count``,
  ``Series.from_arrow``, ``to_arrow()``, ``isna()``, ``dropna()``, ``fillna(value)``, ``~`` on booleans, boolean-mask indexing, ``values`` (a
  device array; raises when the column has nulls, as cuDF does), ``list.len()`` (null for
  null rows) and ``list.leaves`` (the innermost values, flattened through every level).

Anything else raises ``AttributeError``: add it here only after checking cuDF's docs.
"""

from __future__ import annotations

import types

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class ListDtype:
    __module__ = "cudf"

    def __init__(self, element_type):
        self.element_type = element_type

    def __repr__(self):
        return f"ListDtype({self.element_type})"

    def to_arrow(self):
        element = self.element_type
        return pa.list_(element.to_arrow() if isinstance(element, ListDtype)
                        else pa.from_numpy_dtype(element))


def _dtype(arrow_type):
    """cuDF's dtype for an Arrow type: ListDtype (nested for lists of lists) or NumPy's."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return ListDtype(_dtype(arrow_type.value_type))
    return np.dtype(arrow_type.to_pandas_dtype())


class _ListMethods:
    def __init__(self, array):
        self._array = array

    def len(self):
        return Series(pc.list_value_length(self._array))

    @property
    def leaves(self):
        array = self._array
        while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            array = pc.list_flatten(array)
        return Series(array)


class Series:
    __module__ = "cudf"

    def __init__(self, array):
        self._array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array

    @classmethod
    def from_arrow(cls, array):
        return cls(array)

    def __len__(self):
        return len(self._array)

    @property
    def dtype(self):
        return _dtype(self._array.type)

    @property
    def null_count(self) -> int:
        return self._array.null_count

    @property
    def list(self):
        if not isinstance(self.dtype, ListDtype):
            raise AttributeError("Can only use .list accessor with a 'list' dtype")
        return _ListMethods(self._array)

    @property
    def values(self):
        import cupy  # the simulator, installed by the cupy_sim fixture

        if self.null_count:
            raise ValueError("Column must have no nulls.")
        return cupy.asarray(self._array.to_numpy(zero_copy_only=False))

    def to_arrow(self):
        return self._array

    def isna(self):
        return Series(self._array.is_null())

    def dropna(self):
        return Series(self._array.drop_null())

    def fillna(self, value):
        return Series(pc.fill_null(self._array, value))

    def __invert__(self):
        return Series(pc.invert(self._array))

    def __getitem__(self, mask):
        return Series(self._array.filter(mask._array))


class _Rows:
    def __init__(self, frame):
        self._frame = frame

    def __getitem__(self, rows: slice):
        start, stop, _ = rows.indices(len(self._frame))
        return DataFrame(self._frame._table.slice(start, max(stop - start, 0)))


class DataFrame:
    __module__ = "cudf"

    def __init__(self, table, index=None):
        self._table = table
        self.index = range(table.num_rows) if index is None else index

    @classmethod
    def from_arrow(cls, table):
        return cls(table)

    def __len__(self):
        return self._table.num_rows

    @property
    def columns(self):
        return list(self._table.column_names)

    def __getitem__(self, name):
        return Series(self._table.column(name))

    @property
    def iloc(self):
        return _Rows(self)

    def __setitem__(self, name, series):
        column = series._array if isinstance(series, Series) else pa.array(series.get())
        if name in self._table.column_names:
            position = self._table.column_names.index(name)
            self._table = self._table.set_column(position, name, column)
        else:
            self._table = self._table.append_column(name, column)

    def copy(self):
        return DataFrame(self._table, self.index)

    def drop(self, columns):
        return DataFrame(self._table.drop_columns(list(columns)))

    def to_arrow(self, preserve_index=None):
        return self._table


#: Row groups read by :func:`read_parquet` since the module was built.
row_groups_read = []


def read_parquet(path, columns=None, row_groups=None, use_pandas_metadata=True):
    file = pq.ParquetFile(path)
    row_groups_read.extend(range(file.num_row_groups) if row_groups is None else row_groups)
    groups = range(file.num_row_groups) if row_groups is None else row_groups
    return DataFrame(file.read_row_groups(list(groups), columns=columns,
                                          use_pandas_metadata=use_pandas_metadata))


def build_module() -> types.ModuleType:
    """A fresh ``cudf`` module object backed by this simulator."""
    row_groups_read.clear()
    module = types.ModuleType("cudf", __doc__)
    for item in (ListDtype, Series, DataFrame, read_parquet):
        setattr(module, item.__name__, item)
    module.row_groups_read = row_groups_read
    return module
