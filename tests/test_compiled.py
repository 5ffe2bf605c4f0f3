"""The compiled kernels of the one-factor criterion against the numpy kernels.

The numpy kernels are the reference (their derivatives are checked by finite
differences in ``test_profile.py``, their fits against lme4); the compiled ones
must give the same criterion, gradient, Hessian and EM step to rounding, raise the
same errors, and be used only where they are faster.
"""

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedLMRegressor, _compiled
from sklmm._covariance import CovarianceStructure
from sklmm._crossprod import SufficientStats
from sklmm._profile import ProfiledDeviance
from sklmm.datasets import load_sleepstudy

pytest.importorskip("numba")


def random_stats(rng, n_groups, q, p, log_weights=0.0):
    """Per-group cross-products of a random design (2 to 9 rows per group)."""
    ZtZ, ZtXy, XytXy, n = [], [], np.zeros((p + 1, p + 1)), 0
    for _ in range(n_groups):
        m = int(rng.integers(2, 10))
        Z = np.column_stack([np.ones(m), rng.normal(size=(m, q - 1))])
        X = np.column_stack([np.ones(m), rng.normal(size=(m, p))])[:, :p]
        y = X.sum(axis=1) + Z @ rng.normal(size=q) + rng.normal(size=m)
        Xy = np.column_stack([X, y])
        ZtZ.append(Z.T @ Z)
        ZtXy.append(Z.T @ Xy)
        XytXy += Xy.T @ Xy
        n += m
    counts = np.ones(n_groups)
    return SufficientStats(np.array(ZtZ), np.array(ZtXy), XytXy, counts, n, log_weights)


def random_theta(rng, cov):
    diag = cov.rows == cov.cols
    theta = rng.uniform(0.2, 1.5, cov.n_theta)
    return np.where(diag, theta, theta * rng.choice([-1.0, 1.0], cov.n_theta))


@pytest.fixture
def kernels(monkeypatch):
    """Switch between the kernels: ``kernels(True)`` compiled, ``kernels(False)`` numpy."""

    def use(compiled):
        monkeypatch.setattr(_compiled, "AVAILABLE", compiled)

    return use


def _factored_results(objective, theta):
    """What the methods that run once per fit return (from the kept factorization)."""
    b, condvar = objective.conditional_modes(theta)
    rng = np.random.default_rng(0)
    n_groups, q = objective.stats.n_groups, objective.stats.q
    levels = rng.integers(-1, n_groups, 30)
    quad, Gw = objective.prediction_variance(theta, [levels], [rng.normal(size=(30, q))])
    return {
        "blups": b,
        "condvar": condvar,
        "fixed_cov": objective.fixed_effects_cov(theta),
        "blup_gain": objective.blup_gain(theta),
        "quad": quad,
        "Gw": Gw,
        "unprofiled": objective.unprofiled_deviance(theta, 1.3),
    }


CASES = [
    (q, p, kind, reml)
    for q in (1, 2, 3)
    for p in (0, 1, 3)
    for kind in ("unstructured", "diagonal")
    for reml in (True, False)
    if not (q == 1 and kind == "diagonal")
]


@pytest.mark.parametrize(("q", "p", "kind", "reml"), CASES)
def test_criterion_derivatives_and_em_equal_numpy(kernels, q, p, kind, reml):
    rng = np.random.default_rng(100 * q + 10 * p + reml)
    stats = random_stats(rng, 25, q, p, log_weights=0.7)
    cov = CovarianceStructure(q, kind)
    theta = random_theta(rng, cov)
    out = {}
    for compiled in (False, True):
        kernels(compiled)
        objective = ProfiledDeviance(stats, cov, reml)
        assert (objective._compiled_args() is not None) is compiled
        out[compiled] = (
            objective(theta, 0),
            objective(theta, 1),
            objective(theta, 2),
            objective.em_update(theta),
            _factored_results(objective, theta),
        )
    (n0, n1, n2, n_em, n_f), (c0, c1, c2, c_em, c_f) = out[False], out[True]
    for name, value in n_f.items():
        np.testing.assert_allclose(c_f[name], value, rtol=1e-10, atol=1e-12, err_msg=name)
    for n_ev, c_ev in ((n0, c0), (n1, c1), (n2, c2)):
        assert c_ev.deviance == pytest.approx(n_ev.deviance, rel=1e-13)
        np.testing.assert_allclose(c_ev.beta, n_ev.beta, rtol=1e-11, atol=1e-12)
        assert c_ev.sigma2 == pytest.approx(n_ev.sigma2, rel=1e-12)
    assert c0.gradient is None and c0.hessian is None
    assert c1.hessian is None
    scale = np.max(np.abs(n2.gradient))
    np.testing.assert_allclose(c1.gradient, n1.gradient, rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(c2.gradient, n2.gradient, rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(
        c2.hessian, n2.hessian, rtol=1e-10, atol=1e-12 * np.max(np.abs(n2.hessian))
    )
    np.testing.assert_array_equal(c2.hessian, c2.hessian.T)
    np.testing.assert_allclose(c_em, n_em, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("compiled", [False, True])
def test_not_positive_definite_raises_in_both(kernels, compiled):
    kernels(compiled)
    rng = np.random.default_rng(3)
    stats = random_stats(rng, 10, 2, 1)
    cov = CovarianceStructure(2)
    objective = ProfiledDeviance(stats, cov, True)
    with pytest.raises(np.linalg.LinAlgError):
        objective(np.array([np.nan, 0.1, 1.0]), 1)
    bad = SufficientStats(
        stats.ZtZ, stats.ZtXy, stats.XytXy - 1e6 * np.eye(2), stats.counts, stats.n
    )
    with pytest.raises(np.linalg.LinAlgError):
        ProfiledDeviance(bad, cov, True)(np.array([1.0, 0.0, 1.0]), 0)


def test_many_groups_use_numpy_kernels(kernels):
    kernels(True)
    rng = np.random.default_rng(4)
    cov = CovarianceStructure(2)
    few = random_stats(rng, _compiled.MAX_WORK // 2, 2, 1)
    many = random_stats(rng, _compiled.MAX_WORK // 2 + 1, 2, 1)
    assert ProfiledDeviance(few, cov, True)._compiled_args() is not None
    assert ProfiledDeviance(many, cov, True)._compiled_args() is None


@pytest.mark.parametrize("reml", [True, False])
def test_fit_equal_with_either_kernels(kernels, reml):
    data = load_sleepstudy()
    X, y = data[["Days"]], data["Reaction"]
    groups = pd.factorize(data["Subject"])[0]
    fits = {}
    for compiled in (False, True):
        kernels(compiled)
        fits[compiled] = MixedLMRegressor(random_slopes=["Days"], reml=reml).fit(
            X, y, groups=groups
        )
    numpy_fit, compiled_fit = fits[False], fits[True]
    assert compiled_fit.log_likelihood_ == pytest.approx(numpy_fit.log_likelihood_, abs=1e-10)
    assert compiled_fit.n_iter_ == numpy_fit.n_iter_
    np.testing.assert_allclose(compiled_fit.coef_, numpy_fit.coef_, rtol=1e-7)
    for name, cov in numpy_fit.random_effects_cov_.items():
        np.testing.assert_allclose(compiled_fit.random_effects_cov_[name], cov, rtol=1e-6)


def test_em_step_to_a_singular_covariance_equals_numpy(kernels):
    # The second random effect's column is 0 in every group and Lambda's second column
    # is 0: the EM step's psi is singular, so the compiled kernel leaves its factoring
    # (with a jitter) to the covariance structure, as the numpy kernel does.
    rng = np.random.default_rng(5)
    stats = random_stats(rng, 12, 2, 1)
    ZtZ, ZtXy = stats.ZtZ.copy(), stats.ZtXy.copy()
    ZtZ[:, 1, :] = ZtZ[:, :, 1] = 0.0
    ZtXy[:, 1, :] = 0.0
    singular = SufficientStats(ZtZ, ZtXy, stats.XytXy, stats.counts, stats.n)
    cov = CovarianceStructure(2)
    theta = np.array([0.8, 0.0, 0.0])
    steps = {}
    for compiled in (False, True):
        kernels(compiled)
        steps[compiled] = ProfiledDeviance(singular, cov, True).em_update(theta)
    assert np.all(np.isfinite(steps[True]))
    np.testing.assert_allclose(steps[True], steps[False], rtol=1e-10, atol=1e-13)


def test_projection_of_the_exact_fit_check_equals_numpy(kernels):
    # sum_l ZtXy_l' ZtZ_l^+ ZtXy_l, with singular levels (one row with a slope, a slope
    # constant within the level) through the pseudo-inverse in both.
    from sklmm._model import _projected

    rng = np.random.default_rng(6)
    stats = random_stats(rng, 15, 3, 2)
    ZtZ, ZtXy = stats.ZtZ.copy(), stats.ZtXy.copy()
    z = np.array([1.0, 0.5, -2.0])
    ZtZ[3], ZtXy[3] = np.outer(z, z), np.outer(z, [1.0, 2.0, 3.0])  # one row
    ZtZ[7, 2, :] = ZtZ[7, :, 2] = 0.0
    ZtXy[7, 2, :] = 0.0
    out = {}
    for compiled in (False, True):
        kernels(compiled)
        out[compiled] = _projected(ZtZ, ZtXy)
    np.testing.assert_allclose(out[True], out[False], rtol=1e-10)


def test_a_numba_that_cannot_be_imported_falls_back_to_numpy(monkeypatch):
    import sys

    monkeypatch.setattr(_compiled, "AVAILABLE", True)
    monkeypatch.setattr(_compiled, "_kernels", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # "import numba" raises ImportError
    data = load_sleepstudy()
    with pytest.warns(RuntimeWarning, match="numba is installed but cannot be loaded"):
        est = MixedLMRegressor(random_slopes=["Days"]).fit(
            data[["Days"]], data["Reaction"], groups=data["Subject"]
        )
    assert not _compiled.AVAILABLE
    assert est.log_likelihood_ == pytest.approx(-871.8141, abs=1e-4)  # lme4's REML fit


def test_the_solvers_default_tol_is_the_estimators():
    # The precision band of the solvers uses the default tol's rule (DEFAULT_TOL).
    from sklmm import MixedGLMClassifier, MixedLMRegressorCV
    from sklmm._solvers import DEFAULT_TOL

    for est in (MixedLMRegressor(), MixedLMRegressorCV(), MixedGLMClassifier()):
        assert est.get_params()["tol"] == DEFAULT_TOL


def test_the_environment_variable_switches_the_kernels_off():
    # Read once, when sklmm is imported: set it before.
    import os
    import subprocess
    import sys

    code = "import sklmm._compiled as c; print(c.AVAILABLE, c.use_for(18, 2))"
    env = {**os.environ, "SKLMM_DISABLE_NUMBA": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_kernels_that_fail_to_compile_fall_back_to_numpy(monkeypatch):
    # numba compiles on a kernel's first call: available() makes those calls itself, so a
    # failure there (a typing error, say) switches to numpy's kernels before any fit.
    from types import SimpleNamespace

    def fails(*args):
        raise RuntimeError("typing error")

    monkeypatch.setattr(_compiled, "AVAILABLE", True)
    monkeypatch.setattr(_compiled, "_kernels", None)
    monkeypatch.setattr(
        _compiled, "kernels", lambda: SimpleNamespace(**dict.fromkeys(_compiled._PUBLIC, fails))
    )
    data = load_sleepstudy()
    with pytest.warns(RuntimeWarning, match="RuntimeError: typing error"):
        est = MixedLMRegressor(random_slopes=["Days"]).fit(
            data[["Days"]], data["Reaction"], groups=data["Subject"]
        )
    assert not _compiled.AVAILABLE
    assert est.log_likelihood_ == pytest.approx(-871.8141, abs=1e-4)
