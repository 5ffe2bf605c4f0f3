"""Benchmark of ``MixedLMRegressor.fit`` against OLS and statsmodels .

Run from the repository root::

    pip install -e .[bench]          # sklmm plus statsmodels
    python benchmarks/bench_fit.py   # about two minutes; --help for options

Everything is measured in one run and printed as one table.

Data (fixed seed): ``n`` rows in ``G`` groups of unequal size (every group has
at least 2 rows; the rest are spread with log-normal weights, so a few groups
are large and many are small), rows in random order, 5 covariates, and the
response drawn from ``y = 1 + X beta + b0_g + b1_g x0 + b2_g x1 + e`` with
correlated random effects ``(b0, b1, b2) ~ N(0, Sigma)`` (standard deviations
1, 0.5, 0.3; correlations 0.3, -0.2, 0.1) and ``e ~ N(0, 1)``: variance
parameters well inside the parameter space.

Model: lme4 ``y ~ x0 + ... + x4 + (1 + x0 + x1 | g)``, REML, fitted by
``MixedLMRegressor(random_slopes=[0, 1]).fit(X, y, groups=g)``.

Section 1, 1,000,000 rows and 10,000 groups: ``numpy.linalg.lstsq`` on the
same ``X`` with an intercept column and ``y``, then the sklmm fit. Targets:
fit time at most 5 times lstsq; peak memory at most 3 times the size of the
``X`` that ``fit`` receives.

The same 1,000,000-row fit with ``sample_weight`` (uniform on 0.5..2, lme4's
``weights=``). Target: at most 1.2 times the unweighted fit time.

The same 1,000,000-row fit from a formula,
``MixedLMRegressor(formula="y ~ x0 + ... + x4 + (1 + x0 + x1 | g)").fit(df)`` on a
DataFrame with the columns ``y``, ``x0``..``x4`` and ``g`` (built once, outside the
timing). Target: at most 1.5 times the matrix fit time; the same log-likelihood.

Section 2, 100,000 rows and 2,000 groups: the same two, and statsmodels
``MixedLM(y, X_with_const, groups, exog_re=X_with_const[:, :3]).fit(reml=True)``
with its default method (bfgs, then lbfgs and cg if bfgs fails), with
``method=["lbfgs"]``, and with its default method and BLAS at one thread.
Targets: sklmm at least 30 times faster than statsmodels; log-likelihoods
equal to 1e-4. statsmodels' ``llf`` of a REML fit
is the REML log-likelihood with all constants, the same quantity as sklmm's
``log_likelihood_`` (lme4's ``logLik``); the table checks this by evaluating
statsmodels' ``loglike`` at sklmm's estimates. Each statsmodels fit runs in a
child process and is stopped after ``--statsmodels-timeout`` seconds (600).

Measures:

- time: wall time of one call (``time.perf_counter``) after one untimed
  warm-up call; "best" is the minimum and "median" the median over
  ``--repeats`` calls. Targets use the best time of both sides. A statsmodels
  time is one call, model construction plus ``fit`` (which also computes the
  Hessian for standard errors).
- traced peak: ``tracemalloc`` peak during one further call, minus what was
  traced at its start (the data are not counted). It sees every numpy
  allocation but not memory that C code takes with ``malloc``, such as LAPACK
  work arrays: lstsq's copy of ``X`` is invisible to it.
- RSS peak: growth of the process's peak resident set size during one more
  call (Linux ``/proc/self/clear_refs``), for comparison; it sees the LAPACK
  work arrays too, but can under-count memory that ``malloc`` reuses.
- BLAS 1 thread: the rows so marked repeat the calls inside
  ``threadpoolctl.threadpool_limits(1)`` (every BLAS and OpenMP pool of the
  process at one thread), as context for the targets, which use the rows
  measured as installed. numpy and scipy load separate OpenBLAS libraries,
  and on a machine with few cores their thread pools can slow each other down.
- X: size of the array handed to the method (``X`` for sklmm, ``X`` with its
  intercept column for lstsq and statsmodels).
"""

import argparse
import gc
import multiprocessing
import os
import platform
import sys
import time
import warnings

import numpy as np
import pandas as pd
import scipy
import sklearn
from _common import (
    _fmt_mb,
    blas_summary,
    print_table,
    rss_peak,
    sklmm_revision,
    traced_peak,
    wait_for_child,
)
from threadpoolctl import threadpool_limits

import sklmm
from sklmm import MixedLMRegressor

SEED = 20_251_125
N_COVARIATES = 5
RANDOM_SLOPES = [0, 1]
BETA = np.array([1.0, 0.5, -0.3, 0.2, -0.1, 0.8])  # intercept, then x0..x4
RE_SD = np.array([1.0, 0.5, 0.3])  # random intercept, slope on x0, slope on x1
RE_CORR = np.array([[1.0, 0.3, -0.2], [0.3, 1.0, 0.1], [-0.2, 0.1, 1.0]])
SIGMA2 = 1.0

LARGE = (1_000_000, 10_000)
MEDIUM = (100_000, 2_000)

TIME_RATIO_TARGET = 5.0
MEMORY_RATIO_TARGET = 3.0
SPEEDUP_TARGET = 30.0
WEIGHTED_RATIO_TARGET = 1.2
FORMULA_RATIO_TARGET = 1.5
FORMULA = "y ~ x0 + x1 + x2 + x3 + x4 + (1 + x0 + x1 | g)"
LLF_TOL = 1e-4

MB = 1e6


# -- data ----------------------------------------------------------------------
def simulate(n_rows, n_groups, seed):
    """Rows in random order from groups of unequal size (each at least 2 rows)."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, n_groups)
    sizes = 2 + rng.multinomial(n_rows - 2 * n_groups, weights / weights.sum())
    groups = np.repeat(np.arange(n_groups), sizes)
    rng.shuffle(groups)
    # Covariates vary within and between groups.
    X = rng.standard_normal((n_rows, N_COVARIATES))
    X += 0.5 * rng.standard_normal((n_groups, N_COVARIATES))[groups]
    Sigma = RE_CORR * np.outer(RE_SD, RE_SD)
    b = rng.multivariate_normal(np.zeros(len(RE_SD)), Sigma, n_groups)[groups]
    y = BETA[0] + X @ BETA[1:] + b[:, 0]
    for k, j in enumerate(RANDOM_SLOPES, start=1):
        y += b[:, k] * X[:, j]
    y += np.sqrt(SIGMA2) * rng.standard_normal(n_rows)
    X1 = np.column_stack([np.ones(n_rows), X])
    return {"X": X, "X1": X1, "y": y, "groups": groups, "sizes": sizes}


# -- measurements ----------------------------------------------------------------
def time_call(fn, repeats):
    """Warm up once, then return the wall times of ``repeats`` calls."""
    fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(fn, repeats, memory=True):
    times = time_call(fn, repeats)
    return {
        "best": min(times),
        "median": float(np.median(times)),
        "traced": traced_peak(fn) if memory else None,
        "rss": rss_peak(fn)[0] if memory else None,
    }


# -- statsmodels, in a child process ---------------------------------------------
def _statsmodels_worker(X1, y, groups, n_re, method, one_thread, sk_fe, sk_psi, queue):
    try:
        if one_thread:
            threadpool_limits(limits=1)
        from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            model = MixedLM(y, X1, groups, exog_re=X1[:, :n_re])
            result = model.fit(reml=True, method=method)
            elapsed = time.perf_counter() - start
        at_sklmm = MixedLMParams.from_components(fe_params=sk_fe, cov_re=sk_psi)
        queue.put(
            {
                "status": "ok",
                "time": elapsed,
                "llf": float(result.llf),
                "llf_at_sklmm": float(model.loglike(at_sklmm, profile_fe=False)),
                "converged": bool(result.converged),
                "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
            }
        )
    except Exception as exc:  # report, do not hang the parent
        queue.put({"status": f"error: {type(exc).__name__}: {exc}"})


def run_statsmodels(data, method, one_thread, est, timeout):
    """One statsmodels fit in a child process; stopped after ``timeout`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    sk_fe = np.r_[est.intercept_, est.coef_]
    sk_psi = est.random_effects_cov_["group"].to_numpy() / est.residual_variance_
    args = (data["X1"], data["y"], data["groups"], 1 + len(RANDOM_SLOPES), method, one_thread)
    proc = ctx.Process(target=_statsmodels_worker, args=(*args, sk_fe, sk_psi, queue))
    proc.start()
    return wait_for_child(proc, queue, timeout)


# -- table ---------------------------------------------------------------------------


def _verdict(ok):
    return "PASS" if ok else "MISS"


def method_row(case, method, m, x_bytes, llf=None):
    return {
        "case": case,
        "method": method,
        "best s": f"{m['best']:.3f}",
        "median s": f"{m['median']:.3f}",
        "traced MB": _fmt_mb(m["traced"]),
        "RSS MB": _fmt_mb(m["rss"]),
        "X MB": _fmt_mb(x_bytes),
        "log-likelihood": "" if llf is None else f"{llf:.6f}",
    }


def check_row(text, ok):
    return {"case": "", "check: measured (target)": text, "result": ok}


# -- the benchmark ---------------------------------------------------------------------
def fit_sklmm(data, sample_weight=None):
    return MixedLMRegressor(random_slopes=RANDOM_SLOPES).fit(
        data["X"], data["y"], groups=data["groups"], sample_weight=sample_weight
    )


def describe(data):
    s = data["sizes"]
    return (
        f"{len(data['y']):,} rows, {len(s):,} groups of sizes {s.min()}..{s.max()} "
        f"(median {np.median(s):.0f}, mean {s.mean():.0f})"
    )


ONE_THREAD = ", BLAS 1 thread"


def section(rows, notes, data, case, repeats):
    """lstsq and sklmm on one data set, as installed and with BLAS limited to one thread."""
    X1, y = data["X1"], data["y"]
    res = {}
    for one_thread in (False, True):
        suffix = ONE_THREAD if one_thread else ""
        with threadpool_limits(limits=1) if one_thread else _nothing():
            ols = measure(lambda: np.linalg.lstsq(X1, y, rcond=None), repeats, not one_thread)
            est = fit_sklmm(data)
            fit = measure(lambda: fit_sklmm(data), repeats, not one_thread)
        rows.append(method_row(case, "numpy.linalg.lstsq (OLS)" + suffix, ols, X1.nbytes))
        rows.append(
            method_row(
                "",
                "sklmm MixedLMRegressor, REML" + suffix,
                fit,
                data["X"].nbytes,
                est.log_likelihood_,
            )
        )
        res[one_thread] = (est, ols, fit)
        case = ""
    est = res[False][0]
    sd = np.sqrt(np.diag(est.random_effects_cov_["group"].to_numpy()))
    iters = est.fit_log_["phase"].value_counts().to_dict()
    notes.append(
        f"{describe(data)}. sklmm converged={est.converged_}, n_iter_={est.n_iter_}, "
        f"fit_log_ rows by phase {iters}; random-effect SDs {np.round(sd, 3).tolist()} "
        f"(true {RE_SD.tolist()}), residual variance {est.residual_variance_:.4f} (true "
        f"{SIGMA2})."
    )
    return res


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method (5)")
    parser.add_argument(
        "--statsmodels-timeout", type=float, default=600.0, help="seconds per statsmodels fit"
    )
    parser.add_argument("--no-statsmodels", action="store_true", help="skip statsmodels")
    parser.add_argument("--quick", action="store_true", help="a smoke test at a tenth of the sizes")
    args = parser.parse_args(argv)
    large, medium = LARGE, MEDIUM
    if args.quick:
        large, medium = (large[0] // 10, large[1] // 10), (medium[0] // 10, medium[1] // 10)

    try:
        import statsmodels

        sm_version = statsmodels.__version__
    except ImportError:
        sm_version = None

    print("sklmm fit benchmark")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"pandas {pd.__version__}, scikit-learn {sklearn.__version__}, statsmodels "
        f"{sm_version or 'not installed'}, sklmm {sklmm.__version__} ({sklmm_revision()})"
    )
    print(
        f"{os.cpu_count()} CPUs; BLAS: {blas_summary()}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    print(
        f"seed {SEED}; model y ~ 5 covariates + (1 + x0 + x1 | g), REML; "
        f"{args.repeats} timed calls per method after one warm-up"
    )
    print()

    rows, notes = [], []

    # 1. One million rows.
    case = f"{large[0]:,} rows / {large[1]:,} groups"
    data = simulate(*large, seed=SEED)
    res = section(rows, notes, data, case, args.repeats)
    (est, ols, fit), (_, ols1, fit1) = res[False], res[True]
    ratio = fit["best"] / ols["best"]
    rows.insert(
        -2,
        check_row(
            f"time {ratio:.2f}x lstsq, best (<= {TIME_RATIO_TARGET:g}x); "
            f"median {fit['median'] / ols['median']:.2f}x",
            _verdict(ratio <= TIME_RATIO_TARGET),
        ),
    )
    mem = fit["traced"] / data["X"].nbytes
    rows.insert(
        -2,
        check_row(
            f"traced peak {mem:.2f}x X (<= {MEMORY_RATIO_TARGET:g}x)",
            _verdict(mem <= MEMORY_RATIO_TARGET),
        ),
    )
    rows.append(
        check_row(
            f"time {fit1['best'] / ols1['best']:.2f}x lstsq, best, both 1 thread (context); "
            f"median {fit1['median'] / ols1['median']:.2f}x",
            "-",
        )
    )
    # The same fit with precision weights: the weights enter the cross-products once.
    w = np.random.default_rng(SEED + 7).uniform(0.5, 2.0, len(data["y"]))
    est_w = fit_sklmm(data, w)
    fit_w = measure(lambda: fit_sklmm(data, w), args.repeats)
    rows.append(
        method_row(
            "",
            "sklmm MixedLMRegressor, REML, sample_weight",
            fit_w,
            data["X"].nbytes,
            est_w.log_likelihood_,
        )
    )
    ratio_w = fit_w["best"] / fit["best"]
    rows.append(
        check_row(
            f"weighted time {ratio_w:.2f}x unweighted, best (<= {WEIGHTED_RATIO_TARGET:g}x); "
            f"median {fit_w['median'] / fit['median']:.2f}x",
            _verdict(ratio_w <= WEIGHTED_RATIO_TARGET),
        )
    )
    notes.append(
        f"Weighted fit (w ~ uniform(0.5, 2)): converged={est_w.converged_}, "
        f"n_iter_={est_w.n_iter_}."
    )
    # The same fit from a formula on a DataFrame: formulaic builds the model matrix.
    frame = pd.DataFrame(data["X"], columns=[f"x{j}" for j in range(N_COVARIATES)])
    frame = frame.assign(y=data["y"], g=data["groups"])
    est_f = MixedLMRegressor(formula=FORMULA).fit(frame)
    fit_f = measure(lambda: MixedLMRegressor(formula=FORMULA).fit(frame), args.repeats)
    rows.append(
        method_row(
            "",
            "sklmm MixedLMRegressor, REML, formula",
            fit_f,
            data["X"].nbytes,
            est_f.log_likelihood_,
        )
    )
    ratio_f = fit_f["best"] / fit["best"]
    same = abs(est_f.log_likelihood_ - est.log_likelihood_) <= 1e-6
    rows.append(
        check_row(
            f"formula time {ratio_f:.2f}x matrix, best (<= {FORMULA_RATIO_TARGET:g}x); "
            f"median {fit_f['median'] / fit['median']:.2f}x; same logLik: {same}",
            _verdict(ratio_f <= FORMULA_RATIO_TARGET and same),
        )
    )
    del data
    gc.collect()

    # 2. One hundred thousand rows, against statsmodels.
    case = f"{medium[0]:,} rows / {medium[1]:,} groups"
    data = simulate(*medium, seed=SEED + 1)
    res = section(rows, notes, data, case, args.repeats)
    (est, ols, fit), (_, ols1, fit1) = res[False], res[True]
    rows.insert(-2, check_row(f"time {fit['best'] / ols['best']:.2f}x lstsq, best (context)", "-"))
    rows.append(
        check_row(f"time {fit1['best'] / ols1['best']:.2f}x lstsq, best, both 1 thread", "-")
    )
    methods = [
        ("default (bfgs)", None, False),
        ('method=["lbfgs"]', ["lbfgs"], False),
        ("default (bfgs)" + ONE_THREAD, None, True),
    ]
    for label, method, one_thread in methods:
        name = f"statsmodels MixedLM, {label}"
        ref, ref_name = (fit1, "sklmm 1 thread") if one_thread else (fit, "sklmm")
        if sm_version is None or args.no_statsmodels:
            why = "not installed: pip install -e .[bench]" if sm_version is None else "skipped"
            rows.append({"case": "", "method": name, "check: measured (target)": why})
            rows[-1]["result"] = "n/a"
            continue
        out = run_statsmodels(data, method, one_thread, est, args.statsmodels_timeout)
        if out["status"] != "ok":
            rows.append({"case": "", "method": name, "best s": out["status"]})
            if out["status"].startswith("stopped"):
                speedup = args.statsmodels_timeout / ref["best"]
                rows.append(
                    check_row(
                        f"speedup > {speedup:.0f}x vs {ref_name} (>= {SPEEDUP_TARGET:g}x)",
                        "PASS",
                    )
                )
            rows.append(check_row("log-likelihood not available", "n/a"))
            continue
        rows.append(
            {
                "case": "",
                "method": name,
                "best s": f"{out['time']:.3f}",
                "median s": "(1 call)",
                "traced MB": "-",
                "RSS MB": "-",
                "X MB": _fmt_mb(data["X1"].nbytes),
                "log-likelihood": f"{out['llf']:.6f}",
            }
        )
        speedup = out["time"] / ref["best"]
        rows.append(
            check_row(
                f"speedup {speedup:.1f}x vs {ref_name} best (>= {SPEEDUP_TARGET:g}x); "
                f"{out['time'] / ref['median']:.1f}x vs median",
                _verdict(speedup >= SPEEDUP_TARGET),
            )
        )
        diff = est.log_likelihood_ - out["llf"]
        rows.append(
            check_row(
                f"llf: sklmm - statsmodels = {diff:.2e} (|.| <= {LLF_TOL:g})",
                _verdict(abs(diff) <= LLF_TOL),
            )
        )
        same = est.log_likelihood_ - out["llf_at_sklmm"]
        rows.append(
            check_row(
                f"same llf convention: sklmm - sm.loglike(sklmm estimate) = {same:.1e}",
                "yes" if abs(same) <= 1e-6 * max(1.0, abs(est.log_likelihood_)) else "NO",
            )
        )
        if not out["converged"] or out["warnings"]:
            notes.append(
                f"statsmodels {label}: converged={out['converged']}; warnings: "
                + ("; ".join(w[:160] for w in out["warnings"]) or "none")
            )

    print_table(rows)
    print()
    for note in notes:
        print(f"- {note}")
    print(
        "- time: wall time of one call after a warm-up; best = minimum, median over the "
        "timed calls; time targets use the best of both sides. statsmodels: one call "
        "(MixedLM construction + fit, which includes its final Hessian), in a child process."
    )
    print(
        "- traced peak: tracemalloc peak above its level at the call's start (numpy "
        "allocations; not LAPACK work arrays from malloc, so ~0 for lstsq). RSS peak: growth "
        "of the process's peak resident set during one call. X: the array passed in "
        "(lstsq and statsmodels get the intercept column too). The memory target uses the "
        "traced peak over sklmm's X."
    )
    print(
        "- rows marked 'BLAS 1 thread' (context, no target): the same calls inside "
        "threadpoolctl.threadpool_limits(1), which limits every BLAS/OpenMP pool in the "
        "process (numpy and scipy each bring their own OpenBLAS)."
    )


if __name__ == "__main__":
    sys.exit(main())
