r"""The profiled criterion of the one-factor linear mixed model.

Model
-----
For group ``i`` with ``n_i`` rows::

    y_i = X_i beta + Z_i b_i + e_i,   b_i ~ N(0, Sigma),   e_i ~ N(0, sigma2 I).

``X_i`` holds the fixed-effect columns (``p`` of them), ``Z_i`` the ``q``
random-effect columns (the intercept, then the random slopes).

The three parameterizations of the variance parameters
------------------------------------------------------
Each is named once here and used under this name everywhere in sklmm.

=================  ====================================  ==========================
name               symbols                               where it is used
=================  ====================================  ==========================
user scale         ``Sigma`` (q x q), ``sigma2``          every public attribute
profile scale      ``Psi = Sigma / sigma2``               EM updates, this module
square-root scale  ``Lambda`` lower triangular,           the optimizer (Newton),
                   ``Psi = Lambda Lambda'``; ``theta`` =  the fit's convergence rule
                   its free entries (lme4's ``theta``)
=================  ====================================  ==========================

On the square-root scale the diagonal of ``Lambda`` is bounded below by 0
(lme4's convention); a ``diagonal`` structure keeps only that diagonal.
``beta`` and ``sigma2`` are profiled out: for each ``theta`` they take their
optimal values in closed form, so the optimizer sees only ``theta``.

The criterion
-------------
From the per-group cross-products of :mod:`sklmm._crossprod`::

    M_i = Lambda' Z_i'Z_i Lambda + I,   L_i = chol(M_i)
    K_i = L_i^{-1} Lambda' Z_i'[Z_i X_i y_i]
    S   = [X y]'[X y] - sum_i K_i' K_i  =  [X y]' V^{-1} [X y],   V = I + Z Psi Z'
    chol(S) = [[L_C, 0], [l', s]]:  C = X'V^{-1}X = L_C L_C',  beta = L_C^{-T} l,  r2 = s^2

    ML:   D(theta) = sum_i log|M_i| + n (1 + log(2 pi r2 / n))
    REML: D(theta) = sum_i log|M_i| + log|C| + (n - p)(1 + log(2 pi r2 / (n - p)))

``D`` is ``-2`` times the (REML) log-likelihood, lme4's ``deviance`` or
``REMLcrit``; ``sigma2 = r2 / n`` (ML) or ``r2 / (n - p)`` (REML).

Derivatives
-----------
With ``A_i = Z_i'V_i^{-1}Z_i``, ``W_i = Z_i'V_i^{-1}X_i``,
``u_i = Z_i'V_i^{-1}(y_i - X_i beta)`` and ``k`` = ``n`` (ML) or ``n - p``
(REML), the derivative of ``D`` along a symmetric direction ``E`` of ``Psi``
is ``tr(G E)`` with::

    G = sum_i A_i - (k / r2) sum_i u_i u_i' [- sum_i W_i C^{-1} W_i' for REML]

and the second derivative along ``E`` and ``F`` is::

    - sum_i tr(A_i F A_i E) - (k / r2^2) (sum_i u_i'E u_i)(sum_i u_i'F u_i)
    + (2k / r2) sum_i u_i'E A_i F u_i
    - (2k / r2) (sum_i W_i'E u_i)' C^{-1} (sum_i W_i'F u_i)
    [REML: + 2 sum_i tr(A_i F W_i C^{-1} W_i' E) - tr(C^{-1} S_E C^{-1} S_F),
     S_E = sum_i W_i'E W_i]

The chain rule through ``Psi = Lambda Lambda'`` gives the gradient and the
Hessian in ``theta``. Every term is a batched product of arrays of shape
(groups, q, q) or (groups, q, p): the cost of one evaluation is
O(groups q^3 + groups q^2 p + p^3) and independent of the number of rows.
"""

import contextlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Evaluation:
    """The profiled criterion and the profiled-out parameters at one ``theta``.

    Attributes
    ----------
    theta : ndarray
        Point of evaluation (square-root scale).
    deviance : float
        ``D(theta)``, minus twice the (REML) log-likelihood.
    beta : ndarray of shape (p,)
        Fixed effects at ``theta``.
    sigma2 : float
        Residual variance at ``theta``.
    gradient, hessian : ndarray or None
        ``dD/dtheta`` and ``d2D/dtheta2`` when requested.
    """

    theta: np.ndarray
    deviance: float
    beta: np.ndarray
    sigma2: float
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None


def _t(a):
    """Transpose the last two axes of a stack of matrices."""
    return np.swapaxes(a, -1, -2)


def _lower_solve(L, B):
    """``L^{-1} B`` for a stack of lower-triangular ``L`` (g, q, q) and ``B`` (g, q, k).

    Forward substitution over the q rows, vectorised over the groups: several
    times faster than a batched general (LU) solve for the small q of a
    random-effects term.
    """
    X = np.empty((L.shape[0], L.shape[1], B.shape[-1]))
    for i in range(L.shape[-1]):
        acc = B[..., i, :]
        if i:
            acc = acc - np.einsum("gj,gjk->gk", L[:, i, :i], X[:, :i, :])
        X[:, i, :] = acc / L[:, i, i, None]
    return X


def _upper_solve_t(L, B):
    """``(L')^{-1} B`` for a stack of lower-triangular ``L``, by back substitution."""
    X = np.empty(B.shape)
    q = L.shape[-1]
    for i in range(q - 1, -1, -1):
        acc = B[..., i, :]
        if i < q - 1:
            acc = acc - np.einsum("gj,gjk->gk", L[:, i + 1 :, i], X[:, i + 1 :, :])
        X[:, i, :] = acc / L[:, i, i, None]
    return X


def _cho_solve(L_inv, B):
    """``C^{-1} B`` where ``C = L L'`` and ``L_inv = L^{-1}`` (p x p, from one small solve).

    Two matrix products: the right-hand sides are wide (one column per group and
    random effect), and a product is cheaper than a triangular solve over them.
    numpy's BLAS only: on a machine where numpy and scipy each load their own
    threaded OpenBLAS, alternating between the two leaves one library's idle
    threads spinning against the other's.
    """
    return L_inv.T @ (L_inv @ B)


def _group_sum(A, B):
    """``T[m, j, k, l] = sum_g A[g, j, k] B[g, l, m]``: one matrix product."""
    n_g, q = A.shape[0], A.shape[1]
    T = (A.reshape(n_g, -1).T @ B.reshape(n_g, -1)).reshape(q, q, q, q)  # [j, k, l, m]
    return T.transpose(3, 0, 1, 2)


def profile_fixed_effects(S, logdet, p, k, reml, log_weights=0.0):
    """``beta``, ``r2`` and ``D`` from ``S = [X y]' V^{-1} [X y]`` and ``log|M|``.

    The part of the criterion shared by every random-effects engine: with
    ``chol(S) = [[L_C, 0], [l', s]]``, ``beta = L_C^{-T} l`` and ``r2 = s^2``;
    ``k`` is ``n`` (ML) or ``n - p`` (REML). With precision weights ``w`` (the
    cross-products weighted), ``D`` also has lme4's ``-sum(log w)``: the residual
    covariance is ``sigma2 W^{-1}``.
    """
    R = np.linalg.cholesky(S)
    L_C, s = R[:p, :p], R[p, p]
    r2 = s * s
    dev = logdet + k * (1.0 + np.log(2.0 * np.pi * r2 / k)) - log_weights
    if reml:
        dev += 2.0 * np.log(np.diag(L_C)).sum()
    return {
        "L_C": L_C,
        "beta": np.linalg.solve(L_C.T, R[p, :p]),
        "r2": r2,
        "logdet": logdet,
        "deviance": float(dev),
    }


class FactorCache:
    """Keeps the last factorization, keyed by ``theta``.

    An evaluation and the EM step, BLUPs or gradient that follow it at the same
    ``theta`` share one factorization. Subclasses define ``_compute_factor``.
    """

    _cache = None

    def _factor(self, theta):
        key = np.asarray(theta, dtype=float).tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        f = self._compute_factor(theta)
        self._cache = (key, f)
        return f


class ProfiledDeviance(FactorCache):
    """``D(theta)`` with its derivatives, BLUPs and EM update.

    Parameters
    ----------
    stats : SufficientStats
        Per-group cross-products (:func:`sklmm._crossprod.compute_stats`).
    cov : CovarianceStructure
        Maps ``theta`` to ``Lambda``.
    reml : bool
        REML criterion if true, else ML.
    """

    def __init__(self, stats, cov, reml):
        self.stats = stats
        self.cov = cov
        self.reml = bool(reml) and stats.p > 0  # no fixed effects: REML is ML
        self._basis = cov.basis()
        p = stats.p
        self.k = stats.n - p if self.reml else stats.n
        self._cache = None

    # -- shared factorization -------------------------------------------
    def _compute_factor(self, theta):
        st, p = self.stats, self.stats.p
        lam = self.cov.lam(theta)
        f = {"lam": lam}
        if st.q:
            lt_ztz = np.matmul(lam.T, st.ZtZ)
            M = np.matmul(lt_ztz, lam)
            M[:, np.arange(st.q), np.arange(st.q)] += 1.0
            L = np.linalg.cholesky(M)
            K = _lower_solve(L, np.concatenate([lt_ztz, np.matmul(lam.T, st.ZtXy)], axis=2))
            K_Z, K_Xy = K[:, :, : st.q], K[:, :, st.q :]
            flat = K_Xy.reshape(-1, p + 1)
            S = st.XytXy - flat.T @ flat
            logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum()
            f.update(L=L, K_Z=K_Z, K_Xy=K_Xy)
        else:
            S, logdet = st.XytXy.copy(), 0.0
        f.update(profile_fixed_effects(S, logdet, p, self.k, self.reml, self.stats.log_weights))
        f["L_C_inv"] = np.linalg.solve(f["L_C"], np.eye(p))
        return f

    def __call__(self, theta, order=0):
        """Evaluate ``D`` (order 0), its gradient (1) and Hessian (2).

        Raises
        ------
        numpy.linalg.LinAlgError
            When ``[X y]' V^{-1} [X y]`` is not positive definite.
        """
        theta = np.asarray(theta, dtype=float)
        f = self._factor(theta)
        ev = Evaluation(theta, f["deviance"], f["beta"], f["r2"] / self.k)
        if order >= 1:
            if self.stats.q:
                ev.gradient, ev.hessian = self._derivatives(f, order)
            else:
                ev.gradient, ev.hessian = np.zeros(0), np.zeros((0, 0))
        return ev

    # -- derivatives ----------------------------------------------------
    def _derivatives(self, f, order):
        st, p, k, r2 = self.stats, self.stats.p, self.k, f["r2"]
        lam, K_Z, K_Xy, beta = f["lam"], f["K_Z"], f["K_Xy"], f["beta"]
        A = st.ZtZ - np.matmul(_t(K_Z), K_Z)
        Wy = st.ZtXy - np.matmul(_t(K_Z), K_Xy)
        W = np.ascontiguousarray(Wy[:, :, :p])
        u = Wy[:, :, p] - W @ beta
        Su = u.T @ u
        G = A.sum(axis=0) - (k / r2) * Su
        if self.reml:
            # C^{-1} W_i' for every group, from one Cholesky solve.
            CiWt = _cho_solve(f["L_C_inv"], W.reshape(-1, p).T)
            CiWt = _t(CiWt.T.reshape(st.n_groups, st.q, p))
            B = np.matmul(W, CiWt)
            G -= B.sum(axis=0)
        E = self._basis
        rows, cols = self.cov.rows, self.cov.cols
        grad = 2.0 * (G @ lam)[rows, cols]
        if order < 2:
            return grad, None
        # Second derivative as a bilinear form H4[m,j,k,l] E[m,j] F[k,l]; every sum over
        # the groups is one matrix product of the flattened per-group blocks.
        q, n_g = st.q, st.n_groups
        H4 = -_group_sum(A, A)
        Sn = Su / r2  # scaled before the product: r2**2 overflows for |y| ~ 1e80
        H4 -= k * np.multiply.outer(Sn, Sn)
        uu = u[:, :, None] * u[:, None, :]  # [g, m, l]
        H4 += (2.0 * k / r2) * (
            (A.reshape(n_g, -1).T @ uu.reshape(n_g, -1)).reshape(q, q, q, q).transpose(2, 0, 1, 3)
        )
        if p:
            Rw = (W.reshape(n_g, -1).T @ u).reshape(q, p, q).transpose(0, 2, 1)  # [m, j, a]
            CiR = _cho_solve(f["L_C_inv"], Rw.reshape(-1, p).T)
            H4 -= (2.0 * k / r2) * (Rw.reshape(-1, p) @ CiR).reshape(H4.shape)
        if self.reml:
            H4 += 2.0 * _group_sum(A, B)
            Wf = W.reshape(n_g, -1)  # [g, (m, a)]
            Q = (Wf.T @ Wf).reshape(q, p, q, p).transpose(0, 2, 1, 3)  # [m, j, a, b]
            CiQ = _cho_solve(f["L_C_inv"], Q.reshape(-1, p).T)  # (p, q*q*p)
            CiQ = CiQ.T.reshape(q, q, p, p).swapaxes(2, 3)  # [m,j] -> C^{-1} Q_mj
            # sum over a, b of CiQ[m,j,a,b] CiQ[k,l,b,a]
            H4 -= (CiQ.reshape(q * q, -1) @ CiQ.swapaxes(2, 3).reshape(q * q, -1).T).reshape(
                q, q, q, q
            )
        # Chain rule through Psi = Lambda Lambda'.
        P = np.matmul(E, lam.T)
        P = (P + _t(P)).reshape(len(E), -1)
        H = P @ H4.reshape(q * q, q * q) @ P.T
        H += 2.0 * (np.matmul(G, E).reshape(len(E), -1) @ E.reshape(len(E), -1).T)
        return grad, 0.5 * (H + H.T)

    # -- conditional modes ----------------------------------------------
    def conditional_modes(self, theta):
        """BLUPs ``b_i`` and their conditional covariances, on the user scale.

        Returns
        -------
        b : ndarray of shape (n_groups, q)
            Conditional modes ``Lambda M_i^{-1} Lambda' Z_i'(y_i - X_i beta)``.
        condvar : ndarray of shape (n_groups, q, q)
            ``sigma2 Lambda M_i^{-1} Lambda'``, the conditional covariance of
            ``b_i`` given ``beta`` (lme4 ``ranef(condVar = TRUE)``).
        """
        st = self.stats
        if st.q == 0:
            return np.zeros((st.n_groups, 0)), np.zeros((st.n_groups, 0, 0))
        f = self._factor(np.asarray(theta, dtype=float))
        p = st.p
        lam, L, K_Xy = f["lam"], f["L"], f["K_Xy"]
        v = K_Xy[:, :, p] - K_Xy[:, :, :p] @ f["beta"]
        w = _upper_solve_t(L, v[:, :, None])[:, :, 0]
        J = self._J(f)
        sigma2 = f["r2"] / self.k
        return w @ lam.T, sigma2 * np.matmul(_t(J), J)

    def unprofiled_deviance(self, theta, sigma2):
        """``-2 log L`` at ``theta`` and a given ``sigma2`` (``beta`` still profiled).

        Equal to ``D(theta)`` when ``sigma2`` is its profiled value; used for the
        observed information of the user-scale parameters.
        """
        f = self._factor(np.asarray(theta, dtype=float))
        dev = f["logdet"] + f["r2"] / sigma2 + self.k * np.log(2 * np.pi * sigma2)
        dev -= self.stats.log_weights
        if self.reml:
            dev += 2.0 * np.log(np.diag(f["L_C"])).sum()
        return float(dev)

    @staticmethod
    def _J(f):
        """``L_i^{-1} Lambda'`` for every group, computed once per factorization."""
        if "J" not in f:
            f["J"] = _lower_solve(f["L"], np.broadcast_to(f["lam"].T, f["L"].shape))
        return f["J"]

    def fixed_effects_cov(self, theta, sigma2=None):
        """``sigma2 C^{-1}``, the covariance of ``beta`` (lme4 ``vcov``).

        ``sigma2`` defaults to its profiled value at ``theta``.
        """
        f = self._factor(np.asarray(theta, dtype=float))
        s2 = f["r2"] / self.k if sigma2 is None else sigma2
        return s2 * (f["L_C_inv"].T @ f["L_C_inv"])

    def blup_gain(self, theta):
        """``P_i Z_i'X_i`` for every group: how ``b_i`` moves with ``beta``.

        ``b_i = P_i Z_i'(y_i - X_i beta)`` with ``P_i = Lambda M_i^{-1} Lambda'``,
        so the prediction error of ``x'beta + z'b_i`` has variance
        ``(x - G_i'z)' Cov(beta) (x - G_i'z) + sigma2 z'P_i z`` with ``G_i`` this.
        """
        st, p = self.stats, self.stats.p
        if st.q == 0:
            return np.zeros((st.n_groups, 0, p))
        f = self._factor(np.asarray(theta, dtype=float))
        J = self._J(f)
        return np.matmul(_t(J), f["K_Xy"][:, :, :p])

    def prediction_variance(self, theta, levels, zs):
        """``w'Pw`` and ``G'w`` for prediction rows (the blocked criterion's protocol).

        Row ``j`` of group ``levels[0][j]`` (-1: unseen, left out) has the columns
        ``zs[0][j]``; ``P_i = Lambda M_i^{-1} Lambda'`` and ``G_i = P_i Z_i'X_i``
        (:meth:`blup_gain`).

        Returns
        -------
        quad : ndarray of shape (n,)
        Gw : ndarray of shape (n, p)
        """
        idx, z = np.asarray(levels[0]), np.asarray(zs[0], dtype=float)
        n, p = len(idx), self.stats.p
        quad, Gw = np.zeros(n), np.zeros((n, p))
        seen = idx >= 0
        if seen.any():
            f = self._factor(np.asarray(theta, dtype=float))
            J = self._J(f)[idx[seen]]  # L^{-1} Lambda', so P = J'J
            v = np.einsum("mij,mj->mi", J, z[seen])
            quad[seen] = np.einsum("mi,mi->m", v, v)
            Gw[seen] = np.einsum("mi,mip->mp", v, f["K_Xy"][idx[seen], :, :p])
        return quad, Gw

    def release(self):
        """Forget the cached factorization (a fitted model keeps only the statistics)."""
        self._cache = None

    def blas_limit(self):
        """BLAS threads for this criterion's work: left as they are (small matrices)."""
        return contextlib.nullcontext()

    # -- EM ---------------------------------------------------------------
    def em_update(self, theta):
        """One EM step (Laird and Ware; REML as Laird, Lange and Stram).

        E-step at ``theta`` with ``beta`` and ``sigma2`` at their profiled
        values; M-step for ``Sigma`` and ``sigma2`` on the user scale; the
        result mapped back to the square-root scale. Each step does not
        increase ``D``.
        """
        st, p = self.stats, self.stats.p
        if st.q == 0:
            return np.asarray(theta, dtype=float)
        f = self._factor(np.asarray(theta, dtype=float))
        lam, L, K_Xy, beta = f["lam"], f["L"], f["K_Xy"], f["beta"]
        sigma2 = f["r2"] / self.k
        K_X = K_Xy[:, :, :p]
        J = self._J(f)  # L^{-1} Lambda'
        P = np.matmul(_t(J), J)  # (Psi^{-1} + Z'Z)^{-1}, on the profile scale
        v = K_Xy[:, :, p] - K_X @ beta
        b = _upper_solve_t(L, v[:, :, None])[:, :, 0] @ lam.T
        cov_b = sigma2 * P
        trace = np.einsum("gij,gji->", st.ZtZ, P)
        if self.reml:
            PZtX = np.matmul(_t(J), K_X)  # P_i Z_i'X_i
            flat = PZtX.reshape(-1, p)
            Ci = _cho_solve(f["L_C_inv"], flat.T).T.reshape(PZtX.shape)
            cov_b = cov_b + sigma2 * np.matmul(Ci, _t(PZtX))
            KX = K_X.reshape(-1, p)
            D_X = (
                st.XytXy[:p, :p]
                - 2.0 * KX.T @ KX
                + np.matmul(_t(PZtX), np.matmul(st.ZtZ, PZtX)).sum(axis=0)
            )
            trace += np.trace(_cho_solve(f["L_C_inv"], D_X))
        coef = np.append(beta, -1.0)
        r = st.ZtXy @ coef  # Z_i'(X_i beta - y_i)
        rss = (
            coef @ st.XytXy @ coef
            + 2.0 * np.einsum("gi,gi->", b, r)
            + np.einsum("gi,gij,gj->", b, st.ZtZ, b)
        )
        sigma2_new = (max(rss, 0.0) + sigma2 * trace) / st.n
        Sigma = (np.einsum("gi,gj->ij", b, b) + cov_b.sum(axis=0)) / st.n_groups
        if self.cov.kind == "diagonal":
            Sigma = np.diag(np.diag(Sigma))
        return self.cov.theta_from_psi(Sigma / sigma2_new)
