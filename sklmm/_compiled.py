r"""Compiled kernels of the one-factor criterion (numba, the ``fast`` extra).

The same criterion as :class:`sklmm._profile.ProfiledDeviance` (its module
docstring writes it out), computed group by group in loops that numba compiles:
one call per evaluation instead of some fifty numpy calls, so a small fit (tens of
groups) is no longer dominated by the fixed cost of each numpy call. The
per-group sums are accumulated in one pass over the groups, so the cost of an
evaluation stays ``O(groups (q^4 + q^2 p^2) + q^4 p^2 + p^3)``, independent of the
number of rows.

The functions below are plain Python until :func:`kernels` compiles them; sklmm
never calls them uncompiled (without numba, :data:`AVAILABLE` is false and the
numpy kernels run). They use loops, scalar arithmetic and one small matrix product,
so the compiled and the numpy kernels agree to rounding (the tests check both on
random designs).
"""

import importlib.util
import math
import os
import threading
import warnings
from types import SimpleNamespace

import numpy as np

#: Whether the compiled kernels are used: numba is installed, and not switched off by the
#: environment variable ``SKLMM_DISABLE_NUMBA=1``. numba itself is imported on the first
#: use (:func:`kernels`), not with sklmm.
AVAILABLE = (
    importlib.util.find_spec("numba") is not None
    and os.environ.get("SKLMM_DISABLE_NUMBA", "") != "1"
)

#: The compiled kernels run while ``groups * q`` is at most this. They loop over the
#: groups one at a time, so past several hundred groups numpy's kernels, one vectorised
#: operation over all the groups per step, are faster. For an evaluation with derivatives
#: (``benchmarks/bench_kernels.py``) the compiled ones are faster up to about 1,400 groups
#: for q = 1, 800 for q = 2 and 400 for q = 3 (numbers that move by a third between runs
#: on a busy machine: 1,000 keeps a margin).
MAX_WORK = 1000

#: Status codes of the kernels: the matrices that must be positive definite were (or not).
OK, NOT_PD = 0, 1


#: The functions that numba compiles, helpers first: the kernels call the helpers by their
#: module-level names, which :func:`kernels` rebinds to the compiled functions.
_COMPILED = (
    "_chol_inplace",
    "_factor_groups",
    "_lower_inverse",
    "_beta",
    "_forward",
    "_gram",
    "_w_cinv_wt",
    "_subtract_contraction",
    "_lam",
    "projected",
    "factor",
    "evaluate",
    "em_psi",
)

#: The helpers compiled into their callers (inner loops over a group's small blocks).
_INLINE = ("_forward", "_gram", "_w_cinv_wt", "_subtract_contraction")

#: The kernels the criterion calls.
_PUBLIC = ("projected", "factor", "evaluate", "em_psi")

_kernels = None
_lock = threading.Lock()


def use_for(n_groups, q):
    """Whether the compiled kernels run on a term of ``n_groups`` levels and ``q`` random
    effects: at most :data:`MAX_WORK` of ``n_groups * q`` (checked first: a larger model
    never imports numba), and :func:`available`."""
    return n_groups * q <= MAX_WORK and available()


def available():
    """Whether the compiled kernels run: :data:`AVAILABLE`, and numba loads.

    numba is imported here on the first call. A numba that is installed but cannot be
    loaded (built for another numpy, a broken llvmlite) switches the compiled kernels off
    for the process, with a warning: numpy's kernels give the same results.
    """
    global AVAILABLE
    if AVAILABLE and _kernels is None:
        try:
            _compile_all(kernels())
        except Exception as exc:  # any failure to load or compile: numpy's kernels instead
            AVAILABLE = False
            warnings.warn(
                f"numba is installed but cannot be loaded ({type(exc).__name__}: {exc}); "
                "sklmm uses its numpy kernels (the same results, slower on small fits). "
                "Reinstall numba, or set SKLMM_DISABLE_NUMBA=1 before importing sklmm to "
                "silence this warning.",
                RuntimeWarning,
                stacklevel=2,
            )
    return AVAILABLE


def _compile_all(k):
    """Call every kernel once on a one-group problem, with the argument types sklmm
    passes, so that numba compiles them (or loads them from its cache) here, where a
    failure switches them off, and not in the middle of a fit."""
    ZtZ, ZtXy = np.ones((1, 1, 1)), np.ones((1, 1, 2))
    XytXy, theta = np.array([[2.0, 1.0], [1.0, 2.0]]), np.ones(1)
    rows = np.zeros(1, dtype=np.intp)
    rows.flags.writeable = False  # as a covariance structure's indices
    k.projected(ZtZ, ZtXy)
    k.factor(ZtZ, ZtXy, XytXy, theta, rows, rows)
    k.evaluate(ZtZ, ZtXy, XytXy, theta, rows, rows, 1.0, True, 0.0, 2)
    k.em_psi(ZtZ, ZtXy, XytXy, theta, 2.0, 1.0, True, rows, rows, False)


def kernels():
    """The compiled kernels of :data:`_PUBLIC` (a namespace).

    numba is imported here, and each function compiled on its first call, or loaded
    from numba's on-disk cache (``__pycache__``, or a user-wide directory where that is
    not writable; without either, compiled in memory for the process): about 10 s
    once per installation on a 2-core machine, then a few tenths of a second per
    process. Safe to call from several threads, and again after a failure (it compiles
    the Python functions, kept in :data:`_PYTHON`, and publishes them all or none).
    """
    global _kernels
    with _lock:
        if _kernels is None:
            import numba

            if numba.config.DISABLE_JIT:  # the loops would run as Python
                raise RuntimeError("NUMBA_DISABLE_JIT is set")

            names = globals()
            for name in _COMPILED:  # helpers first: the kernels find them by name
                options = {"nogil": True, "error_model": "numpy"}
                if name in _INLINE:
                    options["inline"] = "always"  # a call per group would cost more
                try:
                    names[name] = numba.njit(cache=True, **options)(_PYTHON[name])
                except RuntimeError:  # no writable cache directory
                    names[name] = numba.njit(**options)(_PYTHON[name])
            _kernels = SimpleNamespace(**{name: names[name] for name in _PUBLIC})
    return _kernels


def _chol_inplace(M, n):
    """Lower Cholesky factor of ``M[:n, :n]`` in place (upper part zeroed); false when
    a pivot is not positive or not finite (LAPACK's ``dpotrf`` rejects the first, and
    numpy's kernels treat a non-finite factor as a failure).

    A non-finite entry below the diagonal enters a later pivot squared and makes it
    infinite, negative or not a number, so checking the pivots checks the whole factor.
    """
    for j in range(n):
        d = M[j, j]
        for k in range(j):
            d -= M[j, k] * M[j, k]
        if not (d > 0.0 and d < math.inf):  # not positive, or not a (finite) number
            return False
        d = math.sqrt(d)
        M[j, j] = d
        for i in range(j + 1, n):
            r = M[i, j]
            for k in range(j):
                r -= M[i, k] * M[j, k]
            M[i, j] = r / d
        for i in range(j):
            M[i, j] = 0.0
    return True


def _factor_groups(ZtZ, ZtXy, XytXy, lam, K, L, logdet_out):
    """Per group: ``L_i = chol(Lambda'Z_i'Z_i Lambda + I)`` (into ``L``, shape (g, q, q))
    and ``K_i = L_i^{-1} Lambda' Z_i'[Z_i X_i y_i]`` (into ``K``, shape (g, q, q + p + 1));
    returns ``S = [X y]'V^{-1}[X y]`` and ``log|M|`` (in ``logdet_out[0]``), or ``None``
    when some ``M_i`` is not positive definite."""
    g, q = ZtZ.shape[0], ZtZ.shape[1]
    p1 = XytXy.shape[0]
    m = q + p1
    S = XytXy.copy()
    R = np.empty((q, m))
    logdet = 0.0
    for i in range(g):
        M = L[i]
        # R = Lambda' [Z'Z  Z'[X y]]
        for a in range(q):
            for c in range(m):
                acc = 0.0
                for b in range(a, q):  # Lambda lower triangular: Lambda'[a, b] = lam[b, a]
                    acc += lam[b, a] * (ZtZ[i, b, c] if c < q else ZtXy[i, b, c - q])
                R[a, c] = acc
        # M = R[:, :q] Lambda + I
        for a in range(q):
            for c in range(q):
                acc = 0.0
                for b in range(c, q):
                    acc += R[a, b] * lam[b, c]
                M[a, c] = acc + (1.0 if a == c else 0.0)
        if not _chol_inplace(M, q):
            return None
        _forward(M, R, K[i])  # K = L^{-1} R
        for a in range(q):
            logdet += 2.0 * math.log(M[a, a])
        # S -= K_Xy' K_Xy
        for a in range(q):
            for c in range(p1):
                kc = K[i, a, q + c]
                for d in range(p1):
                    S[c, d] -= kc * K[i, a, q + d]
    logdet_out[0] = logdet
    return S


def _beta(S, p):
    """``beta = L_C^{-T} l`` from the factor ``[[L_C, 0], [l', s]]`` of ``S`` (back
    substitution)."""
    beta = np.zeros(p)
    for j in range(p - 1, -1, -1):
        acc = S[p, j]
        for i in range(j + 1, p):
            acc -= S[i, j] * beta[i]
        beta[j] = acc / S[j, j]
    return beta


def _lower_inverse(L, p):
    """Inverse of the lower-triangular ``L[:p, :p]``."""
    inv = np.zeros((p, p))
    for j in range(p):
        inv[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, p):
            acc = 0.0
            for k in range(j, i):
                acc -= L[i, k] * inv[k, j]
            inv[i, j] = acc / L[i, i]
    return inv


def _forward(L, B, out):
    """``out = L^{-1} B`` for a lower-triangular ``L`` (q x q) and ``B`` (q x m), by
    forward substitution."""
    q, m = out.shape[0], out.shape[1]
    for a in range(q):
        inv = 1.0 / L[a, a]
        for c in range(m):
            acc = B[a, c]
            for b in range(a):
                acc -= L[a, b] * out[b, c]
            out[a, c] = acc * inv


def _gram(U, out):
    """``out = U'U`` for ``U`` (q x m)."""
    q, m = U.shape[0], U.shape[1]
    for c in range(m):
        for d in range(m):
            acc = 0.0
            for a in range(q):
                acc += U[a, c] * U[a, d]
            out[c, d] = acc


def _w_cinv_wt(Linv, W, V, out):
    """``out = W C^{-1} W'`` (q x q) for ``W`` (q x p) and ``C^{-1} = Linv' Linv``, by
    ``V = Linv W'`` (written into ``V``, p x q) and ``out = V'V``."""
    p, q = V.shape[0], V.shape[1]
    for c in range(p):
        for a in range(q):
            acc = 0.0
            for d in range(c + 1):
                acc += Linv[c, d] * W[a, d]
            V[c, a] = acc
    _gram(V, out)


def _subtract_contraction(H4, X, Y, scale):
    """``H4[m, j, kk, ll] -= scale * sum_c X[m, j, c] Y[kk, ll, c]`` (X, Y: q x q x r)."""
    q, r = X.shape[0], X.shape[2]
    for m in range(q):
        for j in range(q):
            for kk in range(q):
                for ll in range(q):
                    acc = 0.0
                    for c in range(r):
                        acc += X[m, j, c] * Y[kk, ll, c]
                    H4[m, j, kk, ll] -= scale * acc


def _lam(theta, rows, cols, q):
    """``Lambda`` from ``theta`` (:meth:`sklmm._covariance.CovarianceStructure.lam`)."""
    lam = np.zeros((q, q))
    for t in range(rows.shape[0]):
        lam[rows[t], cols[t]] = theta[t]
    return lam


def projected(ZtZ, ZtXy):
    """``sum_l ZtXy_l' ZtZ_l^{-1} ZtXy_l`` over the levels whose ``ZtZ_l`` is positive
    definite (a Cholesky factorization per level), and which levels are not
    (:func:`sklmm._model._projected` takes those through a pseudo-inverse).

    Returns ``(total, singular)``.
    """
    g, q, m = ZtXy.shape[0], ZtXy.shape[1], ZtXy.shape[2]
    total = np.zeros((m, m))
    singular = np.zeros(g, dtype=np.bool_)
    L = np.empty((q, q))
    U = np.empty((q, m))
    UtU = np.empty((m, m))
    for i in range(g):
        for a in range(q):
            for c in range(q):
                L[a, c] = ZtZ[i, a, c]
        if not _chol_inplace(L, q):
            singular[i] = True
            continue
        _forward(L, ZtXy[i], U)
        _gram(U, UtU)
        for c in range(m):
            for d in range(m):
                total[c, d] += UtU[c, d]
    return total, singular


def factor(ZtZ, ZtXy, XytXy, theta, rows, cols):
    """The per-group factors of :meth:`sklmm._profile.ProfiledDeviance._compute_factor`.

    Returns ``(ok, L, K, S, logdet)``: ``L`` (g, q, q) and ``K`` (g, q, q + p + 1) as
    :func:`_factor_groups` leaves them, ``S = [X y]'V^{-1}[X y]`` and ``log|M|``;
    ``ok`` is false when some ``M_i`` is not positive definite.
    """
    g, q = ZtZ.shape[0], ZtZ.shape[1]
    p1 = XytXy.shape[0]
    lam = _lam(theta, rows, cols, q)
    K = np.empty((g, q, q + p1))
    L = np.empty((g, q, q))
    logdet = np.zeros(1)
    S = _factor_groups(ZtZ, ZtXy, XytXy, lam, K, L, logdet)
    if S is None:
        return False, L, K, XytXy.copy(), 0.0
    return True, L, K, S, logdet[0]


def evaluate(ZtZ, ZtXy, XytXy, theta, rows, cols, k, reml, log_weights, order):
    """``D``, ``beta``, ``r2`` and, with ``order`` 1 or 2, the gradient and Hessian in
    ``theta`` (see :meth:`sklmm._profile.ProfiledDeviance.__call__`).

    Returns ``(status, deviance, beta, r2, gradient, hessian)``; ``status`` is
    :data:`OK`, or :data:`NOT_PD` when a matrix that must be positive definite is not.
    """
    g, q = ZtZ.shape[0], ZtZ.shape[1]
    p1 = XytXy.shape[0]
    p = p1 - 1
    nt = rows.shape[0]
    lam = _lam(theta, rows, cols, q)
    K = np.empty((g, q, q + p1))
    logdet = np.zeros(1)
    grad = np.zeros(nt)
    hess = np.zeros((nt, nt))
    beta = np.zeros(p)
    S = _factor_groups(ZtZ, ZtXy, XytXy, lam, K, np.empty((g, q, q)), logdet)
    if S is None:
        return NOT_PD, np.nan, beta, np.nan, grad, hess
    if not _chol_inplace(S, p1):
        return NOT_PD, np.nan, beta, np.nan, grad, hess
    s = S[p, p]
    r2 = s * s
    dev = logdet[0] + k * (1.0 + math.log(2.0 * math.pi * r2 / k)) - log_weights
    if reml:
        for j in range(p):
            dev += 2.0 * math.log(S[j, j])
    beta = _beta(S, p)
    if order < 1:
        return OK, dev, beta, r2, grad, hess
    Linv = _lower_inverse(S, p)
    kr = k / r2
    # Per-group blocks and their sums over the groups.
    A = np.empty((q, q))
    W = np.empty((q, p))
    u = np.empty(q)
    WCW = np.zeros((q, q))
    G = np.zeros((q, q))
    Su = np.zeros((q, q))
    TAA = np.zeros((q, q, q, q))  # sum A[j, kk] A[ll, m]
    TAuu = np.zeros((q, q, q, q))  # sum A[j, kk] u[m] u[ll]
    TAW = np.zeros((q, q, q, q))  # sum A[j, kk] WCW[ll, m]
    Rw = np.zeros((q, q, p))  # sum W[m, j] u[a] -> [m, a, j]
    Q = np.zeros((q, q, p, p))  # sum W[m, a] W[j, b] -> [m, j, a, b]
    V = np.empty((p, q))
    second = order >= 2
    for i in range(g):
        for a in range(q):
            for b in range(q + p1):
                acc = ZtZ[i, a, b] if b < q else ZtXy[i, a, b - q]
                for c in range(q):
                    acc -= K[i, c, a] * K[i, c, b]
                if b < q:
                    A[a, b] = acc
                elif b < q + p:
                    W[a, b - q] = acc
                else:
                    u[a] = acc
        for a in range(q):
            acc = u[a]
            for c in range(p):
                acc -= W[a, c] * beta[c]
            u[a] = acc
        for a in range(q):
            for b in range(q):
                G[a, b] += A[a, b]
                Su[a, b] += u[a] * u[b]
        if reml:
            _w_cinv_wt(Linv, W, V, WCW)
            for a in range(q):
                for b in range(q):
                    G[a, b] -= WCW[a, b]
        if not second:
            continue
        for j in range(q):
            for kk in range(q):
                ajk = A[j, kk]
                for ll in range(q):
                    for m in range(q):
                        TAA[j, kk, ll, m] += ajk * A[ll, m]
                        TAuu[j, kk, m, ll] += ajk * u[m] * u[ll]
                        if reml:
                            TAW[j, kk, ll, m] += ajk * WCW[ll, m]
        for m in range(q):
            for a in range(q):
                for j in range(p):
                    Rw[m, a, j] += W[m, j] * u[a]
        for m in range(q):
            for j in range(q):
                for a in range(p):
                    for b in range(p):
                        Q[m, j, a, b] += W[m, a] * W[j, b]
    for a in range(q):
        for b in range(q):
            G[a, b] -= kr * Su[a, b]
    # grad = 2 (G Lambda)[rows, cols]
    for t in range(nt):
        r, c = rows[t], cols[t]
        acc = 0.0
        for b in range(c, q):
            acc += G[r, b] * lam[b, c]
        grad[t] = 2.0 * acc
    if not second:
        return OK, dev, beta, r2, grad, hess
    Cinv = Linv.T @ Linv if p else np.zeros((0, 0))
    # H4[m, j, kk, ll], the second derivative as a bilinear form in E[m, j], F[kk, ll].
    H4 = np.zeros((q, q, q, q))
    for m in range(q):
        for j in range(q):
            for kk in range(q):
                for ll in range(q):
                    h = -TAA[j, kk, ll, m] - k * (Su[m, j] / r2) * (Su[kk, ll] / r2)
                    h += 2.0 * kr * TAuu[j, kk, m, ll]
                    if reml:
                        h += 2.0 * TAW[j, kk, ll, m]
                    H4[m, j, kk, ll] = h
    if p:
        # - (2k / r2) Rw[m, j]' C^{-1} Rw[kk, ll]
        CRw = np.zeros((q, q, p))
        for kk in range(q):
            for ll in range(q):
                for a in range(p):
                    acc = 0.0
                    for b in range(p):
                        acc += Cinv[a, b] * Rw[kk, ll, b]
                    CRw[kk, ll, a] = acc
        _subtract_contraction(H4, Rw, CRw, 2.0 * kr)
    if reml and p:
        # - tr(P_mj P_kl), P_mj = C^{-1} Q[j, m]: vec(P_mj) . vec(P_kl')
        P = np.zeros((q, q, p, p))
        Pt_ = np.zeros((q, q, p, p))
        for m in range(q):
            for j in range(q):
                for a in range(p):
                    for b in range(p):
                        acc = 0.0
                        for c in range(p):
                            acc += Cinv[a, c] * Q[j, m, c, b]
                        P[m, j, a, b] = acc
                        Pt_[m, j, b, a] = acc
        _subtract_contraction(H4, P.reshape(q, q, p * p), Pt_.reshape(q, q, p * p), 1.0)
    # Chain rule through Psi = Lambda Lambda': dPsi/dtheta_t = E_t Lambda' + Lambda E_t',
    # E_t the unit matrix at (rows[t], cols[t]).
    Pt = np.zeros((nt, q, q))
    for t in range(nt):
        r, c = rows[t], cols[t]
        for b in range(q):
            Pt[t, r, b] += lam[b, c]
            Pt[t, b, r] += lam[b, c]
    for s_ in range(nt):
        for t in range(nt):
            acc = 0.0
            for m in range(q):
                for j in range(q):
                    pmj = Pt[s_, m, j]
                    for kk in range(q):
                        for ll in range(q):
                            acc += pmj * H4[m, j, kk, ll] * Pt[t, kk, ll]
            # 2 tr(G E_s E_t'): nonzero when both sit in one column
            if cols[s_] == cols[t]:
                acc += 2.0 * G[rows[t], rows[s_]]
            hess[s_, t] = acc
    for s_ in range(nt):
        for t in range(s_ + 1, nt):
            h = 0.5 * (hess[s_, t] + hess[t, s_])
            hess[s_, t] = h
            hess[t, s_] = h
    return OK, dev, beta, r2, grad, hess


def em_psi(ZtZ, ZtXy, XytXy, theta, n, k, reml, rows, cols, diagonal):
    """One EM step (:meth:`sklmm._profile.ProfiledDeviance.em_update`): the new relative
    covariance ``psi = Sigma / sigma2`` and its ``theta``.

    Returns ``(status, psi, theta)``; ``theta`` is ``None`` when ``psi`` (made symmetric;
    its diagonal alone when ``diagonal``) is not numerically positive definite, for
    :meth:`~sklmm._covariance.CovarianceStructure.theta_from_psi` to factor with a jitter.
    """
    g, q = ZtZ.shape[0], ZtZ.shape[1]
    p1 = XytXy.shape[0]
    p = p1 - 1
    lam = _lam(theta, rows, cols, q)
    K = np.empty((g, q, q + p1))
    L = np.empty((g, q, q))
    logdet = np.zeros(1)
    psi = np.zeros((q, q))
    S = _factor_groups(ZtZ, ZtXy, XytXy, lam, K, L, logdet)
    if S is None:
        return NOT_PD, psi, None
    if not _chol_inplace(S, p1):
        return NOT_PD, psi, None
    s = S[p, p]
    sigma2 = s * s / k
    beta = _beta(S, p)
    Linv = _lower_inverse(S, p)
    J = np.empty((q, q))  # L_i^{-1} Lambda'
    lam_t = np.ascontiguousarray(lam.T)
    P = np.empty((q, q))
    v = np.empty(q)
    w = np.empty(q)
    b = np.empty(q)
    PZtX = np.empty((q, p))
    T1 = np.empty((q, p))
    Vm = np.empty((p, q))
    PCP = np.empty((q, q))
    BB = np.zeros((q, q))  # sum b b'
    Psum = np.zeros((q, q))
    VV = np.zeros((q, q))  # sum PZtX C^{-1} PZtX'
    D_X = XytXy[:p, :p].copy()
    trace = 0.0
    rss_cross = 0.0
    rss_quad = 0.0
    for i in range(g):
        M = L[i]
        _forward(M, lam_t, J)  # J = L^{-1} Lambda'
        _gram(J, P)  # P_i = J'J
        for a in range(q):
            for c in range(q):
                Psum[a, c] += P[a, c]
                trace += ZtZ[i, a, c] * P[a, c]
        # v = K_y - K_X beta; w = L^{-T} v; b = Lambda w
        for a in range(q):
            acc = K[i, a, q + p]
            for c in range(p):
                acc -= K[i, a, q + c] * beta[c]
            v[a] = acc
        for a in range(q - 1, -1, -1):
            acc = v[a]
            for bb in range(a + 1, q):
                acc -= M[bb, a] * w[bb]
            w[a] = acc / M[a, a]
        for a in range(q):
            acc = 0.0
            for bb in range(a + 1):
                acc += lam[a, bb] * w[bb]
            b[a] = acc
        for a in range(q):
            # Z_i'(X_i beta - y_i)
            r = -ZtXy[i, a, p]
            for c in range(p):
                r += ZtXy[i, a, c] * beta[c]
            rss_cross += b[a] * r
            for c in range(q):
                BB[a, c] += b[a] * b[c]
                rss_quad += b[a] * ZtZ[i, a, c] * b[c]
        if reml:
            # PZtX = J' K_X (P_i Z_i'X_i); V = L_C^{-1} PZtX'
            for a in range(q):
                for c in range(p):
                    acc = 0.0
                    for bb in range(q):
                        acc += J[bb, a] * K[i, bb, q + c]
                    PZtX[a, c] = acc
            for a in range(q):
                for c in range(p):
                    acc = 0.0
                    for d in range(q):
                        acc += ZtZ[i, a, d] * PZtX[d, c]
                    T1[a, c] = acc
            for c in range(p):
                for d in range(p):
                    acc = 0.0
                    for a in range(q):
                        acc += PZtX[a, c] * T1[a, d] - 2.0 * K[i, a, q + c] * K[i, a, q + d]
                    D_X[c, d] += acc
            _w_cinv_wt(Linv, PZtX, Vm, PCP)  # P_i Z_i'X_i C^{-1} X_i'Z_i P_i
            for a in range(q):
                for a2 in range(q):
                    VV[a, a2] += PCP[a, a2]
    if reml:
        # trace(C^{-1} D_X), C^{-1} = Linv' Linv
        for c in range(p):
            for d in range(p):
                cinv = 0.0
                for e in range(max(c, d), p):
                    cinv += Linv[e, c] * Linv[e, d]
                trace += cinv * D_X[d, c]
    coef = np.empty(p1)
    coef[:p] = beta
    coef[p] = -1.0
    rss = 0.0
    for c in range(p1):
        for d in range(p1):
            rss += coef[c] * XytXy[c, d] * coef[d]
    rss += 2.0 * rss_cross + rss_quad
    sigma2_new = (max(rss, 0.0) + sigma2 * trace) / n
    for a in range(q):
        for c in range(q):
            cov_b = sigma2 * Psum[a, c]
            if reml:
                cov_b += sigma2 * VV[a, c]
            psi[a, c] = (BB[a, c] + cov_b) / g / sigma2_new
    theta = np.empty(rows.shape[0])
    if diagonal:
        for a in range(q):
            psi_aa = psi[a, a]
            for c in range(q):
                psi[a, c] = psi_aa if a == c else 0.0
            theta[a] = math.sqrt(max(psi_aa, 0.0))
        return OK, psi, theta
    lam_new = np.empty((q, q))
    for a in range(q):
        for c in range(q):
            lam_new[a, c] = 0.5 * (psi[a, c] + psi[c, a])
    if not _chol_inplace(lam_new, q):
        return OK, psi, None
    for t in range(rows.shape[0]):
        theta[t] = lam_new[rows[t], cols[t]]
    return OK, psi, theta


#: The Python functions that :func:`kernels` compiles (its rebinding of the module's names
#: leaves these untouched).
_PYTHON = {name: globals()[name] for name in _COMPILED}
