"""Models with several random-effects terms, through the estimator.

* lme4 reference fits: the nested ``pastes_reml`` (``(1 | batch/cask)``) and the crossed
  ``penicillin_reml`` (``(1 | plate) + (1 | sample)``), each in both forms (variance
  components, and the ``random_effects`` specification), with the tolerances of the
  one-factor reference tests (``test_reference.py``): log-likelihood, fixed effects and
  their covariance, variances, BLUPs and their conditional variances, fitted values, and
  held-out predictions with new levels of one or of every term;
* the two forms give the same fit, and the general engine reproduces the one-factor
  engine on every one-factor reference case (log-likelihood to 1e-8).

Terms with random slopes are checked against a dense computation in ``test_blocked.py``
(the engine) and ``test_multi_inputs.py`` (the estimator).
"""

import numpy as np
import pandas as pd
import pytest
from _reference import ONE_FACTOR, load_case

from sklmm import MixedLMRegressor, SingularFitWarning

MULTI = {
    "pastes_reml": {
        "spec": "(1 | batch/cask)",
        "groups": "batch",
        "components": ["cask"],
        "factors": ["batch", "cask"],
    },
    "penicillin_reml": {
        "spec": "(1 | plate) + (1 | sample)",
        "groups": None,
        "components": ["plate", "sample"],
        "factors": ["plate", "sample"],
    },
}


def fit_form(case, form, frame=None):
    """The estimator and its ``fit``/``predict`` keyword arguments in one of the two forms."""
    how = MULTI[case.name]
    frame = case.train if frame is None else frame
    if form == "vc":
        est = MixedLMRegressor(reml=case.spec["reml"])
        kw = {
            "groups": None if how["groups"] is None else frame[how["groups"]],
            "variance_components": frame[how["components"]],
        }
    else:
        est = MixedLMRegressor(random_effects=how["spec"], reml=case.spec["reml"])
        kw = {"groups": frame[how["factors"]]}
    return est, kw


def kwargs(case, form, frame):
    return fit_form(case, form, frame)[1]


@pytest.fixture(scope="module", params=[(c, f) for c in MULTI for f in ("vc", "spec")])
def case_fit(request):
    name, form = request.param
    case = load_case(name)
    est, kw = fit_form(case, form)
    est.fit(case.X(case.train), case.y(case.train), **kw)
    return case, form, est


def term_names(est):
    return list(est.random_effects_)


def test_log_likelihood(case_fit):
    case, _, est = case_fit
    assert est.converged_
    assert est.log_likelihood_ >= case.lme4["logLik"] - 1e-6
    assert est.log_likelihood_ == pytest.approx(case.lme4["logLik"], abs=1e-4)
    assert est.n_params_ == case.lme4["logLik_df"]
    assert est.aic_ == pytest.approx(case.lme4["AIC"], abs=1e-3)
    assert est.bic_ == pytest.approx(case.lme4["BIC"], abs=1e-3)
    assert est.is_singular_ == case.lme4["isSingular"]


def test_fixed_effects_and_their_covariance(case_fit):
    case, _, est = case_fit
    np.testing.assert_allclose(est.intercept_, case.lme4["fixef"]["values"][0], rtol=1e-4)
    np.testing.assert_allclose(est.fixed_effects_cov_, case.lme4["vcov_fixef"], rtol=1e-4)


def test_variance_parameters(case_fit):
    case, _, est = case_fit
    names = term_names(est)
    for name, ref in zip(names, case.lme4["random_terms"], strict=True):
        assert est.random_effects_cov_[name].to_numpy() == pytest.approx(
            np.asarray(ref["cov"]), rel=1e-3
        )
        assert est.variance_components_[name] == pytest.approx(ref["cov"][0][0], rel=1e-3)
    assert est.residual_variance_ == pytest.approx(case.lme4["sigma2"], rel=1e-3)


def test_blups_and_condvar(case_fit):
    # ranef(fit, condVar = TRUE), matched by label ("A:a" for batch A, cask a).
    case, _, est = case_fit
    for name, ranef in zip(term_names(est), case.lme4["ranef"], strict=True):
        frame = est.random_effects_[name]
        labels = [
            ":".join(map(str, key)) if isinstance(key, tuple) else str(key) for key in frame.index
        ]
        order = pd.Index(labels).get_indexer(ranef["levels"])
        assert (order >= 0).all() and len(order) == len(frame)
        got = frame.to_numpy()[order]
        np.testing.assert_allclose(got, np.asarray(ranef["values"]), rtol=1e-3)
        q = frame.shape[1]
        got_cv = est.random_effects_condvar_[name].to_numpy().reshape(len(frame), q, q)[order]
        want_cv = np.asarray(ranef["condvar"], dtype=float).reshape(got_cv.shape)
        np.testing.assert_allclose(got_cv, want_cv, rtol=1e-3)


def test_fitted_values(case_fit):
    case, form, est = case_fit
    fitted = case.lme4["fitted"]
    rows = case.train.set_index("row_id").loc[fitted["row_id"]]
    pred = est.predict(case.X(rows), **kwargs(case, form, rows))
    np.testing.assert_allclose(pred, fitted["values"], rtol=1e-4)


def test_held_out_predictions_with_new_levels(case_fit):
    # predict(fit, newdata, allow.new.levels = TRUE): a level unseen in fit contributes 0
    # for its term only; re.form = NA: the population prediction.
    case, form, est = case_fit
    ref = case.lme4["predictions"]
    rows = case.test.set_index("row_id").loc[ref["row_id"]]
    cond = est.predict(case.X(rows), **kwargs(case, form, rows))
    np.testing.assert_allclose(cond, ref["conditional"], rtol=1e-4)
    np.testing.assert_allclose(est.predict(case.X(rows)), ref["population"], rtol=1e-4)
    some = np.asarray(ref["any_new_level"]) & ~np.asarray(ref["all_new_level"])
    every = np.asarray(ref["all_new_level"])
    # Pastes: a new batch (every term new) and a new cask in a seen batch; Penicillin: a
    # new plate with seen samples. Where only some terms are new, the others stay in.
    assert some.any()
    assert every.any() == (case.name == "pastes_reml")
    assert np.all(np.abs(cond[some] - np.asarray(ref["population"])[some]) > 1e-3)
    np.testing.assert_allclose(cond[every], np.asarray(ref["population"])[every], rtol=1e-12)


def test_score(case_fit):
    case, form, est = case_fit
    kw = kwargs(case, form, case.train)
    assert est.score(case.X(case.train), case.y(case.train), **kw) > 0.5


@pytest.mark.parametrize("name", list(MULTI))
def test_forms_give_the_same_fit(name):
    case = load_case(name)
    fits = []
    for form in ("vc", "spec"):
        est, kw = fit_form(case, form)
        fits.append(est.fit(case.X(case.train), case.y(case.train), **kw))
    a, b = fits
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, abs=1e-10)
    assert a.terms_ == b.terms_
    np.testing.assert_allclose(a.variance_components_, b.variance_components_, rtol=1e-8)
    for (_, fa), (_, fb) in zip(a.random_effects_.items(), b.random_effects_.items(), strict=True):
        np.testing.assert_allclose(fa.to_numpy(), fb.to_numpy(), rtol=1e-7, atol=1e-12)
        assert list(fa.index) == list(fb.index)


def engines(est):
    """The phases of the fit's log: which engine ran ("lbfgs"/"polish": the blocked one)."""
    return set(est.fit_log_["phase"])


@pytest.mark.parametrize("name", ONE_FACTOR)
def test_general_engine_reproduces_one_factor_engine(name):
    case = load_case(name)
    params = case.estimator_params()
    X, y, g = case.X(case.train), case.y(case.train), case.groups(case.train)
    if case.lme4["isSingular"]:
        with pytest.warns(SingularFitWarning):
            fast = MixedLMRegressor(**params).fit(X, y, groups=g)
        with pytest.warns(SingularFitWarning):
            general = MixedLMRegressor(**params, solver="lbfgs").fit(X, y, groups=g)
    else:
        fast = MixedLMRegressor(**params).fit(X, y, groups=g)
        general = MixedLMRegressor(**params, solver="lbfgs").fit(X, y, groups=g)
    # the two engines did run
    assert "lbfgs" in engines(general) and engines(general) <= {"lbfgs", "polish", "multistart"}
    assert "lbfgs" not in engines(fast)
    assert general.converged_
    assert general.log_likelihood_ == pytest.approx(fast.log_likelihood_, abs=1e-8)
    np.testing.assert_allclose(general.coef_, fast.coef_, rtol=1e-6, atol=1e-10)
    (cov,) = general.random_effects_cov_.values()
    (fast_cov,) = fast.random_effects_cov_.values()
    np.testing.assert_allclose(cov.to_numpy(), fast_cov.to_numpy(), rtol=1e-4, atol=1e-6)
    (b,) = general.random_effects_.values()
    (fast_b,) = fast.random_effects_.values()
    np.testing.assert_allclose(b.to_numpy(), fast_b.to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(general.fixed_effects_cov_, fast.fixed_effects_cov_, rtol=1e-5)
    test = case.test
    pred_g, std_g = general.predict(case.X(test), groups=case.groups(test), return_std=True)
    pred_f, std_f = fast.predict(case.X(test), groups=case.groups(test), return_std=True)
    np.testing.assert_allclose(pred_g, pred_f, rtol=1e-6)
    np.testing.assert_allclose(std_g, std_f, rtol=1e-4)


def test_one_term_specification_uses_the_one_factor_engine():
    case = load_case("sleepstudy_reml")
    X, y = case.X(case.train), case.y(case.train)
    a = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=case.train["Subject"])
    b = MixedLMRegressor(random_effects="(1 + Days | Subject)").fit(
        X, y, groups=case.train[["Subject"]]
    )
    c = MixedLMRegressor(random_effects="(Days | Subject)").fit(
        X, y, groups=case.train["Subject"].to_numpy()
    )
    for est in (b, c):
        assert est.log_likelihood_ == a.log_likelihood_
        assert list(est.random_effects_cov_) == list(a.random_effects_cov_) == ["Subject"]
        for name, cov in a.random_effects_cov_.items():
            pd.testing.assert_frame_equal(est.random_effects_cov_[name], cov, check_exact=True)
        assert est.terms_ == ("(1 + Days | Subject)",)
        assert list(est.random_effects_) == ["Subject"]
    # predict takes the DataFrame of fit and its column alike
    np.testing.assert_array_equal(
        b.predict(case.X(case.test), groups=case.test[["Subject"]]),
        a.predict(case.X(case.test), groups=case.test["Subject"]),
    )
    d = MixedLMRegressor(random_effects="(1 + Days || Subject)").fit(
        X, y, groups=case.train[["Subject"]]
    )
    e = MixedLMRegressor(random_slopes=["Days"], covariance_type="diagonal").fit(
        X, y, groups=case.train["Subject"]
    )
    assert d.log_likelihood_ == e.log_likelihood_


@pytest.mark.parametrize("name", ["sleepstudy_reml", "sleepstudy_diag_reml", "orthodont_reml"])
def test_general_engine_variance_intervals_equal_the_one_factor_ones(name):
    # summary().random_effects: the Wald intervals of the sd's, correlations and sigma.
    case = load_case(name)
    params = case.estimator_params()
    X, y, g = case.X(case.train), case.y(case.train), case.groups(case.train)
    fast = MixedLMRegressor(**params).fit(X, y, groups=g).summary().random_effects
    general = MixedLMRegressor(**params, solver="lbfgs").fit(X, y, groups=g)
    assert "lbfgs" in engines(general)
    general = general.summary().random_effects
    cols = ["vcov", "sdcor", "ci_0.025", "ci_0.975"]
    np.testing.assert_allclose(general[cols].to_numpy(float), fast[cols].to_numpy(float), rtol=1e-4)


def test_variance_intervals_of_several_terms(case_fit):
    _, _, est = case_fit
    table = est.summary().random_effects
    assert list(table["grp"]) == [*est.random_effects_, "Residual"]
    lo, hi = table["ci_0.025"].to_numpy(float), table["ci_0.975"].to_numpy(float)
    assert np.all(np.isfinite(lo)) and np.all(lo < table["sdcor"]) and np.all(table["sdcor"] < hi)
