"""Benchmark of ``MixedLMRegressor.fit`` on Dask collections: one factor and crossed factors.

Run from the repository root::

    pip install -e .[dask]
    python benchmarks/bench_dask.py          # a few minutes; --help for options
    python benchmarks/bench_dask.py --case crossed

Two cases (``--case one-factor``, ``--case crossed``, default both), each printed as
its own table.

**crossed**: ``--crossed-rows`` rows (10,000,000) with two crossed factors of
``--levels-a`` (5,000) and ``--levels-b`` (2,000) levels, generated lazily in 40
partitions as below; two covariates; ``y = 1 + X beta + u_a + v_b + e`` with standard
deviations 1 and 0.5. Model: lme4 ``y ~ x0 + x1 + (1 | a) + (1 | b)``, REML, fitted by
``MixedLMRegressor(random_effects="(1 | a) + (1 | b)").fit(X, y, groups=G)`` with
``G`` a two-column Dask array (the blocked criterion, L-BFGS-B). Same measures.

**one-factor**:

Data: ``--rows`` rows (20,000,000) in ``--groups`` groups (100,000), generated
lazily inside the Dask partitions (``--partitions`` of them, 40): each partition
draws its own rows from a seed of its own, so no process ever holds more than one
partition, and the rows of every group are spread over all the partitions. Five
covariates, and the response drawn from
``y = 1 + X beta + b0_g + b1_g x0 + e`` with correlated random effects
(standard deviations 1 and 0.5, correlation 0.3) and ``e ~ N(0, 1)``.

Model: lme4 ``y ~ x0 + ... + x4 + (1 + x0 | g)``, REML, fitted by
``MixedLMRegressor(random_slopes=[0]).fit(X, y, groups=g)`` with X, y and g
Dask arrays, on a ``LocalCluster`` of 2 worker processes (1 thread each). The
fit reads the data twice (means and group levels, then the cross-products), so
the partitions are generated twice, and that time is part of the fit.

Measures:

- wall time (``time.perf_counter``) of ``fit``, and of one pass of ``predict``
  reduced to the RMSE of the conditional predictions (``predict`` on Dask input
  is lazy; the RMSE is computed without gathering the predictions);
- peak memory of each worker process during ``fit`` (Linux ``VmHWM``, the peak
  resident set size, reset through ``/proc/self/clear_refs`` before the fit), and
  its resident set size before; the same for this (client) process, which runs
  the optimization on the summed cross-products.

Targets: fit under 2 minutes, under 2 GB per worker.

Sanity check (skip with ``--no-check``): the first ``--check-rows`` rows
(1,000,000) are brought into memory and fitted in memory and from Dask; the
log-likelihoods must agree to 1e-10 relative (the rounding of a sum of a million
terms; the two sum the rows in different orders).
"""

import argparse
import time

import numpy as np
import pandas as pd

ROWS, GROUPS, PARTITIONS = 20_000_000, 100_000, 40
BETA = np.array([0.5, -1.0, 0.25, 0.0, 2.0])
SD = np.array([1.0, 0.5])
CORR = 0.3
SEED = 2024


def random_effects(n_groups):
    """The groups' (b0, b1): the same in every partition (drawn from a fixed seed)."""
    rng = np.random.default_rng([SEED, 0])
    sigma = np.array([[1.0, CORR], [CORR, 1.0]]) * np.outer(SD, SD)
    return rng.multivariate_normal(np.zeros(2), sigma, size=n_groups)


def make_partition(i, rows, n_groups):
    """Partition ``i``: columns x0..x4, y, g (g as float; exact below 2**53)."""
    rng = np.random.default_rng([SEED, 1, i])
    b = random_effects(n_groups)
    g = rng.integers(0, n_groups, size=rows)
    X = rng.normal(size=(rows, 5))
    y = 1.0 + X @ BETA + b[g, 0] + b[g, 1] * X[:, 0] + rng.normal(size=rows)
    return np.column_stack([X, y, g])


def make_crossed_partition(i, rows, levels_a, levels_b):
    """Crossed partition ``i``: columns x0, x1, y, a, b (labels as floats, exact)."""
    rng = np.random.default_rng([SEED, 2, i])
    effects = np.random.default_rng([SEED, 3])
    u, v = effects.normal(size=levels_a), 0.5 * effects.normal(size=levels_b)
    a, b = rng.integers(0, levels_a, size=rows), rng.integers(0, levels_b, size=rows)
    X = rng.normal(size=(rows, 2))
    y = 1.0 + X @ BETA[:2] + u[a] + v[b] + rng.normal(size=rows)
    return np.column_stack([X, y, a, b])


def lazy_crossed(n_rows, levels_a, levels_b, n_partitions):
    import dask
    import dask.array as da

    sizes = np.diff(np.linspace(0, n_rows, n_partitions + 1).astype(int))
    part = dask.delayed(make_crossed_partition, pure=True)
    blocks = [
        da.from_delayed(part(i, int(r), levels_a, levels_b), shape=(int(r), 5), dtype=np.float64)
        for i, r in enumerate(sizes)
    ]
    data = da.concatenate(blocks, axis=0)
    return data[:, :2], data[:, 2], data[:, 3:].astype(np.int64)


def lazy_data(n_rows, n_groups, n_partitions):
    import dask
    import dask.array as da

    sizes = np.diff(np.linspace(0, n_rows, n_partitions + 1).astype(int))
    part = dask.delayed(make_partition, pure=True)
    blocks = [
        da.from_delayed(part(i, int(r), n_groups), shape=(int(r), 7), dtype=np.float64)
        for i, r in enumerate(sizes)
    ]
    data = da.concatenate(blocks, axis=0)
    return data[:, :5], data[:, 5], data[:, 6].astype(np.int64)


def _reset_peak():
    """Reset this process's peak RSS (Linux) and return its current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return float("nan")


def _peak():
    return _status("VmHWM")


def _measure(client, fit):
    """Run ``fit()``; its wall time and the peak RSS of the workers and of this process."""
    before = client.run(_reset_peak)
    client_before = _reset_peak()
    start = time.perf_counter()
    fit()
    fit_time = time.perf_counter() - start
    return fit_time, before, client.run(_peak), client_before, _peak()


def _table(fit_time, before, peaks, client_before, client_peak, predict_time, target_s):
    gb = 1e9
    rows = [
        {
            "measure": "fit wall time (s)",
            "value": f"{fit_time:.1f}",
            "target": f"< {target_s}",
            "met": fit_time < target_s,
        }
    ]
    for k, (addr, peak) in enumerate(sorted(peaks.items())):
        rows.append(
            {
                "measure": f"worker {k} peak RSS (GB; {before[addr] / gb:.2f} before fit)",
                "value": f"{peak / gb:.2f}",
                "target": "< 2",
                "met": peak < 2 * gb,
            }
        )
    rows.append(
        {
            "measure": f"client peak RSS (GB; {client_before / gb:.2f} before fit)",
            "value": f"{client_peak / gb:.2f}",
            "target": "",
            "met": "",
        }
    )
    rows.append(
        {
            "measure": "predict + RMSE pass, wall time (s)",
            "value": f"{predict_time:.1f}",
            "target": "",
            "met": "",
        }
    )
    return pd.DataFrame(rows).to_string(index=False)


def _check(X, y, g, m, params):
    from sklmm import MixedLMRegressor

    Xm, ym, gm = (a.compute() for a in (X[:m], y[:m], g[:m]))
    mem = MixedLMRegressor(**params).fit(Xm, ym, groups=gm)
    dsk = MixedLMRegressor(**params).fit(X[:m], y[:m], groups=g[:m])
    diff = abs(mem.log_likelihood_ - dsk.log_likelihood_) / abs(mem.log_likelihood_)
    print(
        f"check on the first {m:,} rows: log-likelihood in memory "
        f"{mem.log_likelihood_:.6f}, from Dask {dsk.log_likelihood_:.6f}, "
        f"relative difference {diff:.1e} ({'<' if diff < 1e-10 else '>='} 1e-10)"
    )


def run_crossed(client, args):
    from sklmm import MixedLMRegressor

    X, y, G = lazy_crossed(args.crossed_rows, args.levels_a, args.levels_b, args.partitions)
    params = {"random_effects": "(1 | groups0) + (1 | groups1)"}
    est = MixedLMRegressor(**params)
    measured = _measure(client, lambda: est.fit(X, y, groups=G))
    start = time.perf_counter()
    pred = est.predict(X, groups=G)
    rmse = float(np.sqrt(((y - pred) ** 2).mean().compute()))
    predict_time = time.perf_counter() - start
    sizes = [len(b) for b in est.random_effects_.values()]
    print(
        f"crossed: {args.crossed_rows:,} rows in {args.partitions} lazily generated "
        f"partitions, {sizes[0]:,} x {sizes[1]:,} crossed levels, 2 covariates, "
        "(1 | a) + (1 | b) (REML); LocalCluster: 2 worker processes x 1 thread"
    )
    print(_table(*measured, predict_time, 120))
    print(
        f"converged={est.converged_}, {est.n_iter_} iterations, "
        f"log-likelihood {est.log_likelihood_:.6f}, RMSE of conditional predictions {rmse:.4f}"
    )
    truth = pd.DataFrame(
        {
            "true": [1.0, *BETA[:2], 1.0, 0.25, 1.0],
            "estimate": [
                est.intercept_,
                *est.coef_,
                *est.variance_components_.to_numpy(),
                est.residual_variance_,
            ],
        },
        index=["intercept", "x0", "x1", "Var(u_a)", "Var(v_b)", "sigma2"],
    )
    print(truth.round(4).to_string())
    if not args.no_check:
        _check(X, y, G, args.check_rows, params)


def run_one_factor(client, args):
    from sklmm import MixedLMRegressor

    X, y, g = lazy_data(args.rows, args.groups, args.partitions)
    est = MixedLMRegressor(random_slopes=[0])
    measured = _measure(client, lambda: est.fit(X, y, groups=g))
    start = time.perf_counter()
    pred = est.predict(X, groups=g)
    rmse = float(np.sqrt(((y - pred) ** 2).mean().compute()))
    predict_time = time.perf_counter() - start
    print(
        f"one factor: {args.rows:,} rows in {args.partitions} lazily generated partitions, "
        f"{len(est.random_effects_['group']):,} groups, 5 covariates, random intercept and "
        "slope (REML); LocalCluster: 2 worker processes x 1 thread"
    )
    print(_table(*measured, predict_time, 120))
    print(
        f"converged={est.converged_}, {est.n_iter_} iterations, "
        f"log-likelihood {est.log_likelihood_:.6f}, RMSE of conditional predictions {rmse:.4f}"
    )
    cov = est.random_effects_cov_["group"].to_numpy()
    truth = pd.DataFrame(
        {
            "true": [1.0, *BETA, SD[0] ** 2, SD[1] ** 2, CORR * SD[0] * SD[1], 1.0],
            "estimate": [
                est.intercept_,
                *est.coef_,
                cov[0, 0],
                cov[1, 1],
                cov[0, 1],
                est.residual_variance_,
            ],
        },
        index=["intercept", *[f"x{j}" for j in range(5)], "Var(b0)", "Var(b1)", "Cov", "sigma2"],
    )
    print(truth.round(4).to_string())
    if not args.no_check:
        _check(X, y, g, args.check_rows, {"random_slopes": [0]})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["both", "one-factor", "crossed"], default="both")
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--groups", type=int, default=GROUPS)
    parser.add_argument("--crossed-rows", type=int, default=10_000_000)
    parser.add_argument("--levels-a", type=int, default=5_000)
    parser.add_argument("--levels-b", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--check-rows", type=int, default=1_000_000)
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    if args.case in ("both", "one-factor"):
        run_one_factor(client, args)
        print()
    if args.case in ("both", "crossed"):
        run_crossed(client, args)
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
