"""Tests for ul4m4_gpu.evaluation.missing: seeded missing-modality masks and their application."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ul4m4_gpu.io.data import MultiModalArray
from ul4m4_gpu.evaluation.missing import (
    availability_mask,
    expected_missing_fraction,
    hide_modalities,
    missing_fraction,
    parse_missing_config,
    pattern_groups,
    pattern_groups_mask,
    simulate_missing,
    uniform_missing_mask,
)

FAST = settings(max_examples=40, deadline=None)


def _group_index(mask, patterns):
    """(N,) index of the pattern each row of ``mask`` equals; -1 when it equals none."""
    hits = (mask[:, None, :] == patterns[None, :, :]).all(axis=2)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), -1)


# ---------------------------------------------------------------------- pattern groups
def test_pattern_groups_small_m_in_paper_order():
    assert pattern_groups(1).tolist() == [[True]]
    assert pattern_groups(2).tolist() == [[True, True], [True, False], [False, True]]
    t, f = True, False
    assert pattern_groups(3).tolist() == [
        [t, t, t], [t, f, f], [f, t, f], [f, f, t], [t, t, f], [t, f, t], [f, t, t],
    ]


@FAST
@given(st.integers(1, 8))
def test_pattern_groups_enumerate_every_nonempty_subset(m):
    patterns = pattern_groups(m)
    assert patterns.shape == (2**m - 1, m) and patterns.dtype == bool
    assert patterns[0].all()
    subsets = [tuple(np.flatnonzero(p)) for p in patterns[1:]]
    expected = [c for size in range(1, m) for c in itertools.combinations(range(m), size)]
    assert subsets == expected


def test_pattern_groups_prefix_for_many_modalities():
    patterns = pattern_groups(64, 66)
    assert patterns.shape == (66, 64)
    assert patterns[0].all()
    assert (patterns[1:65] == np.eye(64, dtype=bool)).all()
    assert np.flatnonzero(patterns[65]).tolist() == [0, 1]


@pytest.mark.parametrize("n_groups", [0, 4, 2.5])
def test_pattern_groups_rejects_bad_n_groups(n_groups):
    with pytest.raises(ValueError, match="n_groups"):
        pattern_groups(2, n_groups)


@pytest.mark.parametrize(
    "n, fractions, counts",
    [
        (10, [0.6, 0.2, 0.2], [6, 2, 2]),
        (7, [0.5, 0.5], [4, 3]),  # tie: the lower group gets the extra row
        (10, [1 / 3, 1 / 3, 1 / 3], [4, 3, 3]),
        (11, [0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1], [3, 2, 2, 1, 1, 1, 1]),
        (5, [0.0, 1.0], [0, 5]),
        (0, [0.6, 0.4], [0, 0]),
    ],
)
def test_pattern_groups_mask_exact_counts(n, fractions, counts):
    m = 3 if len(fractions) > 3 else 2
    mask = pattern_groups_mask(n, fractions, m, random_state=0)
    groups = _group_index(mask, pattern_groups(m))
    assert (groups >= 0).all()
    assert np.bincount(groups, minlength=2**m - 1)[: len(counts)].tolist() == counts
    assert (groups < len(fractions)).all()


@FAST
@given(
    n=st.integers(0, 300),
    m=st.integers(1, 5),
    weights=st.lists(st.integers(0, 20), min_size=1, max_size=8),
    seed=st.integers(0, 2**31 - 1),
)
def test_pattern_groups_mask_properties(n, m, weights, seed):
    weights = weights[: 2**m - 1]
    if sum(weights) == 0:
        weights[0] = 1
    fractions = np.asarray(weights) / sum(weights)
    mask = pattern_groups_mask(n, fractions, m, random_state=seed)
    assert mask.shape == (n, m) and mask.dtype == bool
    groups = _group_index(mask, pattern_groups(m, len(fractions)))
    assert (groups >= 0).all(), "every row follows one of the listed patterns"
    counts = np.bincount(groups, minlength=len(fractions))
    assert counts.sum() == n
    assert np.all(np.abs(counts - fractions * n) < 1)
    assert mask.any(axis=1).all()


def test_pattern_groups_mask_shuffles_rows():
    a = pattern_groups_mask(1000, [0.5, 0.5], 2, random_state=1)
    b = pattern_groups_mask(1000, [0.5, 0.5], 2, random_state=2)
    assert (a == pattern_groups_mask(1000, [0.5, 0.5], 2, random_state=1)).all()
    assert not (a == b).all()
    assert 0.3 < a[:500, 1].mean() < 0.7, "groups are not laid out in blocks"


@pytest.mark.parametrize(
    "fractions, match",
    [
        ([0.5, 0.4], "sum to 1"),
        ([1.2, -0.2], ">= 0"),
        ([], "empty"),
        ([0.25, 0.25, 0.25, 0.25], "only 3 pattern groups"),
    ],
)
def test_pattern_groups_mask_rejects_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        pattern_groups_mask(10, fractions, 2)


def test_pattern_groups_mask_accepts_rounding_slack():
    mask = pattern_groups_mask(9, [1 / 3, 1 / 3, 1 / 3 + 5e-7], 2, random_state=0)
    assert np.bincount(_group_index(mask, pattern_groups(2))).tolist() == [3, 3, 3]


# ---------------------------------------------------------------------- availability
def test_availability_mask_rates_without_restoration():
    rates = [0.9, 0.5, 0.1]
    mask = availability_mask(200_000, rates, random_state=0, allow_empty=True)
    assert mask.shape == (200_000, 3) and mask.dtype == bool
    np.testing.assert_allclose(mask.mean(axis=0), rates, atol=0.005)
    # independence: P(0 and 1 observed) = 0.9 * 0.5
    assert abs((mask[:, 0] & mask[:, 1]).mean() - 0.45) < 0.005


def test_availability_mask_restores_empty_rows_in_proportion_to_rates():
    rates = np.array([0.5, 0.2, 0.1])
    mask = availability_mask(200_000, rates, random_state=0)
    assert mask.any(axis=1).all()
    p_empty = np.prod(1 - rates)
    expected = rates + p_empty * rates / rates.sum()
    np.testing.assert_allclose(mask.mean(axis=0), expected, atol=0.005)
    assert abs((mask.sum(axis=1) == 1).mean() - _p_exactly_one(rates) - p_empty) < 0.005


def _p_exactly_one(rates):
    return sum(r * np.prod(np.delete(1 - rates, m)) for m, r in enumerate(rates))


def test_availability_mask_extreme_rates():
    mask = availability_mask(500, [1.0, 0.0, 1.0], random_state=3)
    assert mask[:, 0].all() and not mask[:, 1].any() and mask[:, 2].all()
    only_second = availability_mask(50, [0.0, 0.3], random_state=3)
    assert only_second[:, 1].all() and not only_second[:, 0].any()


def test_availability_mask_all_zero_rates():
    with pytest.raises(ValueError, match="allow_empty"):
        availability_mask(10, [0.0, 0.0])
    assert not availability_mask(10, [0.0, 0.0], allow_empty=True).any()


@FAST
@given(
    n=st.integers(0, 200),
    rates=st.lists(st.floats(0, 1), min_size=1, max_size=10).filter(any),
    seed=st.integers(0, 2**31 - 1),
)
def test_availability_mask_never_leaves_empty_rows(n, rates, seed):
    mask = availability_mask(n, rates, random_state=seed)
    assert mask.shape == (n, len(rates))
    assert mask.any(axis=1).all()
    zero = np.asarray(rates) == 0
    assert not mask[:, zero].any(), "a modality with rate 0 is never observed"


def test_availability_mask_determinism_and_seeds():
    a = availability_mask(1000, [0.5, 0.5, 0.5], random_state=7)
    assert (a == availability_mask(1000, [0.5, 0.5, 0.5], random_state=7)).all()
    assert not (a == availability_mask(1000, [0.5, 0.5, 0.5], random_state=8)).all()
    rng = np.random.RandomState(7)
    assert (a == availability_mask(1000, [0.5, 0.5, 0.5], random_state=rng)).all()


def test_availability_mask_sixty_four_modalities():
    mask = availability_mask(300, np.full(64, 0.02), random_state=0)
    assert mask.shape == (300, 64) and mask.any(axis=1).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_samples=-1, rates=[0.5]), ValueError, "n_samples"),
        (dict(n_samples=2.0, rates=[0.5]), TypeError, "n_samples"),
        (dict(n_samples=True, rates=[0.5]), TypeError, "n_samples"),
        (dict(n_samples=5, rates=[0.5, 1.5]), ValueError, "rates"),
        (dict(n_samples=5, rates=[0.5, float("nan")]), ValueError, "rates"),
        (dict(n_samples=5, rates=[]), ValueError, "rates"),
        (dict(n_samples=5, rates=[0.5] * 65), ValueError, "rates"),
        (dict(n_samples=5, rates=[[0.5, 0.5]]), ValueError, "rates"),
        (dict(n_samples=5, rates="0.5"), TypeError, "rates"),
        (dict(n_samples=5, rates=["a", "b"]), TypeError, "rates"),
    ],
)
def test_availability_mask_validates_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        availability_mask(**kwargs)


# ---------------------------------------------------------------------- uniform
def test_uniform_missing_mask_rate_and_equivalence():
    mask = uniform_missing_mask(100_000, 4, 0.3, random_state=0, allow_empty=True)
    assert abs(missing_fraction(mask) - 0.3) < 0.005
    same = availability_mask(5000, [0.4] * 4, random_state=5)
    assert (uniform_missing_mask(5000, 4, 0.6, random_state=5) == same).all()


def test_uniform_missing_mask_restores_uniformly():
    mask = uniform_missing_mask(100_000, 2, 0.6, random_state=0)
    assert mask.any(axis=1).all()
    # expected observed rate per modality: 0.4 + 0.36 / 2
    np.testing.assert_allclose(mask.mean(axis=0), [0.58, 0.58], atol=0.006)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((10, 2, 1.0), {}, ValueError, "missing_rate"),
        ((10, 2, -0.1), {}, ValueError, "missing_rate"),
        ((10, 2, "0.5"), {}, TypeError, "missing_rate"),
        ((10, 0, 0.5), {}, ValueError, "n_modalities"),
        ((10, 65, 0.5), {}, ValueError, "n_modalities"),
        ((10, 2.0, 0.5), {}, TypeError, "n_modalities"),
    ],
)
def test_uniform_missing_mask_validates_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        uniform_missing_mask(*args, **kwargs)


def test_uniform_missing_mask_everything_missing_when_allowed():
    assert not uniform_missing_mask(10, 3, 1.0, allow_empty=True).any()


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "config, names, expected",
    [
        ("none", ["image", "text"], {"kind": "none"}),
        ("missing_60", ["a", "b", "c"], {"kind": "uniform", "missing_rate": 0.6}),
        ("missing_12.5", ["a"], {"kind": "uniform", "missing_rate": 0.125}),
        ("100_image_20_text", ["image", "text"], {"kind": "availability", "rates": (1.0, 0.2)}),
        ("20_text", ["image", "text"], {"kind": "availability", "rates": (1.0, 0.2)}),
        ("50_v_0_t", ["t", "a", "v"], {"kind": "availability", "rates": (0.0, 1.0, 0.5)}),
        ({"text": 0.2}, ["image", "text"], {"kind": "availability", "rates": (1.0, 0.2)}),
        ({}, ["image", "text"], {"kind": "availability", "rates": (1.0, 1.0)}),
        ("complex_60_20_20", ["image", "text"], {"kind": "groups", "fractions": (0.6, 0.2, 0.2)}),
        ("complex_100", ["a", "b", "c"], {"kind": "groups", "fractions": (1.0,)}),
    ],
)
def test_parse_missing_config_forms(config, names, expected):
    parsed = parse_missing_config(config, names)
    assert parsed.keys() == expected.keys()
    for key, value in expected.items():
        assert parsed[key] == pytest.approx(value) if key != "kind" else parsed[key] == value


def test_parse_missing_config_seven_groups():
    parsed = parse_missing_config("complex_20_20_20_10_10_10_10", ["t", "a", "v"])
    assert parsed["fractions"] == pytest.approx((0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1))


@pytest.mark.parametrize(
    "config",
    [
        "",
        "None",
        "missing",
        "missing_",
        "missing_60_40",
        "missing_abc",
        "missing_150",
        "complex",
        "complex_60_20",
        "complex_60_20_x",
        "complex_25_25_25_25",  # 4 groups, but 2 modalities have 3
        "100_image_20",
        "100_image_20_image",
        "image_100",
        "-20_image",
        "1e2_image",
    ],
)
def test_parse_missing_config_rejects_bad_strings(config):
    with pytest.raises(ValueError) as info:
        parse_missing_config(config, ["image", "text"])
    message = str(info.value)
    assert repr(config) in message
    assert "Accepted forms" in message and "complex_P1_P2" in message


@pytest.mark.parametrize("config", ["100_image_20_audio", {"audio": 0.5}])
def test_parse_missing_config_unknown_name_lists_valid_names(config):
    with pytest.raises(ValueError, match=r"unknown modalities \['audio'\].*'image', 'text'"):
        parse_missing_config(config, ["image", "text"])


@pytest.mark.parametrize(
    "config, names, error, match",
    [
        ({"text": 1.5}, ["image", "text"], ValueError, r"config\['text'\]"),
        ({"text": "high"}, ["image", "text"], TypeError, r"config\['text'\]"),
        (0.5, ["image", "text"], TypeError, "config"),
        (None, ["image", "text"], TypeError, "config"),
        ("none", "image", TypeError, "names"),
        ("none", [], ValueError, "names"),
        ("none", ["a", "a"], ValueError, "distinct"),
        ("none", ["a", 1], TypeError, "names"),
        ("none", [f"m{i}" for i in range(65)], ValueError, "names"),
        ("none", {"image", "text"}, TypeError, "names must be an ordered collection"),
    ],
)
def test_parse_missing_config_validates_arguments(config, names, error, match):
    with pytest.raises(error, match=match):
        parse_missing_config(config, names)


@pytest.mark.parametrize("names", [pd.Index(["img", "txt"]), np.array(["img", "txt"])])
def test_names_may_be_any_ordered_iterable_of_strings(names):
    mask = simulate_missing(50, names, "50_img", random_state=3)
    np.testing.assert_array_equal(mask, simulate_missing(50, ["img", "txt"], "50_img",
                                                         random_state=3))
    assert parse_missing_config("30_txt", np.array(["img", "txt"]))["rates"] == (1.0, 0.3)


def test_simulate_missing_dispatches_to_each_family():
    names = ["image", "text"]
    assert simulate_missing(20, names, "none").all()
    assert simulate_missing(20, names, "none").shape == (20, 2)
    np.testing.assert_array_equal(
        simulate_missing(500, names, "100_image_20_text", random_state=4),
        availability_mask(500, [1.0, 0.2], random_state=4),
    )
    np.testing.assert_array_equal(
        simulate_missing(500, names, {"text": 0.2}, random_state=4, allow_empty=True),
        availability_mask(500, [1.0, 0.2], random_state=4, allow_empty=True),
    )
    np.testing.assert_array_equal(
        simulate_missing(500, names, "missing_60", random_state=4),
        uniform_missing_mask(500, 2, 0.6, random_state=4),
    )
    np.testing.assert_array_equal(
        simulate_missing(500, names, "complex_60_20_20", random_state=4),
        pattern_groups_mask(500, [0.6, 0.2, 0.2], 2, random_state=4),
    )


def test_simulate_missing_paper_settings():
    mask = simulate_missing(10_000, ["image", "text"], "100_image_20_text", random_state=0)
    assert mask[:, 0].all()
    assert abs(mask[:, 1].mean() - 0.2) < 0.02
    mask = simulate_missing(1000, ["t", "a", "v"], "complex_20_20_20_10_10_10_10", random_state=0)
    counts = np.bincount(_group_index(mask, pattern_groups(3)), minlength=7)
    assert counts.tolist() == [200, 200, 200, 100, 100, 100, 100]


@pytest.mark.parametrize("config", ["100_image_20_text", "missing_60", "complex_60_20_20"])
def test_simulate_missing_seeds(config):
    a = simulate_missing(1000, ["image", "text"], config, random_state=11)
    assert (a == simulate_missing(1000, ["image", "text"], config, random_state=11)).all()
    assert not (a == simulate_missing(1000, ["image", "text"], config, random_state=12)).all()


def test_simulate_missing_validates_n_samples():
    with pytest.raises(ValueError, match="n_samples"):
        simulate_missing(-3, ["a"], "none")


# ---------------------------------------------------------------------- hide / fraction
def _small_data():
    rng = np.random.RandomState(0)
    mask = np.array([[True, True], [True, False], [True, True], [False, True]])
    return MultiModalArray.from_modalities(
        [rng.rand(4, 3), rng.rand(4, 2)], mask=mask, names=["a", "b"], device="cpu"
    )


def test_hide_modalities_hides_and_copies():
    data = _small_data()
    before_values, before_mask = data.values.copy(), data.mask.copy()
    keep = np.array([[True, False], [False, True], [True, True], [True, True]])
    out = hide_modalities(data, keep)
    np.testing.assert_array_equal(data.values, before_values)  # NaN-aware equality
    np.testing.assert_array_equal(data.mask, before_mask)
    assert out.values is not data.values
    assert out.dims == data.dims and out.names == data.names and out.device == data.device
    np.testing.assert_array_equal(out.mask, before_mask & keep)
    for m in range(2):
        block, original = out.modality(m), data.modality(m)
        assert np.isnan(block[~out.mask[:, m]]).all()
        np.testing.assert_array_equal(block[out.mask[:, m]], original[out.mask[:, m]])
    assert out.values.dtype == np.float32


def test_hide_modalities_clears_imputed_on_hidden_slots():
    data = _small_data()
    data.imputed = np.array([[False, True], [False, False], [True, False], [False, False]])
    keep = np.array([[True, False], [True, True], [False, True], [True, True]])
    out = hide_modalities(data, keep)
    assert not out.imputed.any()
    assert data.imputed[0, 1] and data.imputed[2, 0]


def test_hide_modalities_all_true_is_a_copy():
    data = _small_data()
    out = hide_modalities(data, np.ones((4, 2), dtype=bool))
    np.testing.assert_array_equal(out.values, data.values)
    out.values[0, 0] = 123.0
    assert data.values[0, 0] != 123.0


@pytest.mark.parametrize(
    "mask, error, match",
    [
        (np.ones((3, 2), dtype=bool), ValueError, "shape"),
        (np.ones((4, 3), dtype=bool), ValueError, "shape"),
        (np.ones(8, dtype=bool), ValueError, "2-D"),
        (np.ones((4, 2), dtype=int), TypeError, "boolean"),
    ],
)
def test_hide_modalities_validates_mask(mask, error, match):
    with pytest.raises(error, match=match):
        hide_modalities(_small_data(), mask)


def test_hide_modalities_rejects_non_container():
    with pytest.raises(TypeError, match="MultiModalArray"):
        hide_modalities([np.zeros((4, 2))], np.ones((4, 1), dtype=bool))


def test_missing_fraction():
    assert missing_fraction(np.array([[True, False], [False, False]])) == 0.75
    assert missing_fraction([[True, True, True]]) == 0.0
    with pytest.raises(ValueError, match="empty"):
        missing_fraction(np.zeros((0, 3), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        missing_fraction(np.ones(3, dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        missing_fraction(np.ones((2, 2)))


def test_hide_modalities_accepts_torch_mask():
    torch = pytest.importorskip("torch")
    data = _small_data()
    keep = torch.tensor([[True, False], [True, True], [True, True], [True, True]])
    out = hide_modalities(data, keep)
    assert not out.mask[0, 1] and np.isnan(out.modality(1)[0]).all()


# ---------------------------------------------------------------- PEPSY-style lead dropping

@settings(max_examples=30, deadline=None)
@given(st.integers(0, 300), st.integers(1, 12), st.data())
def test_lead_drop_removes_exactly_k_modalities_per_row(n, m, data):
    from ul4m4_gpu import lead_drop_mask

    k = data.draw(st.integers(0, m - 1))
    mask = lead_drop_mask(n, m, k, random_state=3)
    assert mask.shape == (n, m)
    assert (mask.sum(axis=1) == m - k).all()
    np.testing.assert_array_equal(mask, lead_drop_mask(n, m, k, random_state=3))


def test_lead_drop_is_uniform_over_modalities_and_parsed():
    from ul4m4_gpu import lead_drop_mask

    mask = lead_drop_mask(60_000, 5, 2, random_state=0)
    np.testing.assert_allclose((~mask).mean(axis=0), 0.4, atol=0.01)
    names = ("a", "b", "c", "d", "e")
    assert parse_missing_config("drop_2", names) == {"kind": "drop", "n_drop": 2}
    np.testing.assert_array_equal(simulate_missing(50, names, "drop_2", random_state=1),
                                  lead_drop_mask(50, 5, 2, random_state=1))
    for bad in ("drop_5", "drop_x", "drop_1_2"):
        with pytest.raises(ValueError, match=bad):
            parse_missing_config(bad, names)


# ---------------------------------------------------------------------- expected fractions
@pytest.mark.parametrize("names, config, by_hand", [
    (("a", "b"), "missing_60", 0.6 - 0.36 / 2),             # p - p^M / M: a row keeps one
    (("a", "b"), "missing_75", 0.75 - 0.5625 / 2),
    (("a", "b"), "drop_1", 0.5),
    (("a", "b"), "100_b_20_a", 0.4),                        # (0.8 + 0) / 2, never empty
    (("a", "b", "c"), "50_a_50_b_50_c", (1.5 - 0.125) / 3),  # an empty row gets one back
    (("a", "b", "c"), "complex_40_30_30", (0.3 * 2 + 0.3 * 2) / 3),  # groups all, {a}, {b}
    (("a", "b", "c"), "none", 0.0),
])
def test_expected_missing_fraction_by_hand_and_against_the_masks(names, config, by_hand):
    """The formula against hand arithmetic, and against the mean of 200,000 simulated rows:
    a slot's hidden indicator has variance <= 1/4, so the mean of N rows is within
    4 · 0.5 / sqrt(N) = 0.0045 of its expectation but with probability < 1e-4."""
    assert expected_missing_fraction(config, names) == pytest.approx(by_hand, abs=1e-12)
    mask = simulate_missing(200_000, names, config, random_state=0)
    assert abs(missing_fraction(mask) - by_hand) < 4 * 0.5 / np.sqrt(200_000)
