"""Out-of-core UL4M4 on a Parquet dataset: fit and transform without loading it whole.

The dataset is a ``.parquet`` file or a directory of ``.parquet`` files, hive-partitioned
subdirectories (``year=2024/part-0.parquet``) included, opened and read by the one Parquet
reader, :class:`~ul4m4_gpu.io.parquet.ParquetDataset` (exported here as
:class:`ParquetSource`; its docstring gives the layout: every column of lists of numbers
is a modality, null where missing; every other column, the partition keys included, is
passthrough; an earlier output's flag columns are dropped; rows in sorted relative file
path order). Each batch becomes a :class:`~ul4m4_gpu.io.data.MultiModalArray` on the
estimator's device, is processed and dropped; its offset, the global number of its first
row, names the rows of an error. On the CPU, and on the GPU without cuDF, it is read
``batch_rows`` rows at a time with ``pyarrow.dataset``, file after file, and moved to the
device. On the GPU with cuDF installed, ``cudf.read_parquet`` decodes the modality columns
of one row group at a time straight into GPU memory, they are unpacked there
(:func:`~ul4m4_gpu.io.list_columns.cudf_list_to_dense`) and the row group is processed
``batch_rows`` rows at a time; the other (passthrough) columns are read on the host by
pyarrow, for transform only. What goes through the host: the labels (one int64 per row,
kept there), the per-batch statistics and the output written by transform.

Fit (:func:`fit_parquet`) is the one fit of :mod:`ul4m4_gpu.core.fit` over
:class:`ParquetRows`, a :class:`~ul4m4_gpu.core.sources.BatchedRows` source that reads the
dataset again on every pass:

1. **Pass 1: normalisation statistics.** Per batch and modality the
   :class:`~ul4m4_gpu.core.normalise.Moments` (count, mean, M2 in float64), added with Chan
   et al.'s parallel formula; the modality widths are learnt here.
2. **Seeding: sampled k-means++**, as ``DaskUL4M4Imputer``: a uniform sample of
   ``seed_sample_size`` rows drawn by global row index (default max(10000, 50·K)) is
   gathered and k-means++ runs on it. When the dataset has no more rows than the sample,
   the sample is every row in order and the seeds are exactly those of
   ``UL4M4Imputer.fit`` with the same ``random_state``. An explicit ``init`` is used as given.
3. **Lloyd iterations**: one streamed pass per iteration runs the fused assignment pass
   (:func:`~ul4m4_gpu.core.kmeans.assign_rows`) on every batch and adds up its
   :class:`~ul4m4_gpu.core.kmeans.ClusterStats` in float64 on the host. The labels are
   kept as one (N,) int64 host array — the only O(N) memory.

The result is a fitted plain ``UL4M4Imputer`` (save, transform, ...). When the seed sample
holds every row, or with an explicit ``init``, it equals the in-memory fit up to float
round-off (statistics and centre sums are accumulated in float64 batch by batch rather than
in one go); on larger data the sampled seeds, and so the fit, differ.

Transform (:func:`transform_parquet`) completes each batch with ``UL4M4Imputer.transform``
and appends it with a ``pyarrow.parquet.ParquetWriter`` to a temporary file beside the output,
renamed into place at the end (nothing is left behind on failure). The columns, their order,
types and the schema metadata are those of :func:`ul4m4_gpu.io.files.write_table`
(:func:`~ul4m4_gpu.io.files.output_schema`), ending with one ``imputed_<modality>`` bool
column per modality, and the values are those of the in-memory path.

Memory: besides the labels, the peak is a few (batch_rows, D) arrays, the (sample, D) seeding
sample and (K, D) statistics — independent of N. pyarrow decodes whole pages/row groups, so
write the dataset with row groups of a reasonable size. With cuDF a row group's modality
columns are held whole on the GPU, and cuDF caps a column at 2^31 − 1 values, so keep
rows per row group × d_m below that (e.g. under 2M rows of 1,024-dim embeddings).
"""

from __future__ import annotations

import functools
import operator
import warnings
from collections.abc import Callable

from ..core.progress import tqdm

from ..core.backend import array_module, device_module, resolve_device, to_device, to_numpy
from ..core.completion import CENTRE_COMPLETIONS, TEMPERATURE_SAMPLE_ROWS, CompletionWarning
from ..core.fit import FitParams, default_seed_sample, fit
from ..core.normalise import Moments
from ..core.sources import BatchedRows
from ..core.validation import check_finite_observed, check_int, in_fitted_order
from ..estimator import UL4M4Imputer
from ..io.data import MultiModalArray
from ..io.files import atomic_write, check_output_path, output_schema, parquet_output
from ..io.list_columns import arrow_list_to_dense, cudf_list_to_dense
from ..io.parquet import GpuBatch, ParquetDataset

#: Default rows per streamed batch.
DEFAULT_BATCH_ROWS = 65536

#: The Parquet reader, under the name this module has always exported
#: (``ParquetSource.open(path)``; attributes ``files``, ``schema``, ``modalities``,
#: ``order``, ``n_rows``, ``path``, ...).
ParquetSource = ParquetDataset

__all__ = ["ParquetSource", "fit_parquet", "transform_parquet", "DEFAULT_BATCH_ROWS"]


def _dense_column(batch, name: str, d: int | None, offset: int):
    """(n, d) float32 values (NaN where missing) and (n,) observed of one modality column of
    the batch starting at row ``offset``, NumPy for an Arrow batch and CuPy for a cuDF one;
    ``d`` None: learnt from the cells (None when all null). Observed values must be finite;
    errors name the rows in the data set."""
    n = len(batch)
    where = f"rows {offset}..{offset + n - 1}"
    on_gpu = isinstance(batch, GpuBatch)
    column = batch.modalities[name] if on_gpu else batch.column(name)
    if column.null_count == n and d is None:
        return None, device_module("cuda" if on_gpu else "cpu").zeros(n, dtype=bool)
    try:
        values, observed = (cudf_list_to_dense if on_gpu else arrow_list_to_dense)(column, name, d)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {error}") from None
    check_finite_observed(values, observed, name, first_row=offset)
    return values, observed


def _batch_data(batch, names, dims, device: str, offset: int) -> MultiModalArray:
    """The modalities of one batch as a validated MultiModalArray on ``device``."""
    parts = [_dense_column(batch, name, d, offset) for name, d in zip(names, dims)]
    xp = array_module(*(p[1] for p in parts))
    values = xp.concatenate([p[0] for p in parts], axis=1)
    mask = xp.stack([p[1] for p in parts], axis=1)
    return MultiModalArray(to_device(values, device), to_device(mask, device), dims, names)


# ---------------------------------------------------------------------------- fitting
class ParquetRows(BatchedRows):
    """The rows of a :class:`ParquetSource`, read ``batch_rows`` at a time on ``device`` on
    every pass: the row source (:mod:`ul4m4_gpu.core.sources`) of the streamed fit. The
    modality widths are learnt by :meth:`moments` (a column may be null in whole batches);
    ``progress`` (a tqdm bar) follows that first pass."""

    def __init__(self, source: ParquetSource, batch_rows: int, device: str,
                 batch_size: int | None = None, progress=None):
        self.source, self.batch_rows, self.progress = source, batch_rows, progress
        super().__init__(self._blocks, source.n_rows, None, source.modalities, device,
                         batch_size, where=str(source.path))

    def _blocks(self):
        for offset, batch in self.source.batches(self.batch_rows, self.rows_device,
                                                 self.names):
            data = _batch_data(batch, self.names, self.dims, self.rows_device, offset)
            yield offset, data.values, data.mask

    def moments(self) -> Moments:
        """Pass 1, modality by modality (a width is known once a batch observes it); a
        modality no row observes gets width 0 (the fit then names it)."""
        dims = [None] * len(self.names)
        parts = [None] * len(self.names)
        n_empty = 0
        for offset, batch in self.source.batches(self.batch_rows, self.rows_device,
                                                 self.names):
            observed_any = None
            for m, name in enumerate(self.names):
                values, observed = _dense_column(batch, name, dims[m], offset)
                observed_any = observed if observed_any is None else observed_any | observed
                if values is None:
                    continue
                dims[m] = values.shape[1]
                part = Moments.of(values, observed[:, None], (dims[m],))
                parts[m] = part if parts[m] is None else parts[m] + part
            n_empty += int((~observed_any).sum())
            if self.progress is not None:
                self.progress.update(len(batch))
        self.dims = tuple(0 if d is None else int(d) for d in dims)
        parts = [Moments.empty((0,)) if p is None else p for p in parts]
        return Moments.side_by_side(parts, self.n_rows, n_empty)


def fit_parquet(path, imputer: UL4M4Imputer, batch_rows: int = DEFAULT_BATCH_ROWS,
                seed_sample_size: int | None = None,
                on_iteration: Callable[[int, float], None] | None = None) -> UL4M4Imputer:
    """Fit ``imputer`` (a :class:`UL4M4Imputer`, its parameters used as given) on the Parquet
    file or directory ``path``, streaming ``batch_rows`` rows at a time: the one fit of
    :mod:`ul4m4_gpu.core.fit` over :class:`ParquetRows`.

    seed_sample_size : rows sampled uniformly for k-means++ (default max(10000, 50·K)); with
        at least N rows the seeding is exactly ``UL4M4Imputer.fit``'s.
    on_iteration : optional ``callable(n_iter, inertia)`` after every Lloyd update.

    Sets the attributes ``UL4M4Imputer.fit`` sets (``cluster_centers_``, ``centers_mask_``,
    ``mean_``, ``scale_``, ``labels_`` (N,) int64 in dataset row order, ``n_iter_``,
    ``inertia_``, ``dims_``, ``modality_names_``, ``device_``, ``temperature_``, chosen on a
    uniform sample of 2,000 rows for ``"auto"``) and returns ``imputer``.
    Raises :class:`~ul4m4_gpu.io.files.InputFileError` for unreadable input and
    ``ValueError`` as ``fit`` does.
    """
    batch_rows = check_int("batch_rows", batch_rows)
    check_int("seed_sample_size", seed_sample_size, allow_none=True)
    imputer._check_params()
    if imputer.completion not in CENTRE_COMPLETIONS:
        raise ValueError(f"completion={imputer.completion!r} is not yet available with the "
                         "streamed fit (--stream, fit_parquet); use one of "
                         f"{CENTRE_COMPLETIONS} or fit in memory")
    device = resolve_device(imputer.device)
    source = ParquetSource.open(path)
    params = FitParams.of(imputer, seed_sample_size=seed_sample_size or default_seed_sample(
        imputer.n_clusters), temperature_sample_size=TEMPERATURE_SAMPLE_ROWS)
    with tqdm(total=source.n_rows, desc="normalisation statistics", unit="row", leave=False,
              disable=not imputer.verbose) as progress:
        rows = ParquetRows(source, batch_rows, device, imputer.batch_size, progress)
        state = fit(rows, params, on_iteration)
    imputer.device_ = device
    return imputer._apply_state(state.to(device))


# ---------------------------------------------------------------------------- transform
def transform_parquet(path_in, path_out, imputer: UL4M4Imputer,
                      batch_rows: int = DEFAULT_BATCH_ROWS, return_report: bool = False):
    """Complete every missing modality of the Parquet file or directory ``path_in`` with the
    fitted ``imputer`` and write the ``.parquet`` file ``path_out`` batch by batch (atomic:
    a temporary file renamed at the end). Output columns as :func:`ul4m4_gpu.io.files.write_table`:
    :func:`~ul4m4_gpu.io.files.output_schema`, ending with the ``imputed_<modality>`` flags.

    Returns the number of imputed modality slots; with ``return_report``, also the
    :class:`~ul4m4_gpu.core.completion.CompletionReport` of the whole file (the sum over
    batches; None for a file of 0 rows): ``(filled, report)``. ``imputer`` is not changed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch_rows = check_int("batch_rows", batch_rows)
    imputer._check_fitted()
    source = ParquetSource.open(path_in)
    path_out = check_output_path(path_out, "parquet", source.path)
    names = source.modalities
    fitted_dims = dict(zip(in_fitted_order(names, imputer.modality_names_, str(source.path)),
                           imputer.dims_))
    dims = tuple(fitted_dims[name] for name in names)
    schema = output_schema(source.schema, source.order, names)
    filled = 0
    seen_warnings = set()
    reports = []

    def write(tmp):
        nonlocal filled
        with pq.ParquetWriter(str(tmp), schema) as writer, \
                tqdm(total=source.n_rows, desc="greedy completion (streamed)", unit="row",
                     leave=False, disable=not imputer.verbose) as bar:
            for offset, batch in source.batches(batch_rows, imputer.device_):
                data = _batch_data(batch, names, dims, imputer.device_, offset)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    completed, report = imputer.transform(data, return_report=True)
                reports.append(report)
                for w in caught:  # once per message for the whole dataset
                    if issubclass(w.category, CompletionWarning):
                        continue  # said once for the whole file, below
                    if str(w.message) not in seen_warnings:
                        seen_warnings.add(str(w.message))
                        warnings.warn(w.message, w.category, stacklevel=3)
                passthrough = (batch.passthrough if isinstance(batch, GpuBatch)
                               else batch.drop_columns(list(names)))
                imputed = to_numpy(completed.imputed)
                writer.write_table(parquet_output(passthrough, completed, imputed, schema))
                filled += int(imputed.sum())
                bar.update(len(batch))
            if source.n_rows == 0:
                writer.write_table(pa.Table.from_pylist([], schema=schema))

    atomic_write(path_out, write)
    report = functools.reduce(operator.add, reports) if reports else None
    if report is not None:
        imputer._warn_completion(report)
    return (filled, report) if return_report else filled
