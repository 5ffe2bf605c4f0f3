"""Fit and predict on Dask collections, on a local cluster of two worker processes.

The Dask fit sums per-partition statistics; it must give the in-memory fit on the
same rows, with each level's rows spread over several partitions, for every kind of
model (one factor, slopes, nested, crossed, variance components).
"""

import numpy as np
import pandas as pd
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")

from sklmm import MixedLMRegressor, NoGroupsWarning  # noqa: E402
from sklmm._dask import DaskData  # noqa: E402

N_PARTITIONS = 6


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


def simulate(n=3000, n_groups=40, seed=0):
    """Rows in random order, so that every group has rows in several partitions."""
    rng = np.random.default_rng(seed)
    g = rng.permutation(np.r_[np.arange(n_groups), rng.integers(0, n_groups, n - n_groups)])
    X = rng.normal(size=(n, 3)) + np.array([0.0, 5.0, -2.0])
    b = rng.normal(size=(n_groups, 2)) * np.array([1.0, 0.5])
    y = 10 + X @ [1.0, -0.5, 0.25] + b[g, 0] + b[g, 1] * X[:, 0] + rng.normal(size=n)
    df = pd.DataFrame(X, columns=["x0", "x1", "x2"])
    df["y"] = y
    df["subject"] = np.array([f"s{i:02d}" for i in g])
    df["code"] = g
    return df


@pytest.fixture(scope="module")
def data():
    df = simulate()
    ddf = dd.from_pandas(df, npartitions=N_PARTITIONS, sort=False)
    # the premise of the tests: groups are spread over the partitions
    spread = ddf.map_partitions(lambda p: pd.Series(p["subject"].unique())).compute()
    assert spread.value_counts().max() >= 3
    return df, ddf


def assert_same_fit(mem, dsk, rtol=1e-10):
    assert abs(dsk.log_likelihood_ - mem.log_likelihood_) <= rtol * abs(mem.log_likelihood_)
    np.testing.assert_allclose(dsk.coef_, mem.coef_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dsk.intercept_, mem.intercept_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dsk.residual_variance_, mem.residual_variance_, rtol=1e-7)
    assert list(dsk.random_effects_cov_) == list(mem.random_effects_cov_)
    assert dsk.terms_ == mem.terms_
    for name, cov in mem.random_effects_cov_.items():
        pd.testing.assert_frame_equal(dsk.random_effects_cov_[name], cov, rtol=1e-6, atol=1e-10)
        pd.testing.assert_frame_equal(
            dsk.random_effects_[name], mem.random_effects_[name], rtol=1e-6, atol=1e-8
        )
        # the levels, their order and their labels' dtype
        pd.testing.assert_index_equal(
            dsk.random_effects_[name].index, mem.random_effects_[name].index, exact=True
        )
        pd.testing.assert_frame_equal(
            dsk.random_effects_condvar_[name],
            mem.random_effects_condvar_[name],
            rtol=1e-6,
            atol=1e-10,
        )
    np.testing.assert_allclose(dsk.fixed_effects_cov_, mem.fixed_effects_cov_, rtol=1e-6)
    assert dsk.n_features_in_ == mem.n_features_in_
    if hasattr(mem, "feature_names_in_"):
        np.testing.assert_array_equal(dsk.feature_names_in_, mem.feature_names_in_)
    else:
        assert not hasattr(dsk, "feature_names_in_")


PARAMS = [
    {},
    {"random_slopes": ["x0"]},
    {"random_slopes": ["x0", "x1"], "covariance_type": "diagonal", "reml": False},
    {"random_slopes": ["x0"], "fit_intercept": False},
]


@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_dataframe_fit_equals_in_memory(client, data, params):
    df, ddf = data
    cols = ["x0", "x1", "x2"]
    mem = MixedLMRegressor(**params).fit(df[cols], df["y"], groups=df["subject"])
    dsk = MixedLMRegressor(**params).fit(ddf[cols], ddf["y"], groups=ddf["subject"])
    assert_same_fit(mem, dsk)
    assert list(dsk.random_effects_) == ["subject"]


@pytest.mark.parametrize("slopes", [None, [0]])
def test_array_fit_equals_in_memory(client, data, slopes):
    df, _ = data
    X, y, g = df[["x0", "x1", "x2"]].to_numpy(), df["y"].to_numpy(), df["code"].to_numpy()
    # X split along its columns too, y and groups chunked unlike X: rechunked to X's rows
    Xd = da.from_array(X, chunks=(500, 2))
    yd, gd = da.from_array(y, chunks=700), da.from_array(g, chunks=1100)
    mem = MixedLMRegressor(random_slopes=slopes).fit(X, y, groups=g)
    est = MixedLMRegressor(random_slopes=slopes)
    est.feature_names_in_ = np.array(["stale"], dtype=object)  # from an earlier fit
    dsk = est.fit(Xd, yd, groups=gd)
    assert_same_fit(mem, dsk)
    assert list(dsk.random_effects_) == ["group"]


def test_statistics_match_in_memory(client, data):
    df, ddf = data
    cols = ["x0", "x1", "x2"]
    mem = MixedLMRegressor(random_slopes=["x0"]).fit(df[cols], df["y"], groups=df["subject"])
    dsk = MixedLMRegressor(random_slopes=["x0"]).fit(ddf[cols], ddf["y"], groups=ddf["subject"])
    a, b = mem._fitted.model, dsk._fitted.model
    for field in ("ZtZ", "ZtXy", "level_counts"):
        for x, y in zip(getattr(b.stats, field), getattr(a.stats, field), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(b.stats.XytXy, a.stats.XytXy, rtol=1e-9, atol=1e-8)
    assert b.stats.n == a.stats.n
    np.testing.assert_allclose(b.x_mean, a.x_mean, rtol=1e-12)
    for s, t in zip(b.scales, a.scales, strict=True):
        np.testing.assert_allclose(s, t, rtol=1e-12)


def test_no_groups(client, data):
    df, ddf = data
    cols = ["x0", "x1", "x2"]
    with pytest.warns(NoGroupsWarning):
        mem = MixedLMRegressor().fit(df[cols], df["y"])
    with pytest.warns(NoGroupsWarning):
        dsk = MixedLMRegressor().fit(ddf[cols], ddf["y"])
    assert abs(dsk.log_likelihood_ - mem.log_likelihood_) <= 1e-10
    np.testing.assert_allclose(dsk.coef_, mem.coef_, rtol=1e-10)


def test_predict_dataframe_lazy_with_unseen_groups(client, data):
    df, _ = data
    cols = ["x0", "x1", "x2"]
    est = MixedLMRegressor(random_slopes=["x0"]).fit(df[cols], df["y"], groups=df["subject"])
    new = simulate(n=900, n_groups=60, seed=1)  # s40..s59 were not seen in fit
    new["subject"] = np.where(new["code"] >= 40, "new" + new["subject"], new["subject"])
    assert (~new["subject"].isin(est.random_effects_["subject"].index)).any()
    dnew = dd.from_pandas(new, npartitions=4, sort=False)
    pred = est.predict(dnew[cols], groups=dnew["subject"])
    assert isinstance(pred, dd.Series)  # lazy
    np.testing.assert_allclose(
        pred.compute().to_numpy(), est.predict(new[cols], groups=new["subject"]), rtol=1e-12
    )
    population = est.predict(dnew[cols])
    np.testing.assert_allclose(population.compute().to_numpy(), est.predict(new[cols]), rtol=1e-12)
    mean, std = est.predict(dnew[cols], groups=dnew["subject"], return_std=True)
    mean_mem, std_mem = est.predict(new[cols], groups=new["subject"], return_std=True)
    np.testing.assert_allclose(mean.compute().to_numpy(), mean_mem, rtol=1e-12)
    np.testing.assert_allclose(std.compute().to_numpy(), std_mem, rtol=1e-10)


def test_predict_array_lazy(client, data):
    df, _ = data
    X, y, g = df[["x0", "x1", "x2"]].to_numpy(), df["y"].to_numpy(), df["code"].to_numpy()
    est = MixedLMRegressor(random_slopes=[0]).fit(X, y, groups=g)
    g_new = np.where(np.arange(len(g)) % 3 == 0, g + 1000, g)  # a third unseen
    Xd, gd = da.from_array(X, chunks=(800, 3)), da.from_array(g_new, chunks=800)
    pred = est.predict(Xd, groups=gd)
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), est.predict(X, groups=g_new), rtol=1e-12)
    np.testing.assert_allclose(est.predict(Xd).compute(), est.predict(X), rtol=1e-12)


def test_predict_checks_features(client, data):
    df, ddf = data
    est = MixedLMRegressor().fit(df[["x0", "x1"]].to_numpy(), df["y"], groups=df["subject"])
    with pytest.raises(ValueError, match="X has 3 features, but MixedLMRegressor is expecting 2"):
        est.predict(da.ones((10, 3), chunks=5))
    est = MixedLMRegressor().fit(df[["x0", "x1"]], df["y"], groups=df["subject"])
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(ddf[["x1", "x0"]])
    with pytest.raises(TypeError, match="groups must be a Dask Series"):
        est.predict(ddf[["x0", "x1"]], groups=da.ones(3000, chunks=500))
    # names at fit but not at predict (and the reverse): warned once, as in memory
    X2 = df[["x0", "x1"]].to_numpy()
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        pred = est.predict(da.from_array(X2, chunks=(700, 2)))
    np.testing.assert_allclose(pred.compute(), est.predict(df[["x0", "x1"]]), rtol=1e-12)
    est = MixedLMRegressor().fit(X2, df["y"].to_numpy(), groups=df["subject"].to_numpy())
    with pytest.warns(UserWarning, match="X has feature names"):
        pred = est.predict(ddf[["x0", "x1"]])
    np.testing.assert_allclose(pred.compute().to_numpy(), est.predict(X2), rtol=1e-12)


def _parts(values, npartitions):
    return dd.from_pandas(pd.Series(values), npartitions=npartitions, sort=False)


def test_errors(client, data):
    df, ddf = data
    cols = ["x0", "x1", "x2"]
    est = MixedLMRegressor()
    with pytest.raises(ValueError, match=r"non-numeric columns \['subject'\]"):
        est.fit(ddf[["x0", "subject"]], ddf["y"], groups=ddf["subject"])
    with pytest.raises(ValueError, match="different numbers of partitions"):
        est.fit(ddf[cols], _parts(df["y"].to_numpy(), 2), groups=ddf["subject"])
    with pytest.raises(TypeError, match="groups must be"):
        est.fit(ddf[cols], ddf["y"], groups=df["subject"].to_numpy())
    with pytest.raises(ValueError, match="y has 3000 entries but X has 2999 rows"):
        est.fit(da.ones((2999, 2), chunks=1000), da.ones(3000, chunks=1000))
    with pytest.raises(ValueError, match="2-D"):
        est.fit(da.ones(30, chunks=10), da.ones(30, chunks=10))


def test_misaligned_lengths(client, data):
    df, ddf = data
    cols = ["x0", "x1", "x2"]
    y = dd.from_pandas(df["y"].iloc[:-10], npartitions=N_PARTITIONS, sort=False)
    with pytest.raises(ValueError, match="not aligned: partition"):
        MixedLMRegressor().fit(ddf[cols], y, groups=ddf["subject"])


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("x1", np.nan, "Input X contains NaN"),
        ("x2", np.inf, "Input X contains infinity"),
        ("y", np.nan, "Input y contains NaN"),
        ("subject", None, r"groups contains missing labels \(None or NaN\) at rows \[2500\]"),
    ],
)
def test_non_finite(client, data, column, value, message):
    df, _ = data
    bad = df.copy()
    bad[column] = bad[column].astype(object) if value is None else bad[column]
    bad.loc[2500, column] = value
    ddf = dd.from_pandas(bad, npartitions=N_PARTITIONS, sort=False)
    with pytest.raises(ValueError, match=message):
        MixedLMRegressor().fit(ddf[["x0", "x1", "x2"]], ddf["y"], groups=ddf["subject"])
    with pytest.raises(ValueError, match=message):  # the in-memory message says the same
        MixedLMRegressor().fit(bad[["x0", "x1", "x2"]], bad["y"], groups=bad["subject"])


def simulate_crossed(n=4000, seed=0):
    """Two crossed factors, a nested one and a slope, rows in random order."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 40, n), rng.integers(0, 25, n)
    c = rng.integers(0, 3, n)  # nested in a: the cell a:c
    x = rng.normal(size=n) + 2.0
    ua, ub, uc = rng.normal(size=40), rng.normal(size=25), rng.normal(size=(40, 3))
    sa = 0.5 * rng.normal(size=40)
    y = 1 + 0.5 * x + ua[a] + sa[a] * x + ub[b] + uc[a, c] + rng.normal(size=n)
    return pd.DataFrame(
        {"x": x, "y": y, "a": a, "b": [f"b{v:02d}" for v in b], "c": c, "x2": rng.normal(size=n)}
    )


SEVERAL = [
    ("(1 | a) + (1 | b)", ["a", "b"]),
    ("(1 | a/c)", ["a", "c"]),
    ("(1 + x | a) + (1 | b)", ["a", "b"]),
    ("(1 + x || a) + (1 | b) + (1 | a:c)", ["a", "b", "c"]),
    ("(0 + x | a) + (1 | b)", ["a", "b"]),
]


@pytest.mark.parametrize(("spec", "factors"), SEVERAL, ids=[s for s, _ in SEVERAL])
def test_several_terms_fit_equals_in_memory(client, spec, factors):
    df = simulate_crossed()
    ddf = dd.from_pandas(df, npartitions=N_PARTITIONS, sort=False)
    # the premise: the levels of every factor are spread over several partitions
    spread = ddf.map_partitions(lambda p: pd.Series(p["b"].unique())).compute()
    assert spread.value_counts().min() >= 3
    est = MixedLMRegressor(random_effects=spec)
    mem = est.fit(df[["x", "x2"]], df["y"], groups=df[factors])
    dsk = MixedLMRegressor(random_effects=spec).fit(ddf[["x", "x2"]], ddf["y"], groups=ddf[factors])
    assert len(dsk.terms_) >= 2
    assert_same_fit(mem, dsk)
    # lazy prediction, with unseen levels of one factor
    new = simulate_crossed(n=600, seed=1)
    new["b"] = np.where(np.arange(600) % 4 == 0, "new", new["b"])
    dnew = dd.from_pandas(new, npartitions=3, sort=False)
    mean, std = dsk.predict(dnew[["x", "x2"]], groups=dnew[factors], return_std=True)
    assert isinstance(mean, dd.Series)
    mean_mem, std_mem = mem.predict(new[["x", "x2"]], groups=new[factors], return_std=True)
    np.testing.assert_allclose(mean.compute().to_numpy(), mean_mem, rtol=1e-7)
    np.testing.assert_allclose(std.compute().to_numpy(), std_mem, rtol=1e-6)


def test_variance_components_fit_equals_in_memory(client):
    df = simulate_crossed()
    ddf = dd.from_pandas(df, npartitions=N_PARTITIONS, sort=False)
    cols = ["x", "x2"]
    mem = MixedLMRegressor().fit(df[cols], df["y"], groups=df["a"], variance_components=df[["c"]])
    dsk = MixedLMRegressor().fit(
        ddf[cols], ddf["y"], groups=ddf["a"], variance_components=ddf[["c"]]
    )
    assert dsk.terms_ == ("(1 | a)", "(1 | a:c)")
    assert_same_fit(mem, dsk)
    crossed = MixedLMRegressor().fit(df[cols], df["y"], variance_components=df[["a", "b"]])
    crossed_dsk = MixedLMRegressor().fit(ddf[cols], ddf["y"], variance_components=ddf[["a", "b"]])
    assert_same_fit(crossed, crossed_dsk)


def test_several_terms_arrays(client):
    df = simulate_crossed()
    X, y = df[["x", "x2"]].to_numpy(), df["y"].to_numpy()
    G = np.column_stack([df["a"].to_numpy(), df["b"].str[1:].astype(int).to_numpy()])
    spec = "(1 | groups0) + (1 | groups1)"
    mem = MixedLMRegressor(random_effects=spec).fit(X, y, groups=G)
    Xd, yd = da.from_array(X, chunks=(700, 2)), da.from_array(y, chunks=700)
    Gd = da.from_array(G, chunks=(500, 1))  # split along its columns too
    dsk = MixedLMRegressor(random_effects=spec).fit(Xd, yd, groups=Gd)
    assert_same_fit(mem, dsk)
    pred = dsk.predict(Xd, groups=Gd)
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), mem.predict(X, groups=G), rtol=1e-8)


def test_dask_data_reads_label_names(client):
    df = simulate_crossed()
    ddf = dd.from_pandas(df, npartitions=N_PARTITIONS, sort=False)
    data = DaskData(ddf[["x"]], ddf["y"], ddf[["a", "b"]], ddf["c"])
    assert list(data.groups_names) == ["a", "b"]
    assert list(data.vc_names) == ["c"]
    assert data.groups_names.named and data.vc_names.named
    assert data.n_features == 1


def test_predict_rejects_non_finite_x_as_in_memory(client, data):
    df, _ = data
    cols = ["x0", "x1", "x2"]
    est = MixedLMRegressor().fit(df[cols], df["y"], groups=df["subject"])
    bad = df.copy()
    bad.loc[5, "x1"] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(bad[cols], groups=bad["subject"])
    dbad = dd.from_pandas(bad, npartitions=3, sort=False)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(dbad[cols], groups=dbad["subject"]).compute()


# -- weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "factors"),
    [(None, ["a"]), ("(1 + x | a) + (1 | b)", ["a", "b"])],
    ids=["one-factor", "crossed"],
)
def test_weighted_fit_equals_in_memory(client, spec, factors):
    df = simulate_crossed()
    rng = np.random.default_rng(5)
    df["w"] = rng.uniform(0.2, 3.0, len(df))
    df.loc[rng.random(len(df)) < 0.05, "w"] = 0.0  # some rows left out
    ddf = dd.from_pandas(df, npartitions=N_PARTITIONS, sort=False)
    params = {"random_effects": spec} if spec else {"random_slopes": ["x"]}
    groups = df[factors] if spec else df["a"]
    dgroups = ddf[factors] if spec else ddf["a"]
    mem = MixedLMRegressor(**params).fit(
        df[["x", "x2"]], df["y"], groups=groups, sample_weight=df["w"]
    )
    dsk = MixedLMRegressor(**params).fit(
        ddf[["x", "x2"]], ddf["y"], groups=dgroups, sample_weight=ddf["w"]
    )
    assert_same_fit(mem, dsk, rtol=1e-10)
    unweighted = MixedLMRegressor(**params).fit(df[["x", "x2"]], df["y"], groups=groups)
    assert abs(unweighted.log_likelihood_ - mem.log_likelihood_) > 1.0
    if spec is None:  # Dask Arrays, the weights aligned with X by rechunking
        arrays = MixedLMRegressor(random_slopes=[0]).fit(
            da.from_array(df[["x", "x2"]].to_numpy(), chunks=(700, 2)),
            da.from_array(df["y"].to_numpy(), chunks=700),
            groups=da.from_array(df["a"].to_numpy(), chunks=500),
            sample_weight=da.from_array(df["w"].to_numpy(), chunks=600),
        )
        gap = abs(arrays.log_likelihood_ - mem.log_likelihood_)
        assert gap <= 1e-10 * abs(mem.log_likelihood_)


def test_weights_errors_as_in_memory(client, data):
    df, ddf = data
    w = np.ones(len(df))
    w[[7, 2900]] = [-1.0, np.nan]
    dw = dd.from_pandas(pd.Series(w), npartitions=N_PARTITIONS, sort=False)
    with pytest.raises(ValueError, match=r"1 negative value\(s\), at rows \[7\]"):
        MixedLMRegressor().fit(ddf[["x0"]], ddf["y"], groups=ddf["subject"], sample_weight=dw)
    with pytest.raises(TypeError, match="sample_weight must be a Dask Series or a Dask Array"):
        MixedLMRegressor().fit(ddf[["x0"]], ddf["y"], groups=ddf["subject"], sample_weight=w)
    zero = dd.from_pandas(pd.Series(np.zeros(len(df))), npartitions=N_PARTITIONS, sort=False)
    with pytest.raises(ValueError, match="zero on every row"):
        MixedLMRegressor().fit(ddf[["x0"]], ddf["y"], groups=ddf["subject"], sample_weight=zero)
