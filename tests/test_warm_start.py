"""warm_start=True (scikit-learn's convention): a refit starts at the last estimates.

A refit on the same data converges in at most 2 iterations, to the estimates of a cold
start (issue 18); a refit on other data or another structure still reaches the optimum.
"""

import numpy as np
import pytest

from sklmm import MixedGLMClassifier, MixedGLMRegressor, MixedLMRegressor
from sklmm.datasets import load_cbpp, load_penicillin, load_sleepstudy


@pytest.mark.parametrize(
    "params", [{}, {"random_slopes": ["Days"]}, {"random_slopes": ["Days"], "reml": False}]
)
def test_linear_refit_converges_at_once(params):
    df = load_sleepstudy()
    X, y, g = df[["Days"]], df["Reaction"], df["Subject"]
    cold = MixedLMRegressor(**params).fit(X, y, groups=g)
    warm = MixedLMRegressor(warm_start=True, **params).fit(X, y, groups=g)
    assert warm.n_iter_ == cold.n_iter_  # nothing to start from: a cold fit
    warm.fit(X, y, groups=g)
    assert warm.n_iter_ <= 2
    np.testing.assert_allclose(warm.log_likelihood_, cold.log_likelihood_, rtol=1e-12)
    np.testing.assert_allclose(warm.coef_, cold.coef_, rtol=1e-8)
    for name, cov in cold.random_effects_cov_.items():
        np.testing.assert_allclose(warm.random_effects_cov_[name], cov, rtol=1e-6)


def test_linear_warm_start_on_other_data_and_structures():
    df = load_sleepstudy()
    X, y, g = df[["Days"]], df["Reaction"], df["Subject"]
    est = MixedLMRegressor(warm_start=True, random_slopes=["Days"]).fit(X, y, groups=g)
    half = slice(0, 120)
    est.fit(X.iloc[half], y.iloc[half], groups=g.iloc[half])
    cold = MixedLMRegressor(random_slopes=["Days"]).fit(
        X.iloc[half], y.iloc[half], groups=g.iloc[half]
    )
    np.testing.assert_allclose(est.log_likelihood_, cold.log_likelihood_, rtol=1e-10)
    est.set_params(random_slopes=None).fit(X, y, groups=g)  # another structure: cold
    cold = MixedLMRegressor().fit(X, y, groups=g)
    assert est.n_iter_ == cold.n_iter_


def test_linear_crossed_refit():
    df = load_penicillin()
    spec = "(1 | plate) + (1 | sample)"
    cold = MixedLMRegressor(random_effects=spec).fit(
        df[[]], df["diameter"], groups=df[["plate", "sample"]]
    )
    est = MixedLMRegressor(random_effects=spec, warm_start=True)
    est.fit(df[[]], df["diameter"], groups=df[["plate", "sample"]])
    est.fit(df[[]], df["diameter"], groups=df[["plate", "sample"]])
    assert est.n_iter_ <= 2
    np.testing.assert_allclose(est.log_likelihood_, cold.log_likelihood_, rtol=1e-12)


def test_glmm_refit_converges_at_once():
    df = load_cbpp()
    formula = "I(incidence / size) ~ period + (1 | herd)"
    cold = MixedGLMRegressor(family="binomial", formula=formula).fit(df, sample_weight=df["size"])
    est = MixedGLMRegressor(family="binomial", formula=formula, warm_start=True)
    est.fit(df, sample_weight=df["size"]).fit(df, sample_weight=df["size"])
    assert est.n_iter_ <= 2
    np.testing.assert_allclose(est.log_likelihood_, cold.log_likelihood_, rtol=1e-10)
    np.testing.assert_allclose(est.fixed_effects_, cold.fixed_effects_, rtol=1e-5)
    np.testing.assert_allclose(est.fixed_effects_cov_, cold.fixed_effects_cov_, rtol=1e-4)


def test_glmm_classifier_warm_start_on_other_rows():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 20)
    x = rng.normal(size=600)
    y = rng.random(600) < 1 / (1 + np.exp(-(x + rng.normal(size=30)[g])))
    est = MixedGLMClassifier(warm_start=True).fit(x[:, None], y, groups=g)
    est.fit(x[:400, None], y[:400], groups=g[:400])  # fewer levels: no modes carried over
    cold = MixedGLMClassifier().fit(x[:400, None], y[:400], groups=g[:400])
    np.testing.assert_allclose(est.log_likelihood_, cold.log_likelihood_, rtol=1e-9)


def test_warm_refit_of_a_boundary_fit_converges_at_once():
    """A singular fit's refit does not redo the other starts of the first fit."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    y = 1 + x + rng.normal(size=20)[g] + rng.normal(size=200)  # no random slope
    est = MixedLMRegressor(random_slopes=[0], warm_start=True)
    with pytest.warns(UserWarning):  # SingularFitWarning
        est.fit(x[:, None], y, groups=g)
        est.fit(x[:, None], y, groups=g)
    assert est.n_iter_ <= 2
