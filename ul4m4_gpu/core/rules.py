"""Completion by rule beyond the centres (docs/method.md, "Ridge completion", "KNN
completion", "Blended completion (auto)"): the fills of ``completion="ridge"``, ``"knn"``
and ``"auto"`` in normalised space, their blend, and the blend's weights chosen at fit.

``"auto"`` fills modality m of a row with Σ_r w_{m,r} · fill_r over the rules
:data:`BLEND_RULE_NAMES`: the nearest-centre soft fill (``n_candidates`` r, the fitted τ), the
ridge completion, the KNN completion and the training mean (0 in normalised space), with
w_m ≥ 0 and Σ_r w_{m,r} = 1. The weights minimise the squared error of the hidden slots
when one observed modality of a seeded sample of training rows is hidden
(:func:`~ul4m4_gpu.core.completion.held_out_sample`, the draw of ``temperature="auto"``),
per modality, exactly (:func:`simplex_least_squares`). The sampled rows are training rows,
so neither the ridge nor the KNN fill may see their hidden values: each row is completed
by the ridge model of the cross-validation fold that leaves its fold out, and is barred as
its own KNN donor.

Every fill is a function of its row alone (the cores guarantee it), so the completion is
bitwise the same for any ``batch_size``.
"""

from __future__ import annotations

import itertools

import numpy as np

from .backend import to_numpy
from .completion import (
    BLEND_RULE_NAMES,
    CenterPairs,
    CompletionReport,
    CompletionRule,
    complete_rows,
    held_out_sample,
    hide_held_out,
)
from .kmeans import PackedRows
from .knn import Donors, knn_fill
from .normalise import denormalise, expand_mask
from .ridge import RidgeCompletion, RidgeFolds
from .validation import checked_random_state

#: Which fitted models each rule needs.
NEEDS = {"ridge": ("ridge",), "knn": ("donors",), "auto": ("ridge", "donors", "weights")}


def missing_models(completion: str, ridge, donors, weights) -> list[str]:
    """The models ``completion`` needs that are None (what the fit learnt for another rule)."""
    present = {"ridge": ridge, "donors": donors, "weights": weights}
    return [name for name in NEEDS.get(completion, ()) if present[name] is None]


def rule_fills(rows: PackedRows, pairs: CenterPairs, rule: CompletionRule, *, ridge=None,
               donors: Donors | None = None, used=BLEND_RULE_NAMES, batch_size=None, exclude=None,
               ridge_folds=None, row_folds=None):
    """The normalised fills of the rules ``used`` (names of :data:`BLEND_RULE_NAMES` but
    "mean") for every row of ``rows``: ``{name: (N, D) array of rows.z's dtype}``, the
    row's values on observed slots and the rule's fill on missing ones, plus
    ``"knn_mean_filled"``: (M,) int64 slots the KNN completion filled with the mean.

    nearest : :func:`complete_rows` with ``completion="nearest"`` and ``rule``'s r and τ;
    ridge : ``ridge.predict``, or with ``ridge_folds`` (:class:`RidgeFolds`) and
    ``row_folds`` (N,) NumPy, each row by the model of its fold; knn : :func:`knn_fill`
    with ``rule``'s k and n_probe, ``exclude`` (N,) a donor each row may not use.
    """
    xp = rows.xp
    default = xp.zeros(rows.z.shape[1], dtype=rows.z.dtype)
    fills = {"knn_mean_filled": np.zeros(len(rows.dims), dtype=np.int64)}
    rule = rule.capped(pairs.n_centers)
    if "nearest" in used:
        fills["nearest"] = rows.z.copy()
        complete_rows(rows, pairs, CompletionRule("nearest", rule.n_candidates,
                                                  rule.temperature),
                      fills["nearest"], pairs.centers, default, batch_size)
    if "ridge" in used:
        predicted = xp.zeros_like(rows.z)
        parts = ([(slice(None), ridge)] if ridge_folds is None else
                 [(xp.asarray(np.flatnonzero(row_folds == f)), model)
                  for f, model in enumerate(ridge_folds.models)])
        for where, model in parts:
            predicted[where] = model.predict(rows.z[where], rows.mask[where])
        fills["ridge"] = xp.where(expand_mask(rows.mask, rows.dims), rows.z, predicted)
    if "knn" in used:
        fills["knn"] = rows.z.copy()
        fills["knn_mean_filled"] = knn_fill(
            rows, donors, pairs.centers, pairs.centers_mask, fills["knn"],
            n_neighbors=rule.n_neighbors, n_probe=rule.n_probe, batch_size=batch_size,
            exclude=exclude)
    return fills


def blend(fills: dict, weights: np.ndarray, dims, shape, xp):
    """(N, D) float64 Σ_r w_{m,r} · fill_r, column by column (modality m's columns take
    weights[m]); weights (M, len(BLEND_RULE_NAMES)) NumPy; shape (N, D). The mean's fill is 0;
    a rule whose weights are all 0 needs no fill (and adds exactly nothing)."""
    out = xp.zeros(shape, dtype=xp.float64)
    for r, name in enumerate(BLEND_RULE_NAMES):
        if name == "mean" or not weights[:, r].any():
            continue
        out += fills[name].astype(xp.float64) * xp.asarray(np.repeat(weights[:, r], dims))
    return out


def used_rules(completion: str, weights) -> tuple:
    """The fills ``completion`` computes: its own, or for "auto" those of nonzero weight."""
    if completion != "auto":
        return (completion,)
    return tuple(name for r, name in enumerate(BLEND_RULE_NAMES)
                 if name != "mean" and np.asarray(weights)[:, r].any())


def complete_by_rule(rows: PackedRows, pairs: CenterPairs, rule: CompletionRule, out, mean,
                     scale, *, ridge=None, donors=None, weights=None, batch_size=None,
                     names=None) -> CompletionReport:
    """Fill every missing slot of ``out`` ((N, D), the data space) in place by ``rule``
    (``"ridge"``, ``"knn"`` or ``"auto"``), from the normalised ``rows``: the rule's
    normalised fill, de-normalised with ``mean``, ``scale`` (D,) float64 (x = σ z + μ in
    float64, clipped to ``out``'s finite range), written on missing slots only, so
    observed values stay bit for bit. Returns the :class:`CompletionReport`: slots filled,
    those filled with the mean (every slot of a row observing nothing; for "knn" also
    slots no probed donor could fill), and for "auto" the weights per modality."""
    xp = rows.xp
    absent = missing_models(rule.completion, ridge, donors, weights)
    if absent:
        raise ValueError(f"completion={rule.completion!r} needs the {', '.join(absent)} "
                         "learnt by a fit with that completion; fit again with it")
    used = used_rules(rule.completion, weights)
    fills = rule_fills(rows, pairs, rule, ridge=ridge, donors=donors, used=used,
                       batch_size=batch_size)
    if rule.completion == "auto":
        normalised = blend(fills, weights, rows.dims, rows.z.shape, xp)
    else:
        normalised = fills[rule.completion].astype(xp.float64)
    values = denormalise(normalised, mean.astype(xp.float64), scale.astype(xp.float64),
                         out.dtype)
    missing = ~rows.mask
    out[...] = xp.where(expand_mask(rows.mask, rows.dims), out, values)
    empty = missing.all(axis=1)
    mean_filled = to_numpy((missing & empty[:, None]).sum(axis=0)).astype(np.int64)
    if rule.completion == "knn":
        mean_filled = mean_filled + fills["knn_mean_filled"]
    n_modalities = len(rows.dims)
    return CompletionReport(
        tuple(names or (f"m{m}" for m in range(n_modalities))),
        to_numpy(missing.sum(axis=0)).astype(np.int64), mean_filled,
        np.zeros(n_modalities), np.zeros(n_modalities, dtype=np.int64), int(empty.sum()),
        weights=None if weights is None or rule.completion != "auto"
        else np.asarray(weights, dtype=np.float64))


def choose_blend_weights(rows: PackedRows, pairs: CenterPairs, rule: CompletionRule,
                         ridge_folds: RidgeFolds, donors: Donors, random_state=None,
                         sample_rows: int | None = None) -> np.ndarray:
    """(M, len(BLEND_RULE_NAMES)) float64 weights of ``"auto"``, each row on the simplex.

    The held-out sample of :func:`~ul4m4_gpu.core.completion.held_out_sample` (seeded by
    ``random_state``, ``sample_rows`` rows at most, default as ``temperature="auto"``)
    hides one observed modality per row; each rule fills it (the ridge by the fold model
    leaving the row's fold out, the KNN without the row as its own donor, the mean 0) and
    per modality m the weights are :func:`simplex_least_squares` of the fills of the rows
    hiding m against their true values. A modality no sampled row hides (or no row
    observing two modalities at all) gets the nearest-centre fill alone, weight 1.
    """
    extra = {} if sample_rows is None else {"sample_rows": sample_rows}
    index, held = held_out_sample(to_numpy(rows.mask), checked_random_state(random_state),
                                  **extra)
    n_modalities = len(rows.dims)
    weights = np.zeros((n_modalities, len(BLEND_RULE_NAMES)))
    weights[:, BLEND_RULE_NAMES.index("nearest")] = 1.0
    if index.size == 0:
        return weights
    sample, truth, _ = hide_held_out(rows, index, held)
    fills = rule_fills(sample, pairs, rule, ridge_folds=ridge_folds,
                       row_folds=ridge_folds.folds[index], donors=donors,
                       used=("nearest", "ridge", "knn"), exclude=donors.position_of(index))
    offsets = np.concatenate([[0], np.cumsum(rows.dims)])
    xp = rows.xp
    for m in range(n_modalities):
        hiding = xp.asarray(np.flatnonzero(held == m))
        if hiding.size == 0:
            continue
        columns = slice(int(offsets[m]), int(offsets[m + 1]))
        design = np.stack([to_numpy(fills[name][hiding, columns]).ravel().astype(np.float64)
                           if name != "mean" else np.zeros(int(hiding.size) * rows.dims[m])
                           for name in BLEND_RULE_NAMES], axis=1)
        target = to_numpy(truth[hiding, columns]).ravel().astype(np.float64)
        weights[m] = simplex_least_squares(design, target)
    return weights


def simplex_least_squares(design, target) -> np.ndarray:
    """(R,) float64 w minimising ||design · w − target||² subject to w ≥ 0, Σ w = 1, for a
    (n, R) ``design`` with few columns (R = 4 here) and (n,) ``target``.

    Exact: the objective is convex, so its minimum over the simplex is the minimum of the
    equality-constrained minimisers of the faces (supports S) that are feasible. For each
    non-empty S, smallest first, the KKT system [[G_SS, 1], [1ᵀ, 0]] [w_S; μ] = [b_S; 1]
    (G = designᵀdesign, b = designᵀtarget) is solved by least squares (the minimum-norm
    solution where G_SS is singular); among the solutions with w_S ≥ 0 the lowest
    objective wins (ties, within 1e-12 relative: the smaller support, then the first in
    order). 2^R − 1 solves of size ≤ R + 1."""
    design = np.asarray(design, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    gram, moment = design.T @ design, design.T @ target
    n_rules = design.shape[1]
    best, best_objective = None, np.inf
    scale = max(float(target @ target), 1e-300)
    for size in range(1, n_rules + 1):
        for support in itertools.combinations(range(n_rules), size):
            s = list(support)
            system = np.zeros((size + 1, size + 1))
            system[:size, :size] = gram[np.ix_(s, s)]
            system[:size, size] = system[size, :size] = 1.0
            solution = np.linalg.lstsq(system, np.append(moment[s], 1.0), rcond=None)[0][:size]
            if (solution < -1e-12).any():
                continue
            w = np.zeros(n_rules)
            w[s] = np.maximum(solution, 0)
            w /= w.sum()
            objective = float(w @ gram @ w - 2 * moment @ w)
            if objective < best_objective - 1e-12 * scale:
                best, best_objective = w, objective
    return best
