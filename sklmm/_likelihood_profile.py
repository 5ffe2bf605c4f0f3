"""Profile-likelihood intervals (lme4's ``confint(fit, method = "profile")``).

For a parameter ``psi`` (a standard deviation, a correlation, sigma or a fixed effect),
the signed square root of the likelihood-ratio statistic::

    zeta(psi) = sign(psi - psi_hat) sqrt(D_min(psi) - D_hat),

with ``D_min(psi)`` the criterion minimised over every other parameter with ``psi``
held, is close to a standard normal; the interval is ``{psi: |zeta(psi)| <= z_{1-a/2}}``.
Every parameter is profiled on the ML deviance, of REML fits too, as lme4 does
(``beta`` profiled out for the variance parameters), on lme4's scales: standard
deviations in ``[0, inf)``, correlations in ``[-1, 1]``, sigma. A fixed effect
``beta_j = v`` is an offset: the statistics of the model with ``y - v x_j`` and the
other columns follow from the fit's cross-products (no pass over the data), and the
criterion is minimised over the variance parameters.
Where the profile does not reach the critical value before the edge of the parameter
space the limit is that edge (0 for a standard deviation, +/-1 for a correlation), as
lme4 reports; where an inner fit fails the limit is NaN.
"""

import dataclasses

import numpy as np
from scipy import optimize as sopt
from scipy import stats

from ._bootstrap import term_parameters, variance_values
from ._fitted import term_theta, user_beta
from ._optimize import optimize


def _variance_layout(model):
    """Per term ``(q, parameters)`` in lme4's order (:func:`term_parameters`)."""
    return [(t.q, term_parameters(t.q, t.covariance == "unstructured")) for t in model.terms]


def _to_sigmas(x, layout):
    """User-scale covariances and sigma2 from ``x`` (lme4's order; sigma last)."""
    sigmas, k = [], 0
    for q, params in layout:
        sd, R = np.zeros(q), np.eye(q)
        for (kind, i, j), value in zip(params, x[k : k + len(params)], strict=True):
            if kind == "sd":
                sd[j] = value
            else:
                R[i, j] = R[j, i] = value
        sigmas.append(R * np.outer(sd, sd))
        k += len(params)
    return sigmas, x[-1] ** 2


def _user_deviance(fitted, objective):
    """``D(x)``: ``objective`` at user-scale parameters ``x`` (``inf`` outside)."""
    m = fitted.model
    layout = _variance_layout(m)

    def deviance(x):
        sigmas, s2 = _to_sigmas(x, layout)
        if s2 <= 0:
            return np.inf
        theta = np.empty(sum(t.structure.n_theta for t in m.terms))
        for k, sl in enumerate(m.slices):
            th = term_theta(m, k, sigmas[k], s2, psd=True)
            if th is None:
                return np.inf
            theta[sl] = th
        try:
            return objective.unprofiled_deviance(theta, s2)
        except np.linalg.LinAlgError:
            return np.inf

    return deviance, layout


def _bounds(layout, sigma):
    """Box of the parameters: sd's >= 0, correlations in [-1, 1], sigma > 0."""
    out = []
    for _, params in layout:
        out += [(0.0, None) if kind == "sd" else (-1.0, 1.0) for kind, _, _ in params]
    return [*out, (1e-6 * sigma, None)]


def _estimates(fitted, theta, sigma2):
    """``x`` (lme4's scales and order) at the square-root-scale ``theta`` and ``sigma2``."""
    covs = fitted._user_covs(theta, sigma2)
    values = variance_values(fitted.model.terms, covs)
    return np.array([*np.nan_to_num(values), np.sqrt(sigma2)])


def ml_fit(fitted, options):
    """The ML criterion of the model and its optimum (the fit itself for an ML fit).

    lme4 profiles every parameter, of REML fits too, on the ML deviance.
    """
    objective = fitted.model.criterion(options["solver"], reml=False)
    if not fitted.model.reml:
        return objective, fitted.opt
    opt = optimize(objective, blocks=fitted.model.blocks, theta0=fitted.opt.theta, **options)
    return objective, opt


class _Profile:
    """``zeta`` of one parameter, with warm starts for the inner minimisations."""

    def __init__(self, inner, d_hat, x_hat, j):
        self.inner, self.d_hat, self.x_hat, self.j = inner, d_hat, x_hat, j
        self.start = {}
        self.points = [(float(x_hat[j]), 0.0)]  # (value, zeta) of every evaluation

    def __call__(self, v):
        side = v >= self.x_hat[self.j]
        d = self.inner(self.j, v, self.start.get(side))
        if d is None:
            return np.nan
        value, rest = d
        self.start[side] = rest
        z = np.sign(v - self.x_hat[self.j]) * np.sqrt(max(value - self.d_hat, 0.0))
        self.points.append((float(v), float(z)))
        return z


def _limit(zeta, x_hat, crit, direction, lo, hi, step):
    """The ``v`` where ``zeta(v) = direction * crit``, or the edge ``lo``/``hi``."""
    edge = hi if direction > 0 else lo
    prev, v = x_hat, x_hat
    for _ in range(60):
        v = prev + direction * step
        if edge is not None and (v - edge) * direction >= 0:
            v = edge
        z = zeta(v)
        if not np.isfinite(z):
            return np.nan
        if z * direction >= crit:
            f = lambda u: zeta(u) - direction * crit  # noqa: E731
            try:
                # lme4 interpolates its profile: 1e-6 of the step is ample
                return sopt.brentq(f, min(prev, v), max(prev, v), xtol=1e-6 * step, rtol=1e-9)
            except ValueError:
                return np.nan
        if v == edge:
            return edge
        prev, step = v, step * 1.6
    return np.nan


def profile_variance_parameters(fitted, alpha, options, ml=None):
    """Intervals of the standard deviations, correlations and sigma (ML profiles).

    ``ml`` is :func:`ml_fit`'s result when the caller has it.
    """
    objective, opt = ml_fit(fitted, options) if ml is None else ml
    deviance, layout = _user_deviance(fitted, objective)
    x_hat = _estimates(fitted, opt.theta, float(opt.evaluation.sigma2))
    bounds = _bounds(layout, x_hat[-1])
    d_hat = min(deviance(x_hat), opt.objective)
    crit = stats.norm.ppf(1 - alpha / 2)

    lower = np.concatenate([t.structure.lower_bounds for t in fitted.model.terms] or [[]])
    theta_bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

    def best_of(f, starts, box):
        """The best L-BFGS-B minimum from ``starts``, restarted once from itself (a
        restart drops the quasi-Newton memory that can stop it early near a bound)."""
        best = None
        for x0 in starts:
            with np.errstate(invalid="ignore"):  # inf - inf in a finite difference
                res = sopt.minimize(
                    f,
                    x0,
                    method="L-BFGS-B",
                    bounds=box,
                    options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 1000},
                )
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        if best is not None and len(best.x):
            with np.errstate(invalid="ignore"):
                again = sopt.minimize(
                    f,
                    best.x,
                    method="L-BFGS-B",
                    bounds=box,
                    options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 1000},
                )
            if np.isfinite(again.fun) and again.fun < best.fun:
                best = again
        return None if best is None else (float(best.fun), best.x)

    def inner(j, v, start):
        if j == len(x_hat) - 1:  # sigma held: the others are theta, unconstrained

            def f_theta(theta):
                try:
                    return objective.unprofiled_deviance(theta, v**2)
                except np.linalg.LinAlgError:
                    return np.inf

            if not len(theta_bounds):  # no random effects: nothing to minimise
                return f_theta(np.zeros(0)), np.zeros(0)
            starts = [opt.theta] + ([] if start is None else [start])
            return best_of(f_theta, starts, theta_bounds)
        free = [k for k in range(len(x_hat)) if k != j]

        def f(z):
            x = x_hat.copy()
            x[free], x[j] = z, v
            return deviance(x)

        # from the estimates and from the last point of this side (warm): the better one
        starts = [x_hat[free]] + ([] if start is None else [start])
        return best_of(f, starts, [bounds[k] for k in free])

    out = np.full((len(x_hat), 2), np.nan)
    points = []
    with objective.blas_limit():
        for j, (lo, hi) in enumerate(bounds):
            zeta = _Profile(inner, d_hat, x_hat, j)
            points.append(zeta.points)
            step = 0.25 if hi == 1.0 else max(0.25 * x_hat[j], 1e-3 * x_hat[-1])
            out[j, 0] = _limit(zeta, x_hat[j], crit, -1, lo, hi, step)
            out[j, 1] = _limit(zeta, x_hat[j], crit, 1, lo, hi, step)
    objective.release()
    return out, points


def _offset_model(model, c, v):
    """The model with ``c' beta_c = v`` imposed: ``beta_c = c v / c'c + N gamma``.

    The statistics of ``[X N, y - X c v / c'c]`` follow from those of ``[X y]``.
    """
    st = model.stats
    p = st.p
    u, _, _ = np.linalg.svd(c[:, None])
    N = u[:, 1:]  # orthonormal basis of the null space of c'
    shift = c * v / (c @ c)
    M = np.zeros((p + 1, p))  # [X y] M = [X N, y - X shift]
    M[:p, : p - 1] = N
    M[:p, p - 1] = -shift
    M[p, p - 1] = 1.0
    XytXy = M.T @ st.XytXy @ M
    ZtXy = [np.matmul(z, M) for z in st.ZtXy]
    new = dataclasses.replace(st, XytXy=(XytXy + XytXy.T) / 2, ZtXy=ZtXy)
    return dataclasses.replace(model, stats=new)


def profile_fixed_effects(fitted, alpha, options, ml=None):
    """Intervals of the fixed effects on the ML deviance, as lme4 profiles them."""
    model = fitted.model
    T = model.T
    crit = stats.norm.ppf(1 - alpha / 2)
    solver = options["solver"]
    ml_opt = (ml_fit(fitted, options) if ml is None else ml)[1]
    d_hat = ml_opt.objective
    beta = user_beta(model, ml_opt.evaluation.beta)  # the ML estimates: zeta is 0 there
    se = np.sqrt(np.diag(fitted.fixed_cov))
    out = np.full((len(fitted.beta), 2), np.nan)
    points = []
    for j in range(len(fitted.beta)):
        c = T[j]  # user beta_j = T[j] @ beta_c (+ the mean of y on the intercept)
        offset = model.y_mean if (model.fit_intercept and j == 0) else 0.0
        seen = [(float(beta[j]), 0.0)]

        def zeta(v, c=c, offset=offset, j=j, seen=seen):
            reduced = _offset_model(model, c, v - offset)
            objective = reduced.criterion(solver, reml=False)
            opt = optimize(objective, blocks=model.blocks, theta0=fitted.opt.theta, **options)
            objective.release()
            z = np.sign(v - beta[j]) * np.sqrt(max(opt.objective - d_hat, 0.0))
            seen.append((float(v), float(z)))
            return z

        for k, direction in enumerate((-1, 1)):
            out[j, k] = _limit(zeta, beta[j], crit, direction, None, None, se[j])
        points.append(seen)
    return out, points


def profile_table(fitted, alpha, options, names):
    """``(intervals, profiles)``: the limits (rows in ``names`` order: the fixed effects,
    then the variance parameters and sigma) and every evaluated ``(value, zeta)``, as
    a long DataFrame with the columns ``parameter``, ``value``, ``zeta``."""
    import pandas as pd

    ml = ml_fit(fitted, options)
    fixed, fixed_points = profile_fixed_effects(fitted, alpha, options, ml)
    variance, variance_points = profile_variance_parameters(fitted, alpha, options, ml)
    frames = [
        pd.DataFrame(sorted(set(pts)), columns=["value", "zeta"]).assign(parameter=name)
        for name, pts in zip(names, [*fixed_points, *variance_points], strict=True)
    ]
    profiles = pd.concat(frames, ignore_index=True)[["parameter", "value", "zeta"]]
    return np.vstack([fixed, variance]), profiles
