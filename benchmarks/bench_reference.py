"""Every lme4 reference case of ``tests/reference/``: sklmm's fit time against lme4's recorded one.

Run from the repository root::

    pip install -e .
    python benchmarks/bench_reference.py        # a few seconds; --help for options

Each case folder holds the data, the model (``spec.json``: the lme4 formula, REML or ML,
the weights column) and lme4's numbers (``lme4.json``), with ``timing.median_s``: the
median elapsed seconds of ``lmer(formula, data = train, ...)`` on a 2-core machine, the
data already in R's memory (see ``tests/reference/README.md``). Cases without a recorded
time (the weighted ones) are listed with a dash.

sklmm fits the same training rows two ways, each timed as the median of ``--repeats``
calls after one untimed warm-up:

- ``formula``: ``MixedLMRegressor(formula=<the lme4 formula>, reml=...).fit(train)``, the
  call that corresponds to ``lmer(formula, data)`` (formula parsing included);
- ``arrays``: ``MixedLMRegressor(random_effects=<the bar terms>, ...).fit(X, y,
  groups=...)`` on a float matrix and the grouping columns, built before the clock
  starts (the path of scikit-learn pipelines).

Target (issue 18): each case's fit takes less time than lme4's recorded time. The table
also gives each log-likelihood against lme4's (``|d logLik|``).
"""

import argparse
import json
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import print_table, sklmm_revision

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference"

COLUMNS = [
    ("case", "<"),
    ("model", "<"),
    ("rows", ">"),
    ("lme4 s", ">"),
    ("sklmm formula s", ">"),
    ("ratio", ">"),
    ("sklmm arrays s", ">"),
    ("ratio ", ">"),
    ("|d logLik|", ">"),
    ("result", "<"),
]


def cases():
    """The reference folders with a model fitted by lmer (spec.json and lme4.json)."""
    for folder in sorted(REFERENCE.iterdir()):
        if (folder / "spec.json").exists() and (folder / "lme4.json").exists():
            yield folder


def _bars(formula):
    """The random-effects part of an lme4 formula: its bar terms joined by ``+``."""
    return " + ".join(re.findall(r"\([^()]*\|[^()]*\)", formula))


def setup(folder):
    """The two fits of one case, and lme4's numbers."""
    from sklmm import MixedLMRegressor

    spec = json.loads((folder / "spec.json").read_text())
    lme4 = json.loads((folder / "lme4.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype={c: str for c in spec["group_columns"]})
    train = data[data["split"] == "train"].reset_index(drop=True)
    weights = spec.get("weights")
    w = None if weights is None else train[weights["column"]].to_numpy(float)
    fixed = [c for c in spec["fixed_columns"] if c != "X:(Intercept)"]
    X = np.ascontiguousarray(train[fixed].to_numpy(float)).reshape(len(train), len(fixed))
    X = pd.DataFrame(X, columns=[c[2:] for c in fixed])
    y = train[spec["response"]].to_numpy(float)
    groups = train[spec["group_columns"]]
    fit_intercept = "X:(Intercept)" in spec["fixed_columns"]
    reml = bool(spec["reml"])

    def by_formula():
        est = MixedLMRegressor(formula=spec["formula"], reml=reml)
        return est.fit(train, sample_weight=w)

    def by_arrays():
        est = MixedLMRegressor(
            random_effects=_bars(spec["formula"]), reml=reml, fit_intercept=fit_intercept
        )
        return est.fit(X, y, groups=groups, sample_weight=w)

    return spec, lme4, len(train), by_formula, by_arrays


def timed(fit, repeats):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular fits (pastes) warn: the time is the point
        est = fit()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fit()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), est


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed fits per case (30)")
    args = parser.parse_args(argv)
    import sklmm

    print(
        f"sklmm {sklmm.__version__} ({sklmm_revision()}), python {sys.version.split()[0]}, "
        f"numpy {np.__version__}, pandas {pd.__version__}; median of {args.repeats} fits "
        "after a warm-up; lme4: the median recorded in each case's lme4.json"
    )
    rows, ok = [], True
    for folder in cases():
        spec, lme4, n, by_formula, by_arrays = setup(folder)
        t_formula, est = timed(by_formula, args.repeats)
        t_arrays, est_arrays = timed(by_arrays, args.repeats)
        d = max(
            abs(est.log_likelihood_ - lme4["logLik"]),
            abs(est_arrays.log_likelihood_ - lme4["logLik"]),
        )
        timing = lme4.get("timing") or {}
        t_lme4 = timing.get("median_s")
        row = {
            "case": folder.name,
            "model": spec["formula"],
            "rows": n,
            "lme4 s": "-" if t_lme4 is None else f"{t_lme4:.4f}",
            "sklmm formula s": f"{t_formula:.4f}",
            "sklmm arrays s": f"{t_arrays:.4f}",
            "|d logLik|": f"{d:.1e}",
        }
        if t_lme4 is not None:
            row["ratio"] = f"{t_formula / t_lme4:.2f}"
            row["ratio "] = f"{t_arrays / t_lme4:.2f}"
            passed = t_formula < t_lme4 and t_arrays < t_lme4
            row["result"] = "PASS" if passed else "FAIL"
            ok &= passed
        else:
            row["result"] = "(no lme4 time)"
        rows.append(row)
    print_table(rows, COLUMNS)
    print()
    print(
        "ratio: sklmm time / lme4 time (formula, then arrays); target: below 1 for every "
        f"case with a recorded lme4 time: {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
