"""``ul4m4 fit`` / ``ul4m4 impute`` on a dask.distributed cluster (``--workers N`` or
``--scheduler ADDRESS``), with :class:`~ul4m4_gpu.scale.dask_imputer.DaskUL4M4Imputer`.

Parquet input, opened by the one Parquet reader (:class:`~ul4m4_gpu.io.parquet.ParquetDataset`:
a file or a directory, hive-partitioned or not), becomes a dask DataFrame whose partitions
are runs of consecutive row groups of one file (about ``PARTITION_BYTES`` each, as
``dask.dataframe.read_parquet`` sizes them), each read on a worker by pyarrow into
pyarrow-backed columns (list columns stay lists). Every column of the files is a plain
column, a pandas index stored in them included, and so is every partition key
(passthrough, as in the in-memory and ``--stream`` paths; ``dask.dataframe.read_parquet``
would make a stored index the index, and fails when asked for it as a column). The output
is written partition by partition, with the schema of the other paths
(:func:`~ul4m4_gpu.io.files.output_schema`). ``.npz`` input is read whole and split into
row chunks. Both are completed block by block with each block's completion report
(:meth:`~ul4m4_gpu.scale.dask_imputer.DaskUL4M4Imputer.transform_blocks`), whose sum
``impute`` prints like the other modes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator

import numpy as np

from ..io.data import MultiModalArray
from .common import imputer_params, load_model, print_filled, print_fitted, progress_enabled
from ..io.files import (
    InputFileError,
    atomic_write,
    flag_names,
    output_schema,
    read_table,
    write_table,
)

#: Result partitions a distributed ``impute`` keeps in flight while writing the output.
WRITE_WINDOW = 4
#: Uncompressed bytes of the row groups read into one partition of Parquet input, at least
#: (a row group is never split; a partition never spans files); dask's default blocksize.
PARTITION_BYTES = 256 * 2**20


@contextlib.contextmanager
def _dask_client(args):
    """A distributed.Client to ``--scheduler``, or to a LocalCluster of ``--workers``
    processes that lives as long as the command.

    Cluster logs below CRITICAL are silenced, here and in the local workers: a failed task
    reaches the user as the command's one-line error, not also as the worker's "Compute
    Failed" traceback. The local scheduler serves no dashboard, and its HTTP server (which
    it starts even then, on port 8787 by default) listens on a free loopback port."""
    from distributed import Client, LocalCluster

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        if args.scheduler is not None:
            with Client(args.scheduler, timeout="10s", set_as_default=False) as client:
                yield client
        else:
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              host="127.0.0.1", dashboard_address="127.0.0.1:0",
                              scheduler_kwargs={"dashboard": False},
                              silence_logs=logging.CRITICAL) as cluster, \
                    Client(cluster, set_as_default=False) as client:
                yield client
    finally:
        quiet.setLevel(level)


def _dask_model(args, client):
    from ..scale.dask_imputer import DaskUL4M4Imputer

    return DaskUL4M4Imputer(**imputer_params(args), client=client)


def run_dask_command(args, fit_only: bool) -> None:
    """``fit`` / ``impute`` on a dask.distributed cluster."""
    from ..io.files import input_format

    if not args.input.exists():
        raise InputFileError(f"cannot read {args.input}: no such file or directory")
    try:
        parquet = input_format(args.input) == "parquet"
    except ValueError as error:
        raise InputFileError(f"cannot read {args.input}: {error}") from None
    source = table = None
    if args.scheduler is not None:
        _check_scheduler_address(args.scheduler)
    if parquet:
        from ..io.parquet import ParquetDataset

        source = ParquetDataset.open(args.input)
        if source.n_rows == 0 and (fit_only or args.model is None):
            raise InputFileError(f"cannot read {args.input}: the data set has 0 rows")
    else:
        table = read_table(args.input, device="cpu")
    with _dask_client(args) as client:
        if parquet:
            _dask_parquet(args, client, source, fit_only)
        else:
            _dask_npz(args, client, table, fit_only)


def _check_scheduler_address(address: str) -> None:
    """Raise ``ValueError`` naming ``--scheduler`` for an address distributed cannot parse
    (no port, say), before a Client is built: a half-built Client waits out its timeout."""
    from distributed.comm import resolve_address

    try:
        resolve_address(address)
    except ValueError as error:
        raise ValueError(f"--scheduler {address!r}: {error}") from None


def _fit_or_load(args, client, X, fit_only):
    if fit_only or args.model is None:
        model = _dask_model(args, client).fit(X)
        if fit_only:
            model.save(args.output)
            print_fitted(args, model.n_samples_fit_, model.n_iter_, model.inertia_)
        return model
    from ..scale.dask_imputer import DaskUL4M4Imputer

    return DaskUL4M4Imputer.from_local(load_model(args), client)


def _dask_npz(args, client, table, fit_only):
    """An .npz input (read whole, as its format requires) split in row chunks."""
    import dask.array as da

    from ..core.backend import to_numpy

    data = table.data
    chunks = (args.batch_rows or max(1, -(-data.n_samples // (4 * _n_workers(client)))), -1)
    X = (da.from_array(to_numpy(data.values), chunks=chunks),
         da.from_array(to_numpy(data.mask), chunks=chunks), data.dims, data.names)
    model = _fit_or_load(args, client, X, fit_only)
    if fit_only:
        return
    blocks = [future.result(timeout=model.timeout)
              for future in client.compute(model.transform_blocks(X))]
    mask = to_numpy(data.mask)
    completed = MultiModalArray(np.concatenate([values for values, _ in blocks]),
                                np.ones_like(mask), data.dims, data.names, imputed=~mask)
    write_table(table, completed, args.output)
    print_filled(args, int((~mask).sum()), data.n_samples,
                 _total(report for _, report in blocks))


def _total(reports):
    """The sum of the blocks' completion reports (an empty block's None left out); None
    when every block was empty."""
    reports = [report for report in reports if report is not None]
    return functools.reduce(operator.add, reports) if reports else None


def _n_workers(client) -> int:
    try:
        return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    except Exception:
        return 1


def _parquet_frame(source):
    """A dask DataFrame of the columns ``source.order`` of a
    :class:`~ul4m4_gpu.io.parquet.ParquetDataset`, in data set order: one partition per
    run of row groups (:meth:`~ul4m4_gpu.io.parquet.ParquetDataset.row_group_runs` of
    ``PARTITION_BYTES``), read by :func:`_read_run`; one empty partition when the files
    hold no row group."""
    import dask.dataframe as dd
    import pandas as pd

    columns = list(source.order)
    meta = source.schema.empty_table().select(columns).to_pandas(types_mapper=pd.ArrowDtype,
                                                                 ignore_metadata=True)
    runs = source.row_group_runs(PARTITION_BYTES)
    if not runs:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(_read_run, runs, columns=columns, meta=meta,
                       label="read-parquet-row-groups")


def _read_run(run, columns):
    """One partition: the ``columns`` of a :class:`~ul4m4_gpu.io.parquet.RowGroupRun` as
    pyarrow-backed pandas columns with a RangeIndex, the file's pandas metadata ignored.
    Raises :class:`InputFileError` naming the file."""
    import pandas as pd

    return run.read(columns).to_pandas(types_mapper=pd.ArrowDtype, ignore_metadata=True)


def _dask_parquet(args, client, source, fit_only):
    """Parquet input as :func:`_parquet_frame`; the output is written partition by
    partition, in order, with the schema of the in-memory and streamed outputs."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from ..core.progress import tqdm

    frame = _parquet_frame(source)
    model = _fit_or_load(args, client, frame[list(source.modalities)], fit_only)
    if fit_only:
        return
    names = list(source.modalities)
    flags = flag_names(names)
    meta = frame._meta.assign(**{flag: pd.Series([], dtype=bool) for flag in flags})
    flagged = frame.map_partitions(_with_flag_columns, names, meta=meta)
    parts = model.transform_blocks(flagged)
    schema = output_schema(source.schema, source.order, names)
    counts, reports = [0], []

    def write(tmp):
        with pq.ParquetWriter(str(tmp), schema) as writer, \
                tqdm(total=len(parts), desc="imputing partitions", unit="part", leave=False,
                     disable=not progress_enabled(args)) as bar:
            pending = [client.compute(p) for p in parts[:WRITE_WINDOW]]
            for i in range(len(parts)):
                if i + WRITE_WINDOW < len(parts):
                    pending.append(client.compute(parts[i + WRITE_WINDOW]))
                part, report = pending.pop(0).result(timeout=model.timeout)
                reports.append(report)
                out = pa.Table.from_pandas(part, preserve_index=False)
                out = out.select(list(schema.names)).cast(schema)
                counts[0] += sum(int(pc.sum(out.column(flag)).as_py() or 0) for flag in flags)
                writer.write_table(out)
                bar.update(1)

    atomic_write(args.output, write)
    print_filled(args, counts[0], source.n_rows, _total(reports))


def _with_flag_columns(frame, names):
    """One partition plus the flag columns of the modalities ``names``
    (:func:`~ul4m4_gpu.io.files.flag_names`, bool): True where the modality's cell is null
    (missing) before completion."""
    return frame.assign(**{flag: frame[name].isna().to_numpy(dtype=bool)
                           for name, flag in zip(names, flag_names(names))})
