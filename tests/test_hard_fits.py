"""Hard fits: each converges to the best optimum found, or says it did not.

For every case, the default solver's log-likelihood must be within 1e-6 of the best found by
any of the three solvers and by Newton from several random starts; a solver that stops early
must say so (``converged_`` false and a ``MixedLMConvergenceWarning``). Boundary optima must
be flagged (``is_singular_`` and a ``SingularFitWarning``).
"""

import warnings

import numpy as np
import pytest

from sklmm import MixedLMConvergenceWarning, MixedLMRegressor, SingularFitWarning
from sklmm._covariance import CovarianceStructure
from sklmm._crossprod import model_stats, rescale_terms
from sklmm._profile import ProfiledDeviance
from sklmm._solvers import minimize_deviance


def simulate(seed, sizes, sd0=1.0, sd1=0.5, rho=0.0, y_scale=1.0, x_scale=1.0):
    rng = np.random.default_rng(seed)
    sizes = np.asarray(sizes)
    codes = np.repeat(np.arange(len(sizes)), sizes)
    n = len(codes)
    x = rng.standard_normal(n)
    cov = np.array([[sd0**2, rho * sd0 * sd1], [rho * sd0 * sd1, sd1**2]])
    b = rng.multivariate_normal([0.0, 0.0], cov, len(sizes), method="eigh")
    y = 1.0 + 2.0 * x + b[codes, 0] + b[codes, 1] * x + rng.standard_normal(n)
    X = np.c_[x * x_scale, rng.standard_normal(n)]
    return X, y * y_scale, codes


SIZES = np.random.default_rng(0).integers(3, 10, 30)

# name: (data, random_slopes, boundary expected)
CASES = {
    "zero-intercept-variance": (simulate(1, SIZES, sd0=0.0), [0], True),
    "zero-slope-variance": (simulate(2, SIZES, sd1=0.0), [0], True),
    "zero-variance-intercept-only": (simulate(3, SIZES, sd0=0.0, sd1=0.0), None, None),
    "correlation-plus-one": (simulate(4, SIZES, rho=1.0), [0], True),
    "correlation-minus-one": (simulate(5, SIZES, rho=-1.0), [0], None),
    "near-singular-slope": (simulate(6, SIZES, sd1=0.05), [0], None),
    "y-times-1e8": (simulate(7, SIZES, y_scale=1e8), [0], False),
    "y-times-1e-8": (simulate(7, SIZES, y_scale=1e-8), [0], False),
    "x-times-1e6": (simulate(8, SIZES, x_scale=1e6), [0], False),
    "x-times-1e-6": (simulate(8, SIZES, x_scale=1e-6), [0], False),
    "mostly-singletons": (simulate(9, np.r_[np.ones(180, int), np.full(20, 8)]), None, None),
    "unbalanced": (simulate(10, np.r_[1000, np.full(50, 2)]), [0], None),
}


def fit(X, y, g, slopes, **params):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = MixedLMRegressor(random_slopes=slopes, **params).fit(X, y, groups=g)
    kinds = {w.category for w in caught}
    assert kinds <= {SingularFitWarning, MixedLMConvergenceWarning}, kinds
    assert (SingularFitWarning in kinds) == est.is_singular_
    assert (MixedLMConvergenceWarning in kinds) == (not est.converged_)
    return est


def best_from_random_starts(X, y, g, slopes, n_starts=4):
    """Newton on the core from several random starts (square-root scale)."""
    slopes = [] if slopes is None else slopes
    Xd = np.c_[np.ones(len(y)), X]
    Z = np.c_[np.ones(len(y)), X[:, slopes]]
    blocked, _ = rescale_terms(model_stats(Xd, y, [g], [g.max() + 1], [Z]))
    stats = blocked.term(0)
    cov = CovarianceStructure(Z.shape[1])
    objective = ProfiledDeviance(stats, cov, reml=True)
    rng = np.random.default_rng(0)
    best = -np.inf
    for _ in range(n_starts):
        theta0 = np.abs(rng.standard_normal(cov.n_theta)) * 2
        res = minimize_deviance(objective, "newton", theta0)
        if res.converged:
            best = max(best, -0.5 * res.evaluation.deviance)
    return best


@pytest.mark.parametrize("name", list(CASES))
def test_hard_fit(name):
    (X, y, g), slopes, boundary = CASES[name]
    default = fit(X, y, g, slopes)
    others = [
        fit(X, y, g, slopes, solver="newton"),
        fit(X, y, g, slopes, solver="em", max_iter=500),
    ]
    assert default.converged_
    found = [e.log_likelihood_ for e in [default, *others] if e.converged_]
    best = max([*found, best_from_random_starts(X, y, g, slopes)])
    assert default.log_likelihood_ >= best - 1e-6
    for est in others:
        # converged to the same optimum, or said that it did not converge
        assert not est.converged_ or est.log_likelihood_ >= best - 1e-6
    if boundary is not None:
        assert default.is_singular_ == boundary


def test_huge_group_next_to_many_singletons():
    """One group of 1e5 rows next to 1e4 groups of one row (random intercept)."""
    rng = np.random.default_rng(11)
    sizes = np.r_[100_000, np.ones(10_000, int)]
    codes = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.standard_normal(len(codes))
    y = 1 + x + rng.normal(0, 1.5, len(sizes))[codes] + rng.standard_normal(len(codes))
    default = fit(x[:, None], y, codes, None)
    newton = fit(x[:, None], y, codes, None, solver="newton")
    assert default.converged_ and newton.converged_
    assert default.log_likelihood_ == pytest.approx(newton.log_likelihood_, abs=1e-6)
    assert default.coef_[0] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("solver", ["em-newton", "newton"])
@pytest.mark.parametrize(
    "shift_x, shift_y",
    [(2010.0, 0.0), (1e8, 0.0), (0.0, 1e6), (0.0, 1e10)],
    ids=["year-like-x", "x-plus-1e8", "y-plus-1e6", "y-plus-1e10"],
)
def test_offsets_leave_the_fit_unchanged(solver, shift_x, shift_y):
    """Shifting a random-slope column or y is a reparameterization (unstructured covariance):
    the likelihood and the predictions must not change, and nothing is flagged."""
    from sklmm.datasets import load_sleepstudy

    df = load_sleepstudy()
    X, y, g = df[["Days"]], df["Reaction"], df["Subject"]
    ref = fit(X, y, g, ["Days"], solver=solver)
    est = fit(X + shift_x, y + shift_y, g, ["Days"], solver=solver)
    assert est.converged_ and not est.is_singular_
    assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-6)
    np.testing.assert_allclose(
        est.predict(X + shift_x, groups=g) - shift_y, ref.predict(X, groups=g), rtol=1e-7
    )
    assert est.coef_[0] == pytest.approx(ref.coef_[0], rel=1e-6)
    # the slope variance does not depend on where the slope column is centred
    assert est.random_effects_cov_["Subject"].loc["Days", "Days"] == pytest.approx(
        ref.random_effects_cov_["Subject"].loc["Days", "Days"], rel=1e-5
    )
