"""Fits checked against lme4 on the reference cases.

Each case was fitted in R as
``lme4::lmer(formula, data = train, REML = reml, control = lmerControl(optimizer = "bobyqa"))``
(lme4 1.1.31); the formula of each case is in its ``spec.json``, the numbers in ``lme4.json``.
"""

import numpy as np
import pytest
from _reference import ONE_FACTOR, load_case

from sklmm import MixedLMRegressor, SingularFitWarning

CASES = {name: load_case(name) for name in ONE_FACTOR}


def fit(case, **params):
    est = MixedLMRegressor(**case.estimator_params(), **params)
    if case.lme4["isSingular"]:
        with pytest.warns(SingularFitWarning):
            est.fit(case.X(case.train), case.y(case.train), groups=case.groups(case.train))
    else:
        est.fit(case.X(case.train), case.y(case.train), groups=case.groups(case.train))
    return est


@pytest.fixture(scope="module", params=ONE_FACTOR)
def case_fit(request):
    case = CASES[request.param]
    return case, fit(case)


def test_log_likelihood(case_fit):
    # logLik(fit): the REML log-likelihood for REML fits, else ML.
    case, est = case_fit
    assert est.converged_
    assert est.log_likelihood_ >= case.lme4["logLik"] - 1e-6
    assert est.log_likelihood_ == pytest.approx(case.lme4["logLik"], abs=1e-4)


def test_fixed_effects(case_fit):
    # fixef(fit)
    case, est = case_fit
    beta = np.r_[est.intercept_, est.coef_]
    np.testing.assert_allclose(beta, case.lme4["fixef"]["values"], rtol=1e-4)


def test_variance_parameters(case_fit):
    # VarCorr(fit) and sigma(fit)^2
    case, est = case_fit
    ref = np.asarray(case.lme4["random_terms"][0]["cov"])
    zero = ref == 0
    cov = est.random_effects_cov_["group"].to_numpy()
    np.testing.assert_allclose(cov[~zero], ref[~zero], rtol=1e-3)
    np.testing.assert_allclose(cov[zero], 0.0, atol=1e-6)
    assert est.residual_variance_ == pytest.approx(case.lme4["sigma2"], rel=1e-3)
    assert est.is_singular_ == case.lme4["isSingular"]


def test_blups(case_fit):
    # ranef(fit, condVar = TRUE)
    case, est = case_fit
    ranef = case.lme4["ranef"][0]
    blups = est.random_effects_["group"]
    got = blups.loc[ranef["levels"]].to_numpy()
    ref = np.asarray(ranef["values"], dtype=float).reshape(got.shape)
    if case.lme4["isSingular"]:
        np.testing.assert_allclose(got, ref, atol=1e-6)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-3)
    condvar = est.random_effects_condvar_["group"]
    got = np.stack([condvar.loc[level].to_numpy() for level in ranef["levels"]])
    ref = np.asarray(ranef["condvar"], dtype=float).reshape(got.shape)
    if case.term["cov"] == "diagonal":
        # lme4 splits (x || g) into one term per column and reports the conditional
        # variance per term: only the diagonal blocks are comparable.
        got, ref = np.diagonal(got, axis1=1, axis2=2), np.diagonal(ref, axis1=1, axis2=2)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-6 * max(1.0, ref.max()))


def test_fitted_values(case_fit):
    # fitted(fit)
    case, est = case_fit
    fitted = case.lme4["fitted"]
    rows = case.train.set_index("row_id").loc[fitted["row_id"]]
    pred = est.predict(case.X(rows), groups=case.groups(rows))
    np.testing.assert_allclose(pred, fitted["values"], rtol=1e-4)


def test_held_out_predictions(case_fit):
    # predict(fit, newdata, allow.new.levels = TRUE) and predict(fit, newdata, re.form = NA)
    case, est = case_fit
    ref = case.lme4["predictions"]
    rows = case.test.set_index("row_id").loc[ref["row_id"]]
    cond = est.predict(case.X(rows), groups=case.groups(rows))
    np.testing.assert_allclose(cond, ref["conditional"], rtol=1e-4)
    np.testing.assert_allclose(est.predict(case.X(rows)), ref["population"], rtol=1e-4)
    new = np.asarray(ref["all_new_level"])
    assert new.any() and (~new).any()
    np.testing.assert_array_equal(cond[new], est.predict(case.X(rows))[new])


@pytest.mark.parametrize("solver", ["em", "newton"])
@pytest.mark.parametrize("name", ONE_FACTOR)
def test_solvers_agree(name, solver):
    """EM alone and Newton alone reach the optimum of the default EM-then-Newton."""
    case = CASES[name]
    ref = fit(case)
    est = fit(case, solver=solver, max_iter=20000 if solver == "em" else 100)
    assert est.converged_
    assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-7)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-5)
    np.testing.assert_allclose(
        est.random_effects_cov_["group"], ref.random_effects_cov_["group"], rtol=1e-3, atol=1e-6
    )
