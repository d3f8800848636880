"""Input checks shared by the container, the estimator and the low-level functions.

Each check raises early with a message that names the argument, the modality and the rows.
"""

from __future__ import annotations

import numbers

import numpy as np

from .backend import array_module, to_numpy

_MAX_ROWS_LISTED = 5


def describe_rows(row_flags, first_row: int = 0) -> str:
    """``"rows [3, 17, ...] (12 in all)"`` for a boolean (N,) array of offending rows, the
    first of which is numbered ``first_row``."""
    rows = first_row + np.flatnonzero(to_numpy(row_flags))
    shown = ", ".join(str(r) for r in rows[:_MAX_ROWS_LISTED])
    more = ", ..." if rows.size > _MAX_ROWS_LISTED else ""
    return f"rows [{shown}{more}] ({rows.size} in all)"


def check_finite_observed(values, observed, name: str, first_row: int = 0) -> None:
    """Raise ``ValueError`` when an observed row of one modality holds NaN or inf.

    values : (N, d) float array of one modality; observed : (N,) bool; first_row: the
    number of the first row in the message (a batch's offset in its data set).
    """
    xp = array_module(values)
    bad = observed & ~xp.isfinite(values).all(axis=1)
    if bool(bad.any()):
        raise ValueError(
            f"modality {name!r}: {describe_rows(bad, first_row)} have NaN or inf in observed "
            "values"
        )


def check_finite_modalities(values, mask, dims, names, first_row: int = 0) -> None:
    """:func:`check_finite_observed` on each modality of a packed (n, D) ``values`` with its
    (n, M) ``mask``, modality m named ``names[m]``, rows numbered from ``first_row``."""
    bounds = np.cumsum([0, *dims])
    for m, name in enumerate(names):
        check_finite_observed(values[:, bounds[m]:bounds[m + 1]], mask[:, m], name, first_row)


def check_finite_packed(z, mask, dims, argument: str = "z") -> None:
    """Raise ``ValueError`` naming the argument, the first offending modality and its rows
    when an observed slot of a packed array holds NaN or inf (one host sync).

    z : (N, D) float array; mask : (N, M) bool; dims : M ints. Missing slots are ignored.
    """
    xp = array_module(z, mask)
    finite = xp.isfinite(z)
    bounds = np.cumsum([0, *dims])
    finite_slots = xp.stack([finite[:, start:stop].all(axis=1)
                             for start, stop in zip(bounds[:-1], bounds[1:])], axis=1)
    refuse_non_finite(mask & ~finite_slots, argument)


def refuse_non_finite(bad, argument: str = "z") -> None:
    """Raise ``ValueError`` naming the argument, the first modality and its rows where the
    (N, M) bool ``bad`` (an observed slot holding NaN or inf) is True (one host sync)."""
    if bool(bad.any()):
        m = int(to_numpy(bad.any(axis=0)).argmax())
        raise ValueError(f"{argument}, modality {m}: {describe_rows(bad[:, m])} have NaN or inf "
                         "in observed values")


def check_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as an int ≥ ``minimum`` (None passes when ``allow_none``), else a
    ``ValueError`` naming ``name``; bools are refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{none}, got {value!r}")
    return int(value)


def check_tol(name: str, value) -> float:
    """``value`` as a float ≥ 0 (a stopping tolerance), else a ``ValueError`` naming
    ``name``; bools and NaN are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a float >= 0, got {value!r}")
    return float(value)


#: Largest seed a ``numpy.random.RandomState`` takes.
MAX_SEED = 2**32 - 1


def checked_random_state(value, name: str = "random_state") -> np.random.RandomState:
    """The ``numpy.random.RandomState`` that ``value`` stands for (scikit-learn's
    ``check_random_state``): ``None`` (NumPy's global one), an int in [0, 2**32 − 1] or a
    ``RandomState`` (used as is). Anything else, bools included, raises ``ValueError``
    naming ``name``."""
    from sklearn.utils import check_random_state

    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not (value is None or isinstance(value, np.random.RandomState)
            or (integral and 0 <= value <= MAX_SEED)):
        raise ValueError(f"{name} must be None, an int in [0, 2**32 - 1] or a "
                         f"numpy.random.RandomState, got {value!r}")
    return check_random_state(value)


def default_modality_names(count: int) -> tuple[str, ...]:
    """``("m0", "m1", ...)``: the names of ``count`` modalities given without names."""
    return tuple(f"m{m}" for m in range(count))


def in_fitted_order(names, fitted, where: str = "X") -> tuple[str, ...]:
    """``names`` (the modalities of some data) arranged in the order of ``fitted`` (those a
    model was fitted on).

    The same names in another order are reordered; where either side has the default
    names (``m0``, ``m1``, ...) the modalities match by position. Anything else raises
    ``ValueError`` naming the missing and the unexpected modalities of ``where``.
    """
    names, fitted = tuple(names), tuple(fitted)
    if len(names) == len(fitted):
        if set(names) == set(fitted):
            return fitted
        if default_modality_names(len(names)) in (names, fitted):
            return names
    missing = [n for n in fitted if n not in names]
    unexpected = [n for n in names if n not in fitted]
    raise ValueError(f"{where} has modalities {list(names)} but the model was fitted on "
                     f"{list(fitted)} (missing: {missing}, unexpected: {unexpected})")


def check_dims(dims, n_columns: int, argument: str = "z") -> tuple[int, ...]:
    """Validate ``dims`` against the packed width of ``argument``; return it as a tuple."""
    dims = tuple(int(d) for d in dims)
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty sequence of positive ints, got {dims}")
    if sum(dims) != n_columns:
        raise ValueError(
            f"{argument} has {n_columns} columns but dims {dims} sum to {sum(dims)}"
        )
    return dims


def check_value_dtype(dtype, argument: str) -> None:
    """Raise ``TypeError`` unless ``dtype`` is float32 or float64 (what the kernels take)."""
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{argument} must be float32 or float64, got dtype {dtype}")


def check_packed(z, mask, dims, z_name: str = "z", mask_name: str = "mask"):
    """Validate a packed (N, D) float array and its (N, M) bool mask; return ``dims``."""
    if z.ndim != 2:
        raise ValueError(f"{z_name} must be 2-D (n, D), got shape {tuple(z.shape)}")
    check_value_dtype(z.dtype, z_name)
    dims = check_dims(dims, z.shape[1], z_name)
    if mask.shape != (z.shape[0], len(dims)):
        raise ValueError(
            f"{mask_name} has shape {tuple(mask.shape)}, expected "
            f"{(z.shape[0], len(dims))} for {z_name} of shape {tuple(z.shape)} and "
            f"{len(dims)} modalities"
        )
    if mask.dtype != bool:
        raise TypeError(f"{mask_name} must be boolean, got dtype {mask.dtype}")
    return dims
