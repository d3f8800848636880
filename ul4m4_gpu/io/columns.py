"""Column groups of a plain 2-D input: which columns of an (N, D) array or a wide DataFrame
form each modality (the ``modalities`` parameter of the imputer and the fusion estimators)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from ..core.validation import check_int, default_modality_names


def _is_int(value) -> bool:
    """True for a Python or NumPy integer, False for a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_widths(spec) -> tuple | None:
    """``spec`` as a tuple when it is a non-empty list of ints (modality widths), else None."""
    if isinstance(spec, (Mapping, str, bytes)) or not np.iterable(spec):
        return None
    items = tuple(spec)
    return items if items and all(map(_is_int, items)) else None


def check_modalities_kind(modalities, argument: str = "modalities") -> None:
    """Raise ``ValueError`` naming ``argument`` unless ``modalities`` is None or of a kind
    :func:`modality_columns` takes: a non-empty list of ints (widths), a dict with string
    keys, or a non-empty list of lists (column positions). What the entries hold is checked
    against the input's columns by :func:`modality_columns`."""
    if modalities is None or as_widths(modalities) is not None:
        return
    if isinstance(modalities, Mapping):
        if modalities and all(isinstance(key, str) for key in modalities):
            return
    elif not isinstance(modalities, (str, bytes)) and np.iterable(modalities):
        groups = list(modalities)
        if groups and all(np.iterable(g) and not isinstance(g, (str, bytes, Mapping))
                          for g in groups):
            return
    raise ValueError(f"{argument} must be None, a list of modality widths, a list of "
                     "column-position lists or a dict name -> columns, got "
                     f"{modalities!r}")


def string_labels(labels) -> np.ndarray | None:
    """(D,) object array of the column labels when all are strings, else None."""
    if labels is None or not all(isinstance(label, str) for label in labels):
        return None
    return np.asarray(labels, dtype=object)


def _positions(columns, n_columns: int, where: str) -> np.ndarray:
    """Column positions ``columns`` as a (d,) int64 array; ``ValueError`` naming ``where``."""
    positions = np.asarray(columns)
    if positions.ndim != 1 or positions.size == 0 or positions.dtype.kind not in "iu":
        raise ValueError(f"{where} must be a non-empty list of column positions (ints), got "
                         f"{columns!r}; a dict name -> column labels names a DataFrame's columns")
    outside = positions[(positions < 0) | (positions >= n_columns)]
    if outside.size:
        raise ValueError(f"{where} holds column {outside[0]}, out of range for X's "
                         f"{n_columns} columns")
    return positions.astype(np.int64)


def _label_positions(columns, labels, where: str) -> np.ndarray:
    """The (d,) int64 positions of the column labels ``columns`` (one label or a list)
    among a DataFrame's ``labels``; ``ValueError`` naming ``where``."""
    from pandas.api.types import is_list_like

    columns = list(columns) if is_list_like(columns) else [columns]
    if not columns:
        raise ValueError(f"{where} must name at least one column of X")
    if not labels.is_unique:
        raise ValueError(f"X's column labels are not unique, so {where} cannot name columns "
                         "by label")
    positions = labels.get_indexer(columns)
    if (positions < 0).any():
        missing = [column for column, position in zip(columns, positions) if position < 0]
        raise ValueError(f"{where} names columns that X does not have: {missing}")
    return positions.astype(np.int64)


def modality_columns(modalities, n_columns: int, labels=None, argument: str = "modalities",
                     cover: bool = True):
    """Which columns of a plain (N, D) input form each modality.

    Parameters
    ----------
    modalities : one of
        - a list of M positive ints, the widths of consecutive column blocks (summing to D);
        - a list of M lists of column positions (ints in [0, D));
        - a dict of M modality names (strings) → their columns: column labels when
          ``labels`` is given (a DataFrame's), column positions otherwise.
        No column may belong to two modalities.
    n_columns : int, D.
    labels : (D,) ``pandas.Index`` of column labels, or None.
    argument : the argument's name, for error messages.
    cover : every column must belong to a modality (False: columns in none are left out,
        a DataFrame's passthrough columns).

    Returns
    -------
    columns : tuple of M (d_m,) int64 arrays, the positions of each modality's columns, in
        the order given.
    names : tuple of M strings, the dict's keys, else ``m0``, ``m1``, ...

    Raises ``ValueError`` naming ``argument`` (and the offending entry) for another kind of
    value, an empty modality, a column out of range or not in X, a column in two modalities
    (or twice in one), a column in none, or widths that do not sum to D.
    """
    widths = as_widths(modalities)
    if widths is not None:
        widths = tuple(check_int(f"{argument}[{m}]", width, 1) for m, width in enumerate(widths))
        if sum(widths) != n_columns:
            raise ValueError(f"{argument} {list(widths)} sum to {sum(widths)} but X has "
                             f"{n_columns} columns")
        ends = np.cumsum(widths)
        columns = tuple(np.arange(end - width, end) for width, end in zip(widths, ends))
        return columns, default_modality_names(len(columns))
    if isinstance(modalities, Mapping):
        wheres = []
        for key in modalities:
            if not isinstance(key, str):
                raise ValueError(f"{argument}' keys must be modality names (strings), got {key!r}")
            wheres.append(f"{argument}[{key!r}]")
        names = tuple(modalities)
        columns = tuple(_positions(cols, n_columns, where) if labels is None
                        else _label_positions(cols, labels, where)
                        for where, cols in zip(wheres, modalities.values()))
    else:
        if isinstance(modalities, (str, bytes)) or not np.iterable(modalities):
            check_modalities_kind(modalities, argument)  # raises
        groups = list(modalities)
        wheres = [f"{argument}[{m}]" for m in range(len(groups))]
        columns = tuple(_positions(group, n_columns, where) for where, group in zip(wheres, groups))
        names = default_modality_names(len(columns))
    if not columns:
        raise ValueError(f"{argument} must give at least one modality, got {modalities!r}")
    _check_partition(columns, wheres, n_columns, labels, argument, cover)
    return columns, names


def _check_partition(columns, wheres, n_columns: int, labels, argument: str,
                     cover: bool) -> None:
    """``ValueError`` unless each of the ``n_columns`` columns is in at most one of
    ``columns`` (the modalities ``wheres`` name), and in one when ``cover``."""
    counts = np.bincount(np.concatenate(columns), minlength=n_columns)
    shown = (lambda c: int(c)) if labels is None else (lambda c: labels[c])
    if (counts > 1).any():
        column = int(np.argmax(counts > 1))
        holders = [where for where, cols in zip(wheres, columns) if column in cols]
        raise ValueError(f"{argument} overlap: column {shown(column)!r} is given "
                         f"{counts[column]} times (in {', '.join(holders)})")
    unused = np.flatnonzero(counts == 0)
    if cover and unused.size:
        raise ValueError(f"{argument} leave {unused.size} of X's columns in no modality, e.g. "
                         f"column {shown(unused[0])!r}; every column must belong to one modality")
