"""Benchmark of the parametric bootstrap (``MixedLMRegressor.bootstrap``) against lme4.

Run from the repository root::

    python benchmarks/bench_bootstrap.py        # about a minute; --help for options

Cases:

* sleepstudy, ``Reaction ~ Days + (Days | Subject)``, REML: 1,000 replicates;
* 100,000 rows, 2,000 groups, ``y ~ x0 + ... + x4 + (1 + x0 + x1 | g)`` (the data of
  ``bench_fit.py``'s medium section), REML: 200 replicates.

For each: the time of one full fit (median of 5 after a warm-up, from the data), the
time of the replicates and the time per replicate. For sleepstudy also the
profile-likelihood intervals (``conf_int("profile")``, lme4's ``confint(fit)``) against
one fit. Target: a replicate of the large
model costs under half a full fit (a replicate is a refit from statistics simulated
without the rows; a fit also reads the rows). With R and lme4 installed, lme4's
``bootMer(fit, fixef, nsim)`` (``use.u = FALSE``, ``type = "parametric"``) is timed in an
R child process on the same data (fewer replicates for the large case), as context.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table
from bench_fit import MEDIUM, SEED, simulate

from sklmm import MixedLMRegressor
from sklmm.datasets import load_sleepstudy

HALF = 0.5
COLUMNS = [
    ("case", "<"),
    ("method", "<"),
    ("replicates", ">"),
    ("total s", ">"),
    ("per replicate ms", ">"),
    ("one fit ms", ">"),
    ("check: measured (target)", "<"),
    ("result", "<"),
]

R_CODE = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
d$g <- as.character(d$g)
f <- as.formula(args[2])
nsim <- as.integer(args[3])
fit <- lmer(f, data = d, REML = TRUE)
if (nsim > 0) {
  t <- system.time(b <- bootMer(fit, fixef, nsim = nsim, use.u = FALSE, type = "parametric"))
} else {
  t <- system.time(ci <- suppressMessages(confint(fit, method = "profile")))
}
cat(t[["elapsed"]], "\n")
"""


def median_time(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_lme4(frame, formula, nsim):
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        frame.to_csv(path, index=False)
        script = Path(tmp) / "boot.R"
        script.write_text(R_CODE)
        out = subprocess.run(
            ["Rscript", str(script), str(path), formula, str(nsim)],
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        return None
    return float(out.stdout.split()[-1])


def case(rows, name, frame, formula, n_boot, n_lme4, n_jobs):
    est = MixedLMRegressor(formula=formula)
    fit_s = median_time(lambda: MixedLMRegressor(formula=formula).fit(frame))
    est.fit(frame)
    est.bootstrap(5, random_state=0)  # warm-up
    start = time.perf_counter()
    boot = est.bootstrap(n_boot, random_state=0, n_jobs=n_jobs)
    total = time.perf_counter() - start
    per = total / n_boot
    ratio = per / fit_s
    rows.append(
        {
            "case": name,
            "method": "sklmm bootstrap" + (f", n_jobs={n_jobs}" if n_jobs else ""),
            "replicates": f"{n_boot:,}",
            "total s": f"{total:.2f}",
            "per replicate ms": f"{1e3 * per:.2f}",
            "one fit ms": f"{1e3 * fit_s:.1f}",
            "check: measured (target)": f"replicate {ratio:.2f}x one fit (< {HALF:g}x)",
            "result": "PASS" if ratio < HALF else "FAIL",
        }
    )
    rows.append(
        {
            "case": "",
            "method": "",
            "check: measured (target)": f"converged {boot['converged'].mean():.1%}; sd of "
            f"fixed effects / se: {np.round(_sd_ratio(est, boot), 3).tolist()}",
        }
    )
    if n_lme4:
        lme4 = run_lme4(
            frame.rename(columns={"Subject": "g"}) if "Subject" in frame else frame,
            formula.replace("Subject", "g"),
            n_lme4,
        )
        rows.append(
            {
                "case": "",
                "method": "lme4 bootMer (R)",
                "replicates": f"{n_lme4:,}",
                "total s": "-" if lme4 is None else f"{lme4:.2f}",
                "per replicate ms": "-" if lme4 is None else f"{1e3 * lme4 / n_lme4:.2f}",
                "check: measured (target)": "R or lme4 not available" if lme4 is None else "",
            }
        )


def profile_case(rows, frame, formula, with_lme4):
    fit_s = median_time(lambda: MixedLMRegressor(formula=formula).fit(frame))
    est = MixedLMRegressor(formula=formula).fit(frame)
    start = time.perf_counter()
    est.conf_int("profile")
    took = time.perf_counter() - start
    rows.append(
        {
            "case": "",
            "method": "sklmm conf_int('profile')",
            "total s": f"{took:.2f}",
            "one fit ms": f"{1e3 * fit_s:.1f}",
            "check: measured (target)": f"{took / fit_s:.0f}x one fit (context)",
        }
    )
    if with_lme4:
        lme4 = run_lme4(frame.rename(columns={"Subject": "g"}), formula.replace("Subject", "g"), 0)
        rows.append(
            {
                "case": "",
                "method": "lme4 confint(fit) (profile, R)",
                "total s": "-" if lme4 is None else f"{lme4:.2f}",
            }
        )


def _sd_ratio(est, boot):
    se = np.sqrt(np.diag(est.fixed_effects_cov_))
    return boot[list(est.fixed_effects_.index)].std().to_numpy() / se


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-jobs", type=int, default=None, help="joblib workers (None: 1)")
    parser.add_argument("--no-lme4", action="store_true", help="skip lme4")
    args = parser.parse_args(argv)
    rows = []
    sleep = load_sleepstudy()
    n_lme4 = 0 if args.no_lme4 else 200
    case(
        rows,
        "sleepstudy, (Days | Subject)",
        sleep,
        "Reaction ~ Days + (Days | Subject)",
        1000,
        n_lme4,
        args.n_jobs,
    )
    profile_case(rows, sleep, "Reaction ~ Days + (Days | Subject)", not args.no_lme4)
    data = simulate(*MEDIUM, seed=SEED + 1)
    frame = pd.DataFrame(data["X"], columns=[f"x{j}" for j in range(5)])
    frame = frame.assign(y=data["y"], g=data["groups"])
    formula = "y ~ x0 + x1 + x2 + x3 + x4 + (1 + x0 + x1 | g)"
    case(
        rows,
        "100,000 rows, 2,000 groups",
        frame,
        formula,
        200,
        0 if args.no_lme4 else 10,
        args.n_jobs,
    )
    print("sklmm parametric bootstrap benchmark (REML; fits from the formula on a DataFrame)")
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
