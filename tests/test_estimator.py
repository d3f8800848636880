"""UL4M4Imputer: contract of fit/transform, invariances, persistence and input errors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from ul4m4_gpu import (
    MultiModalArray,
    UL4M4Imputer,
    greedy_complete,
    kmeans_plusplus,
    lloyd,
    partial_distances,
)
from ul4m4_gpu.core.normalise import fit_modality_stats, normalise


def make_data(seed, n=120, dims=(4, 3, 2), observed=0.6, scales=None):
    """Clustered data with random missing modalities (each row keeps at least one)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(5, sum(dims)))
    x = centres[rng.integers(5, size=n)] + rng.normal(size=(n, sum(dims)))
    mask = rng.random((n, len(dims))) < observed
    mask[~mask.any(axis=1), 0] = True
    offsets = np.cumsum((0,) + tuple(dims))
    blocks = [x[:, offsets[m]:offsets[m + 1]] for m in range(len(dims))]
    if scales is not None:
        blocks = [b * s for b, s in zip(blocks, scales)]
    return blocks, mask


@st.composite
def datasets(draw):
    n_mod = draw(st.integers(1, 5))
    dims = tuple(draw(st.lists(st.integers(1, 12), min_size=n_mod, max_size=n_mod)))
    n = draw(st.integers(6, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    observed = draw(st.floats(0.3, 0.9))
    blocks, mask = make_data(seed, n, dims, observed)
    mask[:n_mod, :] = np.eye(n_mod, dtype=bool)[: min(n, n_mod)] | mask[:n_mod, :]
    k = draw(st.integers(1, min(6, n)))
    return blocks, mask, k, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets())
def test_observed_values_are_returned_bit_for_bit_and_every_slot_filled(case):
    blocks, mask, k, seed = case
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    out = UL4M4Imputer(n_clusters=k, random_state=seed).fit_transform(data)
    assert np.isfinite(out.values).all()
    assert out.mask.all()
    np.testing.assert_array_equal(out.imputed, ~mask)
    for m, block in enumerate(blocks):
        observed = mask[:, m]
        np.testing.assert_array_equal(out.modality(m)[observed], block[observed].astype(np.float32))


@settings(max_examples=25, deadline=None)
@given(datasets())
def test_transform_equals_greedy_complete_on_the_normalised_data(case):
    """The estimator's input-space output is the low-level completion, de-normalised."""
    blocks, mask, k, seed = case
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    imp = UL4M4Imputer(n_clusters=k, random_state=seed).fit(data)
    z = normalise(data.values, data.mask, imp.mean_, imp.scale_, data.dims)
    z_done, _ = greedy_complete(z, data.mask, imp.cluster_centers_, imp.centers_mask_, data.dims,
                                temperature=imp.temperature_)
    expected = z_done.astype(np.float64) * imp.scale_ + imp.mean_
    out = imp.transform(data)
    imputed = np.repeat(~mask, data.dims, axis=1)
    np.testing.assert_allclose(out.values[imputed], expected[imputed], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", ["scale", "shift"])
def test_scale_and_shift_of_one_modality_change_neither_labels_nor_sources(change):
    blocks, mask = make_data(3, n=200)
    moved = list(blocks)
    moved[1] = blocks[1] * 1000.0 if change == "scale" else blocks[1] + 250.0
    fits = []
    for b in (blocks, moved):
        data = MultiModalArray.from_modalities(b, mask=mask)
        imp = UL4M4Imputer(n_clusters=6, random_state=7).fit(data)
        fits.append((imp.labels_, imp.imputation_sources(data), imp.transform(data)))
    np.testing.assert_array_equal(fits[0][0], fits[1][0])
    np.testing.assert_array_equal(fits[0][1], fits[1][1])
    factor, offset = (1000.0, 0.0) if change == "scale" else (1.0, 250.0)
    rows = ~mask[:, 1]
    np.testing.assert_allclose(fits[1][2].modality(1)[rows],
                               fits[0][2].modality(1)[rows] * factor + offset, rtol=1e-4, atol=1e-2)


def test_same_random_state_same_result_and_different_seeds_differ():
    blocks, mask = make_data(0, n=150)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    a = UL4M4Imputer(n_clusters=8, random_state=11).fit(data)
    b = UL4M4Imputer(n_clusters=8, random_state=11).fit(data)
    c = UL4M4Imputer(n_clusters=8, random_state=12).fit(data)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.transform(data).values, b.transform(data).values)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_save_load_round_trip_gives_identical_output(tmp_path):
    blocks, mask = make_data(1)
    data = MultiModalArray.from_modalities(blocks, mask=mask, names=["img", "txt", "aud"])
    imp = UL4M4Imputer(n_clusters=5, random_state=0, tol=1e-4).fit(data)
    imp.save(tmp_path / "model.npz")
    loaded = UL4M4Imputer.load(tmp_path / "model.npz")
    assert loaded.get_params() == imp.get_params()
    assert loaded.modality_names_ == ("img", "txt", "aud")
    assert (loaded.n_iter_, loaded.inertia_) == (imp.n_iter_, imp.inertia_)
    np.testing.assert_array_equal(loaded.transform(data).values, imp.transform(data).values)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as archive:
        assert "cluster_centers_" in archive.files


def test_save_load_keeps_explicit_init(tmp_path):
    blocks, mask = make_data(2)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    centres = np.zeros((2, 9), dtype=np.float32)
    centres[1] = 1.0
    init = (centres, np.array([[True, True, False], [True, False, True]]))
    imp = UL4M4Imputer(n_clusters=2, init=init).fit(data)
    imp.save(tmp_path / "m.npz")
    loaded = UL4M4Imputer.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.init[0], centres)
    np.testing.assert_array_equal(loaded.transform(data).values, imp.transform(data).values)


def test_explicit_init_runs_lloyd_from_those_centres():
    blocks, mask = make_data(4)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    mean, scale = fit_modality_stats(data.values, data.mask, data.dims)
    z = normalise(data.values, data.mask, mean, scale, data.dims)
    centres, centres_mask = z[[0, 10, 20]], data.mask[[0, 10, 20]]
    imp = UL4M4Imputer(n_clusters=3, init=(centres, centres_mask)).fit(data)
    ref = lloyd(z, data.mask, data.dims, centres, centres_mask)
    np.testing.assert_array_equal(imp.labels_, ref.labels)
    np.testing.assert_array_equal(imp.centers_mask_, ref.centers_mask)
    np.testing.assert_allclose(imp.cluster_centers_, ref.centers, atol=1e-6)


def test_more_inits_never_worsen_inertia():
    blocks, mask = make_data(5, n=200)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    one = UL4M4Imputer(n_clusters=7, random_state=3, n_init=1).fit(data)
    many = UL4M4Imputer(n_clusters=7, random_state=3, n_init=6).fit(data)
    assert many.inertia_ <= one.inertia_


def test_uncarried_modality_is_mean_filled_and_reported():
    # modality 2 is observed only by rows that observe nothing else: they share no modality
    # with the centres (which lack modality 2), get label -1, and no centre ever gains it.
    rng = np.random.default_rng(0)
    n = 40
    mask = np.zeros((n, 3), dtype=bool)
    mask[:30, :2] = True
    mask[30:35, 2] = True
    mask[35:, 0] = True
    blocks = [rng.normal(size=(n, 2)), rng.normal(size=(n, 3)), rng.normal(size=(n, 4))]
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    init = (np.zeros((2, 9), np.float32), np.array([[True, True, False], [True, False, False]]))
    with pytest.warns(UserWarning, match="no centre carries"):
        imp = UL4M4Imputer(n_clusters=2, init=init).fit(data)
    assert (imp.labels_[30:35] == -1).all()
    with pytest.warns(UserWarning, match="filled with the training mean"):
        out = imp.transform(data)
    block = data.modality(2)[30:35].astype(np.float64)
    np.testing.assert_allclose(out.modality(2)[:30], np.tile(block.mean(axis=0), (30, 1)), rtol=1e-5)


def test_sklearn_parameter_protocol():
    imp = UL4M4Imputer(n_clusters=3, tol=0.1)
    assert clone(imp).get_params() == imp.get_params()
    imp.set_params(n_clusters=4)
    assert imp.n_clusters == 4
    assert "n_clusters=4" in repr(imp)


def test_cuda_without_gpu_raises_and_auto_falls_back():
    pytest.importorskip("numpy")
    from ul4m4_gpu.core.backend import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    blocks, mask = make_data(0)
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        UL4M4Imputer(n_clusters=2, device="cuda").fit(MultiModalArray.from_modalities(blocks, mask=mask))
    imp = UL4M4Imputer(n_clusters=2, device="auto").fit(MultiModalArray.from_modalities(blocks, mask=mask))
    assert imp.device_ == "cpu"


# ---------------------------------------------------------------- bad input

def fitted(n=50):
    blocks, mask = make_data(0, n=n)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    return UL4M4Imputer(n_clusters=3, random_state=0).fit(data), blocks, mask


def test_batch_size_is_checked_where_it_is_used():
    blocks, mask = make_data(0)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    imputer = UL4M4Imputer(n_clusters=3, random_state=0).fit(data)
    for bad in (-1, 0, 2.5):
        imputer.set_params(batch_size=bad)
        with pytest.raises(ValueError, match="batch_size"):
            imputer.transform(data)
    z, centers_mask = data.values, imputer.centers_mask_
    with pytest.raises(ValueError, match="batch_size"):
        greedy_complete(np.nan_to_num(z), data.mask, imputer.cluster_centers_, centers_mask,
                        data.dims, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        lloyd(np.nan_to_num(z), data.mask, data.dims, imputer.cluster_centers_, centers_mask,
              batch_size=-2)


def test_values_other_than_float32_or_float64_are_refused_up_front():
    values = np.zeros((4, 3), dtype=np.float16)
    mask = np.ones((4, 2), dtype=bool)
    with pytest.raises(TypeError, match="values must be float32 or float64, got dtype float16"):
        MultiModalArray(values, mask, (2, 1))
    with pytest.raises(TypeError, match="z must be float32 or float64, got dtype float16"):
        greedy_complete(values, mask, np.zeros((2, 3)), mask[:2], (2, 1))


def test_low_level_functions_name_non_finite_observed_values():
    z = np.array([[np.nan, 1.0], [0.0, 1.0], [2.0, np.inf]])
    mask = np.array([[True, False], [True, True], [True, False]])  # the inf is not observed
    centers = np.array([[0.0, 1.0], [2.0, 0.0]])
    centers_mask = np.ones((2, 2), dtype=bool)
    dims = (1, 1)
    for call in (lambda: partial_distances(z, mask, centers, centers_mask, dims),
                 lambda: greedy_complete(z, mask, centers, centers_mask, dims),
                 lambda: lloyd(z, mask, dims, centers, centers_mask),
                 lambda: kmeans_plusplus(z, mask, dims, 2, random_state=0)):
        with pytest.raises(ValueError, match=r"^z, modality 0: rows \[0\] \(1 in all\) have NaN"):
            call()
    z[0, 0] = 1.0
    bad_centers = centers.copy()
    bad_centers[1, 1] = np.inf
    for call in (lambda: partial_distances(z, mask, bad_centers, centers_mask, dims),
                 lambda: greedy_complete(z, mask, bad_centers, centers_mask, dims),
                 lambda: lloyd(z, mask, dims, bad_centers, centers_mask)):
        with pytest.raises(ValueError, match=r"^centers, modality 1: rows \[1\]"):
            call()
    centers_mask[1, 1] = False  # an absent modality's values are ignored
    assert np.isfinite(partial_distances(z, mask, bad_centers, centers_mask, dims)).any()


def test_low_level_functions_check_their_arguments():
    z = np.random.default_rng(0).normal(size=(20, 3))
    mask = np.ones((20, 2), dtype=bool)
    dims = (2, 1)
    centers, centers_mask, _ = kmeans_plusplus(z, mask, dims, 2, random_state=0)
    for call, message in (
            (lambda: kmeans_plusplus(z, mask, dims, 0), "n_clusters must be an int >= 1, got 0"),
            (lambda: kmeans_plusplus(z, mask, dims, -1), "n_clusters must be an int >= 1"),
            (lambda: kmeans_plusplus(z, mask, dims, 2, random_state="abc"), "random_state must"),
            (lambda: lloyd(z, mask, dims, centers, centers_mask, max_iter=-1), "max_iter must"),
            (lambda: lloyd(z, mask, dims, centers, centers_mask, max_iter=0), "max_iter must"),
            (lambda: lloyd(z, mask, dims, centers, centers_mask, tol=-1), "tol must be a float"),
            (lambda: lloyd(z, mask, dims, centers, centers_mask, tol=np.nan), "tol must"),
            (lambda: greedy_complete(z, mask, centers[:0], centers_mask[:0], dims),
             r"centers must hold at least one centre, got shape \(0, 3\)"),
            (lambda: lloyd(z, mask, dims, centers[:0], centers_mask[:0]), "at least one centre")):
        with pytest.raises(ValueError, match=message):
            call()


def test_float32_values_near_its_maximum_are_normalised_without_overflow():
    top = np.finfo(np.float32).max
    rng = np.random.default_rng(0)
    big = np.where(rng.random((40, 2)) < 0.3, top, -top).astype(np.float32)
    big[:4] = top  # x − mean overflows float32 for these rows
    blocks = [big, rng.normal(size=(40, 2)).astype(np.float32)]
    mask = np.ones((40, 2), dtype=bool)
    mask[::3, 0] = False
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    mean, scale = fit_modality_stats(data.values, data.mask, data.dims)
    z = normalise(data.values, data.mask, mean, scale, data.dims)
    wide = normalise(data.values, data.mask, mean, scale, data.dims, np.float64)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = (data.values - mean.astype(np.float32)) / scale.astype(np.float32)
    observed = np.repeat(data.mask, data.dims, axis=1)
    overflowed = observed & ~np.isfinite(narrow)
    assert overflowed.any() and (observed & ~overflowed).any()
    # only the slots whose float32 arithmetic overflows go through float64, so a row's z
    # does not depend on the rows normalised with it
    np.testing.assert_array_equal(z[overflowed], wide.astype(np.float32)[overflowed])
    np.testing.assert_array_equal(z[observed & ~overflowed], narrow[observed & ~overflowed])
    for i in range(len(z)):
        np.testing.assert_array_equal(
            normalise(data.values[i:i + 1], data.mask[i:i + 1], mean, scale, data.dims), z[i:i + 1])
    for seed in range(5):  # seed 2 filled inf before: round-off carried a centre past top
        out = UL4M4Imputer(n_clusters=4, random_state=seed).fit_transform(data)
        assert np.isfinite(out.values).all()
        np.testing.assert_array_equal(out.modality(0)[mask[:, 0]], big[mask[:, 0]])
    tiny = scale.copy()
    tiny[:2] = 1e-30  # z = (x − mean) / scale beyond float32 even in float64
    with pytest.raises(ValueError, match=r"values, modality 0: rows \[1, 2, 4, 5, 7, \.\.\.\] "
                                         r"\(26 in all\) lie too far from the training mean"):
        normalise(data.values, data.mask, mean, tiny, data.dims)


def test_values_beyond_float32_are_named_not_called_inf():
    big = np.array([[1.0], [1e39], [2.0]])
    with pytest.raises(ValueError, match=r"modality 'm0': rows \[1\].*beyond the range of float32"):
        MultiModalArray.from_modalities([big, np.ones((3, 2))])


def test_modalities_are_matched_by_name():
    blocks, mask = make_data(0)
    names = ["img", "txt", "aud"][:len(blocks)]
    data = MultiModalArray.from_modalities(blocks, mask=mask, names=names)
    imputer = UL4M4Imputer(n_clusters=3, random_state=0).fit(data)
    expected, sources = imputer.transform(data), imputer.imputation_sources(data)
    order = names[::-1]
    shuffled = data.select(order)
    got = imputer.transform(shuffled)
    assert got.names == tuple(order)
    for name in names:
        np.testing.assert_array_equal(got.modality(name), expected.modality(name))
        np.testing.assert_array_equal(got.imputed[:, got.index(name)],
                                      expected.imputed[:, expected.index(name)])
    np.testing.assert_array_equal(imputer.imputation_sources(shuffled), sources[:, ::-1])
    renamed = MultiModalArray(data.values, data.mask, data.dims, ["image", *names[1:]])
    with pytest.raises(ValueError, match=r"missing: \['img'\], unexpected: \['image'\]"):
        imputer.transform(renamed)
    unnamed = MultiModalArray(data.values, data.mask, data.dims)  # m0, m1, ...: by position
    np.testing.assert_array_equal(imputer.transform(unnamed).values, expected.values)


def test_transform_before_fit():
    blocks, mask = make_data(0)
    with pytest.raises(NotFittedError, match="not fitted"):
        UL4M4Imputer().transform(MultiModalArray.from_modalities(blocks, mask=mask))


def test_nan_and_inf_in_observed_values_name_modality_and_rows():
    blocks, mask = make_data(0)
    mask[7, 1] = True
    blocks[1] = blocks[1].copy()
    blocks[1][7, 0] = np.inf
    with pytest.raises(ValueError, match=r"modality 'm1': rows \[7\].*NaN or inf"):
        MultiModalArray.from_modalities(blocks, mask=mask)
    blocks[1][7, 0] = np.nan
    blocks[1][8, :] = np.nan
    mask[8, 1] = True
    with pytest.raises(ValueError, match=r"rows \[7, 8\]"):
        MultiModalArray.from_modalities(blocks, mask=mask)


def test_ragged_rows_and_bfloat16_tensors():
    with pytest.raises(ValueError, match=r"modality 'txt' is ragged: rows \[2\] \(1 in all\) "
                                         r"differ in length from row 0 \(2 values\)"):
        MultiModalArray.from_modalities([np.ones((3, 1)), [[1.0, 2.0], [3.0, 4.0], [5.0]]],
                                        names=["img", "txt"])
    torch = pytest.importorskip("torch")
    values = torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.bfloat16)
    data = MultiModalArray.from_modalities([values], mask=torch.ones(2, 1, dtype=torch.bool))
    np.testing.assert_array_equal(data.values, values.float().numpy())


def test_dataframe_cells_that_pyarrow_refuses_are_named():
    pd = pytest.importorskip("pandas")
    mixed = pd.DataFrame({"img": [[1.0, 2.0], "n/a", [1.0, 3.0]]})
    with pytest.raises(TypeError, match=r"column 'img' cannot be read: cannot mix list and "
                                        r"non-list.*\(row 0 holds a list, row 1 a str\)"):
        MultiModalArray.from_dataframe(mixed)
    holed = pd.DataFrame({"img": [[1.0, 2.0], [1.0, 3.0], [np.nan, 1.0], None]})
    with pytest.raises(ValueError, match=r"modality column 'img': rows \[2\] \(1 in all\) have "
                                         r"null \(or, from pandas, NaN\) entries inside"):
        MultiModalArray.from_dataframe(holed)


def test_partly_nan_row_without_mask_is_rejected():
    x = np.ones((4, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"modality 'm0': rows \[2\].*partly NaN"):
        MultiModalArray.from_modalities([x])


def test_nan_written_into_a_container_is_caught_at_fit():
    blocks, mask = make_data(0)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    row = int(np.flatnonzero(mask[:, 0])[0])
    data.values[row, 0] = np.nan
    with pytest.raises(ValueError, match=rf"modality 'm0': rows \[{row}\]"):
        UL4M4Imputer(n_clusters=2).fit(data)


def test_mask_shape_mismatch():
    blocks, mask = make_data(0)
    with pytest.raises(ValueError, match="mask has shape"):
        MultiModalArray.from_modalities(blocks, mask=mask[:, :2])


def test_modality_observed_in_no_training_row():
    blocks, mask = make_data(0)
    mask[:, 2] = False
    mask[~mask.any(axis=1), 0] = True
    data = MultiModalArray.from_modalities(blocks, mask=mask, names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\['c'\] are observed in no training row"):
        UL4M4Imputer(n_clusters=2).fit(data)


def test_more_clusters_than_rows():
    blocks, mask = make_data(0, n=10)
    with pytest.raises(ValueError, match="n_clusters=11 is larger than the number of rows"):
        UL4M4Imputer(n_clusters=11).fit(MultiModalArray.from_modalities(blocks, mask=mask))


def test_dims_mismatch_at_transform():
    imp, blocks, mask = fitted()
    other = MultiModalArray.from_modalities([blocks[0], blocks[1][:, :2], blocks[2]], mask=mask)
    with pytest.raises(ValueError, match=r"dims \(4, 2, 2\) but the model was fitted on \(4, 3, 2\)"):
        imp.transform(other)


def test_empty_input():
    with pytest.raises(ValueError, match="empty input"):
        MultiModalArray.from_modalities([np.zeros((0, 3))])
    with pytest.raises(ValueError, match="empty"):
        MultiModalArray.from_modalities([])


def test_non_numeric_dtype():
    with pytest.raises(TypeError, match="non-numeric dtype"):
        MultiModalArray.from_modalities([np.array([["a", "b"], ["c", "d"]])])


def test_non_container_input():
    """A 2-D array is a container now (tests/test_sklearn.py); other shapes are refused."""
    with pytest.raises(ValueError, match="dim 3"):
        UL4M4Imputer(n_clusters=2).fit(np.ones((5, 3, 2)))


@pytest.mark.parametrize("params, message", [
    ({"n_clusters": 0}, "n_clusters must be an int >= 1"),
    ({"max_iter": 2.5}, "max_iter must be an int"),
    ({"tol": -1.0}, "tol must be a float >= 0"),
    ({"init": "random"}, r"init must be 'k-means\+\+'"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"device": "tpu"}, "device must be one of"),
    ({"init": (np.zeros((2, 9)), np.ones((2, 3), bool)), "n_init": 2, "n_clusters": 2},
     "n_init must be 1 with explicit"),
    ({"random_state": "abc"}, r"random_state must be None, an int in \[0, 2\*\*32 - 1\]"),
    ({"random_state": -1}, "random_state must be None, an int .* got -1"),
    ({"random_state": True}, "random_state must be None, an int .* got True"),
])
def test_bad_parameters(params, message):
    blocks, mask = make_data(0)
    with pytest.raises(ValueError, match=message):
        UL4M4Imputer(**params).fit(MultiModalArray.from_modalities(blocks, mask=mask))


def test_bad_explicit_init():
    blocks, mask = make_data(0)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    with pytest.raises(ValueError, match="init centers have shape"):
        UL4M4Imputer(n_clusters=2, init=(np.zeros((2, 5)), np.ones((2, 3), bool))).fit(data)
    with pytest.raises(ValueError, match=r"init centres \[1\] carry no modality"):
        UL4M4Imputer(n_clusters=2, init=(np.zeros((2, 9)), np.array([[1, 0, 0], [0, 0, 0]], bool))).fit(data)


def test_load_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model from .*nope.npz: no such file"):
        UL4M4Imputer.load(tmp_path / "nope.npz")
    path = tmp_path / "x.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(ValueError, match=r"model from .*x.npz: it is not a ul4m4 model file "
                                         r"\(it has no 'meta' entry; a data file\?\)$"):
        UL4M4Imputer.load(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read a UL4M4Imputer model"):
        UL4M4Imputer.load(path)


def test_load_names_the_file_for_empty_truncated_or_incomplete_models(tmp_path):
    blocks, mask = make_data(0)
    model = tmp_path / "model.npz"
    UL4M4Imputer(n_clusters=3, random_state=0).fit(
        MultiModalArray.from_modalities(blocks, mask=mask)).save(model)
    empty, truncated, incomplete = (tmp_path / f"{name}.npz"
                                    for name in ("empty", "truncated", "incomplete"))
    empty.write_bytes(b"")
    truncated.write_bytes(model.read_bytes()[:300])
    with np.load(model, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files if name != "cluster_centers_"}
    np.savez(incomplete, **entries)
    for path, reason in ((empty, ""), (truncated, ""), (incomplete, "no entry 'cluster_centers_'")):
        with pytest.raises(ValueError, match=rf"model from {path}: .*{reason}"):
            UL4M4Imputer.load(path)


def _with_entries(model, path, **changes):
    """A copy of the model file ``model`` at ``path`` with each entry ``name`` of
    ``changes`` replaced by ``change(its array)`` (meta: ``change(its dict)``, saved back
    as JSON)."""
    import json

    with np.load(model, allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    for name, change in changes.items():
        if name == "meta":
            entries[name] = np.array(json.dumps(change(json.loads(str(entries[name])))))
        else:
            entries[name] = change(entries[name].copy())
    np.savez(path, **entries)
    return path


def _set(index, value):
    def change(array):
        array[index] = value
        return array
    return change


def _meta(key, value):
    def change(meta):
        target = meta["params"] if key in meta["params"] else meta
        target[key] = value
        return meta
    return change


MODEL_DEFECTS = {
    "scale_ NaN": ("scale_", _set(0, np.nan), "'scale_': holds NaN or inf at columns [0]"),
    "scale_ 0": ("scale_", _set(3, 0.0), "'scale_': must be > 0, got [0.0]"),
    "scale_ -1": ("scale_", _set(3, -1.0), "'scale_': must be > 0, got [-1.0]"),
    "mean_ NaN": ("mean_", _set(2, np.nan), "'mean_': holds NaN or inf at columns [2]"),
    "carried centre NaN": ("cluster_centers_", _set((1, 0), np.nan),
                           "'cluster_centers_': centres, modality 0: rows [1]"),
    "carried centre inf": ("cluster_centers_", _set((0, 8), np.inf),
                           "'cluster_centers_': centres, modality 2: rows [0]"),
    "mean_ shape": ("mean_", lambda a: a[:7], "'mean_': has shape (7,), expected (9,)"),
    "centres shape": ("cluster_centers_", lambda a: a[:, :7], "expected (3, 9)"),
    "centres dtype": ("cluster_centers_", lambda a: a.astype(np.int64),
                      "cluster_centers_ must be float32 or float64"),
    "mask dtype": ("centers_mask_", lambda a: a.astype(np.int8), "must be boolean"),
    "labels range": ("labels_", _set(4, 3), "'labels_': must lie in [-1, 3)"),
    "n_clusters": ("meta", _meta("n_clusters", 4), "'cluster_centers_': has shape (3, 9), "
                                                   "expected (4, 9)"),
    "tol": ("meta", _meta("tol", -1.0), "'meta': parameters: tol must be a float >= 0"),
    "unknown parameter": ("meta", lambda meta: {**meta, "params": {**meta["params"],
                                                                   "colour": "red"}},
                          "'meta': parameters: "),
    "device": ("meta", _meta("device", "tpu"), "'meta': device must be one of"),
    "dims": ("meta", _meta("dims", [4, 3, 0]), "'meta': dims must be a non-empty list"),
    "names": ("meta", _meta("modality_names", ["a", "a", "b"]), "3 distinct strings"),
    "inertia": ("meta", _meta("inertia", float("nan")), "inertia must be a finite number"),
}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    blocks, mask = make_data(0)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    imputer = UL4M4Imputer(n_clusters=3, random_state=0).fit(data)
    assert imputer.centers_mask_[:2].all()  # the defects above hit carried modalities
    imputer.save(path)
    return path, data


@pytest.mark.parametrize("defect", list(MODEL_DEFECTS))
def test_load_checks_every_entry_and_names_it(tmp_path, saved_model, defect):
    model, _ = saved_model
    name, change, message = MODEL_DEFECTS[defect]
    path = _with_entries(model, tmp_path / "bad.npz", **{name: change})
    with pytest.raises(ValueError) as info:
        UL4M4Imputer.load(path)
    assert str(info.value).startswith(f"cannot read a UL4M4Imputer model from {path}: entry ")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_load_accepts_what_an_uncarried_centre_slot_holds(tmp_path, saved_model):
    model, data = saved_model
    lacking = _with_entries(model, tmp_path / "lacking.npz", centers_mask_=_set((0, 2), False))
    holed = _with_entries(lacking, tmp_path / "holed.npz",
                          cluster_centers_=_set((0, slice(7, 9)), np.nan))
    np.testing.assert_array_equal(UL4M4Imputer.load(holed).transform(data).values,
                                  UL4M4Imputer.load(lacking).transform(data).values)


def test_batching_and_pattern_splits_do_not_change_the_result(monkeypatch):
    import ul4m4_gpu.core.completion as completion

    blocks, mask = make_data(6, n=90, dims=(3, 2, 4, 1))
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    imp = UL4M4Imputer(n_clusters=5, random_state=0).fit(data)
    whole = imp.imputation_sources(data)
    imp.set_params(batch_size=7)
    np.testing.assert_array_equal(imp.imputation_sources(data), whole)
    monkeypatch.setattr(completion, "PATTERN_TRIPLES_PER_BATCH", 1)  # split down to single rows
    np.testing.assert_array_equal(imp.imputation_sources(data), whole)
    np.testing.assert_array_equal(
        UL4M4Imputer(n_clusters=5, random_state=0, batch_size=11).fit(data).labels_, imp.labels_)


def test_save_accepts_numpy_integer_parameters(tmp_path):
    blocks, mask = make_data(0)
    data = MultiModalArray.from_modalities(blocks, mask=mask)
    imp = UL4M4Imputer(n_clusters=np.int64(3), random_state=np.int64(0), max_iter=np.int32(20))
    imp.fit(data).save(tmp_path / "m.npz")
    loaded = UL4M4Imputer.load(tmp_path / "m.npz")
    assert loaded.n_clusters == 3 and loaded.random_state == 0 and loaded.max_iter == 20
    np.testing.assert_array_equal(loaded.transform(data).values, imp.transform(data).values)
