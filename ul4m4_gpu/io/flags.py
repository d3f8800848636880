"""The imputed flags: what the writers add to an output to say which slots were imputed,
and the one rule by which the readers drop an earlier output's flags (and nothing else).

Written (:mod:`ul4m4_gpu.io.files`): in ``.npz``, an ``imputed`` (N, M) bool array; in
Parquet, one ``bool`` column per modality m, ``imputed_<m>`` (:func:`flag_names`). Older
versions wrote a Parquet ``imputed`` column of ``list<bool>`` (M entries a row).

Dropped on read, as the new output holds new flags: exactly those. An npz ``imputed``
array of another dtype or shape, and a Parquet ``imputed_<m>`` column of another type for a
modality m, are refused (the output could not hold both under that name); any other
column, a Parquet ``imputed`` column of strings say, is the user's and passes through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

#: The npz output's (N, M) bool flags; in Parquet, the ``list<bool>`` flag column of older
#: versions.
IMPUTED_KEY = "imputed"
#: The Parquet output's flag column of modality ``m`` is ``IMPUTED_PREFIX + m``.
IMPUTED_PREFIX = "imputed_"


def flag_names(modalities) -> tuple[str, ...]:
    """The Parquet output's flag column of each modality: ``imputed_<name>``, in order."""
    return tuple(f"{IMPUTED_PREFIX}{name}" for name in modalities)


def is_legacy_flag_column(name: str, kind: pa.DataType) -> bool:
    """Whether the Parquet column ``name`` of type ``kind`` is the ``imputed`` flag column
    of older versions: named ``imputed``, a list (any list layout) of bool."""
    import pyarrow as pa

    return (name == IMPUTED_KEY and (pa.types.is_list(kind) or pa.types.is_large_list(kind)
                                     or pa.types.is_fixed_size_list(kind))
            and pa.types.is_boolean(kind.value_type))


def parquet_flag_columns(schema: pa.Schema, modalities) -> list[str]:
    """The columns of ``schema`` an earlier output wrote as flags, to drop on read: the
    legacy ``imputed`` column (:func:`is_legacy_flag_column`) and, for each of the
    ``modalities`` (column names), a ``bool`` column ``imputed_<m>``. Raises
    ``ValueError`` for an ``imputed_<m>`` column of another type, naming it."""
    import pyarrow as pa

    found = [field.name for field in schema if is_legacy_flag_column(field.name, field.type)]
    for name, flag in zip(modalities, flag_names(modalities)):
        if flag in schema.names:
            kind = schema.field(flag).type
            if not pa.types.is_boolean(kind):
                raise ValueError(f"column {flag!r} holds {kind}, but the output writes the "
                                 f"bool imputed flags of modality {name!r} under that name; "
                                 "rename it")
            found.append(flag)
    return found


def check_npz_flags(flags: np.ndarray, n_rows: int, n_modalities: int) -> None:
    """Raise ``ValueError`` unless the npz array ``imputed`` of a file with ``n_rows`` rows
    and ``n_modalities`` modalities is an earlier output's flags, (N, M) bool (the output
    writes its own under that name)."""
    if flags.dtype != bool or flags.shape != (n_rows, n_modalities):
        raise ValueError(f"array {IMPUTED_KEY!r} holds {flags.dtype} of shape {flags.shape}, "
                         f"but the output writes the ({n_rows}, {n_modalities}) bool imputed "
                         "flags under that name; rename it")
