"""The row source (:mod:`ul4m4_gpu.core.sources`) of the Dask fit: the partitions stay on the
workers; only (K, D)-sized summaries and the samples travel.

* ``moments``: per partition :class:`~ul4m4_gpu.core.normalise.Moments` (float64), combined
  by a tree reduction with Chan et al.'s formula; with a single partition the statistics
  are bit-identical to the single-machine ones.
* ``normalise``: the normalised partitions (z, mask, row norms) become persisted futures
  whose lineage is (input block, statistics).
* ``sample``: the rows of a sample are taken on the workers and gathered to the client.
* ``assign``: the centres of a pass are one small future (its data embedded in the task,
  so recomputable), fetched once per worker; one task per partition runs
  :func:`~ul4m4_gpu.core.kmeans.assign_rows` (the fused CPU pass) and keeps the labels as a
  future that depends only on the partition and the centres; a small task per partition
  counts the labels that changed, and a tree of sums brings one
  :class:`~ul4m4_gpu.core.kmeans.ClusterStats` to the client.

The same tasks drive NumPy partitions on CPU workers and CuPy partitions on dask-cuda
workers: every task asks :func:`~ul4m4_gpu.core.backend.array_module` for the module of its
chunk.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..core.backend import VALUE_DTYPE, array_module, is_cupy_array, to_numpy
from ..core.kmeans import ClusterStats, PackedRows, assign_rows
from ..core.normalise import Moments, normalise
from .dask_partitions import Partitions, output_meta
from .dask_session import Session


# ---------------------------------------------------------------------------- worker tasks
def _block_moments(block, dims):
    """(Moments, [rows], {device}) of one partition."""
    values, mask = block
    return (Moments.of(values, mask, dims), [int(values.shape[0])],
            {"cuda" if is_cupy_array(values) else "cpu"})


def _merge_moments(*parts):
    moments, rows, devices = parts[0]
    rows, devices = list(rows), set(devices)
    for other, other_rows, other_devices in parts[1:]:
        moments = moments + other
        rows += other_rows
        devices |= other_devices
    return moments, rows, devices


def _normalise_block(block, statistics, dims):
    """(z, mask, row_norms) of one partition: the fields of a clean :class:`PackedRows`."""
    values, mask = block
    xp = array_module(values, mask)
    mean, scale = (xp.asarray(a) for a in statistics)
    rows = PackedRows.build(normalise(values, mask, mean, scale, dims), mask, dims, clean=True)
    return rows.z, rows.mask, rows.row_norms


def _assign_partition(part, centers, dims, batch_size):
    """(labels, host ClusterStats) of one partition against the broadcast centres, by
    :func:`~ul4m4_gpu.core.kmeans.assign_rows`; ``changed`` is left to
    :func:`_partition_stats`, so that the labels depend on the partition and the centres
    only (a lost result is recomputed from them)."""
    rows = PackedRows(*part[:2], tuple(dims), part[2])
    xp = rows.xp
    centers, centers_mask = (xp.asarray(a) for a in centers)
    if len(rows) == 0:
        k, width = centers.shape
        return xp.empty(0, dtype=xp.int64), ClusterStats(
            np.zeros((k, width)), np.zeros((k, len(dims))), np.zeros(k, dtype=np.int64), 0, 0.0)
    labels, stats = assign_rows(rows, centers, centers_mask, batch_size=batch_size)
    return labels, stats.to_host()


def _partition_stats(assigned, previous):
    """The ClusterStats of one partition's pass, ``changed`` counting the labels that
    differ from ``previous`` (the partition's last pass, or None: every label)."""
    labels, stats = assigned
    changed = labels.shape[0] if previous is None else int((labels != previous[0]).sum())
    return dataclasses.replace(stats, changed=int(changed))


def _sum_stats(*parts):
    total = parts[0]
    for other in parts[1:]:
        total = total + other
    return total


def _take_rows(part, index):
    """Host (z, mask) of the rows ``index`` of one normalised partition."""
    z, mask, _ = part
    index = array_module(z).asarray(index)
    return to_numpy(z[index]), to_numpy(mask[index])


def _labels_block(assigned):
    return assigned[0]


# ---------------------------------------------------------------------------- the source
class DaskRows:
    """The rows of :class:`~ul4m4_gpu.scale.dask_partitions.Partitions` on a cluster (see the
    module docstring). ``device`` is the imputer's parameter (the type of ``labels()``);
    ``batch_size`` bounds the rows of a partition assigned at once. :meth:`release` drops
    every future the source holds (a failed fit calls it)."""

    def __init__(self, session: Session, partitions: Partitions, device: str,
                 batch_size: int | None = None):
        self.session, self.partitions = session, partitions
        self.dims, self.names = partitions.dims, partitions.names
        self.parameter_device, self.batch_size = device, batch_size
        self.where, self.device, self.dtype = "X", "cpu", np.dtype(VALUE_DTYPE)
        self.n_rows, self.block_rows, self.rows_device = 0, [], "cpu"
        self._raw = self._rows = self._assigned = None
        self._label, self._passes = "k-means", 0

    def moments(self) -> Moments:
        session = self.session
        self._raw = session.client.compute(self.partitions.blocks)
        parts = [session.submit(_block_moments, r, self.dims) for r in self._raw]
        moments, self.block_rows, devices = session.result(
            session.reduce(parts, _merge_moments), "normalisation statistics")
        if len(devices) > 1:
            raise TypeError("partitions mix NumPy and CuPy chunks; use device='cpu' or 'cuda'")
        self.rows_device = next(iter(devices))
        self.n_rows = int(sum(self.block_rows))
        return moments

    def normalise(self, mean, scale) -> None:
        statistics = self.session.constant((mean, scale))
        self._rows = [self.session.submit(_normalise_block, r, statistics, self.dims)
                      for r in self._raw]
        self._raw = None  # the rows keep their lineage (input block → statistics)

    def sample(self, index) -> PackedRows:
        offsets = np.concatenate([[0], np.cumsum(self.block_rows)])
        pieces = []
        for part, start, stop in zip(self._rows, offsets[:-1], offsets[1:]):
            local = (np.arange(stop - start) if index is None
                     else index[(index >= start) & (index < stop)] - start)
            if local.size:
                pieces.append(self.session.submit(_take_rows, part, local))
        gathered = [self.session.result(piece, "gathering a sample of the rows")
                    for piece in pieces]
        return PackedRows.build(np.concatenate([g[0] for g in gathered]),
                                np.concatenate([g[1] for g in gathered]), self.dims,
                                clean=True)

    def start_run(self, label: str) -> None:
        self._label, self._passes, self._assigned = label, 0, None

    def assign(self, centers, centers_mask) -> ClusterStats:
        session = self.session
        broadcast = session.constant((centers, centers_mask))
        previous = self._assigned or [None] * len(self._rows)
        assigned = [session.submit(_assign_partition, r, broadcast, self.dims, self.batch_size)
                    for r in self._rows]
        stats = [session.submit(_partition_stats, a, p) for a, p in zip(assigned, previous)]
        total = session.result(session.reduce(stats, _sum_stats),
                               f"{self._label}, iteration {self._passes}")
        self._assigned, self._passes = assigned, self._passes + 1
        return total

    def labels(self):
        """(N,) int64 dask array of the last pass's labels, kept on the workers."""
        import dask
        import dask.array as da

        like = self.rows_device if self.partitions.meta is None else self.partitions.meta
        meta = output_meta(self.parameter_device, like, 1, np.int64)
        blocks = [self.session.submit(_labels_block, a) for a in self._assigned]
        return da.concatenate([
            da.from_delayed(dask.delayed(f), shape=(n,), dtype=np.int64, meta=meta)
            for f, n in zip(blocks, self.block_rows)])

    def release(self) -> None:
        self._raw = self._rows = self._assigned = None
