"""``ul4m4 fit`` / ``ul4m4 impute`` on a dask.distributed cluster (``--workers N`` or
``--scheduler ADDRESS``), with :class:`~ul4m4_gpu.distributed.DaskUL4M4Imputer`.

Parquet input is read with ``dask.dataframe.read_parquet(..., dtype_backend="pyarrow")`` so
list columns stay lists, and the output is written partition by partition; ``.npz`` input is
read whole and split into row chunks.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np

from .cli import load_model, print_filled, print_fitted, progress_enabled
from .estimator import UL4M4Imputer
from .io import InputFileError, atomic_write, read_table, write_table

#: Result partitions a distributed ``impute`` keeps in flight while writing the output.
WRITE_WINDOW = 4


@contextlib.contextmanager
def _dask_client(args):
    """A distributed.Client to ``--scheduler``, or to a LocalCluster of ``--workers``
    processes that lives as long as the command; cluster logs below ERROR are silenced."""
    from distributed import Client, LocalCluster

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        if args.scheduler is not None:
            with Client(args.scheduler, timeout="10s", set_as_default=False) as client:
                yield client
        else:
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                    Client(cluster, set_as_default=False) as client:
                yield client
    finally:
        quiet.setLevel(level)


def _dask_model(args, client):
    from .distributed import DaskUL4M4Imputer

    params = dict(n_clusters=args.k, random_state=args.seed, device=args.device,
                  verbose=int(progress_enabled(args)), client=client)
    if getattr(args, "max_iter", None) is not None:
        params["max_iter"] = args.max_iter
    return DaskUL4M4Imputer(**params)


def _dask_from_local(local: UL4M4Imputer, client):
    """A fitted DaskUL4M4Imputer with the centres and statistics of a loaded model."""
    from .backend import to_numpy
    from .distributed import DaskUL4M4Imputer

    params = {name: getattr(local, name) for name in local.get_params()}
    params["init"] = "k-means++" if not isinstance(local.init, str) else local.init
    model = DaskUL4M4Imputer(**params, client=client)
    for name in ("cluster_centers_", "centers_mask_", "mean_", "scale_"):
        setattr(model, name, to_numpy(getattr(local, name)))
    model.dims_, model.modality_names_ = tuple(local.dims_), tuple(local.modality_names_)
    model.n_iter_, model.inertia_, model.device_ = local.n_iter_, local.inertia_, "cpu"
    model.client_ = client
    return model


def run_dask_command(args, fit_only: bool) -> None:
    """``fit`` / ``impute`` on a dask.distributed cluster."""
    from .io import input_format

    if not args.input.exists():
        raise InputFileError(f"cannot read {args.input}: no such file or directory")
    try:
        parquet = input_format(args.input) == "parquet"
    except ValueError as error:
        raise InputFileError(f"cannot read {args.input}: {error}") from None
    source = table = None
    if parquet:
        from .streaming import ParquetSource, check_parquet_output

        source = ParquetSource.open(args.input)
        if not fit_only:
            check_parquet_output(args.output, source)
    else:
        table = read_table(args.input, device="cpu")
    with _dask_client(args) as client, warnings.catch_warnings():
        # dask's own parquet reader trips a pandas deprecation warning: not the user's concern
        warnings.filterwarnings("ignore", message="The inplace keyword", module="dask")
        if parquet:
            _dask_parquet(args, client, source, fit_only)
        else:
            _dask_npz(args, client, table, fit_only)


def _fit_or_load(args, client, X, fit_only):
    if fit_only or args.model is None:
        model = _dask_model(args, client).fit(X)
        if fit_only:
            atomic_write(args.output, model.save)
            print_fitted(args, model.n_samples_fit_, model.n_iter_, model.inertia_)
        return model
    return _dask_from_local(load_model(args), client)


def _dask_npz(args, client, table, fit_only):
    """An .npz input (read whole, as its format requires) split in row chunks."""
    import dask.array as da

    from .backend import to_numpy

    data = table.data
    chunks = (args.batch_rows or max(1, -(-data.n_samples // (4 * _n_workers(client)))), -1)
    X = (da.from_array(to_numpy(data.values), chunks=chunks),
         da.from_array(to_numpy(data.mask), chunks=chunks), data.dims, data.names)
    model = _fit_or_load(args, client, X, fit_only)
    if fit_only:
        return
    completed = model.transform(X).compute(client=client, timeout=model.timeout)
    write_table(table, completed, args.output)
    print_filled(args, int((~to_numpy(data.mask)).sum()), data.n_samples)


def _n_workers(client) -> int:
    try:
        return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    except Exception:
        return 1


def _dask_parquet(args, client, source, fit_only):
    """Parquet input through ``dask.dataframe.read_parquet`` with pyarrow dtypes (list
    columns stay lists); the output is written partition by partition, in order."""
    import dask.dataframe as dd
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from .io import IMPUTED_KEY
    from .streaming import output_schema

    frame = dd.read_parquet([str(f) for f in source.files], columns=list(source.order),
                            dtype_backend="pyarrow")
    model = _fit_or_load(args, client, frame[list(source.modalities)], fit_only)
    if fit_only:
        return
    names = list(source.modalities)
    flags_type = pd.ArrowDtype(pa.list_(pa.bool_()))
    meta = frame._meta.assign(**{IMPUTED_KEY: pd.Series([], dtype=flags_type)})
    flagged = frame.map_partitions(_with_imputed_flags, names, meta=meta)
    parts = model.transform(flagged).to_delayed()
    schema = output_schema(source)
    counts = [0]

    def write(tmp):
        with pq.ParquetWriter(str(tmp), schema) as writer, \
                tqdm(total=len(parts), desc="imputing partitions", unit="part", leave=False,
                     disable=not progress_enabled(args)) as bar:
            pending = [client.compute(p) for p in parts[:WRITE_WINDOW]]
            for i in range(len(parts)):
                if i + WRITE_WINDOW < len(parts):
                    pending.append(client.compute(parts[i + WRITE_WINDOW]))
                part = pending.pop(0).result(timeout=model.timeout)
                out = pa.Table.from_pandas(part, preserve_index=False)
                out = out.select(list(schema.names)).cast(schema)
                counts[0] += int(pc.sum(pc.list_flatten(out.column(IMPUTED_KEY))).as_py() or 0)
                writer.write_table(out)
                bar.update(1)

    atomic_write(args.output, write)
    print_filled(args, counts[0], source.n_rows)


def _with_imputed_flags(frame, names):
    """One partition plus an ``imputed`` list<bool> column: the modality cells that are
    null (missing) before completion."""
    import pandas as pd

    from .io import IMPUTED_KEY, bool_lists

    flags = (pd.concat([frame[name].isna() for name in names], axis=1).to_numpy(dtype=bool)
             if len(frame) else np.zeros((0, len(names)), dtype=bool))
    out = frame.copy()
    out[IMPUTED_KEY] = pd.Series(pd.arrays.ArrowExtensionArray(bool_lists(flags)),
                                 index=frame.index)
    return out
