"""Analytic gradient and Hessian of the profiled criterion against finite differences.

The criterion ``D(theta)`` of :class:`sklmm._profile.ProfiledDeviance` is checked at
random points of the square-root scale (interior points, points with a zero diagonal
entry of ``Lambda``, small and large scales), for REML and ML, both covariance
structures and ``q`` = 1, 2, 3:

* the gradient against central differences of ``D``;
* the Hessian against central differences of the analytic gradient;
* at the optimum found by :func:`sklmm._solvers.minimize_deviance`, the central
  differences of ``D`` vanish and ``D`` is a local minimum.

Central differences have truncation error ``O(h^2)`` and rounding error
``O(eps |D| / h)``; with ``h = 1e-5`` times the scale of ``theta`` both are below
1e-8 relative to the derivative, so the tolerances below (1e-6 relative to the
largest entry) leave two orders of magnitude of slack and still catch any wrong term.
"""

import numpy as np
import pytest
from _simulate import simulate as _simulate

from sklmm._covariance import CovarianceStructure
from sklmm._crossprod import compute_stats
from sklmm._profile import ProfiledDeviance
from sklmm._solvers import minimize_deviance

KINDS = ("unstructured", "diagonal")
RTOL = 1e-6


def simulate(seed, q, p=3, n_groups=15, sizes=None):
    """Grouped data from the model, with a random PD ``Sigma``; rows in random order."""
    return _simulate(seed, q, p=p, n_groups=n_groups, sizes=sizes, min_size=2)


def objective(seed, q, kind, reml, **kw):
    X, Z, y, codes, n_groups = simulate(seed, q, **kw)
    stats = compute_stats(X, Z, y, codes, n_groups)
    return ProfiledDeviance(stats, CovarianceStructure(q, kind), reml)


def random_theta(rng, cov, scale=1.0):
    """Diagonal of Lambda in [0.2, 2], off-diagonal entries N(0, 0.5^2); times ``scale``."""
    theta = 0.5 * rng.normal(size=cov.n_theta)
    diag = cov.rows == cov.cols
    theta[diag] = rng.uniform(0.2, 2.0, size=diag.sum())
    return scale * theta


def fd_gradient(obj, theta, h):
    """Central differences of ``D``."""
    out = np.empty(len(theta))
    for a, e in enumerate(np.eye(len(theta))):
        out[a] = (obj(theta + h * e).deviance - obj(theta - h * e).deviance) / (2 * h)
    return out


def fd_hessian(obj, theta, h):
    """Central differences of the analytic gradient (row ``a``: derivative along ``theta_a``)."""
    rows = [
        (obj(theta + h * e, 1).gradient - obj(theta - h * e, 1).gradient) / (2 * h)
        for e in np.eye(len(theta))
    ]
    return np.array(rows)


def assert_close(got, want, rtol=RTOL):
    """Entrywise agreement to ``rtol`` times the largest entry of ``want``."""
    scale = np.max(np.abs(want))
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


PARAMS = [
    pytest.param(q, kind, reml, id=f"q{q}-{kind}-{'reml' if reml else 'ml'}")
    for q in (1, 2, 3)
    for kind in KINDS
    for reml in (True, False)
]


@pytest.mark.parametrize(("q", "kind", "reml"), PARAMS)
def test_gradient_matches_finite_differences(q, kind, reml):
    obj = objective(100 + q, q, kind, reml)
    rng = np.random.default_rng(q)
    for _ in range(3):
        theta = random_theta(rng, obj.cov)
        ev = obj(theta, 1)
        assert ev.gradient.shape == (obj.cov.n_theta,)
        assert_close(ev.gradient, fd_gradient(obj, theta, 1e-5))


@pytest.mark.parametrize(("q", "kind", "reml"), PARAMS)
def test_hessian_matches_finite_differences(q, kind, reml):
    obj = objective(100 + q, q, kind, reml)
    rng = np.random.default_rng(10 + q)
    for _ in range(3):
        theta = random_theta(rng, obj.cov)
        ev = obj(theta, 2)
        assert ev.hessian.shape == (obj.cov.n_theta, obj.cov.n_theta)
        np.testing.assert_array_equal(ev.hessian, ev.hessian.T)
        assert_close(ev.hessian, fd_hessian(obj, theta, 1e-5))
        # order=2 returns the same gradient as order=1
        np.testing.assert_allclose(ev.gradient, obj(theta, 1).gradient, rtol=1e-12)


@pytest.mark.parametrize("scale", [0.02, 30.0])
@pytest.mark.parametrize("reml", [True, False])
def test_derivatives_at_small_and_large_scales(scale, reml):
    """Relative variances far from 1: ``Psi`` near 0 and ``Psi`` dominating ``V``."""
    obj = objective(7, 3, "unstructured", reml)
    theta = random_theta(np.random.default_rng(3), obj.cov, scale)
    ev = obj(theta, 2)
    h = 1e-5 * scale
    assert_close(ev.gradient, fd_gradient(obj, theta, h))
    assert_close(ev.hessian, fd_hessian(obj, theta, h))


@pytest.mark.parametrize(("q", "kind", "reml"), [p for p in PARAMS if p.values[0] > 1])
def test_derivatives_with_a_zero_diagonal_entry(q, kind, reml):
    """At a singular ``Psi`` (where the solvers stop at a boundary fit).

    ``D`` depends on ``theta`` through ``Lambda Lambda'`` only and is smooth across a
    zero diagonal entry, so central differences straddling it are valid.
    """
    obj = objective(200 + q, q, kind, reml)
    rng = np.random.default_rng(20 + q)
    diag = np.flatnonzero(obj.cov.rows == obj.cov.cols)
    for j in diag:
        theta = random_theta(rng, obj.cov)
        theta[j] = 0.0
        ev = obj(theta, 2)
        # d D / d Lambda_jj = 2 (G Lambda)_jj = 0 when column j of Lambda is zero.
        if kind == "diagonal" or j == diag[-1]:
            assert ev.gradient[j] == 0.0
        assert_close(ev.gradient, fd_gradient(obj, theta, 1e-5))
        assert_close(ev.hessian, fd_hessian(obj, theta, 1e-5))


@pytest.mark.parametrize("reml", [True, False])
def test_derivatives_on_unequal_groups_with_singletons(reml):
    sizes = np.array([1, 1, 2, 1, 9, 3, 1, 14, 1, 5, 2, 1])
    obj = objective(5, 2, "unstructured", reml, sizes=sizes)
    theta = random_theta(np.random.default_rng(5), obj.cov)
    ev = obj(theta, 2)
    assert_close(ev.gradient, fd_gradient(obj, theta, 1e-5))
    assert_close(ev.hessian, fd_hessian(obj, theta, 1e-5))


@pytest.mark.parametrize(("q", "kind", "reml"), PARAMS)
def test_gradient_vanishes_at_the_optimum(q, kind, reml):
    obj = objective(300 + q, q, kind, reml, n_groups=40)
    result = minimize_deviance(obj)
    assert result.converged, result.message
    theta, dev = result.theta, result.evaluation.deviance
    # An interior optimum for these data (true Sigma is PD, 40 groups).
    assert np.all(theta[obj.cov.rows == obj.cov.cols] > 0.05)
    # Finite differences are independent of the analytic gradient used by the rule.
    fd = fd_gradient(obj, theta, 1e-5)
    assert np.max(np.abs(fd)) <= 2e-7 * max(1.0, abs(dev))
    assert np.max(np.abs(result.evaluation.gradient)) <= 1e-7 * max(1.0, abs(dev))
    # A strict local minimum: PD Hessian, and D rises in every direction nearby.
    H = obj(theta, 2).hessian
    assert np.linalg.eigvalsh(H)[0] > 0
    rng = np.random.default_rng(q)
    for _ in range(5):
        step = rng.normal(size=theta.shape)
        assert obj(theta + 1e-3 * step / np.linalg.norm(step)).deviance > dev
