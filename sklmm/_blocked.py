r"""The profiled criterion of a model with several random-effects terms.

The general engine: used by the estimator for every model with more than one
term (variance components, nested or crossed factors, several standard terms);
a single term goes through the one-factor engine of :mod:`sklmm._profile`,
which this engine reproduces (tested).

Model
-----
``K`` terms, crossed or nested::

    y = X beta + Z_1 b_1 + ... + Z_K b_K + e,   e ~ N(0, sigma2 I_n),
    b_k = (b_k1, ..., b_km_k),  b_kl ~ N(0, sigma2 Lambda_k Lambda_k') independently.

Term ``k`` has a grouping factor with ``m_k`` levels (an integer code per row)
and ``q_k`` columns ``z_k`` (the intercept and its slopes): the row of ``Z_k``
for a row with level ``l`` holds ``z_k`` in the ``q_k`` columns of level ``l``
and zeros elsewhere. ``Lambda_k`` (``q_k x q_k``, lower triangular) is the
term's relative Cholesky factor on the square-root scale of
:mod:`sklmm._profile`, with free entries ``theta_k``
(:class:`sklmm._covariance.CovarianceStructure`); ``theta`` is the
concatenation of the ``theta_k`` in the caller's order of the terms (lme4's
``theta``, up to lme4's own ordering of the terms). ``Lambda`` is the
block-diagonal matrix of all levels' ``Lambda_k``; ``beta`` and ``sigma2`` are
profiled out.

The blocked Cholesky factor
---------------------------
The terms are sorted by decreasing number of levels; term 1 (the largest)
forms the first block, all other terms' levels together the second ("rest",
``m_r = sum_{k>1} m_k q_k`` rows). ``Z_1'Z_1`` is block diagonal with the
``q_1 x q_1`` blocks ``C_l``; ``B = Z_r'Z_1`` is the sparse contingency table
(weighted by the terms' columns); ``G = Z_r'Z_r`` is dense. With
``M = Lambda'Z'Z Lambda + I``::

    A11_l = Lambda_1'C_l Lambda_1 + I,   L11_l = chol(A11_l)       block diagonal
    W_l   = Lambda_1 A11_l^{-1} Lambda_1'                           (q_1 x q_1 each)
    GP    = G - B blockdiag(W_l) B'          = Z_r'V_1^{-1}Z_r (V_1: term 1 alone)
    A22   = Lambda_r' GP Lambda_r + I,       L22 = chol(A22)        dense: the fill-in block
    K1    = L11^{-1} Lambda_1' Z_1'[X y]
    K2    = L22^{-1} Lambda_r' (Z_r'[X y] - B blockdiag(W_l) Z_1'[X y])
    S     = [X y]'[X y] - K1'K1 - K2'K2 = [X y]' V^{-1} [X y],   V = I + Z Psi Z'
    chol(S) = [[L_C, 0], [l', s]]:  C = L_C L_C',  beta = L_C^{-T} l,  r2 = s^2

    log|M| = 2 sum log diag L11 + 2 sum log diag L22
    ML:   D(theta) = log|M| + n (1 + log(2 pi r2 / n))
    REML: D(theta) = log|M| + log|C| + (n - p)(1 + log(2 pi r2 / (n - p)))

exactly as for one factor. (``L21 = Lambda_r'B Lambda_1 L11^{-T}`` never has to
be formed: ``L21 L21' = Lambda_r' B blockdiag(W_l) B' Lambda_r``.) Only the
rest-by-rest block is dense; nothing of size ``n`` or (all levels)^2 is formed.
For a single term the rest block is empty and the factor is block diagonal.

The gradient
------------
With ``k`` = ``n`` (ML) or ``n - p`` (REML), ``Q = M^{-1} Lambda'Z'[X y]``,
``H = Z'[X y] - Z'Z Lambda Q = Z'V^{-1}[X y]``, and for every level ``l`` of a
term ``W_l^X = H_l[:, :p]`` and ``u_l = H_l[:, p] - W_l^X beta``
(``= Z_l'V^{-1}(y - X beta)``), the derivative along ``dLambda_k`` (the same
``q_k x q_k`` matrix for all levels of term ``k``) is the Frobenius product
``<G_k, dLambda_k>`` plus, for term 1, a correction::

    G_k = sum_{l in k} [2 R_l - 2 (k / r2) u_l u_l' Lambda_k
                        (- 2 W_l^X C^{-1} W_l^X' Lambda_k  for REML)],
    R_l = (Z'Z Lambda M^{-1})_ll                 (the derivative of log|M|)

For a rest level ``R_l`` is a diagonal block of ``GP Lambda_r A22^{-1}``. For
a level of term 1, from the block inverse of ``M``::

    R_l = C_l Lambda_1 A11_l^{-1} - J_l E_l Lambda_1 A11_l^{-1},
    J_l = I - C_l W_l = (I + C_l Psi_1)^{-1},   E_l = B_l' Y B_l,
    Y = Lambda_r A22^{-1} Lambda_r'

and ``sum_l <J_l E_l Lambda_1 A11_l^{-1}, dLambda_1> = <Y, B blockdiag(F_l) B'>``
with ``F_l = Lambda_1 A11_l^{-1} dLambda_1' J_l``: one sparse product of the
pattern of the factor's per parameter of term 1 (for ``q_1 = 1``:
``F_l = theta_1 / L11_l^4``). A gradient therefore costs one ``potri`` for
``A22^{-1}`` and a few rest-by-rest products. Nothing divides by ``theta``, so
the gradient is exact at and near the boundary ``diag(Lambda_k) = 0``.

Why quasi-Newton
----------------
The Hessian involves ``tr(M^{-1} dM_j M^{-1} dM_k)``, i.e. products of whole
blocks of ``M^{-1}``, including its first (largest-by-largest) block, which is
dense: forming it is the (all levels)^2 object this engine avoids. So
:func:`minimize_blocked` uses L-BFGS-B (the limited-memory BFGS update, with
the bounds ``diag(Lambda_k) >= 0`` handled by its projection) on the analytic
gradient, from the one-factor fits of every term alone
(:func:`initial_theta`). Convergence: every entry of the projected gradient,
times ``max(1, |theta_i|)``, at most ``tol * n`` (unit-free: ``D`` shifts with
the units of ``y``, its gradient does not), and no descent off the boundary where a diagonal entry
of ``Lambda_k`` is 0 (a saddle point there is left and the search
restarted). The Hessian is not checked in the interior: that would cost
``2 x n_theta`` gradients (10 s on the MovieLens-shaped benchmark), and
L-BFGS-B's descent steps do not stop at an interior saddle point but from a
measure-zero set of starts.

Conditional modes
-----------------
``b = Lambda M^{-1} Lambda'Z'(y - X beta) = Lambda (Q[:, p] - Q[:, :p] beta)``
and their conditional covariances ``sigma2 Lambda_l (M^{-1})_ll Lambda_l'``
(lme4's ``ranef(condVar = TRUE)``; the uncertainty of ``beta`` is not
included), with ``(M^{-1})_ll = A11_l^{-1} (I + Lambda_1'E_l Lambda_1
A11_l^{-1})`` for term 1 and a diagonal block of ``A22^{-1}`` for the rest.

Conventions: ``theta``, the terms and their levels are always in the caller's
order (the order of ``codes_list``); the sorting by number of levels is
internal and recorded in :attr:`BlockedStats.order`.
"""

import functools
import os

import numpy as np
import scipy.linalg as sla
import scipy.optimize
import scipy.sparse as sp

from ._covariance import CovarianceStructure
from ._crossprod import model_stats
from ._profile import (
    Evaluation,
    FactorCache,
    _lower_solve,
    _t,
    _upper_solve_t,
    profile_fixed_effects,
)
from ._solvers import (
    DECREMENT_TOL,
    DEFAULT_TOL,
    PRECISION_GRADIENT,
    SolverResult,
    scaled_gradient,
)

#: Rows of the dense (rest) block from which ``minimize_blocked`` uses two BLAS threads.
THREADED_REST = 2000

#: The dense part of the split product of the contingency table has at most this many
#: times ``m_r`` columns (so at most this many times the dense block's size).
GRAM_DENSE_COLUMNS = 3

#: A level of term 1 with at least this fraction of ``m_r`` nonzeros in ``B`` enters
#: ``B diag(w) B'`` by a dense matrix product rather than the sparse one.
GRAM_SPLIT = 0.12


def _tri_solve(L, B, trans=0):
    """``L^{-1} B`` (``trans=1``: ``L'^{-1} B``) for a lower-triangular ``L``, by LAPACK
    directly: ``scipy.linalg.solve_triangular``'s checks cost more than a small solve."""
    X, info = sla.lapack.dtrtrs(L, B, lower=1, trans=trans)
    if info:  # pragma: no cover - L comes from a successful Cholesky
        raise np.linalg.LinAlgError("singular triangular factor")
    return X


#: The contingency table ``B`` (``m_r`` by ``m1 q1``) is also held dense when it has at
#: most this many entries (2 MB): its products are then plain BLAS calls.
SMALL_DENSE_TABLE = 1 << 18

#: The smallest diagonal entry of ``Lambda_k`` at the start (the one-factor fits may give 0).
START_FLOOR = 0.1


def blocked_stats(X, y, codes_list, n_levels=None, Z_list=None):
    """Form the blocked cross-products once (arrays in memory).

    Parameters
    ----------
    X : ndarray of shape (n, p)
        Fixed-effects design (intercept column included when fitted).
    y : ndarray of shape (n,)
        Response.
    codes_list : sequence of ndarray of int, each of shape (n,)
        Level of each row for every term (codes in ``range(n_levels[k])``).
        A nested term such as lme4's ``batch:cask`` is given by the codes of
        the interaction.
    n_levels : sequence of int, optional
        Levels per term; default ``codes.max() + 1``.
    Z_list : sequence of (ndarray of shape (n, q_k) or None), optional
        Columns of every term (the intercept and slopes); ``None`` (the
        default for every term) is a random intercept, a column of ones.

    Returns
    -------
    BlockedStats
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError("X must be (n, p) and y (n,) with the same n")
    n = y.shape[0]
    codes_list = [np.asarray(c) for c in codes_list]
    if not codes_list:
        raise ValueError("at least one random-effects term is needed")
    for c in codes_list:
        if c.shape != (n,) or not np.issubdtype(c.dtype, np.integer):
            raise ValueError("every codes array must be integer with one entry per row")
        if n and c.min() < 0:
            raise ValueError("codes must be non-negative")
    if n_levels is None:
        n_levels = [int(c.max()) + 1 if n else 0 for c in codes_list]
    for c, m in zip(codes_list, n_levels, strict=True):
        if n and c.max() >= m:
            raise ValueError("a code is not below its term's number of levels")
    if Z_list is None:
        Z_list = [None] * len(codes_list)
    Z_list = [np.ones((n, 1)) if Z is None else np.asarray(Z, dtype=float) for Z in Z_list]
    for Z in Z_list:
        if Z.ndim != 2 or Z.shape[0] != n or Z.shape[1] < 1:
            raise ValueError("every term's Z must be (n, q) with q >= 1")
    return model_stats(X, y, codes_list, n_levels, Z_list)


class BlockedDeviance(FactorCache):
    """``D(theta)`` for several random-effects terms, with its gradient and BLUPs.

    Parameters
    ----------
    stats : BlockedStats
        Cross-products from :func:`blocked_stats`.
    reml : bool
        REML criterion if true, else ML.
    structures : sequence of CovarianceStructure, optional
        The covariance structure of every term, in the caller's order
        (default: unstructured, which for a random intercept is its only form).
    """

    def __init__(self, stats, reml, structures=None):
        self.stats = stats
        self.reml = bool(reml) and stats.p > 0  # no fixed effects: REML is ML
        p, K = stats.p, stats.n_terms
        q_sorted = stats.q
        q_caller = np.empty(K, dtype=int)
        q_caller[stats.order] = q_sorted
        if structures is None:
            structures = [CovarianceStructure(int(q)) for q in q_caller]
        structures = list(structures)
        if [s.q for s in structures] != list(q_caller):
            raise ValueError("every term's covariance structure must match its number of columns")
        self.structures = structures
        sizes = np.array([s.n_theta for s in structures], dtype=int)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        self._slices = [slice(bounds[k], bounds[k + 1]) for k in range(K)]
        self.n_theta = int(bounds[-1])
        self.lower_bounds = np.concatenate([s.lower_bounds for s in structures])
        self._sorted_structures = [structures[k] for k in stats.order]
        self._bases = [s.basis() for s in self._sorted_structures]
        self.k = stats.n - p if self.reml else stats.n
        levels = stats.n_levels
        self._q = q_sorted
        self.m1, self.q1 = int(levels[0]), int(q_sorted[0])
        sizes_r = levels[1:] * q_sorted[1:]
        self.m_r = int(sizes_r.sum())
        self._offsets = np.concatenate([[0], np.cumsum(sizes_r)]).astype(int)
        #: sorted term index of every row of the rest block
        self._rest_term = np.repeat(np.arange(1, K), sizes_r)
        self._scalar_rest = bool(np.all(q_sorted[1:] == 1))
        #: every term a random intercept (variance components): the vectorised fast path
        self._scalar = self._scalar_rest and self.q1 == 1
        self._C1 = stats.ZtZ[0]
        self._ZtXy1 = stats.ZtXy[0]
        self._ZtXy_r = (
            np.concatenate([z.reshape(-1, p + 1) for z in stats.ZtXy[1:]], axis=0)
            if self.m_r
            else np.zeros((0, p + 1))
        )
        self._cache = None
        self._build()

    _DERIVED = ("_B", "_Bd", "_G", "_br", "_bc", "_gram_split")

    def reweighted(self, stats):
        """This criterion for other statistics of the same terms, levels and columns (a
        GLMM's next PIRLS step: new weights): everything that depends only on the terms'
        shapes is kept, the rest rebuilt."""
        p = stats.p
        if p != self.stats.p or stats.order.tolist() != self.stats.order.tolist():
            return BlockedDeviance(stats, self.reml, self.structures)
        new = object.__new__(BlockedDeviance)
        new.__dict__.update(self.__dict__)
        new.stats, new._cache = stats, None
        new._C1, new._ZtXy1 = stats.ZtZ[0], stats.ZtXy[0]
        if self.m_r:
            new._ZtXy_r = np.concatenate([z.reshape(-1, p + 1) for z in stats.ZtXy[1:]], axis=0)
            new._build()
        return new

    def _build(self):
        """The contingency table ``B = Z_r'Z_1`` (sparse) and ``G = Z_r'Z_r`` (dense)."""
        stats, K, q_sorted = self.stats, self.stats.n_terms, self._q
        if self.m_r:
            B = sp.vstack([stats.block(i, 0) for i in range(1, K)]).tocsr()
            B.sum_duplicates()
            B.sort_indices()
            G = np.zeros((self.m_r, self.m_r))
            for i in range(1, K):
                si = slice(self._offsets[i - 1], self._offsets[i])
                G[si, si] = (
                    sla.block_diag(*stats.ZtZ[i])
                    if q_sorted[i] > 1
                    else np.diag(stats.ZtZ[i][:, 0, 0])
                )
                for j in range(1, i):
                    blk = stats.block(i, j).toarray()
                    sj = slice(self._offsets[j - 1], self._offsets[j])
                    G[si, sj] = blk
                    G[sj, si] = blk.T
        else:
            B = sp.csr_matrix((0, self.m1 * self.q1))
            G = np.zeros((0, 0))
        self._B = B  # Z_r'Z_1, m_r x m1 q1
        self._G = G  # Z_r'Z_r, dense
        self._br = np.repeat(np.arange(self.m_r), np.diff(B.indptr))  # rows of B's nonzeros
        self._bc = B.indices  # columns of B's nonzeros
        self._gram_split = self._split_for_gram(B)
        # A small table is also held dense: scipy.sparse's per-call overhead (index
        # types, format checks) is then most of an evaluation of a small crossed model.
        small = self.m_r * self.m1 * self.q1 <= SMALL_DENSE_TABLE
        self._Bd = B.toarray() if small and self.m_r else None

    @property
    def _Bh(self):
        """``B`` for the products of every evaluation: dense when small, else sparse."""
        return self._B if self._Bd is None else self._Bd

    def _split_for_gram(self, B):
        """Heavy and light levels of term 1 for ``B diag(w) B'`` (random intercept first).

        A level with ``c`` nonzeros in ``B`` costs about ``c^2`` scalar products in
        the sparse product (with scipy's symbolic pass and densification on top) and
        ``m_r^2`` flops as a dense column in a BLAS matrix product, which runs
        several hundred times faster per flop. Levels with ``c >= GRAM_SPLIT * m_r``
        go to the dense product (MovieLens shape: about 450 of 6,040 users, the gram in
        about 0.4 s instead of 0.6-0.96 s), at most :data:`GRAM_DENSE_COLUMNS` ``* m_r`` of
        them (the heaviest), so that the dense copy stays within a few times the dense
        block's size (a nearly full contingency table, such as 10,000,000 rows over
        5,000 x 2,000 levels, then runs entirely through BLAS: seconds per gram instead
        of minutes). Only for a large dense block (``m_r >= THREADED_REST``, where BLAS
        runs on two threads).
        """
        if self.q1 != 1 or self.m_r < THREADED_REST:
            return None
        Bc = B.tocsc()
        nnz = np.diff(Bc.indptr)
        order = np.argsort(-nnz, kind="stable")[: GRAM_DENSE_COLUMNS * self.m_r]
        heavy = np.zeros(len(nnz), dtype=bool)
        heavy[order[nnz[order] >= GRAM_SPLIT * self.m_r]] = True
        if not heavy.any():
            return None
        light = np.flatnonzero(~heavy)
        B_light = Bc[:, light].tocsr()
        B_light.sort_indices()
        return {
            "heavy": np.flatnonzero(heavy),
            "light": light,
            "B_light": B_light,
            "light_cols": light[B_light.indices],  # term-1 level of each nonzero
            "B_heavy": Bc[:, heavy].toarray(),
        }

    def release(self):
        """Free ``G`` (dense, m_r x m_r), ``B`` and the cached factor; rebuilt when needed.

        A fitted estimator keeps its criterion for the likelihood-ratio test; this keeps
        it (and its pickle) small.
        """
        for name in self._DERIVED:
            self.__dict__.pop(name, None)
        self._cache = None

    def __getattr__(self, name):
        # Only reached when normal lookup fails: after release() or unpickling.
        if name in BlockedDeviance._DERIVED and "stats" in self.__dict__:
            self._build()
            return self.__dict__[name]
        raise AttributeError(name)

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in (*self._DERIVED, "_cache"):
            state.pop(name, None)
        return state

    # -- parameters ---------------------------------------------------------
    def _lams(self, theta):
        """``Lambda_k`` of every term, in the sorted order."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.n_theta,):
            raise ValueError(f"theta must have {self.n_theta} entries")
        return [self.structures[k].lam(theta[self._slices[k]]) for k in self.stats.order]

    def _rest_lam(self, lams):
        """``Lambda_r``: a vector (all rest terms scalar) or a sparse block-diagonal matrix."""
        if self._scalar_rest:
            return np.concatenate(
                [
                    np.full(m, lam[0, 0])
                    for m, lam in zip(self.stats.n_levels[1:], lams[1:], strict=True)
                ]
            )
        return sp.block_diag(
            [
                sp.kron(sp.identity(m), lam)
                for m, lam in zip(self.stats.n_levels[1:], lams[1:], strict=True)
            ],
            format="csr",
        )

    def _lam_r_dot(self, lam_r, X, transpose=False):
        """``Lambda_r X`` (or ``Lambda_r' X``) for a dense ``X`` with m_r rows."""
        if self._scalar_rest:
            return lam_r[:, None] * X if X.ndim == 2 else lam_r * X
        return np.asarray((lam_r.T if transpose else lam_r) @ X)

    def _weighted_gram(self, W):
        """``B blockdiag(W_l) B'``, dense m_r x m_r; ``W`` is (m1,) if q1 = 1, else (m1, q1, q1)."""
        if self._Bd is not None:
            Bd = self._Bd
            if self.q1 == 1:
                return (Bd * W.reshape(-1)) @ Bd.T
            Bw = np.einsum("rlq,lqs->rls", Bd.reshape(self.m_r, self.m1, self.q1), W)
            return Bw.reshape(self.m_r, -1) @ Bd.T
        B = self._B
        if self.q1 == 1:
            w = W.reshape(-1)
            split = self._gram_split
            if split is not None:
                Bl = split["B_light"]
                Bw = sp.csr_matrix(
                    (Bl.data * w[split["light_cols"]], Bl.indices, Bl.indptr), shape=Bl.shape
                )
                gram = (Bw @ Bl.T).toarray()
                Bh = split["B_heavy"]
                gram += (Bh * w[split["heavy"]]) @ Bh.T
                return gram
            Bw = sp.csr_matrix((B.data * w[self._bc], B.indices, B.indptr), shape=B.shape)
        else:
            Wb = sp.bsr_matrix(
                (W, np.arange(self.m1), np.arange(self.m1 + 1)),
                shape=(self.m1 * self.q1, self.m1 * self.q1),
            )
            Bw = (B @ Wb).tocsr()
        return (Bw @ B.T).toarray()

    # -- factorization ------------------------------------------------------
    def log_det(self, theta):
        """``log|M|`` alone, without ``[X y]'V^{-1}[X y]`` (which weights that are not all
        positive, such as a GLMM's observed curvature, may leave indefinite)."""
        return self._compute_factor(np.asarray(theta, dtype=float), profile=False)["logdet"]

    def _compute_factor(self, theta, profile=True):
        st, p, q1 = self.stats, self.stats.p, self.q1
        lams = self._lams(theta)
        lam1 = lams[0]
        A11 = np.matmul(np.matmul(lam1.T, self._C1), lam1)
        A11[:, np.arange(q1), np.arange(q1)] += 1.0
        # T1 = L11^{-1} Lambda_1', so A11^{-1} Lambda_1' Z_1'[X y] = T1'... and W_l = T1'T1.
        if q1 == 1:  # a random intercept: square roots, no batched factorization
            L11 = np.sqrt(A11)
            T1 = lam1[0, 0] / L11
        else:
            L11 = np.linalg.cholesky(A11)
            T1 = _lower_solve(L11, np.broadcast_to(lam1.T, L11.shape))
        K1 = np.matmul(T1, self._ZtXy1)
        flat = K1.reshape(-1, p + 1)
        S = st.XytXy - flat.T @ flat
        logdet = 2.0 * np.log(np.diagonal(L11, axis1=1, axis2=2)).sum()
        f = {"theta": np.asarray(theta, dtype=float), "lams": lams, "L11": L11, "T1": T1, "K1": K1}
        if self.m_r:
            lam_r = self._rest_lam(lams)
            W = np.matmul(_t(T1), T1)  # Lambda_1 A11^{-1} Lambda_1'
            if self._scalar:
                # In place, row-major passes only (the dense block may be 100 MB).
                GP = self._weighted_gram(W[:, 0, 0])
                np.subtract(self._G, GP, out=GP)
                A22 = GP * lam_r[:, None]
                A22 *= lam_r[None, :]
            else:
                GP = self._G - self._weighted_gram(W)
                A22 = self._lam_r_dot(lam_r, self._lam_r_dot(lam_r, GP, True).T, True).T
            A22[np.diag_indices(self.m_r)] += 1.0
            L22, info = sla.lapack.dpotrf(A22, lower=1, clean=1, overwrite_a=1)
            if info:
                raise np.linalg.LinAlgError("the rest block is not positive definite")
            WZ = np.matmul(W, self._ZtXy1).reshape(-1, p + 1)
            R = self._lam_r_dot(lam_r, self._ZtXy_r - self._Bh @ WZ, True)
            K2 = _tri_solve(L22, R)
            S = S - K2.T @ K2
            logdet += 2.0 * np.log(np.diag(L22)).sum()
            f.update(lam_r=lam_r, W=W, GP=GP, L22=L22, K2=K2)
        if not profile:
            f["logdet"] = logdet
            return f
        f.update(profile_fixed_effects(S, logdet, p, self.k, self.reml, self.stats.log_weights))
        return f

    def _solve_Q(self, f):
        """``Q = M^{-1} Lambda'Z'[X y]``, blocked: Q1 (m1, q1, p+1) and Q2 (m_r, p+1)."""
        p = self.stats.p
        if self.m_r:
            Q2 = _tri_solve(f["L22"], f["K2"], trans=1)
            back = (self._Bh.T @ self._lam_r_dot(f["lam_r"], Q2)).reshape(self.m1, self.q1, p + 1)
            rhs = self._ZtXy1 - back
        else:
            Q2 = np.zeros((0, p + 1))
            rhs = self._ZtXy1
        # Q1 = A11^{-1} Lambda_1' rhs = T1' L11^{-1}... = L11^{-T} (T1 rhs)
        Q1 = _upper_solve_t(f["L11"], np.matmul(f["T1"], rhs))
        return Q1, Q2

    def _rest_inverse(self, f):
        """``A22^{-1}``, the rest block of ``M^{-1}`` (dense, symmetric)."""
        Ainv, info = sla.lapack.dpotri(f["L22"], lower=1)
        if info:  # pragma: no cover - L22 comes from a successful Cholesky
            raise np.linalg.LinAlgError("dpotri failed")
        return Ainv + np.tril(Ainv, -1).T

    # -- evaluation ---------------------------------------------------------
    def __call__(self, theta, order=0):
        """``D``, ``beta`` and ``sigma2`` at ``theta`` (order 0), and the gradient (order 1).

        Raises
        ------
        numpy.linalg.LinAlgError
            When ``[X y]' V^{-1} [X y]`` is not positive definite.
        """
        if order not in (0, 1):
            raise ValueError("order must be 0 or 1 (no Hessian; see the module docstring)")
        f = self._factor(theta)
        ev = Evaluation(f["theta"], f["deviance"], f["beta"], f["r2"] / self.k)
        if order == 1:
            if "gradient" not in f:  # cached with the factor: asked for again at the end
                f["gradient"] = self._gradient(f)
            ev.gradient = f["gradient"].copy()
        return ev

    def _logdet_gradient_scalar(self, f, Gm):
        """The log|M| parts of ``G_k`` when every term is a random intercept.

        Uses only the lower triangle of ``A22^{-1}`` (as LAPACK's ``potri`` leaves it):
        for symmetric ``X``, ``sum(A22^{-1} o X) = 2 sum(tril o X) - sum(diag o diag)``
        and ``(A22^{-1} o X) v = T v + T'v - diag(T) v`` with ``T = tril(A22^{-1}) o X``.
        """
        K = self.stats.n_terms
        t1, L11 = f["lams"][0][0, 0], f["L11"][:, 0, 0]
        c1 = self._C1[:, 0, 0]
        Gm[0] += 2.0 * np.sum(c1 / L11**2) * t1  # sum_l C_l Lambda_1 A11_l^{-1}
        if not self.m_r:
            return
        lam_r = f["lam_r"]
        Ainv, info = sla.lapack.dpotri(f["L22"], lower=1)
        if info:  # pragma: no cover - L22 comes from a successful Cholesky
            raise np.linalg.LinAlgError("dpotri failed")
        if t1 > 0:
            # -<Y, B diag(F) B'> with F_l = theta_1 / L11_l^4 (J_l = 1 / L11_l^2).
            T = self._weighted_gram(1.0 / L11**4)
            T *= Ainv
            q = 2.0 * (lam_r @ (T @ lam_r)) - np.sum(np.diag(T) * lam_r**2)
            Gm[0] -= 2.0 * t1 * q
        T = Ainv
        T *= f["GP"]
        h_r = T @ lam_r + T.T @ lam_r - np.diag(T) * lam_r
        h = np.bincount(self._rest_term, h_r, minlength=K)
        for i in range(1, K):
            Gm[i] += 2.0 * h[i]

    def _gradient(self, f):
        st, K = self.stats, self.stats.n_terms
        # Per sorted term, the q_k x q_k matrix G_k of <G_k, dLambda_k>.
        Gm = [np.zeros((q, q)) for q in self._q]
        extra = np.zeros(self._bases[0].shape[0])  # the term-1 correction, per parameter
        if self._scalar:
            self._logdet_gradient_scalar(f, Gm)
        else:
            extra = self._logdet_gradient(f, Gm)
        self._data_gradient(f, Gm)
        grad_sorted = [np.einsum("ab,jab->j", Gm[i], self._bases[i]) for i in range(K)]
        grad_sorted[0] = grad_sorted[0] + extra
        grad = np.empty(self.n_theta)
        for i, k in enumerate(st.order):
            grad[self._slices[k]] = grad_sorted[i]
        return grad

    def _logdet_gradient(self, f, Gm):
        """The log|M| parts of ``G_k`` (any terms); returns term 1's correction."""
        K, q1 = self.stats.n_terms, self.q1
        lams, L11 = f["lams"], f["L11"]
        # log|M|, term 1, first part: sum_l C_l Lambda_1 A11_l^{-1} = sum_l C_l T1'(L11^{-1}).
        A11inv = _upper_solve_t(L11, _lower_solve(L11, np.broadcast_to(np.eye(q1), L11.shape)))
        Gm[0] += 2.0 * np.einsum("lab,bc,lcd->ad", self._C1, lams[0], A11inv)
        extra = np.zeros(self._bases[0].shape[0])  # the term-1 correction, per parameter
        if self.m_r:
            lam_r = f["lam_r"]
            Ainv = self._rest_inverse(f)
            # rest levels: diagonal blocks of GP Lambda_r A22^{-1}; rows of (A22^{-1} Lambda_r')
            AinvLt = self._lam_r_dot(lam_r, Ainv).T  # A22^{-1} Lambda_r' (Ainv symmetric)
            for i in range(1, K):
                rows = slice(self._offsets[i - 1], self._offsets[i])
                qi = self._q[i]
                a = f["GP"][rows].reshape(-1, qi, self.m_r)
                b = AinvLt[rows].reshape(-1, qi, self.m_r)
                Gm[i] += 2.0 * np.einsum("lai,lbi->ab", a, b)
            # term 1, the correction -2 <Y, B blockdiag(F_l) B'>, Y = Lambda_r A22^{-1} Lambda_r'
            if np.any(lams[0]):
                Y = self._lam_r_dot(lam_r, AinvLt)
                J = -np.matmul(self._C1, f["W"])
                J[:, np.arange(q1), np.arange(q1)] += 1.0
                LA = np.matmul(lams[0], A11inv)  # Lambda_1 A11^{-1}
                for j, E in enumerate(self._bases[0]):
                    F = np.matmul(np.matmul(LA, E.T), J)
                    extra[j] = -2.0 * np.sum(Y * self._weighted_gram(F[:, 0, 0] if q1 == 1 else F))
        return extra

    def _data_gradient(self, f, Gm):
        """The parts of ``G_k`` from ``r2`` and, for REML, from ``log|C|``."""
        p, K = self.stats.p, self.stats.n_terms
        m1, q1, r2, lams = self.m1, self.q1, f["r2"], f["lams"]
        # H = Z'V^{-1}[X y] = Z'[X y] - Z'Z Lambda Q.
        Q1, Q2 = self._solve_Q(f)
        P1 = np.matmul(lams[0], Q1)  # Lambda_1 Q1
        H1 = self._ZtXy1 - np.matmul(self._C1, P1)
        H_r = self._ZtXy_r
        if self.m_r:
            P_r = self._lam_r_dot(f["lam_r"], Q2)
            H1 = H1 - (self._Bh.T @ P_r).reshape(m1, q1, p + 1)
            H_r = H_r - self._Bh @ P1.reshape(-1, p + 1) - self._G @ P_r
        coef = np.append(-f["beta"], 1.0)
        blocks = [H1] + [
            H_r[self._offsets[i - 1] : self._offsets[i]].reshape(-1, self._q[i], p + 1)
            for i in range(1, K)
        ]
        for i, H in enumerate(blocks):
            u = H @ coef
            M = -(self.k / r2) * np.einsum("la,lb->ab", u, u)
            if self.reml:
                W = np.ascontiguousarray(H[:, :, :p])
                CW = f["L_C_inv"] @ W.reshape(-1, p).T  # L_C^{-1} W_l' for every level
                CW = CW.T.reshape(W.shape)
                M -= np.einsum("lap,lbp->ab", CW, CW)
            Gm[i] += 2.0 * M @ lams[i]

    def blas_limit(self):
        """A context limiting BLAS to :meth:`blas_threads` threads."""
        return _blas_controller().limit(limits=self.blas_threads(), user_api="blas")

    def blas_threads(self):
        """BLAS threads for this criterion: 2 for a large dense block on 2+ cores, else 1."""
        return 2 if self.m_r >= THREADED_REST and (os.cpu_count() or 1) >= 2 else 1

    def conditional_modes(self, theta):
        """BLUPs of every term and their conditional covariances, on the user scale.

        Runs with :meth:`blas_threads` BLAS threads.

        Returns
        -------
        b : list of ndarray
            ``b[k]`` of shape (m_k, q_k): conditional modes of term ``k`` (the
            caller's order), ``Lambda M^{-1} Lambda'Z'(y - X beta)``.
        condvar : list of ndarray
            ``condvar[k]`` of shape (m_k, q_k, q_k): ``sigma2 Lambda_l
            (M^{-1})_ll Lambda_l'``, the conditional covariances given ``beta``
            (lme4 ``condVar``).
        """
        with _blas_controller().limit(limits=self.blas_threads(), user_api="blas"):
            return self._conditional_modes(theta)

    def _conditional_modes(self, theta):
        f = self._factor(np.asarray(theta, dtype=float))
        st, K = self.stats, self.stats.n_terms
        m1, q1 = self.m1, self.q1
        lams = f["lams"]
        Q1, Q2 = self._solve_Q(f)
        coef = np.append(-f["beta"], 1.0)
        sigma2 = f["r2"] / self.k
        L11 = f["L11"]
        A11inv = _upper_solve_t(L11, _lower_solve(L11, np.broadcast_to(np.eye(q1), L11.shape)))
        b_sorted = [np.matmul(Q1 @ coef, lams[0].T)]
        Minv1 = A11inv
        cv_sorted = []
        if self.m_r:
            lam_r = f["lam_r"]
            b_r = self._lam_r_dot(lam_r, Q2 @ coef)
            # The diagonal blocks of A22^{-1} = L22^{-T} L22^{-1}: from L22^{-1} (trtri, a
            # third of the flops of the whole inverse), column blocks by column blocks.
            L_inv, info = sla.lapack.dtrtri(f["L22"], lower=1)
            if info:  # pragma: no cover - L22 comes from a successful Cholesky
                raise np.linalg.LinAlgError("dtrtri failed")
            # E_l = B_l' Lambda_r A22^{-1} Lambda_r' B_l = W_l'W_l, W = L22^{-1} Lambda_r' B:
            # triangular solves (BLAS 3) on dense slices of B, a few thousand columns at
            # a time, so the memory stays O(m_r x chunk).
            Bc = self._B.tocsc()
            E = np.empty((m1, q1, q1))
            per = max(1, (1 << 21) // max(self.m_r, 1) // q1)  # levels per chunk
            for start in range(0, m1, per):
                stop = min(start + per, m1)
                dense = Bc[:, start * q1 : stop * q1].toarray()
                W = sla.solve_triangular(
                    f["L22"],
                    self._lam_r_dot(lam_r, dense, True),
                    lower=True,
                    overwrite_b=True,
                    check_finite=False,
                )
                W = W.reshape(self.m_r, stop - start, q1)
                E[start:stop] = np.einsum("ila,ilb->lab", W, W)
            LtE = np.matmul(np.matmul(lams[0].T, E), lams[0])  # Lambda_1'E_l Lambda_1
            Minv1 = A11inv + np.matmul(np.matmul(A11inv, LtE), A11inv)
            for i in range(1, K):
                rows = slice(self._offsets[i - 1], self._offsets[i])
                qi = self._q[i]
                b_sorted.append(b_r[rows].reshape(-1, qi))
                cols = L_inv[rows.start :, rows].reshape(-1, st.n_levels[i], qi)  # zeros above
                blocks = np.einsum("jla,jlb->lab", cols, cols)
                cv_sorted.append(sigma2 * np.matmul(np.matmul(lams[i], blocks), lams[i].T))
        cv_sorted.insert(0, sigma2 * np.matmul(np.matmul(lams[0], Minv1), lams[0].T))
        b_out, cv_out = [None] * K, [None] * K
        for i, k in enumerate(st.order):
            b_out[k], cv_out[k] = b_sorted[i], cv_sorted[i]
        return b_out, cv_out

    def prediction_variance(self, theta, levels, zs):
        """``w'Pw`` and ``G'w`` for prediction rows, ``P = Lambda M^{-1} Lambda'``, ``G = P Z'X``.

        Row ``j`` has, for every term ``k`` (the caller's order), a level ``levels[k][j]``
        (-1: unseen or not given, the term left out) and columns ``zs[k][j]``; ``w`` holds
        those columns at those levels. ``sigma2 w'Pw`` is the conditional variance of the
        row's ``z'b`` given ``y`` and ``beta`` (the BLUPs of different terms are correlated);
        ``G'w`` is how the row's ``z'b_hat`` moves with ``beta``. Computed as
        ``w'Pw = |L^{-1} Lambda'w|^2`` with the blocked factor ``L`` of ``M``: a level of
        term 1 solves with its ``L11`` block, the rest with one triangular solve of ``L22``
        for a chunk of rows.

        Returns
        -------
        quad : ndarray of shape (n,)
        Gw : ndarray of shape (n, p)
        """
        with _blas_controller().limit(limits=self.blas_threads(), user_api="blas"):
            return self._prediction_variance(theta, levels, zs)

    def _prediction_variance(self, theta, levels, zs):
        st, p, K = self.stats, self.stats.p, self.stats.n_terms
        f = self._factor(np.asarray(theta, dtype=float))
        lams = f["lams"]
        n = len(levels[0])
        Q1, Q2 = self._solve_Q(f)
        quad, Gw = np.zeros(n), np.zeros((n, p))
        lev = [np.asarray(levels[k]) for k in st.order]
        z = [np.asarray(zs[k], dtype=float) for k in st.order]
        # G'w: per term, z' Lambda_k Q_X at the row's level.
        G1 = np.matmul(lams[0], Q1[:, :, :p])  # (m1, q1, p)
        seen1 = lev[0] >= 0
        Gw[seen1] += np.einsum("ja,jap->jp", z[0][seen1], G1[lev[0][seen1]])
        if self.m_r:
            G_r = self._lam_r_dot(f["lam_r"], Q2[:, :p])  # (m_r, p)
            for i in range(1, K):
                seen = lev[i] >= 0
                qi = self._q[i]
                base = self._offsets[i - 1] + lev[i][seen] * qi
                for a in range(qi):
                    Gw[seen] += z[i][seen, a : a + 1] * G_r[base + a]
        # v1 = L11^{-1} Lambda_1' z at the row's term-1 level; y1 = Lambda_1 L11^{-T} v1.
        v1 = np.zeros((n, self.q1))
        if seen1.any():
            L = f["L11"][lev[0][seen1]]
            v1[seen1] = _lower_solve(L, (z[0][seen1] @ lams[0])[:, :, None])[:, :, 0]
        quad += np.einsum("ja,ja->j", v1, v1)
        if not self.m_r:
            return quad, Gw
        rows = np.flatnonzero(seen1 | np.any([lv >= 0 for lv in lev[1:]], axis=0))
        y1 = np.zeros((n, self.q1))
        if seen1.any():
            L = f["L11"][lev[0][seen1]]
            y1[seen1] = _upper_solve_t(L, v1[seen1][:, :, None])[:, :, 0] @ lams[0].T
        per = max(1, (1 << 21) // self.m_r)
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            nc = len(chunk)
            W = np.zeros((self.m_r, nc))  # the raw z of the rest terms, scattered
            for i in range(1, K):
                seen = lev[i][chunk] >= 0
                cols = np.flatnonzero(seen)
                base = self._offsets[i - 1] + lev[i][chunk][seen] * self._q[i]
                for a in range(self._q[i]):
                    W[base + a, cols] = z[i][chunk][seen, a]
            s1 = seen1[chunk]
            if s1.any():
                # B Y1: Y1 holds y1 at the rows of the row's term-1 level.
                cols = np.flatnonzero(s1)
                r_idx = (lev[0][chunk][s1][:, None] * self.q1 + np.arange(self.q1)).ravel()
                c_idx = np.repeat(cols, self.q1)
                Y1 = sp.csc_matrix(
                    (y1[chunk][s1].ravel(), (r_idx, c_idx)), shape=(self.m1 * self.q1, nc)
                )
                W -= (self._B @ Y1).toarray()
            R = self._lam_r_dot(f["lam_r"], W, True)
            v2 = sla.solve_triangular(f["L22"], R, lower=True, overwrite_b=True, check_finite=False)
            quad[chunk] += np.einsum("ij,ij->j", v2, v2)
        return quad, Gw

    def fixed_effects_cov(self, theta, sigma2=None):
        """``sigma2 C^{-1}``, the covariance of ``beta`` (lme4 ``vcov``).

        ``sigma2`` defaults to its profiled value at ``theta``.
        """
        f = self._factor(np.asarray(theta, dtype=float))
        L_inv = sla.solve_triangular(f["L_C"], np.eye(self.stats.p), lower=True)
        s2 = f["r2"] / self.k if sigma2 is None else sigma2
        return s2 * (L_inv.T @ L_inv)

    def unprofiled_deviance(self, theta, sigma2):
        """``-2 log L`` at ``theta`` and a given ``sigma2`` (``beta`` still profiled)."""
        f = self._factor(np.asarray(theta, dtype=float))
        dev = f["logdet"] + f["r2"] / sigma2 + self.k * np.log(2 * np.pi * sigma2)
        dev -= self.stats.log_weights
        if self.reml:
            dev += 2.0 * np.log(np.diag(f["L_C"])).sum()
        return float(dev)


@functools.cache
def _blas_controller():
    """One threadpoolctl controller per process (it inspects the loaded libraries once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def minimize_blocked(
    objective, theta0=None, *, tol=DEFAULT_TOL, max_iter=500, blas_threads="auto", verbose=0
):
    """Minimise ``D(theta)`` within its bounds by L-BFGS-B on the analytic gradient.

    Each evaluation alternates dense LAPACK calls (scipy's OpenBLAS) with
    single-threaded sparse products and numpy's own OpenBLAS; on a 2-core
    machine, with a small dense block, the idle BLAS threads spinning between
    calls cost more than the second thread gains (InstEval shape: 130 ms
    against 80 ms per evaluation with the gradient), while a large one
    (MovieLens shape, 3,706 x 3,706) factors and inverts faster on two. Hence
    ``"auto"``: two threads when the dense block has at least
    :data:`THREADED_REST` rows and the machine two cores, else one.

    Parameters
    ----------
    objective : BlockedDeviance
        The criterion.
    theta0 : ndarray, optional
        Start. Default: :func:`initial_theta`, from one-factor fits of every
        term alone (lme4 starts from identity ``Lambda_k``; this start takes 6
        evaluations instead of 13 on the MovieLens-shaped benchmark, 15 instead
        of 18 on the InstEval-shaped one).
    tol : float
        L-BFGS-B stops when every entry of the projected gradient, times
        ``max(1, |theta_i|)``, is at most ``tol * n`` (``n`` rows; unit-free,
        unlike ``|D|``, which shifts with the units of ``y``); the result is
        converged when it is at most ``10 * tol * n`` (L-BFGS-B may also stop
        on a negligible decrease), or when the Newton polish finds the optimum
        to the precision of the criterion (see :func:`_newton_polish`), and
        there is no descent off the boundary where a diagonal entry of
        ``Lambda_k`` is 0 (see :func:`_leave_boundary_saddle`).
    max_iter : int
        Cap on L-BFGS-B iterations over all restarts (and on evaluations, at ten
        per iteration).
    blas_threads : int, "auto" or None
        BLAS threads during the fit (``None``: leave the setting alone).
    verbose : int
        Print one line per evaluation when positive.

    Returns
    -------
    SolverResult
        ``n_iter`` counts the L-BFGS-B iterations and the Newton steps of the
        polish; ``log`` holds one record per evaluation (phase ``"lbfgs"``) and
        per Newton step (phase ``"polish"``), in the schema of
        :class:`~sklmm._solvers.SolverResult`.
    """
    if blas_threads == "auto":
        blas_threads = objective.blas_threads()
    if blas_threads is None:
        return _minimize(objective, theta0, tol, max_iter, verbose)
    with _blas_controller().limit(limits=blas_threads, user_api="blas"):
        return _minimize(objective, theta0, tol, max_iter, verbose)


def initial_theta(objective):
    """A start from one-factor fits: each term alone, by the one-factor engine.

    Fit ``k`` gives the term's covariance ``Sigma_k`` and a residual variance
    ``s_k`` that also holds the other terms' variances; the start is
    ``Lambda_k Lambda_k' = Sigma_k / sigma2`` with ``sigma2 = min_k (s_k -
    sum_{j != k} tr Sigma_j)`` (at least a tenth of ``min_k s_k``). Each fit
    costs O(levels) per iteration. lme4's start (identity ``Lambda_k``) when a
    fit fails.
    """
    from ._profile import ProfiledDeviance
    from ._solvers import minimize_deviance

    default = np.concatenate([s.initial_theta() for s in objective.structures])
    st = objective.stats
    sigmas, resid = [], []
    try:
        for i in range(st.n_terms):
            one_stats = st.term(i)
            cov = objective._sorted_structures[i]
            one = ProfiledDeviance(one_stats, cov, objective.reml)
            res = minimize_deviance(one, "newton", max_iter=50)
            lam = cov.lam(res.theta)
            sigmas.append(res.evaluation.sigma2 * lam @ lam.T)
            resid.append(res.evaluation.sigma2)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        return default
    traces = [np.trace(s) for s in sigmas]
    sigma2 = min(r - (sum(traces) - t) for r, t in zip(resid, traces, strict=True))
    sigma2 = max(sigma2, 0.1 * min(resid))
    if not (np.isfinite(sigma2) and sigma2 > 0):
        return default
    theta = np.empty(objective.n_theta)
    for i, k in enumerate(st.order):
        theta[objective._slices[k]] = objective.structures[k].theta_from_psi(sigmas[i] / sigma2)
    if not np.all(np.isfinite(theta)):
        return default
    # Not exactly on the boundary: a zero diagonal entry is a stationary point of D in
    # that entry (D is even in it), which L-BFGS-B would leave only slowly.
    diagonal = objective.lower_bounds == 0
    return np.where(diagonal, np.maximum(theta, START_FLOOR), theta)


def _record(log, phase, ev, gnorm, step, verbose):
    """One record of the fit log (the schema of :class:`~sklmm._solvers.SolverResult`)."""
    rec = {
        "phase": phase,
        "iteration": len(log),
        "theta": ev.theta.copy(),
        "sigma2": ev.sigma2,
        "deviance": ev.deviance,
        "gradient_norm": gnorm,
        "step_size": step,
    }
    log.append(rec)
    if verbose:
        print(f"{phase:>6} {rec['iteration']:4d}  D={ev.deviance:.10g}  |grad|={gnorm:.3e}")


def _minimize(objective, theta0, tol, max_iter, verbose=0):
    lower = objective.lower_bounds
    theta = initial_theta(objective) if theta0 is None else np.asarray(theta0, dtype=float)
    theta = np.maximum(theta, lower)
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    log = []

    # D shifts by 2 (n - p) log(a) when y is multiplied by a; its gradient in theta does
    # not change. So the tolerances are unit-free: the gradient against tol * n, and
    # L-BFGS-B sees D - D(start), whose relative decrease does not depend on the shift.
    scale = max(1.0, float(objective.stats.n))
    offset = objective(theta).deviance

    best = {"f": 0.0, "theta": theta.copy(), "gradient": objective(theta, 1).gradient}
    theta0_used = theta.copy()
    polish_steps = 0

    # L-BFGS-B works on u = theta / D, D = max(1, |theta|) at the start, so that its own
    # gradient test is on the scale of the convergence rule (large theta: relative).
    D = np.maximum(1.0, np.abs(theta))

    def fun_scaled(u):
        f, g = fun(u * D)
        return f, g * D

    def fun(t):
        try:
            ev = objective(t, 1)
        except np.linalg.LinAlgError:
            # [X y]'V^{-1}[X y] numerically singular: a step far out (a huge theta). A
            # value far above the best sends L-BFGS-B's line search back towards it.
            return best["f"] + 1e6 * (1.0 + abs(best["f"])), best["gradient"]
        prev = log[-1]["theta"] if log else theta0_used
        step = float(np.max(np.abs(ev.theta - prev), initial=0.0))
        gnorm = float(np.max(np.abs(_projected(t, ev.gradient, lower)), initial=0.0))
        _record(log, "lbfgs", ev, gnorm, step, verbose)
        f = ev.deviance - offset
        if f < best["f"]:
            best.update(f=f, theta=np.array(t, dtype=float), gradient=ev.gradient)
        return f, ev.gradient

    message, iterations, at_precision = "", 0, False
    for _restart in range(5):
        remaining = max_iter - iterations
        if remaining <= 0:  # max_iter=0: the start is the result
            break
        res = scipy.optimize.minimize(
            fun_scaled,
            theta / D,
            jac=True,
            method="L-BFGS-B",
            bounds=[
                (None if b is None else b / d, None) for (b, _), d in zip(bounds, D, strict=True)
            ],
            options={
                "maxiter": remaining,
                "maxfun": 10 * remaining,
                "gtol": tol * scale,
                "ftol": tol * tol,
                "maxcor": 10,
            },
        )
        iterations += int(res.nit)
        theta = best["theta"].copy()  # res.x, unless its evaluation failed
        message = str(res.message)
        ev = objective(theta, 1)
        gnorm = float(np.max(np.abs(_projected(theta, ev.gradient, lower))))
        if gnorm > 10 * tol * scale:
            # L-BFGS-B stopped short (a flat or badly scaled stretch): Newton steps on a
            # Hessian from differences of the analytic gradient finish the job.
            n_log = len(log)
            theta, polished = _newton_polish(
                objective, theta, lower, 10 * tol * scale, log, verbose=verbose
            )
            polish_steps += sum(rec["phase"] == "polish" for rec in log[n_log:])
            at_precision = polished == "precision"
            if at_precision:
                message = (
                    f"L-BFGS-B stopped short ({message.strip(': ') or 'no message'}); Newton "
                    "steps reached the optimum to the precision of the criterion"
                )
            elif polished:
                message = f"{message}; finished by Newton steps"
            ev = objective(theta, 1)
            gnorm = float(np.max(np.abs(_projected(theta, ev.gradient, lower))))
        if (gnorm > 10 * tol * scale and not at_precision) or iterations >= max_iter:
            break
        start = _leave_boundary_saddle(objective, theta, ev, lower)
        if start is None:
            break
        theta, at_precision = start, False
        message = "left a saddle point on the boundary"
    ev = objective(theta, 1)
    gnorm = float(np.max(np.abs(_projected(theta, ev.gradient, lower))))
    converged = at_precision or gnorm <= 10 * tol * scale
    return SolverResult(theta, ev, converged, iterations + polish_steps, message, log)


def _newton_polish(objective, theta, lower, gtol, log, max_steps=20, verbose=0):
    """Projected Newton steps with a Hessian from forward differences of the gradient.

    Parameters held at their bound by a positive gradient stay there; the Hessian on
    the others has its eigenvalues floored at their absolute value (a descent
    direction); a backtracking line search keeps the iterate within the bounds.
    Returns ``(theta, converged)``, ``converged`` being ``"precision"`` when a step
    lowers ``D`` no more (at some point where ``D`` could be formed), the gradient is
    within :data:`PRECISION_GRADIENT` times ``gtol`` (or the default ``tol``'s, where
    larger: the gradient's rounding does not shrink with ``tol``) and the Newton decrement
    ``g'H^{-1}g`` (``H`` positive definite) is below
    :data:`~sklmm._solvers.DECREMENT_TOL` times ``max(1, |D|)``: the optimum to the
    precision of the criterion, as the one-factor solver's rule, where the gradient's
    rounding (a sum of terms that cancel) stays above a very small ``gtol``. Costs
    ``n_free + 1`` gradients per step, so it runs only when L-BFGS-B stops short of the
    convergence rule.
    """

    def value(t):
        try:
            return objective(t).deviance
        except np.linalg.LinAlgError:
            return np.inf

    gtol_default = 10 * DEFAULT_TOL * max(1.0, float(objective.stats.n))  # default tol's rule
    theta = np.asarray(theta, dtype=float).copy()
    for _ in range(max_steps):
        ev = objective(theta, 1)
        g = ev.gradient
        pg = _projected(theta, g, lower)
        if np.max(np.abs(pg)) <= gtol:
            return theta, True
        free = np.flatnonzero(~((theta <= lower) & (g > 0)))
        H = np.empty((free.size, free.size))
        for a, j in enumerate(free):
            h = 1e-6 * max(1.0, abs(theta[j]))
            t = theta.copy()
            t[j] += h
            try:
                H[a] = (objective(t, 1).gradient[free] - g[free]) / h
            except np.linalg.LinAlgError:
                return theta, False
        w, V = np.linalg.eigh(0.5 * (H + H.T))
        w_abs = np.maximum(np.abs(w), 1e-8 * max(1.0, np.abs(w).max()))
        step = np.zeros_like(theta)
        step[free] = -V @ ((V.T @ g[free]) / w_abs)
        d0 = ev.deviance
        evaluated = False  # some trial point's D could be formed
        for s in 0.5 ** np.arange(30):
            cand = np.maximum(theta + s * step, lower)
            d_cand = value(cand)
            evaluated = evaluated or bool(np.isfinite(d_cand))
            if d_cand <= d0 + 1e-4 * (g @ (cand - theta)):
                break
        else:
            d_cand = np.inf
        near = np.max(np.abs(pg)) <= PRECISION_GRADIENT * max(gtol, gtol_default)
        if evaluated and not d_cand < d0 and near and w.min() > 0:
            # No decrease: at the optimum to the precision of D if a full step predicts
            # less than its rounding.
            gv = V.T @ g[free]
            if float(gv @ (gv / w)) <= DECREMENT_TOL * max(1.0, abs(d0)):
                return theta, "precision"
        if not np.isfinite(d_cand):
            return theta, False
        if s == 1.0 and np.any(w < 0):
            # Negative curvature (leaving a saddle): the Newton length is no scale, so
            # keep doubling the step while D keeps falling.
            d = value(cand)
            for _ in range(30):
                more = np.maximum(theta + 2.0 * (cand - theta), lower)
                d_more = value(more)
                if not d_more < d:
                    break
                cand, d = more, d_more
        try:
            ev_new = objective(cand, 1)
        except np.linalg.LinAlgError:
            return theta, False
        gn = float(np.max(np.abs(_projected(cand, ev_new.gradient, lower))))
        _record(log, "polish", ev_new, gn, float(np.max(np.abs(cand - theta))), verbose)
        theta = cand
    ev = objective(theta, 1)
    return theta, bool(np.max(np.abs(_projected(theta, ev.gradient, lower))) <= gtol)


def _leave_boundary_saddle(objective, theta, ev, lower, h=1e-3):
    """A better start when ``theta`` is a saddle point on the boundary, else None.

    At ``diag(Lambda_k) = 0`` the gradient in that entry vanishes (``D`` is even in
    the sign of a column of ``Lambda_k``), so a stationary point there can be a
    saddle: ``D`` decreasing as the entry leaves 0. The analytic gradient just inside
    the bound tells (it is exact there): a negative derivative at ``h`` means
    negative curvature. Interior stationary points are left to L-BFGS-B, whose
    descent steps do not stop at a saddle point but on a measure-zero set of starts.
    """
    grad = ev.gradient
    tiny = 1e-8 * max(1.0, np.abs(grad).max())
    for j in np.flatnonzero((theta <= lower) & (np.abs(grad) <= tiny)):
        e = np.zeros_like(theta)
        e[j] = 1.0
        if objective(theta + h * e, 1).gradient[j] >= 0:
            continue
        best, best_dev = None, ev.deviance - 1e-10 * max(1.0, abs(ev.deviance))
        for t in (h, 1e-2, 0.1, 0.5):
            dev = objective(theta + t * e).deviance
            if dev < best_dev:
                best, best_dev = theta + t * e, dev
        if best is not None:
            return best
    return None


def _projected(theta, gradient, lower):
    """The projected gradient in the units of the convergence rule (see
    :func:`~sklmm._solvers.scaled_gradient`)."""
    return scaled_gradient(theta, gradient, lower)
