"""Benchmark of ``MixedGLMClassifier`` (logistic GLMM, Laplace) against glmer and statsmodels.

Run from the repository root::

    pip install -e .[bench]          # sklmm plus statsmodels; R with lme4 for glmer
    python benchmarks/bench_glmm.py  # 20-30 minutes with glmer at 1,000,000 rows

Everything is measured in one run and printed as one table.

Data (fixed seeds, one per size): ``n`` rows in ``G = n / 100`` groups of unequal size
(the group of each row is drawn with log-normal group weights, sd 0.5 on the log
scale), covariates ``x, x2 ~ N(0, 1)``, independent random intercepts (sd 0.6) and
random slopes of ``x`` (sd 0.4) per group, ``eta = -0.3 + 0.8 x - 0.5 x2 + b0[g] +
b1[g] x`` and ``y ~ Bernoulli(logistic(eta))``. Sizes: 200,000 rows (2,000 groups) and
1,000,000 rows (10,000 groups).

Model: lme4 ``y ~ x + x2 + (1 + x | g)``, binomial with the logit link, Laplace
approximation (nAGQ = 1), an unstructured 2 x 2 covariance of the random effects.

* sklmm: ``MixedGLMClassifier(random_slopes=["x"]).fit(X, y, groups=g)`` with ``X`` a
  DataFrame of the columns ``x, x2`` (defaults: tol 1e-7, max_iter 200), in a child
  process; best and median of ``--repeats`` calls after one warm-up (200,000 rows) and
  of ``--large-repeats`` calls without warm-up (1,000,000 rows).
  ``log_likelihood_`` is the Laplace approximation with all constants, the quantity of
  lme4's ``logLik``.
* lme4: ``glmer(y ~ x + x2 + (1 + x | g), family = binomial, control =
  glmerControl(optimizer = "bobyqa"))`` by ``Rscript`` in a child process on the same
  data (passed through a temporary CSV written at full precision); ``system.time``
  times only the ``glmer`` call. On 200,000 rows the same fit with ``tolPwrss =
  1e-10`` as well: lme4's default PIRLS tolerance (``tolPwrss = 1e-7``) stops the inner
  iterations short, which lowers its Laplace log-likelihood by about 1e-7 relative (0.02
  at 200,000 rows); the tight fit is the converged one and is the reference of the
  log-likelihood target. The R process is stopped after
  ``--time-limit`` seconds (900; the limit covers the whole process, whose loading of
  lme4 and the CSV takes a few seconds).
* statsmodels: ``BinomialBayesMixedGLM`` with two variance components, the random
  intercepts (``0 + C(g)``) and the random slopes (``0 + C(g):x``) by group, fitted by
  ``fit_vb()`` (mean-field variational Bayes, its default optimizer, scipy's BFGS);
  the model is independent intercepts and slopes with log-normal priors on their
  standard deviations and normal priors on the fixed effects, so it is approximate Bayes:
  there is no log-likelihood, and its posterior means of the fixed effects are reported.
  The model is built by the constructor from sparse indicator matrices, the same matrices
  as ``from_formula`` with these ``vc_formulas`` (whose formula engine builds them dense:
  2 x n x G doubles, 6.4 GB at 200,000 rows and 160 GB at 1,000,000;
  ``--statsmodels-from-formula`` uses it anyway, with the same memory guard). The child
  process is stopped after ``--statsmodels-time-limit`` seconds (600), and its address
  space is capped below the machine's available memory, so that running out of memory is
  reported (``MemoryError``) instead of waking the kernel's OOM killer. scipy's BFGS
  keeps a dense inverse Hessian of the ``2 (3 + 2 + 2 G)`` variational parameters and
  forms about seven such matrices per iteration (two matrix products of that size): the
  fit is skipped, with the reason, when those would not fit in the available memory.

Targets (200,000 rows): glmer time / sklmm time >= 10 (best sklmm time, glmer with its
defaults); |logLik(sklmm) - logLik(glmer)| / |logLik(glmer)| <= 1e-4 (against the
``tolPwrss = 1e-10`` glmer fit where available, else the default one; both printed).
"""

import argparse
import gc
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
from _common import blas_summary, print_table, sklmm_revision, wait_for_child

import sklmm

SEED = 20_251_210
BETA = np.array([-0.3, 0.8, -0.5])  # (Intercept), x, x2
RE_SD = np.array([0.6, 0.4])  # random intercept, random slope of x (independent)
ROWS_PER_GROUP = 100
SIZES = (200_000, 1_000_000)
FORMULA = "y ~ x + x2 + (1 + x | g)"
FIXED_NAMES = ["(Intercept)", "x", "x2"]

SPEEDUP_TARGET = 10.0
LLF_REL_TOL = 1e-4
TIGHT_PWRSS = 1e-10
GB = 1e9

COLUMNS = [
    ("case", "<"),
    ("library", "<"),
    ("time s", ">"),
    ("median s", ">"),
    ("ratio to sklmm", ">"),
    ("log-likelihood", ">"),
    ("|dlogLik| / |logLik|", ">"),
    ("fixed effects (Intercept), x, x2", "<"),
    ("note", "<"),
]


# -- data ----------------------------------------------------------------------
def simulate(n_rows, seed):
    """The rows of one size (see the module docstring); the groups are coded 0..G-1."""
    n_groups = n_rows // ROWS_PER_GROUP
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.5, n_groups)
    g = rng.choice(n_groups, size=n_rows, p=weights / weights.sum())
    x = rng.standard_normal(n_rows)
    x2 = rng.standard_normal(n_rows)
    b = rng.standard_normal((n_groups, 2)) * RE_SD
    eta = BETA[0] + BETA[1] * x + BETA[2] * x2 + b[g, 0] + b[g, 1] * x
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    sizes = np.bincount(g, minlength=n_groups)
    if sizes.min() == 0:  # not with these weights and sizes; keep the codes dense anyway
        g = np.unique(g, return_inverse=True)[1]
        sizes = np.bincount(g)
    return {"x": x, "x2": x2, "y": y, "g": g, "sizes": sizes}


def describe(data):
    s = data["sizes"]
    return (
        f"{len(data['y']):,} rows, {len(s):,} groups of {s.min()}..{s.max()} rows (median "
        f"{np.median(s):.0f}), {data['y'].mean():.1%} ones"
    )


def lme4_theta(cov):
    """lme4's theta of a 2 x 2 covariance (unit scale): its lower Cholesky factor by columns."""
    L = np.linalg.cholesky(np.asarray(cov, dtype=float))
    return [float(L[0, 0]), float(L[1, 0]), float(L[1, 1])]


# -- sklmm, in a child process ------------------------------------------------------
def _sklmm_worker(x, x2, y, g, repeats, warmup, queue):
    try:
        from sklmm import MixedGLMClassifier

        X = pd.DataFrame({"x": x, "x2": x2})

        def fit():
            return MixedGLMClassifier(random_slopes=["x"]).fit(X, y, groups=g)

        times = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if warmup:
                fit()
            for _ in range(repeats):
                gc.collect()
                t0 = time.perf_counter()
                clf = fit()
                times.append(time.perf_counter() - t0)
        cov = next(iter(clf.random_effects_cov_.values()))
        queue.put(
            {
                "status": "ok",
                "times": times,
                "llf": float(clf.log_likelihood_),
                "fe": clf.fixed_effects_.to_numpy().tolist(),
                "theta": lme4_theta(cov),
                "sd": np.sqrt(np.diag(cov.to_numpy())).tolist(),
                "corr": float(cov.iloc[0, 1] / np.sqrt(cov.iloc[0, 0] * cov.iloc[1, 1])),
                "converged": bool(clf.converged_),
                "n_iter": int(clf.n_iter_),
                "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
                "revision": sklmm_revision(),
                "load": load_average(),
            }
        )
    except Exception as exc:  # report, do not hang the parent
        queue.put({"status": f"error: {type(exc).__name__}: {exc}"})


def _run_child(target, args, timeout):
    """``target(*args, queue)`` in a spawned child, stopped after ``timeout`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    return wait_for_child(proc, queue, timeout)


# -- lme4, by Rscript ------------------------------------------------------------------
R_CODE = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
d$g <- factor(d$g)
tol <- as.numeric(args[2])
ctrl <- if (tol > 0) {
  glmerControl(optimizer = "bobyqa", tolPwrss = tol)
} else {
  glmerControl(optimizer = "bobyqa")
}
msgs <- character(0)
t <- system.time(fit <- withCallingHandlers(
  glmer(y ~ x + x2 + (1 + x | g), data = d, family = binomial, control = ctrl),
  warning = function(w) {
    msgs <<- c(msgs, conditionMessage(w))
    invokeRestart("muffleWarning")
  }
))
cat("elapsed", t[["elapsed"]], "\n")
cat("loglik", sprintf("%.10f", as.numeric(logLik(fit))), "\n")
cat("fixef", sprintf("%.10f", fixef(fit)), "\n")
cat("theta", sprintf("%.10f", getME(fit, "theta")), "\n")
cat("feval", fit@optinfo$feval, "\n")
msgs <- c(msgs, fit@optinfo$conv$lme4$messages)
cat("messages", gsub("[\r\n]+", " ", paste(unique(msgs), collapse = " | ")), "\n")
"""


def r_versions():
    """(R version string, lme4 version), or (None, why not)."""
    if shutil.which("Rscript") is None:
        return None, "Rscript not found on PATH"
    code = 'cat(R.version.string, "\\n"); cat(as.character(packageVersion("lme4")), "\\n")'
    try:
        out = subprocess.run(
            ["Rscript", "-e", code], capture_output=True, text=True, check=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"Rscript or lme4 not usable: {str(exc).strip()[:200]}"
    lines = out.stdout.strip().splitlines()
    return lines[0].strip(), lines[1].strip()


def run_glmer(csv_path, tol, timeout):
    """One glmer fit by Rscript (``tol`` > 0: that ``tolPwrss``), stopped after ``timeout`` s."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "glmer.R"
        script.write_text(R_CODE)
        wall0 = time.perf_counter()
        proc = subprocess.Popen(
            ["Rscript", str(script), str(csv_path), repr(tol)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, stopped as one
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"status": f"> {timeout:.0f} s", "timeout": True}
        wall = time.perf_counter() - wall0
    if proc.returncode != 0:
        return {"status": f"R error: {stderr.strip()[-300:]}"}
    fields = {}
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        fields[key] = rest.strip()
    return {
        "status": "ok",
        "time": float(fields["elapsed"]),
        "wall": wall,
        "llf": float(fields["loglik"]),
        "fe": [float(v) for v in fields["fixef"].split()],
        "theta": [float(v) for v in fields["theta"].split()],
        "feval": fields.get("feval", "?"),
        "messages": fields.get("messages", ""),
        "load": load_average(),
    }


# -- statsmodels, in a child process -----------------------------------------------
def mem_available():
    """Bytes of ``MemAvailable`` (Linux), else None."""
    try:
        with open("/proc/meminfo") as fh:
            return int(re.search(r"^MemAvailable:\s+(\d+) kB", fh.read(), re.M).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def vb_bfgs_bytes(n_groups, p=3):
    """Memory of scipy BFGS in ``fit_vb``: about seven dense k x k matrices per iteration."""
    k = 2 * (p + 2 + 2 * n_groups)
    return k, 7 * k * k * 8


def _statsmodels_worker(x, x2, y, g, from_formula, seed, mem_cap, queue):
    try:
        if mem_cap:
            resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))
        from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

        n, n_groups = len(y), int(g.max()) + 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            if from_formula:
                df = pd.DataFrame({"y": y.astype(float), "x": x, "x2": x2, "g": g})
                vcf = {"g": "0 + C(g)", "gx": "0 + C(g):x"}
                model = BinomialBayesMixedGLM.from_formula("y ~ x + x2", vcf, df)
            else:
                rows = np.arange(n)
                Z0 = sp.csr_array((np.ones(n), (rows, g)), shape=(n, n_groups))
                Z1 = sp.csr_array((x, (rows, g)), shape=(n, n_groups))
                model = BinomialBayesMixedGLM(
                    y.astype(float),
                    np.column_stack([np.ones(n), x, x2]),
                    sp.hstack([Z0, Z1], format="csr"),
                    np.repeat([0, 1], n_groups),
                    fep_names=["Intercept", "x", "x2"],
                    vcp_names=["g", "gx"],
                )
            t1 = time.perf_counter()
            result = model.fit_vb(rng=seed)
            t2 = time.perf_counter()
        opt = result.optim_retvals
        queue.put(
            {
                "status": "ok",
                "time": t2 - t0,
                "build": t1 - t0,
                "fe": np.asarray(result.fe_mean).tolist(),
                "sd": np.exp(np.asarray(result.vcp_mean)).tolist(),
                "elbo": float(-opt.fun),
                "nit": int(getattr(opt, "nit", -1)),
                "success": bool(opt.success),
                "message": str(opt.message),
                "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
                "load": load_average(),
            }
        )
    except MemoryError as exc:
        queue.put({"status": f"out of memory (MemoryError: {str(exc)[:120]})"})
    except Exception as exc:
        queue.put({"status": f"error: {type(exc).__name__}: {str(exc)[:200]}"})


# -- table ----------------------------------------------------------------------------
def fmt_fe(fe):
    return ", ".join(f"{v:.4f}" for v in fe)


def rel_diff(a, b):
    return abs(a - b) / abs(b)


def peer_row(library, out, sk, note):
    """A table row of a peer's finished fit, compared with sklmm's fit ``sk`` (or None)."""
    row = {
        "case": "",
        "library": library,
        "time s": f"{out['time']:.2f}",
        "median s": "(1 call)",
        "fixed effects (Intercept), x, x2": fmt_fe(out["fe"]),
        "note": note,
    }
    if sk is not None:
        row["ratio to sklmm"] = f"{out['time'] / min(sk['times']):.1f}x"
    if out.get("llf") is not None:
        row["log-likelihood"] = f"{out['llf']:.4f}"
        if sk is not None:
            row["|dlogLik| / |logLik|"] = f"{rel_diff(sk['llf'], out['llf']):.1e}"
    else:
        row["log-likelihood"] = "n/a"
    return row


def failed_row(library, status, note=""):
    return {"case": "", "library": library, "time s": status, "note": note}


def load_average():
    """The 1-minute load average (other processes share the CPUs), or None."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def fmt_load(load):
    return "?" if load is None else f"{load:.2f}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            return re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.M).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or "unknown CPU"


# -- the benchmark ---------------------------------------------------------------------
def bench_size(n_rows, index, args, r_ok, sm_version, rows, notes, checks):
    data = simulate(n_rows, SEED + index)
    n_groups = len(data["sizes"])
    case = f"{n_rows:,} rows / {n_groups:,} groups"
    small = n_rows == min(args.sizes)
    tag = f"{n_rows // 1000:,}k" if n_rows < 1_000_000 else f"{n_rows // 1_000_000:,}M"
    notes.append(f"{tag}: {describe(data)}; seed {SEED + index}.")
    arrays = (data["x"], data["x2"], data["y"], data["g"])

    # sklmm.
    large = n_rows >= 1_000_000
    repeats = args.large_repeats if large else args.repeats
    warmup = not large
    sk = _run_child(_sklmm_worker, (*arrays, repeats, warmup), args.time_limit)
    lib = "sklmm MixedGLMClassifier"
    if sk["status"] == "ok":
        t = sk["times"]
        rows.append(
            {
                "case": case,
                "library": lib,
                "time s": f"{min(t):.2f}",
                "median s": f"{np.median(t):.2f}" if len(t) > 1 else "(1 call)",
                "ratio to sklmm": "1.0x",
                "log-likelihood": f"{sk['llf']:.4f}",
                "fixed effects (Intercept), x, x2": fmt_fe(sk["fe"]),
                "note": (
                    f"best of {len(t)}{' after a warm-up' if warmup else ''}; "
                    f"converged={sk['converged']}, n_iter_={sk['n_iter']}"
                ),
            }
        )
        notes.append(
            f"{tag} sklmm: times {', '.join(f'{v:.2f}' for v in t)} s; random-effect SDs "
            f"{np.round(sk['sd'], 4).tolist()} (true {RE_SD.tolist()}), correlation "
            f"{sk['corr']:.4f} (true 0); lme4 theta {np.round(sk['theta'], 5).tolist()}; "
            f"sklmm revision in the child {sk['revision']}; load average after the fits "
            f"{fmt_load(sk['load'])}; warnings: "
            + ("; ".join(w[:200] for w in sk["warnings"]) or "none")
            + "."
        )
    else:
        rows.append({"case": case, "library": lib, "time s": sk["status"]})
        sk = None

    # lme4.
    glmer = {}
    if r_ok is None:
        rows.append(failed_row("lme4 glmer (R)", "skipped", args.r_reason))
    else:
        variants = [("default", 0.0)]
        if small:
            variants.append((f"tolPwrss={TIGHT_PWRSS:g}", TIGHT_PWRSS))
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "glmm.csv"
            frame = pd.DataFrame({"y": data["y"], "x": data["x"], "x2": data["x2"]})
            frame["g"] = data["g"]
            frame.to_csv(csv, index=False, float_format="%.17g")
            del frame
            for label, tol in variants:
                lib = f"lme4 glmer, {label}"
                out = run_glmer(csv, tol, args.time_limit)
                glmer[label] = out
                if out["status"] != "ok":
                    note = "time limit (--time-limit)" if out.get("timeout") else ""
                    rows.append(failed_row(lib, out["status"], note))
                    if out.get("timeout") and sk is not None:
                        rows[-1]["ratio to sklmm"] = f"> {args.time_limit / min(sk['times']):.0f}x"
                    continue
                rows.append(
                    peer_row(
                        lib,
                        out,
                        sk,
                        f"bobyqa, {out['feval']} evaluations; Rscript wall {out['wall']:.1f} s",
                    )
                )
                notes.append(
                    f"{tag} glmer {label}: theta {np.round(out['theta'], 5).tolist()}; "
                    f"elapsed {out['time']:.2f} s (system.time of glmer()); load average after "
                    f"the fit {fmt_load(out['load'])}; messages: "
                    + (out["messages"] or "none")
                    + "."
                )

    # statsmodels.
    lib = "statsmodels BinomialBayesMixedGLM fit_vb"
    avail = mem_available()
    k, need = vb_bfgs_bytes(n_groups)
    if sm_version is None or args.skip_statsmodels:
        why = "not installed" if sm_version is None else "--skip-statsmodels"
        rows.append(failed_row(lib, "skipped", why))
    elif avail is not None and need > 0.8 * avail:
        rows.append(failed_row(lib, "skipped", "memory: see the notes"))
        notes.append(
            f"{tag} statsmodels not run: fit_vb minimizes over k = 2 (3 + 2 + 2 G) = {k:,} "
            f"variational parameters with scipy's BFGS, whose dense k x k inverse Hessian is "
            f"{k * k * 8 / GB:.1f} GB and whose update forms about seven such matrices "
            f"(~{need / GB:.0f} GB); {avail / GB:.1f} GB are available."
        )
    else:
        cap = int(0.85 * avail) if avail is not None else 0
        out = _run_child(
            _statsmodels_worker,
            (*arrays, args.statsmodels_from_formula, SEED, cap),
            args.statsmodels_time_limit,
        )
        if out["status"] == "ok":
            build = "from_formula" if args.statsmodels_from_formula else "sparse vc"
            rows.append(
                peer_row(
                    lib,
                    out,
                    sk,
                    f"VB posterior means, no log-likelihood; {build}; BFGS {out['nit']} "
                    f"iterations, success={out['success']}",
                )
            )
            notes.append(
                f"{tag} statsmodels: model built in {out['build']:.2f} s; posterior SDs of "
                f"intercepts and slopes exp(vcp_mean) {np.round(out['sd'], 4).tolist()}; "
                f"ELBO {out['elbo']:.2f}; optimizer: {out['message']}; load average after the "
                f"fit {fmt_load(out['load'])}; warnings: "
                + ("; ".join(w[:160] for w in out["warnings"]) or "none")
                + "."
            )
        else:
            rows.append(failed_row(lib, out["status"], "VB has no log-likelihood"))
            if out["status"].startswith("stopped") and sk is not None:
                limit = args.statsmodels_time_limit
                rows[-1]["ratio to sklmm"] = f"> {limit / min(sk['times']):.0f}x"
                rows[-1]["note"] = "time limit (--statsmodels-time-limit); " + rows[-1]["note"]

    # Targets, on the 200,000-row case.
    if n_rows == 200_000 and sk is not None:
        best = min(sk["times"])
        d = glmer.get("default", {})
        if d.get("status") == "ok":
            ratio = d["time"] / best
            checks.append(
                (
                    f"200k: glmer time / sklmm time >= {SPEEDUP_TARGET:g}: {d['time']:.2f} / "
                    f"{best:.2f} = {ratio:.1f}x (against the sklmm median "
                    f"{d['time'] / np.median(sk['times']):.1f}x)",
                    ratio >= SPEEDUP_TARGET,
                )
            )
        elif d.get("timeout"):
            ratio = args.time_limit / best
            checks.append((f"200k: glmer time / sklmm time > {ratio:.0f}x", True))
        else:
            checks.append(("200k: glmer time / sklmm time: glmer not run", None))
        tight = glmer.get(f"tolPwrss={TIGHT_PWRSS:g}", {})
        refs = [(f"glmer tolPwrss={TIGHT_PWRSS:g}", tight), ("glmer default", d)]
        judged = False
        for name, ref in refs:
            if ref.get("status") != "ok":
                continue
            rel = rel_diff(sk["llf"], ref["llf"])
            checks.append(
                (
                    f"200k: |logLik(sklmm) - logLik({name})| / |logLik(glmer)| <= "
                    f"{LLF_REL_TOL:g}: {rel:.2e} (sklmm - glmer = {sk['llf'] - ref['llf']:+.4f})"
                    + ("" if not judged else " (context: the target uses the tight fit)"),
                    rel <= LLF_REL_TOL,
                )
            )
            judged = True
        if not judged:
            checks.append(("200k: log-likelihood against glmer: glmer not run", None))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="rows (200000 1000000)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed sklmm fits below 1M (3)")
    parser.add_argument(
        "--large-repeats", type=int, default=2, help="timed sklmm fits at >= 1M rows (2)"
    )
    parser.add_argument("--skip-r", action="store_true", help="skip lme4's glmer")
    parser.add_argument("--skip-statsmodels", action="store_true", help="skip statsmodels")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=900.0,
        help="seconds per glmer fit, and for each sklmm child process (900)",
    )
    parser.add_argument(
        "--statsmodels-time-limit", type=float, default=600.0, help="seconds per statsmodels fit"
    )
    parser.add_argument(
        "--statsmodels-from-formula",
        action="store_true",
        help="build the statsmodels model by from_formula (dense n x G matrices)",
    )
    args = parser.parse_args(argv)
    args.sizes = sorted(args.sizes)

    try:
        import statsmodels

        sm_version = statsmodels.__version__
    except ImportError:
        sm_version = None
    if args.skip_r:
        r_version, lme4_version = None, "--skip-r"
    else:
        r_version, lme4_version = r_versions()
    args.r_reason = lme4_version if r_version is None else ""

    print(
        "Logistic GLMM, y ~ x + x2 + (1 + x | g), Laplace: sklmm MixedGLMClassifier against "
        "lme4 glmer and statsmodels BinomialBayesMixedGLM"
    )
    print(
        f"{cpu_model()}, {os.cpu_count()} CPUs; BLAS: {blas_summary()}; "
        f"MemAvailable {(mem_available() or 0) / GB:.1f} GB; 1-minute load average at the start "
        f"{fmt_load(load_average())} (the CPUs may be shared with other work)"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"pandas {pd.__version__}, sklmm {sklmm.__version__} ({sklmm_revision()}), "
        f"statsmodels {sm_version or 'not installed'}"
    )
    if r_version is None:
        print(f"R: not used ({lme4_version})")
    else:
        print(f"{r_version}, lme4 {lme4_version}")
    print(
        f"seed {SEED} + size index; true fixed effects {fmt_fe(BETA)}, random-effect SDs "
        f"{RE_SD.tolist()} (independent); time limits: glmer and sklmm {args.time_limit:.0f} "
        f"s, statsmodels {args.statsmodels_time_limit:.0f} s"
    )
    print()

    rows, notes, checks = [], [], []
    for index, n_rows in enumerate(args.sizes):
        bench_size(n_rows, index, args, r_version, sm_version, rows, notes, checks)
        gc.collect()

    print_table(rows, COLUMNS)
    print()
    for text, ok in checks:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}.get(ok, ok)
        print(f"{verdict:4}  {text}")
    print()
    for note in notes:
        print(f"- {note}")
    print(
        "- time: wall time of one call. sklmm: MixedGLMClassifier(random_slopes=['x'])"
        ".fit(X, y, groups=g) from a DataFrame X (x, x2), the 0/1 labels and the integer "
        "group codes, in a child process; best and median of the timed calls. glmer: "
        "system.time(glmer(...)) inside R (reading the CSV and loading lme4 not counted). "
        "statsmodels: model construction + fit_vb(), one call in a child process. ratio: "
        "the library's time over sklmm's best time on the same data."
    )
    print(
        "- log-likelihood: sklmm's log_likelihood_ and lme4's logLik(fit), both the Laplace "
        "approximation of the marginal log-likelihood with all constants; "
        "|dlogLik| / |logLik| = |logLik(sklmm) - logLik(library)| / |logLik(library)|. "
        "statsmodels' variational fit has no likelihood (its ELBO, in the notes, is a lower "
        "bound with priors, not comparable)."
    )


if __name__ == "__main__":
    sys.exit(main())
