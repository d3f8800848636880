"""Reading and writing the user data files of the ``ul4m4`` command line, also public as
:func:`ul4m4_gpu.read_table` and :func:`ul4m4_gpu.write_table`.

Input formats
-------------
``.npz``
    One 2-D numeric (N, d_m) array per modality; optional ``mask``, (N, M) bool, True where
    observed (without it, a row that is NaN in every feature of a modality is missing);
    optional ``modalities``, a 1-D string array naming the modality keys in order. Without
    ``modalities``, every 2-D float/int array other than ``mask`` and ``imputed`` is a
    modality, in file order. Every other array (ids, labels, 1-D or string arrays) is
    passthrough, written back unchanged.
Parquet
    A ``.parquet`` file, or a directory of ``.parquet`` files read as one data set in sorted
    relative path order, hive-partitioned subdirectories (``year=2024/part-0.parquet``, at
    any depth) included, their keys read as extra passthrough columns after the files' own
    (the layout of :mod:`ul4m4_gpu.io.parquet`, the one Parquet reader). Every column of
    lists of numbers (list, large_list or fixed_size_list of integers or floats) is a
    modality, null where missing; every other column, lists of booleans or strings
    included, is passthrough (the rule of :mod:`ul4m4_gpu.io.list_columns`, for every
    reader).

Output (:func:`write_table`)
----------------------------
The input's format, with every modality filled, in its original position and under its
original name (npz: (N, d_m) float32 arrays; parquet: ``list<float>`` columns), the
passthrough arrays/columns unchanged, and flags saying which slots were imputed: in npz a
last ``imputed`` (N, M) bool array; in parquet one last ``bool`` column per modality, named
``imputed_<modality>`` (:func:`flag_names`), in modality order (:func:`output_schema`, the
one schema of the in-memory, streamed and Dask outputs). No ``mask`` is written. The flags
of an earlier output, and only those, are dropped on read, as the output holds new ones
(the rule of :mod:`ul4m4_gpu.io.flags`): an npz ``imputed`` (N, M) bool array; a parquet
``imputed`` column of ``list<bool>`` (older versions) and every bool ``imputed_<modality>``
column of a modality of the file. Every output is written to
``NAME.ul4m4-partial-XXXXXXXX.tmp`` beside it and renamed into place (:func:`atomic_write`):
a failed or interrupted write leaves nothing; only a process killed outright (SIGKILL, a
power cut) can leave that temporary file behind.
"""

from __future__ import annotations

import errno
import math
import os
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..core.backend import resolve_device, to_numpy
from .data import MultiModalArray
from .file_errors import READ_ERRORS, InputFileError, OutputFileError, one_line
from .flags import IMPUTED_KEY, check_npz_flags, flag_names
from .parquet import ParquetDataset

if TYPE_CHECKING:
    import pyarrow as pa

MASK_KEY = "mask"
MODALITIES_KEY = "modalities"


@dataclass
class Table:
    """A data file read into memory.

    data : the modalities, packed; their names are the npz keys / parquet column names.
    passthrough : everything else, to be written back unchanged. npz: ``{key: array}``;
        parquet: a ``pyarrow.Table`` of the other columns, carrying the file's schema
        metadata.
    fmt : ``"npz"`` or ``"parquet"``, the format the output must have too.
    order : the names of the modalities and passthrough entries in file order (without
        ``mask`` and an earlier output's flags); the output keeps this order and appends
        the flags.
    path : the file or directory that was read.
    """

    data: MultiModalArray
    passthrough: dict[str, np.ndarray] | pa.Table
    fmt: Literal["npz", "parquet"]
    order: tuple[str, ...]
    path: Path


# ---------------------------------------------------------------------------- reading
def read_table(path, device: str = "cpu", widths=None) -> Table:
    """Read an ``.npz`` file, a ``.parquet`` file or a directory of ``.parquet`` files
    (hive-partitioned or not) into memory, as the ``ul4m4`` command line does; see the
    module docstring for the layouts.

    device : ``"auto"``, ``"cpu"`` or ``"cuda"``, where ``Table.data`` lives.
    widths : optional ``{name: d_m}`` (a fitted model's), so that a Parquet modality column
        may be null in every row.

    Returns a :class:`Table`: ``.data``, a :class:`~ul4m4_gpu.io.data.MultiModalArray` of
    the N rows and M modalities (values (N, D) float32, NaN where missing; mask (N, M)
    bool, True where observed), and ``.passthrough``, the other columns (a
    ``pyarrow.Table`` of N rows for Parquet, partition keys included; ``{key: array}`` for
    npz). Raises :class:`InputFileError`, a ``ValueError`` with a one-line message naming
    the file and the problem, for any problem with the file.

    Example::

        table = ul4m4_gpu.read_table("data/")          # a directory of .parquet files
        imputer = ul4m4_gpu.UL4M4Imputer(n_clusters=64).fit(table.data)
        ul4m4_gpu.write_table(table, imputer.transform(table.data), "completed.parquet")
    """
    path = Path(path)
    device = resolve_device(device)
    try:
        if not path.exists():
            raise FileNotFoundError("no such file or directory")
        if input_format(path) == "npz":
            return _read_npz(path, device)
        return _read_parquet(path, device, widths)
    except InputFileError:
        raise
    except READ_ERRORS as exc:
        raise InputFileError(f"cannot read {path}: {one_line(exc)}") from exc


def input_format(path: Path) -> str:
    """``"npz"`` or ``"parquet"`` from the suffix of an existing path (a directory is parquet)."""
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return "parquet"
    if suffix == ".npz":
        return "npz"
    raise ValueError(
        f"unknown format {path.suffix or '(no suffix)'!r}; expected a .npz file, a .parquet "
        "file or a directory of .parquet files"
    )


def _read_npz(path: Path, device: str) -> Table:
    """Read an ``.npz`` file; see the module docstring for the layout."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not an .npz archive (the file is not a zip file)")
    arrays = load_npz_arrays(path)
    mask = arrays.pop(MASK_KEY, None)
    flags = arrays.pop(IMPUTED_KEY, None)
    names = _npz_modality_names(arrays)
    if flags is not None:
        check_npz_flags(flags, len(arrays[names[0]]), len(names))
    data = MultiModalArray.from_modalities([arrays[n] for n in names], mask=mask, names=names,
                                           device=device)
    passthrough = {key: a for key, a in arrays.items() if key not in names}
    return Table(data, passthrough, "npz", tuple(arrays), path)


#: Most bytes deflate expands one compressed byte to (its limit is about 1032:1).
MAX_DEFLATE_RATIO = 1032


def load_npz_arrays(path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, ``{key: array}`` in archive order (key: the
    member name without ``.npy``), loaded without pickle.

    Each member's ``.npy`` header is read first (:mod:`numpy.lib.format`) and the array is
    allocated only when its claimed size, shape × itemsize, is what the member holds and
    what the archive can hold: no more than its compressed bytes (stored) or
    :data:`MAX_DEFLATE_RATIO` times them (deflated), which no more than the archive's size.
    Raises ``ValueError`` naming the member for a member that is not a ``.npy`` array, an
    object array (pickle), a header claiming more than that (a corrupt or crafted file),
    and an array that does not fit in memory (never ``MemoryError``).
    """
    archive_size = os.path.getsize(path)
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                shape, dtype, header_size = _npy_header(member, key)
            _check_npy_size(info, key, shape, dtype, header_size, archive_size)
            try:
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
            except MemoryError:
                raise ValueError(f"array {key!r} of shape {shape} and dtype {dtype} "
                                 f"({_size(_nbytes(shape, dtype))}) does not fit in memory"
                                 ) from None
    return arrays


def _npy_header(member, key: str):
    """(shape, dtype, header bytes) of an ``.npy`` member, read without its data."""
    try:
        version = np.lib.format.read_magic(member)
    except ValueError:
        raise ValueError(f"member {key!r} is not a NumPy .npy array") from None
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"array {key!r}: unsupported .npy format version {version}")
    try:
        shape, _, dtype = readers[version](member)
    except ValueError as exc:
        raise ValueError(f"array {key!r}: {exc}") from None
    if dtype.hasobject:
        raise ValueError(f"array {key!r}: object arrays need pickle, which is not allowed")
    return shape, dtype, member.tell()


def _nbytes(shape, dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _check_npy_size(info: zipfile.ZipInfo, key: str, shape, dtype, header_size: int,
                    archive_size: int) -> None:
    """Raise ``ValueError`` unless the member ``info`` holds exactly the array its header
    describes and the archive can hold that member (see :func:`load_npz_arrays`)."""
    nbytes = _nbytes(shape, dtype)
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO
    capacity = min(info.compress_size, archive_size) * ratio
    if header_size + nbytes > capacity:
        reason = f"the file ({_size(archive_size)}) can hold at most {_size(capacity)} for it"
    elif header_size + nbytes != info.file_size:
        reason = f"the member holds {_size(max(info.file_size - header_size, 0))} of data"
    else:
        return
    raise ValueError(f"array {key!r}: its header claims shape {shape} of {dtype} "
                     f"({_size(nbytes)}), but {reason} (a corrupt or crafted file)")


def _size(n_bytes: int) -> str:
    """``"3.6 TiB"``: a byte count for a message."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024


def _npz_modality_names(arrays: dict[str, np.ndarray]) -> list[str]:
    """The modality keys: those listed in ``modalities``, else every 2-D float/int array."""
    if MODALITIES_KEY not in arrays:
        names = [key for key, a in arrays.items() if a.ndim == 2 and a.dtype.kind in "iuf"]
        if not names:
            raise ValueError(
                "no 2-D numeric array to read as a modality (expected arrays of shape "
                "(n_samples, n_features))"
            )
        return names
    listed = arrays[MODALITIES_KEY]
    if listed.ndim != 1 or listed.dtype.kind not in "US":
        raise ValueError(
            f"{MODALITIES_KEY!r} must be a 1-D array of strings, got dtype {listed.dtype} "
            f"and shape {listed.shape}"
        )
    names = [str(name) for name in listed.astype(str)]
    for name in names:
        if name == MODALITIES_KEY or name not in arrays or arrays[name].ndim != 2:
            raise ValueError(f"{MODALITIES_KEY!r} lists {name!r}, which is not a 2-D array "
                             "of the file")
    return names


def _read_parquet(path: Path, device: str, widths) -> Table:
    """Read a parquet file or directory with :class:`~ul4m4_gpu.io.parquet.ParquetDataset`."""
    dataset = ParquetDataset.open(path)
    if dataset.n_rows == 0:
        raise ValueError("the data set has 0 rows")
    table = dataset.read()
    names = list(dataset.modalities)
    data = MultiModalArray.from_arrow(table, columns=names, device=device, widths=widths)
    return Table(data, table.drop_columns(names), "parquet", dataset.order, path)


# ---------------------------------------------------------------------------- writing
def write_table(table: Table, completed: MultiModalArray, path) -> None:
    """Write ``completed`` with the passthrough of ``table`` to ``path``, atomically.

    completed : the filled modalities of ``table.data`` (same rows, names and dims; on any
        device). Its ``imputed`` (N, M) bool is written as the flags (npz: ``imputed``;
        parquet: one ``imputed_<modality>`` bool column per modality); when it is ``None``
        the slots missing in ``table.data`` are marked imputed.
    path : a file with the input's suffix (``.npz`` or ``.parquet``), else
        :class:`OutputFileError`. The file is written to a temporary name in the same
        directory and renamed into place, so a failed write leaves no partial file.
    """
    path = Path(path)
    _check_output(table, completed, path)
    imputed = to_numpy(~table.data.mask if completed.imputed is None else completed.imputed)
    if table.fmt == "npz":
        arrays = _npz_output(table, completed, imputed)
        atomic_write(path, lambda tmp: _save_npz(tmp, arrays))
    else:
        import pyarrow.parquet as pq

        schema = output_schema(table.passthrough.schema, table.order, table.data.names)
        output = parquet_output(table.passthrough, completed, imputed, schema)
        atomic_write(path, lambda tmp: pq.write_table(output, str(tmp)))


def check_output_path(path, fmt: str | None = None, like=None) -> Path:
    """``path`` as a ``Path`` if a file can be written there: its directory exists and is
    writable (as far as ``os.access`` tells), it is not itself a directory, and its suffix is ``.fmt`` when ``fmt`` (``"npz"`` or
    ``"parquet"``) is given, the format of the input ``like``. Else raises
    :class:`OutputFileError` naming ``path`` (one line). Check before long work."""
    path = Path(path)
    if fmt is not None and path.suffix.lower() != f".{fmt}":
        raise OutputFileError(
            f"cannot write {path}: the output must be a .{fmt} file like the input "
            f"{like}, got suffix {path.suffix or '(none)'!r}"
        )
    if not path.parent.is_dir():
        raise OutputFileError(f"cannot write {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise OutputFileError(f"cannot write {path}: it is a directory")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputFileError(f"cannot write {path}: directory {path.parent} is not writable")
    return path


def _check_output(table: Table, completed: MultiModalArray, path: Path) -> None:
    """Raise when ``path`` or ``completed`` does not fit ``table``."""
    check_output_path(path, table.fmt, table.path)
    expected = (table.data.n_samples, table.data.names, table.data.dims)
    got = (completed.n_samples, completed.names, completed.dims)
    if got != expected:
        raise ValueError(
            f"completed data (rows, names, dims) = {got} do not match {table.path} {expected}"
        )


def _npz_output(table: Table, completed: MultiModalArray, imputed: np.ndarray) -> dict:
    """``{key: array}`` to save: filled float32 modalities and passthrough in file order,
    then ``imputed`` (N, M) bool."""
    filled = dict(zip(completed.names, completed.to_numpy()))
    arrays = {key: filled[key] if key in filled else table.passthrough[key] for key in table.order}
    arrays[IMPUTED_KEY] = imputed
    return arrays


def _save_npz(file: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save ``arrays`` as an uncompressed ``.npz``, like ``np.savez``, which cannot take the
    keys ``file`` or ``allow_pickle``."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def output_schema(fields: pa.Schema, order, modalities) -> pa.Schema:
    """The schema of the Parquet output, the same in memory, streamed and on Dask: the
    columns ``order`` (input order), each modality of ``modalities`` as ``list<float>``
    and the others as in ``fields`` (the input's schema, whose metadata it keeps), then one
    ``bool`` column per modality, :func:`flag_names` of ``modalities``: True where that
    modality of the row was imputed."""
    import pyarrow as pa

    columns = [pa.field(name, pa.list_(pa.float32())) if name in modalities
               else fields.field(name) for name in order]
    flags = [pa.field(flag, pa.bool_()) for flag in flag_names(modalities)]
    return pa.schema(columns + flags, metadata=fields.metadata)


def parquet_output(passthrough: pa.Table, completed: MultiModalArray, imputed: np.ndarray,
                   schema: pa.Schema) -> pa.Table:
    """The rows to write, with the :func:`output_schema` ``schema``: the filled modalities
    of ``completed`` as ``list<float>``, the other columns from ``passthrough`` (same
    rows), and the flag column of modality m from ``imputed[:, m]`` ((N, M) bool, the
    modalities in the order of ``completed.names``)."""
    import pyarrow as pa

    filled = completed.to_arrow()
    flags = dict(zip(flag_names(completed.names), np.ascontiguousarray(imputed.T)))
    columns = [filled.column(name) if name in completed.names
               else pa.array(flags[name]) if name in flags
               else passthrough.column(name) for name in schema.names]
    return pa.Table.from_arrays(columns, schema=schema)


#: Name of the temporary file an output is written to, beside it, before it is renamed
#: into place (:func:`atomic_write`), e.g. ``out.npz.ul4m4-partial-3f9c0a1b.tmp``.
PARTIAL_NAME = "{name}.ul4m4-partial-{token}.tmp"


#: ``errno`` values of a write that failed for want of room or of a working disk (a full
#: file system, a quota, a file size limit, an I/O error, a read-only file system): such a
#: failure while an output is written is an :class:`OutputFileError` naming the output.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def atomic_write(path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a new temporary file beside ``path`` (:data:`PARTIAL_NAME`),
    then rename it to ``path``; on any failure, an interruption included (``KeyboardInterrupt``
    or any other ``BaseException``), remove the temporary file and re-raise.

    Creating the temporary file or renaming it (a read-only directory, say), and an
    ``OSError`` of :data:`DISK_ERRNOS` raised by ``write`` (a full disk), raise
    :class:`OutputFileError` naming ``path``, not the temporary name. A process killed
    outright while writing (SIGKILL, a power cut) cannot remove it: such a leftover
    ``NAME.ul4m4-partial-XXXXXXXX.tmp`` is an incomplete output, safe to delete."""
    path = Path(path)
    tmp = path.with_name(PARTIAL_NAME.format(name=path.name, token=uuid.uuid4().hex[:8]))
    try:  # an interruption right after the file is created removes it too
        try:
            tmp.touch(exist_ok=False)
        except OSError as error:
            raise _cannot_write(path, error) from None
        try:
            write(tmp)
        except OSError as error:
            if error.errno not in DISK_ERRNOS:
                raise
            raise _cannot_write(path, error) from None
        try:
            os.replace(tmp, path)
        except OSError as error:
            raise _cannot_write(path, error) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cannot_write(path: Path, error: OSError) -> OutputFileError:
    """``cannot write PATH: No space left on device``: the reason from ``error.errno`` where
    it has one (pyarrow's message wraps it in its own words)."""
    reason = os.strerror(error.errno) if error.errno else one_line(error)
    return OutputFileError(f"cannot write {path}: {reason}")
