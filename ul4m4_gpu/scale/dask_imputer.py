"""``DaskUL4M4Imputer``: UL4M4 (docs/method.md) on a ``dask.distributed`` cluster.

The rows stay on the workers, split in row partitions; only small per-partition summaries
travel. The same code drives NumPy partitions on CPU workers and CuPy partitions on
dask-cuda workers: every task asks :func:`~ul4m4_gpu.core.backend.array_module` for the module of
its chunk (this module never imports CuPy).

Fit, step by step (the single-machine algorithm of :mod:`ul4m4_gpu.core.kmeans`; the same
results from the same initial centres, and from k-means++ when the seed sample holds every
row):

1. **Partitions.** Each row block (a block of the dask arrays, or a DataFrame partition
   whose list columns are unpacked by the rules of :meth:`MultiModalArray.from_dataframe`)
   becomes a future computed from the input's graph, so a partition lost with its worker is
   recomputed from lineage.
2. **Normalisation statistics.** Per partition and modality: the number of observing rows,
   their per-dimension mean and M2 = Σ (x − mean)², in float64; a tree reduction combines
   them with Chan et al.'s parallel formula (stable, unlike raw sums of squares), then
   std = sqrt(M2 / (n − ddof)) with the rules of :func:`~ul4m4_gpu.core.normalise.fit_modality_stats`.
   With a single partition the statistics are bit-identical to the single-machine ones.
3. **Normalised partitions** (z, mask, per-modality row norms) are persisted futures whose
   lineage is (input block, statistics).
4. **Seeding: sampled k-means++.** A uniform sample of ``seed_sample_size`` rows (without
   replacement, drawn from the global row indices so that it does not depend on the
   partitioning) is gathered on one worker, which runs the library's own
   :func:`~ul4m4_gpu.core.kmeans.seed_plusplus` on it. When the data has no more rows than the
   sample size, the sample is every row in order and the seeds (hence the whole fit) are
   those of ``UL4M4Imputer`` with the same ``random_state``. Chosen over k-means|| because
   it reuses the exact seeding code (partial distance, 1e9 for unreachable rows, partial
   centres) and is exact on small data; the default sample (≥ 50 rows per centre, at least
   10 000) misses a cluster holding a fraction f of the rows with probability (1 − f)^s.
5. **Lloyd iterations.** The centres of an iteration are one small future (its data
   embedded in the task, so recomputable), fetched once per worker. Per partition one task
   assigns the rows (:func:`~ul4m4_gpu.core.kmeans.assign`, labels and distances kept on the
   worker as a future that depends only on the partition and the centres), and one task
   returns the (K, D) per-centre sums (float64), (K, M) per-modality counts, (K,) member
   counts, the number of labels that changed against the previous iteration's labels and
   the partition's inertia. A tree of pairwise-ish sums (``split_every`` at a time) brings
   one total to the client, which applies the single-machine update rule
   (:func:`~ul4m4_gpu.core.kmeans.centers_from_statistics`) and
   ``lloyd_loop``'s stop rules (no label changed, every centre moved less than ``tol``, or
   ``max_iter`` updates).
6. **Transform** is embarrassingly parallel: every block runs the single-machine
   ``UL4M4Imputer.transform`` with the fitted centres and statistics.

Every wait on the cluster is bounded by ``timeout`` seconds and raises ``TimeoutError``
naming the step (e.g. "k-means run 1/1, iteration 3") rather than hanging.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

from ..core.backend import (
    VALUE_DTYPE,
    array_module,
    device_module,
    import_cudf,
    is_cudf,
    is_cupy_array,
    resolve_device,
    to_device,
    to_numpy,
)
from ..io.data import MultiModalArray
from ..core.completion import (
    DEFAULT_COMPLETION,
    DEFAULT_N_CANDIDATES,
    TEMPERATURE_SAMPLE_ROWS,
)
from ..core.distances import checked_centers
from ..estimator import UL4M4Imputer
from ..core.kmeans import (
    PackedRows,
    assign,
    cluster_statistics,
    inertia,
    lloyd_over_passes,
    seed_plusplus,
)
from ..io.list_columns import (
    arrow_list_to_dense,
    cudf_list_to_dense,
    cudf_numeric_list_columns,
    is_numeric_list_type,
    pandas_to_arrow,
)
from ..core.normalise import modality_moments, normalise, scale_from_moments
from ..core.validation import check_finite_modalities, check_int, checked_random_state

#: Partial results combined by one reduction task.
SPLIT_EVERY = 8
#: Smallest default k-means++ sample, and rows per centre above that.
MIN_SEED_SAMPLE = 10_000
SEED_SAMPLE_PER_CENTER = 50

_LOCAL_PARAMS = ("n_clusters", "max_iter", "tol", "n_init", "init", "random_state", "device",
                 "batch_size", "ddof", "verbose", "completion", "n_candidates", "temperature")


# ---------------------------------------------------------------------------- containers
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
class _Source:
    """Row blocks of the training data as delayed (values, mask) pairs."""

    blocks: list
    dims: tuple
    names: tuple
    meta: object  # the per-row outputs' type: an array meta, a device name, or None


@dataclass
class _Run:
    centers: np.ndarray
    centers_mask: np.ndarray
    assigned: list
    inertia: float
    n_iter: int


# ---------------------------------------------------------------------------- worker tasks
def _move(x, device: str):
    """``x`` on ``device`` ("auto": where it already is); "cuda" on a worker without a
    usable GPU raises :func:`~ul4m4_gpu.core.backend.resolve_device`'s ``RuntimeError``."""
    return x if device == "auto" else to_device(x, resolve_device(device))


@contextlib.contextmanager
def _in_partition(index, offset):
    """Re-raise a ``ValueError`` / ``TypeError`` about one row block with the block named:
    "partition 2 (global rows from 400): ...", where ``offset``, the block's first global
    row, numbers the rows of the message in the whole data; "partition 2 (rows numbered
    within the partition): ..." where it is None (unknown)."""
    try:
        yield
    except (ValueError, TypeError) as error:
        where = ("rows numbered within the partition" if offset is None
                 else f"global rows from {offset}")
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


def block_moments(block, dims):
    """(counts (M,) int64, mean (D,) f64, m2 (D,) f64, [rows], {device}) of one partition,
    host arrays from :func:`~ul4m4_gpu.core.normalise.modality_moments`."""
    values, mask = block
    counts, mean, m2 = modality_moments(values, mask, dims)
    device = "cuda" if is_cupy_array(values) else "cpu"
    return counts, to_numpy(mean), to_numpy(m2), [int(values.shape[0])], {device}


def merge_moments(dims, *parts):
    """Chan et al.'s parallel combination of :func:`block_moments` results, in order."""
    counts, mean, m2, rows, devices = parts[0]
    counts, mean, m2 = counts.copy(), mean.copy(), m2.copy()
    rows, devices = list(rows), set(devices)
    for other_counts, other_mean, other_m2, other_rows, other_devices in parts[1:]:
        na = np.repeat(counts, dims).astype(np.float64)
        nb = np.repeat(other_counts, dims).astype(np.float64)
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other_mean - mean
            mean = np.where(n > 0, mean + delta * (nb / n), 0.0)
            m2 = np.where(n > 0, m2 + other_m2 + delta * delta * (na * nb / n), 0.0)
        counts = counts + other_counts
        rows += other_rows
        devices |= other_devices
    return counts, mean, m2, rows, devices


def _normalise_block(block, stats, dims):
    """(z, mask, row_norms) of one partition: the fields of a clean :class:`PackedRows`."""
    values, mask = block
    xp = array_module(values, mask)
    mean, scale = (xp.asarray(a) for a in stats)
    rows = PackedRows.build(normalise(values, mask, mean, scale, dims), mask, dims, clean=True)
    return rows.z, rows.mask, rows.row_norms


def _rows(part, dims) -> PackedRows:
    z, mask, row_norms = part
    return PackedRows(z, mask, tuple(dims), row_norms)


def _assign_block(part, centers, dims, batch_size):
    """(labels, nearest distances) of one partition against the broadcast centres."""
    rows = _rows(part, dims)
    xp = rows.xp
    centers, centers_mask = (xp.asarray(a) for a in centers)
    if len(rows) == 0:
        return xp.empty(0, dtype=xp.int64), xp.empty(0, dtype=rows.z.dtype)
    return assign(rows, centers.astype(rows.z.dtype, copy=False), centers_mask, batch_size)


def _block_update_stats(part, assigned, previous, n_clusters, dims):
    """Host (sums (K, D) f64, counts (K, M) f64, members (K,) int64, changed, inertia) of one
    partition; ``changed`` counts labels differing from ``previous`` (0 when None)."""
    rows = _rows(part, dims)
    labels, nearest = assigned
    sums, counts, members = cluster_statistics(rows, labels, n_clusters)
    changed = 0 if previous is None else int((labels != previous[0]).sum())
    return (to_numpy(sums), to_numpy(counts), to_numpy(members).astype(np.int64), changed,
            inertia(labels, nearest))


def _sum_stats(*parts):
    sums, counts, members, changed, inertia = parts[0]
    sums, counts, members = sums.copy(), counts.copy(), members.copy()
    for other in parts[1:]:
        sums += other[0]
        counts += other[1]
        members += other[2]
        changed += other[3]
        inertia += other[4]
    return sums, counts, members, changed, inertia


def _take_rows(part, index):
    z, mask, _ = part
    xp = array_module(z)
    index = xp.asarray(index)
    return z[index], mask[index]


def _seed_from_sample(dims, n_clusters, rng, *samples):
    """k-means++ (:func:`seed_plusplus`) on the concatenated sample; host results and the
    advanced random state."""
    xp = array_module(samples[0][0])
    z = xp.concatenate([s[0] for s in samples])
    mask = xp.concatenate([s[1] for s in samples])
    rows = PackedRows.build(z, mask, dims, clean=True)
    centers, centers_mask, _ = seed_plusplus(rows, n_clusters, rng)
    return to_numpy(centers), to_numpy(centers_mask), rng


def _temperature_from_sample(model, dims, *samples):
    """``temperature_`` of the fitted single-machine ``model`` chosen on the concatenated
    sample of normalised rows (see ``UL4M4Imputer._fit_temperature``)."""
    xp = array_module(samples[0][0])
    rows = PackedRows.build(xp.concatenate([s[0] for s in samples]),
                            xp.concatenate([s[1] for s in samples]), dims, clean=True)
    local = _local_model_for(model, "cuda" if is_cupy_array(rows.z) else "cpu")
    local._fit_temperature(rows)
    return local.temperature_


def _labels_block(assigned):
    return assigned[0]


def _constant(value):
    return value


def _local_model_for(model, device: str) -> UL4M4Imputer:
    """A shallow copy of the fitted single-machine model with its arrays on ``device``."""
    local = copy.copy(model)
    local.device_ = device
    local.verbose = 0
    for name in ("cluster_centers_", "centers_mask_", "mean_", "scale_"):
        setattr(local, name, to_device(getattr(model, name), device))
    return local


def _complete_block(values, mask, model, dims, names, device, block_info=None):
    """Completed (n, D) float32 values of one block: ``UL4M4Imputer.transform`` on it.
    ``block_info`` (filled by ``dask.array.map_blocks``) locates the block for errors."""
    index, offset = "?", None  # a direct call, outside map_blocks
    if block_info is not None:
        index = block_info[0]["chunk-location"][0]
        start = block_info[0]["array-location"][0][0]
        offset = None if math.isnan(start) else int(start)  # NaN: unknown row chunks
    values, mask = _prepare_block(values, mask, dims, names, device, index, offset)
    if values.shape[0] == 0:
        return values
    local = _local_model_for(model, "cuda" if is_cupy_array(values) else "cpu")
    return local.transform(MultiModalArray(values, mask, dims, names)).values


def _missing_block(mask, device):
    return ~_move(mask, device)


def _all_true_block(mask, device):
    mask = _move(mask, device)
    return array_module(mask).ones(mask.shape, dtype=bool)


def _complete_frame(frame, model, columns, dims, device, partition_info=None):
    """One DataFrame partition with its modality columns completed (other columns and the
    index kept), typed as :func:`_with_filled_columns` says. ``partition_info`` (filled by
    ``map_partitions``; None in a direct call: "?") numbers the partition in errors; its
    global rows are not known without a pass over the partitions' lengths."""
    index = "?" if partition_info is None else partition_info["number"]
    values, mask = _frame_block(frame, list(columns), tuple(dims), device, index)
    if values.shape[0] == 0:
        return _completed_meta(frame, columns)
    local = _local_model_for(model, "cuda" if is_cupy_array(values) else "cpu")
    completed = local.transform(MultiModalArray(values, mask, dims, columns))
    return _with_filled_columns(frame, completed.to_arrow(), columns)


def _completed_meta(frame, columns):
    """``frame`` (typically an empty meta) with its modality columns typed as completed."""
    import pyarrow as pa

    empty = pa.array([None] * len(frame), pa.list_(pa.float32()))
    return _with_filled_columns(frame, pa.table({name: empty for name in columns}), columns)


def _with_filled_columns(frame, table, columns):
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


# ---------------------------------------------------------------------------- client side
def _check_column_labels(frame) -> None:
    """Raise ``TypeError`` unless every column label of the (dask) DataFrame is a string:
    modality names are strings, and Arrow would turn other labels into strings."""
    labels = [name for name in frame.columns if not isinstance(name, str)]
    if labels:
        raise TypeError(f"DataFrame column labels must be strings (they name the modalities), "
                        f"got {labels[:10]}; rename the columns, e.g. X.rename(columns=str)")


class _Session:
    """The client and the bound on every wait."""

    def __init__(self, client, timeout: float):
        self.client = client
        self.timeout = timeout

    def submit(self, func, *args):
        return self.client.submit(func, *args, pure=False)

    def constant(self, value):
        """A future holding ``value``, recomputable from its task (unlike scattered data)."""
        return self.client.submit(_constant, value, pure=False)

    def reduce(self, futures, func, *args):
        """Tree reduction, ``SPLIT_EVERY`` contiguous results at a time (order kept)."""
        while len(futures) > 1:
            futures = [self.client.submit(func, *args, *futures[i:i + SPLIT_EVERY], pure=False)
                       for i in range(0, len(futures), SPLIT_EVERY)]
        return futures[0]

    def result(self, future, what: str):
        from distributed import TimeoutError as DistributedTimeout

        try:
            return future.result(timeout=self.timeout)
        except (TimeoutError, DistributedTimeout):
            pass
        raise TimeoutError(
            f"DaskUL4M4Imputer: {what} did not finish within timeout={self.timeout} s; "
            f"{self._workers()}. A worker that died without coming back leaves its data and "
            "tasks waiting for a worker: check the cluster, or raise `timeout` for slow steps."
        )

    def _workers(self) -> str:
        try:
            n = len(self.client.scheduler_info(n_workers=-1)["workers"])
        except Exception:
            try:
                n = len(self.client.scheduler_info()["workers"])
            except Exception as error:
                return f"the scheduler could not be asked for its workers ({error!r})"
        return f"{n} worker(s) connected to the scheduler" + (" (none!)" if n == 0 else "")


class DaskUL4M4Imputer(BaseEstimator):
    """UL4M4 on a ``dask.distributed`` cluster; the results of :class:`UL4M4Imputer` from the
    same initial centres (and from k-means++ when the seed sample holds every row).

    Parameters
    ----------
    n_clusters, max_iter, tol, n_init, init, random_state, batch_size, ddof, verbose,
    completion, n_candidates, temperature
        As for :class:`UL4M4Imputer` (``init`` may be a (centers, centers_mask) pair of
        normalised (K, D) values and (K, M) bool). ``batch_size`` bounds the rows of one
        partition processed at once on a worker.
    device : "auto", "cpu" or "cuda"
        Where the workers keep the partitions: "auto" leaves every chunk where it is (NumPy
        chunks on CPU workers, CuPy chunks on dask-cuda workers); "cpu" / "cuda" move them.
    client : distributed.Client or None
        None: the current/default client (an error if there is none).
    timeout : float, default 600
        Seconds any single wait on the cluster may take before ``TimeoutError``.
    seed_sample_size : int or None
        Rows sampled uniformly for k-means++ (default max(10000, 50 · n_clusters)); with at
        least N rows the seeding is exactly the single-machine one. ``temperature="auto"``
        is chosen on a uniform sample of 2,000 rows.

    Input ``X`` (fit and transform): a tuple ``(values, mask, dims)`` or ``(values, mask,
    dims, names)`` of dask arrays chunked by rows — values (N, D) float, mask (N, M) bool
    with the same row chunks —, a :class:`DaskMultiModalArray`, or a dask DataFrame with one
    list column per modality (null = missing): pyarrow-backed list columns
    (``pd.ArrowDtype(pa.list_(...))``), or object columns of lists when dask's
    ``dataframe.convert-string`` option was off as the frame was built (otherwise dask turns
    them into strings). Column labels must be strings. As in Parquet files
    (:mod:`ul4m4_gpu.io.files`), every column of lists of numbers (list, large_list or
    fixed_size_list of integers or floats) is a modality; other columns, lists of strings
    or booleans included (such as an earlier output's ``imputed`` flags), are ignored by fit
    and passed through by transform, which returns every modality column as
    ``list<float32>``.

    Attributes
    ----------
    cluster_centers_ (K, D) float32, centers_mask_ (K, M) bool, mean_, scale_ (D,) float64:
    NumPy arrays on the client, same meaning as :class:`UL4M4Imputer`'s. labels_ : (N,) int64
    dask array (kept on the workers). n_iter_, inertia_, dims_, modality_names_; device_:
    "cpu" or "cuda", where the partitions were; n_samples_fit_: N.
    """

    def __init__(self, n_clusters=64, max_iter=100, tol=1e-6, n_init=1, init="k-means++",
                 random_state=None, device="auto", batch_size=None, ddof=0, verbose=0,
                 completion=DEFAULT_COMPLETION, n_candidates=DEFAULT_N_CANDIDATES,
                 temperature="auto", client=None, timeout=600, seed_sample_size=None):
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.init = init
        self.random_state = random_state
        self.device = device
        self.batch_size = batch_size
        self.ddof = ddof
        self.verbose = verbose
        self.completion = completion
        self.n_candidates = n_candidates
        self.temperature = temperature
        self.client = client
        self.timeout = timeout
        self.seed_sample_size = seed_sample_size

    def __sklearn_clone__(self) -> "DaskUL4M4Imputer":
        """What ``sklearn.base.clone`` returns: a new, unfitted estimator with the same
        parameters, each cloned as scikit-learn does, but the ``client`` shared, not copied
        (a ``distributed.Client`` cannot be deep-copied)."""
        params = self.get_params(deep=False)
        return type(self)(**{name: value if name == "client" else clone(value, safe=False)
                             for name, value in params.items()})

    # ------------------------------------------------------------------ validation
    def _local_estimator(self, device=None) -> UL4M4Imputer:
        params = {name: getattr(self, name) for name in _LOCAL_PARAMS}
        if device is not None:
            params["device"] = device
        return UL4M4Imputer(**params)

    def _check_params(self) -> None:
        self._local_estimator(device="cpu")._check_params()
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be one of ('auto', 'cpu', 'cuda'), got {self.device!r}")
        if (isinstance(self.timeout, bool) or not isinstance(self.timeout, numbers.Real)
                or not self.timeout > 0 or not math.isfinite(self.timeout)):
            raise ValueError(
                f"timeout must be a finite number of seconds > 0, got {self.timeout!r}")
        check_int("seed_sample_size", self.seed_sample_size, allow_none=True)

    def _get_client(self):
        if self.client is not None:
            return self.client
        from distributed import Client

        try:
            return Client.current()
        except ValueError:
            raise ValueError(
                "DaskUL4M4Imputer needs a dask.distributed Client: pass client=... or create "
                "one first (e.g. distributed.Client(LocalCluster()) or a dask-cuda "
                "LocalCUDACluster)"
            ) from None

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                "This DaskUL4M4Imputer instance is not fitted yet; call fit(X) before transform"
            )

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _is_dataframe(X) -> bool:
        module = type(X).__module__
        if not module.startswith(("dask", "dask_cudf", "dask_expr")):
            return False
        try:
            import dask.dataframe as dd
        except ImportError:
            return False
        return isinstance(X, dd.DataFrame)

    def _arrays(self, X):
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

    def _source(self, X, session) -> _Source:
        import dask

        if self._is_dataframe(X):
            return self._frame_source(X, session)
        values, mask, dims, names = self._arrays(X)
        offsets = None
        if not any(math.isnan(c) for c in values.chunks[0]):
            offsets = np.concatenate([[0], np.cumsum(values.chunks[0])]).astype(int).tolist()
        prepare = dask.delayed(_prepare_block, pure=False)
        blocks = [prepare(v, m, dims, names, self.device, i,
                          None if offsets is None else offsets[i])
                  for i, (v, m) in enumerate(zip(values.to_delayed().ravel(),
                                                 mask.to_delayed().ravel()))]
        return _Source(blocks, dims, names, values._meta if self.device == "auto" else None)

    def _frame_source(self, frame, session) -> _Source:
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
                "built: prefer pyarrow list dtypes, e.g. pd.ArrowDtype(pa.list_(pa.float32()))"
            )
        offsets = np.concatenate([[0], np.cumsum([part[0] for part in gathered])]).tolist()
        block = dask.delayed(_frame_block, pure=False)
        blocks = [block(p, columns, tuple(dims), self.device, i, offsets[i])
                  for i, p in enumerate(parts)]
        meta = None
        if self.device == "auto" and is_cudf(frame._meta):
            meta = "cuda"
        return _Source(blocks, tuple(dims), tuple(columns), meta)

    def _meta(self, like, ndim: int, dtype):
        """Empty array of the type a per-row dask output has: that of ``device`` when it is
        "cpu"/"cuda", else following ``like`` (an array's meta, or a device name)."""
        from dask.array.utils import meta_from_array

        if self.device != "auto":
            like = self.device
        if like is not None and not isinstance(like, str):
            return meta_from_array(like, ndim=ndim, dtype=dtype)
        try:
            return device_module(like or "cpu").empty((0,) * ndim, dtype=dtype)
        except ImportError:  # CuPy absent on the client: NumPy meta over CuPy chunks
            return np.empty((0,) * ndim, dtype=dtype)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, on_iteration=None):
        """Learn normalisation statistics and partial centres from distributed ``X``.

        on_iteration : optional ``callable(n_iter, inertia)`` run on the client after every
            Lloyd update (as ``lloyd_loop``'s hook).
        Returns self.
        """
        self._check_params()
        client = self._get_client()
        session = _Session(client, float(self.timeout))
        live = []  # lists of long-lived futures, released at once if the fit fails
        try:
            self._fit(X, session, live, on_iteration)
        except BaseException:
            # Emptying the lists releases their futures even while the traceback keeps the
            # frames alive. (Explicit Client.cancel is avoided: cancelling keys that other
            # released keys depend on trips an assertion in some scheduler versions.)
            for futures in live:
                futures.clear()
            raise
        self.client_ = client
        self._warn_uncarried()
        return self

    def _fit(self, X, session, live, on_iteration):
        client = session.client
        source = self._source(X, session)
        dims, names = source.dims, source.names
        raw = client.compute(source.blocks)
        live.append(raw)
        moments = session.result(
            session.reduce([session.submit(block_moments, r, dims) for r in raw],
                           merge_moments, dims),
            "normalisation statistics")
        counts, mean, m2, block_rows, devices = moments
        if len(devices) > 1:
            raise TypeError("partitions mix NumPy and CuPy chunks; use device='cpu' or 'cuda'")
        n_samples = int(sum(block_rows))
        if n_samples == 0:
            raise ValueError("empty input: X has 0 rows")
        unobserved = np.flatnonzero(counts == 0)
        if unobserved.size:
            raise ValueError(f"modalities {[names[m] for m in unobserved]} are observed in no "
                             "training row")
        if self.n_clusters > n_samples:
            raise ValueError(
                f"n_clusters={self.n_clusters} is larger than the number of rows ({n_samples})"
            )
        scale = scale_from_moments(counts, m2, dims, self.ddof)
        stats = session.constant((mean, scale))
        rows = [session.submit(_normalise_block, r, stats, dims) for r in raw]
        live.append(rows)
        del raw, stats  # the rows keep their lineage (input block → statistics)
        live.pop(0)

        if isinstance(self.init, str):
            starts = self._seeds(session, rows, block_rows, dims, live)
        else:
            starts = iter([checked_centers(*self.init, dims, VALUE_DTYPE, device="cpu",
                                           n_clusters=self.n_clusters, argument="init centers")])
        best = None
        for run, (centers, centers_mask) in enumerate(starts):
            result = self._lloyd(session, rows, dims, centers, centers_mask, run, on_iteration,
                                 live)
            if best is None or result.inertia < best.inertia:
                best, result = result, best
            if result is not None:  # the losing run's labels: release them now
                live[:] = [futures for futures in live if futures is not result.assigned]
        labels = [session.submit(_labels_block, a) for a in best.assigned]

        import dask
        import dask.array as da

        meta = self._meta(next(iter(devices)) if source.meta is None else source.meta, 1,
                          np.int64)
        self.labels_ = da.concatenate([
            da.from_delayed(dask.delayed(f), shape=(n,), dtype=np.int64, meta=meta)
            for f, n in zip(labels, block_rows)
        ])
        self._labels_futures = labels
        self.mean_, self.scale_ = mean, scale
        self.cluster_centers_, self.centers_mask_ = best.centers, best.centers_mask
        self.inertia_, self.n_iter_ = best.inertia, best.n_iter
        self.dims_, self.modality_names_ = dims, names
        self.device_ = next(iter(devices))
        self.n_samples_fit_ = n_samples
        self.temperature_ = self._fit_temperature(session, rows, block_rows, live)

    def _fit_temperature(self, session, rows, block_rows, live) -> float:
        """``temperature_``: the given number, or for "auto" (with n_candidates > 1) the
        choice of ``UL4M4Imputer`` on a uniform sample of TEMPERATURE_SAMPLE_ROWS rows,
        made on a worker."""
        model = self._completion_model(temperature=None)
        if not model._needs_temperature_sample():
            model._fit_temperature(None)
            return model.temperature_
        samples = self._sample(session, rows, block_rows, TEMPERATURE_SAMPLE_ROWS,
                               checked_random_state(self.random_state), live)
        future = session.submit(_temperature_from_sample, model, tuple(self.dims_), *samples)
        return float(session.result(future, "choosing the completion temperature"))

    @staticmethod
    def _sample(session, rows, block_rows, size: int, rng, live) -> list:
        """Futures of (z, mask) pieces of a uniform sample of ``size`` rows (every row when
        there are no more), drawn with ``rng``."""
        n_samples = int(sum(block_rows))
        if size >= n_samples:
            samples = [r for r, n in zip(rows, block_rows) if n]
        else:
            picker = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
            index = np.sort(picker.choice(n_samples, size=size, replace=False))
            offsets = np.concatenate([[0], np.cumsum(block_rows)])
            samples = []
            for part, start, stop in zip(rows, offsets[:-1], offsets[1:]):
                local = index[(index >= start) & (index < stop)] - start
                if local.size:
                    samples.append(session.submit(_take_rows, part, local))
        live.append(samples)
        return samples

    def _seeds(self, session, rows, block_rows, dims, live):
        """Yield ``n_init`` k-means++ starts computed on a worker from a uniform sample."""
        rng = checked_random_state(self.random_state)
        size = self.seed_sample_size or max(MIN_SEED_SAMPLE,
                                            SEED_SAMPLE_PER_CENTER * self.n_clusters)
        samples = self._sample(session, rows, block_rows, size, rng, live)
        for run in range(self.n_init):
            future = session.submit(_seed_from_sample, dims, self.n_clusters, rng, *samples)
            centers, centers_mask, advanced = session.result(
                future, f"k-means++ seeding (run {run + 1}/{self.n_init})")
            rng.set_state(advanced.get_state())
            yield centers.astype(VALUE_DTYPE), centers_mask

    def _lloyd(self, session, rows, dims, centers, centers_mask, run, on_iteration, live) -> _Run:
        """``lloyd_loop`` over the partitions; only (K, D)-sized summaries reach the client."""
        k = self.n_clusters
        label = f"k-means run {run + 1}/{self.n_init}"

        def step(centers, centers_mask, previous, n_iter):
            broadcast = session.constant((centers, centers_mask))
            assigned = [session.submit(_assign_block, r, broadcast, dims, self.batch_size)
                        for r in rows]
            live.append(assigned)
            previous = previous or [None] * len(rows)
            stats = [session.submit(_block_update_stats, r, a, p, k, dims)
                     for r, a, p in zip(rows, assigned, previous)]
            total = session.result(session.reduce(stats, _sum_stats),
                                   f"{label}, iteration {n_iter}")
            return assigned, total

        state = {"assigned": None}

        def assignment_pass(centers, centers_mask, n_iter):
            previous = state["assigned"]
            state["assigned"], total = step(centers, centers_mask, previous, n_iter)
            if previous is not None:  # the previous labels are no longer needed
                live[:] = [futures for futures in live if futures is not previous]
            return total

        centers, centers_mask, total, n_iter = lloyd_over_passes(
            assignment_pass, np.asarray(centers, dtype=VALUE_DTYPE).copy(),
            np.asarray(centers_mask, dtype=bool), dims, self.max_iter, self.tol, desc=label,
            verbose=self.verbose, on_iteration=on_iteration)
        return _Run(centers, centers_mask, state["assigned"], total, n_iter)

    def _uncarried(self) -> list[str]:
        carried = self.centers_mask_.any(axis=0)
        return [self.modality_names_[m] for m in np.flatnonzero(~carried)]

    def _warn_uncarried(self) -> None:
        uncarried = self._uncarried()
        if uncarried:
            warnings.warn(
                f"no centre carries modalities {uncarried}; their missing slots will be "
                "filled with the training mean", UserWarning, stacklevel=3,
            )

    # ------------------------------------------------------------------ completion
    def _completion_model(self, temperature="fitted") -> UL4M4Imputer:
        """The fitted single-machine model (host arrays, no labels) shipped to the blocks,
        with ``temperature_`` this estimator's, or ``temperature`` (None: not yet chosen)."""
        model = self._local_estimator(device="cpu")
        model.device_ = "cpu"
        model.cluster_centers_, model.centers_mask_ = self.cluster_centers_, self.centers_mask_
        model.mean_, model.scale_ = self.mean_, self.scale_
        model.dims_, model.modality_names_ = tuple(self.dims_), tuple(self.modality_names_)
        model.n_iter_, model.inertia_ = self.n_iter_, self.inertia_
        model.temperature_ = self.temperature_ if temperature == "fitted" else temperature
        return model

    def transform(self, X):
        """Fill every missing modality of distributed ``X`` (lazy).

        Returns, for array input, a :class:`DaskMultiModalArray` (values (N, D) float32 with
        the observed values unchanged, mask all True, imputed = the input's ~mask) with the
        input's row chunks; for a dask DataFrame, a dask DataFrame with the modality columns
        completed as ``list<float32>`` columns (other columns and the index kept). Each block
        is completed by ``UL4M4Imputer.transform`` with the fitted centres, so the result
        equals ``self.to_local().transform`` on the gathered data.
        """
        import dask
        import dask.array as da

        self._check_fitted()
        model = dask.delayed(self._completion_model(), name=f"ul4m4-model-{uuid.uuid4().hex}")
        if self._is_dataframe(X):
            _check_column_labels(X)
            missing = [n for n in self.modality_names_ if n not in X.columns]
            if missing:
                raise ValueError(f"X lacks the modality columns {missing} seen in fit")
            return X.map_partitions(_complete_frame, model, tuple(self.modality_names_),
                                    tuple(self.dims_), self.device,
                                    meta=_completed_meta(X._meta, self.modality_names_))
        values, mask, dims, names = self._arrays(X)
        if dims != tuple(self.dims_):
            raise ValueError(f"X has modality dims {dims} but the imputer was fitted on "
                             f"{tuple(self.dims_)}")
        like = values._meta
        completed = da.map_blocks(
            _complete_block, values, mask, model, dims, names, self.device,
            dtype=VALUE_DTYPE, chunks=values.chunks,
            meta=self._meta(like, 2, VALUE_DTYPE), name=f"ul4m4-complete-{uuid.uuid4().hex}")
        bool_meta = self._meta(mask._meta, 2, bool)
        imputed = mask.map_blocks(_missing_block, self.device, dtype=bool, meta=bool_meta)
        observed = mask.map_blocks(_all_true_block, self.device, dtype=bool, meta=bool_meta)
        return DaskMultiModalArray(completed, observed, dims, names, imputed)

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    # ------------------------------------------------------------------ local model
    def to_local(self, device: str | None = None, labels: bool = True) -> UL4M4Imputer:
        """A plain fitted :class:`UL4M4Imputer` with the same centres and statistics (it can
        ``transform`` and ``save``). ``device`` defaults to this estimator's; ``labels``
        gathers ``labels_`` to it (within ``timeout``)."""
        from ..core.backend import resolve_device

        self._check_fitted()
        model = self._local_estimator(device=device or self.device)
        model.device_ = resolve_device(model.device)
        for name in ("cluster_centers_", "centers_mask_", "mean_", "scale_"):
            setattr(model, name, to_device(getattr(self, name), model.device_))
        model.dims_, model.modality_names_ = tuple(self.dims_), tuple(self.modality_names_)
        model.n_iter_, model.inertia_ = self.n_iter_, self.inertia_
        model.temperature_ = self.temperature_
        if labels:
            session = _Session(self.client_, float(self.timeout))
            gathered = session.result(self.client_.compute(self.labels_), "gathering labels_")
            model.labels_ = to_device(to_numpy(gathered), model.device_)
        return model

    def save(self, path) -> None:
        """Write the fitted model as a :class:`UL4M4Imputer` file (``UL4M4Imputer.load``)."""
        self.to_local(device="cpu").save(path)
