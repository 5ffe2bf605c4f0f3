"""The one-factor criterion's kernels: numpy's against the compiled ones (numba), by size.

Prints, for q = 1, 2, 3 random effects (p = q fixed effects, REML) and a range of group
counts, the time of one evaluation of ``D`` (order 0), of ``D`` with its gradient and
Hessian (order 2) and of one EM step, with numpy's kernels and with the compiled ones,
and where the compiled ones are used (``groups * q <= sklmm._compiled.MAX_WORK``). The
compiled kernels loop over the groups one at a time; numpy's do one vectorised operation
over all the groups per step, so they win once the groups are many. Then a sleepstudy fit
(``(Days | Subject)``, 180 rows) in process with each.

Run: ``python3 -m pip install -e ".[bench]" && python3 benchmarks/bench_kernels.py``
(numba is in the ``bench`` and ``fast`` extras). Results: ``bench_kernels_results.txt``.
"""

import time

import numpy as np
import pandas as pd
from _common import sklmm_revision

from sklmm import MixedLMRegressor, _compiled
from sklmm._covariance import CovarianceStructure
from sklmm._crossprod import SufficientStats
from sklmm._profile import ProfiledDeviance
from sklmm.datasets import load_sleepstudy

GROUPS = (20, 100, 200, 400, 800, 1600)


def random_stats(rng, n_groups, q, p):
    """Per-group cross-products of a random design (2 to 9 rows per group)."""
    ZtZ, ZtXy, XytXy, n = [], [], np.zeros((p + 1, p + 1)), 0
    for _ in range(n_groups):
        m = int(rng.integers(2, 10))
        Z = np.column_stack([np.ones(m), rng.normal(size=(m, q - 1))])
        X = np.column_stack([np.ones(m), rng.normal(size=(m, p))])[:, :p]
        Xy = np.column_stack([X, X.sum(axis=1) + Z @ rng.normal(size=q) + rng.normal(size=m)])
        ZtZ.append(Z.T @ Z)
        ZtXy.append(Z.T @ Xy)
        XytXy += Xy.T @ Xy
        n += m
    return SufficientStats(np.array(ZtZ), np.array(ZtXy), XytXy, np.ones(n_groups), n)


def best_time(func, repeats=5, number=30):
    """Best of ``repeats`` means over ``number`` calls, in microseconds."""
    func()
    out = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            func()
        out = min(out, (time.perf_counter() - start) / number)
    return 1e6 * out


def kernel_times(stats, q, compiled):
    """Microseconds per call: D, D with derivatives, an EM step."""
    _compiled.AVAILABLE = compiled
    cov = CovarianceStructure(q)
    theta = 0.8 * cov.initial_theta() + 0.1
    objective = ProfiledDeviance(stats, cov, True)
    # The kernels asked for, whatever the size (sklmm itself switches at MAX_WORK).
    args = (np.ascontiguousarray(stats.ZtZ), np.ascontiguousarray(stats.ZtXy), stats.XytXy)
    objective._compiled_args = lambda: args if compiled else None

    def fresh(order):
        def call():
            objective._cache = None  # numpy's kernels keep the factorization: not across calls
            objective(theta, order)

        return call

    def em():
        objective._cache = None
        objective.em_update(theta)

    return best_time(fresh(0)), best_time(fresh(2)), best_time(em)


def sleepstudy_fit_ms(compiled, fits=200):
    _compiled.AVAILABLE = compiled
    d = load_sleepstudy()
    X, y = d[["Days"]].to_numpy(float), d["Reaction"].to_numpy(float)
    g = pd.factorize(d["Subject"])[0]

    def fit():
        MixedLMRegressor(random_slopes=[0]).fit(X, y, groups=g)

    for _ in range(20):
        fit()
    times = []
    for _ in range(fits):
        start = time.perf_counter()
        fit()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    if not _compiled.AVAILABLE:
        raise SystemExit("numba is not installed: pip install -e '.[bench]'")
    _compiled.kernels()  # compiled (or loaded from the cache) before any timing
    numpy_ms = sleepstudy_fit_ms(compiled=False)  # first: a fresh process's garbage
    compiled_ms = sleepstudy_fit_ms(compiled=True)
    rng = np.random.default_rng(0)
    rows = []
    for q in (1, 2, 3):
        for n_groups in GROUPS:
            stats = random_stats(rng, n_groups, q, q)
            numpy_t = kernel_times(stats, q, compiled=False)
            compiled_t = kernel_times(stats, q, compiled=True)
            cells = {
                f"{what} us (numpy / compiled)": f"{a:7.0f} / {b:7.0f}"
                for what, a, b in zip(
                    ("D", "D, grad, Hess", "EM step"), numpy_t, compiled_t, strict=True
                )
            }
            used = "compiled" if n_groups * q <= _compiled.MAX_WORK else "numpy"
            rows.append({"q": q, "groups": n_groups, **cells, "sklmm uses": used})
    _compiled.AVAILABLE = True
    print(
        f"sklmm {sklmm_revision()}; one evaluation of the one-factor criterion (REML, p = q), "
        "best of 5 x 30 calls"
    )
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\nMAX_WORK = {_compiled.MAX_WORK} (compiled while groups * q <= MAX_WORK)")
    print(
        "sleepstudy, (Days | Subject), 180 rows, one fit in process (median of 200 after 20): "
        f"numpy kernels {numpy_ms:.2f} ms, compiled kernels {compiled_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
