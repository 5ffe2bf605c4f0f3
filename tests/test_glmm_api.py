"""The GLMM estimators as scikit-learn citizens: checks, routing, formulas, bad input.

1. scikit-learn's estimator checks (expected failures with reasons).
2. routing of ``groups``: Pipeline, GridSearchCV with a classification scorer,
   ``cross_val_predict(method="predict_proba")``.
3. prediction: classes, new levels, offsets, ``return_std``, formulas, pickling.
4. properties: binomial proportions with trials = the expanded 0/1 rows; an offset equals
   a known coefficient; the Laplace log-likelihood of a GLM equals the exact one.
5. bad input: errors that name the problem, and warnings (separation, no groups).
"""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, PoissonRegressor
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklmm import (
    MixedGLMClassifier,
    MixedGLMRegressor,
    NoGroupsWarning,
    SeparationWarning,
    make_group_scorer,
)
from sklmm.datasets import load_cbpp


def binary_data(n_groups=40, per=25, seed=0, slope_sd=0.0):
    rng = np.random.default_rng(seed)
    g = np.repeat([f"s{i:02d}" for i in range(n_groups)], per)
    codes = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=len(g))
    b0 = rng.normal(0, 1.0, n_groups)[codes]
    b1 = rng.normal(0, slope_sd, n_groups)[codes] if slope_sd else 0.0
    eta = -0.4 + 0.9 * x + b0 + b1 * x
    y = np.where(rng.random(len(g)) < 1 / (1 + np.exp(-eta)), "pass", "fail")
    return pd.DataFrame({"x": x}), pd.Series(y, name="y"), pd.Series(g, name="school")


def count_data(n_groups=30, per=20, seed=1):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_groups), per)
    g = pd.Series([f"site{c}" for c in codes], name="site")
    x = rng.normal(size=len(codes))
    exposure = rng.uniform(0.5, 4, len(codes))
    eta = 0.2 + 0.5 * x + rng.normal(0, 0.5, n_groups)[codes] + np.log(exposure)
    return pd.DataFrame({"x": x}), rng.poisson(np.exp(eta)), g, np.log(exposure)


# ---------------------------------------------------------------------------------------
# 1. estimator checks
# ---------------------------------------------------------------------------------------
CHECKED = [
    MixedGLMClassifier(),
    MixedGLMClassifier(link="probit", random_slopes=[0]),
    MixedGLMRegressor(family="poisson"),
]


def expected_failed_checks(estimator):
    failures = {
        "check_sample_weight_equivalence_on_dense_data": (
            "The check fits 30 columns to at most 15 distinct rows, more fixed effects than "
            "rows, which fit refuses. test_binomial_trials_equal_expanded_rows checks that "
            "integer weights are repeated rows."
        ),
    }
    if estimator.random_slopes is None:
        failures["check_estimators_empty_data_messages"] = (
            "An intercept-only model (lme4 y ~ 1 + (1 | g)) is fitted from an X with zero "
            "columns, so X without features is valid input and fit does not raise."
        )
    return failures


# The checks call fit without groups (NoGroupsWarning by design) and on separable data.
@pytest.mark.filterwarnings("ignore::sklmm.NoGroupsWarning")
@pytest.mark.filterwarnings("ignore::sklmm.SeparationWarning")
@pytest.mark.filterwarnings("ignore::sklmm.MixedLMConvergenceWarning")
@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
@pytest.mark.filterwarnings("ignore:non-integer counts")  # the checks' positive targets
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------
# 2. routing
# ---------------------------------------------------------------------------------------
def test_pipeline_routes_groups(routing):
    X, y, g = binary_data()
    clf = MixedGLMClassifier().set_fit_request(groups=True).set_predict_proba_request(groups=True)
    pipe = make_pipeline(StandardScaler(), clf).fit(X, y, groups=g)
    direct = MixedGLMClassifier().fit(StandardScaler().fit_transform(X), y, groups=g)
    np.testing.assert_allclose(
        pipe.predict_proba(X, groups=g),
        direct.predict_proba(StandardScaler().fit_transform(X), groups=g),
        rtol=1e-6,
    )


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
@pytest.mark.parametrize("cv", [GroupKFold(4), KFold(4, shuffle=True, random_state=0)])
def test_grid_search_with_classification_scorer(routing, cv):
    """Grid search over link and random slope with a group-aware log-loss scorer."""
    X, y, g = binary_data(slope_sd=0.8, seed=3)
    scorer = make_group_scorer(log_loss, greater_is_better=False, response_method="predict_proba")
    clf = MixedGLMClassifier().set_fit_request(groups=True).set_predict_proba_request(groups=True)
    grid = {"link": ["logit", "probit"], "random_slopes": [None, ["x"]]}
    search = GridSearchCV(clf, grid, cv=cv, scoring=scorer).fit(X, y, groups=g)
    # The same scores by hand, fold by fold.
    for i, params in enumerate(search.cv_results_["params"]):
        scores = []
        for train, test in cv.split(X, y, g):
            est = MixedGLMClassifier(**params).fit(
                X.iloc[train], y.iloc[train], groups=g.iloc[train]
            )
            proba = est.predict_proba(X.iloc[test], groups=g.iloc[test])
            scores.append(-log_loss(y.iloc[test], proba))
        np.testing.assert_allclose(search.cv_results_["mean_test_score"][i], np.mean(scores))
    if isinstance(cv, KFold):  # seen groups: the conditional predictions pick the slope
        assert search.best_params_["random_slopes"] == ["x"]


def test_string_scorer_runs_with_population_predictions(routing):
    X, y, g = binary_data()
    clf = MixedGLMClassifier().set_fit_request(groups=True)
    search = GridSearchCV(clf, {"link": ["logit", "probit"]}, cv=GroupKFold(3), scoring="roc_auc")
    search.fit(X, y, groups=g)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_cross_val_predict_proba(routing):
    X, y, g = binary_data()
    clf = MixedGLMClassifier().set_fit_request(groups=True)
    cv = GroupKFold(4)
    proba = cross_val_predict(clf, X, y, cv=cv, method="predict_proba", params={"groups": g})
    assert proba.shape == (len(y), 2)
    for train, test in cv.split(X, y, g):
        est = MixedGLMClassifier().fit(X.iloc[train], y.iloc[train], groups=g.iloc[train])
        np.testing.assert_allclose(proba[test], est.predict_proba(X.iloc[test]), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# 3. prediction
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier():
    X, y, g = binary_data()
    return MixedGLMClassifier().fit(X, y, groups=g), (X, y, g)


def test_classes_and_predictions(classifier):
    clf, (X, y, g) = classifier
    assert list(clf.classes_) == ["fail", "pass"]
    proba = clf.predict_proba(X, groups=g)
    eta = clf.decision_function(X, groups=g)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-eta)))
    np.testing.assert_array_equal(clf.predict(X, groups=g), np.where(eta > 0, "pass", "fail"))
    assert 0.5 < clf.score(X, y, groups=g) <= 1.0
    with pytest.warns(NoGroupsWarning):
        clf.score(X, y)


def test_new_levels_get_population_predictions(classifier):
    clf, (X, _y, g) = classifier
    new = pd.Series(["new"] * len(X), name="school")
    np.testing.assert_allclose(clf.decision_function(X, new), clf.decision_function(X))
    seen = clf.decision_function(X, g)
    blups = clf.random_effects_["school"]["(Intercept)"]
    np.testing.assert_allclose(seen - clf.decision_function(X), blups.loc[g].to_numpy())


def test_return_std_on_the_link_scale(classifier):
    clf, (X, _y, g) = classifier
    eta, sd = clf.linear_predictor(X, g, return_std=True)
    np.testing.assert_allclose(eta, clf.decision_function(X, g))
    _, sd_new = clf.linear_predictor(X, pd.Series(["new"] * len(X), name="school"), return_std=True)
    assert np.all(sd > 0) and np.all(sd_new > sd)
    # a new level (or no groups) adds the random intercept's variance to that of x'beta
    var_re = clf.variance_components_["school"]
    _, sd_pop = clf.linear_predictor(X, return_std=True)
    np.testing.assert_allclose(sd_new, sd_pop)
    Xe = np.column_stack([np.ones(len(X)), X])
    var_fixed = np.einsum("ij,jk,ik->i", Xe, clf._fitted.fixed_cov_conditional, Xe)
    np.testing.assert_allclose(sd_new**2, var_fixed + var_re, rtol=1e-8)


def test_pickle_round_trip(classifier):
    clf, (X, _y, g) = classifier
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X, groups=g), clf.predict_proba(X, groups=g))


def test_summary_text(classifier):
    clf, _ = classifier
    text = str(clf.summary())
    assert "Laplace Approximation" in text and "Family: binomial  ( logit )" in text
    assert "school" in text and "Residual" not in text and "z value" in text


def test_poisson_offset_and_formula():
    X, y, g, off = count_data()
    est = MixedGLMRegressor().fit(X, y, groups=g, offset=off)
    data = X.assign(y=y, site=g, off=off)
    # the same model by formula; the offset as fit metadata
    by_formula = MixedGLMRegressor(formula="y ~ x + (1 | site)").fit(data, offset=off)
    np.testing.assert_allclose(by_formula.log_likelihood_, est.log_likelihood_, rtol=1e-10)
    mu = est.predict(X, g, offset=off)
    np.testing.assert_allclose(
        np.log(mu), est.linear_predictor(X, g, offset=off), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(by_formula.predict(data, offset=off), mu, rtol=1e-6)
    assert 0 < est.score(X, y, groups=g, offset=off) < 1


def test_classifier_formula_with_binary_column():
    X, y, g = binary_data()
    data = X.assign(passed=(y == "pass"), school=g)
    clf = MixedGLMClassifier(formula="passed ~ x + (1 | school)").fit(data)
    ref = MixedGLMClassifier().fit(X, y, groups=g)
    np.testing.assert_allclose(clf.log_likelihood_, ref.log_likelihood_, rtol=1e-10)
    np.testing.assert_allclose(clf.predict_proba(data)[:, 1], ref.predict_proba(X, g)[:, 1])
    assert clf.score(data) == pytest.approx(ref.score(X, y, groups=g))


def test_cbpp_formula_example():
    df = load_cbpp()
    est = MixedGLMRegressor(family="binomial", formula="I(incidence / size) ~ period + (1 | herd)")
    est.fit(df, sample_weight=df["size"])
    assert round(est.log_likelihood_, 4) == -92.0263


# ---------------------------------------------------------------------------------------
# 4. properties
# ---------------------------------------------------------------------------------------
def test_binomial_trials_equal_expanded_rows():
    """A proportion k/m with m trials is m Bernoulli rows: the same estimates."""
    df = load_cbpp()
    grouped = MixedGLMRegressor(family="binomial").fit(
        pd.get_dummies(df["period"], drop_first=True, dtype=float),
        df["incidence"] / df["size"],
        groups=df["herd"],
        sample_weight=df["size"],
    )
    rows = []
    for _, r in df.iterrows():
        rows += [(r["herd"], r["period"], 1)] * int(r["incidence"])
        rows += [(r["herd"], r["period"], 0)] * int(r["size"] - r["incidence"])
    long = pd.DataFrame(rows, columns=["herd", "period", "y"])
    expanded = MixedGLMClassifier().fit(
        pd.get_dummies(long["period"], drop_first=True, dtype=float), long["y"], groups=long["herd"]
    )
    np.testing.assert_allclose(expanded.fixed_effects_, grouped.fixed_effects_, rtol=1e-5)
    np.testing.assert_allclose(
        expanded.variance_components_, grouped.variance_components_, rtol=1e-4
    )


def test_glm_without_groups_matches_sklearn():
    """No groups: an unpenalized GLM, equal to scikit-learn's (and its likelihood exact)."""
    X, y, _g, _off = count_data()
    with pytest.warns(NoGroupsWarning):
        est = MixedGLMRegressor().fit(X, y)
    ref = PoissonRegressor(alpha=0, tol=1e-12, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-6)
    mu = ref.predict(X)
    from scipy import stats

    np.testing.assert_allclose(est.log_likelihood_, stats.poisson.logpmf(y, mu).sum(), rtol=1e-9)
    Xb, yb, _ = binary_data()
    with pytest.warns(NoGroupsWarning):
        clf = MixedGLMClassifier().fit(Xb, yb)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000).fit(Xb, yb)
    np.testing.assert_allclose(clf.coef_, lr.coef_[0], rtol=1e-5)


# ---------------------------------------------------------------------------------------
# 5. bad input
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("est", "y", "match"),
    [
        (MixedGLMClassifier(), np.tile([0, 1, 2], 20), "Only binary classification"),
        (MixedGLMClassifier(), np.linspace(0, 1, 60), "Unknown label type"),
        (MixedGLMRegressor(family="binomial"), np.linspace(-1, 2, 60), r"\[0, 1\]"),
        (MixedGLMRegressor(), -np.arange(60.0), "count"),
        (MixedGLMRegressor(family="binomial"), np.zeros(60), "one class"),
        (MixedGLMRegressor(family="poisson", link="logit"), np.arange(60.0), "link"),
        (MixedGLMClassifier(n_agq=5, random_slopes=[0]), np.tile([0, 1], 30), "n_agq"),
    ],
)
def test_bad_input_errors(est, y, match):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1))
    g = np.repeat(np.arange(6), 10)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, groups=g)


def test_bad_offsets():
    X, y, g, off = count_data()
    with pytest.raises(ValueError, match="offset has 3 values"):
        MixedGLMRegressor().fit(X, y, groups=g, offset=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        MixedGLMRegressor().fit(X, y, groups=g, offset=np.where(off > 0, np.nan, off))
    off_copy = off.copy()
    MixedGLMRegressor().fit(X, y, groups=g, offset=off)
    np.testing.assert_array_equal(off, off_copy)  # inputs are not modified


def test_separation_warns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = (x > 0).astype(int)
    g = np.repeat(np.arange(10), 20)
    with pytest.warns(SeparationWarning, match="separate"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("always", category=SeparationWarning)
            MixedGLMClassifier().fit(x[:, None], y, groups=g)


def test_clone_and_params():
    est = MixedGLMRegressor(family="binomial", link="cloglog", n_agq=3)
    assert clone(est).get_params() == est.get_params()
    with sklearn.config_context(enable_metadata_routing=False):
        assert "offset" in MixedGLMRegressor().get_metadata_routing().fit.requests


def test_likelihood_ratio_test_matches_lme4_anova():
    """lme4's anova(m0, m1) of two glmer fits (tests/reference/glmm/lrt/lrt.R)."""
    import json
    from pathlib import Path

    from sklmm import MixedLMRegressor, likelihood_ratio_test

    ref = json.loads((Path(__file__).parent / "reference/glmm/lrt/lrt.json").read_text())
    df = load_cbpp()
    fits = [
        MixedGLMRegressor(
            family="binomial", formula=f"I(incidence / size) ~ {rhs} + (1 | herd)"
        ).fit(df, sample_weight=df["size"])
        for rhs in ("1", "period")
    ]
    table = likelihood_ratio_test(*fits)
    np.testing.assert_allclose(table["logLik"], ref["logLik"], rtol=1e-7)
    np.testing.assert_allclose(table["npar"], ref["npar"])
    np.testing.assert_allclose(table.loc["large", "Chisq"], ref["Chisq"], rtol=1e-5)
    np.testing.assert_allclose(table.loc["large", "Pr(>Chisq)"], ref["p_value"], rtol=1e-4)
    with warnings.catch_warnings():  # a boundary fit of the linear model: irrelevant here
        warnings.simplefilter("ignore")
        lm = MixedLMRegressor(formula="incidence ~ period + (1 | herd)").fit(df)
    with pytest.raises(ValueError, match="famil"):
        likelihood_ratio_test(fits[0], lm)
    other = MixedGLMRegressor(family="binomial", formula="I(incidence / size) ~ 1 + (1 | herd)")
    other.fit(df.iloc[:50], sample_weight=df["size"].iloc[:50])
    with pytest.raises(ValueError, match="same data"):
        likelihood_ratio_test(other, fits[1])


def test_offset_traps():
    """A model fitted with an offset warns when it predicts without one; formula scores
    take the offset."""
    X, y, g, off = count_data()
    data = X.assign(y=y, site=g)
    est = MixedGLMRegressor(formula="y ~ x + (1 | site)").fit(data, offset=off)
    matrix = MixedGLMRegressor().fit(X, y, groups=g, offset=off)
    assert est.score(data, offset=off) == pytest.approx(
        matrix.score(X, y, groups=g, offset=off), rel=1e-8
    )
    with pytest.warns(UserWarning, match="fitted with an offset"):
        est.score(data)
    with pytest.warns(UserWarning, match=r"fitted with an offset, but predict\(\)"):
        matrix.predict(X, g)
    with pytest.raises(ValueError, match="pass offset= to fit"):
        MixedGLMRegressor(formula="y ~ x + offset(x) + (1 | site)").fit(data)


def test_plot_residuals_refuses_a_glmm(classifier):
    from sklmm import plot_residuals

    clf, (X, y, g) = classifier
    with pytest.raises(TypeError, match="GLMM"):
        plot_residuals(clf, X, y, groups=g)


def test_separation_by_the_groups_warns():
    """Every group all 0 or all 1: the random intercepts' variance diverges (lme4 gives a
    meaningless sd of 68 without a word)."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 10)
    X = rng.normal(size=(300, 1))
    with pytest.warns(SeparationWarning, match="15 of its 30 levels have all responses 0"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("always", category=SeparationWarning)
            MixedGLMClassifier().fit(X, g % 2, groups=g)
    with pytest.raises(ValueError, match="every count is 0"):
        MixedGLMRegressor().fit(X, np.zeros(300), groups=g)


def test_a_strong_well_determined_effect_is_not_called_separation():
    rng = np.random.default_rng(5)
    n = 3000
    g = rng.integers(0, 50, n)
    x = rng.normal(0, 3, n)
    eta = 0.5 + 2 * x + rng.normal(0, 0.5, 50)[g]
    y = rng.random(n) < 1 / (1 + np.exp(-eta))
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=SeparationWarning)
        clf = MixedGLMClassifier().fit(x[:, None], y, groups=g)
    assert abs(clf.coef_[0] - 2) < 0.3
