"""Benchmark of MixedLMRegressor against the other linear-mixed-model libraries.

Run from the repository root::

    pip install -e .[bench]                        # sklmm plus the Python peers
    python benchmarks/bench_peers.py               # about 20 minutes; --help for options
    python benchmarks/bench_peers.py --movielens   # and the MovieLens-shaped design

One table, designs as rows and libraries as columns; each cell is the median
time of one fit and ``|dlogLik|``, the absolute difference between the library's
log-likelihood and sklmm's at their optima (REML; for GPBoost ML, see below), or
the reason why the library cannot fit the design.

Libraries (every one in its own process, started for each design, so that no
library shares a process, a heap or a thread pool with another):

- sklmm: ``MixedLMRegressor(random_slopes=...).fit(X, y, groups=g)`` (one
  grouping factor) or ``MixedLMRegressor().fit(X, y, variance_components=vc)``
  (crossed random intercepts; ``vc`` a DataFrame of integer codes). ``X`` has no
  intercept column (the estimator adds it). REML.
- mixedlm-rs (Rust core, statsmodels-style API):
  ``mixedlm_rs.MixedLM(y, X1, g, exog_re=Z).fit(reml=True)``, ``X1`` with its
  intercept column, ``Z`` the random-effect columns of ``X1``. One grouping factor
  only: ``exog_vc`` raises ``NotImplementedError``, so no crossed design.
- lme-python (Rust): ``lme_python.lmer(formula, polars_frame, reml=True)``
  with the lme4 formula, e.g. ``y ~ x0 + x1 + (1 + x0 | g)``; grouping columns as
  strings. Its default convergence tolerance (``FitControl(tolerance=1e-6)``).
- mixedlm (Rust backend): ``mixedlm.lmer(formula, pandas_frame)`` (REML by
  default), the same formula.
- lme4 (R), where ``Rscript`` is found (and not ``--skip-r``): the data go to R
  through a temporary CSV read by ``data.table::fread``, the grouping columns are
  made factors, and only ``system.time(lmer(formula, data, REML = TRUE))`` is
  timed (lme4's defaults, including its derivative-based convergence checks).
- statsmodels: ``MixedLM(y, X1, groups=g, exog_re=Z).fit(reml=True)`` (its
  default method) for one grouping factor; crossed factors as variance components
  of one all-rows group (``groups=np.ones(n)``, ``exog_vc`` a ``VCSpec`` of
  sparse indicator matrices, its cheapest form, as in ``bench_crossed.py``).
- GPBoost (ML only; its random coefficients are independent of the random
  intercept, so it has no correlated random slopes): on the crossed designs,
  ``GPModel(group_data=codes, likelihood="gaussian").fit(y, X=X1)`` with its
  defaults (L-BFGS, ``delta_rel_conv=1e-6``), by ML. Its log-likelihood is
  recomputed exactly at its estimates (error variance ``s2``, variances ``s2_k``
  of the factors, coefficients ``b``) by sklmm's blocked ML criterion, fitting
  nothing: ``obj = BlockedDeviance(blocked_stats(X1, y, codes), reml=False)``;
  ``obj.unprofiled_deviance(theta, s2)`` with ``theta_k = sqrt(s2_k / s2)`` is
  ``-2 log L`` with the fixed effects at their GLS value ``beta(theta)``, and
  ``-2 log L`` at GPBoost's own ``b`` adds ``d' V^{-1} d`` with
  ``d = b - beta(theta)`` and ``V = obj.fixed_effects_cov(theta, s2)`` (exact:
  ``-2 log L`` is quadratic in the fixed effects). This is compared with an ML fit
  of sklmm (``MixedLMRegressor(reml=False)``, timed the same way, shown in the
  GPBoost cell), and checked against sklmm's own ML log-likelihood at sklmm's
  estimates.

Designs (fixed seeds; the generators of the other benchmarks):

1. sleepstudy (``sklmm.datasets.load_sleepstudy``), ``Reaction ~ Days + (Days |
   Subject)``, 180 rows, 18 subjects.
2. 90,000 rows, 2,000 groups, ``y ~ x0 + ... + x4 + (1 + x0 | g)``: the data of
   ``bench_fit.simulate`` (which draws a third random effect, a slope on ``x1``
   with SD 0.3, that this model leaves to the residual).
3. 900,000 rows, 10,000 groups, ``y ~ x0 + ... + x4 + (1 + x0 + x1 | g)``, a
   3 x 3 unstructured covariance: ``bench_fit.simulate``.
4. 18,000 rows, 500 x 300 crossed random intercepts, ``y ~ x0 + x1 + (1 | a) +
   (1 | b)``: ``bench_crossed.simulate`` with distinct pairs and log-normal
   counts on both sides (SDs 0.5, 0.7, residual 1).
5. InstEval shape, 73,421 rows, 2,972 students x 1,128 instructors crossed plus 14
   departments, ``y ~ x0 + x1 + x2 + (1 | s) + (1 | d) + (1 | dept)``:
   ``bench_crossed.simulate(INSTEVAL)``.
6. MovieLens-1M shape, 1,000,209 rows, 6,040 users x 3,706 movies crossed,
   ``y ~ x0 + x1 + (1 | user) + (1 | movie)``: ``bench_crossed.simulate(MOVIELENS)``
   (heavy-tailed, Zipf-like per-user and per-movie frequencies, drawn log-normal;
   every user at least 20 ratings). Only with ``--movielens`` (or ``--designs``).

Measures: wall time (``time.perf_counter``; lme4: ``system.time``) of one fit from
inputs built before the clock starts (arrays, or the data frame the library
takes); the call includes the library's model construction. One untimed warm-up
fit, then ``--repeats`` timed fits (3), and the median; a fit whose warm-up took
more than 10 s is timed once (the warm-up is that one fit; the cell says "1 fit").
A ``gc.collect()`` runs before each timed fit. Fits of under 50 ms are then also
timed 20 times back to back in the same process, without ``gc.collect()`` between
them (a second table, Python libraries): the cost of one fit of many in a loop, as in
a cross-validation or a bootstrap, where each library's code and data stay in the
processor's caches. Every fit has ``--time-limit`` seconds (300): a library still fitting then is
stopped and the cell says "> 300 s"; it is then not run on the larger designs of
the same kind (one grouping factor, crossed). Checks: on every design, sklmm's
median at most the fastest peer's that fitted it (REML peers; GPBoost against
sklmm's ML fit); sleepstudy at most 1 ms.
"""

import argparse
import gc
import importlib.metadata
import multiprocessing
import os
import platform
import queue as queue_lib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import blas_summary, print_table, sklmm_revision

SLOW = 10.0  # seconds: a warm-up longer than this is the only timed fit
# Fits faster than LOOP_MAX seconds are also timed LOOP_FITS times back to back, without a
# gc.collect() between them: the cost of one fit in a loop (cross-validation, a bootstrap).
LOOP_MAX, LOOP_FITS = 0.05, 20
SLEEPSTUDY_TARGET = 1e-3
FIT_SEED = 20_251_125  # bench_fit.SEED
CROSSED_SEED = 20_251_204  # bench_crossed.SEED
SMALL_CROSSED = {
    "name": "500 x 300",
    "n": 18_000,
    "levels": (500, 300),
    "min_per_level": 1,
    "sigma_row": 1.0,
    "sigma_col": 1.0,
    "factors": ("a", "b"),
    "beta": np.array([1.0, 0.5, -0.3]),
    "sd": np.array([0.5, 0.7]),
    "sigma": 1.0,
}

#: the rows of the table (key: label)
DESIGNS = {
    "sleepstudy": "sleepstudy, (Days | Subject), 180 rows",
    "slopes": "90,000 rows, 2,000 groups, intercept + slope",
    "cov3": "900,000 rows, 10,000 groups, 3 x 3 covariance",
    "crossed": "18,000 rows, 500 x 300 crossed",
    "insteval": "InstEval-shaped, 73,421 rows, 2,972 x 1,128 crossed (+ 14 depts)",
    "movielens": "MovieLens-1M-shaped, 1,000,209 rows, 6,040 x 3,706 crossed",
}
CROSSED = ("crossed", "insteval", "movielens")
LIBRARIES = ["sklmm", "mixedlm-rs", "lme-python", "mixedlm", "lme4", "statsmodels", "gpboost"]
PYPI = {
    "mixedlm-rs": "mixedlm-rs",
    "lme-python": "lme-python",
    "mixedlm": "mixedlm",
    "statsmodels": "statsmodels",
    "gpboost": "gpboost",
}


# -- data ---------------------------------------------------------------------------
def make_data(key):
    """The design ``key``: ``y``, ``X1`` (intercept first), and the grouping.

    One grouping factor: ``groups`` (integer codes) and ``re_cols`` (the columns of
    ``X1`` with a random effect); crossed: ``codes`` and ``factors`` (one name each).
    """
    if key == "sleepstudy":
        from sklmm.datasets import load_sleepstudy

        d = load_sleepstudy()
        y = d["Reaction"].to_numpy(float)
        X1 = np.column_stack([np.ones(len(y)), d["Days"].to_numpy(float)])
        groups = pd.factorize(d["Subject"])[0]
        return {"y": y, "X1": X1, "groups": groups, "re_cols": [0, 1]}
    if key in ("slopes", "cov3"):
        from bench_fit import simulate

        n, g = (90_000, 2_000) if key == "slopes" else (900_000, 10_000)
        d = simulate(n, g, seed=FIT_SEED)
        re_cols = [0, 1] if key == "slopes" else [0, 1, 2]
        return {"y": d["y"], "X1": d["X1"], "groups": d["groups"], "re_cols": re_cols}
    from bench_crossed import INSTEVAL, MOVIELENS, simulate

    spec, seed = {
        "crossed": (SMALL_CROSSED, CROSSED_SEED + 2),
        "insteval": (INSTEVAL, CROSSED_SEED),
        "movielens": (MOVIELENS, CROSSED_SEED + 1),
    }[key]
    d = simulate(spec, seed)
    return {"y": d["y"], "X1": d["X1"], "codes": d["codes"], "factors": list(spec["factors"])}


def formula(data):
    """The lme4 formula of a design (columns ``y``, ``x0``.., and the factors)."""
    p = data["X1"].shape[1] - 1
    fixed = "y ~ " + " + ".join(f"x{j}" for j in range(p))
    if "codes" in data:
        return fixed + "".join(f" + (1 | {f})" for f in data["factors"])
    slopes = "".join(f" + x{j - 1}" for j in data["re_cols"][1:])
    return f"{fixed} + (1{slopes} | g)"


def frame(data, labels_as_str=False):
    """``y``, ``x0``.. and the grouping columns as a pandas DataFrame."""
    X1 = data["X1"]
    cols = {"y": data["y"]}
    cols.update({f"x{j}": X1[:, j + 1] for j in range(X1.shape[1] - 1)})
    if "codes" in data:
        cols.update(dict(zip(data["factors"], data["codes"], strict=True)))
    else:
        cols["g"] = data["groups"]
    df = pd.DataFrame(cols)
    if labels_as_str:
        for name in data.get("factors", ["g"]):
            df[name] = df[name].astype(str)
    return df


# -- the fits, one library per process ------------------------------------------------
def _setup_sklmm(data, reml=True):
    from sklmm import MixedLMRegressor

    X, y = np.ascontiguousarray(data["X1"][:, 1:]), data["y"]
    if "codes" in data:
        vc = pd.DataFrame(dict(zip(data["factors"], data["codes"], strict=True)))

        def fit():
            est = MixedLMRegressor(reml=reml).fit(X, y, variance_components=vc)
            info = {"converged": bool(est.converged_)}
            if not reml:  # for the check of exact_ml_loglik
                vcs = [est.variance_components_[name] for name in data["factors"]]
                info["cov_pars"] = np.array([est.residual_variance_, *vcs], float)
                info["coef"] = np.r_[est.intercept_, est.coef_]
            return est.log_likelihood_, info

    else:
        slopes = [j - 1 for j in data["re_cols"][1:]]
        g = data["groups"]

        def fit():
            est = MixedLMRegressor(random_slopes=slopes, reml=reml).fit(X, y, groups=g)
            return est.log_likelihood_, {"converged": bool(est.converged_)}

    return fit


def _setup_mixedlm_rs(data):
    if "codes" in data:
        return "one factor only"
    import mixedlm_rs

    y, X1, g = data["y"], data["X1"], data["groups"]
    Z = np.ascontiguousarray(X1[:, data["re_cols"]])

    def fit():
        res = mixedlm_rs.MixedLM(y, X1, g, exog_re=Z).fit(reml=True)
        return res.llf, {"converged": bool(res.converged)}

    return fit


def _setup_lme_python(data):
    import lme_python
    import polars as pl

    df = pl.from_pandas(frame(data, labels_as_str=True))
    f = formula(data)

    def fit():
        res = lme_python.lmer(f, df, reml=True)
        return res.log_likelihood, {"converged": bool(res.converged)}

    return fit


def _setup_mixedlm(data):
    import mixedlm

    df = frame(data)
    f = formula(data)

    def fit():
        res = mixedlm.lmer(f, df)
        return float(res.logLik()), {}

    return fit


def _setup_statsmodels(data):
    from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec

    y, X1 = data["y"], data["X1"]
    if "codes" in data:
        import scipy.sparse as sp

        n = len(y)
        mats, colnames = [], []
        for name, cd in zip(data["factors"], data["codes"], strict=True):
            m = int(cd.max()) + 1
            mats.append([sp.csr_array((np.ones(n), (np.arange(n), cd)), shape=(n, m))])
            colnames.append([[f"{name}[{j}]" for j in range(m)]])
        vc = VCSpec(data["factors"], colnames, mats)
        ones = np.ones(n)

        def fit():
            res = MixedLM(y, X1, groups=ones, exog_vc=vc).fit(reml=True)
            return res.llf, {"converged": bool(res.converged)}

    else:
        g, Z = data["groups"], np.ascontiguousarray(X1[:, data["re_cols"]])

        def fit():
            res = MixedLM(y, X1, g, exog_re=Z).fit(reml=True)
            return res.llf, {"converged": bool(res.converged)}

    return fit


def _setup_gpboost(data):
    if "codes" not in data:
        return "no correlated slopes"
    import gpboost as gpb

    y, X1 = data["y"], data["X1"]
    group_data = np.column_stack(data["codes"])

    def fit():
        model = gpb.GPModel(group_data=group_data, likelihood="gaussian")
        model.fit(y=y, X=X1)
        cov = np.asarray(model.get_cov_pars(format_pandas=False), float)
        coef = np.asarray(model.get_coef(format_pandas=False), float).ravel()
        own = -float(model.get_current_neg_log_likelihood())
        return None, {"cov_pars": cov, "coef": coef, "own_llf": own}

    return fit


def exact_ml_loglik(data, cov_pars, coef):
    """The ML log-likelihood at given variances and fixed effects, by sklmm's criterion.

    ``cov_pars`` = (error variance, variance of each factor), ``coef`` the fixed
    effects on the columns of ``X1``; nothing is fitted (see the module docstring).
    """
    from sklmm._blocked import BlockedDeviance, blocked_stats

    obj = BlockedDeviance(blocked_stats(data["X1"], data["y"], data["codes"]), reml=False)
    s2 = float(cov_pars[0])
    theta = np.sqrt(np.asarray(cov_pars[1:], float) / s2)
    dev = obj.unprofiled_deviance(theta, s2)
    d = np.asarray(coef, float) - obj(theta).beta
    dev += float(d @ np.linalg.solve(obj.fixed_effects_cov(theta, s2), d))
    return -0.5 * dev


SETUPS = {
    "sklmm": _setup_sklmm,
    "sklmm-ML": lambda data: _setup_sklmm(data, reml=False),
    "mixedlm-rs": _setup_mixedlm_rs,
    "lme-python": _setup_lme_python,
    "mixedlm": _setup_mixedlm,
    "statsmodels": _setup_statsmodels,
    "gpboost": _setup_gpboost,
}


def _worker(lib, key, repeats, conn):
    """Build the design and time ``lib`` on it, reporting every fit through ``conn``.

    The events are sent from the main thread, synchronously (a ``multiprocessing``
    queue's feeder thread may wait for the GIL while a compiled fit holds it).
    """
    os.dup2(2, 1)  # libraries' own messages (GPBoost's C library) go to stderr, not the table
    try:
        data = make_data(key)
        fit = SETUPS[lib](data)
        if isinstance(fit, str):
            conn.send({"event": "cannot", "reason": fit})
            return
        conn.send({"event": "ready"})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            llf, info = fit()
            first = time.perf_counter() - t0
            conn.send({"event": "fit", "time": first})
            times = [first] if first > SLOW else []
            for _ in range(repeats if first <= SLOW else 0):
                gc.collect()
                t0 = time.perf_counter()
                llf, info = fit()
                times.append(time.perf_counter() - t0)
                conn.send({"event": "fit", "time": times[-1]})
            loop = []
            if times and np.median(times) <= LOOP_MAX:  # the timed fits, not the warm-up
                for _ in range(LOOP_FITS):
                    t0 = time.perf_counter()
                    fit()
                    loop.append(time.perf_counter() - t0)
        if lib == "gpboost":
            llf = exact_ml_loglik(data, info["cov_pars"], info["coef"])
        if lib == "sklmm-ML":  # the recomputation at sklmm's own ML estimates
            info["recheck"] = exact_ml_loglik(data, info["cov_pars"], info["coef"]) - llf
        for name in ("cov_pars", "coef"):
            if name in info:
                info[name] = info[name].tolist()
        info["warnings"] = sorted({f"{w.category.__name__}: {w.message}"[:160] for w in caught})
        conn.send({"event": "done", "times": times, "loop": loop, "llf": float(llf), "info": info})
    except Exception as exc:  # report, do not hang the parent
        conn.send({"event": "error", "reason": f"{type(exc).__name__}: {str(exc)[:200]}"})


def collect(get, alive, stop, limit):
    """Events of one child until it is done, errs, dies or exceeds ``limit`` on one fit.

    ``limit`` applies to the setup (building the data) and to every fit.
    """
    deadline = time.monotonic() + limit
    fits = []
    while True:
        try:
            ev = get(1.0)
        except queue_lib.Empty:
            if not alive():
                try:
                    ev = get(2.0)
                except queue_lib.Empty:
                    return {"status": "error", "reason": "child process died"}
            elif time.monotonic() > deadline:
                stop()
                return {"status": "timeout", "fits": fits}
            else:
                continue
        kind = ev["event"]
        if kind in ("ready", "fit"):
            if kind == "fit":
                fits.append(ev["time"])
            deadline = time.monotonic() + limit
        elif kind == "done":
            stop()
            return {"status": "ok", **ev}
        else:  # cannot, error
            stop()
            return {"status": kind, "reason": ev["reason"]}


def run_python(lib, key, repeats, limit):
    """``_worker`` in a spawned child; only the child writes to the pipe, only we read."""
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(lib, key, repeats, writer))
    proc.start()
    writer.close()

    def get(timeout):
        if not reader.poll(timeout):
            raise queue_lib.Empty
        try:
            return reader.recv()
        except EOFError:
            raise queue_lib.Empty from None

    def stop():
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        reader.close()

    return collect(get, proc.is_alive, stop, limit)


R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
path <- args[1]; form <- args[2]; factors <- strsplit(args[3], ",")[[1]]
limit <- as.numeric(args[4]); repeats <- as.integer(args[5]); slow <- as.numeric(args[6])
suppressMessages(library(lme4))
d <- as.data.frame(data.table::fread(path))
for (f in factors) d[[f]] <- factor(d[[f]])
cat("EVENT ready\n"); flush(stdout())
one <- function() {
  setTimeLimit(elapsed = limit, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf))
  t <- system.time(m <- lmer(as.formula(form), data = d, REML = TRUE))[["elapsed"]]
  cat("EVENT fit", sprintf("%.6f", t), "\n"); flush(stdout())
  list(t = t, m = m)
}
r <- one()
times <- if (r$t > slow) r$t else numeric(0)
if (r$t <= slow) for (i in seq_len(repeats)) { r <- one(); times <- c(times, r$t) }
msgs <- r$m@optinfo$conv$lme4$messages
cat("EVENT done", format(as.numeric(logLik(r$m)), digits = 17),
    paste(sprintf("%.6f", times), collapse = ","), "\n")
if (length(msgs)) cat("NOTE", paste(msgs, collapse = "; "), "\n")
"""


def r_version():
    try:
        out = subprocess.run(
            ["Rscript", "-e", 'cat(as.character(packageVersion("lme4")))'],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_lme4(data, repeats, limit, tmpdir):
    """``lmer`` in ``Rscript`` on the data written to a temporary CSV."""
    path = Path(tmpdir) / "data.csv"
    script = Path(tmpdir) / "fit.R"
    script.write_text(R_SCRIPT)
    frame(data).to_csv(path, index=False, float_format="%.17g")
    factors = ",".join(data.get("factors", ["g"]))
    cmd = ["Rscript", str(script), str(path), formula(data), factors, str(limit), str(repeats)]
    proc = subprocess.Popen(
        [*cmd, str(SLOW)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events, notes, errors = queue_lib.Queue(), [], []

    def read_out():
        for line in proc.stdout:
            parts = line.split()
            if parts[:1] == ["EVENT"]:
                if parts[1] == "ready":
                    events.put({"event": "ready"})
                elif parts[1] == "fit":
                    events.put({"event": "fit", "time": float(parts[2])})
                elif parts[1] == "done":
                    times = [float(t) for t in parts[3].split(",")]
                    events.put({"event": "done", "llf": float(parts[2]), "times": times})
            elif parts[:1] == ["NOTE"]:
                notes.append(line[5:].strip())

    def read_err():
        errors.extend(proc.stderr)

    readers = [threading.Thread(target=fn, daemon=True) for fn in (read_out, read_err)]
    for t in readers:
        t.start()

    def get(timeout):
        ev = events.get(timeout=timeout)
        if ev["event"] == "done":
            proc.wait(timeout=60)  # the NOTE line follows
            for t in readers:
                t.join(timeout=5)
            ev["info"] = {"warnings": notes}
        return ev

    def stop():
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    out = collect(get, lambda: proc.poll() is None, stop, limit)
    if out["status"] == "error":
        tail = " ".join("".join(errors).split())[-200:]
        out["reason"] = f"Rscript failed: {tail}" if tail else out["reason"]
    path.unlink(missing_ok=True)
    return out


# -- the table -----------------------------------------------------------------------
def fmt_time(t):
    if t < 1e-2:
        return f"{t * 1e3:.2f} ms"
    if t < 1.0:
        return f"{t * 1e3:.0f} ms"
    if t < 10.0:
        return f"{t:.2f} s"
    return f"{t:.1f} s"


def cell_text(out, ref_llf, limit):
    status = out["status"]
    if status == "ok":
        t = fmt_time(out["median"])
        if len(out["times"]) == 1:
            t += " (1 fit)"
        if ref_llf is None or out["llf"] is None:
            return t
        return f"{t}, d {abs(out['llf'] - ref_llf):.0e}"
    if status == "timeout":
        return f"> {limit:.0f} s"
    if status in ("cannot", "skipped"):
        return f"({out['reason']})"
    return f"error: {out['reason'][:60]}"


def versions():
    out = {}
    for lib, dist in PYPI.items():
        try:
            out[lib] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = None
    return out


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--designs",
        nargs="+",
        choices=list(DESIGNS),
        default=[key for key in DESIGNS if key != "movielens"],
        help="rows of the table (default: all but movielens)",
    )
    parser.add_argument(
        "--movielens",
        action="store_true",
        help="add the MovieLens-shaped design (up to about 20 minutes more)",
    )
    parser.add_argument(
        "--libraries",
        nargs="+",
        choices=LIBRARIES,
        default=LIBRARIES,
        help="columns of the table (default: all; sklmm always runs)",
    )
    parser.add_argument("--skip-r", action="store_true", help="do not run lme4")
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds per fit (and per setup; 300)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed fits after a warm-up (3)")
    args = parser.parse_args(argv)
    limit = args.time_limit
    if args.movielens and "movielens" not in args.designs:
        args.designs.append("movielens")
    libs = ["sklmm"] + [lib for lib in LIBRARIES if lib in args.libraries and lib != "sklmm"]
    vers = versions()
    rscript = shutil.which("Rscript")
    lme4_version = r_version() if rscript and not args.skip_r and "lme4" in libs else None
    vers["lme4"] = lme4_version

    import scipy
    import sklearn

    import sklmm

    headers = {
        "sklmm": "sklmm",
        "mixedlm-rs": "mixedlm-rs {} (Rust)",
        "lme-python": "lme-python {} (Rust)",
        "mixedlm": "mixedlm {} (Rust)",
        "lme4": "lme4 {} (R)",
        "statsmodels": "statsmodels {}",
        "gpboost": "GPBoost {} (ML)",
    }
    header = {lib: headers[lib].format(vers.get(lib)) for lib in libs}
    print("Linear mixed models: sklmm MixedLMRegressor against its peers")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"pandas {pd.__version__}, scikit-learn {sklearn.__version__}, sklmm "
        f"{sklmm.__version__} ({sklmm_revision()}); "
        + ", ".join(f"{lib} {vers.get(lib) or 'not available'}" for lib in libs[1:])
    )
    print(f"{os.cpu_count()} CPUs; BLAS: {blas_summary()}")
    print(
        f"median of {args.repeats} fits after a warm-up (1 fit when the warm-up takes more than "
        f"{SLOW:g} s); time limit {limit:g} s per fit; REML (GPBoost: ML, against sklmm's ML "
        "fit); d = |logLik - logLik of sklmm|; each library in its own process"
    )
    print()

    rows, checks, notes, loops = [], [], [], []
    stopped = {}  # library -> design on which it exceeded the limit, by kind
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        for key in args.designs:
            kind = "crossed" if key in CROSSED else "one factor"
            res = {}
            run = list(libs)
            if "gpboost" in libs and key in CROSSED:
                run.insert(1, "sklmm-ML")
            data = None
            for lib in run:
                log(f"[{time.perf_counter() - t_start:7.0f} s] {key}: {lib} ...")
                if (lib, kind) in stopped:
                    out = {"status": "skipped", "reason": f"> {limit:g} s on {stopped[lib, kind]}"}
                elif lib == "lme4":
                    if args.skip_r:
                        out = {"status": "skipped", "reason": "--skip-r"}
                    elif not rscript or not lme4_version:
                        out = {"status": "skipped", "reason": "no Rscript with lme4"}
                    else:
                        data = make_data(key) if data is None else data
                        out = run_lme4(data, args.repeats, limit, tmpdir)
                elif lib != "sklmm" and lib.split("-ML")[0] in PYPI and not vers.get(lib):
                    out = {"status": "skipped", "reason": "not installed"}
                else:
                    out = run_python(lib, key, args.repeats, limit)
                if out["status"] == "ok":
                    out["median"] = float(np.median(out["times"]))
                elif out["status"] == "timeout":
                    stopped[lib, kind] = key
                res[lib] = out
                log(f"    {out['status']} {out.get('median', out.get('reason', ''))}")
            del data
            gc.collect()
            rows.append(row_of(key, res, libs, header, limit))
            looped = {lib: out.get("loop") for lib, out in res.items() if out.get("loop")}
            if looped:
                loops.append(
                    {
                        "design": DESIGNS[key],
                        **{
                            header[lib]: fmt_time(float(np.median(looped[lib])))
                            if lib in looped
                            else "-"
                            for lib in libs
                        },
                    }
                )
            checks += checks_of(key, res, libs, header)
            notes += notes_of(key, res, libs, header)

    columns = [("design", "<")] + [(header[lib], "<") for lib in libs]
    table_rows = [{"case": r["design"], **r} for r in rows]
    print_table(table_rows, columns)
    print()
    if loops:
        print(
            f"Back to back: median of {LOOP_FITS} consecutive fits in one process, without a "
            f"gc.collect() between them (fits under {LOOP_MAX * 1e3:g} ms; Python libraries)"
        )
        print_table(
            [{"case": r["design"], **r} for r in loops],
            [("design", "<")] + [(header[lib], "<") for lib in libs],
        )
        print()
    print_table(checks, [("case", "<"), ("check: measured (target)", "<"), ("result", "<")])
    print()
    for note in notes:
        print(f"- {note}")
    print(
        "- Cells: median wall time of one fit (lme4: system.time of the lmer call) from inputs "
        "built before the clock starts, model construction included; d = |logLik - sklmm's "
        f"logLik| at the library's optimum; '> {limit:g} s': stopped at the time limit; '(...)': "
        "not run, with the reason. GPBoost: ML, its log-likelihood recomputed exactly at its "
        "estimates by sklmm's ML criterion (no fit), d against sklmm's ML fit; the cell also "
        "gives the time of sklmm's ML fit."
    )
    print(f"- Total wall time of the benchmark: {time.perf_counter() - t_start:.0f} s.")


def row_of(key, res, libs, header, limit):
    row = {"design": DESIGNS[key]}
    ref = res["sklmm"].get("llf")
    for lib in libs:
        out = res[lib]
        if lib == "sklmm":
            row[header[lib]] = cell_text(out, None, limit)
        elif lib == "gpboost" and "sklmm-ML" in res:
            ml = res["sklmm-ML"]
            text = cell_text(out, ml.get("llf"), limit)
            if ml["status"] == "ok":
                text += f"; sklmm ML {fmt_time(ml['median'])}"
            row[header[lib]] = text
        else:
            row[header[lib]] = cell_text(out, ref, limit)
    return row


def checks_of(key, res, libs, header):
    out = []
    sk = res["sklmm"]
    case = key
    if sk["status"] != "ok":
        return [{"case": case, "check: measured (target)": "sklmm did not fit", "result": "FAIL"}]
    peers = {
        lib: res[lib]
        for lib in libs
        if lib not in ("sklmm", "gpboost") and res[lib]["status"] in ("ok", "timeout")
    }
    if peers:
        fastest = min(peers, key=lambda lib: peers[lib].get("median", np.inf))
        t_peer = peers[fastest].get("median", np.inf)
        peer_text = (
            f"fastest peer {fmt_time(t_peer)} ({header[fastest]})"
            if np.isfinite(t_peer)
            else "every peer (all stopped at the time limit)"
        )
        out.append(
            {
                "case": case,
                "check: measured (target)": f"sklmm {fmt_time(sk['median'])} <= {peer_text}, REML",
                "result": "PASS" if sk["median"] <= t_peer else "FAIL",
            }
        )
    if "sklmm-ML" in res and res.get("gpboost", {}).get("status") in ("ok", "timeout"):
        ml, gp = res["sklmm-ML"], res["gpboost"]
        t_gp = gp.get("median", np.inf)
        ok = ml["status"] == "ok" and ml["median"] <= t_gp
        out.append(
            {
                "case": case,
                "check: measured (target)": (
                    f"sklmm ML {fmt_time(ml['median']) if ml['status'] == 'ok' else 'failed'} "
                    f"<= GPBoost {fmt_time(t_gp) if np.isfinite(t_gp) else '> limit'}, ML"
                ),
                "result": "PASS" if ok else "FAIL",
            }
        )
    if key == "sleepstudy":
        out.append(
            {
                "case": case,
                "check: measured (target)": (
                    f"sklmm {fmt_time(sk['median'])} (<= {fmt_time(SLEEPSTUDY_TARGET)})"
                ),
                "result": "PASS" if sk["median"] <= SLEEPSTUDY_TARGET else "FAIL",
            }
        )
    return out


def notes_of(key, res, libs, header):
    parts = []
    for lib in ["sklmm", "sklmm-ML", *libs[1:]]:
        out = res.get(lib)
        if out is None or out["status"] != "ok":
            continue
        info = dict(out.get("info", {}))
        times = ", ".join(fmt_time(t) for t in out["times"])
        text = f"{lib}: fits {times}; logLik {out['llf']:.6f}"
        if lib == "gpboost":
            ml = res.get("sklmm-ML", {})
            text += (
                f" (recomputed; GPBoost's own {info.pop('own_llf'):.6f}; sklmm ML "
                f"{ml.get('llf', float('nan')):.6f}); variances (error, factors) "
                f"{np.round(info.pop('cov_pars'), 5).tolist()}"
            )
        if lib == "sklmm-ML":
            text += (
                f"; exact_ml_loglik at sklmm's ML estimates minus its logLik "
                f"{info.pop('recheck'):.1e}"
            )
        info.pop("coef", None)
        info.pop("cov_pars", None)
        if "converged" in info:
            text += f"; converged {info.pop('converged')}"
        warns = info.pop("warnings", [])
        if warns:
            text += "; warnings: " + " | ".join(warns)
        parts.append(text)
    return [f"{DESIGNS[key]}: " + "; ".join(parts)] if parts else []


if __name__ == "__main__":
    sys.exit(main())
