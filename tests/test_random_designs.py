"""Random designs: every converged fit is the best optimum found, at its true likelihood.

For seeded random designs (one factor with random slopes, crossed factors, two large
groups with many singletons; REML and ML; variances from zero to large) each converged
fit is checked twice:

* its ``log_likelihood_`` against the dense likelihood of ``y ~ N(X beta, Z Sigma Z' +
  sigma2 I)`` at its estimates, formed directly from ``V`` (no cross-products);
* its optimum against the same criterion minimised from several other starts (identity
  ``Lambda``, and random ones): no start finds a better optimum by more than 1e-6 in
  log-likelihood.

A default tier of 32 designs (two of them local optima that the first fit reported as
converged) runs with the suite; ``-m slow`` runs 300 more.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedLMRegressor
from sklmm._blocked import minimize_blocked
from sklmm._solvers import minimize_deviance


def _unbalanced(rng):
    """Two large groups and many singletons, two slopes, ML: local optima on the boundary."""
    a = np.r_[np.zeros(135, int), np.ones(135, int), np.arange(2, 44)]
    n = len(a)
    b = rng.integers(0, 6, n)
    X = rng.normal(5, 1, size=(n, 2))
    ua = rng.normal(size=(44, 3)) * rng.choice([0.1, 0.5, 1.0, 2.0], size=3)
    y = (
        X @ [0.5, -0.5]
        + ua[a, 0]
        + ua[a, 1] * X[:, 0]
        + ua[a, 2] * X[:, 1]
        + rng.choice([0.0, 0.5]) * rng.normal(size=6)[b]
        + rng.normal(size=n)
    )
    X = pd.DataFrame(X, columns=["x0", "x1"])
    if rng.integers(0, 2):
        return (
            MixedLMRegressor(random_slopes=["x0", "x1"], reml=False),
            X,
            y,
            pd.Series(a, name="a"),
        )
    spec = "(1 + x0 + x1 || a) + (1 | b)"
    return MixedLMRegressor(random_effects=spec, reml=False), X, y, pd.DataFrame({"a": a, "b": b})


def _design(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 160))
    kind = rng.choice(["one", "slope", "crossed", "unbalanced"])
    if kind == "unbalanced":
        return _unbalanced(rng)
    m_a = int(rng.integers(3, 12))
    a = np.r_[np.arange(m_a), rng.integers(0, m_a, n - m_a)]
    b = rng.integers(0, int(rng.integers(3, 8)), n)
    x = rng.normal(size=n) * rng.choice([0.5, 1.0, 3.0])
    sd = rng.choice([0.0, 0.3, 1.0, 4.0], size=3)
    y = (
        1.0
        + 0.5 * x
        + sd[0] * rng.normal(size=m_a)[a]
        + sd[1] * rng.normal(size=m_a)[a] * x
        + sd[2] * rng.normal(size=b.max() + 1)[b]
        + rng.normal(size=n)
    )
    reml = bool(rng.integers(0, 2))
    X = pd.DataFrame({"x": x})
    G = pd.DataFrame({"a": a, "b": b})
    if kind == "one":
        return MixedLMRegressor(reml=reml), X, y, G["a"]
    if kind == "slope":
        return MixedLMRegressor(random_slopes=["x"], reml=reml), X, y, G["a"]
    return MixedLMRegressor(random_effects="(1 | a) + (1 | b)", reml=reml), X, y, G


def _dense_log_likelihood(est, X, y, groups):
    """The (REML) log-likelihood at the estimates, from V itself."""
    n = len(y)
    Xf = np.column_stack([np.ones(n), X.to_numpy()])
    frame = groups.to_frame() if isinstance(groups, pd.Series) else groups
    V = est.residual_variance_ * np.eye(n)
    for name, cov in est.random_effects_cov_.items():
        labels = frame[name].to_numpy()
        levels = np.unique(labels)
        Z1 = (labels[:, None] == levels[None, :]).astype(float)
        cols = [np.ones(n)] + [X[c].to_numpy() for c in cov.columns[1:]]
        Z = np.column_stack([Z1 * c[:, None] for c in cols])  # effect-major columns
        S = np.kron(cov.to_numpy(), np.eye(len(levels)))
        V += Z @ S @ Z.T
    Vi = np.linalg.inv(V)
    XtViX = Xf.T @ Vi @ Xf
    beta = np.linalg.solve(XtViX, Xf.T @ Vi @ y)
    r = y - Xf @ beta
    _, logdet = np.linalg.slogdet(V)
    ll = -0.5 * (logdet + r @ Vi @ r)
    if est.reml:
        _, logdet_x = np.linalg.slogdet(XtViX)
        return ll - 0.5 * ((n - Xf.shape[1]) * np.log(2 * np.pi) + logdet_x)
    return ll - 0.5 * n * np.log(2 * np.pi)


def _best_of_other_starts(est, seed):
    """The smallest -2 log L found from identity and random starts."""
    model = est._fitted.model
    rng = np.random.default_rng(seed + 10_000)
    n_theta = sum(t.structure.n_theta for t in model.terms)
    lower = np.concatenate([t.structure.lower_bounds for t in model.terms])
    starts = [np.concatenate([t.structure.initial_theta() for t in model.terms])]
    starts += [np.maximum(rng.uniform(-1.0, 3.0, n_theta), lower) for _ in range(3)]
    best = np.inf
    for theta0 in starts:
        if model.one_factor:
            res = minimize_deviance(model.criterion("em-newton"), "newton", theta0=theta0)
        else:
            res = minimize_blocked(model.criterion("lbfgs"), theta0=theta0)
        if res.converged:
            best = min(best, res.evaluation.deviance)
    return best


def _check(seed):
    est, X, y, groups = _design(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular fits are expected among random designs
        try:
            est.fit(X, y, groups=groups)
        except ValueError as error:  # a design the model refuses, with a message
            assert "fitted exactly" in str(error) or "rows for the" in str(error)
            return
    if not est.converged_:
        return  # said so
    dense = _dense_log_likelihood(est, X, y, groups)
    assert est.log_likelihood_ == pytest.approx(dense, abs=1e-6 * max(1.0, abs(dense))), seed
    best = _best_of_other_starts(est, seed)
    assert -2 * est.log_likelihood_ <= best + 2e-6, (seed, -2 * est.log_likelihood_, best)


#: Designs whose first optimum was a local one on the boundary (reported converged, 7.4
#: and 0.8 units of -2 log L short): they run in the default tier.
LOCAL_OPTIMA = [77, 194]


@pytest.mark.parametrize("seed", [*range(30), *LOCAL_OPTIMA])
def test_random_design(seed):
    _check(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(30, 330))
def test_random_design_slow_tier(seed):
    _check(seed)
