"""completion="ridge", "knn" and "auto" through UL4M4Imputer (ul4m4_gpu/core/rules.py):
against the low-level cores, the literal KNN of tests/reference.py, the blend weights
re-derived by hand, and the invariants every completion keeps (observed values bit for
bit, imputed == ~mask, finite, batch-independent, save → load identical).

Tolerances: the estimator de-normalises a float32 normalised fill in float64 and rounds once
to float32, so it agrees with the same fill de-normalised by hand to float32 round-off of
values of order 10 (1e-4 absolute)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402
from test_estimator import make_data  # noqa: E402
from ul4m4_gpu import MultiModalArray, UL4M4Imputer  # noqa: E402
from ul4m4_gpu.core.backend import to_numpy  # noqa: E402
from ul4m4_gpu.core.completion import (  # noqa: E402
    CenterPairs,
    CompletionRule,
    CompletionWarning,
    complete_rows,
    held_out_sample,
    hide_held_out,
)
from ul4m4_gpu.core.kmeans import PackedRows  # noqa: E402
from ul4m4_gpu.core.ridge import fit_ridge  # noqa: E402
from ul4m4_gpu.core.normalise import normalise  # noqa: E402
from ul4m4_gpu.core.rules import simplex_least_squares  # noqa: E402

NEW_RULES = ("ridge", "knn", "auto")


def fitted(completion, seed=0, n=160, k=6, device="cpu", **params):
    blocks, mask = make_data(seed, n=n)
    mask[:3] = False            # rows observing nothing: filled with the mean
    mask[:3, 0] = [False, True, True]
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    params = {"n_neighbors": 3, "n_probe": 2, **params}
    imp = UL4M4Imputer(n_clusters=k, random_state=seed, completion=completion, device=device,
                       **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        imp.fit(data)
    return imp, data


def transformed(imp, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletionWarning)
        return imp.transform(data)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("completion", NEW_RULES)
def test_each_new_rule_keeps_the_completion_invariants(completion, device, tmp_path, request):
    if device == "cuda":
        request.getfixturevalue("device_cupy")
    imp, data = fitted(completion, device=device, n=60 if device == "cuda" else 160, k=4)
    out = transformed(imp, data)
    values, mask = to_numpy(out.values), to_numpy(data.mask)
    observed = np.repeat(mask, data.dims, axis=1)
    np.testing.assert_array_equal(values[observed], to_numpy(data.values)[observed])
    np.testing.assert_array_equal(to_numpy(out.imputed), ~mask)
    assert np.isfinite(values).all()
    for batch_size in (1, 7):
        imp.set_params(batch_size=batch_size)
        if completion == "auto" and batch_size == 1:
            continue  # see test_auto_is_batch_independent_at_batch_size_1
        np.testing.assert_array_equal(to_numpy(transformed(imp, data).values), values)
    if completion != "auto":  # the other rows of a batch: as batch_size=1, below
        half = data.take(np.arange(30))
        np.testing.assert_array_equal(to_numpy(transformed(imp, half).values), values[:30])
    imp.save(tmp_path / "model.npz")
    loaded = UL4M4Imputer.load(tmp_path / "model.npz")
    assert loaded.completion == completion
    np.testing.assert_array_equal(to_numpy(transformed(loaded, data).values), values)


def test_auto_is_batch_independent_at_batch_size_1():
    imp, data = fitted("auto")
    values = transformed(imp, data).values
    imp.set_params(batch_size=1)
    np.testing.assert_array_equal(transformed(imp, data).values, values)
    imp.set_params(batch_size=None)
    np.testing.assert_array_equal(transformed(imp, data.take(np.arange(30))).values,
                                  values[:30])


def test_ridge_through_the_estimator_is_the_core_prediction_de_normalised():
    imp, data = fitted("ridge")
    z = normalise(data.values, data.mask, imp.mean_, imp.scale_, data.dims)
    predicted = imp.ridge_.predict(z, data.mask).astype(np.float64) * imp.scale_ + imp.mean_
    imputed = np.repeat(~data.mask, data.dims, axis=1)
    out = transformed(imp, data).values
    np.testing.assert_allclose(out[imputed], predicted[imputed], rtol=0, atol=1e-4)
    assert imp.ridge_.alpha in imp.ridge_.alpha_errors


def test_knn_with_every_cluster_probed_is_the_literal_knn():
    imp, data = fitted("knn", n_probe=6, k=6)
    assert imp.n_probe == imp.n_clusters
    z = normalise(data.values, data.mask, imp.mean_, imp.scale_, data.dims)
    donors = imp.donors_
    expected, margins = ref.knn_complete(z, data.mask, to_numpy(donors.z),
                                         to_numpy(donors.mask), data.dims, 3)
    expected = expected * imp.scale_ + imp.mean_
    out = transformed(imp, data).values
    clear = np.repeat(~data.mask & ~(margins < 1e-4), data.dims, axis=1)  # skip near-ties
    assert clear.sum() > 100
    np.testing.assert_allclose(out[clear], expected[clear], rtol=0, atol=1e-4)
    assert len(donors) == int(data.mask.any(axis=1).sum())  # every row observing something


def grid_minimum(design, target, step=0.02):
    """The best w of a regular grid on the 4-simplex (a brute-force check, no solver)."""
    ticks = int(round(1 / step))
    best, best_w = np.inf, None
    for a, b, c in itertools.product(range(ticks + 1), repeat=3):
        if a + b + c > ticks:
            continue
        w = np.array([a, b, c, ticks - a - b - c]) / ticks
        value = float(((design @ w - target) ** 2).sum())
        if value < best:
            best, best_w = value, w
    return best, best_w


@pytest.mark.parametrize("seed", range(4))
def test_simplex_least_squares_is_no_worse_than_any_point_of_a_fine_grid(seed):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(50)
    design = np.column_stack([truth + rng.standard_normal(50) * s for s in (0.5, 1.0, 2.0)]
                             + [np.zeros(50)])
    if seed == 3:
        design[:, 1] = design[:, 0]       # two identical rules: a singular Gram matrix
    w = simplex_least_squares(design, truth)
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12
    value = float(((design @ w - truth) ** 2).sum())
    best, best_w = grid_minimum(design, truth)
    assert value <= best + 1e-9
    assert np.abs(design @ w - design @ best_w).max() < 0.1 * np.abs(truth).max()


def test_auto_weights_are_the_simplex_fit_of_held_out_fills_built_by_hand():
    imp, data = fitted("auto", seed=5, n=200, k=5, n_probe=5)  # exact KNN
    dims = data.dims
    z = normalise(data.values, data.mask, imp.mean_, imp.scale_, data.dims)
    rows = PackedRows.build(z, data.mask, dims)
    index, held = held_out_sample(data.mask, np.random.RandomState(5))
    sample, truth, _ = hide_held_out(rows, index, held)
    pairs = CenterPairs.build(imp.cluster_centers_, imp.centers_mask_, dims)
    nearest = truth.copy()
    complete_rows(sample, pairs, CompletionRule("nearest", imp.n_candidates, imp.temperature_),
                  nearest, pairs.centers, np.zeros(sum(dims), np.float32))
    # ridge: the fold model leaving the row's fold out, by the reference solve
    _, folds = fit_ridge(rows.z, rows.mask, dims, np.random.RandomState(5), return_folds=True)
    clean = np.where(np.repeat(sample.mask, dims, axis=1), sample.z, 0)
    ridge = np.zeros_like(clean, dtype=np.float64)
    for i, f in enumerate(folds.folds[index]):
        ridge[i] = ref.ridge_predict(to_numpy(folds.models[f].second_moments), clean[i:i + 1],
                                     sample.mask[i:i + 1], dims, imp.ridge_.alpha)[0]
    # knn: brute force without the row itself among the donors
    donors = imp.donors_
    knn = np.zeros_like(ridge)
    source = to_numpy(donors.source)
    for i, row in enumerate(index):
        keep = source != row
        knn[i] = ref.knn_complete(sample.z[i:i + 1], sample.mask[i:i + 1],
                                  to_numpy(donors.z)[keep], to_numpy(donors.mask)[keep], dims,
                                  3)[0][0]
    offsets = np.concatenate([[0], np.cumsum(dims)])
    for m in range(len(dims)):
        hiding = np.flatnonzero(held == m)
        cols = slice(offsets[m], offsets[m + 1])
        design = np.column_stack([nearest[hiding, cols].ravel(), ridge[hiding, cols].ravel(),
                                  knn[hiding, cols].ravel(), np.zeros(hiding.size * dims[m])])
        target = truth[hiding, cols].ravel().astype(np.float64)
        ours = float(((design @ imp.completion_weights_[m] - target) ** 2).sum())
        best, _ = grid_minimum(design, target)
        assert ours <= best * (1 + 1e-5) + 1e-6, (m, ours, best)
    np.testing.assert_allclose(imp.completion_weights_.sum(axis=1), 1, atol=1e-12)
    assert imp.completion_rules_ == ("nearest", "ridge", "knn", "mean")


def test_the_report_names_each_rules_weight_per_modality():
    imp, data = fitted("auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletionWarning)
        _, report = imp.transform(data, return_report=True)
    np.testing.assert_array_equal(report.weights, imp.completion_weights_)
    for m, name in enumerate(data.names):
        assert report.as_dict()[name]["weights"] == dict(
            zip(("nearest", "ridge", "knn", "mean"), imp.completion_weights_[m].tolist()))
        assert f"{name}: auto weights nearest {imp.completion_weights_[m, 0]:.3f}" in \
            report.summary()


def test_a_rule_without_its_fitted_models_is_refused_in_one_line():
    imp, data = fitted("nearest")
    imp.set_params(completion="knn")
    with pytest.raises(ValueError, match="completion='knn' needs the donors learnt by a fit"):
        imp.transform(data)


@pytest.mark.parametrize("entry, edit, message", [
    ("completion_weights", lambda a: a * 2, "summing to 1"),
    ("donors_labels", lambda a: a + 100, r"must lie in \[-1, 6\)"),
    ("ridge_second_moments", lambda a: a + np.triu(np.ones_like(a), 1), "symmetric"),
])
def test_a_bad_new_entry_is_refused_naming_the_file_and_the_entry(entry, edit, message,
                                                                  tmp_path):
    imp, _ = fitted("auto")
    imp.save(tmp_path / "model.npz")
    arrays = dict(np.load(tmp_path / "model.npz"))
    arrays[entry] = edit(arrays[entry])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=f"bad.npz.*entry '{entry}': .*{message}") as info:
        UL4M4Imputer.load(tmp_path / "bad.npz")
    assert "\n" not in str(info.value)
    del arrays[entry]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ValueError, match=f"missing.npz.*{entry}"):
        UL4M4Imputer.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("mode, message", [
    (["--stream"], "completion='ridge' is not yet available with the streamed fit"),
    (["--workers", "1"], "completion='ridge' is not yet available with DaskUL4M4Imputer"),
])
def test_the_command_line_refuses_the_new_rules_where_not_wired_in_one_line(mode, message,
                                                                            tmp_path):
    import pyarrow.parquet as pq

    blocks, mask = make_data(0, n=30)
    pq.write_table(MultiModalArray.from_modalities(blocks, mask=mask).to_arrow(),
                   tmp_path / "data.parquet")
    done = subprocess.run([sys.executable, "-m", "ul4m4_gpu.cli", "impute",
                           str(tmp_path / "data.parquet"), "-o", str(tmp_path / "out.parquet"),
                           "--k",
                           "3", "--completion", "ridge", "--quiet", *mode],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"ul4m4: error: {done.stderr.strip()[14:]}"]
    assert message in done.stderr
    assert not (tmp_path / "out.parquet").exists()
