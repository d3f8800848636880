"""What the commands share: the estimator parameters their options set, the loaded
``--model``, the progress switch and the summary lines they print."""

from __future__ import annotations

import sys

from ..estimator import UL4M4Imputer


#: The completion options: (option, UL4M4Imputer parameter).
COMPLETION_OPTIONS = (("completion", "completion"), ("n_candidates", "n_candidates"),
                      ("temperature", "temperature"), ("n_neighbors", "n_neighbors"),
                      ("n_probe", "n_probe"), ("max_donors", "max_donors"))
#: The options of a fit besides --k and --seed (``impute`` refuses them with ``--model``).
FIT_OPTIONS = (("max_iter", "max_iter"), ("n_init", "n_init"), ("tol", "tol"))


def _given(args, options) -> dict:
    """The parameters of ``options`` ((option, parameter) pairs) given on the command line
    (those left out are absent)."""
    return {name: getattr(args, option) for option, name in options
            if getattr(args, option, None) is not None}


def completion_options(args) -> dict:
    """The completion parameters given on the command line (those left out are absent)."""
    return _given(args, COMPLETION_OPTIONS)


def imputer_params(args) -> dict:
    """The ``UL4M4Imputer`` parameters a command's options set: the completion options and
    ``--batch-size`` only where given (a loaded model keeps its own), and without ``--model``
    those of the fit (:data:`FIT_OPTIONS` where given)."""
    params = _given(args, COMPLETION_OPTIONS + (("batch_size", "batch_size"),))
    if getattr(args, "model", None) is None:
        params.update(n_clusters=args.k, random_state=args.seed, device=args.device,
                      **_given(args, FIT_OPTIONS))
    params["verbose"] = int(progress_enabled(args))
    return params


def progress_enabled(args) -> bool:
    """Progress bars on stderr: when it is a terminal, unless ``--quiet``."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def print_fitted(args, n_rows, n_iter, inertia) -> None:
    print(f"fitted K={args.k} on {n_rows} rows in {n_iter} iterations "
          f"(inertia {inertia:.4g}); model written to {args.output}")


def print_filled(args, n_filled, n_rows, report=None) -> None:
    """The summary line, then where the fills came from (``report``, a CompletionReport)."""
    print(f"filled {n_filled} missing modality slots in {n_rows} rows; "
          f"written to {args.output}")
    if report is not None:
        print(report.summary())


def load_model(args) -> UL4M4Imputer:
    """The ``--model`` file, with the completion options and ``--batch-size`` given
    overriding its own."""
    imputer = UL4M4Imputer.load(args.model, device=args.device)
    imputer.set_params(**imputer_params(args))
    imputer._check_params()
    return imputer
