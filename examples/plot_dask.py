"""
Fitting on Dask collections
===========================

``fit`` reduces the rows to per-group cross-products of ``[Z X y]``, and those are sums
over the rows: they add up over any partition of the data, even when a group's rows are
spread over many partitions. So when ``X``, ``y`` and ``groups`` are Dask collections,
each partition is reduced where it lives, the small per-group arrays are summed, and the
optimization runs on the sums, unchanged. The result is the in-memory fit. This holds for
every model: one grouping factor, as in most of this example, or several terms (nested,
crossed, random slopes on several factors, variance components), as in its last section.

This example runs on Dask's threaded scheduler, to stay fast; on a cluster, create a
``dask.distributed.Client`` first and the same calls run there (``pip install
sklmm[dask]`` installs Dask). ``benchmarks/bench_dask.py`` fits 20,000,000 rows in
100,000 groups on a local cluster of two worker processes.
"""

import dask
import dask.dataframe as dd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sklmm import MixedLMRegressor

# %%
# Data in partitions
# ------------------
# 60,000 rows in 300 groups, in random order, split into 8 partitions: every group has
# rows in every partition. In practice the Dask DataFrame would come from
# ``dd.read_parquet`` or ``dd.read_csv``, partitioned as it is stored.

rng = np.random.default_rng(0)
n_rows, n_groups = 60_000, 300
g = rng.integers(0, n_groups, size=n_rows)
X = rng.normal(size=(n_rows, 3))
b = rng.multivariate_normal([0, 0], [[1.0, 0.1], [0.1, 0.25]], size=n_groups)
y = 2.0 + X @ [1.0, -0.5, 0.3] + b[g, 0] + b[g, 1] * X[:, 0] + rng.normal(size=n_rows)
df = pd.DataFrame(X, columns=["dose", "age", "weight"])
df["response"] = y
df["site"] = [f"site{i:03d}" for i in g]

ddf = dd.from_pandas(df, npartitions=8, sort=False)
features = ["dose", "age", "weight"]
print(f"{ddf.npartitions} partitions; rows of site000 per partition:")
print(ddf.map_partitions(lambda p: (p["site"] == "site000").sum()).compute().tolist())

# %%
# The same fit, from Dask and in memory
# -------------------------------------
# ``fit`` takes two passes over the partitions (means and group labels, then the
# cross-products); nothing but the per-group sums reaches this process.

with dask.config.set(scheduler="threads"):
    est_dask = MixedLMRegressor(random_slopes=["dose"]).fit(
        ddf[features], ddf["response"], groups=ddf["site"]
    )
est_mem = MixedLMRegressor(random_slopes=["dose"]).fit(
    df[features], df["response"], groups=df["site"]
)
shuffled = df.sample(frac=1, random_state=2)
est_shuffled = MixedLMRegressor(random_slopes=["dose"]).fit(
    shuffled[features], shuffled["response"], groups=shuffled["site"]
)


def estimates(est):
    return [
        est.log_likelihood_,
        est.intercept_,
        *est.coef_,
        *np.diag(est.random_effects_cov_["site"]),
        est.residual_variance_,
    ]


comparison = pd.DataFrame(
    {"in memory": estimates(est_mem), "Dask": estimates(est_dask)},
    index=["log-likelihood", "intercept", *features, "Var(intercept)", "Var(dose)", "sigma2"],
)
comparison["Dask - in memory"] = comparison["Dask"] - comparison["in memory"]
comparison["shuffled - in memory"] = estimates(est_shuffled) - comparison["in memory"]
print(comparison.to_string(float_format=lambda v: f"{v:.4g}"))

# %%
# The log-likelihoods agree to the rounding of their sums (about 1e-15 relative), and
# here so does every estimate. In general the variance parameters agree to the solver's
# convergence tolerance: near the optimum the likelihood is flat, so the rounding of the
# sums (which depends on the order of the rows) can move the point where the solver stops
# by that much. An in-memory fit of the same rows in another order differs from the first
# one just as the Dask fit does.

# %%
# Lazy predictions, with unseen groups
# ------------------------------------
# On Dask input ``predict`` returns a Dask collection (a Series for a DataFrame, an Array
# for an array), computed partition by partition when asked. Sites not seen in ``fit``
# get the population prediction ``X beta``.

new = df.sample(n=4_000, random_state=1).reset_index(drop=True)
new.loc[::4, "site"] = "new site"
dnew = dd.from_pandas(new, npartitions=4, sort=False)
pred = est_dask.predict(dnew[features], groups=dnew["site"])
print(type(pred).__name__, "with", pred.npartitions, "partitions")
with dask.config.set(scheduler="threads"):
    rmse = float(np.sqrt(((dnew["response"] - pred) ** 2).mean().compute()))
print(f"RMSE of the conditional predictions: {rmse:.3f}")

# %%
# The BLUPs agree too
# -------------------

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.plot(
    est_mem.random_effects_["site"]["dose"], est_dask.random_effects_["site"]["dose"], ".", ms=4
)
ax.axline((0, 0), slope=1, color="grey", lw=0.8)
ax.set_xlabel("random slope of dose, in memory")
ax.set_ylabel("random slope of dose, from Dask")
fig.tight_layout()

# %%
# Every model: several terms on Dask
# ----------------------------------
# Nothing above is special to one grouping factor: the statistics of every term are sums
# over the rows as well. Say each row was also measured by one of 40 operators, whose
# effect is crossed with the sites: lme4's
# ``response ~ dose + age + weight + (1 + dose | site) + (1 | operator)``, given by
# ``random_effects``, with ``groups`` a Dask DataFrame of the two label columns. Nested
# terms, random slopes on several factors and ``variance_components`` work the same way,
# and so do lazy predictions.

operator = rng.integers(0, 40, size=n_rows)
df2 = df.assign(
    operator=[f"op{i:02d}" for i in operator],
    response=df["response"] + rng.normal(scale=0.5, size=40)[operator],
)
ddf2 = dd.from_pandas(df2, npartitions=8, sort=False)
spec = "(1 + dose | site) + (1 | operator)"
labels = ["site", "operator"]

with dask.config.set(scheduler="threads"):
    crossed_dask = MixedLMRegressor(random_effects=spec).fit(
        ddf2[features], ddf2["response"], groups=ddf2[labels]
    )
crossed_mem = MixedLMRegressor(random_effects=spec).fit(
    df2[features], df2["response"], groups=df2[labels]
)
print("terms:", crossed_dask.terms_)
both = pd.DataFrame(
    {
        "in memory": [crossed_mem.log_likelihood_, *crossed_mem.variance_components_],
        "Dask": [crossed_dask.log_likelihood_, *crossed_dask.variance_components_],
    },
    index=["log-likelihood", "Var(operator)"],
)
both["Dask - in memory"] = both["Dask"] - both["in memory"]
print(both.to_string(float_format=lambda v: f"{v:.4g}"))
print("covariance of the site term, from Dask:")
print(crossed_dask.random_effects_cov_["site"].round(4))

dnew2 = dd.from_pandas(df2.sample(n=4_000, random_state=1), npartitions=4, sort=False)
pred2 = crossed_dask.predict(dnew2[features], groups=dnew2[labels])
with dask.config.set(scheduler="threads"):
    rmse2 = float(np.sqrt(((dnew2["response"] - pred2) ** 2).mean().compute()))
print(f"lazy {type(pred2).__name__}; RMSE of the conditional predictions: {rmse2:.3f}")
