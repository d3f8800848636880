"""The completion rules through the estimator: the low-level function de-normalised, the
temperature chosen at fit, the completion report and its warning, rows observing nothing,
persistence and parameter checks. The rules themselves are matched against the literal
loops in test_against_reference.py."""

import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_estimator import datasets, make_data
from ul4m4_gpu import MultiModalArray, UL4M4Imputer, greedy_complete
from ul4m4_gpu.core.completion import TEMPERATURE_GRID, CompletionWarning
from ul4m4_gpu.core.normalise import normalise

RULES = [("paper", 1), ("overlap", 1), ("nearest", 1), ("overlap", 4), ("nearest", 3),
         ("paper", 2)]


def fitted(rule, seed=0, n=200, k=8, **params):
    blocks, mask = make_data(seed, n=n)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    completion, r = rule
    imp = UL4M4Imputer(n_clusters=k, random_state=seed, completion=completion, n_candidates=r,
                       **params).fit(data)
    return imp, data


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.sampled_from(RULES))
def test_transform_is_the_low_level_completion_de_normalised(case, rule):
    blocks, mask, k, seed = case
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    completion, r = rule
    imp = UL4M4Imputer(n_clusters=k, random_state=seed, completion=completion,
                       n_candidates=r).fit(data)
    assert imp.temperature_ in TEMPERATURE_GRID or r == 1
    z = normalise(data.values, data.mask, imp.mean_, imp.scale_, data.dims)
    z_done, _, sources = greedy_complete(z, data.mask, imp.cluster_centers_, imp.centers_mask_,
                                         data.dims, return_sources=True, completion=completion,
                                         n_candidates=r, temperature=imp.temperature_)
    expected = z_done.astype(np.float64) * imp.scale_ + imp.mean_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletionWarning)
        out = imp.transform(data)
        np.testing.assert_array_equal(imp.imputation_sources(data), sources)
    imputed = np.repeat(~mask, data.dims, axis=1)
    np.testing.assert_allclose(out.values[imputed], expected[imputed], rtol=1e-4, atol=1e-4)
    observed = ~imputed
    np.testing.assert_array_equal(out.values[observed], data.values[observed])


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_is_deterministic_batch_independent_and_survives_save_load(rule, tmp_path):
    imp, data = fitted(rule)
    again, _ = fitted(rule)
    assert again.temperature_ == imp.temperature_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletionWarning)
        out = imp.transform(data).values
        np.testing.assert_array_equal(again.transform(data).values, out)
        imp.save(tmp_path / "model.npz")
        loaded = UL4M4Imputer.load(tmp_path / "model.npz")
        assert loaded.temperature_ == imp.temperature_
        assert (loaded.completion, loaded.n_candidates) == rule
        np.testing.assert_array_equal(loaded.transform(data).values, out)
        for batch_size in (1, 7, 97, 10_000):
            imp.set_params(batch_size=batch_size)
            np.testing.assert_array_equal(imp.transform(data).values, out)
        half = data.take(np.arange(100))
        np.testing.assert_array_equal(imp.transform(half).values, out[:100])


def test_auto_temperature_is_the_grid_value_that_best_reconstructs_held_out_modalities():
    """Re-derive "auto" by hand: hold out the same modalities (same seeded draws), fill them
    at every grid temperature with the low-level function, keep the lowest error."""
    imp, data = fitted(("overlap", 4), seed=3)
    z = normalise(data.values, data.mask, imp.mean_, imp.scale_, data.dims)
    z = np.where(np.repeat(data.mask, data.dims, axis=1), z, 0)
    rng = np.random.RandomState(3)
    eligible = np.flatnonzero(data.mask.sum(axis=1) >= 2)
    picked = np.sort(rng.choice(eligible, size=eligible.size, replace=False))
    held = np.array([rng.choice(np.flatnonzero(data.mask[i])) for i in picked])
    mask = data.mask[picked].copy()
    mask[np.arange(picked.size), held] = False
    hidden = np.repeat(~mask & data.mask[picked], data.dims, axis=1)
    errors = []
    for temperature in TEMPERATURE_GRID:
        done, _ = greedy_complete(z[picked], mask, imp.cluster_centers_, imp.centers_mask_,
                                  data.dims, completion="overlap", n_candidates=4,
                                  temperature=temperature)
        errors.append(float(((done - z[picked])[hidden] ** 2).mean()))
    assert imp.temperature_ == TEMPERATURE_GRID[int(np.argmin(errors))]
    assert len(set(np.round(errors, 12))) > 1, "the grid must matter on this data"


def test_a_number_temperature_is_used_as_given_and_a_hard_pick_ignores_it():
    imp, data = fitted(("nearest", 3), temperature=0.25)
    assert imp.temperature_ == 0.25
    sharp, _ = fitted(("nearest", 3), temperature=1e-6)
    hard, _ = fitted(("nearest", 1))
    np.testing.assert_allclose(sharp.transform(data).values, hard.transform(data).values,
                               rtol=1e-6, atol=1e-6)


def test_an_auto_temperature_after_set_params_changed_the_rule_warns(tmp_path):
    """τ="auto" was chosen for the fit's rule: transform under another rule warns (and still
    uses the fitted τ), the same rule or a number does not, nor does the saved model."""
    imp, data = fitted(("nearest", 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletionWarning)
        imp.transform(data)
        imp.save(tmp_path / "model.npz")
        UL4M4Imputer.load(tmp_path / "model.npz").transform(data)
    for change in ({"n_candidates": 4}, {"completion": "overlap"}):
        changed = clone_fitted(imp, **change)
        with pytest.warns(CompletionWarning, match=r"temperature_=.* was chosen at fit for "
                                                   r"completion='nearest', n_candidates=3") \
                as caught:
            changed.transform(data)
        assert sum("was chosen at fit" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletionWarning)
        clone_fitted(imp, n_candidates=4, temperature=0.5).transform(data)
        clone_fitted(imp, n_candidates=1).transform(data)  # a hard pick has no τ


def clone_fitted(imp, **params):
    """A copy of the fitted ``imp`` with ``params`` set after the fit."""
    import copy

    return copy.deepcopy(imp).set_params(**params)


def blind_share_by_hand(imp, data):
    """Share of hard-pick fills whose source centre shares no observed modality with its
    row, from the sources and masks directly."""
    sources = imp.imputation_sources(data)
    rows, modalities = np.nonzero(sources >= 0)
    shares = (data.mask[rows] & imp.centers_mask_[sources[rows, modalities]]).any(axis=1)
    return float((~shares).mean()), rows, modalities


def test_report_counts_fills_blind_sources_and_zero_scores_as_the_sources_say():
    imp, data = fitted(("paper", 1), k=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletionWarning)
        _, report = imp.transform(data, return_report=True)
    np.testing.assert_array_equal(report.filled, (~data.mask).sum(axis=0))
    share, rows, modalities = blind_share_by_hand(imp, data)
    assert report.overall_blind_share == pytest.approx(share)
    per_modality = [(~(data.mask[rows[modalities == m]]
                       & imp.centers_mask_[imp.imputation_sources(data)[rows[modalities == m], m]]
                       ).any(axis=1)).mean() for m in range(3)]
    np.testing.assert_allclose(report.blind_share, per_modality)
    summary = report.as_dict()
    assert set(summary) == {"m0", "m1", "m2", "rows_without_modality"}
    assert summary["m1"]["filled"] == int((~data.mask[:, 1]).sum())


def with_pair_and_single_centres(completion):
    """A model whose centres carry {m0, m1}, {m1, m2}, {m0, m2}, {m1}, {m2}, {m0}: for a row
    observing one modality, the paper's score puts the centres sharing nothing with it at 0
    (the blind spot), while every missing modality also has a carrier sharing an observed
    one, so the nearest rule never needs a blind centre."""
    blocks, mask = make_data(5, n=300, observed=0.5)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    imp = UL4M4Imputer(n_clusters=6, random_state=0, completion=completion,
                       n_candidates=1).fit(data)
    rng = np.random.default_rng(0)
    imp.centers_mask_ = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1],
                                  [1, 0, 0]], dtype=bool)
    imp.cluster_centers_ = (rng.normal(size=(6, data.values.shape[1]))
                            * np.repeat(imp.centers_mask_, data.dims, axis=1)).astype(np.float32)
    return imp, data


def test_a_hard_pick_drawing_many_fills_from_blind_centres_warns_once_naming_the_share():
    paper, data = with_pair_and_single_centres("paper")
    with pytest.warns(CompletionWarning, match=r"\d+% of the fills came from centres") as caught:
        _, report = paper.transform(data, return_report=True)
    assert sum("of the fills" in str(w.message) for w in caught) == 1
    share, _, _ = blind_share_by_hand(paper, data)
    assert share > 0.10
    assert report.overall_blind_share == pytest.approx(share)
    nearest, _ = with_pair_and_single_centres("nearest")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletionWarning)
        _, report = nearest.transform(data, return_report=True)
    assert report.overall_blind_share == 0.0


def test_rows_observing_nothing_take_no_part_in_the_fit_and_get_the_mean():
    blocks, mask = make_data(2, n=150)
    mask[[4, 40, 90]] = False
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    with pytest.warns(UserWarning, match="3 rows observe no modality"):
        imp = UL4M4Imputer(n_clusters=5, random_state=0, completion="overlap").fit(data)
    assert (imp.labels_[[4, 40, 90]] == -1).all()
    with pytest.warns(CompletionWarning, match="3 rows observe no modality"):
        out, report = imp.transform(data, return_report=True)
    np.testing.assert_allclose(out.values[[4, 40, 90]], np.tile(imp.mean_, (3, 1)), rtol=1e-6)
    assert (imp.imputation_sources(data)[[4, 40, 90]] == -1).all()
    assert report.rows_without_modality == 3
    np.testing.assert_array_equal(report.mean_filled, [3, 3, 3])


def test_a_model_file_without_completion_parameters_is_read_as_the_paper_rule(tmp_path):
    imp, data = fitted(("paper", 1))
    imp.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    for name in ("completion", "n_candidates", "temperature"):
        del meta["params"][name]
    del meta["temperature"]
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), **arrays)
    old = UL4M4Imputer.load(tmp_path / "old.npz")
    assert (old.completion, old.n_candidates) == ("paper", 1)
    np.testing.assert_array_equal(old.transform(data).values, imp.transform(data).values)


@pytest.mark.parametrize("params, message", [
    (dict(completion="greedy"), "completion must be one of"),
    (dict(n_candidates=0), "n_candidates"),
    (dict(n_candidates=2.5), "n_candidates"),
    (dict(temperature=0.0), "temperature must be"),
    (dict(temperature=-1.0), "temperature must be"),
    (dict(temperature=float("nan")), "temperature must be"),
    (dict(temperature="hot"), "temperature must be"),
    (dict(temperature=True), "temperature must be"),
])
def test_bad_completion_parameters_are_named(params, message):
    blocks, mask = make_data(0, n=30)
    with pytest.raises(ValueError, match=message):
        UL4M4Imputer(n_clusters=2, **params).fit(MultiModalArray.from_modalities(blocks, mask=mask))
    if "temperature" in params and params["temperature"] != "hot":
        with pytest.raises(ValueError, match=message):
            greedy_complete(np.zeros((2, 2)), np.ones((2, 1), bool), np.zeros((1, 2)),
                            np.ones((1, 1), bool), (2,), **params)
    with pytest.raises(ValueError, match="temperature must be a finite float > 0, got 'auto'"):
        greedy_complete(np.zeros((2, 2)), np.ones((2, 1), bool), np.zeros((1, 2)),
                        np.ones((1, 1), bool), (2,), temperature="auto")
