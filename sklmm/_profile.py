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
Hessian in ``theta``. Every term is a product of per-group blocks of shape
(q, q) or (q, p), held with the groups on the last, contiguous axis (arrays of
shape (q, q, groups)): each step of a small Cholesky factorization or
triangular solve, and each per-group product, is then one vectorised operation
over all the groups (a batched LAPACK call per group costs several times
more), and every sum over the groups is one matrix product. The cost of one
evaluation is O(groups q^3 + groups q^2 p + p^3) and independent of the number
of rows.
"""

import contextlib
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from . import _compiled


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


def _chol_last(M, masked=False):
    """Lower Cholesky factors of a stack of small matrices held with the stack last.

    ``M`` has shape (q, q, g): ``M[:, :, i]`` is group ``i``'s matrix. Column by
    column over the q columns, each step one operation on all the groups at once:
    for the small q of a random-effects term this is several times faster than a
    batched LAPACK call per group, and the group axis stays contiguous.

    With ``masked``, a group whose matrix is not positive definite does not raise:
    ``(L, ok)`` is returned, ``ok`` false for those groups (their columns of ``L`` are
    meaningless; the other groups' are their factors).

    Raises
    ------
    numpy.linalg.LinAlgError
        When a matrix is not (numerically) positive definite (without ``masked``).
    """
    q = M.shape[0]
    L = np.zeros(M.shape)
    ok = np.ones(M.shape[-1], dtype=bool)
    for j in range(q):
        d = M[j, j] - np.einsum("kg,kg->g", L[j, :j], L[j, :j]) if j else M[j, j]
        positive = d > 0.0
        if not positive.all():
            if not masked:
                raise np.linalg.LinAlgError("Matrix is not positive definite")
            ok &= positive
            d = np.where(positive, d, 1.0)  # any pivot: the group is dropped
        L[j, j] = np.sqrt(d)
        if j + 1 < q:
            r = M[j + 1 :, j]
            if j:
                r = r - np.einsum("ikg,kg->ig", L[j + 1 :, :j], L[j, :j])
            L[j + 1 :, j] = r / L[j, j]
    if not masked:
        return L
    return L, ok & np.isfinite(L).all(axis=(0, 1))


def _lower_solve_last(L, B):
    """``L^{-1} B`` per group for ``L`` (q, q, g) lower triangular and ``B`` (q, k, g)
    (or (q, k, 1): the same right-hand side for every group)."""
    X = np.empty(B.shape[:-1] + L.shape[-1:])
    for i in range(L.shape[0]):
        acc = B[i]
        if i:
            acc = acc - np.einsum("jg,jkg->kg", L[i, :i], X[:i])
        X[i] = acc / L[i, i]
    return X


def _upper_solve_t_last(L, B):
    """``(L')^{-1} B`` per group, the stack last (back substitution)."""
    X = np.empty(B.shape)
    q = L.shape[0]
    for i in range(q - 1, -1, -1):
        acc = B[i]
        if i < q - 1:
            acc = acc - np.einsum("jg,jkg->kg", L[i + 1 :, i], X[i + 1 :])
        X[i] = acc / L[i, i]
    return X


def _group_sum_last(A, B):
    """``T[m, j, k, l] = sum_g A[j, k, g] B[l, m, g]`` (stacks last): one matrix product."""
    q, n_g = A.shape[0], A.shape[-1]
    T = (A.reshape(q * q, n_g) @ B.reshape(q * q, n_g).T).reshape(q, q, q, q)  # [j, k, l, m]
    return T.transpose(3, 0, 1, 2)


def _cho_solve(L_inv, B):
    """``C^{-1} B`` where ``C = L L'`` and ``L_inv = L^{-1}`` (p x p, from one small solve).

    Two matrix products: the right-hand sides are wide (one column per group and
    random effect), and a product is cheaper than a triangular solve over them.
    numpy's BLAS only: on a machine where numpy and scipy each load their own
    threaded OpenBLAS, alternating between the two leaves one library's idle
    threads spinning against the other's.
    """
    return L_inv.T @ (L_inv @ B)


def profile_fixed_effects(S, logdet, p, k, reml, log_weights=0.0):
    """``beta``, ``r2`` and ``D`` from ``S = [X y]' V^{-1} [X y]`` and ``log|M|``.

    The part of the criterion shared by every random-effects engine: with
    ``chol(S) = [[L_C, 0], [l', s]]``, ``beta = L_C^{-T} l`` and ``r2 = s^2``;
    ``k`` is ``n`` (ML) or ``n - p`` (REML). With precision weights ``w`` (the
    cross-products weighted), ``D`` also has lme4's ``-sum(log w)``: the residual
    covariance is ``sigma2 W^{-1}``.
    """
    # LAPACK directly: numpy's wrappers cost several times the work on a (p+1)-matrix.
    R, info = lapack.dpotrf(S, lower=1, clean=1)
    if info > 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    L_C, s = R[:p, :p], R[p, p]
    r2 = s * s
    dev = logdet + k * (1.0 + np.log(2.0 * np.pi * r2 / k)) - log_weights
    if reml:
        dev += 2.0 * np.log(np.diagonal(L_C)).sum()
    if p:
        beta = lapack.dtrtrs(L_C, R[p, :p], lower=1, trans=1)[0]
        L_C_inv = lapack.dtrtri(L_C, lower=1)[0]
    else:
        beta, L_C_inv = np.zeros(0), np.zeros((0, 0))
    return {
        "L_C": L_C,
        "L_C_inv": L_C_inv,
        "beta": beta,
        "r2": r2,
        "logdet": logdet,
        "deviance": float(dev),
    }


class FactorCache:
    """Keeps the last factorization, keyed by ``theta``.

    An evaluation and the EM step, BLUPs or gradient that follow it at the same
    ``theta`` share one factorization. Subclasses define ``_compute_factor``. (The
    one-factor criterion's compiled kernels factor afresh at every call instead: a few
    microseconds on the small designs they run on.)
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

    _kernel_args = None

    def __init__(self, stats, cov, reml):
        self.stats = stats
        self.cov = cov
        self.reml = bool(reml) and stats.p > 0  # no fixed effects: REML is ML
        self._basis = cov.basis()
        p = stats.p
        self.k = stats.n - p if self.reml else stats.n
        self._cache = None
        self._stack = None
        self._eye = np.eye(cov.q)[:, :, None]
        self._kernel_args = None

    def _compiled_args(self):
        """The arrays of the compiled kernels (:mod:`sklmm._compiled`), or ``None`` when
        the numpy kernels run: numba is not installed, there are no random effects, or
        there are so many groups that numpy's vectorised kernels are faster
        (:data:`sklmm._compiled.MAX_WORK`)."""
        if not _compiled.AVAILABLE:
            return None
        if self._kernel_args is None:
            st = self.stats
            if st.q and _compiled.use_for(st.n_groups, st.q):
                self._kernel_args = (
                    np.ascontiguousarray(st.ZtZ, dtype=float),
                    np.ascontiguousarray(st.ZtXy, dtype=float),
                    np.ascontiguousarray(st.XytXy, dtype=float),
                )
            else:
                self._kernel_args = ()
        return self._kernel_args or None

    @property
    def trial_order(self):
        """The order at which the Newton solver evaluates its line-search trial points:
        2 with the compiled kernels (the derivatives cost a fraction of a call, and an
        accepted point needs no second call), else 0 (numpy's kernels keep the
        factorization for the derivatives that follow)."""
        return 2 if self._compiled_args() is not None else 0

    # -- shared factorization -------------------------------------------
    def _stacked(self):
        """``[Z_i'Z_i  Z_i'[X_i y_i]]`` of every group, shape (q, q + p + 1, groups).

        The per-group blocks with the groups last and contiguous: every per-group
        product of the criterion is then one operation over all the groups
        (:func:`_chol_last`); built on first use and kept.
        """
        if self._stack is None:
            st = self.stats
            both = np.concatenate([st.ZtZ, st.ZtXy], axis=2)
            self._stack = np.ascontiguousarray(np.moveaxis(both, 0, -1))
        return self._stack

    def _compute_factor(self, theta):
        st, p = self.stats, self.stats.p
        lam = self.cov.lam(theta)
        f = {"lam": lam}
        args = self._compiled_args()
        if args is not None:
            ok, L, K, S, logdet = _compiled.kernels().factor(
                *args, np.asarray(theta, dtype=float), self.cov.rows, self.cov.cols
            )
            if not ok:
                raise np.linalg.LinAlgError("Matrix is not positive definite")
            q = st.q
            f.update(
                L_last=L.transpose(1, 2, 0),
                K_last=K.transpose(1, 2, 0),
                L=L,
                K_Xy=K[:, :, q:],
            )
        elif st.q:
            q = st.q
            stack = self._stacked()
            # Lambda' [Z'Z  Z'[X y]] for every group: one product over the stacked columns.
            R = (lam.T @ stack.reshape(q, -1)).reshape(stack.shape)
            M = np.einsum("ikg,kl->ilg", R[:, :q], lam)
            M += self._eye
            L = _chol_last(M)
            K = _lower_solve_last(L, R)  # [K_Z K_Xy] = L^{-1} Lambda' Z'[Z X y]
            S = st.XytXy.copy()
            for i in range(q):
                S -= K[i, q:] @ K[i, q:].T
            logdet = 2.0 * float(sum(np.log(L[i, i]).sum() for i in range(q)))
            # The group-first views for the methods that run once per fit.
            f.update(
                L_last=L,
                K_last=K,
                L=L.transpose(2, 0, 1),
                K_Xy=K[:, q:].transpose(2, 0, 1),
            )
        else:
            S, logdet = st.XytXy.copy(), 0.0
        f.update(profile_fixed_effects(S, logdet, p, self.k, self.reml, self.stats.log_weights))
        return f

    def __call__(self, theta, order=0):
        """Evaluate ``D`` (order 0), its gradient (1) and Hessian (2).

        Raises
        ------
        numpy.linalg.LinAlgError
            When ``[X y]' V^{-1} [X y]`` is not positive definite.
        """
        theta = np.asarray(theta, dtype=float)
        args = self._compiled_args()
        if args is not None:
            return self._compiled_call(args, theta, order)
        f = self._factor(theta)
        ev = Evaluation(theta, f["deviance"], f["beta"], f["r2"] / self.k)
        if order >= 1:
            if self.stats.q:
                ev.gradient, ev.hessian = self._derivatives(f, order)
            else:
                ev.gradient, ev.hessian = np.zeros(0), np.zeros((0, 0))
        return ev

    def _compiled_call(self, args, theta, order):
        """``__call__`` by the compiled kernel: one call, no factorization kept."""
        cov = self.cov
        status, dev, beta, r2, grad, hess = _compiled.kernels().evaluate(
            *args,
            theta,
            cov.rows,
            cov.cols,
            float(self.k),
            self.reml,
            float(self.stats.log_weights),
            int(order),
        )
        if status != _compiled.OK:
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        return Evaluation(
            theta,
            float(dev),
            beta,
            r2 / self.k,
            grad if order >= 1 else None,
            hess if order >= 2 else None,
        )

    # -- derivatives ----------------------------------------------------
    def _derivatives(self, f, order):
        st, p, k, r2 = self.stats, self.stats.p, self.k, f["r2"]
        lam, K, beta = f["lam"], f["K_last"], f["beta"]
        q = st.q
        # The groups last: [A_i  W_i  Z_i'V_i^{-1}y_i] = Z_i'[Z X y] - K_Z' [K_Z K_Xy].
        AW = self._stacked() - np.einsum("iag,ibg->abg", K[:, :q], K)
        A, W = AW[:, :q], AW[:, q : q + p]
        u = AW[:, q + p] - np.einsum("acg,c->ag", W, beta)  # (q, groups)
        Su = u @ u.T
        G = A.sum(axis=2) - (k / r2) * Su
        if self.reml:
            # L_C^{-1} W_i' for every group (one broadcast matrix product), so that
            # W_i C^{-1} W_i' = V_i'V_i; those per-group blocks also enter the Hessian.
            V = np.matmul(f["L_C_inv"], W)
            WCW = np.einsum("acg,bcg->abg", V, V)
            G -= WCW.sum(axis=2)
        E = self._basis
        rows, cols = self.cov.rows, self.cov.cols
        grad = 2.0 * (G @ lam)[rows, cols]
        if order < 2:
            return grad, None
        # Second derivative as a bilinear form H4[m,j,k,l] E[m,j] F[k,l]; every sum over
        # the groups is one matrix product of the flattened per-group blocks.
        n_g = st.n_groups
        A = np.ascontiguousarray(A)
        H4 = -_group_sum_last(A, A)
        Sn = Su / r2  # scaled before the product: r2**2 overflows for |y| ~ 1e80
        H4 -= k * np.multiply.outer(Sn, Sn)
        uu = u[:, None, :] * u[None, :, :]  # [m, l, g]
        H4 += (2.0 * k / r2) * (
            (A.reshape(q * q, n_g) @ uu.reshape(q * q, n_g).T)
            .reshape(q, q, q, q)
            .transpose(2, 0, 1, 3)
        )
        if p:
            Wl = np.ascontiguousarray(W).reshape(q * p, n_g)  # [(m, j), g]
            Rw = (Wl @ u.T).reshape(q, p, q).transpose(0, 2, 1)  # [m, j, a]
            CiR = _cho_solve(f["L_C_inv"], Rw.reshape(-1, p).T)
            H4 -= (2.0 * k / r2) * (Rw.reshape(-1, p) @ CiR).reshape(H4.shape)
        if self.reml:
            H4 += 2.0 * _group_sum_last(A, WCW)
            Q = (Wl @ Wl.T).reshape(q, p, q, p).transpose(0, 2, 1, 3)  # [m, j, a, b]
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
        q, p = st.q, st.p
        lam, L, K = f["lam"], f["L_last"], f["K_last"]
        # The groups last, as the criterion: v_i = K_y - K_X beta, b_i = Lambda L_i^{-T} v_i.
        v = K[:, q + p] - np.einsum("icg,c->ig", K[:, q : q + p], f["beta"])
        w = _upper_solve_t_last(L, v[:, None, :])[:, 0]
        J = self._J(f)
        sigma2 = f["r2"] / self.k
        return (lam @ w).T, sigma2 * np.matmul(_t(J), J)

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
        """``L_i^{-1} Lambda'`` for every group (groups first), computed once per
        factorization (by the groups-last solve, one right-hand side for every group)."""
        if "J" not in f:
            J = _lower_solve_last(f["L_last"], f["lam"].T[:, :, None])
            f["J"] = np.ascontiguousarray(J.transpose(2, 0, 1))
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
        """Forget the cached factorization and the groups-last copy of the statistics (a
        fitted model keeps only the statistics; both are rebuilt when needed)."""
        self._cache = None
        self._stack = None
        self._kernel_args = None

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
        args = self._compiled_args()
        if args is not None:
            cov = self.cov
            status, psi, new = _compiled.kernels().em_psi(
                *args,
                np.asarray(theta, dtype=float),
                float(st.n),
                float(self.k),
                self.reml,
                cov.rows,
                cov.cols,
                cov.kind == "diagonal",
            )
            if status != _compiled.OK:
                raise np.linalg.LinAlgError("Matrix is not positive definite")
            return cov.theta_from_psi(psi) if new is None else new
        f = self._factor(np.asarray(theta, dtype=float))
        q, lam, L, K, beta = st.q, f["lam"], f["L_last"], f["K_last"], f["beta"]
        sigma2 = f["r2"] / self.k
        stack = self._stacked()
        ZtZ, ZtXy = stack[:, :q], stack[:, q:]
        K_X = K[:, q : q + p]
        # The groups last: J_i = L_i^{-1} Lambda', P_i = J_i'J_i = (Psi^{-1} + Z_i'Z_i)^{-1}
        # on the profile scale.
        J = _lower_solve_last(L, lam.T[:, :, None])
        P = np.einsum("iag,ibg->abg", J, J)
        v = K[:, q + p] - np.einsum("icg,c->ig", K_X, beta)
        b = lam @ _upper_solve_t_last(L, v[:, None, :])[:, 0]  # (q, groups)
        cov_b = sigma2 * P.sum(axis=2)  # summed over the groups
        trace = float(np.einsum("ijg,ijg->", ZtZ, P))  # both symmetric
        if self.reml:
            PZtX = np.einsum("iag,icg->acg", J, K_X)  # P_i Z_i'X_i, (q, p, groups)
            V = np.matmul(f["L_C_inv"], PZtX)
            cov_b = cov_b + sigma2 * np.einsum("acg,bcg->ab", V, V)
            T1 = np.einsum("abg,bdg->adg", ZtZ, PZtX)
            D_X = st.XytXy[:p, :p].copy()
            for i in range(q):
                D_X += PZtX[i] @ T1[i].T - 2.0 * (K_X[i] @ K_X[i].T)
            trace += np.trace(_cho_solve(f["L_C_inv"], D_X))
        coef = np.append(beta, -1.0)
        r = np.einsum("akg,k->ag", ZtXy, coef)  # Z_i'(X_i beta - y_i)
        rss = (
            coef @ st.XytXy @ coef
            + 2.0 * np.einsum("ag,ag->", b, r)
            + np.einsum("ag,abg,bg->", b, ZtZ, b)
        )
        sigma2_new = (max(rss, 0.0) + sigma2 * trace) / st.n
        Sigma = (b @ b.T + cov_b) / st.n_groups
        if self.cov.kind == "diagonal":
            Sigma = np.diag(np.diag(Sigma))
        return self.cov.theta_from_psi(Sigma / sigma2_new)
