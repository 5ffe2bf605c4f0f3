"""Benchmark of MixedLMRegressor on crossed designs against the alternatives.

Run from the repository root::

    pip install -e .[bench]              # sklmm plus statsmodels
    python benchmarks/bench_crossed.py   # up to ~15 minutes; --help for options

Everything is measured in one run and printed as one table. The numbers are
for the estimator: ``MixedLMRegressor().fit(X, y, variance_components=vc)`` with
``groups=None`` and ``vc`` a DataFrame of integer codes, one column per crossed
factor, which fits ``y ~ X + (1 | f1) + (1 | f2) + ...`` through the blocked-Cholesky
engine :mod:`sklmm._blocked` (``blocked_stats``, then ``minimize_blocked`` on a
``BlockedDeviance``; see :mod:`sklmm._model`).

Data (fixed seeds; rows in random order; pairs of the two large factors are
distinct and drawn with skewed per-level counts, see :func:`crossed_pairs`):

1. InstEval shape (lme4's ``InstEval``): 73,421 rows; students (2,972 levels)
   crossed with instructors (1,128 levels); a department factor (14 levels,
   one department per instructor, as in InstEval); 3 covariates. Model
   ``y ~ x0 + x1 + x2 + (1 | s) + (1 | d) + (1 | dept)``, REML. Random-effect
   standard deviations 0.3, 0.5, 0.3, residual 1.2 (close to lme4's fit of
   InstEval; well inside the parameter space). Target: under 3 s.
   The same data are fitted by statsmodels ``MixedLM`` with one all-rows group
   (``groups=np.ones(n)``) and one variance component per factor
   (``exog_vc``, given as sparse indicator matrices, statsmodels' cheapest
   form), REML, in a child process stopped after ``--statsmodels-timeout``
   seconds (600, the issue's 10 minutes).
2. MovieLens-1M shape: 1,000,209 rows; 6,040 users crossed with 3,706 movies
   (every user at least 20 ratings, log-normal activity and popularity, as in
   MovieLens); 2 covariates. Model ``y ~ x0 + x1 + (1 | user) + (1 | movie)``,
   REML; standard deviations 0.5 (user), 0.7 (movie), residual 0.9. Target:
   under 20 s. Run in a child process stopped after ``--movielens-timeout``
   seconds (600).

Measures: wall time of ``fit`` from the raw arrays (``X`` without the intercept
column, ``y``, and the DataFrame of codes, built before the clock starts; best
and median of ``--repeats`` calls after one warm-up for InstEval;
``--movielens-repeats`` calls, no warm-up, for MovieLens); ``tracemalloc`` peak
above its level at the call's start (numpy allocations, not LAPACK work arrays)
and growth of the process's peak RSS during one call (Linux); the number of
evaluations (``n_iter_``) and ``converged_``. A breakdown of one evaluation
(with gradient) at the optimum, on the fitted estimator's engine objective
(``est._fitted.objective`` at ``est._fitted.opt.theta``), splits its time between
the dense work on the rest block (Cholesky ``potrf``, inverse ``potri``) and the
sparse products ``B diag(w) B'`` of the contingency table. A check compares the
estimator's log-likelihood with the core engine's (``blocked_stats`` +
``minimize_blocked`` on the same data, fitted once outside the timing).
"""

import argparse
import gc
import multiprocessing
import os
import platform
import sys
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import scipy
import scipy.linalg as sla
import scipy.sparse as sp
from _common import (
    _fmt_mb,
    blas_summary,
    print_table,
    rss_peak,
    sklmm_revision,
    traced_peak,
    wait_for_child,
)

import sklmm
from sklmm._blocked import THREADED_REST, BlockedDeviance, blocked_stats, minimize_blocked

SEED = 20_251_204
MB = 1e6

INSTEVAL = {
    "name": "InstEval",
    "n": 73_421,
    "levels": (2_972, 1_128),
    "min_per_level": 1,
    "sigma_row": 1.0,  # log-normal spread of per-student counts
    "sigma_col": 1.0,  # log-normal spread of per-instructor popularity
    "n_dept": 14,
    "factors": ("s", "d", "dept"),  # column names of variance_components
    "beta": np.array([3.2, 0.2, -0.1, 0.05]),
    "sd": np.array([0.3, 0.5, 0.3]),  # s, d, dept
    "sigma": 1.2,
    "target": 3.0,
}
MOVIELENS = {
    "name": "MovieLens-1M",
    "n": 1_000_209,
    "levels": (6_040, 3_706),
    "min_per_level": 20,
    "sigma_row": 1.0,
    "sigma_col": 1.5,
    "factors": ("user", "movie"),
    "beta": np.array([3.6, 0.2, -0.1]),
    "sd": np.array([0.5, 0.7]),  # user, movie
    "sigma": 0.9,
    "target": 20.0,
}


# -- data ----------------------------------------------------------------------
def crossed_pairs(n, m_row, m_col, min_per_row, sigma_row, sigma_col, rng):
    """``n`` distinct (row level, column level) pairs with skewed counts on both sides.

    Each row level (user, student) gets ``min_per_row`` plus a log-normal share
    of the remaining pairs (capped at ``m_col``); its column levels are drawn
    without replacement with probability proportional to log-normal column
    weights (Gumbel top-k), so popular columns get many pairs and some get few.
    """
    w = rng.lognormal(0.0, sigma_row, m_row)
    sizes = np.full(m_row, min_per_row)
    left = n - sizes.sum()
    while left > 0:
        room = sizes < m_col
        extra = rng.multinomial(left, w * room / (w * room).sum())
        sizes = np.minimum(sizes + extra, m_col)
        left = n - sizes.sum()
    logw = np.log(rng.lognormal(0.0, sigma_col, m_col))
    rows, cols = [], []
    chunk = 256
    for start in range(0, m_row, chunk):
        stop = min(start + chunk, m_row)
        keys = logw + rng.gumbel(size=(stop - start, m_col))
        ranked = np.argsort(-keys, axis=1)
        for i in range(stop - start):
            k = sizes[start + i]
            rows.append(np.full(k, start + i))
            cols.append(ranked[i, :k])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    perm = rng.permutation(n)
    return rows[perm], cols[perm]


def simulate(spec, seed):
    """Covariates, codes and response of one design (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = spec["n"]
    m_row, m_col = spec["levels"]
    r, c = crossed_pairs(
        n, m_row, m_col, spec["min_per_level"], spec["sigma_row"], spec["sigma_col"], rng
    )
    codes = [r, c]
    if "n_dept" in spec:
        dept_of_col = rng.integers(0, spec["n_dept"], m_col)
        dept_of_col[: spec["n_dept"]] = np.arange(spec["n_dept"])  # every department used
        codes.append(dept_of_col[c])
    p = len(spec["beta"]) - 1
    X = rng.standard_normal((n, p))
    y = spec["beta"][0] + X @ spec["beta"][1:]
    for k, cd in enumerate(codes):
        y += spec["sd"][k] * rng.standard_normal(int(cd.max()) + 1)[cd]
    y += spec["sigma"] * rng.standard_normal(n)
    X1 = np.column_stack([np.ones(n), X])
    return {"X1": X1, "y": y, "codes": codes}


def describe(data):
    parts = []
    for cd in data["codes"]:
        cnt = np.bincount(cd)
        parts.append(
            f"{len(cnt):,} levels, {cnt.min()}..{cnt.max()} rows (median {np.median(cnt):.0f})"
        )
    return f"{len(data['y']):,} rows; " + "; ".join(parts)


# -- the fit ---------------------------------------------------------------------
def estimator_inputs(data, names):
    """``X`` without its intercept column and a DataFrame of the codes, one column per factor."""
    X = np.ascontiguousarray(data["X1"][:, 1:])
    vc = pd.DataFrame(dict(zip(names, data["codes"], strict=True)))
    return X, vc


def fit_estimator(X, y, vc):
    """The timed call: ``y ~ X + (1 | f1) + (1 | f2) + ...``, REML (the estimator's defaults)."""
    return sklmm.MixedLMRegressor().fit(X, y, variance_components=vc)


def fit_core(data):
    """``blocked_stats`` + ``minimize_blocked`` (REML) from the raw arrays (the check only)."""
    stats = blocked_stats(data["X1"], data["y"], data["codes"])
    obj = BlockedDeviance(stats, reml=True)
    res = minimize_blocked(obj)
    return obj, res


def log_likelihood(res):
    return -0.5 * res.evaluation.deviance


def fit_blas_threads(obj):
    """BLAS threads of ``minimize_blocked(obj)`` (its ``blas_threads="auto"`` rule)."""
    return 2 if obj.m_r >= THREADED_REST and (os.cpu_count() or 1) >= 2 else 1


def breakdown(obj, theta, threads, repeats=3):
    """Seconds of the parts of one evaluation with gradient at ``theta`` (best of ``repeats``).

    ``eval``: the whole ``obj(theta, 1)`` with the factor cache cleared;
    ``gram``: one sparse product ``B diag(w) B'`` (two per evaluation with a
    gradient); ``potrf``: dense Cholesky of the rest block; ``potri``: its
    inverse (gradient only); ``solve``: ``L22^{-1}`` applied to the
    ``p + 1`` right-hand sides. BLAS runs on ``threads`` threads, as in the fit.
    """
    from threadpoolctl import threadpool_limits

    def best(fn):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with threadpool_limits(limits=threads, user_api="blas"):
        out = {}

        def full():
            obj._cache = None
            obj(theta, 1)

        out["eval"] = best(full)
        obj._cache = None
        f = obj._factor(theta)
        if not obj.m_r:
            return out
        w = 1.0 / f["L11"] ** 2
        out["gram"] = best(lambda: obj._weighted_gram(w))
        lam_r = f["lam_r"]
        A22 = (lam_r[:, None] * f["GP"]) * lam_r[None, :]
        A22[np.diag_indices(obj.m_r)] += 1.0
        out["potrf"] = best(lambda: sla.cholesky(A22, lower=True, check_finite=False))
        out["potri"] = best(lambda: sla.lapack.dpotri(f["L22"], lower=1))
        R = np.ascontiguousarray(obj._ZtXy_r)
        out["solve"] = best(
            lambda: sla.solve_triangular(f["L22"], R, lower=True, check_finite=False)
        )
    obj._cache = None
    return out


def format_breakdown(name, obj, n_iter, converged, threads, n_best, parts):
    nnz = obj._B.nnz
    s = (
        f"{name}: est.n_iter_ = {n_iter} L-BFGS-B iterations (and Newton polish steps) on the "
        f"REML criterion with its gradient (plus the one-factor fits of the start), "
        f"est.converged_ = {converged}. Engine "
        f"objective of the fitted estimator (est._fitted.objective at est._fitted.opt.theta; X "
        f"centred, random-effect columns rescaled): first block {obj.m1:,} levels (diagonal), "
        f"dense rest block {obj.m_r:,} x {obj.m_r:,} ({obj.m_r**2 * 8 / MB:.0f} MB), contingency "
        f"table B {obj.m_r:,} x {obj.m1:,} with {nnz:,} nonzeros. One evaluation with gradient "
        f"at the optimum (BLAS {threads} thread{'s' if threads > 1 else ''}, as in the fit; "
        f"each part best of {n_best} calls): {parts['eval'] * 1e3:.0f} ms"
    )
    if "gram" in parts:
        dense = parts["potrf"] + parts["potri"] + parts["solve"]
        sparse = 2 * parts["gram"]
        s += (
            f" = sparse B diag(w) B' 2 x {parts['gram'] * 1e3:.0f} ms "
            f"({sparse / parts['eval']:.0%}) + dense potrf {parts['potrf'] * 1e3:.0f} ms, "
            f"potri {parts['potri'] * 1e3:.0f} ms, triangular solve "
            f"{parts['solve'] * 1e3:.0f} ms ({dense / parts['eval']:.0%}) + rest "
            f"{(parts['eval'] - dense - sparse) * 1e3:.0f} ms (Hadamard products, "
            "matrix-vector products, forming A22)"
        )
    return s + "."


# -- measurements ----------------------------------------------------------------


def measure_fit(data, names, repeats, warmup, traced_separately=True):
    """Times, memory peaks, the last fit, its evaluation breakdown and the core check.

    The inputs of ``fit`` (``X`` without the intercept column, the DataFrame of
    codes) are built before any clock starts. With ``traced_separately=False``
    (MovieLens, to save a fit) the first timed call also runs under
    ``tracemalloc``, whose overhead is small here (few, large numpy
    allocations), and the breakdown takes the best of 2 calls (else 3). The
    breakdown times the engine objective of the last fitted estimator
    (``est._fitted``). The core engine is fitted once after the measurements, for
    the log-likelihood check only.
    """
    X, vc = estimator_inputs(data, names)
    y = data["y"]

    def fit():
        return fit_estimator(X, y, vc)

    times = []
    est = None
    rss = traced = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if warmup:
            fit()
        for i in range(repeats):
            gc.collect()
            if i == 0 and not traced_separately:
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            if i == 0:
                rss, est = rss_peak(fit)
            else:
                est = fit()
            times.append(time.perf_counter() - t0)
            if i == 0 and not traced_separately:
                traced = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
        if traced_separately:
            traced = traced_peak(fit)
    obj, theta = est._fitted.objective, est._fitted.opt.theta
    threads = fit_blas_threads(obj)
    n_best = 3 if traced_separately else 2  # single calls with two BLAS threads are erratic
    parts = breakdown(obj, theta, threads, n_best)
    out = {
        "best": min(times),
        "median": float(np.median(times)),
        "n_calls": repeats,
        "traced": traced,
        "rss": rss,
        "x_bytes": X.nbytes,
        "llf": float(est.log_likelihood_),
        "n_iter": est.n_iter_,
        "converged": est.converged_,
        "sd": [float(np.sqrt(est.variance_components_[name])) for name in names],
        "n_levels": [len(est.random_effects_[name]) for name in names],
        "sigma": float(np.sqrt(est.residual_variance_)),
        "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
        "breakdown": format_breakdown("", obj, est.n_iter_, est.converged_, threads, n_best, parts),
    }
    del est, obj
    gc.collect()
    _, core_res = fit_core(data)
    out["core_llf"] = float(log_likelihood(core_res))
    out["core_n_iter"] = int(core_res.n_iter)
    return out


def format_estimates(name, m, spec, names):
    """The variance estimates of one case against the simulation's values."""
    return (
        f"{name} (est.variance_components_, est.residual_variance_): SDs "
        f"({', '.join(names)}) {np.round(m['sd'], 3).tolist()} (true {spec['sd'].tolist()}), "
        f"residual SD {m['sigma']:.3f} (true {spec['sigma']}); fitted levels "
        f"{', '.join(f'{k:,}' for k in m['n_levels'])} (levels without rows are not in the "
        "model); warnings during the fits: " + ("; ".join(w[:160] for w in m["warnings"]) or "none")
    )


def format_core_check(name, m):
    """One line: the estimator's log-likelihood against the core engine's at the same data."""
    rel = abs(m["llf"] - m["core_llf"]) / abs(m["core_llf"])
    verdict = "OK, within" if rel <= 1e-6 else "LARGER than"
    return (
        f"{name} log-likelihood check: estimator {m['llf']:.6f}, core engine (blocked_stats + "
        f"minimize_blocked on X with its intercept column, uncentred, and the integer codes; "
        f"fitted once outside the timing, {m['core_n_iter']} evaluations) "
        f"{m['core_llf']:.6f}; relative difference {rel:.1e} ({verdict} 1e-6)."
    )


# -- child processes ----------------------------------------------------------------
def _run_child(target, args, timeout):
    """``target(*args, queue)`` in a spawned child, stopped after ``timeout`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    return wait_for_child(proc, queue, timeout)


def _movielens_worker(seed, repeats, queue):
    try:
        t0 = time.perf_counter()
        data = simulate(MOVIELENS, seed)
        sim_time = time.perf_counter() - t0
        out = measure_fit(
            data, MOVIELENS["factors"], repeats, warmup=False, traced_separately=False
        )
        out.update(status="ok", describe=describe(data), sim_time=sim_time)
        queue.put(out)
    except Exception as exc:  # report, do not hang the parent
        queue.put({"status": f"error: {type(exc).__name__}: {exc}"})


def _statsmodels_worker(X1, y, codes, queue):
    try:
        from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec

        n = len(y)
        names = ["s", "d", "dept"]
        mats, colnames = [], []
        for name, cd in zip(names, codes, strict=True):
            m = int(cd.max()) + 1
            Z = sp.csr_array((np.ones(n), (np.arange(n), cd)), shape=(n, m))
            mats.append([Z])
            colnames.append([[f"{name}[{j}]" for j in range(m)]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            model = MixedLM(y, X1, groups=np.ones(n), exog_vc=VCSpec(names, colnames, mats))
            result = model.fit(reml=True)
            elapsed = time.perf_counter() - t0
        queue.put(
            {
                "status": "ok",
                "time": elapsed,
                "llf": float(result.llf),
                "converged": bool(result.converged),
                "vcomp": np.asarray(result.vcomp).tolist(),
                "scale": float(result.scale),
                "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
            }
        )
    except Exception as exc:
        queue.put({"status": f"error: {type(exc).__name__}: {exc}"})


# -- table ------------------------------------------------------------------------------


SKLMM_METHOD = "sklmm MixedLMRegressor, REML (variance_components)"


def sklmm_row(case, m, target):
    median = f"{m['median']:.3f}" if m["n_calls"] > 1 else f"({m['n_calls']} call)"
    return [
        {
            "case": case,
            "method": SKLMM_METHOD,
            "best s": f"{m['best']:.3f}",
            "median s": median,
            "traced MB": _fmt_mb(m["traced"]),
            "RSS MB": _fmt_mb(m["rss"]),
            "X MB": _fmt_mb(m["x_bytes"]),
            "log-likelihood": f"{m['llf']:.4f}",
        },
        {
            "case": "",
            "check: measured (target)": f"time {m['best']:.2f} s (< {target:g} s)",
            "result": "PASS" if m["best"] < target else "MISS",
        },
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed InstEval fits (5)")
    parser.add_argument("--movielens-repeats", type=int, default=1, help="timed MovieLens fits (1)")
    parser.add_argument(
        "--statsmodels-timeout", type=float, default=600.0, help="seconds for statsmodels (600)"
    )
    parser.add_argument(
        "--movielens-timeout", type=float, default=600.0, help="seconds for MovieLens (600)"
    )
    parser.add_argument("--no-statsmodels", action="store_true", help="skip statsmodels")
    parser.add_argument("--no-movielens", action="store_true", help="skip MovieLens")
    args = parser.parse_args(argv)

    try:
        import statsmodels

        sm_version = statsmodels.__version__
    except ImportError:
        sm_version = None

    print(
        "Crossed random intercepts: sklmm MixedLMRegressor().fit(X, y, variance_components=vc), "
        "groups=None, through the blocked-Cholesky engine sklmm._blocked"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"statsmodels {sm_version or 'not installed'}, sklmm {sklmm.__version__} "
        f"({sklmm_revision()})"
    )
    print(f"{os.cpu_count()} CPUs; BLAS: {blas_summary()}")
    print(
        f"seed {SEED}; statsmodels timeout {args.statsmodels_timeout:.0f} s, MovieLens "
        f"timeout {args.movielens_timeout:.0f} s; InstEval: {args.repeats} timed fits after a "
        f"warm-up; MovieLens: {args.movielens_repeats} timed fit(s) in a child process"
    )
    print()
    rows, notes = [], []

    # 1. InstEval shape.
    data = simulate(INSTEVAL, SEED)
    case = "InstEval: 73,421 rows, 2,972 x 1,128 crossed + 14"
    m = measure_fit(data, INSTEVAL["factors"], args.repeats, warmup=True)
    rows += sklmm_row(case, m, INSTEVAL["target"])
    notes.append(
        f"InstEval: {describe(data)}. "
        + format_estimates("Estimates", m, INSTEVAL, INSTEVAL["factors"])
        + "."
    )
    notes.append("InstEval" + m["breakdown"])
    notes.append(format_core_check("InstEval", m))
    name = "statsmodels MixedLM, vc, 1 all-rows group"
    if sm_version is None or args.no_statsmodels:
        rows.append({"case": "", "method": name, "best s": "skipped", "result": "n/a"})
    else:
        out = _run_child(
            _statsmodels_worker, (data["X1"], data["y"], data["codes"]), args.statsmodels_timeout
        )
        if out["status"] == "ok":
            rows.append(
                {
                    "case": "",
                    "method": name,
                    "best s": f"{out['time']:.3f}",
                    "median s": "(1 call)",
                    "X MB": _fmt_mb(data["X1"].nbytes),
                    "log-likelihood": f"{out['llf']:.4f}",
                }
            )
            rows.append(
                {
                    "case": "",
                    "check: measured (target)": (
                        f"speedup {out['time'] / m['best']:.0f}x; llf sklmm - statsmodels "
                        f"= {m['llf'] - out['llf']:.2e}"
                    ),
                    "result": "-",
                }
            )
            notes.append(
                f"statsmodels: converged={out['converged']}, vcomp {out['vcomp']}, scale "
                f"{out['scale']:.4f}; warnings: "
                + ("; ".join(w[:160] for w in out["warnings"]) or "none")
            )
        else:
            rows.append({"case": "", "method": name, "best s": out["status"]})
            if out["status"].startswith("stopped"):
                rows.append(
                    {
                        "case": "",
                        "check: measured (target)": (
                            f"speedup > {args.statsmodels_timeout / m['best']:.0f}x "
                            "(statsmodels did not finish); log-likelihood not available"
                        ),
                        "result": "-",
                    }
                )
    del data
    gc.collect()

    # 2. MovieLens-1M shape, in a child process with a timeout.
    case = "MovieLens-1M: 1,000,209 rows, 6,040 x 3,706 crossed"
    if args.no_movielens:
        rows.append({"case": case, "method": SKLMM_METHOD, "best s": "skipped"})
    else:
        out = _run_child(
            _movielens_worker, (SEED + 1, args.movielens_repeats), args.movielens_timeout
        )
        if out["status"] == "ok":
            rows += sklmm_row(case, out, MOVIELENS["target"])
            notes.append(
                f"MovieLens: {out['describe']} (simulated in {out['sim_time']:.1f} s). "
                + format_estimates("Estimates", out, MOVIELENS, MOVIELENS["factors"])
                + "."
            )
            notes.append("MovieLens" + out["breakdown"])
            notes.append(format_core_check("MovieLens", out))
        else:
            rows.append({"case": case, "method": SKLMM_METHOD, "best s": out["status"]})
            rows.append(
                {
                    "case": "",
                    "check: measured (target)": f"({MOVIELENS['target']:g} s)",
                    "result": "MISS",
                }
            )

    print_table(rows)
    print()
    for note in notes:
        print(f"- {note}")
    print(
        "- time: wall time of MixedLMRegressor().fit(X, y, variance_components=vc) (defaults: "
        "REML, tol 1e-7, max_iter 100) from the raw arrays: X without its intercept column "
        "(the estimator adds it), y, and vc a DataFrame of the integer codes, one column per "
        "factor, built before the clock starts; the call includes input checks, factorizing "
        "the labels, centring, blocked_stats, minimize_blocked and the fitted attributes "
        "(BLUPs, fixed-effects covariance). best = minimum, median over the timed calls. "
        "statsmodels: one call (MixedLM construction with sparse exog_vc + fit), in a child "
        "process. log-likelihood: REML, all constants (est.log_likelihood_ = -D/2; "
        "statsmodels' llf)."
    )
    print(
        "- traced peak: tracemalloc peak above its level at the call's start (numpy "
        "allocations, not LAPACK work arrays); RSS peak: growth of the process's peak "
        "resident set during one call. X: the covariate matrix passed (sklmm: without the "
        "intercept column; statsmodels: with it)."
    )


if __name__ == "__main__":
    sys.exit(main())
