"""Where each completion rule's fills come from on mfeat (the report of
``transform(X, return_report=True)``): the share drawn from centres that share no observed modality with the row and the share at score 0,
for the paper's rule and the default, at K = 8 and 32, seed 0, on the configurations with at
least half of the slots missing.

Run:  python benchmarks/completion_report.py
"""

import warnings

from ul4m4_gpu import UL4M4Imputer, hide_modalities, load_mfeat, simulate_missing
from ul4m4_gpu.evaluation.harness import MFEAT_HIGH_MISSING

RULES = (("paper", 1), ("nearest", 5))


def main() -> None:
    data, _ = load_mfeat(device="cpu")
    warnings.simplefilter("ignore")  # the paper rule's blind-spot warning is what we measure
    for config in MFEAT_HIGH_MISSING:
        mask = simulate_missing(len(data), data.names, config, random_state=0)
        x = hide_modalities(data, mask)
        for k in (8, 32):
            for completion, r in RULES:
                imp = UL4M4Imputer(n_clusters=k, random_state=0, completion=completion,
                                   n_candidates=r).fit(x)
                _, report = imp.transform(x, return_report=True)
                from_centres = max(int((report.filled - report.mean_filled).sum()), 1)
                partial = int((~imp.centers_mask_.all(axis=1)).sum())
                print(f"{config[:28]:28s} K={k:2d} {completion:7s} r={r}: blind "
                      f"{report.overall_blind_share:6.1%}  score 0 "
                      f"{report.zero_score.sum() / from_centres:6.1%}  partial centres {partial}")


if __name__ == "__main__":
    main()
