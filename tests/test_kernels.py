"""The fast paths of issue 18 against their plain versions.

- the groups-last kernels of the one-factor criterion against numpy's batched LAPACK;
- the exact-fit check with some singular levels against the pseudo-inverse of every level;
- the blocked criterion with a dense contingency table against the sparse one;
- the EM-then-Newton solver's shortcuts (the restart that stops in the basin of the first
  optimum, no second run from lme4's start on the boundary) against the full paths.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from _reference import load_case

from sklmm import MixedLMRegressor, SingularFitWarning, _blocked, _solvers
from sklmm._blocked import BlockedDeviance, blocked_stats
from sklmm._covariance import CovarianceStructure
from sklmm._crossprod import compute_stats
from sklmm._model import _projected
from sklmm._profile import (
    ProfiledDeviance,
    _chol_last,
    _lower_solve_last,
    _upper_solve_t_last,
)
from sklmm._solvers import _in_basin, minimize_deviance
from sklmm.datasets import load_sleepstudy


def _spd_stack(rng, q, g):
    A = rng.standard_normal((g, q, q + 2))
    return A @ np.swapaxes(A, 1, 2) + 0.1 * np.eye(q)


@pytest.mark.parametrize("q", [1, 2, 3, 5])
def test_groups_last_kernels_equal_batched_lapack(q):
    rng = np.random.default_rng(q)
    M = _spd_stack(rng, q, 7)
    B = rng.standard_normal((7, q, 4))
    L_ref = np.linalg.cholesky(M)
    L = _chol_last(np.moveaxis(M, 0, -1).copy())
    np.testing.assert_allclose(np.moveaxis(L, -1, 0), L_ref, rtol=1e-12, atol=1e-13)
    X = _lower_solve_last(L, np.moveaxis(B, 0, -1))
    np.testing.assert_allclose(
        np.moveaxis(X, -1, 0), np.linalg.solve(L_ref, B), rtol=1e-10, atol=1e-12
    )
    Y = _upper_solve_t_last(L, np.moveaxis(B, 0, -1))
    np.testing.assert_allclose(
        np.moveaxis(Y, -1, 0),
        np.linalg.solve(np.swapaxes(L_ref, 1, 2), B),
        rtol=1e-10,
        atol=1e-12,
    )
    # one right-hand side shared by every group: (q, k, 1)
    shared = rng.standard_normal((q, 3))
    Xs = _lower_solve_last(L, shared[:, :, None])
    np.testing.assert_allclose(
        np.moveaxis(Xs, -1, 0), np.linalg.solve(L_ref, np.broadcast_to(shared, (7, q, 3)))
    )


def test_groups_last_cholesky_refuses_an_indefinite_block():
    M = _spd_stack(np.random.default_rng(0), 2, 4)
    M[2] = [[1.0, 2.0], [2.0, 1.0]]  # eigenvalues 3 and -1
    with pytest.raises(np.linalg.LinAlgError):
        _chol_last(np.moveaxis(M, 0, -1).copy())
    # masked: the indefinite group is flagged, the others factored as alone
    L, ok = _chol_last(np.moveaxis(M, 0, -1).copy(), masked=True)
    assert ok.tolist() == [True, True, False, True]
    good = [0, 1, 3]
    np.testing.assert_allclose(np.moveaxis(L, -1, 0)[good], np.linalg.cholesky(M[good]))
    M[2] = [[np.nan, 0.0], [0.0, 1.0]]
    with pytest.raises(np.linalg.LinAlgError):
        _chol_last(np.moveaxis(M, 0, -1).copy())
    assert _chol_last(np.moveaxis(M, 0, -1).copy(), masked=True)[1].tolist() == [
        True,
        True,
        False,
        True,
    ]


def test_projection_with_singular_levels_equals_the_pseudo_inverse():
    rng = np.random.default_rng(1)
    q, m, g = 3, 4, 12
    Z = rng.standard_normal((g, 5, q))
    Z[3, :, 2] = Z[3, :, 1]  # two equal slope columns in level 3
    Z[7, 1:] = 0.0  # level 7: one row
    W = rng.standard_normal((g, 5, m))
    ZtZ = np.swapaxes(Z, 1, 2) @ Z
    ZtW = np.swapaxes(Z, 1, 2) @ W
    expected = sum(ZtW[i].T @ np.linalg.pinv(ZtZ[i], rcond=1e-12) @ ZtW[i] for i in range(g))
    np.testing.assert_allclose(_projected(ZtZ, ZtW), expected, rtol=1e-8)
    regular = [i for i in range(g) if i not in (3, 7)]
    expected_regular = sum(ZtW[i].T @ np.linalg.solve(ZtZ[i], ZtW[i]) for i in regular)
    np.testing.assert_allclose(_projected(ZtZ[regular], ZtW[regular]), expected_regular, rtol=1e-10)


def _crossed(rng, n=300, m1=20, m2=8):
    a, b = rng.integers(0, m1, n), rng.integers(0, m2, n)
    x = rng.standard_normal(n)
    y = 1 + x + rng.standard_normal(m1)[a] + 0.5 * rng.standard_normal(m2)[b]
    y += rng.standard_normal(n)
    X = np.c_[np.ones(n), x]
    return X, y, [a, b], [np.ones((n, 1)), np.c_[np.ones(n), x]]


@pytest.mark.parametrize("reml", [True, False])
def test_blocked_dense_table_equals_sparse(monkeypatch, reml):
    X, y, codes, Zs = _crossed(np.random.default_rng(2))
    stats = blocked_stats(X, y, codes, None, Zs)
    structures = None
    dense = BlockedDeviance(stats, reml, structures)
    assert dense._Bd is not None
    monkeypatch.setattr(_blocked, "SMALL_DENSE_TABLE", 0)
    sparse = BlockedDeviance(stats, reml, structures)
    assert sparse._Bd is None
    rng = np.random.default_rng(3)
    for _ in range(3):
        theta = np.abs(rng.standard_normal(dense.n_theta)) + 0.1
        ev_d, ev_s = dense(theta, 1), sparse(theta, 1)
        assert ev_d.deviance == pytest.approx(ev_s.deviance, rel=1e-12)
        np.testing.assert_allclose(ev_d.gradient, ev_s.gradient, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ev_d.beta, ev_s.beta, rtol=1e-10)


def _sleep_objective(reml=True):
    df = load_sleepstudy()
    days = df["Days"].to_numpy(float)
    X = np.c_[np.ones(len(df)), days - days.mean()]
    Z = np.c_[np.ones(len(df)), days - days.mean()]
    codes = df["Subject"].astype("category").cat.codes.to_numpy()
    stats = compute_stats(X, Z, df["Reaction"].to_numpy(float), codes, codes.max() + 1)
    return ProfiledDeviance(stats, CovarianceStructure(2), reml)


def _sleep_fit():
    df = load_sleepstudy()
    return MixedLMRegressor(random_slopes=["Days"]).fit(
        df[["Days"]], df["Reaction"], groups=df["Subject"]
    )


def test_restart_stops_in_the_basin_of_the_first_optimum(monkeypatch):
    short = _sleep_fit()
    monkeypatch.setattr(_solvers, "BASIN_MAX_DECREASE", 0.0)  # never in the basin
    full = _sleep_fit()
    log_short, log_full = short.fit_log_, full.fit_log_
    n_short = int((log_short["phase"] == "restart").sum())
    n_full = int((log_full["phase"] == "restart").sum())
    assert n_short < n_full
    # the shortened restart's last record is the first optimum, which the fit keeps
    assert log_short["objective"].iloc[-1] == pytest.approx(-2 * short.log_likelihood_)
    newton = log_short[log_short["phase"] == "newton"]["objective"].iloc[-1]
    assert log_short["objective"].iloc[-1] == newton
    # the same optimum as the full restart's
    assert short.log_likelihood_ == pytest.approx(full.log_likelihood_, rel=1e-12)
    pd.testing.assert_frame_equal(
        short.random_effects_cov_["Subject"], full.random_effects_cov_["Subject"], rtol=1e-6
    )


def test_the_basin_test_rejects_other_optima():
    objective = _sleep_objective()
    opt = minimize_deviance(objective, "newton")
    optimum = objective(opt.theta, 2)
    near = objective(opt.theta * (1 + 1e-3), 2)
    assert _in_basin(near, optimum)
    far = objective(opt.theta * 3.0, 2)  # D and its gradient far from the quadratic model
    assert not _in_basin(far, optimum)
    # a point below the optimum is in another basin
    below = objective(opt.theta * (1 + 1e-3), 2)
    below.deviance = optimum.deviance - 1e-3
    assert not _in_basin(below, optimum)


def test_the_boundary_multistart_does_not_repeat_lme4s_start():
    # Dyestuff2's batch variance is 0: the fit is on the boundary, so other starts run.
    case = load_case("dyestuff2_reml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        est = MixedLMRegressor().fit(
            case.X(case.train), case.y(case.train), groups=case.groups(case.train)
        )
    log = est.fit_log_
    starts = log[(log["phase"] == "multistart") & (log["step_size"] == 0.0)]
    # the two random starts only: the restart already ran Newton from lme4's start
    assert len(starts) == 2
    identity_objective = log[log["phase"] == "restart"]["objective"].iloc[0]
    assert (starts["objective"] != identity_objective).all()
    assert est.is_singular_ and est.variance_components_.iloc[0] == 0.0
    assert est.log_likelihood_ == pytest.approx(case.lme4["logLik"], abs=1e-7)


def test_the_precision_rule_holds_only_near_the_convergence_rule():
    # A Newton step that would lower D by less than its rounding ends the fit as converged
    # "to the precision of the criterion" only with the scaled gradient within
    # PRECISION_GRADIENT (100) times the rule; further above it the criterion is too
    # imprecise to place the optimum and the fit must say so.
    from types import SimpleNamespace

    from sklmm._profile import Evaluation
    from sklmm._solvers import PRECISION_GRADIENT, _Run

    objective = SimpleNamespace(cov=CovarianceStructure(1), stats=SimpleNamespace(n=100))
    run = _Run(objective, 1e-7, 0)
    band = PRECISION_GRADIENT * 1e-7 * 100  # the rule is tol * n; theta = 1e3 scales it

    def at(gradient, hessian):
        theta = np.array([1e3])
        ev = Evaluation(theta, 900.0, np.zeros(1), 1.0, np.array([gradient]), hessian)
        return run.at_precision(ev)

    # inside the band: decrement g^2 / h = 2.5e-7 below 1e-9 |D| = 9e-7
    assert at(0.5 * band / 1e3, np.array([[1e-6]]))
    # outside it, with a far smaller decrement: not at the precision of the criterion
    assert not at(2.0 * band / 1e3, np.array([[1e-2]]))
    # inside the band but a decrement above the rounding of D
    assert not at(0.5 * band / 1e3, np.array([[1e-8]]))
