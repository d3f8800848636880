"""The evaluation harness end to end on a small configuration, and its input errors."""

import json

import numpy as np
import pytest

from ul4m4_gpu import load_mfeat
from ul4m4_gpu.cli import main
from ul4m4_gpu.evaluate import HarnessSettings, evaluate, summarise, to_markdown, write_outputs


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
