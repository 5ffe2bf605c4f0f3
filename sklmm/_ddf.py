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

DDF_METHODS = ("satterthwaite", "normal")


def ddf_method(fitted, ddf):
    """The test machinery of ``ddf`` for a fit, built once per fit and kept on it."""
    if ddf not in DDF_METHODS:
        raise ValueError(
            f"ddf={ddf!r} is not one of {DDF_METHODS}: 'satterthwaite' (lmerTest's default) "
            "or 'normal' (Wald z tests); Kenward-Roger is not implemented yet"
        )
    cache = fitted.__dict__.setdefault("_ddf", {})
    if ddf not in cache:
        cache[ddf] = Satterthwaite(fitted) if ddf == "satterthwaite" else Normal(fitted)
    return cache[ddf]


def _richardson_hessian(f, x0, h):
    """Hessian of ``f`` at ``x0``: central differences at steps ``2h`` and ``h``, extrapolated."""

    def central(step):
        n = len(x0)
        H = np.empty((n, n))
        f0 = f(x0)
        E = np.eye(n) * step
        for a in range(n):
            for b in range(a, n):
                if a == b:
                    val = (f(x0 + E[a]) - 2 * f0 + f(x0 - E[a])) / step**2
                else:
                    val = (
                        f(x0 + E[a] + E[b])
                        - f(x0 + E[a] - E[b])
                        - f(x0 - E[a] + E[b])
                        + f(x0 - E[a] - E[b])
                    ) / (4 * step**2)
                H[a, b] = H[b, a] = val
        return H

    return (4 * central(h) - central(2 * h)) / 3


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


def type1_contrasts(xtx, rows):
    """lmerTest's type I (sequential) contrasts: rows of the unit upper Doolittle factor.

    ``xtx`` is ``X'X`` of the fixed-effects design in the user's coordinates (intercept
    first when fitted); ``rows`` the column positions of one term.
    """
    R = np.linalg.cholesky(xtx).T  # X'X = R'R, R upper triangular
    U = R / np.diag(R)[:, None]  # unit diagonal: X'X = U' D U
    return U[rows]


def anova_table(sat, terms, sigma2, kind, xtx=None, contained=None):
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
    """
    rows = []
    for name, cols in terms.items():
        if kind == 3 and contained and contained.get(name):
            raise ValueError(
                f"type III test of {name!r}, which the term(s) {contained[name]} contain: "
                "lmerTest's contrast for it (the effect averaged over the other factors' "
                "levels) is not implemented yet. Use type=1, a model with sum-to-zero "
                "contrasts and test_contrast, or test the larger term"
            )
        if kind == 3:
            L = np.eye(len(sat.beta))[cols]
        else:
            L = type1_contrasts(xtx, cols)
        out = sat.f_test(L)
        out = {
            "sum_sq": out["F"] * out["num_df"] * sigma2,
            "mean_sq": out["F"] * sigma2,
            **out,
        }
        rows.append(pd.Series(out, name=name))
    columns = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p"]
    table = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    table.columns = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p_value"]
    table["num_df"] = table["num_df"].astype(int)
    table.index.name = "term"
    return table
