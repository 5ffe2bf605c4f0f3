"""Benchmark of ``MixedLMRegressor.fit`` on Dask collections (issue 8).

Run from the repository root::

    pip install -e .[dask]
    python benchmarks/bench_dask.py          # about a minute; --help for options

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--groups", type=int, default=GROUPS)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--check-rows", type=int, default=1_000_000)
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    from sklmm import MixedLMRegressor

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    X, y, g = lazy_data(args.rows, args.groups, args.partitions)
    est = MixedLMRegressor(random_slopes=[0])

    before = client.run(_reset_peak)
    client_before = _reset_peak()
    start = time.perf_counter()
    est.fit(X, y, groups=g)
    fit_time = time.perf_counter() - start
    peaks = client.run(_peak)
    client_peak = _peak()

    start = time.perf_counter()
    pred = est.predict(X, groups=g)
    rmse = float(np.sqrt(((y - pred) ** 2).mean().compute()))
    predict_time = time.perf_counter() - start

    gb = 1e9
    rows = [
        {
            "measure": "fit wall time (s)",
            "value": f"{fit_time:.1f}",
            "target": "< 120",
            "met": fit_time < 120,
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
    print(
        f"{args.rows:,} rows in {args.partitions} lazily generated partitions, "
        f"{len(est.groups_):,} groups, 5 covariates, random intercept and slope (REML); "
        "LocalCluster: 2 worker processes x 1 thread"
    )
    print(pd.DataFrame(rows).to_string(index=False))
    print(
        f"converged={est.converged_}, {est.n_iter_} iterations, "
        f"log-likelihood {est.log_likelihood_:.6f}, RMSE of conditional predictions {rmse:.4f}"
    )
    truth = pd.DataFrame(
        {
            "true": [1.0, *BETA, SD[0] ** 2, SD[1] ** 2, CORR * SD[0] * SD[1], 1.0],
            "estimate": [
                est.intercept_,
                *est.coef_,
                est.random_effects_cov_[0, 0],
                est.random_effects_cov_[1, 1],
                est.random_effects_cov_[0, 1],
                est.residual_variance_,
            ],
        },
        index=["intercept", *[f"x{j}" for j in range(5)], "Var(b0)", "Var(b1)", "Cov", "sigma2"],
    )
    print(truth.round(4).to_string())

    if not args.no_check:
        m = args.check_rows
        Xm, ym, gm = (a.compute() for a in (X[:m], y[:m], g[:m]))
        mem = MixedLMRegressor(random_slopes=[0]).fit(Xm, ym, groups=gm)
        dsk = MixedLMRegressor(random_slopes=[0]).fit(X[:m], y[:m], groups=g[:m])
        diff = abs(mem.log_likelihood_ - dsk.log_likelihood_) / abs(mem.log_likelihood_)
        print(
            f"check on the first {m:,} rows: log-likelihood in memory "
            f"{mem.log_likelihood_:.6f}, from Dask {dsk.log_likelihood_:.6f}, "
            f"relative difference {diff:.1e} ({'<' if diff < 1e-10 else '>='} 1e-10)"
        )
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
