"""The scikit-learn fusion estimators: :class:`FusionClassifier` (multiclass, multilabel;
``score`` the accuracy) and :class:`FusionRegressor` (``score`` R²), and the machinery they
share with the deprecated :class:`~ul4m4_gpu.evaluation.fusion_trainer.FusionTrainer`: the
checks of parameters and targets, standardisation with the training rows' statistics, Adam
over mini-batches with early stopping on a validation split, and inference."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import type_of_target

from ..core.backend import to_numpy
from ..core.normalise import MIN_SCALE
from ..core.progress import tqdm
from ..core.validation import check_int
from .fusion_inputs import ModalityLayout, resolve_torch_device
from .fusion_model import FusionModel, check_fraction, check_task


def _labels(y, n_rows: int, y_name: str, x_name: str) -> np.ndarray:
    """``y`` as a NumPy array with ``n_rows`` rows, or a ``ValueError`` naming both lengths."""
    y = np.atleast_1d(to_numpy(y))
    if len(y) != n_rows:
        raise ValueError(f"{y_name} has {len(y)} rows but {x_name} has {n_rows} rows")
    return y


class FusionEstimator(ModalityLayout, BaseEstimator):
    """The training and inference machinery shared by :class:`FusionClassifier`,
    :class:`FusionRegressor` and :class:`~ul4m4_gpu.evaluation.fusion_trainer.FusionTrainer`
    (and, from :class:`~ul4m4_gpu.evaluation.fusion_inputs.ModalityLayout`, the modality
    layout of their inputs): one implementation, whose task comes from the subclass
    (``task``: a parameter, or the regressor's class attribute). Its parameters are
    described in :class:`FusionClassifier`."""

    def __init__(self, width=64, n_layers=1, n_heads=4, dropout=0.1, lr=1e-3, weight_decay=0.0,
                 epochs=100, batch_size=128, patience=10, validation_fraction=0.15,
                 random_state=0, device="auto", verbose=0, standardize=True, modalities=None):
        self.width = width
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.standardize = standardize
        self.modalities = modalities

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        check_task(self.task)
        for name in ("epochs", "batch_size", "patience"):
            check_int(name, getattr(self, name), 1)
        check_int("random_state", self.random_state, 0)
        check_fraction("validation_fraction", self.validation_fraction)
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ValueError(f"standardize must be True or False, got {self.standardize!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"{name} must be a float >= 0, got {value!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X, y) first"
            )

    def _check_targets(self, y: np.ndarray, name: str) -> np.ndarray:
        """``y`` if it suits the task, else a ``ValueError`` naming ``name``: (N,) finite
        class labels (multiclass), an (N, L) 0/1 matrix (multilabel) or numbers (regression;
        their shape and finiteness are checked against the fit in :meth:`_encode_targets`)."""
        if self.task == "multiclass":
            if y.ndim != 1:
                raise ValueError(f"{name} must be 1-D class labels for task='multiclass', got "
                                 f"shape {y.shape}; use task='multilabel' for an (N, L) "
                                 "indicator matrix")
            if y.dtype.kind == "f" and not np.isfinite(y).all():
                raise ValueError(f"{name} contains NaN or inf; class labels must be finite")
            try:
                kind = type_of_target(y, input_name=name)
            except TypeError as error:  # labels of types that do not sort together
                raise ValueError(f"{name} mixes label types ({error}); missing labels as "
                                 "None or NaN?") from None
            if kind not in ("binary", "multiclass"):
                raise ValueError(f"{name} holds {kind} values, not class labels; use "
                                 "task='regression' for continuous targets")
        elif self.task == "multilabel":
            if y.ndim != 2 or not np.isin(y, (0, 1)).all():
                raise ValueError(f"{name} must be an (N, L) 0/1 label-indicator matrix for "
                                 f"task='multilabel', got shape {y.shape}")
        elif y.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers for task='regression', got dtype "
                             f"{y.dtype}")
        return y

    def _fit_outputs(self, y: np.ndarray) -> None:
        """Set ``n_outputs_`` (and ``classes_`` for the classification tasks) from the checked
        training targets."""
        if self.task == "multiclass":
            self.classes_ = np.unique(y)
            if self.classes_.size < 2:
                raise ValueError(f"y has {self.classes_.size} class; multiclass needs at least 2")
            self.n_outputs_ = int(self.classes_.size)
        else:
            self.n_outputs_ = 1 if y.ndim == 1 else int(y.shape[1])
            self._flat_targets = y.ndim == 1
            if self.task == "multilabel":
                self.classes_ = np.arange(self.n_outputs_)

    def _encode_targets(self, y: np.ndarray, name: str) -> torch.Tensor:
        """Checked targets on the device as the model's loss wants them: (N,) int64 class
        codes, (N, L) float32 0/1 or (N, k) float32; ``ValueError`` naming ``name`` on a
        mismatch with the fit."""
        if self.task == "multiclass":
            codes = np.searchsorted(self.classes_, y).clip(0, self.classes_.size - 1)
            unseen = self.classes_[codes] != y
            if unseen.any():
                raise ValueError(f"{name} holds labels unseen in training, e.g. {y[unseen][0]!r}; "
                                 f"classes are {self.classes_.tolist()}")
            return torch.as_tensor(codes, dtype=torch.int64, device=self.device_)
        target = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        if target.shape[1] != self.n_outputs_ or y.ndim > 2 or not np.isfinite(target).all():
            raise ValueError(f"{name} must hold finite targets of {self.n_outputs_} columns, "
                             f"got shape {y.shape}")
        return torch.as_tensor(target, device=self.device_)


    def _inputs(self, X, name: str) -> torch.Tensor:
        """``X`` as the fitted model's input: (N, D) float32 on the device, in the fitted
        layout (see :meth:`_packed`), checked and standardised."""
        return self._standardised(self._packed(X, name))

    def _standardised(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, D) inputs in the fitted standard units (a new tensor), or unchanged."""
        return inputs if self.mean_ is None else (inputs - self.mean_) / self.scale_

    def _dataset(self, X, y, x_name: str, y_name: str):
        """(inputs (N, D) float32, targets) on the device for the fit, lengths checked."""
        inputs = self._inputs(X, x_name)
        y = self._check_targets(_labels(y, len(inputs), y_name, x_name), y_name)
        return inputs, self._encode_targets(y, y_name)

    def _split(self, n: int, generator: torch.Generator):
        """(train, validation) row indices on the device, shuffled by ``generator``."""
        n_val = max(1, round(self.validation_fraction * n))
        if n_val >= n:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no training "
                             f"rows out of {n}")
        order = torch.randperm(n, generator=generator).to(self.device_)
        return order[n_val:], order[:n_val]

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, X_val=None, y_val=None, dims=None):
        """Train the fusion model; keep the weights of the epoch with the lowest monitored loss.

        Parameters
        ----------
        X : a complete ``MultiModalArray`` (its own modalities), or a plain 2-D input whose
            modalities ``modalities`` gives: an (N, D) NumPy array, a pandas DataFrame of
            numeric columns or a Torch tensor; N >= 1, every value finite. Any numeric
            dtype; the model computes in float32.
        y : (N,) discrete class labels (multiclass: ints, strings or integral floats, at
            least 2 classes, no NaN), (N, L) 0/1 indicator matrix (multilabel) or (N,) /
            (N, k) numbers (regression).
        X_val, y_val : optional validation data for early stopping (replaces the
            ``validation_fraction`` split); given together or not at all. ``X_val`` takes
            the forms ``predict`` takes (its modalities matched to ``X``'s by name, or its
            columns laid out like ``X``'s) and is standardised with ``X``'s statistics;
            ``y_val`` holds only classes seen in ``y``.
        dims : deprecated (``FutureWarning``); the modality widths of a plain ``X``, as
            ``modalities=dims`` would give them.

        Returns
        -------
        self
        """
        self._check_params()
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val must be given together")
        self.device_ = resolve_torch_device(self.device)
        inputs = self._packed(self._fit_layout(X, dims), "X")
        y = self._check_targets(_labels(y, len(inputs), "y", "X"), "y")
        self._fit_outputs(y)
        self.mean_ = self.scale_ = None
        if self.standardize:
            scale, self.mean_ = torch.std_mean(inputs, dim=0, correction=0)
            self.scale_ = torch.where(scale <= MIN_SCALE, 1.0, scale)
            inputs = self._standardised(inputs)
        targets = self._encode_targets(y, "y")
        generator = torch.Generator().manual_seed(self.random_state)
        if X_val is not None:
            validation = self._dataset(X_val, y_val, "X_val", "y_val")
        elif self.validation_fraction > 0:
            train_rows, val_rows = self._split(len(inputs), generator)
            validation = (inputs[val_rows], targets[val_rows])
            inputs, targets = inputs[train_rows], targets[train_rows]
        else:
            validation = None
        cuda = [self.device_] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.random_state)
            self.model_ = self._new_model()
            self._train(inputs, targets, validation, generator)
        return self

    def _new_model(self) -> FusionModel:
        return FusionModel(self.dims_, self.n_outputs_, self.task, self.width, self.n_layers,
                           self.n_heads, self.dropout).to(self.device_)

    def _train(self, inputs, targets, validation, generator) -> None:
        """Adam over shuffled mini-batches with early stopping; restores the best weights."""
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        self.history_, self.best_loss_, best_state, stale = [], float("inf"), None, 0
        epochs = tqdm(range(self.epochs), desc="fusion", unit="epoch",
                      disable=not self.verbose, leave=False)
        for epoch in epochs:
            train_loss = self._train_epoch(optimizer, inputs, targets, generator)
            val_loss = None if validation is None else self._loss(*validation)
            self.history_.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            epochs.set_postfix(train_loss=train_loss, val_loss=val_loss)
            monitored = train_loss if val_loss is None else val_loss
            if not math.isfinite(monitored):
                raise FloatingPointError(f"the loss became {monitored} at epoch {epoch}; "
                                         "lower lr or check the inputs' scale")
            if monitored < self.best_loss_:
                self.best_loss_, self.best_epoch_, stale = monitored, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.n_epochs_ = len(self.history_)
        self.model_.load_state_dict(best_state)
        self.model_.eval()

    def _train_epoch(self, optimizer, inputs, targets, generator) -> float:
        """One pass over shuffled mini-batches; returns the row-weighted mean training loss."""
        self.model_.train()
        order = torch.randperm(len(inputs), generator=generator).to(self.device_)
        total = 0.0
        for rows in torch.split(order, self.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = self.model_.loss(self.model_(inputs[rows]), targets[rows])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        return total / len(inputs)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, D) → (N, n_outputs) raw outputs in eval mode, batch by batch."""
        self.model_.eval()
        return torch.cat([self.model_(batch) for batch in torch.split(inputs, self.batch_size)])

    def _loss(self, inputs, targets) -> float:
        return float(self.model_.loss(self._outputs(inputs), targets))

    def _predict_outputs(self, X) -> torch.Tensor:
        self._check_fitted()
        return self._outputs(self._inputs(X, "X"))

    def loss(self, X, y) -> float:
        """The task loss (mean over rows) of the fitted model on ``(X, y)``, as monitored
        for early stopping."""
        self._check_fitted()
        return self._loss(*self._dataset(X, y, "X", "y"))

    def predict(self, X) -> np.ndarray:
        """(N,) class labels (multiclass, of ``classes_``' dtype), (N, L) int64 0/1
        indicators (multilabel, probability > 0.5) or (N,) / (N, k) float32 values
        (regression, shaped like y). ``X`` is a complete ``MultiModalArray`` (modalities
        matched by name) or a plain input with ``fit``'s columns."""
        outputs = self._predict_outputs(X).cpu().numpy()
        if self.task == "multiclass":
            return self.classes_[outputs.argmax(axis=1)]
        if self.task == "multilabel":
            return (outputs > 0).astype(np.int64)
        return outputs[:, 0] if self._flat_targets else outputs




class FusionTaskEstimator(FusionEstimator):
    """A fusion estimator whose ``task`` is a parameter (the classifier, the deprecated
    trainer); adds ``predict_proba``."""

    def __init__(self, task="multiclass", width=64, n_layers=1, n_heads=4, dropout=0.1, lr=1e-3,
                 weight_decay=0.0, epochs=100, batch_size=128, patience=10,
                 validation_fraction=0.15, random_state=0, device="auto", verbose=0,
                 standardize=True, modalities=None):
        self.task = task
        super().__init__(width, n_layers, n_heads, dropout, lr, weight_decay, epochs, batch_size,
                         patience, validation_fraction, random_state, device, verbose, standardize,
                         modalities)

    def predict_proba(self, X) -> np.ndarray:
        """(N, C) float32 class probabilities (multiclass, columns in ``classes_`` order) or
        (N, L) float32 per-label probabilities (multilabel); ``X`` as for ``predict``."""
        if self.task == "regression":
            raise ValueError("predict_proba is only defined for task='multiclass' or 'multilabel'")
        outputs = self._predict_outputs(X)
        probs = outputs.softmax(dim=1) if self.task == "multiclass" else outputs.sigmoid()
        return probs.cpu().numpy()




class FusionClassifier(ClassifierMixin, FusionTaskEstimator):
    """Fusion-model classifier on completed embeddings, a scikit-learn classifier.

    ``score`` is the accuracy (subset accuracy for multilabel), ``is_classifier`` holds, so
    ``cross_val_score`` and ``GridSearchCV`` use stratified folds; the F1 scores are one call
    away: ``classification_scores(y, clf.predict(X))`` (multilabel: ``multilabel_scores``)
    from :mod:`ul4m4_gpu.evaluation.metrics`. Inputs are a complete ``MultiModalArray``
    (what ``UL4M4Imputer.transform`` returns, so the classifier can follow the imputer in a
    ``Pipeline``) or a plain (N, D) array / DataFrame / tensor split into modalities by
    ``modalities``. Trains exactly as :class:`FusionTrainer` did with the same parameters.

    Parameters
    ----------
    task : "multiclass" (cross-entropy; y holds (N,) labels) or "multilabel" (BCE with
        logits; y is an (N, L) 0/1 indicator matrix).
    width, n_layers, n_heads, dropout : architecture, see :class:`FusionModel`.
    lr, weight_decay : Adam settings.
    epochs : int, maximum number of passes over the training rows.
    batch_size : int, mini-batch size (also the inference batch size).
    patience : int, stop after this many epochs without a lower monitored loss.
    validation_fraction : float in [0, 1); the share of the training rows held out for
        early stopping when ``fit`` gets no ``X_val``. With 0 and no ``X_val`` the
        training loss is monitored instead.
    random_state : int; seeds the weights, dropout, the split and the shuffling. On the
        CPU the same seed gives identical predictions (CUDA kernels may not be bit-exact).
    device : "auto", "cpu" or "cuda".
    verbose : int; > 0 shows a tqdm progress bar over the epochs.
    standardize : bool, default True; standardise every input dimension with the mean and
        standard deviation of ``fit``'s ``X`` (kept in ``mean_`` and ``scale_``), so raw
        embeddings of very different scales train well. Inputs already in z-scores may
        pass False.
    modalities : None, a list of M widths, a list of M column-position lists or a dict
        name → columns; which columns of a plain 2-D input form each modality (see
        :func:`modality_columns`): e.g. ``[76, 216, 64]`` (consecutive blocks),
        ``[[0, 2], [1, 3, 4]]``, or ``{"img": ["i0", "i1"], "txt": ["t0"]}`` (column labels
        of a DataFrame; column positions for an array or tensor). Every column belongs to
        exactly one modality. Required for a plain input; with a ``MultiModalArray`` it is
        None (the array's own modalities) or the array's widths.

    Attributes
    ----------
    model_ : the fitted ``FusionModel``, holding the best checkpoint (lowest monitored loss).
    classes_ : (C,) the sorted class labels (multiclass; predictions are mapped back to
        them), or ``arange(L)``, the label indices (multilabel).
    n_outputs_ : int, C or L. dims_ : tuple of M ints. device_ : torch.device.
    modality_names_ : tuple of M strings: ``X``'s own (``MultiModalArray``), the keys of a
        ``modalities`` dict, else ``m0``, ``m1``, ... Later ``MultiModalArray`` inputs are
        matched to them by name (see :func:`~ul4m4_gpu.core.validation.in_fitted_order`).
    modality_columns_ : tuple of M (d_m,) int64 arrays, the positions of each modality's
        columns in a plain 2-D input (consecutive blocks after a ``MultiModalArray`` fit).
    n_features_in_ : int, D, the number of columns every plain input must have.
    feature_names_in_ : (D,) object array of column labels; only when ``fit``'s ``X`` was a
        DataFrame with string column labels; a DataFrame given later must have the same.
    mean_, scale_ : (D,) float32 tensors on ``device_``, the per-dimension mean and standard
        deviation (population; ≤ 1e-8 becomes 1) of ``fit``'s ``X`` in the model's column
        order, including the rows ``validation_fraction`` holds out; None when
        ``standardize`` is False.
    history_ : list of dicts ``{"epoch", "train_loss", "val_loss"}`` (``val_loss`` None
        without validation data).
    best_epoch_ : int, the epoch whose weights were restored; best_loss_ : float, its
        monitored loss; n_epochs_ : int, epochs run.
    """

    def _check_params(self) -> None:
        if self.task == "regression":
            raise ValueError("FusionClassifier takes task='multiclass' or 'multilabel', got "
                             "'regression'; use FusionRegressor for regression")
        super()._check_params()


class FusionRegressor(RegressorMixin, FusionEstimator):
    """Fusion-model regressor (MSE) on completed embeddings, a scikit-learn regressor.

    ``score`` is R² (averaged over the targets of an (N, k) y), ``is_regressor`` holds; MSE,
    MAE and Pearson r are ``regression_scores(y, reg.predict(X))`` from
    :mod:`ul4m4_gpu.evaluation.metrics`. ``y`` holds (N,) or (N, k) finite numbers;
    ``predict`` returns float32 values of y's shape. Inputs as :class:`FusionClassifier`.

    Parameters
    ----------
    width, n_layers, n_heads, dropout : architecture, see :class:`FusionModel`.
    lr, weight_decay, epochs, batch_size, patience, validation_fraction, random_state,
    device, verbose, standardize, modalities : as in :class:`FusionClassifier`.

    Attributes
    ----------
    task : "regression", a class attribute (not a parameter).
    model_, dims_, device_, modality_names_, modality_columns_, n_features_in_,
    feature_names_in_, mean_, scale_, history_, best_epoch_, best_loss_, n_epochs_ : as in
        :class:`FusionClassifier`.
    n_outputs_ : int, k (1 for an (N,) y).
    """

    task = "regression"
