"""Satterthwaite degrees of freedom for t and F tests of fixed effects (lmerTest's method).

For a contrast ``l'beta``, the variance ``v(phi) = l' Cov(beta; phi) l`` depends on the
variance parameters ``phi``. Satterthwaite's approximation matches the moments of
``v(phi_hat)`` to a scaled chi-square::

    df = 2 v(phi_hat)^2 / (g' A g),   g = dv/dphi,   A = Cov(phi_hat) = 2 H^{-1},

with ``H`` the Hessian of ``-2 log L`` (REML or ML, as fitted) in ``phi``. The result does
not depend on how ``phi`` is parameterized (``g`` and ``A`` transform together);
lmerTest uses ``(theta, sigma)``, sklmm ``phi = (theta, log sigma)`` in the fit's own
coordinates (centred and rescaled columns). ``H`` and the Jacobian of ``Cov(beta)`` are
central differences with Richardson extrapolation on the criterion of the fit, which
costs nothing in the number of rows (the statistics are already formed); they are
computed once per fit.

An F test of several rows ``L beta = 0`` follows lmerTest's ``contest``: the rows are
rotated to the eigenvectors of ``L Cov(beta) L'`` (dropping null directions), each
rotated row gets its t statistic and Satterthwaite df ``nu_m``, ``F`` is the mean of
the squared t statistics, and the denominator df is ``2E / (E - q)`` with
``E = sum nu_m / (nu_m - 2)`` (2 if some ``nu_m <= 2``).

References
----------
Kuznetsova, A., Brockhoff, P. B. and Christensen, R. H. B. (2017). lmerTest package:
tests in linear mixed effects models. Journal of Statistical Software, 82(13).
"""

import numpy as np
import pandas as pd
from scipy import stats

from ._fitted import term_theta
from ._inference import central_hessian, central_second

DDF_METHODS = ("satterthwaite", "kenward-roger", "normal")


def ddf_method(fitted, ddf):
    """The test machinery of ``ddf`` for a fit, built once per fit and kept on it."""
    if ddf not in DDF_METHODS:
        raise ValueError(
            f"ddf={ddf!r} is not one of {DDF_METHODS}: 'satterthwaite' (lmerTest's default), "
            "'kenward-roger' (pbkrtest) or 'normal' (Wald z tests)"
        )
    cache = fitted.__dict__.setdefault("_ddf", {})
    if ddf not in cache:
        kind = {"satterthwaite": Satterthwaite, "kenward-roger": KenwardRoger}.get(ddf, Normal)
        cache[ddf] = kind(fitted)
    return cache[ddf]


def _richardson_hessian(f, x0, h):
    """Hessian of ``f`` at ``x0``: central differences at steps ``2h`` and ``h``, extrapolated."""
    return (4 * central_hessian(f, x0, h) - central_hessian(f, x0, 2 * h)) / 3


def _richardson_jacobian(f, x0, h):
    """``[df/dx_i]`` (arrays) by central differences at ``2h`` and ``h``, extrapolated."""
    out = []
    for i in range(len(x0)):
        e = np.zeros(len(x0))
        e[i] = 1.0

        def d(step, e=e):
            return (f(x0 + step * e) - f(x0 - step * e)) / (2 * step)

        out.append((4 * d(h) - d(2 * h)) / 3)
    return out


class Satterthwaite:
    """The pieces of Satterthwaite's approximation for one fit, computed once.

    Parameters
    ----------
    fitted : FittedModel
        The fit (its criterion, ``theta``, ``sigma2`` and ``beta``).
    h : float, default=1e-3
        Finite-difference step in ``phi = (theta, log sigma)``.

    Attributes
    ----------
    beta : ndarray of shape (p,)
    cov : ndarray of shape (p, p)
        ``Cov(beta)`` at the estimates (lme4's ``vcov``).
    jacobian : list of ndarray of shape (p, p)
        ``dCov(beta)/dphi_i``.
    cov_phi : ndarray
        ``A``, the asymptotic covariance of ``phi`` (NaN when ``H`` is singular).
    """

    def __init__(self, fitted, h=1e-3):
        model, objective = fitted.model, fitted.objective
        theta0 = np.asarray(fitted.opt.theta, dtype=float)
        phi0 = np.r_[theta0, 0.5 * np.log(fitted.sigma2)]
        T = model.T
        k = len(theta0)

        def deviance(phi):
            return objective.unprofiled_deviance(phi[:k], np.exp(2 * phi[k]))

        def cov(phi):
            return T @ objective.fixed_effects_cov(phi[:k], np.exp(2 * phi[k])) @ T.T

        try:
            with objective.blas_limit():
                H = _richardson_hessian(deviance, phi0, h)
                self.jacobian = _richardson_jacobian(cov, phi0, h)
                self.cov = cov(phi0)
        finally:
            objective.release()
        try:
            self.cov_phi = 2.0 * np.linalg.inv(H)
        except np.linalg.LinAlgError:
            self.cov_phi = np.full_like(H, np.nan)
        self.beta = fitted.beta

    def _df(self, L):
        """Satterthwaite df of each row of ``L`` (its variance and gradient in ``phi``)."""
        v = np.einsum("ri,ij,rj->r", L, self.cov, L)
        g = np.stack([np.einsum("ri,ij,rj->r", L, J, L) for J in self.jacobian], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * v**2 / np.einsum("ri,ij,rj->r", g, self.cov_phi, g)

    def t_tests(self, L):
        """One t test per row of ``L``: estimate, se, df, t, p (two-sided)."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        est = L @ self.beta
        se = np.sqrt(np.einsum("ri,ij,rj->r", L, self.cov, L))
        df = self._df(L)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = est / se
        p = 2 * stats.t.sf(np.abs(t), df)
        return pd.DataFrame({"estimate": est, "se": se, "df": df, "t": t, "p": p})

    def f_test(self, L, tol=1e-8):
        """The joint test of ``L beta = 0`` (lmerTest's ``contest(..., joint = TRUE)``).

        Returns a dict with ``num_df`` (the rank of ``L``), ``den_df``, ``F`` and ``p``;
        lmerTest's ``mean_sq = F sigma2`` and ``sum_sq = num_df mean_sq`` are left to the
        caller, who knows ``sigma2``.
        """
        L = np.atleast_2d(np.asarray(L, dtype=float))
        VL = L @ self.cov @ L.T
        values, vectors = np.linalg.eigh(VL)
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        keep = values > max(tol * values[0], 0.0) if len(values) else np.zeros(0, bool)
        q = int(keep.sum())
        if q == 0:
            raise ValueError("the contrast L has no estimable direction (L Cov(beta) L' is 0)")
        P, d = vectors[:, keep], values[keep]
        rotated = P.T @ L
        t2 = (rotated @ self.beta) ** 2 / d
        F = float(t2.sum() / q)
        nu = self._df(rotated)
        den = _f_den_df(nu)
        if np.isinf(den):  # the Wald chi-square test, F = chi2 / q
            return {"num_df": q, "den_df": den, "F": F, "p": float(stats.chi2.sf(F * q, q))}
        return {"num_df": q, "den_df": den, "F": F, "p": float(stats.f.sf(F, q, den))}


class Normal(Satterthwaite):
    """The normal reference (Wald z and chi-square tests): infinite degrees of freedom."""

    def __init__(self, fitted):
        self.beta, self.cov = fitted.beta, fitted.fixed_cov

    def _df(self, L):
        return np.full(len(L), np.inf)


def _f_den_df(nu, tol=1e-8):
    """lmerTest's denominator df of an F test from the df of its rotated t tests."""
    nu = np.asarray(nu, dtype=float)
    if len(nu) == 1 or np.all(np.isinf(nu)) or np.all(np.abs(nu - nu[0]) < tol):
        return float(nu[0])
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - len(nu))


def contrast_matrix(L, names):
    """``L`` as a float matrix over the fixed effects ``names``.

    ``L`` may be a vector or matrix with one column per fixed effect, a DataFrame (or a
    Series / dict for one row) with fixed-effect names as columns (missing ones are 0).
    """
    if isinstance(L, dict):
        L = pd.Series(L, dtype=float)
    if isinstance(L, pd.Series):
        L = L.to_frame().T
    if isinstance(L, pd.DataFrame):
        unknown = [c for c in L.columns if c not in names]
        if unknown:
            raise ValueError(f"the contrast names {unknown}, which are not fixed effects {names}")
        return L.reindex(columns=names, fill_value=0.0).to_numpy(dtype=float)
    try:
        out = np.atleast_2d(np.asarray(L, dtype=float))
    except (TypeError, ValueError):
        raise ValueError("the contrast L must be numbers, one column per fixed effect") from None
    if out.ndim != 2 or out.shape[1] != len(names):
        raise ValueError(
            f"the contrast L has shape {out.shape}; expected one column per fixed effect "
            f"({len(names)}: {names}), or a DataFrame with fixed-effect names as columns"
        )
    if not np.isfinite(out).all():
        raise ValueError("the contrast L has non-finite entries")
    return out


def type1_contrasts(xtx, terms):
    """lmerTest's type I (sequential) contrasts: rows of the unit upper Doolittle factor.

    ``xtx`` is ``X'X`` of the fixed-effects design in the user's coordinates; ``terms``
    maps each term to its column positions, in the order of the sequence. The columns
    of no term (the intercept) come first, then the terms' in their order: each term is
    tested adjusted for those before it. Returns ``{term: L}``.
    """
    listed = [c for cols in terms.values() for c in cols]
    order = [c for c in range(len(xtx)) if c not in listed] + listed
    R = np.linalg.cholesky(xtx[np.ix_(order, order)]).T  # X'X = R'R, R upper triangular
    U = R / np.diag(R)[:, None]  # unit diagonal: X'X = U' D U (in the sequence's order)
    back = np.empty_like(U)
    back[:, order] = U  # columns back in the fixed effects' order
    return {name: back[[order.index(c) for c in cols]] for name, cols in terms.items()}


def anova_table(sat, terms, sigma2, kind, xtx=None, contained=None, type3=None):
    """The F table: one joint test per term.

    Parameters
    ----------
    sat : Satterthwaite
    terms : dict of str to list of int
        Term name -> positions of its columns among the fixed effects.
    sigma2 : float
        The residual variance (``mean_sq = F sigma2``, lmerTest's convention).
    kind : {1, 3}
        Type I (sequential, needs ``xtx``) or type III (the term's columns are 0; only
        for terms no other term contains, where lmerTest's type III contrast is that).
    contained : dict of str to list of str, default=None
        For type III: the terms that contain each term (their factors a superset).
    type3 : dict of str to ndarray, default=None
        lmerTest's type III contrast of every term, where known (a formula's terms):
        used in place of the column tests, contained terms included.
    """
    rows = []
    type1 = type1_contrasts(xtx, terms) if kind == 1 else None
    for name, cols in terms.items():
        if kind == 3 and type3 is not None and name in type3:
            L = type3[name]
        elif kind == 3 and contained and contained.get(name):
            raise ValueError(
                f"type III test of {name!r}, which the term(s) {contained[name]} contain: "
                "lmerTest's contrast for it (the effect averaged over the other factors' "
                "levels) is not implemented yet. Use type=1, a model with sum-to-zero "
                "contrasts and test_contrast, or test the larger term"
            )
        elif kind == 3:
            L = np.eye(len(sat.beta))[cols]
        else:
            L = type1[name]
        out = sat.f_test(L)
        wald = out.pop("F_unscaled", out["F"])
        out = {"sum_sq": wald * out["num_df"] * sigma2, "mean_sq": wald * sigma2, **out}
        rows.append(pd.Series(out, name=name))
    columns = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p"]
    table = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    table.columns = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p_value"]
    table["num_df"] = table["num_df"].astype(int)
    table.index.name = "term"
    return table


class KenwardRoger(Satterthwaite):
    """Kenward and Roger's adjusted covariance and degrees of freedom (pbkrtest's method).

    The covariance parameters are ``tau``: the variances and covariances of every term
    and ``sigma2``, on which ``V = sum_k Z_k Sigma_k Z_k' + sigma2 W^{-1}`` is linear
    (the second derivatives of ``V`` vanish, pbkrtest's setting). With ``Phi = Cov(beta)``
    and ``G_i = dV/dtau_i``::

        P_i = X' dV^{-1}/dtau_i X = d Phi^{-1} / dtau_i,
        Q_ij + Q_ji = d2 Phi^{-1} / dtau_i dtau_j,
        W = Cov(tau_hat) = (1/2 tr(P_V G_i P_V G_j))^{-1},
        Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j)] Phi,

    where the expected REML information ``1/2 tr(P_V G_i P_V G_j)`` is minus one half of
    the second derivatives of ``log|V| + log|X'V^{-1}X|``. Every derivative is a central
    difference (Richardson-extrapolated) on the fit's factorization, which holds the
    cross-products only: nothing costs a pass over the rows. The tests use ``Phi_A``
    and the scaled F statistic with Kenward and Roger's denominator df. REML fits only
    (as pbkrtest), and not on the boundary (a variance at 0: the adjustment needs the
    derivatives on both sides).

    References
    ----------
    Kenward, M. G. and Roger, J. H. (1997). Small sample inference for fixed effects
    from restricted maximum likelihood. Biometrics, 53(3), 983-997.

    Halekoh, U. and Hojsgaard, S. (2014). A Kenward-Roger approximation and parametric
    bootstrap methods for tests in linear mixed models: the R package pbkrtest. Journal
    of Statistical Software, 59(9).
    """

    def __init__(self, fitted, h=1e-3):
        model, objective = fitted.model, fitted.objective
        if not model.reml:
            raise ValueError("Kenward-Roger needs a REML fit (as pbkrtest); refit with reml=True")
        if fitted.singular:
            raise ValueError(
                f"Kenward-Roger is not available for a fit on the boundary (the term(s) "
                f"{fitted.singular} have a zero variance or a correlation of +/-1); use "
                "ddf='satterthwaite'"
            )
        T_inv = np.linalg.inv(model.T)
        layout = []  # per term: the (i, j) entries of Sigma_k that are parameters
        tau0, scale0 = [], []  # the values and the size of a step in each
        for t in model.terms:
            cov = fitted.covs[t.name].to_numpy()
            pairs = [(i, j) for j in range(t.q) for i in range(j, t.q)]
            if t.covariance != "unstructured":
                pairs = [(i, i) for i in range(t.q)]
            layout.append(pairs)
            tau0 += [cov[i, j] for i, j in pairs]
            # a covariance's step is set by its variances: one near 0 has no scale
            scale0 += [np.sqrt(abs(cov[i, i] * cov[j, j])) for i, j in pairs]
        tau0 = np.array([*tau0, fitted.sigma2])
        scale0 = np.array([*scale0, fitted.sigma2])
        p = model.stats.p

        def theta_of(tau):
            theta = np.empty(sum(t.structure.n_theta for t in model.terms))
            k = 0
            for m_k, (t, sl, pairs) in enumerate(
                zip(model.terms, model.slices, layout, strict=True)
            ):
                sigma = np.zeros((t.q, t.q))
                for i, j in pairs:
                    sigma[i, j] = sigma[j, i] = tau[k]
                    k += 1
                th = term_theta(model, m_k, sigma, tau[-1])
                if th is None:
                    raise np.linalg.LinAlgError("a covariance left the parameter space")
                theta[sl] = th
            return theta

        def precision(tau):  # Phi^{-1} = X'V^{-1}X in the user's coordinates
            f = objective._factor(theta_of(tau))
            C = f["L_C"] @ f["L_C"].T
            return T_inv.T @ C @ T_inv / tau[-1]

        def logdets(tau):  # log|V| + log|X'V^{-1}X| (up to constants)
            f = objective._factor(theta_of(tau))
            return (
                f["logdet"]
                + (model.n - p) * np.log(tau[-1])
                + 2.0 * np.log(np.diag(f["L_C"])).sum()
            )

        steps = h * np.maximum(scale0, 1e-8 * tau0[-1])
        scale = np.diag(steps)  # derivatives in tau / steps, rescaled after
        try:
            with objective.blas_limit():
                H = _richardson_hessian(
                    lambda u: logdets(tau0 + scale @ u), np.zeros(len(tau0)), 1.0
                )
                P = _richardson_jacobian(
                    lambda u: precision(tau0 + scale @ u), np.zeros(len(tau0)), 1.0
                )
                Q = _richardson_second(lambda u: precision(tau0 + scale @ u), len(tau0))
                phi = np.linalg.inv(precision(tau0))
        finally:
            objective.release()
        H = H / np.outer(steps, steps)
        P = [Pi / si for Pi, si in zip(P, steps, strict=True)]
        Q = {key: Qij / (steps[key[0]] * steps[key[1]]) for key, Qij in Q.items()}
        try:
            W = np.linalg.inv(-0.5 * H)
        except np.linalg.LinAlgError:
            raise ValueError(
                "Kenward-Roger: the expected information of the covariance parameters is "
                "singular at this fit (a parameter not identified by the data); use "
                "ddf='satterthwaite'"
            ) from None
        n = len(tau0)
        U = np.zeros_like(phi)
        for i in range(n):
            for j in range(n):
                Qij = 0.5 * Q[(min(i, j), max(i, j))]  # (Q_ij + Q_ji) / 2
                U += W[i, j] * (Qij - P[i] @ phi @ P[j])
        self.beta = fitted.beta
        self.phi = phi
        self.cov = phi + 2 * phi @ U @ phi  # the adjusted covariance, vcovAdj
        self.P, self.W = P, W

    def _kr(self, L):
        """``(F scaling lambda, denominator df m)`` of the test of the rows of ``L``."""
        q = L.shape[0]
        phi, P, W = self.phi, self.P, self.W
        Theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)
        M = [Theta @ phi @ Pi @ phi for Pi in P]
        traces = np.array([np.trace(Mi) for Mi in M])
        A1 = float(traces @ W @ traces)
        A2 = float(
            sum(W[i, j] * np.trace(M[i] @ M[j]) for i in range(len(M)) for j in range(len(M)))
        )
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        d = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / d, (q - g) / d, (q + 2 - g) / d
        E = 1 / (1 - A2 / q)
        V = 2 / q * (1 + c1 * B) / ((1 - c2 * B) ** 2 * (1 - c3 * B))
        rho = V / (2 * E**2)
        m = 4 + (q + 2) / (q * rho - 1)
        lam = m / (E * (m - 2))
        return lam, m

    def _df(self, L):
        return np.array([self._kr(row[None, :])[1] for row in np.atleast_2d(L)])

    def f_test(self, L, tol=1e-8):
        """pbkrtest's Kenward-Roger F test: the scaled Wald F with the adjusted covariance."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        values, vectors = np.linalg.eigh(L @ self.cov @ L.T)
        keep = values > max(tol * values.max(), 0.0) if len(values) else np.zeros(0, bool)
        if not keep.any():
            raise ValueError("the contrast L has no estimable direction (L Cov(beta) L' is 0)")
        L = vectors[:, keep].T @ L  # full row rank
        q = L.shape[0]
        Lb = L @ self.beta
        F = float(Lb @ np.linalg.solve(L @ self.cov @ L.T, Lb) / q)
        lam, m = self._kr(L)
        return {
            "num_df": q,
            "den_df": m,
            "F": lam * F,
            "p": float(stats.f.sf(lam * F, q, m)),
            "F_unscaled": F,  # lmerTest's sums of squares use the Wald F
        }


def _richardson_second(f, n, h=1.0):
    """``{(i, j): d2 f / dx_i dx_j}`` for ``i <= j`` at 0 (array-valued ``f``), extrapolated."""
    fine, coarse = central_second(f, np.zeros(n), h), central_second(f, np.zeros(n), 2 * h)
    return {k: (4 * fine[k] - coarse[k]) / 3 for k in fine}
