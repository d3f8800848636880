"""Evaluation harness: UL4M4's completion modes against the imputers a user would reach for,
on the same splits and masks, for imputation error and two downstream models.

For every missing configuration and seed: a seeded mask over all rows, a stratified
train / validation / test split, normalisation statistics and every imputer fitted on the
training rows only. Each method completes the three splits and its imputation RMSE is
measured on the hidden test slots (normalised space). Each baseline imputer (mean fill,
KNNImputer at k = 5 and 10, IterativeImputer) is also scored "+ indicators": the same
completion with the (N, M) availability mask of its input appended to the downstream
features. Downstream, on
the z-scores of the completed rows: a :class:`~ul4m4_gpu.evaluation.fusion.FusionClassifier`
(:class:`~ul4m4_gpu.evaluation.fusion.FusionRegressor` for regression) trained on the
training rows (early stopping on the validation rows) and a logistic regression
(:data:`LOGREG_PARAMS`), both scored on the test rows (F1-micro, F1-macro and accuracy; the
fusion model's MSE, MAE and Pearson r for regression). Results are aggregated as mean ± std
over seeds and as the paired difference (per seed) to the best baseline;
:func:`choose_default` applies the pre-registered rule that picks the default completion
mode.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits
from ..core.progress import tqdm

from ..core.backend import array_module, to_numpy
from .baselines import IterativeBaselineImputer, KNNBaselineImputer, MeanFillImputer
from ..io.data import MultiModalArray
from ..estimator import UL4M4Imputer
from .metrics import classification_scores, imputation_rmse
from .missing import (expected_missing_fraction, hide_modalities, missing_fraction,
                      parse_missing_config, simulate_missing)
from ..core.normalise import fit_modality_stats, normalise
from ..io.files import one_line

#: The paper's families on mfeat's six modalities, then a sweep of missing-slot fractions.
MFEAT_CONFIGS = (
    "100_pix_20_fou_20_fac_20_kar_20_zer_20_mor",
    "complex_40_10_10_10_10_10_10",
    "drop_3",
    "missing_0", "missing_20", "missing_40", "missing_60", "missing_80",
)
#: Those of :data:`MFEAT_CONFIGS` that hide at least half of mfeat's modality slots (67 %,
#: 50 %, 50 %, 59 % and 75 %): the harness's default and the configurations of the rule.
MFEAT_HIGH_MISSING = ("100_pix_20_fou_20_fac_20_kar_20_zer_20_mor",
                      "complex_40_10_10_10_10_10_10", "drop_3", "missing_60", "missing_80")
#: The sets of mfeat's configurations that ``bench-quality --configs`` names.
CONFIG_SETS = {"high-missing": MFEAT_HIGH_MISSING, "all": MFEAT_CONFIGS}
#: The share of hidden slots from which a configuration counts as high-missing.
HIGH_MISSING = 0.5
#: The cluster counts of a full run, of those that fit in the training rows.
DEFAULT_CLUSTERS = (8, 32)
#: UL4M4's completion modes: name -> UL4M4Imputer parameters. "paper" is the paper's
#: greedy rule; the rest are the candidates for the default (see :func:`choose_default`).
MODES = {
    "paper": dict(completion="paper", n_candidates=1),
    "overlap": dict(completion="overlap", n_candidates=1),
    "overlap soft": dict(completion="overlap", n_candidates=5, temperature="auto"),
    "nearest soft": dict(completion="nearest", n_candidates=5, temperature="auto"),
}
#: The pre-declared logistic regression (scikit-learn's default C = 1, lbfgs; seeded per run).
LOGREG_PARAMS = dict(max_iter=1000, C=1.0)
#: BLAS / OpenMP threads of the scikit-learn steps (baseline imputers, logistic
#: regression): their many small products (IterativeImputer's 1,200 × 20 regressions, the
#: logistic regression's gradients) spend more on threading than they gain; on 2 shared
#: cores one thread made them 2 to 20 times faster. UL4M4 and the fusion model keep theirs.
SKLEARN_THREADS = 1
DOWNSTREAMS = ("fusion", "logreg")
#: The name of the extra modality (width M) that carries the availability indicators.
AVAILABILITY = "availability"
INDICATORS = " + indicators"
IMPUTING_BASELINES = ("mean fill", "KNNImputer", "IterativeImputer")
COMPLETE_CASE = "complete-case training"
UPPER_BOUND = "complete data (upper bound)"
_CLASSIFICATION = {"f1_micro": "F1-micro", "f1_macro": "F1-macro", "accuracy": "accuracy"}
#: The fusion model's metrics of each task (the keys of ``fusion.TASK_SCORERS``) and their headings.
TASK_METRICS = {"multiclass": _CLASSIFICATION, "multilabel": _CLASSIFICATION,
                "regression": {"mse": "MSE", "mae": "MAE", "pearson_r": "Pearson r"}}
#: The logistic regression's metrics (multiclass only).
LOGREG_METRICS = {f"logreg_{key}": f"logreg {name}" for key, name in _CLASSIFICATION.items()}
DOWNSTREAM_METRICS = {**{key: f"fusion {name}" for key, name in _CLASSIFICATION.items()},
                      **{key: f"fusion {name}" for key, name in TASK_METRICS["regression"].items()},
                      **LOGREG_METRICS}
#: The metrics compared with the best baseline, per seed; and those where lower is better.
PAIRED = ("rmse", "f1_micro", "logreg_f1_micro")
LOWER_IS_BETTER = frozenset({"rmse", "mse", "mae"})
#: The rule's F1-micro margin: a mode is eligible within 0.5 points of the best mode.
F1_MARGIN = 0.005


@dataclass
class HarnessSettings:
    """Knobs of one harness run (defaults: the full run quoted in the README).

    ``modes`` maps a mode name to UL4M4Imputer parameters (default :data:`MODES`), each run
    at every K of ``n_clusters``; ``baselines`` names the baseline methods (those of
    :data:`IMPUTING_BASELINES` also run ``+ indicators``; "KNNImputer" runs once per
    ``knn_neighbors``, as "KNNImputer (k=5)" …); ``downstream`` is a subset of
    :data:`DOWNSTREAMS` ("logreg" needs ``task="multiclass"``); ``rule_configs``: the
    configurations :func:`choose_default` averages over (those of ``configs`` among them).
    """

    configs: Sequence[str] = MFEAT_HIGH_MISSING
    rule_configs: Sequence[str] = MFEAT_HIGH_MISSING
    seeds: int = 5
    n_clusters: Sequence[int] = DEFAULT_CLUSTERS
    modes: Mapping[str, Mapping] = field(default_factory=lambda: dict(MODES))
    downstream: Sequence[str] = DOWNSTREAMS
    task: str = "multiclass"
    epochs: int = 60
    patience: int = 8
    width: int = 64
    knn_neighbors: Sequence[int] = (5, 10)
    iterative_max_iter: int = 5
    test_size: float = 0.2
    val_size: float = 0.2
    device: str = "auto"
    baselines: Sequence[str] = field(default=(*IMPUTING_BASELINES, COMPLETE_CASE, UPPER_BOUND))

    @classmethod
    def quick(cls, **overrides) -> "HarnessSettings":
        """One configuration, one seed, K ∈ {8, 32}, short training: under a minute on 2 cores."""
        settings = dict(configs=("missing_60",), seeds=1, n_clusters=DEFAULT_CLUSTERS, epochs=15,
                        patience=4, width=32, iterative_max_iter=2)
        settings.update(overrides)
        return cls(**settings)


def _imputers(settings: HarnessSettings, seed: int) -> dict[str, tuple[Callable, dict]]:
    """Method name -> (factory of a fresh imputer with fit/transform on MultiModalArray, the
    method's record fields: ``kind``, ``mode``, ``n_clusters``, ``params``)."""
    makers = {}
    for mode, params in settings.modes.items():
        for k in settings.n_clusters:
            make = (lambda k=k, params=params: UL4M4Imputer(
                n_clusters=k, random_state=seed, device=settings.device, **params))
            makers[f"UL4M4 {mode} (K={k})"] = make, {"kind": "UL4M4", "mode": mode,
                                                      "n_clusters": k, "params": dict(params)}
    baselines = {
        "mean fill": {"mean fill": MeanFillImputer},
        "KNNImputer": {f"KNNImputer (k={k})": lambda k=k: KNNBaselineImputer(k)
                       for k in settings.knn_neighbors},
        "IterativeImputer": {"IterativeImputer": lambda: IterativeBaselineImputer(
            settings.iterative_max_iter, random_state=seed)},
    }
    makers.update({name: (make, {"kind": "baseline"}) for family, methods in baselines.items()
                   if family in settings.baselines for name, make in methods.items()})
    return makers


def generic_configs(names: Sequence[str], dims: Sequence[int]) -> tuple[str, ...]:
    """The configurations of a data set of M >= 2 modalities ``names`` (widths ``dims``):
    ``missing_60`` and ``missing_75`` (every slot hidden with that probability; a row drawn
    empty gets one modality back), ``drop_⌈M/2⌉`` (every row loses half its modalities,
    rounded up) when at least two modalities remain per row (M >= 4; with fewer, no row
    observes a modality together with another, so no imputer has anything to learn from
    and each falls back to the mean), and one modality kept, the others at 20 %
    (``100_KEPT_20_OTHER…``, KEPT the widest modality, the first of the widest on a tie)."""
    if len(names) < 2:
        raise ValueError(f"the harness needs at least 2 modalities, got {list(names)}")
    n_drop = -(-len(names) // 2)
    kept = names[int(np.argmax(dims))]
    keep_one = "_".join(["100", kept, *(f"20_{name}" for name in names if name != kept)])
    drop = (f"drop_{n_drop}",) if len(names) - n_drop >= 2 else ()
    return ("missing_60", "missing_75", *drop, keep_one)


def config_sets(names: Sequence[str], dims: Sequence[int]) -> dict[str, tuple[str, ...]]:
    """``{"high-missing", "all"}`` for a data set other than mfeat: all of
    :func:`generic_configs`, and those expected to hide at least :data:`HIGH_MISSING` of the
    slots (:func:`~ul4m4_gpu.evaluation.missing.expected_missing_fraction`); when none does,
    all of them. That is the case of two modalities: a row keeps one, and hiding half of
    the slots would leave no row observing both (``missing_60`` hides 42 %, ``missing_75``
    47 %, the keep-one 40 %)."""
    configs = generic_configs(names, dims)
    high = tuple(config for config in configs
                 if expected_missing_fraction(config, names) >= HIGH_MISSING - 1e-12)
    return {"high-missing": high or configs, "all": configs}


def _splits(labels, seed: int, settings: HarnessSettings) -> dict[str, np.ndarray]:
    """Stratified train / val / test row indices (multi-label and regression: unstratified)."""
    rows = np.arange(len(labels))
    stratify = labels if settings.task == "multiclass" else None
    rest, test = train_test_split(rows, test_size=settings.test_size, random_state=seed,
                                  stratify=stratify)
    val_share = settings.val_size / (1.0 - settings.test_size)
    train, val = train_test_split(rest, test_size=val_share, random_state=seed,
                                  stratify=None if stratify is None else labels[rest])
    return {"train": train, "val": val, "test": test}


def check_split(labels, settings: HarnessSettings) -> int:
    """The number of training rows of every seed's split (their sizes do not depend on the
    seed). Raises ``ValueError`` (one line, with scikit-learn's reason) when the rows cannot
    be split (for multiclass: stratified, each split holding every class)."""
    labels = np.asarray(to_numpy(labels))
    try:
        return len(_splits(labels, 0, settings)["train"])
    except ValueError as error:
        train = 1.0 - settings.test_size - settings.val_size
        shares = f"{train:.0%} / {settings.val_size:.0%} / {settings.test_size:.0%}"
        if settings.task == "multiclass":
            counts = np.unique(labels, return_counts=True)[1]
            what = (f"the {len(labels)} rows ({len(counts)} classes, the smallest of "
                    f"{counts.min()} rows) into stratified")
        else:
            what = f"the {len(labels)} rows into"
        raise ValueError(f"cannot split {what} train / validation / test sets ({shares}): "
                         f"{one_line(error)}") from None


def _model_input(data: MultiModalArray, mean, scale, availability=None) -> MultiModalArray:
    """The downstream features of complete ``data``: its z-scores under the training
    statistics (N, D), float32 like ``data.values``; with ``availability`` ((N, M) bool, the
    imputer's input mask), one more modality :data:`AVAILABILITY` of width M holding it as
    1.0 (observed) / 0.0 (missing). Every slot of the result is observed."""
    z = normalise(data.values, data.mask, mean, scale, data.dims)
    if availability is None:
        return MultiModalArray(z, data.mask, data.dims, data.names)
    xp = array_module(z, availability)
    values = xp.concatenate([z, availability.astype(z.dtype)], axis=1)
    mask = xp.ones((len(data), data.n_modalities + 1), dtype=bool)
    return MultiModalArray(values, mask, (*data.dims, data.n_modalities),
                           (*data.names, AVAILABILITY))


def _downstream(completed: dict, labels, split: dict, seed: int, settings: HarnessSettings,
                mean, scale, availability: dict | None = None) -> dict:
    """Train each model of ``settings.downstream`` on the completed train rows and score it
    on the test rows. ``completed`` and ``availability`` (optional) map "train", "val",
    "test" to the completed rows and to their (n, M) input masks (then appended as
    indicators, see :func:`_model_input`). Returns the fusion model's task metrics and
    ``train_s`` (early stopping on the validation rows; the inputs are z-scores already, so
    it does not standardise them again) and the logistic regression's ``logreg_*`` metrics
    and ``logreg_s``."""
    features = {part: _model_input(rows, mean, scale,
                                   None if availability is None else availability[part])
                for part, rows in completed.items()}
    y = {part: labels[rows] for part, rows in split.items()}
    scores = {}
    if "fusion" in settings.downstream:
        from .fusion import TASK_SCORERS, FusionClassifier, FusionRegressor

        params = dict(width=settings.width, epochs=settings.epochs, patience=settings.patience,
                      random_state=seed, device=settings.device, standardize=False)
        model = (FusionRegressor(**params) if settings.task == "regression"
                 else FusionClassifier(task=settings.task, **params))
        start = time.perf_counter()
        model.fit(features["train"], y["train"], X_val=features["val"], y_val=y["val"])
        scores.update(TASK_SCORERS[settings.task](y["test"], model.predict(features["test"])),
                      train_s=time.perf_counter() - start)
    if "logreg" in settings.downstream:
        start = time.perf_counter()
        with warnings.catch_warnings(), threadpool_limits(SKLEARN_THREADS):
            warnings.simplefilter("ignore")  # lbfgs convergence at max_iter
            model = LogisticRegression(**LOGREG_PARAMS, random_state=seed)
            model.fit(to_numpy(features["train"].values), y["train"])
        predicted = model.predict(to_numpy(features["test"].values))
        scores.update({f"logreg_{key}": value for key, value
                       in classification_scores(y["test"], predicted).items()},
                      logreg_s=time.perf_counter() - start)
    return scores


def _no_scores(settings: HarnessSettings) -> dict:
    """NaN for every downstream metric of the run (a model that could not be trained)."""
    metrics = []
    if "fusion" in settings.downstream:
        metrics += TASK_METRICS[settings.task]
    if "logreg" in settings.downstream:
        metrics += LOGREG_METRICS
    return dict.fromkeys(metrics, float("nan"))


def run_once(data: MultiModalArray, labels, config: str, seed: int,
             settings: HarnessSettings) -> list[dict]:
    """Every method on one (configuration, seed): a list of flat result records (see
    :func:`evaluate`)."""
    mask = simulate_missing(len(data), data.names, config, random_state=seed)
    hidden = hide_modalities(data, mask)
    split = _splits(labels, seed, settings)
    truth = {name: data.take(rows) for name, rows in split.items()}
    seen = {name: hidden.take(rows) for name, rows in split.items()}
    mean, scale = fit_modality_stats(seen["train"].values, seen["train"].mask, data.dims)
    base = {"config": config, "seed": seed, "missing_fraction": missing_fraction(mask)}
    plain = {"kind": "reference", "mode": None, "n_clusters": None, "params": None,
             "indicators": False}
    records = []

    for method, (make, fields) in _imputers(settings, seed).items():
        threads = SKLEARN_THREADS if fields["kind"] == "baseline" else None  # None: no limit
        start = time.perf_counter()
        with warnings.catch_warnings(), threadpool_limits(threads):
            warnings.simplefilter("ignore")  # mean-filled modalities, sklearn convergence
            imputer = make().fit(seen["train"])
            completed = {name: imputer.transform(part) for name, part in seen.items()}
        impute_s = time.perf_counter() - start
        rmse, per_modality = imputation_rmse(truth["test"], completed["test"],
                                             ~seen["test"].mask, mean, scale)
        imputed = {**base, **plain, **fields, "rmse": rmse, "rmse_per_modality": per_modality,
                   "impute_s": impute_s}
        records.append({**imputed, "method": method,
                        **_downstream(completed, labels, split, seed, settings, mean, scale)})
        if fields["kind"] == "baseline":
            availability = {name: part.mask for name, part in seen.items()}
            records.append({**imputed, "method": method + INDICATORS, "indicators": True,
                            **_downstream(completed, labels, split, seed, settings, mean,
                                          scale, availability)})

    if COMPLETE_CASE in settings.baselines:
        records.append({**base, **plain,
                        **_complete_case(seen, labels, split, seed, settings, mean, scale)})
    if UPPER_BOUND in settings.baselines:
        records.append({**base, **plain, "method": UPPER_BOUND, "rmse": None,
                        "rmse_per_modality": None, "impute_s": 0.0,
                        **_downstream(truth, labels, split, seed, settings, mean, scale)})
    return records


def _complete_case(seen: dict, labels, split: dict, seed: int, settings: HarnessSettings,
                   mean, scale) -> dict:
    """Train on the training rows that observe every modality; validation and test rows are
    mean-filled (the model needs every modality). For multiclass, validation keeps the
    classes that the complete rows cover (early stopping cannot score a class never trained
    on). No imputation error is reported. When no model can be trained (fewer than 2
    complete rows, a single class among them, or no validation row of their classes), the
    downstream metrics are NaN and ``note`` says why."""
    keep = to_numpy(seen["train"].mask.all(axis=1))
    train_rows = split["train"][keep]
    known = np.ones(len(split["val"]), dtype=bool)
    n_classes = None
    if settings.task == "multiclass":
        known = np.isin(labels[split["val"]], labels[train_rows])
        n_classes = len(np.unique(labels[train_rows]))
    record = {"method": COMPLETE_CASE, "rmse": None, "rmse_per_modality": None,
              "impute_s": 0.0, "n_train_rows": int(keep.sum())}
    if keep.sum() < 2:
        note = f"only {int(keep.sum())} complete training rows"
    elif n_classes == 1:
        note = "the complete training rows hold a single class"
    elif not known.any():
        note = "no validation row has a class of the complete training rows"
    else:
        fill = MeanFillImputer().fit(seen["train"])
        completed = {"train": seen["train"].take(np.flatnonzero(keep)),
                     "val": fill.transform(seen["val"].take(np.flatnonzero(known))),
                     "test": fill.transform(seen["test"])}
        split_cc = dict(split, train=train_rows, val=split["val"][known])
        return {**record, **_downstream(completed, labels, split_cc, seed, settings, mean, scale)}
    return {**record, **_no_scores(settings), "note": note}


def check_settings(settings: HarnessSettings, names: Sequence[str]) -> None:
    """Raise ``ValueError`` on a setting the run cannot honour: an unknown task, an empty or
    unknown downstream, "logreg" for a task other than multiclass, a downstream or a
    configuration named twice, or a configuration that does not parse for modalities
    ``names``."""
    from .fusion import TASKS

    if settings.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {settings.task!r}")
    unknown = [name for name in settings.downstream if name not in DOWNSTREAMS]
    if unknown or not settings.downstream:
        raise ValueError(f"downstream must be a non-empty subset of {', '.join(DOWNSTREAMS)}, "
                         f"got {', '.join(settings.downstream) or 'nothing'}")
    if "logreg" in settings.downstream and settings.task != "multiclass":
        raise ValueError(f"the logreg downstream needs task='multiclass', got {settings.task!r}")
    for option, values in (("downstream", settings.downstream), ("configs", settings.configs)):
        repeated = sorted({value for value in values if list(values).count(value) > 1})
        if repeated:
            raise ValueError(f"{option} names {', '.join(repeated)} more than once")
    for config in settings.configs:
        parse_missing_config(config, names)  # fail early on an unknown configuration


def evaluate(data: MultiModalArray, labels, settings: HarnessSettings | None = None,
             progress: bool = True) -> dict:
    """Run every configuration × seed × method.

    Returns ``{"settings", "records", "summary", "decision"}``. A record (one per
    configuration, seed and method) holds ``config``, ``seed``, ``missing_fraction``,
    ``method``, ``kind`` ("UL4M4", "baseline" or "reference"), ``mode``, ``n_clusters`` and
    ``params`` (UL4M4 only, else None), ``indicators`` (bool), ``rmse`` and
    ``rmse_per_modality`` (None for the references), ``impute_s``, the fusion model's task
    metrics and ``train_s``, and ``logreg_f1_micro``, ``logreg_f1_macro``,
    ``logreg_accuracy`` and ``logreg_s`` (each downstream when run). The summary is
    :func:`summarise`'s; the decision :func:`choose_default`'s over the run's configurations
    among ``settings.rule_configs``, or None when it holds none of them or no fusion model.
    Raises ``ValueError`` when the rows cannot be split (:func:`check_split`) or a K
    exceeds the training rows.
    """
    settings = settings or HarnessSettings()
    labels = np.asarray(to_numpy(labels))
    if len(labels) != len(data):
        raise ValueError(f"labels has {len(labels)} rows but data has {len(data)} rows")
    check_settings(settings, data.names)
    n_train = check_split(labels, settings)
    too_many = [k for k in settings.n_clusters if k > n_train]
    if too_many:
        raise ValueError(f"n_clusters {too_many} exceed the {n_train} training rows of each "
                         f"split of the {len(labels)} rows; choose K <= {n_train}")
    runs = [(config, seed) for config in settings.configs for seed in range(settings.seeds)]
    records = []
    for config, seed in tqdm(runs, desc="bench-quality", unit="run", disable=not progress):
        records.extend(run_once(data, labels, config, seed, settings))
    summary = summarise(records)
    rule_configs = [config for config in settings.configs if config in settings.rule_configs]
    decision = (choose_default(summary, rule_configs)
                if rule_configs and settings.modes and settings.n_clusters
                and "fusion" in settings.downstream else None)
    return {"settings": asdict(settings), "records": records, "summary": summary,
            "decision": decision}


METRICS = ("rmse", *DOWNSTREAM_METRICS, "impute_s", "train_s", "logreg_s", "missing_fraction")
#: The fields a summary row copies from its method's records.
METHOD_FIELDS = ("kind", "mode", "n_clusters", "params", "indicators")


def _scored(value) -> bool:
    return value is not None and not np.isnan(value)


def _best_baselines(summary: list[dict], config: str) -> dict[str, str]:
    """Paired metric -> the baseline method of ``config`` with the best mean over seeds
    (lowest for :data:`LOWER_IS_BETTER`, else highest; the first in run order on a tie);
    metrics that no baseline scores are left out."""
    best = {}
    for metric in PAIRED:
        rows = [row for row in summary if row["config"] == config
                and row["kind"] == "baseline" and _scored(row[f"{metric}_mean"])]
        if rows:
            sign = 1 if metric in LOWER_IS_BETTER else -1
            best[metric] = min(rows, key=lambda row: sign * row[f"{metric}_mean"])["method"]
    return best


def summarise(records: list[dict]) -> list[dict]:
    """Per (configuration, method), in run order: ``config``, ``method``, ``n_seeds``, the
    :data:`METHOD_FIELDS` of its records, ``{metric}_mean`` and ``{metric}_std`` over seeds
    for every metric of :data:`METRICS` (None when no seed scores it), and for each metric of
    :data:`PAIRED` the paired difference to the config's best baseline
    (:func:`_best_baselines`): ``{metric}_diff_vs`` (that baseline's name),
    ``{metric}_diff_mean`` and ``{metric}_diff_std`` over the seeds both score (method −
    baseline, seed by seed; None without a baseline)."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["config"], record["method"]), []).append(record)
    summary = []
    for (config, method), group in groups.items():
        row = {"config": config, "method": method, "n_seeds": len(group),
               **{key: group[0].get(key) for key in METHOD_FIELDS},
               **{f"{metric}_diff_{key}": None for metric in PAIRED
                  for key in ("vs", "mean", "std")}}
        for metric in METRICS:
            values = [r[metric] for r in group if r.get(metric) is not None]
            row[f"{metric}_mean"] = float(np.mean(values)) if values else None
            row[f"{metric}_std"] = float(np.std(values)) if values else None
        summary.append(row)
    for config in dict.fromkeys(row["config"] for row in summary):
        for metric, baseline in _best_baselines(summary, config).items():
            reference = {r["seed"]: r.get(metric) for r in groups[config, baseline]}
            for row in summary:
                if row["config"] != config:
                    continue
                diffs = [r[metric] - reference[r["seed"]] for r in groups[config, row["method"]]
                         if _scored(r.get(metric)) and _scored(reference.get(r["seed"]))]
                row[f"{metric}_diff_vs"] = baseline
                row[f"{metric}_diff_mean"] = float(np.mean(diffs)) if diffs else None
                row[f"{metric}_diff_std"] = float(np.std(diffs)) if diffs else None
    return summary


def choose_default(summary: list[dict], configs: Sequence[str] = MFEAT_HIGH_MISSING) -> dict:
    """The pre-registered rule for UL4M4's default completion mode.

    Per mode (the summary's UL4M4 rows of ``configs``, every K and configuration weighing
    the same): the mean of the rows' mean fusion F1-micro and of their mean RMSE. Eligible:
    the modes whose mean F1-micro is at least the best mode's minus :data:`F1_MARGIN` (0.5
    points); chosen: the eligible mode with the lowest mean RMSE (the first in run order on
    a tie).

    Returns ``{"mode", "params", "configs", "n_clusters", "table"}``: the chosen mode's name
    and UL4M4Imputer parameters, the configurations (in ``configs``' order) and K averaged
    over, and per mode (run order) ``{"mode", "params", "f1_micro", "rmse", "eligible"}``.
    Raises ``ValueError``
when the summary holds no UL4M4 row of ``configs``, when modes cover
    different (configuration, K) cells, or when a row lacks its F1-micro or RMSE.
    """
    rows = [row for row in summary if row["kind"] == "UL4M4" and row["config"] in configs]
    if not rows:
        raise ValueError(f"the summary holds no UL4M4 row of the configurations {list(configs)}")
    by_mode: dict[str, list[dict]] = {}
    for row in rows:
        by_mode.setdefault(row["mode"], []).append(row)
    cells = {mode: sorted((r["config"], r["n_clusters"]) for r in group)
             for mode, group in by_mode.items()}
    if len({tuple(c) for c in cells.values()}) > 1:
        raise ValueError(f"the modes cover different (configuration, K) cells: {cells}")
    if not all(_scored(r["f1_micro_mean"]) and _scored(r["rmse_mean"]) for r in rows):
        raise ValueError("every UL4M4 row needs its mean fusion F1-micro and RMSE")
    table = [{"mode": mode, "params": group[0]["params"],
              "f1_micro": float(np.mean([r["f1_micro_mean"] for r in group])),
              "rmse": float(np.mean([r["rmse_mean"] for r in group]))}
             for mode, group in by_mode.items()]
    threshold = max(entry["f1_micro"] for entry in table) - F1_MARGIN
    for entry in table:
        entry["eligible"] = entry["f1_micro"] >= threshold - 1e-12  # 0.5 points exactly: in
    chosen = min((entry for entry in table if entry["eligible"]), key=lambda e: e["rmse"])
    return {"mode": chosen["mode"], "params": chosen["params"],
            "configs": [config for config in configs if any(r["config"] == config for r in rows)],
            "n_clusters": sorted({r["n_clusters"] for r in rows}), "table": table}


def _cell(row: dict, metric: str, digits: int = 3, sign: str = "") -> str:
    """``{metric}_mean`` ± ``{metric}_std`` of a summary row (the mean alone for one seed;
    "—" when unscored); ``sign="+"`` writes the sign of a difference."""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if not _scored(mean):
        return "—"
    value = f"{mean:{sign}.{digits}f}"
    return f"{value} ± {std:.{digits}f}" if row["n_seeds"] > 1 else value


def _held_metrics(summary: list[dict]) -> list[str]:
    """The downstream metrics the summary holds (its task's, its downstream models'), in
    ``DOWNSTREAM_METRICS`` order."""
    return [m for m in DOWNSTREAM_METRICS if any(row[f"{m}_mean"] is not None for row in summary)]


#: The table's metric columns (where held), each of :data:`PAIRED` followed by its Δ.
TABLE_METRICS = ("rmse", *_CLASSIFICATION, *TASK_METRICS["regression"], "logreg_f1_micro")


def to_markdown(summary: list[dict]) -> str:
    """One table, a row per (configuration, method): RMSE, the fusion model's metrics of the
    task (F1-micro, F1-macro, accuracy; or MSE, MAE, Pearson r), the logistic regression's
    F1-micro, each of RMSE and both F1-micros followed by its paired difference to the best
    baseline (Δ, mean ± std over seeds; where the summary has a baseline), and the impute
    and fusion training times; then a
    line per configuration naming its best baselines."""
    held = {"rmse", *_held_metrics(summary)}
    metrics = [m for m in TABLE_METRICS if m in held]
    columns = []  # (summary key without _mean/_std, heading)
    for m in metrics:
        columns.append((m, DOWNSTREAM_METRICS.get(m, "RMSE (test, normalised)")))
        if m in PAIRED and any(row[f"{m}_diff_mean"] is not None for row in summary):
            columns.append((f"{m}_diff", "Δ"))
    lines = ["| missing config | missing slots | method |"
             + "".join(f" {name} |" for _, name in columns) + " impute s | train s |",
             "| --- | ---: | --- |" + " ---: |" * (len(columns) + 2)]
    for row in summary:
        cells = "".join(f" {_cell(row, m, sign='+' if m.endswith('_diff') else '')} |"
                        for m, _ in columns)
        lines.append(f"| {row['config']} | {row['missing_fraction_mean']:.0%} | "
                     f"{row['method']} |{cells} {_cell(row, 'impute_s', 2)} | "
                     f"{_cell(row, 'train_s', 1)} |")
    notes = []
    for config in dict.fromkeys(row["config"] for row in summary):
        first = next(row for row in summary if row["config"] == config)
        best = [f"{DOWNSTREAM_METRICS.get(m, 'RMSE')}: {first[f'{m}_diff_vs']}"
                for m in PAIRED if m in metrics and first[f"{m}_diff_vs"] is not None]
        if best:
            notes.append(f"- {config}: " + "; ".join(best))
    if notes:
        lines += ["", "Δ: method − best baseline, paired by seed (mean ± std over seeds). "
                      "Best baselines (best mean over seeds):", *notes]
    return "\n".join(lines)


def decision_markdown(decision: dict) -> str:
    """A short section: the rule, the per-mode table of :func:`choose_default` and the
    chosen mode with its parameters."""
    params = ", ".join(f"{key}={value!r}" for key, value in decision["params"].items())
    lines = ["## Default completion mode (pre-registered rule)", "",
             f"Over {', '.join(decision['configs'])} and K ∈ "
             f"{{{', '.join(map(str, decision['n_clusters']))}}}: the modes whose mean fusion "
             f"F1-micro is within {100 * F1_MARGIN:g} points of the best mode's are eligible; "
             "the eligible mode with the lowest mean RMSE is chosen.", "",
             "| mode | mean fusion F1-micro | mean RMSE | eligible |",
             "| --- | ---: | ---: | --- |"]
    lines += [f"| {e['mode']} | {e['f1_micro']:.4f} | {e['rmse']:.4f} | "
              f"{'yes' if e['eligible'] else 'no'} |" for e in decision["table"]]
    lines += ["", f"Chosen: **{decision['mode']}** ({params})."]
    return "\n".join(lines)


def plot(summary: list[dict], path) -> None:
    """The first downstream metric (fusion F1-micro, or MSE for regression; logreg F1-micro
    without the fusion model) and the RMSE
    against the fraction of missing slots, one line per method, over the ``missing_P``
    sweep configurations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [row for row in summary if row["config"].startswith("missing_")]
    metric = (_held_metrics(summary) or ["f1_micro"])[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in dict.fromkeys(row["method"] for row in sweep):
        rows = sorted((r for r in sweep if r["method"] == method),
                      key=lambda r: r["missing_fraction_mean"])
        for ax, name in zip(axes, (metric, "rmse")):
            scored = [r for r in rows if r[f"{name}_mean"] is not None]
            if scored:
                ax.errorbar([r["missing_fraction_mean"] for r in scored],
                            [r[f"{name}_mean"] for r in scored],
                            yerr=[r[f"{name}_std"] for r in scored], marker="o", label=method,
                            capsize=2)
    axes[0].set(xlabel="fraction of modality slots missing",
                ylabel=f"test {DOWNSTREAM_METRICS[metric]}", title="Downstream model")
    axes[1].set(xlabel="fraction of modality slots missing",
                ylabel="imputation RMSE (normalised)", title="Imputation error on hidden slots")
    if axes[0].get_legend_handles_labels()[0]:  # no missing_P configuration: nothing drawn
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict, out_dir) -> dict[str, Path]:
    """Write ``results.json`` (``results`` as given: settings, records, summary, decision),
    ``results.md`` (the table, then the decision's section when there is one) and
    ``results.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=1, default=float))
    decision = results.get("decision")
    section = "" if decision is None else "\n" + decision_markdown(decision) + "\n"
    paths["md"].write_text(to_markdown(results["summary"]) + "\n" + section)
    plot(results["summary"], paths["png"])
    return paths
