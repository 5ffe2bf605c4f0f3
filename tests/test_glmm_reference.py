"""The GLMM estimators against lme4's glmer and glmmTMB (tests/reference/glmm/).

Every case is fitted from its stored model matrix and compared with the converged fit
(glmer with ``tolPwrss = 1e-12``; at lme4's default PIRLS tolerance its Laplace
log-likelihood stops short): log-likelihood to 1e-5 relative (far closer in fact),
fixed effects and variance parameters to 1e-3, conditional modes and predictions on
both scales to 1e-3. The probit model is compared with glmmTMB (the textbook Laplace
approximation, observed curvature) and with lme4's adaptive quadrature; see
tests/reference/glmm/README.md for every field and make.R for the R code.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedGLMClassifier, MixedGLMRegressor

GLMM = Path(__file__).parent / "reference" / "glmm"

CASES = ["cbpp_binomial", "grouseticks_poisson", "binary_slope_logit", "poisson_offset"]


def _json(case, name):
    return json.loads((GLMM / case / name).read_text())


class Case:
    def __init__(self, name):
        self.name = name
        self.spec = _json(name, "spec.json")
        data = pd.read_csv(GLMM / name / "data.csv", dtype={c: str for c in ["g", "site"]})
        for col in self.spec["group_columns"]:
            data[col] = data[col].astype(str)
        self.train = data[data["split"] == "train"].reset_index(drop=True)
        self.test = data[data["split"] == "test"].reset_index(drop=True)

    @property
    def glm(self):
        return self.spec["glm"]

    def X(self, frame):
        cols = [c for c in self.spec["fixed"] if c != "(Intercept)"]
        return pd.DataFrame({c: frame["X:" + c].to_numpy(float) for c in cols})

    def groups(self, frame):
        return frame[self.spec["group_columns"]]

    def y_weights(self, frame):
        y = frame[self.spec["response"]].to_numpy(float)
        if self.glm["response_type"] == "binomial_counts":
            size = frame[self.glm["trials"]].to_numpy(float)
            return y / size, size
        return y, None

    def offset(self, frame):
        col = self.glm["offset"]
        return None if col is None else frame[col].to_numpy(float)

    def estimator(self, **kwargs):
        terms = self.spec["random"]
        if len(terms) == 1:
            slopes = [s for s in terms[0]["slopes"] if s != "(Intercept)"]
            params = {"random_slopes": slopes or None}
        else:
            params = {"random_effects": " + ".join(f"(1 | {t['group']})" for t in terms)}
        if self.glm["response_type"] == "binary":
            return MixedGLMClassifier(link=self.glm["link"], **params, **kwargs)
        return MixedGLMRegressor(
            family=self.glm["family"], link=self.glm["link"], **params, **kwargs
        )

    def fit(self, **kwargs):
        y, w = self.y_weights(self.train)
        est = self.estimator(**kwargs)
        groups = self.groups(self.train)
        if groups.shape[1] == 1:
            groups = groups.iloc[:, 0]
        return est.fit(
            self.X(self.train),
            y,
            groups=groups,
            sample_weight=w,
            offset=self.offset(self.train),
        )

    def predict_link(self, est, frame, population=False):
        groups = None if population else self.groups(frame)
        if groups is not None and groups.shape[1] == 1:
            groups = groups.iloc[:, 0]
        return est.linear_predictor(self.X(frame), groups, offset=self.offset(frame))


def _main_fit(case):
    """The converged glmer fit: tight.json, or lme4.json's laplace_tight_pirls."""
    path = GLMM / case / "tight.json"
    if path.exists():
        return json.loads(path.read_text())
    lme4 = _json(case, "lme4.json")
    return {**lme4, **lme4["laplace_tight_pirls"]}


@pytest.fixture(scope="module", params=CASES)
def fitted(request):
    case = Case(request.param)
    return case, case.fit(), _main_fit(request.param)


def _theta_of(est):
    return est._fitted.theta


def test_log_likelihood(fitted):
    _case, est, ref = fitted
    # The textbook Laplace value (lme4's tight fit is within 1e-6 of it: see README).
    target = ref.get("logLik_laplace_textbook", ref["logLik"])
    np.testing.assert_allclose(est.log_likelihood_, target, rtol=1e-7)
    np.testing.assert_allclose(est.log_likelihood_, ref["logLik"], rtol=1e-5)


def test_estimates(fitted):
    case, est, ref = fitted
    fixef = ref["fixef"]["values"] if isinstance(ref["fixef"], dict) else ref["fixef"]
    np.testing.assert_allclose(est.fixed_effects_.to_numpy(), fixef, rtol=1e-3, atol=1e-4)
    if len(case.spec["random"]) == 1:  # lme4 orders several terms by their levels
        theta = ref["theta"]["values"] if isinstance(ref["theta"], dict) else ref["theta"]
        np.testing.assert_allclose(_theta_of(est), theta, rtol=1e-3, atol=1e-4)
    assert len(ref["random_terms"]) == len(est.random_effects_cov_)
    for rt in ref["random_terms"]:
        name = case.spec["random"][rt["term_index"]]["group"]
        cov = est.random_effects_cov_[name].to_numpy()
        np.testing.assert_allclose(cov, rt["cov"], rtol=1e-3, atol=1e-5)


def test_standard_errors(fitted):
    """lme4's default vcov: from the Hessian of the deviance in (theta, beta)."""
    _case, est, ref = fitted
    se = np.sqrt(np.diag(est.fixed_effects_cov_))
    np.testing.assert_allclose(se, ref["se_fixef"], rtol=2e-3)


def test_conditional_modes(fitted):
    case, est, ref = fitted
    lme4 = ref if "ranef" in ref else _json(case.name, "lme4.json")
    for rr in lme4["ranef"]:
        name = case.spec["random"][rr["term_index"]]["group"]
        got = est.random_effects_[name].loc[[str(v) for v in rr["levels"]]].to_numpy()
        scale = max(np.abs(rr["values"]).max(), 1e-3)
        np.testing.assert_allclose(got, rr["values"], rtol=1e-3, atol=1e-3 * scale)
        # lme4's condVar: the conditional covariance of the modes
        cv = est.random_effects_condvar_[name]
        got_cv = np.stack([cv.loc[str(v)].to_numpy() for v in rr["levels"]])
        np.testing.assert_allclose(got_cv, rr["condvar"], rtol=2e-3, atol=1e-8)


def test_predictions(fitted):
    case, est, ref = fitted
    lme4 = ref if "predictions" in ref else _json(case.name, "lme4.json")
    pred = lme4["predictions"]
    cond = case.predict_link(est, case.test)
    pop = case.predict_link(est, case.test, population=True)
    np.testing.assert_allclose(cond, pred["conditional_link"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(pop, pred["population_link"], rtol=1e-3, atol=1e-3)
    inv = est._family_.linkinv
    np.testing.assert_allclose(inv(cond), pred["conditional_response"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(inv(pop), pred["population_response"], rtol=1e-3, atol=1e-4)
    fitted_link = case.predict_link(est, case.train)
    np.testing.assert_allclose(fitted_link, lme4["fitted"]["link"], rtol=1e-3, atol=1e-3)


def test_response_predictions_of_the_estimator(fitted):
    """predict / predict_proba are the inverse link of the linear predictor."""
    case, est, _ = fitted
    groups = case.groups(case.test)
    groups = groups.iloc[:, 0] if groups.shape[1] == 1 else groups
    eta = case.predict_link(est, case.test)
    X, off = case.X(case.test), case.offset(case.test)
    if isinstance(est, MixedGLMClassifier):
        proba = est.predict_proba(X, groups, offset=off)
        np.testing.assert_allclose(proba[:, 1], est._family_.linkinv(eta))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(
            est.predict(X, groups, offset=off), est.classes_[(eta > 0) * 1]
        )
    else:
        np.testing.assert_allclose(est.predict(X, groups, offset=off), est._family_.linkinv(eta))


def test_cbpp_quadrature():
    """nAGQ = 10: lme4's estimates, and its log-likelihood with the saturated term added."""
    case = Case("cbpp_binomial")
    est = case.fit(n_agq=10)
    ref = _json("cbpp_binomial", "lme4_agq10.json")
    np.testing.assert_allclose(est.log_likelihood_, ref["logLik_full"], rtol=1e-7)
    np.testing.assert_allclose(est.fixed_effects_.to_numpy(), ref["fixef"]["values"], rtol=1e-4)
    np.testing.assert_allclose(_theta_of(est), ref["theta"]["values"], rtol=1e-4)
    # the exact marginal likelihood at lme4's Laplace estimates is close to the AGQ one
    assert (
        abs(est.log_likelihood_ - _json("cbpp_binomial", "lme4.json")["logLik_integrated"]) < 1e-2
    )


@pytest.fixture(scope="module")
def probit():
    """The probit case (a module fixture: a class-scoped one beside the parametrized module
    fixture trips pytest's fixture teardown in a full run)."""
    case = Case("binary_probit")
    return case, case.fit()


class TestProbit:
    """The textbook Laplace approximation (observed curvature), as glmmTMB's, and AGQ."""

    def test_matches_glmmTMB(self, probit):
        case, est = probit
        tmb = _json("binary_probit", "glmmTMB.json")
        np.testing.assert_allclose(est.log_likelihood_, tmb["logLik"], rtol=1e-7)
        np.testing.assert_allclose(est.fixed_effects_.to_numpy(), tmb["fixef"]["values"], rtol=1e-3)
        theta = tmb["theta"]["values"] if isinstance(tmb["theta"], dict) else tmb["theta"]
        np.testing.assert_allclose(_theta_of(est), theta, rtol=1e-3)
        np.testing.assert_allclose(
            np.sqrt(np.diag(est.fixed_effects_cov_)), tmb["se_fixef"], rtol=5e-3
        )
        pred = tmb["predictions"]
        np.testing.assert_allclose(
            case.predict_link(est, case.test), pred["conditional_link"], rtol=1e-3, atol=1e-3
        )

    def test_differs_from_lme4_laplace(self, probit):
        """lme4's expected-curvature Laplace is another approximation (documented)."""
        _case, est = probit
        lme4 = _json("binary_probit", "tight.json")
        assert est.log_likelihood_ - lme4["logLik"] > 0.5

    def test_quadrature(self):
        case = Case("binary_probit")
        est = case.fit(n_agq=25)
        ref = _json("binary_probit", "lme4_agq25.json")
        np.testing.assert_allclose(est.log_likelihood_, ref["logLik_full"], rtol=1e-7)
        np.testing.assert_allclose(est.fixed_effects_.to_numpy(), ref["fixef"]["values"], rtol=1e-3)
        np.testing.assert_allclose(_theta_of(est), ref["theta"]["values"], rtol=1e-3)
