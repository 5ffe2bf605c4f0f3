"""Observation weights: lme4's precision weights (``lmer(..., weights = w)``).

1. Against lme4 (``tests/reference/make_weighted.R``): one factor with correlated slopes
   and crossed factors, ML and REML.
2. Properties: equal weights, zero weights, scaled weights; integer weights against
   repeated rows.
3. Input: bad weights are errors that name the rows; the weights are never modified.
4. scikit-learn: routing of ``sample_weight`` to ``fit`` and ``score``.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from _reference import load_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_validate

from sklmm import MixedLMRegressor, NoGroupsWarning, ZeroWeightWarning
from sklmm._model import build_model
from sklmm._terms import encode_terms, label_sources, resolve_terms
from sklmm._validation import label_columns

WEIGHTED = {
    "sleepstudy_w_reml": {"random_slopes": ["Days"]},
    "sleepstudy_w_ml": {"random_slopes": ["Days"]},
    "penicillin_w_reml": {"random_effects": "(1 | plate) + (1 | sample)"},
    "penicillin_w_ml": {"random_effects": "(1 | plate) + (1 | sample)"},
}
CASES = {name: load_case(name) for name in WEIGHTED}


def _groups(case, frame):
    columns = case.spec["group_columns"]
    return frame[columns[0]] if len(columns) == 1 else frame[columns]


def _fit(case):
    est = MixedLMRegressor(reml=case.spec["reml"], **WEIGHTED[case.name])
    train = case.train
    return est.fit(
        case.X(train), case.y(train), groups=_groups(case, train), sample_weight=train["w"]
    )


@pytest.fixture(scope="module", params=list(WEIGHTED))
def case_fit(request):
    case = CASES[request.param]
    return case, _fit(case)


def _vector(values):
    return np.atleast_1d(np.asarray(values, dtype=float))


# -- 1. lme4 --------------------------------------------------------------------------------
def test_log_likelihood_and_fixed_effects(case_fit):
    # logLik(fit) (sum(log w) / 2 included), fixef(fit), sqrt(diag(vcov(fit)))
    case, est = case_fit
    ref = case.lme4
    assert est.converged_
    assert est.log_likelihood_ >= ref["logLik"] - 1e-6
    assert est.log_likelihood_ == pytest.approx(ref["logLik"], abs=1e-4)
    assert est.aic_ == pytest.approx(ref["AIC"], abs=2e-4)
    assert est.n_params_ == ref["logLik_df"]
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_], _vector(ref["fixef"]["values"]))
    np.testing.assert_allclose(
        np.sqrt(np.diag(est.fixed_effects_cov_)), _vector(ref["se_fixef"]), rtol=1e-4
    )


def test_variance_parameters(case_fit):
    # VarCorr(fit), sigma(fit)^2
    case, est = case_fit
    for term in case.lme4["random_terms"]:
        cov = est.random_effects_cov_[term["group"]].to_numpy()
        np.testing.assert_allclose(cov, np.atleast_2d(term["cov"]), rtol=1e-3)
    assert est.residual_variance_ == pytest.approx(case.lme4["sigma2"], rel=1e-4)


def test_blups_and_predictions(case_fit):
    # ranef(fit, condVar = TRUE); predict(fit, test, allow.new.levels = TRUE); re.form = NA
    case, est = case_fit
    for ranef in case.lme4["ranef"]:
        blups = est.random_effects_[ranef["group"]]
        levels = list(np.atleast_1d(ranef["levels"]))
        got = blups.loc[levels].to_numpy()
        np.testing.assert_allclose(
            got, np.asarray(ranef["values"], dtype=float).reshape(got.shape), rtol=1e-3, atol=1e-6
        )
        condvar = est.random_effects_condvar_[ranef["group"]]
        got = np.stack([condvar.loc[level].to_numpy() for level in levels])
        ref = np.asarray(ranef["condvar"], dtype=float).reshape(got.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-3)
    test = case.test
    predictions = case.lme4["predictions"]
    np.testing.assert_allclose(
        est.predict(case.X(test), groups=_groups(case, test)),
        _vector(predictions["conditional"]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        est.predict(case.X(test)), _vector(predictions["population"]), rtol=1e-6
    )


def test_scaled_residuals_of_the_summary(case_fit):
    # quantile(residuals(fit, type = "pearson", scaled = TRUE)): sqrt(w) (y - fitted) / sigma
    case, est = case_fit
    train = case.train
    args = (case.X(train), case.y(train), _groups(case, train))
    text = str(est.summary(*args, sample_weight=train["w"]))
    for value in case.lme4["scaled_residuals"]:
        assert f"{value:.4f}" in text
    with pytest.raises(ValueError, match="fitted with sample_weight"):
        est.summary(*args)


# -- 2. properties ------------------------------------------------------------------------
def _design(seed, n_a, n_b, slope):
    rng = np.random.default_rng(seed)
    n = 6 * n_a
    a = np.r_[np.arange(n_a), rng.integers(0, n_a, n - n_a)]
    b = rng.integers(0, n_b, n)
    x = rng.normal(size=n)
    y = (
        1.0
        + 0.5 * x
        + rng.normal(size=n_a)[a]
        + slope * rng.normal(size=n_a)[a] * x
        + 0.7 * rng.normal(size=n_b)[b]
        + rng.normal(size=n)
    )
    X = pd.DataFrame({"x": x})
    G = pd.DataFrame({"a": a, "b": b})
    return X, y, G, rng


MODELS = {
    "one-factor-slope": ({"random_slopes": ["x"]}, ["a"]),
    "crossed": ({"random_effects": "(1 | a) + (1 | b)"}, ["a", "b"]),
}


def _weighted_fit(model, reml, X, y, G, w):
    params, factors = MODELS[model]
    groups = G[factors[0]] if len(factors) == 1 else G[factors]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular or zero-weight levels: compared below
        return MixedLMRegressor(reml=reml, **params).fit(X, y, groups=groups, sample_weight=w)


def _assert_same_estimates(a, b, rtol=1e-5):
    np.testing.assert_allclose(
        np.r_[a.intercept_, a.coef_], np.r_[b.intercept_, b.coef_], rtol=rtol
    )
    for name, cov in a.random_effects_cov_.items():
        np.testing.assert_allclose(
            b.random_effects_cov_[name].to_numpy(),
            cov.to_numpy(),
            rtol=1e-3,
            atol=1e-6 * a.residual_variance_,
        )


def _assert_sigma2_scaled_only(a, b, c):
    """``b`` (weights ``c`` times those of ``a``) has ``a``'s estimates and likelihood.

    ``sigma2`` is the residual variance of a row of weight 1, so it is multiplied by
    ``c``: the residual variance of every row, ``sigma2 / w_i``, is unchanged, and so is
    the likelihood, lme4's ``sum(log w) / 2`` term included.
    """
    _assert_same_estimates(a, b)
    assert b.residual_variance_ == pytest.approx(c * a.residual_variance_, rel=1e-4)
    assert b.log_likelihood_ == pytest.approx(a.log_likelihood_, abs=1e-6)


PROPERTY_SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 10_000),
    c=st.floats(0.05, 20.0),
    model=st.sampled_from(list(MODELS)),
    reml=st.booleans(),
)
def test_equal_weights_give_the_unweighted_estimates(seed, c, model, reml):
    X, y, G, _ = _design(seed, 12, 6, 0.5)
    plain = _weighted_fit(model, reml, X, y, G, None)
    equal = _weighted_fit(model, reml, X, y, G, np.full(len(y), c))
    _assert_sigma2_scaled_only(plain, equal, c)


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 10_000),
    c=st.floats(0.05, 20.0),
    model=st.sampled_from(list(MODELS)),
    reml=st.booleans(),
)
def test_scaled_weights_scale_sigma2_only(seed, c, model, reml):
    # Weights c w: the residual variance of row i, sigma2 / (c w_i), is unchanged, so
    # sigma2 (that of a row of weight 1) is multiplied by c; beta and Sigma are not.
    X, y, G, rng = _design(seed, 12, 6, 0.5)
    w = rng.uniform(0.2, 5.0, len(y))
    a = _weighted_fit(model, reml, X, y, G, w)
    b = _weighted_fit(model, reml, X, y, G, c * w)
    _assert_sigma2_scaled_only(a, b, c)


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 10_000), model=st.sampled_from(list(MODELS)), reml=st.booleans())
def test_zero_weight_equals_dropping_the_row(seed, model, reml):
    X, y, G, rng = _design(seed, 12, 6, 0.5)
    w = rng.uniform(0.2, 5.0, len(y))
    zero = rng.random(len(y)) < 0.2
    zero[:12] = False  # every level of a keeps a row
    w[zero] = 0.0
    keep = ~zero
    a = _weighted_fit(model, reml, X, y, G, w)
    b = _weighted_fit(model, reml, X[keep], y[keep], G[keep], w[keep])
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, rel=1e-9)
    _assert_same_estimates(a, b, rtol=1e-7)
    assert a.residual_variance_ == pytest.approx(b.residual_variance_, rel=1e-6)


def test_a_level_with_only_zero_weights_is_left_out_and_said_so():
    X, y, G, rng = _design(0, 12, 6, 0.0)
    w = rng.uniform(0.5, 2.0, len(y))
    w[G["a"].to_numpy() == 3] = 0.0
    with pytest.warns(ZeroWeightWarning, match=r"\{'a': \[3\]\}"):
        est = MixedLMRegressor().fit(X, y, groups=G["a"], sample_weight=w)
    assert 3 not in est.random_effects_["a"].index
    keep = w > 0
    dropped = MixedLMRegressor().fit(X[keep], y[keep], groups=G["a"][keep], sample_weight=w[keep])
    assert est.log_likelihood_ == pytest.approx(dropped.log_likelihood_, rel=1e-12)
    # a left-out level is a new level at prediction: the population prediction
    rows = G["a"].to_numpy() == 3
    np.testing.assert_allclose(
        est.predict(X[rows], groups=G["a"][rows]), est.predict(X[rows]), rtol=1e-12
    )


def _stats(X, y, groups, weights, reml=True):
    n = len(y)
    cols = label_columns(groups, "groups", n)
    terms = resolve_terms(
        None, np.array([0]), "unstructured", ["x"], cols, label_columns(None, "", n)
    )
    codes = encode_terms(terms, label_sources(cols, {}))
    model = build_model(
        np.asarray(X, dtype=float),
        np.asarray(y, dtype=float),
        terms,
        codes,
        fit_intercept=True,
        reml=reml,
        feature_names=["x"],
        label_columns={"groups": list(cols), "variance_components": []},
        weights=weights,
    )
    return model


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_integer_weights_and_repeated_rows(reml):
    """Integer weights are precision weights, not frequencies.

    Weight k and k copies of a row give the same cross-products, so the same beta and
    BLUPs at given variance parameters. The two profiled criteria differ only in the
    number of residuals they count, n rows against N = sum(w) copies (n - p against
    N - p for REML), and in lme4's constant -sum(log w): so the variance estimates
    differ. Without random effects, beta is the same and n sigma2_w = N sigma2_rep (ML),
    (n - p) sigma2_w = (N - p) sigma2_rep (REML).
    """
    X, y, G, rng = _design(1, 10, 5, 0.5)
    k = rng.integers(1, 4, len(y))
    rep = np.repeat(np.arange(len(y)), k)
    n, N, p = len(y), int(k.sum()), 2
    weighted = _stats(X, y, G["a"], k.astype(float), reml)
    repeated = _stats(X.iloc[rep], y[rep], G["a"].iloc[rep], None, reml)
    # the same cross-products (each model rescales its columns by their root mean square
    # over its own rows: undone here)
    s_w, s_r = weighted.scales[0], repeated.scales[0]
    np.testing.assert_allclose(
        weighted.stats.ZtZ[0] * np.outer(s_w, s_w), repeated.stats.ZtZ[0] * np.outer(s_r, s_r)
    )
    np.testing.assert_allclose(
        weighted.stats.ZtXy[0] * s_w[:, None], repeated.stats.ZtXy[0] * s_r[:, None]
    )
    np.testing.assert_allclose(weighted.stats.XytXy, repeated.stats.XytXy, rtol=1e-10, atol=1e-10)
    assert (weighted.n, repeated.n) == (n, N)
    # the same beta, BLUPs and penalized residual sum of squares at the same relative
    # covariance Sigma / sigma2, and criteria that differ only in the count
    psi = np.array([[0.6, 0.1], [0.1, 0.2]])
    results = []
    for model, scale in ((weighted, s_w), (repeated, s_r)):
        crit = model.criterion()
        theta = model.terms[0].structure.theta_from_psi(psi * np.outer(scale, scale))
        b, _ = crit.conditional_modes(theta)
        ev = crit(theta)
        results.append((ev.beta, b / scale, ev.sigma2 * crit.k, ev.deviance))
    (beta_w, b_w, r2_w, d_w), (beta_r, b_r, r2_r, d_r) = results
    np.testing.assert_allclose(beta_w, beta_r, rtol=1e-10)
    np.testing.assert_allclose(b_w, b_r, rtol=1e-9, atol=1e-12)
    assert r2_w == pytest.approx(r2_r, rel=1e-10)
    k_w, k_r = (n - p, N - p) if reml else (n, N)

    def count_part(k):
        return k * (1.0 + np.log(2.0 * np.pi * r2_w / k))

    assert d_r == pytest.approx(
        d_w + np.log(k).sum() - count_part(k_w) + count_part(k_r), rel=1e-12
    )
    # so the fits differ: precision weights are not frequencies
    fit_w = MixedLMRegressor(random_slopes=["x"], reml=reml).fit(
        X, y, groups=G["a"], sample_weight=k
    )
    fit_r = MixedLMRegressor(random_slopes=["x"], reml=reml).fit(
        X.iloc[rep], y[rep], groups=G["a"].iloc[rep]
    )
    assert fit_w.residual_variance_ != pytest.approx(fit_r.residual_variance_, rel=1e-3)
    # without random effects: the same beta, sigma2 in the ratio of the counts
    with pytest.warns(NoGroupsWarning):
        ols_w = MixedLMRegressor(reml=reml).fit(X, y, sample_weight=k)
    with pytest.warns(NoGroupsWarning):
        ols_r = MixedLMRegressor(reml=reml).fit(X.iloc[rep], y[rep])
    np.testing.assert_allclose(ols_w.coef_, ols_r.coef_, rtol=1e-10)
    assert ols_w.residual_variance_ * k_w == pytest.approx(
        ols_r.residual_variance_ * k_r, rel=1e-10
    )


# -- 3. input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (lambda n: -np.ones(n), r"180 negative value\(s\), at rows \[0, 1, 2, 3, 4\]"),
        (lambda n: np.r_[np.nan, np.ones(n - 1)], r"1 NaN value\(s\), at rows \[0\]"),
        (lambda n: np.r_[np.ones(n - 1), np.inf], r"1 infinite value\(s\), at rows \[179\]"),
        (lambda n: np.ones(n - 1), "sample_weight has 179 entries but X has 180 rows"),
        (lambda n: np.ones((n, 2)), r"must be 1-D, got an array of shape \(180, 2\)"),
        (lambda n: 2.0, "got a scalar"),
        (lambda n: "w", "is a string"),
        (lambda n: np.zeros(n), "zero on every row"),
        (lambda n: np.array(["a"] * n), "must be numbers"),
    ],
    ids=["negative", "nan", "inf", "length", "2-d", "scalar", "string", "all-zero", "text"],
)
def test_bad_weights_are_clear_errors(weights, message):
    case = CASES["sleepstudy_w_reml"]
    df = pd.concat([case.train, case.test])
    est = MixedLMRegressor()
    with pytest.raises(ValueError, match=message):
        est.fit(case.X(df), case.y(df), groups=df["Subject"], sample_weight=weights(len(df)))
    assert not hasattr(est, "coef_")


def test_weights_are_not_modified():
    case = CASES["sleepstudy_w_reml"]
    train = case.train
    w = train["w"].copy()
    w.iloc[:3] = 0.0
    before = w.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MixedLMRegressor().fit(
            case.X(train), case.y(train), groups=train["Subject"], sample_weight=w
        )
    pd.testing.assert_series_equal(w, before)
    as_list = MixedLMRegressor().fit(
        case.X(train), case.y(train), groups=train["Subject"], sample_weight=list(w)
    )
    assert as_list.log_likelihood_ == pytest.approx(
        MixedLMRegressor()
        .fit(case.X(train), case.y(train), groups=train["Subject"], sample_weight=w.to_numpy())
        .log_likelihood_
    )


# -- 4. scikit-learn ---------------------------------------------------------------------
def test_sample_weight_is_routed_to_fit_and_score():
    case = CASES["sleepstudy_w_reml"]
    df = case.train
    X, y, g, w = case.X(df), case.y(df), df["Subject"], df["w"].to_numpy()
    cv = KFold(3, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        est = (
            MixedLMRegressor(random_slopes=["Days"])
            .set_fit_request(groups=True, sample_weight=True)
            .set_score_request(groups=True, sample_weight=True)
        )
        result = cross_validate(
            est, X, y, cv=cv, params={"groups": g, "sample_weight": w}, return_estimator=True
        )
    for k, (train, test) in enumerate(cv.split(X)):
        direct = MixedLMRegressor(random_slopes=["Days"]).fit(
            X.iloc[train], y[train], groups=g.iloc[train], sample_weight=w[train]
        )
        assert result["estimator"][k].log_likelihood_ == pytest.approx(direct.log_likelihood_)
        expected = r2_score(
            y[test], direct.predict(X.iloc[test], groups=g.iloc[test]), sample_weight=w[test]
        )
        assert result["test_score"][k] == pytest.approx(expected)


def test_likelihood_ratio_test_needs_the_same_weights():
    from sklmm import likelihood_ratio_test

    case = CASES["sleepstudy_w_ml"]
    train = case.train
    X, y, g, w = case.X(train), case.y(train), train["Subject"], train["w"]
    small = MixedLMRegressor(reml=False).fit(X, y, groups=g, sample_weight=w)
    large = MixedLMRegressor(reml=False, random_slopes=["Days"]).fit(
        X, y, groups=g, sample_weight=w
    )
    table = likelihood_ratio_test(small, large)
    assert table.loc["large", "logLik"] == pytest.approx(case.lme4["logLik"], abs=1e-4)
    unweighted = MixedLMRegressor(reml=False).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="sample_weight must be identical"):
        likelihood_ratio_test(unweighted, large)


def test_an_interaction_level_with_only_zero_weights_is_said_so():
    X, y, G, rng = _design(2, 12, 4, 0.0)
    w = rng.uniform(0.5, 2.0, len(y))
    a0, b0 = int(G["a"].iloc[0]), int(G["b"].iloc[0])
    cell = (G["a"] == a0) & (G["b"] == b0)
    assert (G["a"] == a0).sum() > cell.sum()  # the level of a keeps rows
    w[cell.to_numpy()] = 0.0
    spec = "(1 | a) + (1 | a:b)"
    lost = rf"\{{'a:b': \[\({a0}, {b0}\)\]\}}"
    with pytest.warns(ZeroWeightWarning, match=lost):
        est = MixedLMRegressor(random_effects=spec).fit(X, y, groups=G, sample_weight=w)
    assert (a0, b0) not in est.random_effects_["a:b"].index
    dd = pytest.importorskip("dask.dataframe")
    import dask

    frame = pd.concat([X, G], axis=1).assign(y=y, w=w)
    ddf = dd.from_pandas(frame, npartitions=3, sort=False)
    with dask.config.set(scheduler="synchronous"):
        with pytest.warns(ZeroWeightWarning, match=lost):
            dsk = MixedLMRegressor(random_effects=spec).fit(
                ddf[["x"]], ddf["y"], groups=ddf[["a", "b"]], sample_weight=ddf["w"]
            )
    assert dsk.log_likelihood_ == pytest.approx(est.log_likelihood_, rel=1e-10)


def test_sample_weight_through_a_pipeline_in_a_grid_search():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    case = CASES["sleepstudy_w_reml"]
    df = case.train
    X, y, g, w = case.X(df), case.y(df), df["Subject"], df["w"].to_numpy()
    cv = KFold(3, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        est = MixedLMRegressor().set_fit_request(groups=True, sample_weight=True)
        est.set_score_request(groups=True, sample_weight=True)
        scaler = StandardScaler().set_fit_request(sample_weight=False)
        pipe = make_pipeline(scaler.set_output(transform="pandas"), est)
        search = GridSearchCV(pipe, {"mixedlmregressor__reml": [True, False]}, cv=cv)
        search.fit(X, y, groups=g, sample_weight=w)
    best = search.best_estimator_[-1]
    direct = MixedLMRegressor(reml=best.reml).fit(
        StandardScaler().fit_transform(X), y, groups=g, sample_weight=w
    )
    assert best.log_likelihood_ == pytest.approx(direct.log_likelihood_, rel=1e-10)


def test_summary_weights_must_match_the_fit():
    case = CASES["sleepstudy_w_reml"]
    train = case.train
    args = (case.X(train), case.y(train), train["Subject"])
    plain = MixedLMRegressor().fit(*args)
    with pytest.raises(ValueError, match="fitted without weights"):
        plain.summary(*args, sample_weight=train["w"])
    with pytest.raises(ValueError, match="pass it with X, y and groups"):
        plain.summary(sample_weight=train["w"])
