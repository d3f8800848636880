"""``DaskUL4M4Imputer``: UL4M4 (docs/method.md) on a ``dask.distributed`` cluster.

The rows stay on the workers, split in row partitions (:mod:`ul4m4_gpu.scale.dask_partitions`);
only small per-partition summaries travel. Fit is the one fit of :mod:`ul4m4_gpu.core.fit`
over the partitions (:class:`~ul4m4_gpu.scale.dask_rows.DaskRows`): the same results as
``UL4M4Imputer`` from the same initial centres, and from k-means++ when the seed sample holds
every row (a uniform sample of ``seed_sample_size`` rows, drawn from the global row indices
so that it does not depend on the partitioning, is gathered to the client, which seeds on
it; chosen over k-means|| because it reuses the exact seeding code and is exact on small
data). Transform is embarrassingly parallel: every block runs the single-machine
``UL4M4Imputer.transform`` with the fitted :class:`~ul4m4_gpu.core.state.FittedState`.

Every wait on the cluster is bounded by ``timeout`` seconds and raises ``TimeoutError``
naming the step (e.g. "k-means run 1/1, iteration 3") rather than hanging
(:mod:`ul4m4_gpu.scale.dask_session`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import uuid

from sklearn.base import clone

from ..core.backend import VALUE_DTYPE, array_module, is_cudf, to_numpy
from ..core.completion import (
    CENTRE_COMPLETIONS,
    DEFAULT_COMPLETION,
    DEFAULT_MAX_DONORS,
    DEFAULT_N_CANDIDATES,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_N_PROBE,
    TEMPERATURE_SAMPLE_ROWS,
)
from ..core.fit import FitParams, default_seed_sample, fit
from ..core.state import FittedState
from ..core.validation import check_int
from ..estimator import UL4M4Base, UL4M4Imputer
from ..io.data import MultiModalArray
from ..io.inputs import append_indicators
from ..io.list_columns import with_filled_columns
from .dask_partitions import (
    DaskInput,
    DaskMultiModalArray,
    _completed_meta,
    _frame_block,
    _in_partition,
    _move,
    _prepare_block,
    block_device,
    grouped_meta,
    output_meta,
    partitions_of,
    read_dask_input,
)
from .dask_rows import DaskRows
from .dask_session import Session

__all__ = ["DaskMultiModalArray", "DaskUL4M4Imputer"]


def _timeout(value) -> None:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {value!r}")


# ---------------------------------------------------------------------------- worker tasks
def _local_model(model, device: str) -> UL4M4Imputer:
    """The single-machine imputer of ``model`` = (FittedState, parameters, input
    attributes) on ``device`` (a block's)."""
    state, params, attributes = model
    local = UL4M4Imputer.from_state(state, **{**params, "device": device, "verbose": 0})
    local.__dict__.update(attributes)
    return local


def _block_location(block_info):
    """(index, first global row or None) of the block ``dask.array.map_blocks`` describes in
    ``block_info`` ("?" and None in a direct call)."""
    if block_info is None:
        return "?", None
    start = block_info[0]["array-location"][0][0]
    return block_info[0]["chunk-location"][0], None if math.isnan(start) else int(start)


def _complete_block(values, mask, model, dims, names, device, block_info=None,
                    return_report=False):
    """Completed (n, D) float32 values of one block of ``(values, mask)`` arrays:
    ``UL4M4Imputer.transform`` on it; with ``return_report``, ``(values, report)``, the
    block's :class:`~ul4m4_gpu.core.completion.CompletionReport` (None for an empty
    block)."""
    index, offset = _block_location(block_info)
    values, mask = _prepare_block(values, mask, dims, names, device, index, offset)
    if values.shape[0] == 0:
        return (values, None) if return_report else values
    local = _local_model(model, block_device(values, device))
    completed, report = local.transform(MultiModalArray(values, mask, dims, names),
                                        return_report=True)
    return (completed.values, report) if return_report else completed.values


def _missing_block(mask, device):
    return ~_move(mask, device)


def _all_true_block(mask, device):
    mask = _move(mask, device)
    return array_module(mask).ones(mask.shape, dtype=bool)


def _complete_grouped(block, model, device, meta, block_info=None, partition_info=None):
    """One row block of a 2-D array, or one partition of a DataFrame of numeric columns,
    completed by ``UL4M4Imputer.transform`` (its output follows the block's type: an array
    of the same kind, a DataFrame with its index and other columns); ``meta`` is the empty
    result of an empty block."""
    if block.shape[0] == 0:
        return meta
    if partition_info is not None:
        index, offset = partition_info["number"], None
    else:
        index, offset = _block_location(block_info)
    with _in_partition(index, offset, local=True):
        return _local_model(model, block_device(block, device)).transform(block)


def _complete_frame(frame, model, columns, dims, device, add_indicator, partition_info=None,
                    return_report=False):
    """One DataFrame partition with its modality list columns completed (other columns and
    the index kept), typed as :func:`~ul4m4_gpu.io.list_columns.with_filled_columns` says,
    then the bool indicators when ``add_indicator``. ``partition_info`` (filled by
    ``map_partitions``; None in a direct call: "?") numbers the partition in errors; its
    global rows are not known without a pass over the partitions' lengths. With
    ``return_report``, ``(partition, report)`` (None for an empty partition)."""
    index = "?" if partition_info is None else partition_info["number"]
    values, mask = _frame_block(frame, list(columns), tuple(dims), device, index)
    if values.shape[0] == 0:
        empty = _completed_meta(frame, columns, add_indicator)
        return (empty, None) if return_report else empty
    local = _local_model(model, block_device(values, device))
    completed, report = local.transform(MultiModalArray(values, mask, dims, columns),
                                        return_report=True)
    out = with_filled_columns(frame, completed.to_arrow(), columns)
    if add_indicator:
        append_indicators(out, columns, ~mask if is_cudf(out) else to_numpy(~mask))
    return (out, report) if return_report else out


# ---------------------------------------------------------------------------- the estimator
class DaskUL4M4Imputer(UL4M4Base):
    """UL4M4 on a ``dask.distributed`` cluster; the results of :class:`UL4M4Imputer` from the
    same initial centres (and from k-means++ when the seed sample holds every row).

    Parameters
    ----------
    n_clusters, max_iter, tol, n_init, init, random_state, batch_size, ddof, verbose,
    completion, n_candidates, temperature, n_neighbors, n_probe, max_donors
        As for :class:`UL4M4Imputer` (``init`` may be a (centers, centers_mask) pair of
        normalised (K, D) values and (K, M) bool). ``batch_size`` bounds the rows of one
        partition processed at once on a worker.
        completion="ridge", "knn" and "auto" are not yet available here (fit refuses them).
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

    modalities : None, list of ints, list of lists of ints, or dict name → columns
        As for :class:`UL4M4Imputer`: which columns of a 2-D dask array or of a dask
        DataFrame of numeric columns form each modality (None: each column its own).
    add_indicator : bool, default False
        Append the (N, M) missing-modality indicators to the output of a 2-D array or a
        DataFrame, named ``missingindicator_<modality>``.

    Input ``X`` (fit and transform), and what ``transform`` returns (the input's type, as
    :class:`UL4M4Imputer`'s ``output_type="input"``; the observed values bit for bit):

    * a 2-D dask array (NumPy or CuPy chunks), NaN where missing, split by ``modalities``
      → a dask array of the same chunk type and row chunks, (N, D [+ M]), float (float64
      for integers);
    * a dask DataFrame of numeric columns (its other columns pass through) → a dask
      DataFrame with the same index, columns and dtypes, the modality columns filled;
    * a dask DataFrame with one list column per modality (null = missing): pyarrow-backed
      list columns (``pd.ArrowDtype(pa.list_(...))``), or object columns of lists when
      dask's ``dataframe.convert-string`` option was off as the frame was built
      (otherwise dask turns them into strings). Column labels must be strings. As in
      Parquet files (:mod:`ul4m4_gpu.io.files`), every column of lists of numbers is a
      modality; other columns, lists of strings or booleans included, are ignored by fit
      and passed through by transform → a dask DataFrame with every modality column as
      ``list<float32>``. With ``modalities=None``, a frame whose meta holds a list-typed
      or object column is read this way, else by its numeric columns;
    * a tuple ``(values, mask, dims)`` or ``(values, mask, dims, names)`` of dask arrays
      chunked by rows (values (N, D) float, mask (N, M) bool with the same row chunks) or
      a :class:`DaskMultiModalArray` → a :class:`DaskMultiModalArray` (values (N, D)
      float32, mask all True, ``imputed`` the input's ~mask) on ``device``.

    Attributes
    ----------
    cluster_centers_ (K, D) float32, centers_mask_ (K, M) bool, mean_, scale_ (D,) float64:
    NumPy arrays on the client, same meaning as :class:`UL4M4Imputer`'s. labels_ : (N,) int64
    dask array (kept on the workers). n_iter_, inertia_, dims_, modality_names_; device_:
    "cpu" or "cuda", where the partitions were; n_samples_fit_: N; n_features_in_,
    feature_names_in_: as :class:`UL4M4Imputer`'s.
    """

    _parameter_checks = {**UL4M4Base._parameter_checks, "timeout": _timeout,
                         "add_indicator": UL4M4Imputer._parameter_checks["add_indicator"],
                         "seed_sample_size": lambda value: check_int(
                             "seed_sample_size", value, allow_none=True)}

    def __init__(self, n_clusters=64, max_iter=100, tol=1e-6, n_init=1, init="k-means++",
                 random_state=None, device="auto", batch_size=None, ddof=0, verbose=0,
                 completion=DEFAULT_COMPLETION, n_candidates=DEFAULT_N_CANDIDATES,
                 temperature="auto", n_neighbors=DEFAULT_N_NEIGHBORS, n_probe=DEFAULT_N_PROBE,
                 max_donors=DEFAULT_MAX_DONORS, modalities=None, add_indicator=False,
                 client=None, timeout=600, seed_sample_size=None):
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
        self.n_neighbors = n_neighbors
        self.n_probe = n_probe
        self.max_donors = max_donors
        self.modalities = modalities
        self.add_indicator = add_indicator
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

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, on_iteration=None):
        """Learn normalisation statistics and partial centres from distributed ``X``.

        on_iteration : optional ``callable(n_iter, inertia)`` run on the client after every
            Lloyd update (as ``lloyd_loop``'s hook).
        Returns self.
        """
        self._check_params()
        if self.completion not in CENTRE_COMPLETIONS:
            raise ValueError(f"completion={self.completion!r} is not yet available with "
                             "DaskUL4M4Imputer (--workers); use one of "
                             f"{CENTRE_COMPLETIONS} or fit in memory")
        client = self._get_client()
        session = Session(client, float(self.timeout))
        inp = read_dask_input(X, self.modalities)
        rows = DaskRows(session, partitions_of(inp, self.device, session), self.device,
                        self.batch_size)
        params = FitParams.of(self, seed_sample_size=self.seed_sample_size or
                              default_seed_sample(self.n_clusters),
                              temperature_sample_size=TEMPERATURE_SAMPLE_ROWS)
        try:
            state = fit(rows, params, on_iteration)
        except BaseException:
            # Dropping the source's futures releases them even while the traceback keeps
            # the frames alive. (Explicit Client.cancel is avoided: cancelling keys that
            # other released keys depend on trips an assertion in some scheduler versions.)
            rows.release()
            raise
        self._apply_state(state)
        self._check_features(inp.features, sum(state.dims),
                             inp.feature_names(state.dims, state.names), reset=True)
        self.device_, self.n_samples_fit_, self.client_ = rows.rows_device, rows.n_rows, client
        return self

    # ------------------------------------------------------------------ completion
    def _completion_model(self):
        """What the blocks complete with (:func:`_local_model`): the fitted state (host
        arrays, no labels), the single-machine parameters and the input attributes."""
        return (self.fitted_state(labels=False).to("cpu", labels=False), self._local_params(),
                self._input_attributes())

    def transform(self, X):
        """Fill every missing modality of distributed ``X`` (lazy).

        Returns the input's type (see the class docstring) with the input's row chunks or
        partitions. Each block is completed by ``UL4M4Imputer.transform`` with the fitted
        centres, so the result equals ``self.to_local().transform`` on the gathered data.
        """
        inp, model = self._prepare_transform(X)
        if inp.kind in ("matrix", "frame"):
            return self._transform_grouped(inp, model)
        if inp.kind == "list-frame":
            meta = _completed_meta(X._meta, self.modality_names_, self.add_indicator)
            return X.map_partitions(_complete_frame, model, tuple(self.modality_names_),
                                    tuple(self.dims_), self.device, self.add_indicator,
                                    meta=meta)
        return self._transform_arrays(inp, model)

    def _prepare_transform(self, X):
        """What every transform starts with: the checks (fitted, features, the list
        columns or the dims of the fit, the stale ``temperature_`` warning), ``X`` read
        (:func:`~ul4m4_gpu.scale.dask_partitions.read_dask_input`) and the delayed model
        the blocks complete with."""
        import dask

        self._check_fitted()
        self._warn_stale_temperature()  # the blocks complete with the state's own rule
        inp = read_dask_input(X, self.modalities)
        self._check_features(inp.features, None, None, reset=False)
        if inp.kind == "list-frame":
            missing = [n for n in self.modality_names_ if n not in X.columns]
            if missing:
                raise ValueError(f"X lacks the modality columns {missing} seen in fit")
        if inp.kind == "arrays" and inp.dims != tuple(self.dims_):
            raise ValueError(f"X has modality dims {inp.dims} but the imputer was fitted on "
                             f"{tuple(self.dims_)}")
        model = dask.delayed(self._completion_model(), name=f"ul4m4-model-{uuid.uuid4().hex}")
        return inp, model

    def transform_blocks(self, X) -> list:
        """The completion of ``X`` block by block, each with its completion report, for a
        caller that writes the blocks as they come (``ul4m4 impute --workers``): a list of
        ``dask.delayed`` ``(block, report)``, one per row block of ``X`` in order, where
        ``block`` is what :meth:`transform` computes for those rows and ``report`` their
        :class:`~ul4m4_gpu.core.completion.CompletionReport` (None for an empty block; the
        reports of the blocks add up with ``+``). Computing a pair completes its block
        once.

        X : a dask DataFrame of list columns (a block: a pandas partition as
            :meth:`transform` returns it) or a ``(values, mask, dims[, names])`` tuple of
            dask arrays or a :class:`DaskMultiModalArray` (a block: its (n, D) float32
            completed values). Other inputs raise ``TypeError``.
        """
        import dask
        import numpy as np

        inp, model = self._prepare_transform(X)
        if inp.kind == "list-frame":
            complete = dask.delayed(_complete_frame, pure=True)
            return [complete(part, model, tuple(self.modality_names_), tuple(self.dims_),
                             self.device, self.add_indicator, {"number": i}, True)
                    for i, part in enumerate(X.to_delayed())]
        if inp.kind != "arrays":
            raise TypeError("transform_blocks takes a dask DataFrame of list columns or "
                            "(values, mask, dims, names) dask arrays; use transform for "
                            f"{inp.kind} input")
        values, mask, dims, names = inp.X
        complete = dask.delayed(_complete_block, pure=True)
        starts = np.concatenate([[0], np.cumsum(values.chunks[0])]).tolist()  # NaN: unknown
        width = int(values.shape[1])
        return [complete(v, m, model, dims, names, self.device,
                         {0: {"chunk-location": (i, 0),
                              "array-location": [(starts[i], starts[i + 1]), (0, width)]}},
                         True)
                for i, (v, m) in enumerate(zip(values.to_delayed()[:, 0],
                                               mask.to_delayed()[:, 0]))]

    def _transform_grouped(self, inp: DaskInput, model):
        """A "matrix" or "frame" input completed block by block, in its own type."""
        meta = grouped_meta(inp, self.add_indicator)
        if inp.kind == "frame":
            return inp.X.map_partitions(_complete_grouped, model, self.device, meta,
                                        meta=meta)
        return inp.X.map_blocks(_complete_grouped, model, self.device, meta,
                                chunks=(inp.X.chunks[0], (meta.shape[1],)), dtype=meta.dtype,
                                meta=meta, name=f"ul4m4-complete-{uuid.uuid4().hex}")

    def _transform_arrays(self, inp: DaskInput, model) -> DaskMultiModalArray:
        """``(values, mask, dims, names)`` arrays completed into a DaskMultiModalArray."""
        import dask.array as da

        values, mask, dims, names = inp.X
        completed = da.map_blocks(
            _complete_block, values, mask, model, dims, names, self.device,
            dtype=VALUE_DTYPE, chunks=values.chunks,
            meta=output_meta(self.device, values._meta, 2, VALUE_DTYPE),
            name=f"ul4m4-complete-{uuid.uuid4().hex}")
        bool_meta = output_meta(self.device, mask._meta, 2, bool)
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
        state = self.fitted_state(labels=False)
        if labels:
            session = Session(self.client_, float(self.timeout))
            gathered = session.result(self.client_.compute(self.labels_), "gathering labels_")
            state = dataclasses.replace(state, labels=to_numpy(gathered))
        local = UL4M4Imputer.from_state(state, **{**self._local_params(),
                                                  "device": device or self.device})
        local.__dict__.update(self._input_attributes())
        return local

    @classmethod
    def from_local(cls, local: UL4M4Imputer, client) -> "DaskUL4M4Imputer":
        """A fitted DaskUL4M4Imputer on ``client`` with the centres, statistics and
        parameters of a fitted (or loaded) single-machine imputer (an explicit ``init``
        becomes "k-means++": the model is fitted already)."""
        params = {name: value for name, value in local.get_params().items()
                  if name in cls._get_param_names()}
        params["init"] = params["init"] if isinstance(params["init"], str) else "k-means++"
        model = cls(**params, client=client)
        model._apply_state(local.fitted_state(labels=False).to("cpu", labels=False))
        model.__dict__.update(local._input_attributes())
        model.device_, model.client_ = "cpu", client
        return model

    def save(self, path) -> None:
        """Write the fitted model as a :class:`UL4M4Imputer` file (``UL4M4Imputer.load``)."""
        self.to_local(device="cpu").save(path)
