"""FusionClassifier / FusionRegressor as scikit-learn estimators: recognised as classifier
and regressor, numeric scores (accuracy, R²), stratified cross-validation, clone, Pipelines
(after a scaler and after the imputer), the ``modalities`` layouts of plain 2-D inputs and
their errors, the fitted-features check, and the deprecated FusionTrainer (warns, trains
identically)."""

import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import ul4m4_gpu
from ul4m4_gpu.estimator import UL4M4Imputer
from ul4m4_gpu.evaluation import fusion
from ul4m4_gpu.evaluation.fusion import FusionClassifier, FusionRegressor, FusionTrainer
from ul4m4_gpu.evaluation.metrics import (
    classification_scores,
    multilabel_scores,
    regression_scores,
)
from ul4m4_gpu.io.data import MultiModalArray

TINY = dict(width=8, n_heads=2, batch_size=16, device="cpu")
FAST = dict(TINY, epochs=15, lr=1e-2)
COLUMNS = ["c0", "c1", "c2", "c3", "c4"]
TRAINER_WARNING = "FusionTrainer is deprecated; use FusionClassifier .* or FusionRegressor"


@pytest.fixture(autouse=True)
def one_thread():
    """One Torch thread per test (see tests/test_fusion.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sorted_blobs(n=150, n_classes=3, spread=0.3, seed=0):
    """(N, 5) float32 points around one centre per class, with (N,) int labels sorted
    (class 0 rows first): unstratified, unshuffled folds would hold out whole classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n // n_classes)
    centres = rng.normal(scale=3.0, size=(n_classes, 5))
    return (centres[y] + spread * rng.normal(size=(len(y), 5))).astype(np.float32), y


def linear_targets(n=80, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, x @ rng.normal(size=5)


# ---------------------------------------------------------------------- scikit-learn roles
def test_classifier_and_regressor_are_recognised():
    assert is_classifier(FusionClassifier()) and not is_regressor(FusionClassifier())
    assert is_regressor(FusionRegressor()) and not is_classifier(FusionRegressor())
    assert not hasattr(FusionRegressor(), "predict_proba")
    assert "task" not in FusionRegressor().get_params()


def test_classifier_score_is_the_accuracy_and_labels_come_back():
    x, y = sorted_blobs(spread=2.5)  # overlapping classes: accuracy strictly inside (0, 1)
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = FusionClassifier(modalities=[3, 2], **FAST).fit(x, labels)
    predicted = clf.predict(x)
    score = clf.score(x, labels)
    assert isinstance(score, float) and 0.4 < score < 1.0
    assert score == accuracy_score(labels, predicted)
    assert clf.classes_.tolist() == ["cat", "dog", "eel"] and set(predicted) <= set(clf.classes_)
    proba = clf.predict_proba(x)
    assert proba.shape == (150, 3) and proba.dtype == np.float32
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], predicted)


def test_multilabel_classifier_scores_subset_accuracy():
    x, y = sorted_blobs(n=60, n_classes=4, spread=1.5)
    Y = np.stack([y % 2, y // 2, y == 3], axis=1).astype(int)
    clf = FusionClassifier(task="multilabel", modalities=[3, 2], **FAST).fit(x, Y)
    predicted = clf.predict(x)
    assert predicted.shape == Y.shape and clf.predict_proba(x).shape == Y.shape
    assert clf.classes_.tolist() == [0, 1, 2]
    assert clf.score(x, Y) == accuracy_score(Y, predicted)


def test_regressor_score_is_r2():
    x, y = linear_targets()
    reg = FusionRegressor(modalities=[2, 3], epochs=60, lr=1e-2, **TINY).fit(x, y)
    predicted = reg.predict(x)
    assert predicted.shape == y.shape and predicted.dtype == np.float32
    score = reg.score(x, y)
    assert isinstance(score, float) and score > 0.8
    assert score == pytest.approx(r2_score(y, predicted))
    two = np.stack([y, -y], axis=1)
    assert FusionRegressor(modalities=[2, 3], epochs=2, **TINY).fit(x, two).predict(x).shape \
        == (80, 2)


def test_classifier_rejects_the_regression_task():
    x, y = sorted_blobs(n=30)
    with pytest.raises(ValueError, match="use FusionRegressor for regression"):
        FusionClassifier(task="regression", modalities=[3, 2], **TINY).fit(x, y)


def test_cross_val_score_stratifies_label_sorted_data():
    x, y = sorted_blobs()
    clf = FusionClassifier(modalities=[3, 2], **FAST)
    scores = cross_val_score(clf, x, y, cv=3)
    assert scores.dtype == float and scores.shape == (3,)
    assert scores.min() > 0.9  # chance is 1/3
    # the contrast the stratification avoids: unstratified folds hold out a whole class
    assert cross_val_score(clf, x, y, cv=KFold(3)).max() == 0.0


@pytest.mark.parametrize("estimator, params", [
    (FusionClassifier, dict(task="multilabel")),
    (FusionRegressor, dict()),
])
def test_clone_keeps_every_parameter(estimator, params):
    params = dict(params, width=12, n_layers=2, n_heads=3, dropout=0.2, lr=3e-3,
                  weight_decay=1e-4, epochs=7, batch_size=32, patience=4,
                  validation_fraction=0.25, random_state=5, device="cpu", verbose=1,
                  standardize=False, modalities={"img": ["c0", "c1"], "txt": ["c2"]})
    original = estimator(**params)
    assert set(original.get_params()) == set(params)  # every parameter set off its default
    copy = clone(original)
    assert copy.get_params() == params and copy is not original


# ---------------------------------------------------------------------- pipelines
def test_pipeline_after_a_scaler_on_a_plain_array():
    x, y = sorted_blobs()
    x = x * np.array([1.0, 1e3, 1e-2, 50.0, 1e2], dtype=np.float32)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("clf", FusionClassifier(modalities=[3, 2], **FAST))]).fit(x, y)
    assert pipe.predict(x).shape == y.shape
    assert pipe.score(x, y) > 0.9
    assert pipe.named_steps["clf"].n_features_in_ == 5


def test_pipeline_after_the_imputer():
    x, y = sorted_blobs(n=60)
    mask = np.random.default_rng(0).random((60, 2)) < 0.7
    mask[~mask.any(axis=1), 0] = True
    data = MultiModalArray.from_modalities([x[:, :3], x[:, 3:]], mask=mask, device="cpu")
    pipe = Pipeline([("impute", UL4M4Imputer(n_clusters=3, random_state=0, device="cpu")),
                     ("clf", FusionClassifier(**FAST))]).fit(data, y)
    assert pipe.predict(data).shape == y.shape
    assert pipe.named_steps["clf"].dims_ == (3, 2)


# ---------------------------------------------------------------------- modalities
def test_modality_layouts_give_the_same_model_input():
    """Widths, position lists, a dict of DataFrame labels, a tensor, a permuted array whose
    position lists undo the permutation, and the deprecated dims: one model."""
    x, y = sorted_blobs(n=60, spread=1.5)
    permutation = [4, 0, 2, 3, 1]  # shuffled[:, j] = x[:, permutation[j]]
    shuffled = x[:, permutation]
    frame = pd.DataFrame(x, columns=COLUMNS)
    fits = {
        "widths": (FusionClassifier(modalities=[3, 2], **FAST), x),
        "positions": (FusionClassifier(modalities=[[0, 1, 2], [3, 4]], **FAST), x),
        "labels": (FusionClassifier(modalities={"a": ["c0", "c1", "c2"], "b": ["c3", "c4"]},
                                    **FAST), frame),
        "tensor": (FusionClassifier(modalities=[3, 2], **FAST), torch.from_numpy(x)),
        "permuted": (FusionClassifier(modalities=[[1, 4, 2], [3, 0]], **FAST), shuffled),
    }
    expected = fits["widths"][0].fit(x, y).predict_proba(x)
    for name, (clf, data) in fits.items():
        clf.fit(data, y)
        np.testing.assert_array_equal(clf.predict_proba(data), expected, err_msg=name)
        assert clf.n_features_in_ == 5 and clf.dims_ == (3, 2), name
    assert fits["labels"][0].modality_names_ == ("a", "b")
    assert fits["labels"][0].feature_names_in_.tolist() == COLUMNS
    assert not hasattr(fits["widths"][0], "feature_names_in_")
    assert fits["permuted"][0].modality_columns_[0].tolist() == [1, 4, 2]
    # a named MultiModalArray matches the dict's modality names
    named = MultiModalArray.from_modalities([x[:, 3:], x[:, :3]], names=["b", "a"], device="cpu")
    np.testing.assert_array_equal(fits["labels"][0].predict_proba(named), expected)
    with pytest.warns(FutureWarning, match="fit's dims argument is deprecated"):
        old = FusionClassifier(**FAST).fit(x, y, dims=(3, 2))
    np.testing.assert_array_equal(old.predict_proba(x), expected)


def test_predict_checks_the_fitted_features():
    x, y = sorted_blobs(n=30)
    frame = pd.DataFrame(x, columns=COLUMNS)
    clf = FusionClassifier(modalities={"a": ["c0", "c1", "c2"], "b": ["c3", "c4"]},
                           epochs=1, **TINY).fit(frame, y)
    with pytest.raises(ValueError, match="X has 4 features, but FusionClassifier was fitted on 5"):
        clf.predict(x[:, :4])
    with pytest.raises(ValueError, match=r"X's column labels \['c4', 'c0'.* differ from those "
                                         r"seen in fit, \['c0', 'c1'"):
        clf.predict(frame[["c4", "c0", "c1", "c2", "c3"]])
    np.testing.assert_array_equal(clf.predict_proba(x), clf.predict_proba(frame))  # positional
    clf.set_params(modalities=[3, 2]).fit(x, y)  # a refit on an array forgets the labels
    assert not hasattr(clf, "feature_names_in_")


@pytest.mark.parametrize("modalities, match", [
    ([3, 3], r"modalities \[3, 3\] sum to 6 but X has 5 columns"),
    ([3, 0, 2], r"modalities\[1\] must be an int >= 1, got 0"),
    ([[0, 1, 2], [3, 5]], r"modalities\[1\] holds column 5, out of range for X's 5 columns"),
    ([[0, 1, 2], [-1, 3]], r"modalities\[1\] holds column -1, out of range"),
    ([[0, 1, 2], [2, 3, 4]], r"modalities overlap: column 2 is given 2 times "
                             r"\(in modalities\[0\], modalities\[1\]\)"),
    ([[0, 1, 1], [2, 3, 4]], r"column 1 is given 2 times \(in modalities\[0\]\)"),
    ([[0, 1], [3, 4]], r"modalities leave 1 of X's columns in no modality, e.g. column 2"),
    ([[0, 1, 2, 3, 4], []], r"modalities\[1\] must be a non-empty list of column positions"),
    ({"a": [0, 1, 2], "b": ["c3", "c4"]}, r"modalities\['b'\] must be a non-empty list of "
                                          "column positions"),
    ({0: [0, 1, 2], 1: [3, 4]}, r"modalities' keys must be modality names \(strings\), got 0"),
    ([], "modalities must give at least one modality"),
    ("c0", "modalities must be None, a list of modality widths, a list of column-position "
           "lists or a dict name -> columns, got 'c0'"),
    (5, "modalities must be None, a list of modality widths"),
])
def test_bad_modalities_on_an_array(modalities, match):
    x, y = sorted_blobs(n=30)
    with pytest.raises(ValueError, match=match):
        FusionClassifier(modalities=modalities, **TINY).fit(x, y)


@pytest.mark.parametrize("modalities, match", [
    ({"a": ["c0", "c1", "c2"], "b": ["c3", "zz"]},
     r"modalities\['b'\] names columns that X does not have: \['zz'\]"),
    ({"a": ["c0", "c1", "c2"], "b": ["c2", "c3", "c4"]},
     r"modalities overlap: column 'c2' is given 2 times \(in modalities\['a'\], "
     r"modalities\['b'\]\)"),
    ({"a": ["c0", "c1"], "b": ["c3", "c4"]}, "leave 1 of X's columns in no modality, e.g. "
                                             "column 'c2'"),
])
def test_bad_modalities_on_a_dataframe(modalities, match):
    x, y = sorted_blobs(n=30)
    with pytest.raises(ValueError, match=match):
        FusionRegressor(modalities=modalities, **TINY).fit(pd.DataFrame(x, columns=COLUMNS), y)


@pytest.mark.parametrize("modalities, fit_kwargs, match", [
    (None, {}, "modalities or dims is required when X is a plain"),
    ([3, 2], dict(dims=(3, 2)), "modalities or fit's dims, not both"),
    ([[0, 1, 2], [3, 4]], dict(multimodal=True), "X is a MultiModalArray, which carries its "
                                                 r"own modalities; modalities may only repeat "
                                                 r"their widths \[3, 2\]"),
    ([2, 3], dict(multimodal=True), r"X has modality dims \(3, 2\), expected \(2, 3\)"),
])
def test_modalities_that_do_not_fit_the_input(modalities, fit_kwargs, match):
    x, y = sorted_blobs(n=30)
    if fit_kwargs.pop("multimodal", False):
        x = MultiModalArray.from_modalities([x[:, :3], x[:, 3:]], device="cpu")
    with pytest.warns(FutureWarning) if "dims" in fit_kwargs else nullcontext():
        with pytest.raises(ValueError, match=match):
            FusionClassifier(modalities=modalities, **TINY).fit(x, y, **fit_kwargs)


def test_non_numeric_dataframe_is_refused_by_column():
    x, y = sorted_blobs(n=30)
    frame = pd.DataFrame(x, columns=COLUMNS).assign(c4=["a"] * 30)
    with pytest.raises(ValueError, match="X must hold numbers; column 'c4' has dtype (object|str)"):
        FusionClassifier(modalities=[3, 2], **TINY).fit(frame, y)


# ---------------------------------------------------------------------- the deprecated trainer
@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_fusion_trainer_warns_and_trains_like_the_new_estimators(task):
    x, y = sorted_blobs(n=60, n_classes=4, spread=1.5)
    data = MultiModalArray.from_modalities([x[:, :3], x[:, 3:]], device="cpu")
    target = {"multiclass": y, "multilabel": np.stack([y % 2, y // 2], axis=1),
              "regression": x @ np.arange(5.0)}[task]
    params = dict(FAST, epochs=8, random_state=3)
    with pytest.warns(FutureWarning, match=TRAINER_WARNING):
        trainer = FusionTrainer(task=task, **params).fit(data, target)
    new = (FusionRegressor(**params) if task == "regression"
           else FusionClassifier(task=task, **params)).fit(data, target)
    np.testing.assert_array_equal(new.predict(data), trainer.predict(data))
    assert new.history_ == trainer.history_
    scorer = {"multiclass": classification_scores, "multilabel": multilabel_scores,
              "regression": regression_scores}[task]
    assert trainer.score(data, target) == scorer(target, new.predict(data))
    assert not is_classifier(trainer)


def test_the_package_exports_them_lazily():
    assert {"FusionClassifier", "FusionRegressor"} <= set(ul4m4_gpu.__all__)
    assert ul4m4_gpu.FusionClassifier is fusion.FusionClassifier
    assert ul4m4_gpu.FusionRegressor is fusion.FusionRegressor
    code = "import sys, ul4m4_gpu; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
