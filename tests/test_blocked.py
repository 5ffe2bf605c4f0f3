"""The blocked-Cholesky criterion for several random-intercept terms (:mod:`sklmm._blocked`).

* against lme4 on the nested ``pastes_reml`` (``(1 | batch/cask)``, i.e. the terms
  ``batch`` and ``batch:cask``) and the crossed ``penicillin_reml`` (``(1 | plate) +
  (1 | sample)``): the criterion at lme4's ``theta``, and the fit (log-likelihood, fixed
  effects, variances, BLUPs and their conditional variances);
* against a dense computation from ``V = I + Z Psi Z'`` on a small three-term design;
* with one term, against the one-factor :class:`sklmm._profile.ProfiledDeviance`;
* the analytic gradient against central differences (interior points, a zero and a
  small ``theta``);
* a fit of an InstEval-shaped simulated design (crossed factors of 900 and 300 levels
  plus one of 14), without timing.
"""

import numpy as np
import pytest
from _reference import load_case

from sklmm._blocked import BlockedDeviance, blocked_stats, minimize_blocked
from sklmm._covariance import CovarianceStructure
from sklmm._crossprod import compute_stats
from sklmm._profile import ProfiledDeviance

CROSSED_CASES = ("pastes_reml", "penicillin_reml")


def case_design(name):
    """``X``, ``y``, the codes and level labels of every term, and lme4's ``theta``.

    A term's labels are its group columns joined by ``:`` (the ``ranef`` levels);
    lme4's ``theta`` is matched to the terms by lme4's group names.
    """
    case = load_case(name)
    train = case.train
    X = train[["X:" + c for c in case.spec["fixed"]]].to_numpy(float)
    y = case.y(train)
    codes, labels = [], []
    for term in case.spec["random"]:
        cols = [term["group"]] if isinstance(term["group"], str) else term["group"]
        joined = train[cols].astype(str).agg(":".join, axis=1).to_numpy()
        levels, code = np.unique(joined, return_inverse=True)
        codes.append(code)
        labels.append(levels)
    by_group = {
        name.split(".(")[0]: value
        for name, value in zip(
            case.lme4["theta"]["names"], case.lme4["theta"]["values"], strict=True
        )
    }
    theta = np.array([by_group[t["lme4_group"]] for t in case.lme4["random_terms"]])
    return case, X, y, codes, labels, theta


@pytest.fixture(scope="module", params=CROSSED_CASES)
def fitted_case(request):
    case, X, y, codes, labels, theta = case_design(request.param)
    objective = BlockedDeviance(blocked_stats(X, y, codes), case.spec["reml"])
    result = minimize_blocked(objective)
    return case, objective, labels, theta, result


def test_criterion_at_lme4_theta(fitted_case):
    # REMLcrit(fit) at lme4's own theta.
    case, objective, _, theta, _ = fitted_case
    ev = objective(theta)
    assert ev.deviance == pytest.approx(case.lme4["objective"], rel=1e-8)
    np.testing.assert_allclose(ev.beta, case.lme4["fixef"]["values"], rtol=1e-8)
    assert ev.sigma2 == pytest.approx(case.lme4["sigma2"], rel=1e-8)


def test_fit_against_lme4(fitted_case):
    case, _, _, _, result = fitted_case
    ev = result.evaluation
    assert result.converged
    assert -0.5 * ev.deviance >= case.lme4["logLik"] - 1e-6
    np.testing.assert_allclose(ev.beta, case.lme4["fixef"]["values"], rtol=1e-4)
    variances = ev.sigma2 * result.theta**2
    ref = [t["cov"][0][0] for t in case.lme4["random_terms"]]
    np.testing.assert_allclose(variances, ref, rtol=1e-3)
    assert ev.sigma2 == pytest.approx(case.lme4["sigma2"], rel=1e-3)


def test_blups_against_lme4(fitted_case):
    # ranef(fit, condVar = TRUE), levels matched by label.
    case, objective, labels, _, result = fitted_case
    b, condvar = objective.conditional_modes(result.theta)
    for k, ref in enumerate(case.lme4["ranef"]):
        position = {label: i for i, label in enumerate(labels[k])}
        idx = [position[label] for label in ref["levels"]]
        assert len(idx) == len(labels[k])
        want = np.asarray(ref["values"])[:, 0]
        np.testing.assert_allclose(b[k][idx, 0], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
        want_cv = np.asarray(ref["condvar"]).reshape(len(idx))
        np.testing.assert_allclose(condvar[k][idx, 0, 0], want_cv, rtol=1e-3)


# -- simulated designs --------------------------------------------------------------


def simulate(seed, n, levels, p=3, sd=(0.6, 0.5, 0.3), nested_last=False):
    """Rows with crossed factors of the given numbers of levels (each level present).

    With ``nested_last``, the last factor is a function of the first (as InstEval's
    department is of the lecturer), so the design mixes crossing and nesting.
    """
    rng = np.random.default_rng(seed)
    codes = []
    for m in levels:
        c = np.concatenate([np.arange(m), rng.integers(m, size=n - m)])
        rng.shuffle(c)
        codes.append(c)
    if nested_last:
        parent = np.concatenate([np.arange(levels[-1]), rng.integers(levels[-1], size=levels[0])])
        codes[-1] = parent[: levels[0]][codes[0]]
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    y = X @ rng.normal(size=p) + rng.normal(size=n)
    for c, m, s in zip(codes, levels, sd, strict=False):
        y += s * rng.normal(size=m)[c]
    return X, y, codes


def dense_deviance(X, y, codes, theta, reml):
    """``D(theta)``, ``beta`` and ``sigma2`` of random intercepts from the n x n ``V``."""
    K = len(codes)
    return dense_model(X, y, codes, [None] * K, [CovarianceStructure(1)] * K, theta, reml)[:3]


@pytest.mark.parametrize("reml", [True, False])
def test_criterion_against_dense(reml):
    # Three terms, given in an order that the blocked engine must sort (5, 17, 9 levels).
    X, y, codes = simulate(0, 120, (5, 17, 9))
    objective = BlockedDeviance(blocked_stats(X, y, codes), reml)
    rng = np.random.default_rng(1)
    for theta in [rng.uniform(0.1, 2.0, 3), np.array([0.0, 1.3, 0.4]), np.array([0.7, 0.0, 0.0])]:
        ev = objective(theta)
        dev, beta, sigma2 = dense_deviance(X, y, codes, theta, reml)
        assert ev.deviance == pytest.approx(dev, rel=1e-10)
        np.testing.assert_allclose(ev.beta, beta, rtol=1e-8)
        assert ev.sigma2 == pytest.approx(sigma2, rel=1e-8)


@pytest.mark.parametrize("reml", [True, False])
def test_one_term_equals_one_factor_engine(reml):
    X, y, (codes,) = simulate(2, 150, (12,))
    blocked = BlockedDeviance(blocked_stats(X, y, [codes]), reml)
    stats = compute_stats(X, np.ones((len(y), 1)), y, codes, 12)
    one = ProfiledDeviance(stats, CovarianceStructure(1), reml)
    rng = np.random.default_rng(3)
    for theta in [*rng.uniform(0.05, 3.0, (4, 1)), np.zeros(1)]:
        a, b = blocked(theta, 1), one(theta, 1)
        assert a.deviance == pytest.approx(b.deviance, rel=1e-10)
        np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)
        assert a.sigma2 == pytest.approx(b.sigma2, rel=1e-10)
        np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-10)
    b_blocked, cv_blocked = blocked.conditional_modes(np.array([0.8]))
    b_one, cv_one = one.conditional_modes(np.array([0.8]))
    np.testing.assert_allclose(b_blocked[0], b_one, rtol=1e-10)
    np.testing.assert_allclose(cv_blocked[0], cv_one, rtol=1e-10)


def fd_gradient(objective, theta, h):
    out = np.empty(len(theta))
    for a, e in enumerate(np.eye(len(theta))):
        out[a] = (objective(theta + h * e).deviance - objective(theta - h * e).deviance) / (2 * h)
    return out


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize(
    "theta",
    [[0.4, 1.7, 0.9, 0.6], [1.2, 0.0, 0.3, 2.0], [1e-4, 0.8, 0.5, 1.1]],
    ids=["interior", "zero", "small"],
)
def test_gradient_against_finite_differences(reml, theta):
    # Four terms: three crossed, one nested in the first; 40, 25, 60 and 6 levels.
    X, y, codes = simulate(4, 300, (40, 25, 60, 6), sd=(0.6, 0.5, 0.8, 0.3), nested_last=True)
    objective = BlockedDeviance(blocked_stats(X, y, codes), reml)
    theta = np.array(theta)
    grad = objective(theta, 1).gradient
    # At theta_k = 0 the criterion is even in theta_k: one-sided differences there.
    h = 1e-5
    fd = fd_gradient(objective, np.where(theta == 0, h, theta), h)
    fd[theta == 0] = 0.0
    scale = np.abs(fd).max()
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * scale)
    assert np.all(grad[theta == 0] == 0.0)


def test_insteval_shaped_design_fits():
    # 20,000 rows; 900 x 300 crossed levels plus 14 nested in the 300 (InstEval's shape,
    # scaled down); given in the order (300, 900, 14).
    X, y, codes = simulate(5, 20_000, (300, 900, 14), p=4, sd=(0.5, 0.6, 0.3), nested_last=True)
    stats = blocked_stats(X, y, codes)
    assert list(stats.n_levels) == [900, 300, 14]
    assert list(stats.order) == [1, 0, 2]
    objective = BlockedDeviance(stats, reml=True)
    result = minimize_blocked(objective)
    ev = result.evaluation
    assert result.converged
    # A minimum: central differences vanish relative to the curvature scale.
    fd = fd_gradient(objective, result.theta, 1e-4)
    assert np.abs(fd).max() < 1e-2
    assert ev.deviance <= objective(np.ones(3)).deviance
    # The estimates are close to the simulated standard deviations (rough check).
    sd = np.sqrt(ev.sigma2) * result.theta
    np.testing.assert_allclose(sd[:2], [0.5, 0.6], rtol=0.25)
    assert ev.sigma2 == pytest.approx(1.0, rel=0.05)
    b, _ = objective.conditional_modes(result.theta)
    assert [len(v) for v in b] == [300, 900, 14]


# -- terms with random slopes -------------------------------------------------------


def simulate_slopes(seed, n=240, levels=(30, 8, 5)):
    """Three crossed terms: (1 + x | a), (1 + x || b) and (1 | c), with their Z columns."""
    rng = np.random.default_rng(seed)
    X, y, codes = simulate(seed, n, levels)
    x = X[:, 1]
    Zs = [np.column_stack([np.ones(n), x]), np.column_stack([np.ones(n), x]), None]
    for c, m, s in zip(codes[:2], levels[:2], (0.4, 0.3), strict=True):
        y = y + s * rng.normal(size=m)[c] * x
    structures = [
        CovarianceStructure(2, "unstructured"),
        CovarianceStructure(2, "diagonal"),
        CovarianceStructure(1),
    ]
    return X, y, codes, Zs, structures


def dense_model(X, y, codes, Zs, structures, theta, reml):
    """Deviance, beta, sigma2, BLUPs and condvar from the n x n ``V`` (small designs only)."""
    n, p = X.shape
    blocks, lam_blocks, start = [], [], 0
    for c, Z, s in zip(codes, Zs, structures, strict=True):
        Z = np.ones((n, 1)) if Z is None else Z
        m, q = c.max() + 1, Z.shape[1]
        full = (np.eye(m)[c][:, :, None] * Z[:, None, :]).reshape(n, m * q)
        blocks.append(full)
        lam_blocks.append(np.kron(np.eye(m), s.lam(theta[start : start + s.n_theta])))
        start += s.n_theta
    Z = np.hstack(blocks)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    o = 0
    for lb in lam_blocks:
        Lam[o : o + len(lb), o : o + len(lb)] = lb
        o += len(lb)
    ZL = Z @ Lam
    V = np.eye(n) + ZL @ ZL.T
    Vi = np.linalg.inv(V)
    C = X.T @ Vi @ X
    beta = np.linalg.solve(C, X.T @ Vi @ y)
    r = y - X @ beta
    r2 = r @ Vi @ r
    k = n - p if reml else n
    dev = np.linalg.slogdet(V)[1] + k * (1 + np.log(2 * np.pi * r2 / k))
    if reml:
        dev += np.linalg.slogdet(C)[1]
    sigma2 = r2 / k
    Minv = np.linalg.inv(ZL.T @ ZL + np.eye(ZL.shape[1]))
    b = Lam @ Minv @ ZL.T @ r
    cv = sigma2 * Lam @ Minv @ Lam.T
    return dev, beta, sigma2, b, cv


def split_levels(b_all, cv_all, codes, Zs):
    """The dense BLUPs and condvar split per term as (m, q) and (m, q, q)."""
    out_b, out_cv, o = [], [], 0
    for c, Z in zip(codes, Zs, strict=True):
        m, q = c.max() + 1, 1 if Z is None else Z.shape[1]
        idx = o + np.arange(m * q).reshape(m, q)
        out_b.append(b_all[idx])
        out_cv.append(cv_all[idx[:, :, None], idx[:, None, :]])
        o += m * q
    return out_b, out_cv


SLOPE_THETAS = {
    "interior": [0.9, -0.4, 0.6, 1.1, 0.5, 0.7],
    "zero_slope": [0.9, 0.3, 0.0, 0.0, 0.5, 0.7],
    "small": [1e-4, 0.2, 0.6, 0.8, 1e-3, 0.0],
}


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("which", list(SLOPE_THETAS))
def test_slopes_against_dense(reml, which):
    # Term sizes 30, 8, 5 but given in the order (8, 30, 5) so that sorting moves a
    # slope term with a diagonal structure into the rest block.
    X, y, codes, Zs, structures = simulate_slopes(6)
    perm = [1, 0, 2]
    codes, Zs, structures = (
        [codes[i] for i in perm],
        [Zs[i] for i in perm],
        [structures[i] for i in perm],
    )
    t = SLOPE_THETAS[which]
    theta = np.array([t[3], t[4], t[0], t[1], t[2], t[5]])  # (b: 2 diag), (a: 3), (c: 1)
    objective = BlockedDeviance(blocked_stats(X, y, codes, Z_list=Zs), reml, structures)
    ev = objective(theta)
    dev, beta, sigma2, b_all, cv_all = dense_model(X, y, codes, Zs, structures, theta, reml)
    assert ev.deviance == pytest.approx(dev, rel=1e-10)
    np.testing.assert_allclose(ev.beta, beta, rtol=1e-8)
    assert ev.sigma2 == pytest.approx(sigma2, rel=1e-8)
    b, cv = objective.conditional_modes(theta)
    want_b, want_cv = split_levels(b_all, cv_all, codes, Zs)
    for k in range(3):
        np.testing.assert_allclose(b[k], want_b[k], rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(cv[k], want_cv[k], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("which", list(SLOPE_THETAS))
@pytest.mark.parametrize("first", ["unstructured", "diagonal"])
def test_slopes_gradient_against_finite_differences(reml, which, first):
    X, y, codes, Zs, structures = simulate_slopes(7)
    structures[0] = CovarianceStructure(2, first)
    theta = np.array(SLOPE_THETAS[which])
    if first == "diagonal":
        theta = np.delete(theta, 1)
    objective = BlockedDeviance(blocked_stats(X, y, codes, Z_list=Zs), reml, structures)
    grad = objective(theta, 1).gradient
    lower = objective.lower_bounds
    at_zero = theta <= lower
    h = 1e-5
    fd = fd_gradient(objective, np.where(at_zero, h, theta), h)
    fd[at_zero] = 0.0
    grad = np.where(at_zero, 0.0, grad) if np.all(grad[at_zero] == 0) else grad
    scale = np.abs(fd).max()
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("kind", ["unstructured", "diagonal"])
@pytest.mark.parametrize("reml", [True, False])
def test_one_slope_term_equals_one_factor_engine(kind, reml):
    X, y, codes, Zs, _ = simulate_slopes(8)
    Z, c = Zs[0], codes[0]
    cov = CovarianceStructure(2, kind)
    blocked = BlockedDeviance(blocked_stats(X, y, [c], Z_list=[Z]), reml, [cov])
    one = ProfiledDeviance(compute_stats(X, Z, y, c, c.max() + 1), cov, reml)
    rng = np.random.default_rng(9)
    for theta in [rng.uniform(0.1, 1.5, cov.n_theta), cov.initial_theta() * 0.0]:
        a, b = blocked(theta, 1), one(theta, 1)
        assert a.deviance == pytest.approx(b.deviance, rel=1e-10)
        np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-9)
    theta = rng.uniform(0.1, 1.5, cov.n_theta)
    (b_blocked,), (cv_blocked,) = blocked.conditional_modes(theta)
    b_one, cv_one = one.conditional_modes(theta)
    np.testing.assert_allclose(b_blocked, b_one, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cv_blocked, cv_one, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(
        blocked.fixed_effects_cov(theta), one.fixed_effects_cov(theta), rtol=1e-9
    )


def test_slopes_fit_reaches_a_minimum():
    X, y, codes, Zs, structures = simulate_slopes(10, n=600, levels=(60, 12, 6))
    objective = BlockedDeviance(blocked_stats(X, y, codes, Z_list=Zs), True, structures)
    result = minimize_blocked(objective)
    assert result.converged, result.message
    # Random starts inside the bounds do no better.
    rng = np.random.default_rng(11)
    for _ in range(3):
        start = np.maximum(rng.normal(0.5, 0.5, objective.n_theta), objective.lower_bounds)
        other = minimize_blocked(objective, start)
        assert other.evaluation.deviance >= result.evaluation.deviance - 1e-6


@pytest.mark.parametrize("reml", [True, False])
def test_prediction_variance_against_dense(reml):
    # Rows with every combination of seen and unseen levels of the three terms.
    X, y, codes, Zs, structures = simulate_slopes(12)
    perm = [1, 0, 2]  # a slope term with a diagonal covariance first, in the rest block
    codes, Zs, structures = (
        [codes[i] for i in perm],
        [Zs[i] for i in perm],
        [structures[i] for i in perm],
    )
    theta = np.array([1.1, 0.5, 0.9, -0.4, 0.6, 0.7])
    objective = BlockedDeviance(blocked_stats(X, y, codes, Z_list=Zs), reml, structures)
    _, _, sigma2, _, cv_all = dense_model(X, y, codes, Zs, structures, theta, reml)
    n = len(y)
    # Dense P = Lambda M^{-1} Lambda' (relative) and G = P Z'X.
    P = cv_all / sigma2
    blocks = []
    for c, Z in zip(codes, Zs, strict=True):
        Z = np.ones((n, 1)) if Z is None else Z
        m, q = c.max() + 1, Z.shape[1]
        blocks.append((np.eye(m)[c][:, :, None] * Z[:, None, :]).reshape(n, m * q))
    Zfull = np.hstack(blocks)
    G = P @ Zfull.T @ X
    rng = np.random.default_rng(13)
    rows = rng.choice(n, 40)
    levels = []
    for c in codes:
        lv = c[rows].copy()
        lv[rng.random(40) < 0.35] = -1  # unseen for this term
        levels.append(lv)
    zs = [np.ones((40, 1)) if Z is None else Z[rows] + rng.normal(size=Z[rows].shape) for Z in Zs]
    quad, Gw = objective.prediction_variance(theta, levels, zs)
    offsets = np.cumsum([0] + [b.shape[1] for b in blocks])
    for j in range(40):
        w = np.zeros(Zfull.shape[1])
        for k, (lv, z) in enumerate(zip(levels, zs, strict=True)):
            if lv[j] >= 0:
                q = z.shape[1]
                w[offsets[k] + lv[j] * q : offsets[k] + (lv[j] + 1) * q] = z[j]
        assert quad[j] == pytest.approx(w @ P @ w, rel=1e-8, abs=1e-12)
        np.testing.assert_allclose(Gw[j], G.T @ w, rtol=1e-8, atol=1e-12)


def test_gram_split_into_dense_heavy_and_sparse_light_levels():
    # 2,000 levels in the dense block (the split's threshold) and a term 1 of 2,500 levels
    # whose first 20 are heavy (>= 0.12 x 2,000 distinct partners): the split gram equals
    # the sparse one, and so do the criterion and its gradient.
    rng = np.random.default_rng(21)
    n_heavy, n1, m2 = 20, 2500, 2000
    heavy_rows = np.repeat(np.arange(n_heavy), 400)
    light_rows = rng.integers(n_heavy, n1, 25_000)
    c1 = np.r_[heavy_rows, light_rows, np.arange(n1)]
    c2 = np.r_[rng.integers(0, m2, len(heavy_rows) + len(light_rows)), rng.integers(0, m2, n1)]
    c2[:m2] = np.arange(m2)  # every level of term 2 present
    n = len(c1)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = (
        X @ [1.0, 0.5]
        + rng.normal(size=n1)[c1]
        + 0.5 * rng.normal(size=m2)[c2]
        + rng.normal(size=n)
    )
    objective = BlockedDeviance(blocked_stats(X, y, [c1, c2]), True)
    assert objective.m_r == m2 and objective._gram_split is not None
    np.testing.assert_array_equal(objective._gram_split["heavy"], np.arange(n_heavy))
    w = rng.normal(size=n1)  # any sign
    split = objective._weighted_gram(w)
    B = objective._B
    np.testing.assert_allclose(split, (B @ np.diag(w) @ B.T.toarray()), rtol=1e-12, atol=1e-9)
    theta = np.array([0.8, 0.6])
    ev = objective(theta, 1)
    plain = BlockedDeviance(objective.stats, True)
    plain._gram_split = None
    ev_plain = plain(theta, 1)
    assert ev.deviance == pytest.approx(ev_plain.deviance, rel=1e-13)
    np.testing.assert_allclose(ev.gradient, ev_plain.gradient, rtol=1e-9)


def test_polish_stops_at_the_precision_of_the_criterion(monkeypatch):
    # Penicillin's 130 training rows with tol=1e-10 to 1e-13: L-BFGS-B's rule (10 tol n)
    # asks for a gradient of 1.3e-7 to 1.3e-10, which stays at about 1.7e-7 (its rounding:
    # a sum of terms that cancel). The Newton polish then finds no decrease and a Newton
    # decrement below the rounding of D: converged, at the optimum, without a warning and
    # without 20 idle steps. The case is one of rounding: the start (one-factor fits) comes
    # from the numpy kernels here; the compiled ones round differently, and L-BFGS-B's path
    # from their start happens to meet the gradient rule.
    from sklmm import _compiled

    monkeypatch.setattr(_compiled, "AVAILABLE", False)
    import json
    import warnings
    from pathlib import Path

    import pandas as pd

    from sklmm import MixedLMRegressor

    folder = Path(__file__).parent / "reference" / "penicillin_reml_inference"
    spec = json.loads((folder / "spec.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype={c: str for c in spec["group_columns"]})
    train = data[data["split"] == "train"]
    default = MixedLMRegressor(formula=spec["formula"], reml=spec["reml"]).fit(train)
    for tol in (1e-11, 1e-13):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            est = MixedLMRegressor(formula=spec["formula"], reml=spec["reml"], tol=tol)
            est.fit(train)
        assert est.converged_
        assert "precision of the criterion" in est._fitted.opt.message
        assert (est.fit_log_["phase"] == "polish").sum() < 20
        assert est.log_likelihood_ == pytest.approx(default.log_likelihood_, abs=1e-9)
