"""The evaluation harness end to end on a small configuration, its input errors, the
complete-case baseline's edge cases, the regression outputs, the baseline imputers' checks
and the demo's defaults."""

import inspect
import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from ul4m4_gpu import load_mfeat
from ul4m4_gpu.baselines import IterativeBaselineImputer, KNNBaselineImputer, MeanFillImputer
from ul4m4_gpu.cli import build_parser, main
from ul4m4_gpu.data import MultiModalArray
from ul4m4_gpu.demo import run_demo
from ul4m4_gpu.evaluate import (COMPLETE_CASE, HarnessSettings, _complete_case, evaluate,
                                run_once, summarise, to_markdown, write_outputs)
from ul4m4_gpu.normalise import fit_modality_stats


@pytest.fixture(scope="module")
def small_mfeat():
    data, labels = load_mfeat(modalities=["fou", "kar", "mor"])
    rows = np.random.default_rng(0).permutation(len(data))[:300]
    return data.take(rows), labels[rows]


def tiny_settings(**overrides):
    settings = dict(configs=("missing_40", "complex_40_20_20_20"), seeds=2, n_clusters=(4,),
                    epochs=3, patience=2, width=16, iterative_max_iter=1)
    settings.update(overrides)
    return HarnessSettings(**settings)


def test_harness_runs_end_to_end_and_json_holds_every_method_and_seed(small_mfeat, tmp_path):
    data, labels = small_mfeat
    results = evaluate(data, labels, tiny_settings(), progress=False)
    paths = write_outputs(results, tmp_path)
    saved = json.loads(paths["json"].read_text())
    methods = {"UL4M4 (K=4)", "mean fill", "KNNImputer", "IterativeImputer",
               "complete-case training", "complete data (upper bound)"}
    for config in ("missing_40", "complex_40_20_20_20"):
        runs = {(r["method"], r["seed"]) for r in saved["records"] if r["config"] == config}
        assert runs == {(m, s) for m in methods for s in (0, 1)}
    imputed = [r for r in saved["records"] if r["rmse"] is not None]
    assert all(0 < r["rmse"] < 5 and set(r["rmse_per_modality"]) == {"fou", "kar", "mor"}
               for r in imputed)
    assert all(0 <= r["f1_micro"] <= 1 for r in saved["records"] if r["f1_micro"] == r["f1_micro"])
    assert paths["png"].stat().st_size > 10_000
    table = paths["md"].read_text()
    assert table.count("\n") == 2 + 2 * len(methods)
    assert "UL4M4 (K=4)" in table and " ± " in table


def test_summary_is_mean_and_std_over_seeds():
    records = [{"config": "c", "method": "m", "seed": s, "rmse": v, "f1_micro": f,
                "missing_fraction": 0.5} for s, v, f in ((0, 1.0, 0.5), (1, 3.0, 0.7))]
    (row,) = summarise(records)
    assert row["rmse_mean"] == 2.0 and row["rmse_std"] == 1.0
    assert row["f1_micro_mean"] == pytest.approx(0.6) and row["accuracy_mean"] is None
    assert "2.000 ± 1.000" in to_markdown([row])


def test_same_seed_same_numbers(small_mfeat):
    data, labels = small_mfeat
    settings = tiny_settings(configs=("missing_40",), seeds=1, baselines=("mean fill",))
    first = evaluate(data, labels, settings, progress=False)["records"]
    second = evaluate(data, labels, settings, progress=False)["records"]
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rs]  # noqa: E731
    assert strip(first) == strip(second)


@pytest.mark.parametrize("change, message", [
    ({"labels": slice(0, 10)}, "labels has 10 rows but data has 300 rows"),
    ({"task": "ranking"}, "task must be one of"),
    ({"configs": ("missing_40", "70_nope")}, "70_nope"),
])
def test_bad_inputs(small_mfeat, change, message):
    data, labels = small_mfeat
    labels = labels[change.pop("labels", slice(None))]
    with pytest.raises(ValueError, match=message):
        evaluate(data, labels, tiny_settings(**change), progress=False)


def test_cli_bench_quality_quick(tmp_path, capsys):
    assert main(["bench-quality", "--dataset", "mfeat", "--out", str(tmp_path), "--quick",
                 "--k", "8", "--missing", "missing_50"]) == 0
    out = capsys.readouterr().out
    assert "UL4M4 (K=8)" in out and "KNNImputer" in out
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md", "results.png"}


# ---------------------------------------------------------------------- review fixes
def two_modalities(labels, seed=0):
    """A small CPU MultiModalArray ('a': 4 columns that follow the label, 'b': 3 of noise)."""
    rng = np.random.default_rng(seed)
    signal = np.asarray(labels, dtype=np.float32).reshape(len(labels), -1)[:, :1]
    return MultiModalArray.from_modalities(
        [rng.normal(size=(len(labels), 4)).astype(np.float32) + signal,
         rng.normal(size=(len(labels), 3)).astype(np.float32)], names=["a", "b"], device="cpu")


def test_complete_case_with_a_single_class_is_a_nan_record():
    labels = np.repeat([0, 1, 2], 20)
    settings = HarnessSettings(n_clusters=(2,), epochs=2, patience=2, width=8,
                               baselines=("mean fill", COMPLETE_CASE), device="cpu")
    records = run_once(two_modalities(labels), labels, "complex_5_47.5_47.5", 7, settings)
    (record,) = [r for r in records if r["method"] == COMPLETE_CASE]
    assert record["note"] == "the complete training rows hold a single class"
    assert np.isnan([record["f1_micro"], record["f1_macro"], record["accuracy"]]).all()
    assert all(0 <= r["f1_micro"] <= 1 for r in records if r["method"] != COMPLETE_CASE)


def test_complete_case_without_validation_rows_of_its_classes_is_a_nan_record():
    labels = np.array([0, 1, 0, 1, 2, 2, 2])
    seen = two_modalities(labels)
    parts = {"train": seen.take(np.arange(4)), "val": seen.take([4, 5]), "test": seen.take([6])}
    split = {"train": np.arange(4), "val": np.array([4, 5]), "test": np.array([6])}
    mean, scale = fit_modality_stats(seen.values, seen.mask, seen.dims)
    record = _complete_case(parts, labels, split, 0, HarnessSettings(device="cpu"), mean, scale)
    assert record["note"] == "no validation row has a class of the complete training rows"
    assert np.isnan(record["f1_micro"]) and record["n_train_rows"] == 4


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_complete_case_for_multilabel_and_regression(task):
    rng = np.random.default_rng(1)
    labels = (rng.integers(2, size=(60, 2)) if task == "multilabel" else rng.normal(size=60))
    settings = HarnessSettings(task=task, n_clusters=(), epochs=2, patience=2, width=8,
                               baselines=(COMPLETE_CASE,), device="cpu")
    (record,) = run_once(two_modalities(labels), labels, "missing_20", 0, settings)
    assert record["method"] == COMPLETE_CASE and "note" not in record
    expected = ("f1_micro", "f1_macro", "accuracy") if task == "multilabel" else ("mse", "mae")
    assert np.isfinite([record[m] for m in expected]).all()


def test_regression_outputs_show_the_regression_metrics(tmp_path):
    records = [{"config": config, "method": "m", "seed": seed, "rmse": 0.5, "mse": 1.0 + seed,
                "mae": 0.8, "pearson_r": 0.6, "impute_s": 0.1, "train_s": 1.0,
                "missing_fraction": fraction}
               for config, fraction in (("missing_20", 0.2), ("missing_40", 0.4))
               for seed in (0, 1)]
    summary = summarise(records)
    table = to_markdown(summary)
    header = table.splitlines()[0]
    assert "| MSE | MAE | Pearson r |" in header and "F1" not in header
    assert "| 1.500 ± 0.500 | 0.800 ± 0.000 | 0.600 ± 0.000 |" in table
    paths = write_outputs({"settings": {}, "records": records, "summary": summary}, tmp_path)
    assert paths["png"].stat().st_size > 10_000


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("make", [MeanFillImputer, KNNBaselineImputer,
                                  lambda: IterativeBaselineImputer(max_iter=1)])
def test_baselines_check_fitted_state_dims_and_names(make):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    mask = np.ones((12, 2), dtype=bool)
    mask[::3, 0] = mask[1::3, 1] = False
    ab = MultiModalArray.from_modalities([a, b], mask=mask, names=["a", "b"], device="cpu")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        make().transform(ab)
    imputer = make().fit(ab)
    ba = MultiModalArray.from_modalities([b, a], mask=mask[:, ::-1], names=["b", "a"],
                                         device="cpu")
    swapped = imputer.transform(ba)
    assert swapped.names == ("b", "a")
    np.testing.assert_array_equal(swapped.values, imputer.transform(ab).select(["b", "a"]).values)
    narrow = MultiModalArray.from_modalities([a, b[:, :1]], mask=mask, names=["a", "b"],
                                             device="cpu")
    with pytest.raises(ValueError, match=r"X has modality dims \(3, 1\) but the model was "
                                         r"fitted on \(3, 2\)"):
        imputer.transform(narrow)
    with pytest.raises(ValueError, match=r"missing: \['b'\], unexpected: \['c'\]"):
        imputer.transform(MultiModalArray.from_modalities([a, b], mask=mask, names=["a", "c"],
                                                          device="cpu"))


def test_run_demo_defaults_to_the_cli_k():
    cli_k = build_parser().parse_args(["demo"]).k
    assert inspect.signature(run_demo).parameters["n_clusters"].default == cli_k == 32
