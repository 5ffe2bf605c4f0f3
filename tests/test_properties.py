"""Invariances of the fit, checked with hypothesis on generated grouped datasets."""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sklmm import MixedLMRegressor, SingularFitWarning

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def grouped_data(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n_groups = draw(st.integers(4, 12))
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 9, n_groups)
    codes = np.repeat(np.arange(n_groups), sizes)
    n = len(codes)
    X = np.c_[rng.standard_normal(n), rng.uniform(0, 5, n)]
    b0 = rng.normal(0, draw(st.floats(0.5, 3.0)), n_groups)[codes]
    b1 = rng.normal(0, draw(st.floats(0.2, 1.0)), n_groups)[codes]
    y = 1.0 + (0.5 + b1) * X[:, 0] - 0.3 * X[:, 1] + b0 + rng.standard_normal(n)
    labels = np.array([f"s{k:02d}" for k in range(n_groups)])[codes]
    return X, y, labels, rng


def fit(X, y, g, **kw):
    est = MixedLMRegressor(random_slopes=[0], covariance_type="diagonal", **kw)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)  # boundary fits are legitimate
        return est.fit(X, y, groups=g)


def assert_same_fit(a, b, rtol=1e-6):
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, rel=1e-9, abs=1e-8)
    np.testing.assert_allclose(
        np.r_[a.intercept_, a.coef_], np.r_[b.intercept_, b.coef_], rtol=rtol, atol=1e-8
    )
    cov_a, cov_b = a.random_effects_cov_["group"], b.random_effects_cov_["group"]
    np.testing.assert_allclose(
        cov_a, cov_b, rtol=1e-4, atol=1e-8 * max(1.0, np.abs(cov_b.to_numpy()).max())
    )


@SETTINGS
@given(grouped_data())
def test_row_order_invariance(data):
    X, y, g, rng = data
    perm = rng.permutation(len(y))
    a, b = fit(X, y, g), fit(X[perm], y[perm], g[perm])
    assert_same_fit(a, b)
    pd.testing.assert_frame_equal(
        a.random_effects_["group"], b.random_effects_["group"], rtol=1e-4, atol=1e-6
    )


@SETTINGS
@given(grouped_data())
def test_group_relabelling(data):
    X, y, g, rng = data
    levels = np.unique(g)
    new = dict(zip(levels, rng.permutation(len(levels)) * 7 + 3, strict=True))
    relabelled = np.array([new[v] for v in g])
    a, b = fit(X, y, g), fit(X, y, relabelled)
    assert_same_fit(a, b)
    blups_a = a.random_effects_["group"]
    blups_b = b.random_effects_["group"].loc[[new[v] for v in blups_a.index]]
    np.testing.assert_allclose(blups_a.to_numpy(), blups_b.to_numpy(), rtol=1e-4, atol=1e-6)


@SETTINGS
@given(grouped_data(), st.floats(0.01, 100.0), st.floats(-50.0, 50.0))
def test_affine_response(data, scale, shift):
    X, y, g, _ = data
    a, b = fit(X, y, g), fit(X, scale * y + shift, g)
    np.testing.assert_allclose(b.coef_, scale * a.coef_, rtol=1e-5, atol=1e-8 * scale)
    assert b.intercept_ == pytest.approx(scale * a.intercept_ + shift, rel=1e-5, abs=1e-6 * scale)
    assert b.residual_variance_ == pytest.approx(scale**2 * a.residual_variance_, rel=1e-5)
    np.testing.assert_allclose(
        b.random_effects_cov_["group"],
        scale**2 * a.random_effects_cov_["group"],
        rtol=1e-3,
        atol=1e-8 * scale**2 * a.residual_variance_,
    )
    np.testing.assert_allclose(
        b.random_effects_["group"].to_numpy(),
        scale * a.random_effects_["group"].to_numpy(),
        rtol=1e-3,
        atol=1e-5 * scale,
    )


@SETTINGS
@given(grouped_data())
def test_fit_properties(data):
    X, y, g, _ = data
    copies = [a.copy() for a in (X, y, g)]
    est = fit(X, y, g)
    for before, after in zip(copies, (X, y, g), strict=True):
        np.testing.assert_array_equal(before, after)
    cov = est.random_effects_cov_["group"].to_numpy()
    np.testing.assert_array_equal(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() >= -1e-10 * max(1.0, np.abs(cov).max())
    assert est.residual_variance_ > 0
    unseen = est.predict(X, groups=np.full(len(y), "never-seen"))
    np.testing.assert_array_equal(unseen, est.predict(X))
    np.testing.assert_allclose(unseen, X @ est.coef_ + est.intercept_)


@SETTINGS
@given(grouped_data(), st.floats(1e-3, 1e3))
def test_rescaled_column(data, factor):
    """Rescaling the random-slope column rescales its coefficient, slope variance and BLUPs."""
    X, y, g, _ = data
    Xs = X.copy()
    Xs[:, 0] *= factor
    a, b = fit(X, y, g), fit(Xs, y, g)
    # REML: log|X'V^{-1}X| rises by 2 log(factor), so the log-likelihood falls by log(factor)
    assert b.log_likelihood_ == pytest.approx(a.log_likelihood_ - np.log(factor), abs=1e-6)
    assert b.coef_[0] == pytest.approx(a.coef_[0] / factor, rel=1e-5)
    scale = np.array([1.0, 1.0 / factor])
    np.testing.assert_allclose(
        b.random_effects_cov_["group"],
        a.random_effects_cov_["group"] * np.outer(scale, scale),
        rtol=1e-3,
        atol=1e-8 * a.residual_variance_ * max(1.0, 1.0 / factor**2),
    )
    np.testing.assert_allclose(
        b.random_effects_["group"].to_numpy(),
        a.random_effects_["group"].to_numpy() * scale,
        rtol=1e-3,
        atol=1e-5 * max(1.0, 1.0 / factor),
    )


@SETTINGS
@given(grouped_data())
def test_clone_refit_is_identical(data):
    from sklearn.base import clone

    X, y, g, _ = data
    a = fit(X, y, g)
    b = clone(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        b.fit(X, y, groups=g)
    assert b.log_likelihood_ == a.log_likelihood_
    np.testing.assert_array_equal(b.coef_, a.coef_)
    assert b.random_effects_cov_.keys() == a.random_effects_cov_.keys()
    for name in a.random_effects_cov_:
        pd.testing.assert_frame_equal(
            b.random_effects_cov_[name], a.random_effects_cov_[name], check_exact=True
        )
    assert b.random_effects_.keys() == a.random_effects_.keys()
    for name in a.random_effects_:
        pd.testing.assert_frame_equal(b.random_effects_[name], a.random_effects_[name])


@SETTINGS
@given(grouped_data(), st.floats(-1e4, 1e4))
def test_shifted_slope_column_unstructured(data, shift):
    """With a correlated (unstructured) covariance, shifting the random-slope column is a
    reparameterization: same likelihood, same predictions, same slope variance."""
    X, y, g, _ = data
    Xs = X.copy()
    Xs[:, 0] += shift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        a = MixedLMRegressor(random_slopes=[0]).fit(X, y, groups=g)
        b = MixedLMRegressor(random_slopes=[0]).fit(Xs, y, groups=g)
    assert b.log_likelihood_ == pytest.approx(a.log_likelihood_, abs=1e-6)
    np.testing.assert_allclose(
        b.predict(Xs, groups=g), a.predict(X, groups=g), rtol=1e-6, atol=1e-6 * np.abs(y).max()
    )
    assert b.random_effects_cov_["group"].iloc[1, 1] == pytest.approx(
        a.random_effects_cov_["group"].iloc[1, 1], rel=1e-4, abs=1e-8 * a.residual_variance_
    )
