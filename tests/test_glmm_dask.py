"""GLMMs from Dask collections: the same fit as in memory, pass by pass from partitions."""

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedGLMClassifier, MixedGLMRegressor

dd = pytest.importorskip("dask.dataframe")
da = pytest.importorskip("dask.array")


def binary(seed=0, n_groups=30, per=20):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=len(codes))
    item = rng.integers(0, 12, len(codes))
    slope = rng.normal(0, 0.7, n_groups)[codes] * x
    eta = (
        -0.3 + 0.8 * x + rng.normal(0, 0.9, n_groups)[codes] + rng.normal(0, 0.5, 12)[item] + slope
    )
    y = (rng.random(len(codes)) < 1 / (1 + np.exp(-eta))).astype(int)
    g = pd.Series([f"g{c}" for c in codes])
    return pd.DataFrame({"x": x, "y": y, "g": g, "item": item.astype(str)})


@pytest.mark.parametrize(
    "params",
    [{}, {"random_slopes": ["x"]}, {"n_agq": 5}, {"link": "probit"}],
    ids=["intercept", "slope", "agq", "probit"],
)
def test_one_term_equals_in_memory(params):
    df = binary()
    frame = dd.from_pandas(df, npartitions=3)
    mem = MixedGLMClassifier(**params).fit(df[["x"]], df["y"], groups=df["g"])
    dk = MixedGLMClassifier(**params).fit(frame[["x"]], frame["y"], groups=frame["g"])
    np.testing.assert_allclose(dk.log_likelihood_, mem.log_likelihood_, rtol=1e-10)
    np.testing.assert_allclose(dk.fixed_effects_, mem.fixed_effects_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dk.fixed_effects_cov_, mem.fixed_effects_cov_, rtol=1e-5)
    proba = dk.predict_proba(frame[["x"]], groups=frame["g"])
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), mem.predict_proba(df[["x"]], df["g"]), atol=1e-9)
    labels = dk.predict(frame[["x"]], frame["g"]).compute()
    np.testing.assert_array_equal(labels.to_numpy(), mem.predict(df[["x"]], df["g"]))


def test_crossed_terms_equal_in_memory():
    df = binary(seed=1)
    frame = dd.from_pandas(df, npartitions=4)
    spec = "(1 | g) + (1 | item)"
    mem = MixedGLMClassifier(random_effects=spec).fit(df[["x"]], df["y"], groups=df[["g", "item"]])
    dk = MixedGLMClassifier(random_effects=spec).fit(
        frame[["x"]], frame["y"], groups=frame[["g", "item"]]
    )
    # In memory the exact gradient (dense, several terms), from Dask central differences:
    # the same optimum, reached to each optimizer's precision.
    np.testing.assert_allclose(dk.log_likelihood_, mem.log_likelihood_, rtol=1e-10)
    np.testing.assert_allclose(dk.variance_components_, mem.variance_components_, rtol=1e-5)
    np.testing.assert_allclose(dk.fixed_effects_, mem.fixed_effects_, rtol=1e-5)


def test_poisson_with_offset_and_arrays():
    rng = np.random.default_rng(2)
    n, m = 600, 20
    codes = np.repeat(np.arange(m), n // m)
    x = rng.normal(size=n)
    off = np.log(rng.uniform(0.5, 3, n))
    y = rng.poisson(np.exp(0.1 + 0.4 * x + rng.normal(0, 0.5, m)[codes] + off))
    mem = MixedGLMRegressor().fit(x[:, None], y, groups=codes, offset=off)
    chunks = 150
    dk = MixedGLMRegressor().fit(
        da.from_array(x[:, None], chunks=(chunks, 1)),
        da.from_array(y, chunks=chunks),
        groups=da.from_array(codes, chunks=chunks),
        offset=da.from_array(off, chunks=chunks),
    )
    np.testing.assert_allclose(dk.log_likelihood_, mem.log_likelihood_, rtol=1e-10)
    pred = dk.predict(
        da.from_array(x[:, None], chunks=chunks),
        da.from_array(codes, chunks=chunks),
        offset=da.from_array(off, chunks=chunks),
    )
    np.testing.assert_allclose(pred.compute(), mem.predict(x[:, None], codes, offset=off))


def test_dask_errors():
    df = binary()
    df["label"] = np.where(df["y"] == 1, "yes", "no")
    frame = dd.from_pandas(df, npartitions=2)
    with pytest.raises(ValueError, match=r"non-numeric|0/1"):
        MixedGLMClassifier().fit(frame[["x"]], frame["label"], groups=frame["g"])
    with pytest.raises(ValueError, match="0/1"):
        MixedGLMClassifier().fit(frame[["x"]], frame["y"] * 2, groups=frame["g"])
    with pytest.raises(ValueError, match="partitions"):
        MixedGLMRegressor(family="binomial").fit(
            frame[["x"]],
            frame["y"],
            groups=frame["g"],
            offset=dd.from_pandas(df["x"], npartitions=3),
        )
