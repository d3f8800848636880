"""Row sources: all the one fit (:mod:`ul4m4_gpu.core.fit`) needs from the training rows,
wherever they live (FAISS's ``contrib/clustering.py`` ``DatasetAssign`` is the model).

A source holds N rows of M modalities and offers:

* ``n_rows``, ``dims`` (M ints, known once :meth:`moments` has run), ``names`` (M strings),
  ``where`` (how errors name the data), ``device`` ("cpu" | "cuda": where the centres and
  the :class:`~ul4m4_gpu.core.kmeans.ClusterStats` of the loop live) and ``dtype`` (of the
  normalised rows, hence of the centres);
* ``moments() -> Moments`` of the raw rows (:class:`~ul4m4_gpu.core.normalise.Moments`);
* ``normalise(mean, scale)``: from now on the rows are served normalised with these
  (D,) float64 statistics;
* ``sample(index) -> PackedRows``: the normalised rows ``index`` (sorted global row
  numbers, NumPy int64; None: every row, in order), for seeding and for choosing the
  completion temperature;
* ``start_run(label)``: a Lloyd run begins (``label`` names it in errors); the next
  ``assign`` compares its labels with none;
* ``assign(centers, centers_mask) -> ClusterStats``: one pass assigning every row to its
  nearest centre, keeping the labels; ``changed`` counts the labels that differ from the
  previous pass of the run;
* ``labels()``: the labels of the last pass, (N,) int64 in the front end's own type (an
  array on the rows' device, a host array, a dask array), not changed by later passes.

Implementations: :class:`ArrayRows` (rows in this process's memory, NumPy or CuPy),
:class:`BatchedRows` (rows read again block by block on every pass: the streamed Parquet
dataset, or any re-iterable of blocks) and the Dask partitions of
:mod:`ul4m4_gpu.scale.dask_rows`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from .backend import array_module, device_module, to_device, to_numpy
from .kmeans import ClusterStats, PackedRows, assign_rows
from .normalise import Moments, normalise
from .validation import default_modality_names


class RowSource(Protocol):
    """The interface of a row source (see the module docstring)."""

    n_rows: int
    dims: tuple
    names: tuple
    where: str
    device: str
    dtype: object

    def moments(self) -> Moments: ...

    def normalise(self, mean, scale) -> None: ...

    def sample(self, index) -> PackedRows: ...

    def start_run(self, label: str) -> None: ...

    def assign(self, centers, centers_mask) -> ClusterStats: ...

    def labels(self): ...


def sample_index(n_rows: int, size: int | None, rng) -> np.ndarray | None:
    """Sorted global indices of a uniform sample of ``size`` rows without replacement,
    drawn from ``rng`` (a ``RandomState``); None (every row, nothing drawn) when ``size``
    is None or not below ``n_rows``."""
    if size is None or size >= n_rows:
        return None
    picker = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
    return np.sort(picker.choice(n_rows, size=size, replace=False))


class ArrayRows:
    """Rows held in this process's memory: values (N, D) float, mask (N, M) bool (NumPy or
    CuPy, finite where observed). The normalised rows are kept, and every pass is one
    :func:`~ul4m4_gpu.core.kmeans.assign_rows` on the rows' device (the fused pass on the
    CPU); ``batch_size`` bounds the rows assigned at once."""

    def __init__(self, values, mask, dims, names, batch_size: int | None = None,
                 where: str = "X"):
        self.values, self.mask = values, mask
        self.n_rows, self.dims, self.names = int(values.shape[0]), tuple(dims), tuple(names)
        self.where, self.batch_size = where, batch_size
        self.device = "cpu" if array_module(values) is np else "cuda"
        self.dtype = values.dtype
        self.rows: PackedRows | None = None
        self._labels = None

    @classmethod
    def of_packed(cls, rows: PackedRows, batch_size: int | None = None) -> "ArrayRows":
        """A source over rows that are normalised already (the low-level functions)."""
        source = cls(rows.z, rows.mask, rows.dims, default_modality_names(len(rows.dims)),
                     batch_size)
        source.rows = rows
        return source

    def moments(self) -> Moments:
        return Moments.of(self.values, self.mask, self.dims)

    def normalise(self, mean, scale) -> None:
        xp = array_module(self.values)
        z = normalise(self.values, self.mask, xp.asarray(mean), xp.asarray(scale), self.dims)
        self.rows = PackedRows.build(z, self.mask, self.dims, clean=True)

    def sample(self, index) -> PackedRows:
        if index is None:
            return self.rows
        index = self.rows.xp.asarray(index)
        return PackedRows(self.rows.z[index], self.rows.mask[index], self.dims,
                          self.rows.row_norms[index])

    def start_run(self, label: str) -> None:
        self._labels = None

    def assign(self, centers, centers_mask) -> ClusterStats:
        self._labels, stats = assign_rows(self.rows, centers, centers_mask, self._labels,
                                          self.batch_size)
        return stats

    def labels(self):
        return self._labels


class BatchedRows:
    """Rows read again, block by block, on every pass; only the labels (one host int64 per
    row) and (K, D) statistics stay in memory.

    blocks : a callable returning a new iterator of (offset, values (n, D) float, mask
    (n, M) bool) blocks, consecutive and in the same order every time, on ``device``
    (``offset``: the global number of the block's first row). ``dims`` may be None until
    :meth:`moments` has learnt them (a subclass's). Statistics are summed on the host in
    float64, block by block; each block's pass is :func:`~ul4m4_gpu.core.kmeans.assign_rows`
    (the fused pass on the CPU).
    """

    def __init__(self, blocks: Callable[[], Iterator], n_rows: int, dims, names,
                 device: str = "cpu", batch_size: int | None = None, where: str = "X",
                 dtype=np.float32):
        self.blocks, self.n_rows = blocks, int(n_rows)
        self.dims = None if dims is None else tuple(dims)
        self.names, self.where = tuple(names), where
        self.rows_device, self.batch_size, self.dtype = device, batch_size, np.dtype(dtype)
        self.device = "cpu"  # the loop's centres and statistics stay on the host
        self._statistics = None
        self._labels = np.full(self.n_rows, -2, dtype=np.int64)

    def moments(self) -> Moments:
        total = Moments.empty(self.dims)
        for _, values, mask in self.blocks():
            total = total + Moments.of(values, mask, self.dims)
        return total

    def normalise(self, mean, scale) -> None:
        self._statistics = (to_device(mean, self.rows_device), to_device(scale, self.rows_device))

    def packed(self) -> Iterator:
        """The normalised blocks as (offset, :class:`PackedRows`)."""
        mean, scale = self._statistics
        for offset, values, mask in self.blocks():
            z = normalise(values, mask, mean, scale, self.dims, self.dtype)
            yield offset, PackedRows.build(z, mask, self.dims, clean=True)

    def sample(self, index) -> PackedRows:
        zs, masks = [], []
        for offset, rows in self.packed():
            if index is None:
                local = slice(None)
            else:
                lo, hi = np.searchsorted(index, [offset, offset + len(rows)])
                if hi == lo:
                    continue
                local = rows.xp.asarray(index[lo:hi] - offset)
            zs.append(rows.z[local])
            masks.append(rows.mask[local])
        xp = device_module(self.rows_device)
        return PackedRows.build(xp.concatenate(zs), xp.concatenate(masks), self.dims,
                                clean=True)

    def start_run(self, label: str) -> None:
        self._labels[:] = -2  # not assigned yet: every label of the first pass changes

    def assign(self, centers, centers_mask) -> ClusterStats:
        centers = to_device(centers, self.rows_device)
        centers_mask = to_device(centers_mask, self.rows_device)
        total = None
        for offset, rows in self.packed():
            labels, stats = assign_rows(rows, centers, centers_mask, batch_size=self.batch_size)
            labels = to_numpy(labels)
            stop = offset + labels.shape[0]
            changed = int((self._labels[offset:stop] != labels).sum())
            self._labels[offset:stop] = labels
            stats = dataclasses.replace(stats.to_host(), changed=changed)
            total = stats if total is None else total + stats
        return total

    def labels(self):
        return self._labels.copy()
