"""Deterministic (seeded) missing-modality masks, for any number of modalities M (1..64).

The paper's families (docs/method.md), generalised from 2-3 modalities to M:

- per-modality availability rates (:func:`availability_mask`, config ``"100_image_20_text"``);
- disjoint pattern groups (:func:`pattern_groups_mask`, config ``"complex_60_20_20"``);
- every slot missing independently (:func:`uniform_missing_mask`, config ``"missing_60"``);
- PEPSY-style lead dropping, every row losing exactly K modalities (:func:`lead_drop_mask`,
  config ``"drop_3"``); and ``"none"``.

Every mask is an (N, M) bool NumPy array, True where modality m of row i is observed.
``random_state`` follows scikit-learn: None, an int seed or a ``numpy.random.RandomState``.
:func:`hide_modalities` applies a mask to a :class:`~ul4m4_gpu.io.data.MultiModalArray`.
"""

from __future__ import annotations

import itertools
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from fractions import Fraction

import numpy as np
from sklearn.utils import check_random_state

from ..core.backend import is_cupy_array, to_device, to_numpy
from ..io.data import MultiModalArray

MAX_MODALITIES = 64
FRACTION_TOLERANCE = 1e-6

CONFIG_FORMS = (
    "'none' (everything observed)",
    "'missing_P' (every slot missing independently with probability P %)",
    "'P1_NAME1_P2_NAME2...' (keep modality NAME with probability P %; unlisted kept)",
    "'complex_P1_P2_...' (pattern-group percentages, summing to 100)",
    "'drop_K' (PEPSY-style lead dropping: every row loses exactly K random modalities)",
    "a dict {name: keep_rate in [0, 1]}",
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


# ---------------------------------------------------------------------- argument checks
def _check_n_samples(n_samples) -> int:
    """``n_samples`` as a non-negative int, or raise."""
    if not isinstance(n_samples, numbers.Integral) or isinstance(n_samples, bool):
        raise TypeError(f"n_samples must be an int, got {type(n_samples).__name__}")
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    return int(n_samples)


def _check_n_modalities(n_modalities) -> int:
    """``n_modalities`` as an int in [1, 64], or raise."""
    if not isinstance(n_modalities, numbers.Integral) or isinstance(n_modalities, bool):
        raise TypeError(f"n_modalities must be an int, got {type(n_modalities).__name__}")
    if not 1 <= n_modalities <= MAX_MODALITIES:
        raise ValueError(f"n_modalities must be in [1, {MAX_MODALITIES}], got {n_modalities}")
    return int(n_modalities)


def _check_probability(value, argument: str) -> float:
    """A real number in [0, 1] as a float, or raise naming ``argument``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{argument} must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{argument} must be in [0, 1], got {value}")
    return float(value)


def _check_rates(rates) -> np.ndarray:
    """(M,) float64 keep-probabilities in [0, 1], 1 <= M <= 64, or raise."""
    if isinstance(rates, (str, Mapping)) or not isinstance(rates, (Sequence, np.ndarray)):
        raise TypeError(f"rates must be a sequence of numbers in [0, 1], got {type(rates).__name__}")
    values = np.asarray(rates)
    if values.ndim != 1 or not 1 <= values.size <= MAX_MODALITIES:
        raise ValueError(
            f"rates must be a flat sequence of 1 to {MAX_MODALITIES} numbers, got shape {values.shape}"
        )
    if values.dtype.kind not in "iuf":
        raise TypeError(f"rates must hold numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if not np.all((values >= 0.0) & (values <= 1.0)):
        raise ValueError(f"rates must all be in [0, 1], got {values.tolist()}")
    return values


def _check_real(value, argument: str):
    """``value`` if it is a real number (not a bool), else raise ``TypeError``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{argument} must hold numbers, got {value!r}")
    return value


def _n_groups(n_modalities: int) -> int:
    """Number of non-empty modality subsets, 2**M - 1 (a Python int, exact for M = 64)."""
    return 2**n_modalities - 1


def _check_fractions(fractions, n_modalities: int) -> list[float]:
    """Pattern-group fractions: >= 0, summing to 1 (± 1e-6), at most 2**M - 1 of them."""
    if isinstance(fractions, (str, Mapping)) or not isinstance(fractions, (Sequence, np.ndarray)):
        raise TypeError(f"fractions must be a sequence of numbers, got {type(fractions).__name__}")
    values = [float(_check_real(f, "fractions")) for f in fractions]
    if not values:
        raise ValueError("fractions is empty; give at least the fraction of fully observed rows")
    if len(values) > _n_groups(n_modalities):
        raise ValueError(
            f"fractions has {len(values)} entries but {n_modalities} modalities have only "
            f"{_n_groups(n_modalities)} pattern groups"
        )
    if any(not np.isfinite(f) or f < 0 for f in values):
        raise ValueError(f"fractions must be finite and >= 0, got {values}")
    if abs(sum(values) - 1.0) > FRACTION_TOLERANCE:
        raise ValueError(f"fractions must sum to 1, got {values} (sum {sum(values)})")
    return values


def _check_names(names) -> tuple[str, ...]:
    """1 to 64 distinct modality names, from any ordered iterable of strings (a list, a
    tuple, a pandas ``Index``, a NumPy array), as a tuple of str; or raise."""
    if isinstance(names, (str, AbstractSet)) or not isinstance(names, Iterable):
        raise TypeError("names must be an ordered collection of modality names (a list, a "
                        f"tuple, a pandas Index, an array), got {type(names).__name__}")
    names = tuple(names)
    if not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"names must be non-empty strings, got {names}")
    names = tuple(map(str, names))  # NumPy's str_ to str
    if not 1 <= len(names) <= MAX_MODALITIES:
        raise ValueError(f"names must list 1 to {MAX_MODALITIES} modalities, got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct, got {names}")
    return names


def _check_mask(mask, argument: str = "mask"):
    """A 2-D bool array (NumPy or CuPy), or raise."""
    if type(mask).__module__.startswith("torch"):
        mask = to_numpy(mask)
    if not is_cupy_array(mask):
        mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{argument} must be 2-D (n_samples, n_modalities), got shape {mask.shape}")
    if mask.dtype != bool:
        raise TypeError(f"{argument} must be boolean, got dtype {mask.dtype}")
    return mask


# ---------------------------------------------------------------------- mask families
def availability_mask(n_samples, rates, random_state=None, allow_empty=False) -> np.ndarray:
    """Keep modality m of each row independently with probability ``rates[m]``.

    Parameters
    ----------
    n_samples : int >= 0, the number of rows N.
    rates : sequence of M numbers in [0, 1] (1 <= M <= 64), the keep-probabilities.
    random_state : None, int or ``numpy.random.RandomState``.
    allow_empty : when False (default), a row left with no modality gets exactly one
        modality back, drawn with probability proportional to ``rates``; so the observed
        rates come out slightly above ``rates`` when empty rows are likely.

    Returns
    -------
    mask : (N, M) bool NumPy array, True = observed.
    """
    n_samples = _check_n_samples(n_samples)
    rates = _check_rates(rates)
    if not allow_empty and not rates.any():
        raise ValueError(
            "rates are all 0 and allow_empty=False: every row would be empty; "
            "raise a rate or pass allow_empty=True"
        )
    rng = check_random_state(random_state)
    mask = rng.random_sample((n_samples, rates.size)) < rates
    if not allow_empty:
        _restore_empty_rows(mask, rates, rng)
    return mask


def _restore_empty_rows(mask: np.ndarray, rates: np.ndarray, rng) -> None:
    """In place: give each all-False row of the (N, M) ``mask`` one modality, drawn ∝ rates."""
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        chosen = rng.choice(rates.size, size=empty.size, p=rates / rates.sum())
        mask[empty, chosen] = True


def pattern_groups(n_modalities, n_groups=None) -> np.ndarray:
    """The first ``n_groups`` disjoint missing-pattern groups for M modalities.

    Order: all modalities; then every non-empty proper subset by size ascending, subsets
    of one size in ``itertools.combinations`` order. M=2: all, {0}, {1}; M=3: all, {0},
    {1}, {2}, {0,1}, {0,2}, {1,2} (the paper's all/T/A/V/TA/TV/AV).

    Parameters
    ----------
    n_modalities : int in [1, 64].
    n_groups : int in [1, 2**M - 1]; default all 2**M - 1 groups (only sensible for small M).

    Returns
    -------
    patterns : (n_groups, M) bool NumPy array; row g is True on the modalities of group g.
    """
    n_modalities = _check_n_modalities(n_modalities)
    total = _n_groups(n_modalities)
    n_groups = total if n_groups is None else n_groups
    if not isinstance(n_groups, numbers.Integral) or not 1 <= n_groups <= total:
        raise ValueError(f"n_groups must be an int in [1, {total}] for M={n_modalities}, got {n_groups}")
    subsets = itertools.chain(
        [tuple(range(n_modalities))],
        *(itertools.combinations(range(n_modalities), size) for size in range(1, n_modalities)),
    )
    patterns = np.zeros((n_groups, n_modalities), dtype=bool)
    for g, subset in enumerate(itertools.islice(subsets, n_groups)):
        patterns[g, list(subset)] = True
    return patterns


def _largest_remainder_counts(fractions: Sequence[float], n_samples: int) -> np.ndarray:
    """(G,) int64 counts summing to N: floor(f·N) plus one for the largest remainders
    (ties: lowest group), computed in exact rational arithmetic."""
    exact = [Fraction(f) for f in fractions]
    total = sum(exact)
    shares = [f * n_samples / total for f in exact]
    counts = [int(s) for s in shares]
    leftover = n_samples - sum(counts)
    by_remainder = sorted(range(len(shares)), key=lambda g: (counts[g] - shares[g], g))
    for g in by_remainder[:leftover]:
        counts[g] += 1
    return np.asarray(counts, dtype=np.int64)


def pattern_groups_mask(n_samples, fractions, n_modalities, random_state=None) -> np.ndarray:
    """Split the rows into disjoint pattern groups of exact sizes.

    Parameters
    ----------
    n_samples : int >= 0, the number of rows N.
    fractions : sequence of G numbers >= 0 summing to 1 (± 1e-6): the shares of the first G
        groups of :func:`pattern_groups` (later groups get no rows); G <= 2**M - 1.
    n_modalities : int in [1, 64], M.
    random_state : None, int or ``numpy.random.RandomState``.

    Returns
    -------
    mask : (N, M) bool NumPy array. Group g holds exactly ``counts[g]`` rows, the
    largest-remainder rounding of ``fractions[g] · N``; rows go to groups through a random
    permutation. No row is empty.
    """
    n_samples = _check_n_samples(n_samples)
    n_modalities = _check_n_modalities(n_modalities)
    fractions = _check_fractions(fractions, n_modalities)
    rng = check_random_state(random_state)
    patterns = pattern_groups(n_modalities, len(fractions))
    counts = _largest_remainder_counts(fractions, n_samples)
    group_of_slot = np.repeat(np.arange(len(fractions)), counts)
    mask = np.empty((n_samples, n_modalities), dtype=bool)
    mask[rng.permutation(n_samples)] = patterns[group_of_slot]
    return mask


def lead_drop_mask(n_samples, n_modalities, n_drop, random_state=None) -> np.ndarray:
    """PEPSY-style lead dropping: every row loses exactly ``n_drop`` of its ``n_modalities``
    modalities (EEG leads), chosen uniformly at random per row.

    Returns an (N, M) bool NumPy mask, True = observed, with M − n_drop True per row.
    """
    n_samples = _check_n_samples(n_samples)
    n_modalities = _check_n_modalities(n_modalities)
    if isinstance(n_drop, bool) or not isinstance(n_drop, numbers.Integral) \
            or not 0 <= n_drop < n_modalities:
        raise ValueError(f"n_drop must be an int in [0, {n_modalities - 1}], got {n_drop!r}")
    rng = check_random_state(random_state)
    order = rng.random_sample((n_samples, n_modalities)).argsort(axis=1)
    mask = np.ones((n_samples, n_modalities), dtype=bool)
    np.put_along_axis(mask, order[:, :n_drop], False, axis=1)
    return mask


def uniform_missing_mask(n_samples, n_modalities, missing_rate, random_state=None,
                         allow_empty=False) -> np.ndarray:
    """Every (row, modality) slot missing independently with probability ``missing_rate``.

    Same as :func:`availability_mask` with every rate ``1 - missing_rate`` (including the
    empty-row rule: unless ``allow_empty``, an empty row gets one modality back, uniformly).

    Returns
    -------
    mask : (N, M) bool NumPy array, True = observed.
    """
    n_modalities = _check_n_modalities(n_modalities)
    missing_rate = _check_probability(missing_rate, "missing_rate")
    if missing_rate == 1.0 and not allow_empty:
        raise ValueError("missing_rate=1 with allow_empty=False is impossible: every row would be empty")
    rates = np.full(n_modalities, 1.0 - missing_rate)
    return availability_mask(n_samples, rates, random_state=random_state, allow_empty=allow_empty)


# ---------------------------------------------------------------------- configurations
def _config_error(config: str, reason: str) -> ValueError:
    """A ``ValueError`` that quotes ``config``, says why and lists the accepted forms."""
    forms = "; ".join(CONFIG_FORMS)
    return ValueError(f"bad missing config {config!r}: {reason}. Accepted forms: {forms}")


def _parse_percent(token: str, config: str) -> float:
    """A percentage token in [0, 100] as a fraction in [0, 1]."""
    if not _NUMBER.fullmatch(token):
        raise _config_error(config, f"{token!r} is not a percentage")
    value = float(token)
    if value > 100:
        raise _config_error(config, f"percentage {token} exceeds 100")
    return value / 100.0


def _availability_rates(rates: Mapping, names: tuple[str, ...], source) -> tuple[float, ...]:
    """Per-modality keep rates in ``names`` order; unlisted modalities keep rate 1."""
    unknown = [n for n in rates if n not in names]
    if unknown:
        raise ValueError(
            f"missing config {source!r} names unknown modalities {unknown}; valid names are {names}"
        )
    return tuple(float(rates.get(n, 1.0)) for n in names)


def _parse_availability(tokens: list[str], names: tuple[str, ...], config: str) -> dict:
    """``PERCENT_NAME`` pairs into ``{"kind": "availability", "rates": (M floats)}``."""
    if len(tokens) % 2:
        raise _config_error(config, "expected PERCENT_NAME pairs")
    rates = {}
    for percent, name in zip(tokens[::2], tokens[1::2]):
        if name in rates:
            raise _config_error(config, f"modality {name!r} is listed twice")
        rates[name] = _parse_percent(percent, config)
    return {"kind": "availability", "rates": _availability_rates(rates, names, config)}


def _parse_string(config: str, names: tuple[str, ...]) -> dict:
    """Parse one config string (see :func:`parse_missing_config`)."""
    if config == "none":
        return {"kind": "none"}
    head, *rest = config.split("_")
    if head == "missing":
        if len(rest) != 1:
            raise _config_error(config, "'missing_' takes exactly one percentage")
        return {"kind": "uniform", "missing_rate": _parse_percent(rest[0], config)}
    if head == "complex":
        if not rest:
            raise _config_error(config, "'complex_' needs at least one percentage")
        fractions = [_parse_percent(t, config) for t in rest]
        try:
            fractions = _check_fractions(fractions, len(names))
        except ValueError as error:
            raise _config_error(config, str(error)) from None
        return {"kind": "groups", "fractions": tuple(fractions)}
    if head == "drop":
        if len(rest) != 1 or not rest[0].isdigit():
            raise _config_error(config, "'drop_' takes exactly one whole number of modalities")
        n_drop = int(rest[0])
        if not 0 <= n_drop < len(names):
            raise _config_error(config, f"can drop 0 to {len(names) - 1} of {len(names)} "
                                        f"modalities per row, got {n_drop}")
        return {"kind": "drop", "n_drop": n_drop}
    if _NUMBER.fullmatch(head):
        return _parse_availability([head, *rest], names, config)
    raise _config_error(config, f"unknown form {head!r}")


def _parse_mapping(config: Mapping, names: tuple[str, ...]) -> dict:
    """``{name: keep_rate}`` into ``{"kind": "availability", "rates": (M floats)}``."""
    for name, rate in config.items():
        _check_probability(rate, f"config[{name!r}]")
    return {"kind": "availability", "rates": _availability_rates(config, names, dict(config))}


def parse_missing_config(config, names) -> dict:
    """Parse a missing-pattern configuration for the modalities ``names``.

    Parameters
    ----------
    config : one of
        - ``"none"``: everything observed -> ``{"kind": "none"}``;
        - ``"missing_60"``: every slot missing independently w.p. 0.60
          -> ``{"kind": "uniform", "missing_rate": 0.6}``;
        - ``"100_image_20_text"``: PERCENT_NAME pairs, modality NAME kept w.p. PERCENT/100,
          unlisted modalities kept w.p. 1 -> ``{"kind": "availability", "rates": (M floats)}``
          in ``names`` order; a dict ``{name: keep_rate}`` gives the same;
        - ``"complex_60_20_20"``: percentages (summing to 100) of the first pattern groups of
          :func:`pattern_groups` -> ``{"kind": "groups", "fractions": (G floats)}``;
        - ``"drop_2"``: PEPSY-style lead dropping, every row loses exactly 2 random
          modalities -> ``{"kind": "drop", "n_drop": 2}`` (see :func:`lead_drop_mask`).
        Percentages are decimal numbers in [0, 100].
    names : M distinct modality names (a list, tuple, pandas Index or array of str; not a
        set, whose order is arbitrary). The string forms split on ``"_"``, so names used in
        a ``PERCENT_NAME`` string must not contain underscores.

    Returns
    -------
    dict with ``"kind"`` and that kind's parameters, as listed above.
    """
    names = _check_names(names)
    if isinstance(config, Mapping):
        return _parse_mapping(config, names)
    if not isinstance(config, str):
        raise TypeError(
            f"config must be a string or a dict {{name: rate}}, got {type(config).__name__}"
        )
    return _parse_string(config, names)


def simulate_missing(n_samples, names, config, random_state=None, allow_empty=False) -> np.ndarray:
    """A missing-modality mask for ``n_samples`` rows described by ``config``.

    Parameters
    ----------
    n_samples : int >= 0, N.
    names : M distinct modality names (1 <= M <= 64), as for :func:`parse_missing_config`.
    config : a configuration accepted by :func:`parse_missing_config`.
    random_state : None, int or ``numpy.random.RandomState``.
    allow_empty : whether rows with no observed modality are allowed (availability and
        uniform forms; pattern groups never produce empty rows).

    Returns
    -------
    mask : (N, M) bool NumPy array, True = observed.
    """
    n_samples = _check_n_samples(n_samples)
    names = _check_names(names)
    spec = parse_missing_config(config, names)
    kind = spec["kind"]
    if kind == "none":
        return np.ones((n_samples, len(names)), dtype=bool)
    if kind == "uniform":
        return uniform_missing_mask(n_samples, len(names), spec["missing_rate"],
                                    random_state=random_state, allow_empty=allow_empty)
    if kind == "groups":
        return pattern_groups_mask(n_samples, spec["fractions"], len(names), random_state=random_state)
    if kind == "drop":
        return lead_drop_mask(n_samples, len(names), spec["n_drop"], random_state=random_state)
    return availability_mask(n_samples, spec["rates"], random_state=random_state,
                             allow_empty=allow_empty)


def expected_missing_fraction(config, names) -> float:
    """The expected fraction of (row, modality) slots that :func:`simulate_missing` hides for
    ``config`` over the modalities ``names`` (default ``allow_empty=False``).

    A row must keep one modality: the availability and uniform forms give a row drawn empty
    one modality back, so with keep rates r_m the expectation is
    (Σ (1 − r_m) − Π (1 − r_m)) / M; uniform p: p − p^M / M (42 % for ``missing_60`` on two
    modalities, whose ceiling is 50 %). ``drop_K``: K / M; ``complex_…``: Σ_g f_g (M − |g|) / M
    over the pattern groups; ``none``: 0.
    """
    names = _check_names(names)
    spec = parse_missing_config(config, names)
    n_modalities = len(names)
    kind = spec["kind"]
    if kind == "none":
        return 0.0
    if kind == "drop":
        return spec["n_drop"] / n_modalities
    if kind == "groups":
        observed = pattern_groups(n_modalities, len(spec["fractions"])).sum(axis=1)
        return float(np.dot(spec["fractions"], n_modalities - observed) / n_modalities)
    rates = (np.full(n_modalities, 1.0 - spec["missing_rate"]) if kind == "uniform"
             else np.asarray(spec["rates"]))
    return float(((1.0 - rates).sum() - np.prod(1.0 - rates)) / n_modalities)


# ---------------------------------------------------------------------- applying masks
def hide_modalities(data: MultiModalArray, mask) -> MultiModalArray:
    """A copy of ``data`` with the slots where ``mask`` is False hidden.

    Parameters
    ----------
    data : MultiModalArray with N rows and M modalities (not modified).
    mask : (N, M) bool array (NumPy, CuPy or Torch), True = keep.

    Returns
    -------
    MultiModalArray on ``data``'s device with the same dims and names: ``values`` a copy
    whose newly hidden slots are NaN, ``mask`` = ``data.mask & mask``, and ``imputed``
    (when present) cleared on the hidden slots.
    """
    if not isinstance(data, MultiModalArray):
        raise TypeError(f"data must be a MultiModalArray, got {type(data).__name__}")
    mask = _check_mask(mask)
    expected = (data.n_samples, data.n_modalities)
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected (n_samples, n_modalities) = {expected}")
    keep = data.mask & to_device(mask, data.device)
    values = data.values.copy()
    for m in range(data.n_modalities):
        values[:, data.offsets[m]:data.offsets[m + 1]][~keep[:, m]] = np.nan
    imputed = None if data.imputed is None else data.imputed & keep
    return MultiModalArray(values, keep, data.dims, data.names, imputed)


def missing_fraction(mask) -> float:
    """Fraction of (row, modality) slots that are missing in an (N, M) bool ``mask``
    (NumPy, CuPy or Torch); raises on an empty mask."""
    mask = _check_mask(mask)
    if mask.size == 0:
        raise ValueError(f"mask is empty (shape {tuple(mask.shape)}); its missing fraction is undefined")
    return float(1.0 - mask.mean())


__all__ = [
    "availability_mask",
    "expected_missing_fraction",
    "hide_modalities",
    "missing_fraction",
    "parse_missing_config",
    "pattern_groups",
    "pattern_groups_mask",
    "simulate_missing",
    "uniform_missing_mask",
]
