"""The one reader of Parquet data sets, built on ``pyarrow.dataset``: the in-memory
:func:`~ul4m4_gpu.io.files.read_table`, the streamed fit and transform
(:mod:`ul4m4_gpu.scale.streaming`) and the Dask command line
(:mod:`ul4m4_gpu.cli.dask_commands`) all open their input with
:meth:`ParquetDataset.open` and read it through it.

Layout
------
A data set is a ``.parquet`` file or a directory. A directory's files are its ``*.parquet``
files and those of its hive-partitioned subdirectories, named ``KEY=VALUE`` at any depth
(``data/year=2024/month=1/part-0.parquet``); other files and other subdirectories are not
read. The rows come file by file in sorted relative path order, compared directory level
by directory level as strings (``month=10`` before ``month=2``), and in file order within
a file. Every file must have the same columns (names, types and order; the schema metadata
is the first file's).

The partition keys become columns after those of the files, typed as pyarrow's hive
discovery infers them from every directory name (``int32`` when every value is an integer,
else ``string``; ``KEY=__HIVE_DEFAULT_PARTITION__`` is null, as is the key of a file not
below such a directory), their values percent-decoded. A key cannot also be a column of the files. A
single file given directly has no partition keys, whatever its directory.

Columns: every column of the files typed as lists of numbers
(:func:`~ul4m4_gpu.io.list_columns.is_numeric_list_type`) is a modality; every other
column, the partition keys included, is passthrough. The flags an earlier output wrote, and
only those, are dropped (:func:`~ul4m4_gpu.io.flags.parquet_flag_columns`): an ``imputed``
column of ``list<bool>`` (older versions) and, for every modality ``m``, a ``bool`` column
``imputed_m``; an ``imputed_m`` of another type is refused, as the output could not hold
both.

Row order is the data set's everywhere: the fragments (one per file) are read one after the
other, never by a threaded scan of several, so a batch's offset is its first global row.
Every problem with a file raises :class:`~ul4m4_gpu.io.file_errors.InputFileError`, one line
naming the data set and, in a directory, the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ..core.backend import import_cudf
from .file_errors import READ_ERRORS, InputFileError, one_line
from .flags import parquet_flag_columns
from .list_columns import is_numeric_list_type


@dataclass(frozen=True)
class RowGroupRun:
    """Consecutive row groups of one file of a data set: a Dask partition, or one cuDF read.

    fragment : a ``pyarrow.dataset.ParquetFileFragment`` of those row groups (picklable, it
        carries its partition keys). schema : the data set's ``pyarrow.Schema``. where : the
        data set and, for a directory, the file, as error messages name them.
    """

    fragment: ds.ParquetFileFragment
    schema: pa.Schema
    where: str

    @property
    def groups(self) -> list[int]:
        """The row group numbers within the file."""
        return [group.id for group in self.fragment.row_groups]

    def read(self, columns) -> pa.Table:
        """The ``columns`` (names of :attr:`schema`) of these rows, in file order."""
        with _reading(self.where):
            return self.fragment.to_table(schema=self.schema, columns=list(columns))


@dataclass
class GpuBatch:
    """A batch read with cuDF: ``modalities``, a cuDF DataFrame of the modality columns on
    the GPU, and ``passthrough``, a ``pyarrow.Table`` of the other columns on the host (they
    never go through the GPU, whatever their types)."""

    modalities: object
    passthrough: pa.Table

    def __len__(self) -> int:
        return len(self.modalities)


@dataclass
class ParquetDataset:
    """A Parquet data set (see the module docstring for the layout), opened: its files'
    footers are read, nothing else.

    path : what was opened. files : the ``.parquet`` files, in row order (``Path``\\ s).
    fragments : one ``pyarrow.dataset.ParquetFileFragment`` per file, same order, knowing
    its partition keys (it reads its footer again when first scanned). schema : the ``pyarrow.Schema`` of the files' columns, then the
    partition keys; the first file's metadata. keys : the partition key names. modalities :
    the modality column names, in file order. order : every column of ``schema`` but an
    earlier output's flags, in schema order (what is read and written back). n_rows : the
    total number of rows.
    """

    path: Path
    files: list[Path]
    fragments: list[ds.ParquetFileFragment]
    schema: pa.Schema
    keys: tuple[str, ...]
    modalities: tuple[str, ...]
    order: tuple[str, ...]
    n_rows: int

    @classmethod
    def open(cls, path) -> ParquetDataset:
        """Open the ``.parquet`` file or the directory ``path``; raises
        :class:`~ul4m4_gpu.io.file_errors.InputFileError` (one line, naming the file) for any
        problem: none there, no ``.parquet`` file, an unreadable footer, files of different
        schemas, repeated column names, a partition key that is also a column, no modality
        column, a column named as a flag of the output but not ``bool``."""
        path = Path(path)
        try:
            files = _dataset_files(path)
            fragments, schema, keys, n_rows = _open_files(path, files)
            modalities = tuple(field.name for field in schema
                               if field.name not in keys and is_numeric_list_type(field.type))
            if not modalities:
                raise ValueError("no column of lists of numbers to read as a modality")
            dropped = set(parquet_flag_columns(schema, modalities))
            order = tuple(name for name in schema.names if name not in dropped)
        except READ_ERRORS as exc:
            raise InputFileError(f"cannot read {path}: {one_line(exc)}") from exc
        return cls(path, files, fragments, schema, keys, modalities, order, n_rows)

    def _where(self, file: Path) -> str:
        """The data set and, for a directory, ``file`` relative to it (error messages)."""
        return f"{self.path}: {_relative(self.path, file)}" if self.path.is_dir() else str(
            self.path)

    def read(self, columns=None) -> pa.Table:
        """The ``columns`` (default :attr:`order`) of every row, in data set order, as one
        ``pyarrow.Table`` (a chunk per file) with the schema metadata of :attr:`schema`."""
        columns = list(self.order if columns is None else columns)
        tables = []
        for file, fragment in zip(self.files, self.fragments):
            with _reading(self._where(file)):
                tables.append(fragment.to_table(schema=self.schema, columns=columns))
        return pa.concat_tables(tables)

    def batches(self, batch_rows: int, device: str = "cpu", columns=None) -> Iterator:
        """Yield ``(offset, batch)`` for non-empty batches of at most ``batch_rows`` rows of
        ``columns`` (default :attr:`order`) in data set order, ``offset`` being the global
        row number of the batch's first row. A batch is a ``pyarrow.Table`` on the host;
        when ``device`` is ``"cuda"`` and cuDF is installed, a :class:`GpuBatch`, its
        modality columns decoded on the GPU by ``cudf.read_parquet`` one row group at a time.
        A batch never spans two row groups."""
        cudf = import_cudf() if device == "cuda" else None
        columns = list(self.order if columns is None else columns)
        offset = 0
        for batch in (self._host_batches(columns, batch_rows) if cudf is None else
                      self._cudf_batches(cudf, columns, batch_rows)):
            yield offset, batch
            offset += len(batch)

    def _host_batches(self, columns: list[str], batch_rows: int) -> Iterator[pa.Table]:
        """Non-empty ``pyarrow.Table`` batches, file after file (one batch read ahead)."""
        for file, fragment in zip(self.files, self.fragments):
            with _reading(self._where(file)):
                for batch in fragment.to_batches(schema=self.schema, columns=columns,
                                                 batch_size=batch_rows, batch_readahead=1):
                    if batch.num_rows:
                        yield pa.Table.from_batches([batch])

    def _cudf_batches(self, cudf, columns: list[str], batch_rows: int) -> Iterator[GpuBatch]:
        """Non-empty :class:`GpuBatch` batches: one row group at a time, its modality
        columns read by cuDF on the GPU and the others by pyarrow on the host, sliced into
        ``batch_rows`` rows."""
        on_gpu = [c for c in columns if c in self.modalities]
        on_host = [c for c in columns if c not in self.modalities]
        for run in self.row_group_runs(0):
            with _reading(run.where):
                frame = cudf.read_parquet(run.fragment.path, columns=on_gpu,
                                          row_groups=run.groups, use_pandas_metadata=False)
            passthrough = run.read(on_host)
            for start in range(0, len(frame), batch_rows):
                yield GpuBatch(frame.iloc[start:start + batch_rows],
                               passthrough.slice(start, batch_rows))

    def row_group_runs(self, min_bytes: int) -> list[RowGroupRun]:
        """The row groups of every file, in data set order, cut into runs of consecutive
        ones of one file, each closed once it holds ``min_bytes`` uncompressed bytes (a row
        group is never split; with 0, every row group is a run of its own)."""
        runs = []
        for file, fragment in zip(self.files, self.fragments):
            with _reading(self._where(file)):
                groups = fragment.row_groups
            run, size = [], 0
            for i, group in enumerate(groups):
                run.append(group.id)
                size += group.total_byte_size
                if size >= min_bytes or i == len(groups) - 1:
                    runs.append(RowGroupRun(fragment.subset(row_group_ids=run), self.schema,
                                            self._where(file)))
                    run, size = [], 0
        return runs


@contextlib.contextmanager
def _reading(where: str):
    """Turn an error reading a file into :class:`InputFileError` naming ``where``."""
    try:
        yield
    except InputFileError:
        raise
    except (*READ_ERRORS, RuntimeError) as exc:  # cuDF's reader raises RuntimeError
        raise InputFileError(f"cannot read {where}: {one_line(exc)}") from exc


def _dataset_files(path: Path) -> list[Path]:
    """``[path]`` for a ``.parquet`` file, the files of a directory in row order."""
    if not path.exists():
        raise FileNotFoundError("no such file or directory")
    if not path.is_dir():
        if path.suffix.lower() != ".parquet":
            raise ValueError(f"Parquet only: expected a .parquet file or a directory of "
                             f".parquet files, got suffix {path.suffix or '(none)'!r}")
        return [path]
    files = _directory_files(path)
    if not files:
        raise ValueError("the directory holds no .parquet files")
    return files


def _directory_files(directory: Path) -> list[Path]:
    """The ``*.parquet`` files of ``directory`` and of its ``KEY=VALUE`` subdirectories (at
    any depth), in sorted relative path order."""
    files = []
    for entry in sorted(directory.iterdir(), key=lambda entry: entry.name):
        if entry.is_dir():
            if "=" in entry.name:
                files += _directory_files(entry)
        elif entry.name.endswith(".parquet"):
            files.append(entry)
    return files


def in_data_set(directory: Path, file: Path) -> bool:
    """Whether a ``.parquet`` ``file`` would be read as part of the data set ``directory``:
    it lies in it or in one of its ``KEY=VALUE`` subdirectories at any depth (paths
    resolved; the suffix compared in any case, to refuse more rather than less)."""
    try:
        parts = Path(file).resolve().relative_to(Path(directory).resolve()).parts
    except ValueError:
        return False
    return Path(file).suffix.lower() == ".parquet" and all("=" in part for part in parts[:-1])


def _relative(root: Path, file: Path) -> str:
    return file.relative_to(root).as_posix()


def _open_files(path: Path, files: list[Path]):
    """``(fragments, schema, keys, n_rows)`` of the data set ``path`` of ``files``: one
    ``ParquetFileFragment`` per file (same order) knowing its hive partition keys; the
    ``pyarrow.Schema`` of the files' common columns (:func:`_file_schema`, every footer
    read; the first file's metadata) followed by the partition keys, typed by pyarrow's
    hive discovery from every directory name; the key names (none for a single file); the
    total number of rows."""
    filesystem, parquet = pafs.LocalFileSystem(), ds.ParquetFileFormat()
    paths = [str(file.absolute()) for file in files]
    file_schema, n_rows = _file_schema(path, files, [parquet.make_fragment(p, filesystem)
                                                     for p in paths])
    options = (ds.FileSystemFactoryOptions(
        partition_base_dir=str(path.absolute()),
        partitioning=ds.HivePartitioning.discover(infer_dictionary=False))
        if path.is_dir() else ds.FileSystemFactoryOptions())
    factory = ds.FileSystemDatasetFactory(filesystem, paths, parquet, options)
    # The schema of the first file (read above), then that of the keys; unlike ``finish()``,
    # which would merge a key into a file column of the same name and type
    keys = factory.inspect_schemas()[-1]
    clashing = sorted(set(keys.names) & set(file_schema.names))
    if clashing:
        raise ValueError(f"partition keys {clashing} are also columns of the files")
    schema = pa.schema([*file_schema, *keys], metadata=file_schema.metadata)
    by_path = {fragment.path: fragment for fragment in factory.finish(schema).get_fragments()}
    return [by_path[p] for p in paths], schema, tuple(keys.names), n_rows


def _file_schema(path: Path, files: list[Path], fragments):
    """The common ``pyarrow.Schema`` of the files (the first one's metadata) and their total
    number of rows, from their footers; raises ``ValueError`` naming the file that cannot
    be read or whose schema differs, and for repeated column names."""
    schema, n_rows = None, 0
    for file, fragment in zip(files, fragments):
        name = _relative(path, file) if path.is_dir() else None
        try:
            fragment.ensure_complete_metadata()
            file_schema = fragment.physical_schema
        except READ_ERRORS as exc:
            raise ValueError(exc if name is None else f"{name}: {exc}") from exc
        if schema is None:
            schema = file_schema
        elif not file_schema.equals(schema, check_metadata=False):
            raise ValueError(f"{name}: its schema ({_describe(file_schema)}) differs from "
                             f"that of {_relative(path, files[0])} ({_describe(schema)})")
        n_rows += fragment.metadata.num_rows
    repeated = sorted({name for name in schema.names if schema.names.count(name) > 1})
    if repeated:
        raise ValueError(f"column names {repeated} appear more than once")
    return schema, n_rows


def _describe(schema: pa.Schema) -> str:
    """``"a: int64, b: list<element: float>"``: a schema on one line."""
    return ", ".join(f"{field.name}: {field.type}" for field in schema)

