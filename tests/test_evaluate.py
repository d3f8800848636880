"""The evaluation harness end to end on a small configuration (completion modes, indicator
variants, both downstream models), its paired differences and default-mode rule on
hand-built summaries, its input errors, the complete-case baseline's edge cases, the
regression outputs, the baseline imputers' checks and the demo's defaults."""

import inspect
import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from ul4m4_gpu import load_mfeat
from ul4m4_gpu.evaluation import harness as harness
from ul4m4_gpu.evaluation.baselines import IterativeBaselineImputer, KNNBaselineImputer, MeanFillImputer
from ul4m4_gpu.cli.commands import build_parser, main
from ul4m4_gpu.io.data import MultiModalArray
from ul4m4_gpu.evaluation.demo import run_demo
from ul4m4_gpu.evaluation.harness import (COMPLETE_CASE, MFEAT_CONFIGS, MFEAT_HIGH_MISSING,
                                HarnessSettings, _complete_case, _model_input, choose_default,
                                evaluate, run_once, summarise, to_markdown, write_outputs)
from ul4m4_gpu.evaluation.missing import missing_fraction, simulate_missing
from ul4m4_gpu.core.normalise import fit_modality_stats

#: The real completion modes once the estimator has them; before, its one (paper) rule.
TEST_MODES = harness.MODES
BASELINES = ("mean fill", "KNNImputer (k=5)", "KNNImputer (k=10)", "IterativeImputer")


@pytest.fixture(scope="module")
def small_mfeat():
    data, labels = load_mfeat(modalities=["fou", "kar", "mor"])
    rows = np.random.default_rng(0).permutation(len(data))[:300]
    return data.take(rows), labels[rows]


def tiny_settings(**overrides):
    settings = dict(configs=("missing_60", "complex_40_20_20_20"), seeds=2, n_clusters=(4,),
                    modes=TEST_MODES, epochs=3, patience=2, width=16, iterative_max_iter=1)
    settings.update(overrides)
    return HarnessSettings(**settings)


@pytest.fixture(scope="module")
def tiny_results(small_mfeat):
    data, labels = small_mfeat
    return evaluate(data, labels, tiny_settings(), progress=False)


def test_harness_runs_end_to_end_and_json_holds_every_method_and_seed(tiny_results, tmp_path):
    paths = write_outputs(tiny_results, tmp_path)
    saved = json.loads(paths["json"].read_text())
    methods = {*(f"UL4M4 {mode} (K=4)" for mode in TEST_MODES), *BASELINES,
               *(f"{name} + indicators" for name in BASELINES),
               "complete-case training", "complete data (upper bound)"}
    for config in ("missing_60", "complex_40_20_20_20"):
        runs = {(r["method"], r["seed"]) for r in saved["records"] if r["config"] == config}
        assert runs == {(m, s) for m in methods for s in (0, 1)}
    imputed = [r for r in saved["records"] if r["rmse"] is not None]
    assert all(0 < r["rmse"] < 5 and set(r["rmse_per_modality"]) == {"fou", "kar", "mor"}
               for r in imputed)
    scored = [r for r in saved["records"] if r["f1_micro"] == r["f1_micro"]]  # not NaN
    assert all(0 <= r[m] <= 1 for r in scored for m in ("f1_micro", "logreg_f1_micro",
                                                         "logreg_f1_macro", "logreg_accuracy"))
    assert {r["method"] for r in scored} == methods  # complete-case trains on some seed
    assert paths["png"].stat().st_size > 10_000
    table = paths["md"].read_text()
    for config in ("missing_60", "complex_40_20_20_20"):
        assert table.count(f"\n| {config} |") == len(methods)
    assert "| logreg F1-micro | Δ |" in table and " ± " in table
    assert "## Default completion mode (pre-registered rule)" in table
    assert saved["decision"]["configs"] == ["missing_60"]  # the only high-missing one
    assert saved["decision"]["mode"] in TEST_MODES


def test_indicator_variants_reuse_the_imputation(tiny_results):
    records = {(r["config"], r["seed"], r["method"]): r for r in tiny_results["records"]}
    for (config, seed, method), record in records.items():
        if record["kind"] != "baseline" or record["indicators"]:
            continue
        variant = records[config, seed, method + " + indicators"]
        assert variant["indicators"] and variant["kind"] == "baseline"
        assert variant["rmse"] == record["rmse"]
        assert variant["rmse_per_modality"] == record["rmse_per_modality"]
        assert variant["impute_s"] == record["impute_s"]


def test_indicators_are_the_input_mask_as_one_more_modality():
    labels = np.arange(6) % 2
    data = two_modalities(labels)
    mean, scale = fit_modality_stats(data.values, data.mask, data.dims)
    availability = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 1], [1, 1]], dtype=bool)
    plain = _model_input(data, mean, scale)
    extended = _model_input(data, mean, scale, availability)
    assert extended.names == ("a", "b", "availability") and extended.dims == (4, 3, 2)
    assert extended.mask.all() and extended.values.dtype == np.float32
    np.testing.assert_array_equal(extended.values[:, :7], plain.values)
    np.testing.assert_array_equal(extended.values[:, 7:], availability.astype(np.float32))


@pytest.mark.parametrize("downstream, present, absent", [
    (("fusion",), {"f1_micro", "train_s"}, {"logreg_f1_micro", "logreg_s"}),
    (("logreg",), {"logreg_f1_micro", "logreg_f1_macro", "logreg_accuracy", "logreg_s"},
     {"f1_micro", "train_s"}),
])
def test_downstream_selects_the_models(small_mfeat, downstream, present, absent):
    data, labels = small_mfeat
    settings = tiny_settings(configs=("missing_40",), seeds=1, n_clusters=(),
                             baselines=("mean fill",), downstream=downstream)
    records = evaluate(data, labels, settings, progress=False)["records"]
    assert [r["method"] for r in records] == ["mean fill", "mean fill + indicators"]
    assert all(present <= set(r) and not absent & set(r) for r in records)


def paired_records():
    """Three seeds of two baselines, their indicator variant and one UL4M4 mode on config
    "c", and one baseline on config "d" (its own best baseline)."""
    table = {  # method: (kind, rmse per seed, f1_micro per seed, logreg_f1_micro per seed)
        "mean fill": ("baseline", (1.0, 1.2, 1.1), (0.80, 0.82, 0.78), (0.70, 0.70, 0.70)),
        "mean fill + indicators": ("baseline", (1.0, 1.2, 1.1), (0.79, 0.80, 0.78),
                                   (0.75, 0.74, 0.76)),
        "KNNImputer": ("baseline", (0.9, 1.0, 1.1), (0.70, 0.71, 0.72), (0.60, 0.60, 0.60)),
        "UL4M4 paper (K=8)": ("UL4M4", (0.8, 0.9, 1.3), (0.85, 0.80, 0.81), (0.75, 0.80, 0.70)),
    }
    records = [{"config": "c", "seed": seed, "method": method, "kind": kind, "rmse": rmse[seed],
                "f1_micro": f1[seed], "logreg_f1_micro": logreg[seed], "missing_fraction": 0.6}
               for method, (kind, rmse, f1, logreg) in table.items() for seed in range(3)]
    return records + [{"config": "d", "seed": 0, "method": "mean fill", "kind": "baseline",
                       "rmse": 2.0, "f1_micro": 0.5, "missing_fraction": 0.5}]


def test_paired_differences_against_the_best_baseline():
    summary = {(row["config"], row["method"]): row for row in summarise(paired_records())}
    ul4m4 = summary["c", "UL4M4 paper (K=8)"]
    # RMSE: KNNImputer's mean 1.0 is the lowest; diffs -0.1, -0.1, +0.2.
    assert ul4m4["rmse_diff_vs"] == "KNNImputer"
    assert ul4m4["rmse_diff_mean"] == pytest.approx(0.0)
    assert ul4m4["rmse_diff_std"] == pytest.approx(np.sqrt(0.02))
    # Fusion F1-micro: mean fill's 0.80 is the highest; diffs +0.05, -0.02, +0.03.
    assert ul4m4["f1_micro_diff_vs"] == "mean fill"
    assert ul4m4["f1_micro_diff_mean"] == pytest.approx(0.02)
    assert ul4m4["f1_micro_diff_std"] == pytest.approx(np.sqrt(0.0026 / 3))
    # Logreg F1-micro: the indicator variant's 0.75 is the highest; diffs 0, +0.06, -0.06.
    assert ul4m4["logreg_f1_micro_diff_vs"] == "mean fill + indicators"
    assert ul4m4["logreg_f1_micro_diff_mean"] == pytest.approx(0.0)
    assert ul4m4["logreg_f1_micro_diff_std"] == pytest.approx(np.sqrt(0.0072 / 3))
    knn = summary["c", "KNNImputer"]
    assert knn["rmse_diff_mean"] == 0.0 and knn["rmse_diff_std"] == 0.0
    assert knn["f1_micro_diff_mean"] == pytest.approx(-0.09)
    other = summary["d", "mean fill"]
    assert other["rmse_diff_vs"] == "mean fill" and other["rmse_diff_mean"] == 0.0
    assert other["logreg_f1_micro_diff_vs"] is None and other["logreg_f1_micro_diff_mean"] is None
    table = to_markdown(list(summary.values()))
    assert ("| UL4M4 paper (K=8) | 1.000 ± 0.216 | +0.000 ± 0.141 | 0.820 ± 0.022 | "
            "+0.020 ± 0.029 | 0.750 ± 0.041 | +0.000 ± 0.049 |") in table
    assert ("- c: RMSE: KNNImputer; fusion F1-micro: mean fill; logreg F1-micro: mean fill "
            "+ indicators") in table


def mode_rows(mode, values):
    """Summary rows of one UL4M4 mode: ``values`` maps (config, K) to (F1-micro, RMSE)."""
    return [{"config": config, "method": f"UL4M4 {mode} (K={k})", "kind": "UL4M4",
             "mode": mode, "n_clusters": k, "params": {"completion": mode},
             "f1_micro_mean": f1, "rmse_mean": rmse} for (config, k), (f1, rmse) in values.items()]


def cells(f1, rmse, spread=0.02):
    """Four (config, K) cells of two high-missing configurations whose means are ``f1`` and
    ``rmse``, and a low-missing configuration with values the rule must ignore."""
    high = {("missing_60", 8): (f1 - spread, rmse + spread),
            ("missing_60", 32): (f1 + spread, rmse),
            ("drop_3", 8): (f1, rmse - spread), ("drop_3", 32): (f1, rmse)}
    return {**high, ("missing_20", 8): (1.0, 0.0), ("missing_20", 32): (1.0, 0.0)}


def test_choose_default_picks_the_lowest_rmse_among_modes_within_half_a_point():
    summary = [*mode_rows("paper", cells(0.900, 1.00)),
               *mode_rows("overlap", cells(0.897, 0.95)),
               *mode_rows("overlap soft", cells(0.895, 0.90)),  # 0.5 points below: eligible
               *mode_rows("nearest soft", cells(0.894, 0.70)),  # lowest RMSE, 0.6 points below
               {"config": "missing_60", "method": "mean fill", "kind": "baseline",
                "f1_micro_mean": 0.99, "rmse_mean": 0.1}]
    decision = choose_default(summary)
    assert decision["mode"] == "overlap soft"
    assert decision["params"] == {"completion": "overlap soft"}
    assert decision["configs"] == ["drop_3", "missing_60"] and decision["n_clusters"] == [8, 32]
    table = {entry["mode"]: entry for entry in decision["table"]}
    assert [entry["mode"] for entry in decision["table"]] == ["paper", "overlap", "overlap soft",
                                                              "nearest soft"]
    assert table["nearest soft"]["f1_micro"] == pytest.approx(0.894)
    assert table["nearest soft"]["rmse"] == pytest.approx(0.70)
    assert [table[m]["eligible"] for m in table] == [True, True, True, False]
    # Over the low-missing configuration alone every mode ties: the first wins.
    assert choose_default(summary, configs=("missing_20",))["mode"] == "paper"


def test_choose_default_rejects_summaries_it_cannot_decide_on():
    with pytest.raises(ValueError, match="no UL4M4 row of the configurations"):
        choose_default(mode_rows("paper", cells(0.9, 1.0)), configs=("missing_80",))
    uneven = mode_rows("paper", cells(0.9, 1.0)) + mode_rows("overlap", cells(0.9, 1.0))[:-3]
    with pytest.raises(ValueError, match="different \\(configuration, K\\) cells"):
        choose_default(uneven)


def test_high_missing_configs_are_those_hiding_at_least_half_the_slots():
    data, _ = load_mfeat(device="cpu")
    fractions = {config: [missing_fraction(simulate_missing(len(data), data.names, config,
                                                            random_state=seed))
                          for seed in range(5)] for config in MFEAT_CONFIGS}
    assert MFEAT_HIGH_MISSING == tuple(c for c in MFEAT_CONFIGS if min(fractions[c]) >= 0.5)
    assert all(max(f) < 0.5 for c, f in fractions.items() if c not in MFEAT_HIGH_MISSING)


def test_summary_is_mean_and_std_over_seeds():
    records = [{"config": "c", "method": "m", "seed": s, "rmse": v, "f1_micro": f,
                "missing_fraction": 0.5} for s, v, f in ((0, 1.0, 0.5), (1, 3.0, 0.7))]
    (row,) = summarise(records)
    assert row["rmse_mean"] == 2.0 and row["rmse_std"] == 1.0
    assert row["f1_micro_mean"] == pytest.approx(0.6) and row["accuracy_mean"] is None
    assert row["rmse_diff_mean"] is None  # no baseline to pair with
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
    ({"configs": ("missing_40", "drop_1", "missing_40")},
     "configs names missing_40 more than once"),
    ({"downstream": ()}, "downstream must be a non-empty subset of fusion, logreg, got nothing"),
    ({"downstream": ("fusion", "xgb")}, "subset of fusion, logreg, got fusion, xgb"),
    ({"downstream": ("logreg", "logreg")}, "downstream names logreg more than once"),
    ({"task": "regression"}, "the logreg downstream needs task='multiclass'"),
])
def test_bad_inputs(small_mfeat, change, message):
    data, labels = small_mfeat
    labels = labels[change.pop("labels", slice(None))]
    with pytest.raises(ValueError, match=message):
        evaluate(data, labels, tiny_settings(**change), progress=False)


def test_cli_bench_quality_quick(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness, "MODES", TEST_MODES)
    assert main(["bench-quality", "--dataset", "mfeat", "--out", str(tmp_path), "--quick",
                 "--k", "8", "--configs", "missing_50", "--downstream", "logreg"]) == 0
    out = capsys.readouterr().out
    assert f"UL4M4 {next(iter(TEST_MODES))} (K=8)" in out and "KNNImputer (k=10) + indicators" in out
    assert "| logreg F1-micro | Δ |" in out and "fusion F1-micro" not in out
    assert "No default chosen: the rule needs the fusion model" in out
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md", "results.png"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["configs"] == ["missing_50"] and saved["decision"] is None


def test_cli_bench_quality_prints_and_saves_the_decision(tiny_results, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr(harness, "evaluate", lambda data, labels, settings, progress: tiny_results)
    assert main(["bench-quality", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    section = harness.decision_markdown(tiny_results["decision"])
    assert section in out and section in (tmp_path / "results.md").read_text()
    assert f"Chosen: **{tiny_results['decision']['mode']}**" in section


class Captured(Exception):
    """Raised by the stand-in for ``evaluate`` with the settings the command built."""


@pytest.mark.parametrize("options, configs, downstream", [
    ([], MFEAT_HIGH_MISSING, ["fusion", "logreg"]),
    (["--configs", "all", "--downstream", "fusion"], MFEAT_CONFIGS, ["fusion"]),
    (["--configs", "drop_1,high-missing"], ("drop_1", *MFEAT_HIGH_MISSING), ["fusion", "logreg"]),
])
def test_cli_configs_and_downstream_lists(tmp_path, monkeypatch, options, configs, downstream):
    def stand_in(data, labels, settings, progress):
        raise Captured(settings)

    monkeypatch.setattr(harness, "evaluate", stand_in)
    with pytest.raises(Captured) as captured:
        main(["bench-quality", "--out", str(tmp_path / "q"), *options])
    settings = captured.value.args[0]
    assert tuple(settings.configs) == configs and list(settings.downstream) == downstream


@pytest.mark.parametrize("options, message", [
    (["--downstream", "fusion,xgb"], "downstream must be a non-empty subset of fusion, logreg, "
                                     "got fusion, xgb"),
    (["--downstream", "fusion,"], "--downstream takes a comma-separated list without empty "
                                  "items, got 'fusion,'"),
    (["--configs", "missing_60,,drop_3"], "--configs takes a comma-separated list without "
                                          "empty items"),
    (["--configs", "missing_60,70_nope"], "names unknown modalities ['nope']"),
    (["--configs", "high-missing,drop_3"], "configs names drop_3 more than once"),
])
def test_cli_bench_quality_rejects_bad_lists_in_one_line(tmp_path, capsys, options, message):
    assert main(["bench-quality", "--out", str(tmp_path / "q"), "--quick", *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ul4m4: error: ") and message in err
    assert not (tmp_path / "q").exists()


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
    settings = HarnessSettings(n_clusters=(2,), modes=TEST_MODES, epochs=2, patience=2,
                               width=8, baselines=("mean fill", COMPLETE_CASE), device="cpu")
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
    settings = HarnessSettings(task=task, n_clusters=(), downstream=("fusion",), epochs=2,
                               patience=2, width=8, baselines=(COMPLETE_CASE,), device="cpu")
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
    assert "| fusion MSE | fusion MAE | fusion Pearson r |" in header and "F1" not in header
    assert "Δ" not in header  # no baseline to pair with
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


# ---------------------------------------------------------------------- other data sets
def test_config_sets_for_two_and_six_modalities():
    sets = harness.config_sets(("shape", "colour"), (8, 10))
    # two modalities: no drop_1 (no row would observe both), none hides half: all of them
    assert sets["all"] == sets["high-missing"] == ("missing_60", "missing_75",
                                                   "100_colour_20_shape")
    assert harness.generic_configs(("acc", "gyro"), (27, 27))[-1] == "100_acc_20_gyro"
    assert "drop_2" not in harness.generic_configs(("a", "b", "c"), (1, 2, 3))  # one left
    assert "drop_2" in harness.generic_configs(("a", "b", "c", "d"), (1, 2, 3, 4))
    six = harness.config_sets(("fou", "fac", "kar", "pix", "zer", "mor"),
                              (76, 216, 64, 240, 47, 6))
    assert six["high-missing"] == six["all"] == (
        "missing_60", "missing_75", "drop_3", "100_pix_20_fou_20_fac_20_kar_20_zer_20_mor")
    with pytest.raises(ValueError, match=r"at least 2 modalities, got \['a'\]"):
        harness.generic_configs(("a",), (3,))


def test_mfeat_high_missing_is_the_expected_share_rule():
    from ul4m4_gpu.evaluation.missing import expected_missing_fraction

    names = ("fou", "fac", "kar", "pix", "zer", "mor")
    high = [c for c in MFEAT_CONFIGS if expected_missing_fraction(c, names) >= harness.HIGH_MISSING]
    assert tuple(high) == MFEAT_HIGH_MISSING


def test_stratified_split_of_forty_rows_and_five_classes():
    """Nutrimouse's shape: 5 classes × 8 rows split 24 / 8 / 8, every split holding every
    class, for every seed."""
    labels = np.repeat(np.arange(5), 8)
    settings = HarnessSettings()
    assert harness.check_split(labels, settings) == 24
    for seed in range(5):
        split = harness._splits(labels, seed, settings)
        assert [len(split[part]) for part in ("train", "val", "test")] == [24, 8, 8]
        assert sorted(np.concatenate(list(split.values()))) == list(range(40))
        assert all(set(labels[rows]) == set(range(5)) for rows in split.values())


def test_an_impossible_split_is_one_line():
    with pytest.raises(ValueError) as error:
        harness.check_split(np.repeat(np.arange(5), 2), HarnessSettings())
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        "cannot split the 10 rows (5 classes, the smallest of 2 rows) into stratified "
        "train / validation / test sets (60% / 20% / 20%): ")


def test_evaluate_refuses_k_above_the_training_rows():
    labels = np.repeat(np.arange(5), 8)
    with pytest.raises(ValueError, match=r"n_clusters \[25\] exceed the 24 training rows of "
                                         r"each split of the 40 rows; choose K <= 24"):
        evaluate(two_modalities(labels), labels,
                 tiny_settings(configs=("drop_1",), n_clusters=(8, 25)), progress=False)
