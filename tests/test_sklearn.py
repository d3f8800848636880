"""UL4M4Imputer speaks scikit-learn and cuML: scikit-learn's estimator checks, plain 2-D
input with column groups, the input's type back out, pipelines and model selection."""

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from ul4m4_gpu import MultiModalArray, UL4M4Imputer

@parametrize_with_checks([UL4M4Imputer(n_clusters=2, random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows observing nothing, uncarried modalities
        check(estimator)


def grouped(seed=0, n=120, widths=(2, 3, 1), missing=0.3, classes=3):
    """(N, D) float64 rows of ``classes`` separated clusters with whole modalities NaN at
    random (never all of a row's), the (N, M) mask and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(scale=4.0, size=(classes, sum(widths)))
    x = centres[labels] + rng.normal(size=(n, sum(widths)))
    mask = rng.random((n, len(widths))) >= missing
    mask[~mask.any(axis=1), 0] = True
    x[~np.repeat(mask, widths, axis=1)] = np.nan
    return x, mask, labels


def literal_fill(x, widths, reference):
    """The fills of ``reference`` (a completed (N, D) array) written into a copy of ``x``
    where ``x`` is NaN: what every output type must hold."""
    out = x.copy()
    out[np.isnan(x)] = reference[np.isnan(x)]
    return out


@pytest.fixture(scope="module")
def fitted():
    x, mask, labels = grouped()
    imputer = UL4M4Imputer(n_clusters=3, random_state=0, modalities=[2, 3, 1])
    reference = imputer.fit(x).transform(x)
    return x, mask, labels, imputer, reference


def test_a_plain_array_goes_in_and_comes_out(fitted):
    x, mask, _, imputer, reference = fitted
    assert isinstance(reference, np.ndarray) and reference.shape == x.shape
    assert reference.dtype == np.float64
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(reference[observed], x[observed])  # bit for bit
    assert not np.isnan(reference).any()
    packed = MultiModalArray(x.astype(np.float32), mask, (2, 3, 1))
    on_container = UL4M4Imputer(n_clusters=3, random_state=0).fit(packed).transform(packed)
    np.testing.assert_allclose(reference[~observed], on_container.values[~observed], rtol=1e-5)
    assert imputer.n_features_in_ == 6 and not hasattr(imputer, "feature_names_in_")
    assert list(imputer.get_feature_names_out()) == [f"x{j}" for j in range(6)]


def test_every_output_type_holds_the_same_completion(fitted):
    """The output-type table of ul4m4_gpu.io.inputs, as tested."""
    x, mask, _, imputer, reference = fitted
    labels = list("abcdef")
    frame = pd.DataFrame(x, columns=labels, index=np.arange(len(x)) * 10)
    frame.insert(2, "note", [f"row{i}" for i in range(len(x))])
    by_label = clone(imputer).set_params(modalities={"p": ["a", "b"], "q": ["c", "d", "e"],
                                                     "r": ["f"]})
    out = by_label.fit(frame).transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(frame.columns) and out.index.equals(frame.index)
    assert (out["note"] == frame["note"]).all()
    np.testing.assert_array_equal(out[labels].to_numpy(), reference)
    assert list(by_label.feature_names_in_) == labels

    tensor = torch.as_tensor(x)
    out = imputer.transform(tensor)
    assert isinstance(out, torch.Tensor) and out.device == tensor.device
    np.testing.assert_array_equal(out.numpy(), reference)

    dims, offsets = (2, 3, 1), np.cumsum([0, 2, 3, 1])
    blocks = {name: x[:, offsets[m]:offsets[m + 1]] for m, name in enumerate("pqr")}
    keyed = UL4M4Imputer(n_clusters=3, random_state=0).fit(blocks)
    out = keyed.transform(blocks)
    assert isinstance(out, dict) and list(out) == ["p", "q", "r"]
    np.testing.assert_array_equal(np.hstack(list(out.values())), reference)
    out = keyed.transform(list(blocks.values()))
    assert isinstance(out, list)
    np.testing.assert_array_equal(np.hstack(out), reference)

    packed = MultiModalArray.from_dict(blocks)
    table = packed.to_arrow().append_column("id", pa.array(np.arange(len(x))))
    out = keyed.transform(table)
    assert isinstance(out, pa.Table) and out.column_names == ["p", "q", "r", "id"]
    filled = np.hstack([np.stack(out.column(n).to_pylist()) for n in "pqr"])
    np.testing.assert_allclose(filled, reference, rtol=1e-6)  # list<float32> cells
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    out = keyed.transform(frame)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["p", "q", "r", "id"]
    out = keyed.transform(packed)
    assert isinstance(out, MultiModalArray) and bool(out.mask.all())
    np.testing.assert_array_equal(to_array(out.imputed), ~mask)


def to_array(x):
    return np.asarray(x)


def test_output_type_and_set_output_convert(fitted):
    x, mask, _, imputer, reference = fitted
    as_frame = clone(imputer).set_params(output_type="pandas").fit(x).transform(x)
    assert isinstance(as_frame, pd.DataFrame) and list(as_frame.columns) == [
        f"x{j}" for j in range(6)]
    np.testing.assert_array_equal(as_frame.to_numpy(), reference)
    packed = clone(imputer).set_params(output_type="multimodal").fit(x).transform(x)
    assert isinstance(packed, MultiModalArray) and packed.dims == (2, 3, 1)
    wrapped = clone(imputer).set_output(transform="pandas").fit(x).transform(x)
    assert isinstance(wrapped, pd.DataFrame)
    np.testing.assert_array_equal(wrapped.to_numpy(), reference)
    # the report rides along, and only the completion is wrapped
    wrapped, report = clone(imputer).set_output(transform="pandas").fit(x).transform(
        x, return_report=True)
    assert isinstance(wrapped, pd.DataFrame)
    np.testing.assert_array_equal(report.filled, (~mask).sum(axis=0))


def test_add_indicator_appends_the_missing_modalities(fitted):
    x, mask, _, imputer, reference = fitted
    with_flags = clone(imputer).set_params(add_indicator=True).fit(x)
    out = with_flags.transform(x)
    assert out.shape == (len(x), 6 + 3)
    np.testing.assert_array_equal(out[:, :6], reference)
    np.testing.assert_array_equal(out[:, 6:], (~mask).astype(float))
    assert list(with_flags.get_feature_names_out()[6:]) == [
        "missingindicator_m0", "missingindicator_m1", "missingindicator_m2"]


def test_each_column_is_a_modality_without_modalities():
    x, _, _ = grouped(widths=(1, 1, 1, 1), missing=0.25)
    out = UL4M4Imputer(n_clusters=3, random_state=0).fit_transform(x)
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(out[observed], x[observed])
    assert not np.isnan(out).any()


def test_column_groups_and_their_errors():
    x, _, _ = grouped()
    by_width = UL4M4Imputer(n_clusters=3, random_state=0, modalities=[2, 3, 1]).fit_transform(x)
    by_index = UL4M4Imputer(n_clusters=3, random_state=0,
                            modalities=[[0, 1], [2, 3, 4], [5]]).fit_transform(x)
    np.testing.assert_array_equal(by_width, by_index)
    shuffled = [4, 0, 2, 5, 1, 3]  # the same groups, columns in another order
    by_position = UL4M4Imputer(n_clusters=3, random_state=0,
                               modalities=[[1, 4], [2, 5, 0], [3]]).fit_transform(x[:, shuffled])
    np.testing.assert_allclose(by_position, by_width[:, shuffled], rtol=1e-6)
    with pytest.raises(ValueError, match="sum to 5 but X has 6 columns"):
        UL4M4Imputer(modalities=[2, 3]).fit(x)
    with pytest.raises(ValueError, match="overlap"):
        UL4M4Imputer(modalities=[[0, 1], [1, 2, 3, 4, 5]]).fit(x)
    with pytest.raises(ValueError, match="out of range"):
        UL4M4Imputer(modalities=[[0, 1], [2, 3, 4, 9]]).fit(x)
    partly = x.copy()
    partly[3, 0], partly[3, 1] = np.nan, 1.0
    with pytest.raises(ValueError, match=r"rows \[3\] .*partly NaN"):
        UL4M4Imputer(n_clusters=3, modalities=[2, 3, 1]).fit(partly)
    with pytest.raises(ValueError, match="modalities .* sum to 6 but X has 5 columns"):
        UL4M4Imputer(n_clusters=3, modalities=[2, 3, 1]).fit(x).transform(x[:, :5])
    with pytest.raises(ValueError, match="X has 5 features, but UL4M4Imputer is expecting 6"):
        UL4M4Imputer(n_clusters=3).fit(x).transform(x[:, :5])
    with pytest.raises(ValueError, match="carries its own modalities"):
        UL4M4Imputer(modalities=[2, 3, 1]).fit({"a": x[:, :2]})
    with pytest.raises(TypeError, match="mask must be an"):
        MultiModalArray(x, None, dims=[2, 3, 1])


def test_a_multimodal_array_slices_by_rows(fitted):
    x, mask, _, _, _ = fitted
    data = MultiModalArray(x.astype(np.float32), mask, (2, 3, 1))
    head = data[0:5]
    assert isinstance(head, MultiModalArray) and len(head) == 5
    np.testing.assert_array_equal(head.mask, mask[:5])
    np.testing.assert_array_equal(np.asarray(data[[3, 1]]), x[[3, 1]].astype(np.float32))
    train, test = train_test_split(data, test_size=0.25, random_state=0)
    assert len(train) + len(test) == len(data) and isinstance(test, MultiModalArray)


def test_pipeline_grid_search_and_cross_validation():
    x, _, labels = grouped(n=150)
    pipeline = Pipeline([("impute", UL4M4Imputer(n_clusters=3, random_state=0,
                                                 modalities=[2, 3, 1])),
                         ("classify", LogisticRegression(max_iter=500))])
    pipeline.fit(x, labels)
    assert (pipeline.predict(x) == labels).mean() > 0.9
    scores = cross_val_score(pipeline, x, labels, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    search = GridSearchCV(pipeline, {"impute__n_clusters": [2, 3, 4]}, cv=3).fit(x, labels)
    assert search.best_params_["impute__n_clusters"] in (2, 3, 4)
    assert search.best_score_ > 0.8


def test_clone_keeps_every_parameter():
    imputer = UL4M4Imputer(n_clusters=7, max_iter=9, tol=0.5, n_init=2, random_state=4,
                           device="cpu", batch_size=11, ddof=1, verbose=0, completion="paper",
                           n_candidates=1, temperature=0.2, modalities={"a": [0], "b": [1, 2]},
                           add_indicator=True, output_type="numpy")
    assert clone(imputer).get_params() == imputer.get_params()
