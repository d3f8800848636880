"""Downstream fusion model and trainer: shapes, per-modality projections, training
behaviour (overfitting, determinism, early stopping), the DLPack hand-off, the multi-label
and regression metrics, and input errors."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import f1_score

from ul4m4_gpu.io.data import MultiModalArray
from ul4m4_gpu.estimator import UL4M4Imputer
from ul4m4_gpu.evaluation.fusion import TASKS, FusionModel, FusionTrainer, as_fusion_input
from ul4m4_gpu.evaluation.metrics import multilabel_scores, regression_scores

TINY = dict(width=8, n_heads=2, batch_size=16, device="cpu")
#: These tests exercise the deprecated FusionTrainer and its fit(dims=...) on purpose (the
#: shared machinery of FusionClassifier / FusionRegressor, see test_fusion_estimators.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore:FusionTrainer is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:fit's dims argument is deprecated:FutureWarning"),
]


@pytest.fixture(autouse=True)
def one_thread():
    """Keep the tiny models on one core (the runners are shared). Per test, because Numba's
    OpenMP layer (run by the imputer) resets the OpenMP thread count Torch uses too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n=60, dims=(3, 2), n_classes=3, seed=0, spread=0.3):
    """(N, D) float32 points around one centre per class, their (N,) int labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(n_classes, size=n)
    centres = rng.normal(scale=3.0, size=(n_classes, sum(dims)))
    x = centres[y] + spread * rng.normal(size=(n, sum(dims)))
    return x.astype(np.float32), y


def pack(x, dims):
    """A complete CPU ``MultiModalArray`` from packed (N, D) values."""
    return MultiModalArray.from_modalities(np.split(x, np.cumsum(dims)[:-1], axis=1), device="cpu")


# ---------------------------------------------------------------------- model
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("n_modalities", range(1, 7))
def test_model_output_shape(n_modalities, task):
    dims = tuple(range(1, n_modalities + 1))
    model = FusionModel(dims, n_outputs=3, task=task, width=8, n_heads=2, n_layers=2)
    x = torch.randn(5, sum(dims))
    assert model.tokens(x).shape == (5, n_modalities, 8)
    assert model(x).shape == (5, 3)


def test_projection_sees_only_its_own_modality():
    dims = (3, 4, 2)
    model = FusionModel(dims, n_outputs=2, width=8, n_heads=2)
    x = torch.randn(6, sum(dims))
    perturbed = x.clone()
    perturbed[:, 3:7] += torch.randn(6, 4)  # modality 1 only
    before, after = model.tokens(x), model.tokens(perturbed)
    assert torch.equal(before[:, [0, 2]], after[:, [0, 2]])
    assert not torch.allclose(before[:, 1], after[:, 1])
    expected = model.projections[2](x[:, 7:9]) + model.modality_embeddings[2]
    assert torch.equal(before[:, 2], expected)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dims=()), "dims must be a non-empty"),
    (dict(dims=(3, 0)), r"dims\[1\] must be an int >= 1, got 0"),
    (dict(dims=(3,), width=10, n_heads=4), r"width \(10\) must be divisible by n_heads \(4\)"),
    (dict(dims=(3,), task="ranking"),
     r"task must be one of \('multiclass', 'multilabel', 'regression'\), got 'ranking'"),
])
def test_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusionModel(n_outputs=2, **kwargs)


# ---------------------------------------------------------------------- trainer
def test_trainer_overfits_separable_multiclass():
    x, y = blobs()
    labels = np.array(["cat", "dog", "eel"])[y]
    trainer = FusionTrainer(epochs=60, lr=1e-2, validation_fraction=0.0, **TINY)
    trainer.fit(pack(x, (3, 2)), labels)
    assert trainer.classes_.tolist() == ["cat", "dog", "eel"]
    scores = trainer.score(pack(x, (3, 2)), labels)
    assert scores["f1_macro"] == 1.0 and scores["f1_micro"] == 1.0
    proba = trainer.predict_proba(pack(x, (3, 2)))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_trainer_is_deterministic_under_a_seed():
    x, y = blobs(spread=1.5)
    fits = [FusionTrainer(epochs=5, random_state=3, **TINY).fit(x, y, dims=(3, 2))
            for _ in range(2)]
    np.testing.assert_array_equal(fits[0].predict_proba(x), fits[1].predict_proba(x))
    assert fits[0].history_ == fits[1].history_


def test_early_stopping_restores_best_checkpoint():
    rng = np.random.default_rng(1)
    x, x_val = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    y, y_val = rng.integers(2, size=40), rng.integers(2, size=40)  # noise: validation loss rises
    trainer = FusionTrainer(epochs=200, lr=3e-2, patience=3, dropout=0.0, **TINY)
    trainer.fit(x, y, x_val, y_val, dims=(3, 2))
    val_losses = [h["val_loss"] for h in trainer.history_]
    assert trainer.n_epochs_ < 200
    assert trainer.best_epoch_ == trainer.n_epochs_ - 1 - trainer.patience
    assert trainer.best_loss_ == min(val_losses) < val_losses[-1]
    assert trainer.loss(x_val, y_val) == trainer.best_loss_  # the restored weights


def test_dlpack_handoff_shares_memory():
    x, y = blobs(n=30)
    mask = np.random.default_rng(0).random((30, 2)) < 0.7
    mask[~mask.any(axis=1), 0] = True
    data = MultiModalArray.from_modalities([x[:, :3], x[:, 3:]], mask=mask, device="cpu")
    completed = UL4M4Imputer(n_clusters=3, random_state=0, device="cpu").fit_transform(data)
    assert completed.to_torch().data_ptr() == completed.values.ctypes.data
    tensor, dims = as_fusion_input(completed, device="cpu")
    assert tensor.data_ptr() == completed.values.ctypes.data
    assert dims == (3, 2)
    trainer = FusionTrainer(epochs=2, **TINY).fit(completed, y)
    assert trainer.predict(completed).shape == y.shape


def test_multilabel_trainer_predicts_indicator_matrix():
    x, y = blobs(n=40, n_classes=4)
    Y = np.stack([y % 2, y // 2, (y == 3)], axis=1).astype(int)
    trainer = FusionTrainer(task="multilabel", epochs=40, lr=1e-2, validation_fraction=0.0, **TINY)
    trainer.fit(x, Y, dims=(3, 2))
    assert trainer.predict(x).shape == Y.shape and trainer.predict_proba(x).shape == Y.shape
    assert trainer.score(x, Y)["accuracy"] == 1.0


def test_regression_trainer_beats_the_variance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 5)).astype(np.float32)
    y = x @ rng.normal(size=5)
    trainer = FusionTrainer(task="regression", epochs=60, lr=1e-2, **TINY)
    trainer.fit(torch.from_numpy(x), y, dims=(2, 3))
    scores = trainer.score(x, y)
    assert trainer.predict(x).shape == y.shape
    assert scores["mse"] < 0.25 * y.var()
    assert scores["pearson_r"] > 0.9


# ---------------------------------------------------------------------- metrics
def test_multilabel_f1_uses_the_indicator_matrix():
    Y_true = np.array([[1, 0, 0], [0, 1, 0]])
    Y_pred = np.array([[1, 1, 0], [0, 0, 0]])
    scores = multilabel_scores(Y_true, Y_pred)
    flat_micro = f1_score(Y_true.ravel(), Y_pred.ravel(), average="micro")
    flat_macro = f1_score(Y_true.ravel(), Y_pred.ravel(), average="macro")
    assert scores["f1_micro"] == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    assert flat_micro == pytest.approx(4 / 6)  # per-slot accuracy
    assert scores["f1_macro"] == pytest.approx((1 + 0 + 0) / 3)
    assert flat_macro != pytest.approx(scores["f1_macro"])
    assert scores["accuracy"] == 0.0  # no row exactly right


def test_regression_scores_by_hand():
    scores = regression_scores([[0.0, 1.0], [2.0, 3.0]], [[0.0, 2.0], [2.0, 5.0]])
    assert scores["mse"] == pytest.approx((0 + 1 + 0 + 4) / 4)
    assert scores["mae"] == pytest.approx((0 + 1 + 0 + 2) / 4)
    assert scores["pearson_r"] == pytest.approx(np.corrcoef([0, 1, 2, 3], [0, 2, 2, 5])[0, 1])


# ---------------------------------------------------------------------- errors
def test_labels_length_mismatch_names_both_lengths():
    x, y = blobs(n=10)
    with pytest.raises(ValueError, match="y has 9 rows but X has 10 rows"):
        FusionTrainer(**TINY).fit(x, y[:9], dims=(3, 2))


def test_unknown_task_lists_the_valid_ones():
    x, y = blobs(n=10)
    with pytest.raises(ValueError, match="task must be one of .*'regression'.* got 'ranking'"):
        FusionTrainer(task="ranking", **TINY).fit(x, y, dims=(3, 2))


def test_incomplete_input_asks_to_impute_first():
    x, y = blobs(n=10)
    mask = np.ones((10, 2), dtype=bool)
    mask[4, 1] = False
    incomplete = MultiModalArray.from_modalities([x[:, :3], x[:, 3:]], mask=mask, device="cpu")
    with pytest.raises(ValueError, match="1 missing modality slots; impute"):
        FusionTrainer(**TINY).fit(incomplete, y)
    x[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf.*impute"):
        FusionTrainer(**TINY).fit(x, y, dims=(3, 2))


@pytest.mark.parametrize("fit_kwargs, match", [
    (dict(), "dims is required"),
    (dict(dims=(3, 3)), "dims .* sum to 6"),
    (dict(dims=(3, 2), X_val=np.zeros((2, 5))), "X_val and y_val must be given together"),
])
def test_other_input_errors(fit_kwargs, match):
    x, y = blobs(n=10)
    with pytest.raises(ValueError, match=match):
        FusionTrainer(**TINY).fit(x, y, **fit_kwargs)


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        FusionTrainer().predict(np.zeros((2, 5)))


# ---------------------------------------------------------------------- review fixes
def test_default_standardisation_makes_the_fit_scale_free():
    """Raw embeddings of very different scales train as their z-scores would: a per-dimension
    affine change of the inputs (and a constant column) leaves the predictions unchanged."""
    x, y = blobs(n=40, spread=1.0)
    x[:, 0] = 3.0
    scaled = x * np.array([1.0, 1e3, 1e-2, 50.0, 1e2], dtype=np.float32) + 10.0
    data = pack(scaled, (3, 2))
    before = data.values.copy()
    fits = [FusionTrainer(epochs=5, **TINY).fit(pack(v, (3, 2)), y) for v in (x, scaled)]
    np.testing.assert_allclose(fits[0].predict_proba(pack(x, (3, 2))),
                               fits[1].predict_proba(data), atol=1e-4)
    np.testing.assert_array_equal(data.values, before)  # the DLPack-shared input is untouched
    assert fits[1].scale_[0] == 1.0 and fits[1].mean_.shape == (5,)
    assert FusionTrainer(standardize=False, epochs=1, **TINY).fit(x, y, dims=(3, 2)).mean_ is None


def test_modalities_are_matched_by_name():
    x, y = blobs(n=30, dims=(2, 2), spread=1.0)
    img_txt = MultiModalArray.from_modalities([x[:, :2], x[:, 2:]], names=["img", "txt"],
                                              device="cpu")
    txt_img = img_txt.select(["txt", "img"])
    trainer = FusionTrainer(epochs=3, **TINY).fit(img_txt, y, X_val=txt_img, y_val=y)
    np.testing.assert_array_equal(trainer.predict_proba(txt_img), trainer.predict_proba(img_txt))
    np.testing.assert_array_equal(trainer.predict_proba(x), trainer.predict_proba(img_txt))
    assert trainer.modality_names_ == ("img", "txt")
    other = MultiModalArray.from_modalities([x[:, :2], x[:, 2:]], names=["img", "audio"],
                                            device="cpu")
    with pytest.raises(ValueError, match=r"X has modalities .*missing: \['txt'\], "
                                         r"unexpected: \['audio'\]"):
        trainer.predict(other)


@pytest.mark.parametrize("task, y, match", [
    ("multiclass", np.linspace(0.0, 1.0, 10), "y holds continuous values, not class labels"),
    ("multiclass", np.r_[np.nan, np.arange(9) % 2], "y contains NaN"),
    ("multiclass", np.array(["a", None] * 5, dtype=object), "y mixes label types"),
    ("regression", np.array(["a"] * 10), "y must hold numbers for task='regression'"),
])
def test_targets_that_do_not_suit_the_task(task, y, match):
    x, _ = blobs(n=10)
    with pytest.raises(ValueError, match=match):
        FusionTrainer(task=task, **TINY).fit(x, y, dims=(3, 2))


def test_integral_float_labels_are_classes_and_nan_in_y_val_is_named():
    x, y = blobs(n=20)
    trainer = FusionTrainer(epochs=1, **TINY).fit(x, y.astype(float), dims=(3, 2))
    assert trainer.classes_.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="y_val contains NaN"):
        FusionTrainer(**TINY).fit(x, y, x[:3], np.array([0.0, np.nan, 1.0]), dims=(3, 2))


@pytest.mark.parametrize("task", ["multiclass", "regression"])
@pytest.mark.parametrize("empty, match", [("X", "X has 0 rows"), ("X_val", "X_val has 0 rows")])
def test_empty_inputs_are_refused_before_training(task, empty, match):
    x, y = blobs(n=10)
    data = pack(x, (3, 2))
    none = np.array([], dtype=int)
    args = ((data.take(none), y[:0]) if empty == "X"
            else (data, y, data.take(none), y[:0]))
    with pytest.raises(ValueError, match=match):
        FusionTrainer(task=task, **TINY).fit(*args)
    fitted = FusionTrainer(task=task, epochs=1, **TINY).fit(data, y)
    with pytest.raises(ValueError, match="X has 0 rows"):
        fitted.predict(data.take(none))
