"""The numerical core (no estimator): cross-products, criterion, EM, solvers, BLUPs.

Every quantity of :mod:`sklmm._profile` is computed from the per-group
cross-products only; the tests here recompute it by brute force from the rows
(dense ``V_i = I + Z_i Psi Z_i'`` per group, the multivariate normal density) on
small simulated data sets, and check that the three solvers of
:mod:`sklmm._solvers` reach the same optimum.
"""

import numpy as np
import pytest
from _simulate import simulate

from sklmm._covariance import CovarianceStructure
from sklmm._crossprod import compute_stats
from sklmm._profile import ProfiledDeviance
from sklmm._solvers import minimize_deviance

KINDS = ("unstructured", "diagonal")


# -- data ------------------------------------------------------------------
def simulate_zero_slope_variance(seed, n_groups=30, m=8, shrink=0.8):
    """Random intercept (variance 1) and a random slope of true variance 0.

    The slope of ``z`` is a fixed effect as well. Each group's least-squares slope of
    the noise on ``z`` is pulled towards the common slope by ``shrink``, so the
    estimated slope variance is clearly at its bound 0 (a boundary fit).
    """
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(n_groups), m)
    n = len(codes)
    z = rng.normal(size=n)
    X = np.column_stack([np.ones(n), z, rng.normal(size=n)])
    Z = np.column_stack([np.ones(n), z])
    e = rng.normal(size=n)
    slopes = np.array([np.polyfit(z[codes == g], e[codes == g], 1)[0] for g in range(n_groups)])
    e -= shrink * (slopes - slopes.mean())[codes] * z
    y = X @ [1.0, 2.0, -1.0] + rng.normal(size=n_groups)[codes] + e
    return X, Z, y, codes, n_groups


UNEQUAL_SIZES = np.array([1, 1, 1, 2, 3, 1, 15, 20, 4, 1, 6, 30, 2, 1, 8, 1, 9, 3, 12, 1])

DATASETS = {
    "q1": lambda: simulate(1, 1),
    "q2": lambda: simulate(2, 2, n_groups=30),
    "q3": lambda: simulate(3, 3, n_groups=40),
    "zero-slope-variance": lambda: simulate_zero_slope_variance(1),
    "unequal-singletons": lambda: simulate(4, 2, sizes=UNEQUAL_SIZES),
}


def make_objective(data, kind, reml):
    X, Z, y, codes, n_groups = data
    stats = compute_stats(X, Z, y, codes, n_groups)
    return ProfiledDeviance(stats, CovarianceStructure(Z.shape[1], kind), reml)


def random_theta(rng, cov):
    theta = 0.5 * rng.normal(size=cov.n_theta)
    diag = cov.rows == cov.cols
    theta[diag] = rng.uniform(0.2, 2.0, size=diag.sum())
    return theta


# -- brute force ------------------------------------------------------------
def brute_force(data, psi, reml):
    """GLS at ``Psi`` from dense per-group matrices; ``-2 log L`` from the normal density.

    Returns ``(deviance, beta, sigma2, blups, condvar)``. ``V_total_i = sigma2 V_i`` with
    ``V_i = I + Z_i Psi Z_i'``; REML omits the constant ``log|X'X|`` (lme4's
    ``REMLcrit``).
    """
    X, Z, y, codes, n_groups = data
    n, p = X.shape
    groups = [np.flatnonzero(codes == g) for g in range(n_groups)]
    V = [np.eye(len(i)) + Z[i] @ psi @ Z[i].T for i in groups]
    C = sum(X[i].T @ np.linalg.solve(Vi, X[i]) for i, Vi in zip(groups, V, strict=True))
    c = sum(X[i].T @ np.linalg.solve(Vi, y[i]) for i, Vi in zip(groups, V, strict=True))
    beta = np.linalg.solve(C, c)
    r = y - X @ beta
    r2 = sum(r[i] @ np.linalg.solve(Vi, r[i]) for i, Vi in zip(groups, V, strict=True))
    k = n - p if reml else n
    sigma2 = r2 / k
    # -2 log of the N(X beta, sigma2 V) density at y, at the profiled sigma2
    dev = sum(np.linalg.slogdet(2 * np.pi * sigma2 * Vi)[1] for Vi in V) + r2 / sigma2
    if reml:
        # the REML likelihood integrates beta out: + log|X'V_total^{-1}X| - p log(2 pi)
        dev += np.linalg.slogdet(C / sigma2)[1] - p * np.log(2 * np.pi)
    Sigma = sigma2 * psi
    q = Z.shape[1]
    blups, condvar = np.zeros((n_groups, q)), np.zeros((n_groups, q, q))
    for g, i in enumerate(groups):
        V_total = sigma2 * V[g]
        blups[g] = Sigma @ Z[i].T @ np.linalg.solve(V_total, r[i])
        condvar[g] = Sigma - Sigma @ Z[i].T @ np.linalg.solve(V_total, Z[i] @ Sigma)
    return dev, beta, sigma2, blups, condvar


# -- sufficient statistics ----------------------------------------------------
def naive_stats(X, Z, y, codes, n_groups):
    Xy = np.column_stack([X, y])
    ZtZ = np.stack([Z[codes == g].T @ Z[codes == g] for g in range(n_groups)])
    ZtXy = np.stack([Z[codes == g].T @ Xy[codes == g] for g in range(n_groups)])
    return ZtZ, ZtXy, Xy.T @ Xy, np.array([(codes == g).sum() for g in range(n_groups)])


@pytest.mark.parametrize("dense", [True, False], ids=["dense-indicator", "sparse"])
@pytest.mark.parametrize("q", [1, 2, 3])
def test_compute_stats_matches_naive_loop_for_any_chunking(q, dense, monkeypatch):
    # Small chunks go through a dense indicator product, larger ones a sparse one: both.
    import sklmm._crossprod

    monkeypatch.setattr(sklmm._crossprod, "DENSE_INDICATOR_MAX", 1 << 30 if dense else 0)
    X, Z, y, codes, n_groups = simulate(10 + q, q, p=4, sizes=UNEQUAL_SIZES)
    ZtZ, ZtXy, XytXy, counts = naive_stats(X, Z, y, codes, n_groups)
    default = compute_stats(X, Z, y, codes, n_groups)
    assert (default.n, default.p, default.q, default.n_groups) == (len(y), 4, q, n_groups)
    for chunk_rows in (1, 7, len(y) - 1, len(y)):
        for X_in, Z_in in ((X, Z), (lambda a, b: X[a:b], lambda a, b: Z[a:b])):
            st = compute_stats(X_in, Z_in, y, codes, n_groups, chunk_rows=chunk_rows)
            for got, want in (
                (st.ZtZ, default.ZtZ),
                (st.ZtXy, default.ZtXy),
                (st.XytXy, default.XytXy),
            ):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(st.counts, counts)
    np.testing.assert_allclose(default.ZtZ, ZtZ, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(default.ZtXy, ZtXy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(default.XytXy, XytXy, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(default.counts, counts)


def test_compute_stats_empty_group():
    """A level with no rows gets zero cross-products and count 0."""
    X, Z, y, codes, n_groups = simulate(5, 2)
    st = compute_stats(X, Z, y, codes + 1, n_groups + 1, chunk_rows=7)
    assert st.counts[0] == 0
    np.testing.assert_array_equal(st.ZtZ[0], 0.0)
    np.testing.assert_array_equal(st.ZtXy[0], 0.0)
    np.testing.assert_allclose(st.ZtZ[1:], compute_stats(X, Z, y, codes, n_groups).ZtZ)


# -- the criterion ----------------------------------------------------------
@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["q1", "q2", "q3", "unequal-singletons"])
def test_criterion_equals_brute_force(name, kind, reml):
    data = DATASETS[name]()
    obj = make_objective(data, kind, reml)
    rng = np.random.default_rng(0)
    thetas = [obj.cov.initial_theta()] + [random_theta(rng, obj.cov) for _ in range(3)]
    boundary = random_theta(rng, obj.cov)
    boundary[-1] = 0.0  # last diagonal entry of Lambda: a singular Psi
    for theta in [*thetas, boundary, np.zeros(obj.cov.n_theta)]:
        lam = obj.cov.lam(theta)
        dev, beta, sigma2, _, _ = brute_force(data, lam @ lam.T, reml)
        ev = obj(theta)
        assert ev.deviance == pytest.approx(dev, rel=1e-11, abs=1e-9)
        np.testing.assert_allclose(ev.beta, beta, rtol=1e-9, atol=1e-10)
        assert ev.sigma2 == pytest.approx(sigma2, rel=1e-10)


def test_criterion_without_random_effects_is_least_squares():
    """``q = 0``: D is the (REML) criterion of ordinary least squares."""
    X, _, y, codes, n_groups = simulate(6, 1, p=3)
    n, p = X.shape
    st = compute_stats(X, np.zeros((n, 0)), y, codes, n_groups)
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    rss = np.sum((y - X @ beta) ** 2)
    for reml in (True, False):
        obj = ProfiledDeviance(st, CovarianceStructure(0), reml)
        k = n - p if reml else n
        want = k * (1 + np.log(2 * np.pi * rss / k))
        if reml:
            want += np.linalg.slogdet(X.T @ X)[1]
        ev = obj(np.zeros(0), 2)
        assert ev.deviance == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose(ev.beta, beta, rtol=1e-10)
        assert ev.gradient.shape == (0,) and ev.hessian.shape == (0, 0)
        result = minimize_deviance(obj)
        assert result.converged


def test_conditional_modes_without_random_effects():
    """``q = 0``: the documented shapes (n_groups, 0) and (n_groups, 0, 0)."""
    X, _, y, codes, n_groups = simulate(6, 1, p=3)
    st = compute_stats(X, np.zeros((len(y), 0)), y, codes, n_groups)
    obj = ProfiledDeviance(st, CovarianceStructure(0), True)
    b, condvar = obj.conditional_modes(np.zeros(0))
    assert b.shape == (n_groups, 0) and condvar.shape == (n_groups, 0, 0)


# -- BLUPs --------------------------------------------------------------------
@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["q1", "q3", "unequal-singletons"])
def test_conditional_modes_equal_brute_force(name, kind, reml):
    data = DATASETS[name]()
    _, Z, _, codes, n_groups = data
    obj = make_objective(data, kind, reml)
    rng = np.random.default_rng(1)
    theta_opt = minimize_deviance(obj).theta
    for theta in (theta_opt, random_theta(rng, obj.cov)):
        lam = obj.cov.lam(theta)
        psi = lam @ lam.T
        _, _, sigma2, blups, condvar = brute_force(data, psi, reml)
        b, cv = obj.conditional_modes(theta)
        scale = np.max(np.abs(blups))
        np.testing.assert_allclose(b, blups, rtol=1e-9, atol=1e-11 * scale)
        np.testing.assert_allclose(cv, condvar, rtol=1e-9, atol=1e-11 * np.max(np.abs(condvar)))
        # sigma2 (Psi^{-1} + Z_i'Z_i)^{-1}, Psi positive definite here
        for g in range(n_groups):
            Zg = Z[codes == g]
            want = sigma2 * np.linalg.inv(np.linalg.inv(psi) + Zg.T @ Zg)
            np.testing.assert_allclose(cv[g], want, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(cv[g], cv[g].T, rtol=0, atol=1e-14 * np.abs(want).max())


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_conditional_modes_with_singular_psi(reml):
    """With a zero column of ``Lambda`` the BLUPs and covariances lie in range(Psi)."""
    data = DATASETS["q3"]()
    obj = make_objective(data, "unstructured", reml)
    theta = random_theta(np.random.default_rng(2), obj.cov)
    theta[-1] = 0.0
    lam = obj.cov.lam(theta)
    _, _, _, blups, condvar = brute_force(data, lam @ lam.T, reml)
    b, cv = obj.conditional_modes(theta)
    np.testing.assert_allclose(b, blups, rtol=1e-9, atol=1e-11 * np.max(np.abs(blups)))
    np.testing.assert_allclose(cv, condvar, rtol=1e-9, atol=1e-11 * np.max(np.abs(condvar)))
    # orthogonal to the null space of Psi
    null = np.linalg.svd(lam.T)[2][-1]
    np.testing.assert_allclose(b @ null, 0.0, atol=1e-12 * np.max(np.abs(b)))
    np.testing.assert_allclose(cv @ null, 0.0, atol=1e-12 * np.max(np.abs(cv)))


# -- EM -------------------------------------------------------------------------
@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(DATASETS))
def test_em_never_increases_the_criterion(name, kind, reml):
    obj = make_objective(DATASETS[name](), kind, reml)
    rng = np.random.default_rng(3)
    for start in (obj.cov.initial_theta(), 3.0 * random_theta(rng, obj.cov)):
        theta, dev = start, obj(start).deviance
        first = dev
        for _ in range(30):
            theta = obj.em_update(theta)
            assert theta.shape == (obj.cov.n_theta,)
            assert np.all(theta >= obj.cov.lower_bounds)
            new = obj(theta).deviance
            assert new <= dev + 1e-12 * abs(dev)
            dev = new
        assert dev < first


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["q1", "q2", "q3", "unequal-singletons"])
def test_em_fixed_point_at_the_optimum(name, kind, reml):
    """At an interior stationary point of D the EM map is the identity."""
    obj = make_objective(DATASETS[name](), kind, reml)
    result = minimize_deviance(obj, "newton")
    assert result.converged
    np.testing.assert_allclose(obj.em_update(result.theta), result.theta, rtol=1e-5, atol=1e-7)


def test_em_diagonal_step_keeps_the_structure():
    obj = make_objective(DATASETS["q3"](), "diagonal", True)
    theta = obj.em_update(obj.cov.initial_theta())
    assert theta.shape == (3,)
    lam = obj.cov.lam(theta)
    np.testing.assert_array_equal(lam, np.diag(np.diag(lam)))


# -- solvers --------------------------------------------------------------------
@pytest.fixture(scope="module")
def datasets():
    return {name: make() for name, make in DATASETS.items()}


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(DATASETS))
def test_solvers_agree(datasets, name, kind, reml):
    """EM alone, Newton alone and EM-then-Newton reach the same optimum.

    EM gets 5000 iterations: away from the boundary it converges in under 40, on the
    zero-slope-variance data with a diagonal structure (optimum on the boundary) in under
    2000; with an unstructured one the optimum is just inside and EM alone reports that it
    did not converge.
    """
    obj = make_objective(datasets[name], kind, reml)
    results = {
        solver: minimize_deviance(obj, solver, max_iter=5000 if solver == "em" else 100)
        for solver in ("em-newton", "em", "newton")
    }
    ref = results["em-newton"]
    for solver, result in results.items():
        ev = result.evaluation
        report = (
            f"{solver}: {result.message} after {result.n_iter} iterations; "
            f"D - D_ref = {ev.deviance - ref.evaluation.deviance:.3g}, "
            f"theta = {result.theta}, theta_ref = {ref.theta}, gradient = {ev.gradient}"
        )
        if solver == "em" and name == "zero-slope-variance" and kind == "unstructured":
            # The optimum has a tiny but nonzero slope variance (theta_21 ~ 4e-4): EM alone
            # creeps towards it sublinearly and cannot take the boundary shortcut. It must
            # then say so, and never claim convergence at another point.
            assert not result.converged and "max_iter" in result.message, report
            assert ev.deviance >= ref.evaluation.deviance - 1e-9, report
            continue
        assert result.converged, report
        assert ev.deviance == pytest.approx(ref.evaluation.deviance, abs=1e-7), report
        np.testing.assert_allclose(result.theta, ref.theta, rtol=0, atol=1e-4, err_msg=report)
        np.testing.assert_allclose(result.evaluation.beta, ref.evaluation.beta, rtol=1e-4)
        assert result.evaluation.sigma2 == pytest.approx(ref.evaluation.sigma2, rel=1e-4)
    if name == "zero-slope-variance":
        # the slope's column of Lambda (its diagonal entry) is at the bound 0
        assert results["newton"].theta[-1] < 1e-6
        assert results["em-newton"].theta[-1] < 1e-6


@pytest.mark.parametrize("solver", ["em-newton", "em", "newton"])
def test_solvers_from_a_far_start(solver):
    obj = make_objective(DATASETS["q2"](), "unstructured", True)
    ref = minimize_deviance(obj, "newton")
    result = minimize_deviance(obj, solver, theta0=[20.0, -5.0, 0.01], max_iter=5000)
    assert result.converged, result.message
    assert result.evaluation.deviance == pytest.approx(ref.evaluation.deviance, abs=1e-7)
    np.testing.assert_allclose(result.theta, ref.theta, atol=1e-4)


# -- covariance structure ---------------------------------------------------------
@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_covariance_structure_layout(q):
    full = CovarianceStructure(q)
    diag = CovarianceStructure(q, "diagonal")
    assert full.n_theta == q * (q + 1) // 2 and diag.n_theta == q
    assert np.all(full.rows >= full.cols)
    np.testing.assert_array_equal(diag.rows, np.arange(q))
    np.testing.assert_array_equal(diag.cols, np.arange(q))
    for cov in (full, diag):
        on_diag = cov.rows == cov.cols
        np.testing.assert_array_equal(cov.lower_bounds[on_diag], 0.0)
        assert np.all(np.isneginf(cov.lower_bounds[~on_diag]))
        np.testing.assert_array_equal(cov.lam(cov.initial_theta()), np.eye(q))
        # basis[a] = d Lambda / d theta_a, and Lambda is linear in theta
        basis = cov.basis()
        assert basis.shape == (cov.n_theta, q, q)
        theta = np.random.default_rng(q).normal(size=cov.n_theta)
        np.testing.assert_array_equal(np.tensordot(theta, basis, axes=1), cov.lam(theta))
        for a in range(cov.n_theta):
            e = np.zeros(cov.n_theta)
            e[a] = 1.0
            np.testing.assert_array_equal(basis[a], cov.lam(e))
        lam = cov.lam(theta)
        np.testing.assert_array_equal(lam, np.tril(lam))
    with pytest.raises(ValueError, match="covariance_type"):
        CovarianceStructure(q, "compound")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_covariance_round_trip(q, kind):
    cov = CovarianceStructure(q, kind)
    rng = np.random.default_rng(q)
    for _ in range(5):
        theta = random_theta(rng, cov)
        lam = cov.lam(theta)
        psi = lam @ lam.T
        np.testing.assert_allclose(cov.theta_from_psi(psi), theta, rtol=1e-10, atol=1e-12)
        # Lambda and -Lambda (columns of either sign) give the same Psi
        signs = rng.choice([-1.0, 1.0], size=q)
        np.testing.assert_allclose(
            cov.theta_from_psi((lam * signs) @ (lam * signs).T), theta, rtol=1e-10, atol=1e-12
        )
    # Psi from a Cholesky factor of any SPD matrix (the EM update's path)
    A = rng.normal(size=(q, q))
    psi = A @ A.T + 0.1 * np.eye(q)
    if kind == "diagonal":
        psi = np.diag(np.diag(psi))
    lam = cov.lam(cov.theta_from_psi(psi))
    np.testing.assert_allclose(lam @ lam.T, psi, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_covariance_round_trip_singular(kind):
    """A PSD, singular Psi (a boundary fit) comes back within the documented jitter."""
    cov = CovarianceStructure(3, kind)
    theta = random_theta(np.random.default_rng(4), cov)
    theta[-1] = 0.0
    lam = cov.lam(theta)
    psi = lam @ lam.T
    back = cov.theta_from_psi(psi)
    assert np.all(back >= cov.lower_bounds)
    lam_back = cov.lam(back)
    np.testing.assert_allclose(lam_back @ lam_back.T, psi, rtol=0, atol=1e-10 * np.trace(psi))
    np.testing.assert_allclose(back, theta, rtol=0, atol=1e-5)
    assert np.all(np.isfinite(cov.theta_from_psi(np.zeros((3, 3)))))
