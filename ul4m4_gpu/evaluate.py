"""Evaluation harness: UL4M4 against the imputers a user would reach for, on the same
splits and masks, for imputation error and a downstream Torch fusion model.

For every missing configuration and seed: a seeded mask over all rows, a stratified
train / validation / test split, normalisation statistics and every imputer fitted on the
training rows only; each method completes the three splits, its imputation RMSE is measured
on the hidden test slots (normalised space), and a :class:`~ul4m4_gpu.fusion.FusionTrainer`
trained on the completed training rows (early stopping on the validation rows) is scored
on the test rows (F1-micro, F1-macro and accuracy; MSE, MAE and Pearson r for regression).
Results are aggregated as mean ± std over seeds.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from .backend import to_numpy
from .baselines import IterativeBaselineImputer, KNNBaselineImputer, MeanFillImputer
from .data import MultiModalArray
from .estimator import UL4M4Imputer
from .metrics import imputation_rmse
from .missing import hide_modalities, missing_fraction, parse_missing_config, simulate_missing
from .normalise import fit_modality_stats, normalise

#: The paper's families on mfeat's six modalities, then a sweep of missing-slot fractions.
MFEAT_CONFIGS = (
    "100_pix_20_fou_20_fac_20_kar_20_zer_20_mor",
    "complex_40_10_10_10_10_10_10",
    "drop_3",
    "missing_0", "missing_20", "missing_40", "missing_60", "missing_80",
)
COMPLETE_CASE = "complete-case training"
UPPER_BOUND = "complete data (upper bound)"
_CLASSIFICATION = {"f1_micro": "F1-micro", "f1_macro": "F1-macro", "accuracy": "accuracy"}
#: The downstream metrics of each task (``FusionTrainer.score``'s keys) and their headings.
TASK_METRICS = {"multiclass": _CLASSIFICATION, "multilabel": _CLASSIFICATION,
                "regression": {"mse": "MSE", "mae": "MAE", "pearson_r": "Pearson r"}}
DOWNSTREAM_METRICS = {**_CLASSIFICATION, **TASK_METRICS["regression"]}


@dataclass
class HarnessSettings:
    """Knobs of one harness run (defaults: the full run quoted in the README)."""

    configs: Sequence[str] = MFEAT_CONFIGS
    seeds: int = 5
    n_clusters: Sequence[int] = (8, 32, 64, 128)
    task: str = "multiclass"
    epochs: int = 60
    patience: int = 8
    width: int = 64
    knn_neighbors: int = 5
    iterative_max_iter: int = 5
    test_size: float = 0.2
    val_size: float = 0.2
    device: str = "auto"
    baselines: Sequence[str] = field(default=("mean fill", "KNNImputer", "IterativeImputer",
                                              COMPLETE_CASE, UPPER_BOUND))

    @classmethod
    def quick(cls, **overrides) -> "HarnessSettings":
        """One configuration, one seed, K ∈ {8, 32}, short training: under a minute on 2 cores."""
        settings = dict(configs=("missing_60",), seeds=1, n_clusters=(8, 32), epochs=15,
                        patience=4, width=32, iterative_max_iter=2)
        settings.update(overrides)
        return cls(**settings)


def _imputers(settings: HarnessSettings, seed: int) -> dict[str, Callable]:
    """Method name -> factory of a fresh imputer with fit/transform on MultiModalArray."""
    makers = {f"UL4M4 (K={k})": (lambda k=k: UL4M4Imputer(n_clusters=k, random_state=seed,
                                                          device=settings.device))
              for k in settings.n_clusters}
    baselines = {
        "mean fill": MeanFillImputer,
        "KNNImputer": lambda: KNNBaselineImputer(settings.knn_neighbors),
        "IterativeImputer": lambda: IterativeBaselineImputer(settings.iterative_max_iter,
                                                             random_state=seed),
    }
    makers.update({name: make for name, make in baselines.items() if name in settings.baselines})
    return makers


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


def _normalised(data: MultiModalArray, mean, scale) -> MultiModalArray:
    """A complete array in the normalised space of the training statistics (model input)."""
    z = normalise(data.values, data.mask, mean, scale, data.dims)
    return MultiModalArray(z, data.mask, data.dims, data.names)


def _downstream(completed: dict, labels, split: dict, seed: int, settings: HarnessSettings,
                mean, scale) -> tuple[dict, float]:
    """Train the fusion model on completed train rows; scores on test rows and train time.
    The inputs are z-scores of the imputers' training statistics already, so the trainer
    does not standardise them again."""
    from .fusion import FusionTrainer

    trainer = FusionTrainer(task=settings.task, width=settings.width, epochs=settings.epochs,
                            patience=settings.patience, random_state=seed,
                            device=settings.device, standardize=False)
    start = time.perf_counter()
    trainer.fit(_normalised(completed["train"], mean, scale), labels[split["train"]],
                X_val=_normalised(completed["val"], mean, scale), y_val=labels[split["val"]])
    seconds = time.perf_counter() - start
    return trainer.score(_normalised(completed["test"], mean, scale), labels[split["test"]]), seconds


def run_once(data: MultiModalArray, labels, config: str, seed: int,
             settings: HarnessSettings) -> list[dict]:
    """Every method on one (configuration, seed): a list of flat result records."""
    mask = simulate_missing(len(data), data.names, config, random_state=seed)
    hidden = hide_modalities(data, mask)
    split = _splits(labels, seed, settings)
    truth = {name: data.take(rows) for name, rows in split.items()}
    seen = {name: hidden.take(rows) for name, rows in split.items()}
    mean, scale = fit_modality_stats(seen["train"].values, seen["train"].mask, data.dims)
    base = {"config": config, "seed": seed, "missing_fraction": missing_fraction(mask)}
    records = []

    for method, make in _imputers(settings, seed).items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mean-filled modalities, sklearn convergence
            imputer = make().fit(seen["train"])
            completed = {name: imputer.transform(part) for name, part in seen.items()}
        impute_s = time.perf_counter() - start
        rmse, per_modality = imputation_rmse(truth["test"], completed["test"],
                                             ~seen["test"].mask, mean, scale)
        scores, train_s = _downstream(completed, labels, split, seed, settings, mean, scale)
        records.append({**base, "method": method, "rmse": rmse, "rmse_per_modality": per_modality,
                        **scores, "impute_s": impute_s, "train_s": train_s})

    if COMPLETE_CASE in settings.baselines:
        records.append({**base, **_complete_case(seen, labels, split, seed, settings, mean, scale)})
    if UPPER_BOUND in settings.baselines:
        scores, train_s = _downstream(truth, labels, split, seed, settings, mean, scale)
        records.append({**base, "method": UPPER_BOUND, "rmse": None, "rmse_per_modality": None,
                        **scores, "impute_s": 0.0, "train_s": train_s})
    return records


def _complete_case(seen: dict, labels, split: dict, seed: int, settings: HarnessSettings,
                   mean, scale) -> dict:
    """Train on the training rows that observe every modality; validation and test rows are
    mean-filled (the model needs every modality). For multiclass, validation keeps the
    classes that the complete rows cover (early stopping cannot score a class never trained
    on). No imputation error is reported. When no model can be trained (fewer than 2
    complete rows, a single class among them, or no validation row of their classes), the
    task's metrics are NaN and ``note`` says why."""
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
        scores, train_s = _downstream(completed, labels, split_cc, seed, settings, mean, scale)
        return {**record, **scores, "train_s": train_s}
    return {**record, **dict.fromkeys(TASK_METRICS[settings.task], float("nan")),
            "train_s": 0.0, "note": note}


def evaluate(data: MultiModalArray, labels, settings: HarnessSettings | None = None,
             progress: bool = True) -> dict:
    """Run every configuration × seed × method; returns ``{"settings", "records",
    "summary"}`` with the raw records and the mean ± std table."""
    settings = settings or HarnessSettings()
    labels = np.asarray(to_numpy(labels))
    if len(labels) != len(data):
        raise ValueError(f"labels has {len(labels)} rows but data has {len(data)} rows")
    from .fusion import TASKS

    if settings.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {settings.task!r}")
    for config in settings.configs:
        parse_missing_config(config, data.names)  # fail early on an unknown configuration
    runs = [(config, seed) for config in settings.configs for seed in range(settings.seeds)]
    records = []
    for config, seed in tqdm(runs, desc="bench-quality", unit="run", disable=not progress):
        records.extend(run_once(data, labels, config, seed, settings))
    return {"settings": asdict(settings), "records": records, "summary": summarise(records)}


METRICS = ("rmse", *DOWNSTREAM_METRICS, "impute_s", "train_s", "missing_fraction")


def summarise(records: list[dict]) -> list[dict]:
    """Mean and std over seeds of every metric, per (configuration, method), in run order."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["config"], record["method"]), []).append(record)
    summary = []
    for (config, method), group in groups.items():
        row = {"config": config, "method": method, "n_seeds": len(group)}
        for metric in METRICS:
            values = [r[metric] for r in group if r.get(metric) is not None]
            row[f"{metric}_mean"] = float(np.mean(values)) if values else None
            row[f"{metric}_std"] = float(np.std(values)) if values else None
        summary.append(row)
    return summary


def _cell(row: dict, metric: str, digits: int = 3) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if mean is None or np.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if row["n_seeds"] > 1 else f"{mean:.{digits}f}"


def _held_metrics(summary: list[dict]) -> list[str]:
    """The downstream metrics the summary holds (those of its task), in
    ``DOWNSTREAM_METRICS`` order."""
    return [m for m in DOWNSTREAM_METRICS if any(row[f"{m}_mean"] is not None for row in summary)]


def to_markdown(summary: list[dict]) -> str:
    """One table: a row per (configuration, method), a column per downstream metric of the
    task (F1-micro, F1-macro, accuracy; or MSE, MAE, Pearson r)."""
    metrics = _held_metrics(summary)
    headings = "".join(f" {DOWNSTREAM_METRICS[m]} |" for m in metrics)
    lines = [f"| missing config | missing slots | method | RMSE (test, normalised) |{headings} "
             "impute s | train s |",
             "| --- | ---: | --- |" + " ---: |" * (len(metrics) + 3)]
    for row in summary:
        cells = "".join(f" {_cell(row, m)} |" for m in metrics)
        lines.append(
            f"| {row['config']} | {row['missing_fraction_mean']:.0%} | {row['method']} | "
            f"{_cell(row, 'rmse')} |{cells} {_cell(row, 'impute_s', 2)} | "
            f"{_cell(row, 'train_s', 1)} |")
    return "\n".join(lines)


def plot(summary: list[dict], path) -> None:
    """The task's first downstream metric (F1-micro, or MSE for regression) and the RMSE
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
                ylabel=f"test {DOWNSTREAM_METRICS[metric]}", title="Downstream fusion model")
    axes[1].set(xlabel="fraction of modality slots missing",
                ylabel="imputation RMSE (normalised)", title="Imputation error on hidden slots")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict, out_dir) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=1, default=float))
    paths["md"].write_text(to_markdown(results["summary"]) + "\n")
    plot(results["summary"], paths["png"])
    return paths
