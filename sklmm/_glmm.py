r"""Generalized linear mixed models: the Laplace approximation and adaptive quadrature.

Model
-----
``eta = offset + X beta + Z b``, ``b = Lambda u``, ``u ~ N(0, I)`` (the random effects
on lme4's spherical scale: ``Lambda`` is the relative Cholesky factor of every term,
with free entries ``theta``, exactly as for the linear model but without ``sigma``:
the binomial and Poisson families have no scale parameter), and ``y_i`` given ``b``
independent from the family (:mod:`sklmm._glm_family`) with mean ``g^{-1}(eta_i)``.

The marginal likelihood integrates ``b`` out. With ``h(u) = -2 sum_i m_i l_i(u) + |u|^2``
(the penalized deviance, up to constants) and ``u*`` its minimiser, the Laplace
approximation of ``-2 log L(theta, beta)`` is::

    D(theta, beta) = -2 sum_i m_i l_i(u*) + |u*|^2 + log|Lambda'Z' W Z Lambda + I|,

``W`` the observed curvature of ``-l`` in ``eta`` at ``u*`` (the textbook Laplace
approximation; for the canonical links it is the Fisher weight, as in lme4; for the
probit and complementary log-log links lme4 uses the Fisher weights, see the
documentation). The constants of the family are included, so ``-D/2`` is a
log-likelihood comparable with lme4's ``logLik`` and across models of the same data.

Penalized iteratively reweighted least squares
----------------------------------------------
``u*`` (and, in the first stage, ``beta`` with it) is found by Fisher scoring: at the
current ``eta`` every row has a weight ``w_i`` and a working response
``z_i = eta_i - offset_i [- x_i'beta] + s_i / w_i``, and the step solves the weighted
linear mixed model's penalized least squares for ``z`` with the weights ``w``: the
statistics are the weighted per-level cross-products of :mod:`sklmm._crossprod`
(one pass over the rows) and the solve is the blocked factorization of
:mod:`sklmm._blocked` at ``theta``. Steps that raise the penalized deviance are halved.

Two stages, as lme4's ``glmer``
-------------------------------
1. ``theta`` alone, with ``beta`` and ``u`` from the joint PIRLS (lme4's ``nAGQ = 0``):
   a cheap start;
2. ``(theta, beta)`` together on ``D`` with ``u*`` from the PIRLS in ``u`` alone, by
   L-BFGS-B (each evaluation warm-started at the last modes): on the exact gradient for
   one term and the Laplace approximation (:meth:`LaplaceCriterion.value_and_grad`;
   the first stage is then skipped: the quasi-Newton steps from the GLM cost less),
   else on central differences. The covariance of ``beta`` is lme4's default: the
   inverse of half the Hessian of ``D`` in ``(theta, beta)`` (central differences of the
   exact gradient, or of ``D``), its ``beta`` block.

Adaptive Gauss-Hermite quadrature (``n_agq > 1``, one scalar term): per level, with the
mode ``u*_l`` and curvature ``h_l`` of its integrand, nodes ``x_k`` and weights
``omega_k``::

    L_l = (pi h_l)^{-1/2} sum_k omega_k exp(x_k^2) exp(g_l(u*_l + sqrt(2 / h_l) x_k)),
    g_l(u) = sum_{i in l} m_i l_i(u) - u^2 / 2,

which is the Laplace approximation for one node.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.optimize
import scipy.sparse

from ._blocked import BlockedDeviance
from ._crossprod import BlockedStats, model_stats
from ._solvers import projected_gradient

#: PIRLS stops when no spherical random effect (and no fixed effect) moves by more.
PIRLS_TOL = 1e-10

#: Iterations of one PIRLS run.
PIRLS_MAX_ITER = 100

#: The most random effects (all terms) for the dense exact gradient of several terms.
DENSE_GRADIENT_MAX = 2000


class SeparationError(ValueError):
    """The penalized likelihood has no finite mode (complete separation)."""


@dataclass
class RowPass:
    """What one pass over the rows returns at a point ``(beta, b)``."""

    loglik: float
    stats: object  # BlockedStats of the working response, Fisher weights
    stats_obs: object = None  # the same with the observed weights (non-canonical links)


@dataclass
class GLMMData:
    """In-memory rows of a GLMM: the design, responses, prior weights and offset.

    ``X`` holds the fixed-effects columns (the intercept's column of ones included);
    ``codes``, ``n_levels`` and ``Z`` describe every term (caller's order). With one term
    the rows are sorted by level once, so that every per-level sum is a sum over
    contiguous rows (``numpy.add.reduceat``) and every gather a ``numpy.repeat``; the
    order of the rows is invisible outside (only sums over rows leave this object).
    """

    X: np.ndarray
    y: np.ndarray
    m: np.ndarray
    offset: np.ndarray
    codes: list
    n_levels: list
    Z: list

    def __post_init__(self):
        self._constant = {}
        self.sorted = len(self.codes) == 1
        if self.sorted:
            order = np.argsort(self.codes[0], kind="stable")
            self.X = np.ascontiguousarray(self.X[order])
            self.y, self.m, self.offset = self.y[order], self.m[order], self.offset[order]
            self.codes = [self.codes[0][order]]
            self.Z = [np.ascontiguousarray(self.Z[0][order])]
            self.counts = np.bincount(self.codes[0], minlength=self.n_levels[0])
            # A part of the rows (a Dask partition) may lack levels: the sums run over the
            # levels present and are scattered into all of them.
            self.present = np.flatnonzero(self.counts)
            self.starts = np.concatenate([[0], np.cumsum(self.counts[self.present])[:-1]])
            self.all_present = len(self.present) == self.n_levels[0]

    @property
    def n(self):
        return len(self.y)

    @property
    def p(self):
        return self.X.shape[1]

    def constant(self, family):
        """``sum_i`` of the family's terms that do not depend on ``eta``."""
        if family not in self._constant:
            self._constant[family] = float(family.row_constant(self.y, self.m).sum())
        return self._constant[family]

    def _expand(self, v):
        """Per-level values (m, ...) at every row (sorted one-term data)."""
        return np.repeat(v, self.counts, axis=0)

    def level_sums(self, M, axis=0):
        """Per-level sums of the rows of ``M`` along ``axis`` (sorted one-term data)."""
        if not self.n:
            shape = list(M.shape)
            shape[axis] = self.n_levels[0]
            return np.zeros(shape)
        sums = np.add.reduceat(M, self.starts, axis=axis)
        if self.all_present:
            return sums
        shape = list(M.shape)
        shape[axis] = self.n_levels[0]
        out = np.zeros(shape)
        index = [slice(None)] * M.ndim
        index[axis] = self.present
        out[tuple(index)] = sums
        return out

    def _products(self, left, right):
        """Per-level sums of ``a * b`` for every ``a`` in ``left``, ``b`` in ``right``:
        an array (len(left) * len(right), m), row ``i * len(right) + j``. The products are
        written into the rows of one (k, n) array and summed along it (contiguous
        segments: several times faster than broadcasting into an (n, k) array)."""
        M = np.empty((len(left) * len(right), self.n))
        r = 0
        for a in left:
            for b in right:
                np.multiply(a, b, out=M[r])
                r += 1
        return self.level_sums(M, axis=1)

    def random_part(self, b):
        """``Z b`` for the random effects ``b`` (one (m_k, q_k) array per term)."""
        if self.sorted:
            z, bk = self.Z[0], b[0]
            out = z[:, 0] * self._expand(bk[:, 0])
            for a in range(1, z.shape[1]):
                out += z[:, a] * self._expand(bk[:, a])
            return out
        out = np.zeros(self.n)
        for c, z, bk in zip(self.codes, self.Z, b, strict=True):
            out += np.einsum("ij,ij->i", z, bk[c]) if z.shape[1] > 1 else z[:, 0] * bk[c, 0]
        return out

    def start_eta(self, family):
        """R's ``mustart`` on the link scale (a GLM's first step starts there)."""
        if family.family == "binomial":
            mu = (self.m * self.y + 0.5) / (self.m + 1.0)
        else:
            mu = self.y + 0.1
        return family.link_function(mu)

    def _stats(self, X, z, w):
        """The weighted statistics of ``[Z X z]``.

        Far from the optimum (a trial step of the optimizer) a row whose fitted mean is
        ~0 or ~1 against its response has a weight of ~0 and a working response of ~1/0:
        ``z'Wz`` may overflow. The solves use ``Z'Wz`` and ``X'Wz`` only (``z'Wz`` is the
        linear model's residual sum of squares, not used here), so it is capped; any other
        overflow is a :class:`FloatingPointError` that ends the PIRLS run where it is.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            st = self._raw_stats(X, z, w)
        zz = st.XytXy[-1, -1]
        if not np.isfinite(zz):
            st.XytXy[-1, -1] = 1e300
        if not (np.isfinite(st.XytXy).all() and all(np.isfinite(a).all() for a in st.ZtXy)):
            raise FloatingPointError("the working statistics overflow")
        return st

    def _raw_stats(self, X, z, w):
        if not self.sorted:
            return model_stats(
                X, z, self.codes, self.n_levels, self.Z, weights=w, log_weights=False
            )
        Zc = self.Z[0]
        q, p = Zc.shape[1], X.shape[1]
        cols = [Zc[:, a] for a in range(q)] + [X[:, j] for j in range(p)] + [z]
        sums = self._products([Zc[:, a] * w for a in range(q)], cols).reshape(q, q + p + 1, -1)
        sums = sums.transpose(2, 0, 1)
        Xy = np.column_stack([X, z]) if p else z[:, None]
        return BlockedStats(
            ZtZ=[np.ascontiguousarray(sums[:, :, :q])],
            cross={},
            ZtXy=[np.ascontiguousarray(sums[:, :, q:])],
            XytXy=(Xy * w[:, None]).T @ Xy,
            n=self.n,
            order=np.zeros(1, dtype=int),
            level_counts=[self.counts],
        )

    def row_pass(self, family, beta, b, joint, start=False):
        """The log-likelihood and the working statistics at ``(beta, b)``.

        ``joint``: the working response keeps ``X beta`` and the statistics have ``X``
        (the PIRLS in ``beta`` and ``u``); otherwise ``X beta`` is an offset. ``start``:
        at R's ``mustart`` instead (the first step of a GLM).
        """
        fixed = self.offset + self.X @ beta
        eta = self.start_eta(family) if start else fixed + self.random_part(b)
        rt = family.row_terms(eta, self.y, self.m)
        z = eta - (self.offset if joint else fixed) + rt.score / rt.weight
        X = self.X if joint else np.empty((self.n, 0))
        st = self._stats(X, z, rt.weight)
        st_obs = None if family.canonical else self._stats(X, z, rt.weight_obs)
        return RowPass(float(rt.loglik.sum()) + self.constant(family), st, st_obs)

    def gradient_pass(self, family, beta, b, P):
        """The row sums of the Laplace gradient of one term (see :func:`laplace_gradient`).

        ``P`` (m, q, q): ``Lambda H_l^{-1} Lambda'`` of every level at the modes.
        """
        eta = self.offset + self.X @ beta + self.random_part(b)
        rt = family.row_terms(eta, self.y, self.m, derivative=True)
        Zc = self.Z[0]
        Pz = np.einsum("iab,ib->ia", self._expand(P), Zc)
        h = np.einsum("ia,ia->i", Zc, Pz)
        wh = rt.dweight * h
        w = rt.weight_obs
        q, p = Zc.shape[1], self.p
        zcols = [Zc[:, a] for a in range(q)]
        C = self._products([z * w for z in zcols], [self.X[:, j] for j in range(p)])
        rt_ = self._products(zcols, [rt.score, wh])  # rows: (a, score), (a, wh)
        sums = np.concatenate([C.T, rt_[0::2].T, rt_[1::2].T], axis=1)
        return {
            "C": sums[:, : q * p].reshape(-1, q, p),
            "r": sums[:, q * p : q * p + q],
            "t": sums[:, q * p + q :],
            "Xs": self.X.T @ rt.score,
            "Xwh": self.X.T @ wh,
        }

    def sparse_Z(self):
        """``Z`` (n x Q) of all terms, each term's levels level-major (as ``Lambda``'s blocks)."""
        if getattr(self, "_Z_sparse", None) is None:
            rows, cols, vals, start = [], [], [], 0
            for c, z, m in zip(self.codes, self.Z, self.n_levels, strict=True):
                q = z.shape[1]
                rows.append(np.repeat(np.arange(self.n), q))
                cols.append((start + c[:, None] * q + np.arange(q)).ravel())
                vals.append(z.ravel())
                start += m * q
            self._Z_sparse = scipy.sparse.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(self.n, start),
            )
        return self._Z_sparse

    def data_sums(self):
        """Sums over the rows that tell two fits' data apart (a likelihood-ratio test)."""
        m, y, X = self.m, self.y, self.X
        return {
            "n": self.n,
            "m": float(m.sum()),
            "my": float(m @ y),
            "myy": float(m @ (y * y)),
            "offset": float(self.offset.sum()),
            "x": X.sum(axis=0),
            "xx": np.einsum("ij,ij->j", X, X),
            "xy": X.T @ y,
            "counts": [
                np.bincount(c, minlength=k) for c, k in zip(self.codes, self.n_levels, strict=True)
            ],
            # per level of every term: the responses' and the weights' sums
            "level_k": [
                np.bincount(c, weights=m * y, minlength=k)
                for c, k in zip(self.codes, self.n_levels, strict=True)
            ],
            "level_m": [
                np.bincount(c, weights=m, minlength=k)
                for c, k in zip(self.codes, self.n_levels, strict=True)
            ],
        }

    def extreme_rows(self, family, beta):
        """Rows whose fitted mean from the fixed effects alone is within 1e-7 of 0 or 1
        (16 logits; where separated outcomes leave the optimizer)."""
        mu = family.linkinv(self.offset + self.X @ beta)
        return int(np.count_nonzero((mu < 1e-7) | (mu > 1 - 1e-7)))

    def node_loglik(self, family, beta, theta, u_hat, h, n_agq):
        """Per level, the log-likelihood of its rows at every quadrature node: (K, m)."""
        x, _ = np.polynomial.hermite.hermgauss(n_agq)
        z = self.Z[0][:, 0]
        fixed = self.offset + self.X @ beta
        scale = np.sqrt(2.0 / h)
        out = np.empty((len(x), len(h)))
        for k, xk in enumerate(x):
            eta = fixed + theta * z * self._expand(u_hat + scale * xk)
            out[k] = self.level_sums(family.row_terms(eta, self.y, self.m).loglik)
        return out

    def quadrature(self, family, beta, theta, u_hat, h, n_agq):
        """``sum_l log L_l`` by adaptive Gauss-Hermite quadrature (one scalar term)."""
        nodes = self.node_loglik(family, beta, theta, u_hat, h, n_agq)
        return agq_total(nodes, u_hat, h, n_agq) + self.constant(family)


def agq_total(nodes, u_hat, h, n_agq):
    """``sum_l log L_l`` from the per-level log-likelihoods at the nodes (module docstring)."""
    x, w = np.polynomial.hermite.hermgauss(n_agq)
    u = u_hat + np.sqrt(2.0 / h) * x[:, None]
    logs = nodes - 0.5 * u * u + (x * x + np.log(w / np.sqrt(np.pi)))[:, None]
    top = logs.max(axis=0)
    return float(np.sum(top + np.log(np.exp(logs - top).sum(axis=0)) - 0.5 * np.log(h)))


@dataclass
class Mode:
    """The result of one PIRLS run at ``theta``."""

    theta: np.ndarray
    beta: np.ndarray
    u: list
    b: list
    loglik: float
    penalty: float
    logdet: float
    objective: object  # BlockedDeviance of the last statistics (Fisher weights)
    objective_obs: object
    iterations: int
    converged: bool

    @property
    def deviance(self):
        """The Laplace approximation of ``-2 log L``."""
        return -2.0 * self.loglik + self.penalty + self.logdet

    @property
    def curvature_objective(self):
        """The factorization with the observed curvature (the Laplace determinant's)."""
        return self.objective if self.objective_obs is None else self.objective_obs


class _NoTerms:
    """The weighted least squares of a model without random effects (a GLM's IRLS step),
    with the interface of :class:`~sklmm._blocked.BlockedDeviance` that is used here."""

    def __init__(self, stats):
        self.stats = stats
        self.k = stats.n

    def _factor(self, theta):
        S = self.stats.XytXy
        p = S.shape[0] - 1
        R = np.linalg.cholesky(S)
        return {
            "beta": np.linalg.solve(R[:p, :p].T, R[p, :p]),
            "L_C": R[:p, :p],
            "r2": R[p, p] ** 2,
        }

    def log_det(self, theta):
        return 0.0

    def fixed_effects_cov(self, theta, sigma2=None):
        p = self.stats.XytXy.shape[0] - 1
        L_inv = np.linalg.inv(np.linalg.cholesky(self.stats.XytXy[:p, :p]))
        return (1.0 if sigma2 is None else sigma2) * (L_inv.T @ L_inv)

    def release(self):
        pass


def _spherical(obj, f, p):
    """``u`` (caller's order, (m_k, q_k) each) and ``beta`` from a factorization."""
    if isinstance(obj, _NoTerms):
        return np.asarray(f["beta"], dtype=float), []
    st = obj.stats
    Q1, Q2 = obj._solve_Q(f)
    beta = np.asarray(f["beta"], dtype=float)
    coef = np.append(-beta, 1.0)
    out = [None] * st.n_terms
    out[st.order[0]] = Q1 @ coef
    rest = Q2 @ coef
    for i in range(1, st.n_terms):
        sl = slice(obj._offsets[i - 1], obj._offsets[i])
        out[st.order[i]] = rest[sl].reshape(-1, obj._q[i])
    return beta, out


def _max_change(a, b):
    return max(
        [0.0] + [float(np.max(np.abs(x - y), initial=0.0)) for x, y in zip(a, b, strict=True)]
    )


class LaplaceCriterion:
    """``D(theta, beta)`` of a GLMM (Laplace, or quadrature for one scalar term).

    Parameters
    ----------
    data : GLMMData
        The rows (or any object with its ``row_pass``, ``gradient_pass``, ``quadrature``).
    family : Family
    structures : list of CovarianceStructure
        The covariance structure of every term.
    n_agq : int, default=1
        1: the Laplace approximation; more: adaptive Gauss-Hermite quadrature.
    """

    def __init__(self, data, family, structures, n_agq=1):
        self.data, self.family, self.n_agq = data, family, int(n_agq)
        self.structures = list(structures)
        sizes = [s.n_theta for s in self.structures]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.slices = [slice(bounds[k], bounds[k + 1]) for k in range(len(sizes))]
        self.n_theta = int(bounds[-1])
        self.lower = (
            np.concatenate([s.lower_bounds for s in self.structures])
            if self.structures
            else np.zeros(0)
        )
        self.p = data.p
        self.u = [np.zeros((m, s.q)) for m, s in zip(data.n_levels, self.structures, strict=True)]
        self.n_pirls = 0
        self.n_evaluations = 0
        self._templates = {}

    @property
    def analytic_gradient(self):
        """Whether :meth:`value_and_grad` has the exact gradient: the Laplace approximation
        with one term (any size, in memory or Dask), or several terms in memory with at
        most :data:`DENSE_GRADIENT_MAX` random effects in all (dense algebra)."""
        if self.n_agq != 1 or not self.structures:
            return False
        if len(self.structures) == 1:
            return bool(getattr(self.data, "sorted", False))
        q_total = sum(m * s.q for m, s in zip(self.data.n_levels, self.structures, strict=True))
        return isinstance(self.data, GLMMData) and q_total <= DENSE_GRADIENT_MAX

    def lams(self, theta):
        return [s.lam(theta[sl]) for s, sl in zip(self.structures, self.slices, strict=True)]

    def _b(self, u, lams):
        return [uk @ lam.T for uk, lam in zip(u, lams, strict=True)]

    def _objective(self, stats):
        if not self.structures:
            return _NoTerms(stats)
        # One criterion per number of fixed columns, reweighted at every PIRLS step.
        template = self._templates.get(stats.p)
        obj = (
            BlockedDeviance(stats, False, self.structures)
            if template is None
            else template.reweighted(stats)
        )
        self._templates[stats.p] = obj
        return obj

    def pirls(self, theta, beta, u, joint, start=False):
        """The conditional modes at ``theta`` (and ``beta`` too when ``joint``)."""
        theta = np.asarray(theta, dtype=float)
        data, fam = self.data, self.family
        lams = self.lams(theta)
        p = data.p if joint else 0
        beta = np.asarray(beta, dtype=float)
        rp = data.row_pass(fam, beta, self._b(u, lams), joint, start=start)
        pen = sum(float(np.sum(uk * uk)) for uk in u)
        pdev = np.inf if start else -2.0 * rp.loglik + pen
        converged, it = False, 0
        while it < PIRLS_MAX_ITER:
            it += 1
            self.n_pirls += 1
            obj = self._objective(rp.stats)
            try:
                f = obj._factor(theta)
            except (np.linalg.LinAlgError, FloatingPointError):
                # The working statistics are not positive definite: weights of ~0 with
                # working responses of ~1/0, where the fitted means are 0 or 1 (the fixed
                # effects separate the outcomes). From a start far off (another point's
                # modes), start again at u = 0; otherwise the mode is where it is now.
                if it == 1 and not start and any(np.any(uk != 0) for uk in u):
                    return self.pirls(theta, beta, [np.zeros_like(uk) for uk in u], joint)
                break
            beta_new, u_new = _spherical(obj, f, p)
            if not joint:
                beta_new = beta
            for _ in range(12):
                try:
                    rp_new = data.row_pass(fam, beta_new, self._b(u_new, lams), joint)
                except FloatingPointError:
                    pdev_new = np.inf
                else:
                    pen_new = sum(float(np.sum(uk * uk)) for uk in u_new)
                    pdev_new = -2.0 * rp_new.loglik + pen_new
                if np.isfinite(pdev_new) and (
                    not np.isfinite(pdev) or pdev_new <= pdev + 1e-11 * (abs(pdev) + 1.0)
                ):
                    break
                beta_new = 0.5 * (beta + beta_new)
                u_new = [0.5 * (a + c) for a, c in zip(u, u_new, strict=True)]
            else:
                converged = True  # no descent left: the mode to the arithmetic's precision
                break
            step = _max_change(u, u_new)
            if joint:
                step = max(step, _max_change([beta], [beta_new]))
            beta, u, rp, pdev, pen = beta_new, u_new, rp_new, pdev_new, pen_new
            if step < PIRLS_TOL:
                converged = True
                break
        obj = self._objective(rp.stats)
        obj_obs = None if rp.stats_obs is None else self._objective(rp.stats_obs)
        logdet = (obj if obj_obs is None else obj_obs).log_det(theta)
        b = self._b(u, lams)
        return Mode(theta, beta, u, b, rp.loglik, pen, logdet, obj, obj_obs, it, converged)

    def deviance_at(self, mode):
        """``D`` at a mode: Laplace, or adaptive quadrature when ``n_agq > 1``."""
        if self.n_agq <= 1:
            return mode.deviance
        f = mode.curvature_objective._compute_factor(mode.theta, profile=False)
        h = f["L11"][:, 0, 0] ** 2
        ll = self.data.quadrature(
            self.family, mode.beta, float(mode.theta[0]), mode.u[0][:, 0], h, self.n_agq
        )
        return -2.0 * ll

    def value(self, x, u=None):
        """``D`` at ``x = (theta, beta)`` with PIRLS in ``u`` from ``u`` (or the last modes).

        Raises :class:`FloatingPointError` where the working statistics overflow (far
        outside the region of the optimum).
        """
        self.n_evaluations += 1
        theta, beta = x[: self.n_theta], x[self.n_theta :]
        mode = self.pirls(theta, beta, self.u if u is None else u, joint=False)
        return self.deviance_at(mode), mode

    def _value_and_grad_dense(self, x, u=None):
        """:meth:`value_and_grad` for several terms, with dense ``Q x Q`` algebra (``Q`` random
        effects in all): the same formulas, ``Lambda`` block diagonal over the terms and
        ``H = Lambda'Z'WZ Lambda + I`` one matrix, ``h_i = z_i'P z_i`` with all of a row's
        random-effects columns. ``Lambda`` is applied block by block (``O(Q^2 q)``); the one
        ``O(Q^3)`` step is the inverse of ``H`` (a Cholesky factor and ``potri``)."""
        value, mode = self.value(x, u)
        theta, beta = mode.theta, mode.beta
        data = self.data
        Z = data.sparse_Z()
        lams = self.lams(theta)
        sizes = [m * lam.shape[0] for m, lam in zip(data.n_levels, lams, strict=True)]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

        def lam_left(M, transpose=False):  # Lambda M, or Lambda' M
            out = np.empty_like(M)
            for k, lam in enumerate(lams):
                blk = slice(offsets[k], offsets[k + 1])
                q = lam.shape[0]
                part = M[blk].reshape(-1, q, M.shape[1])
                factor = lam.T if transpose else lam
                out[blk] = np.einsum("ab,lbj->laj", factor, part).reshape(-1, M.shape[1])
            return out

        def lam_t_left(M):  # Lambda' M
            return lam_left(M, transpose=True)

        uvec = np.concatenate([uk.ravel() for uk in mode.u])
        eta = data.offset + data.X @ beta + data.random_part(mode.b)
        rt = self.family.row_terms(eta, data.y, data.m, derivative=True)
        WZ = Z.multiply(rt.weight_obs[:, None]).tocsr()
        A = (Z.T @ WZ).toarray()
        C = np.asarray(WZ.T @ data.X)
        r = np.asarray(Z.T @ rt.score).ravel()
        LtA = lam_t_left(A)  # Lambda'A
        H = lam_t_left(LtA.T).T  # Lambda'A Lambda (symmetric)
        H[np.diag_indices_from(H)] += 1.0
        L, info = scipy.linalg.lapack.dpotrf(H, lower=1)
        if info:
            raise FloatingPointError("H is not positive definite")
        Hinv, info = scipy.linalg.lapack.dpotri(L, lower=1)
        Hinv = Hinv + np.tril(Hinv, -1).T
        P = lam_left(lam_left(Hinv).T)  # Lambda H^{-1} Lambda' (symmetric)
        h = np.asarray(Z.multiply(Z @ P).sum(axis=1)).ravel()
        wh = rt.dweight * h
        t = np.asarray(Z.T @ wh).ravel()
        grad_beta = -2.0 * (data.X.T @ rt.score) + data.X.T @ wh - C.T @ (P @ t)
        tLam = lam_t_left(t[:, None])[:, 0]  # Lambda't
        grad_theta = np.empty(self.n_theta)
        for k, (structure, sl) in enumerate(zip(self.structures, self.slices, strict=True)):
            m, q = data.n_levels[k], structure.q
            blk = slice(offsets[k], offsets[k + 1])
            # the levels' own q x q blocks of H^{-1} Lambda'A
            diag = np.einsum(
                "laj,jlb->lab", Hinv[blk].reshape(m, q, -1), LtA[:, blk].reshape(-1, m, q)
            )
            u_k, r_k = mode.u[k], r[blk].reshape(m, q)
            for j, Ej in zip(range(sl.start, sl.stop), structure.basis(), strict=True):
                Eu = np.zeros(len(uvec))
                Eu[blk] = (u_k @ Ej.T).ravel()
                Etr = np.zeros(len(uvec))
                Etr[blk] = (r_k @ Ej).ravel()
                envelope = -2.0 * r @ Eu
                logdet = 2.0 * np.einsum("lab,ba->", diag, Ej)
                du = -Hinv @ (LtA @ Eu - Etr)
                grad_theta[j] = envelope + logdet + t @ Eu + tLam @ du
        return value, np.concatenate([grad_theta, grad_beta]), mode

    def value_and_grad(self, x, u=None):
        """``D``, its exact gradient in ``(theta, beta)`` and the modes (one term, Laplace).

        With ``A_l = Z_l'W Z_l`` (observed weights), ``H_l = Lambda'A_l Lambda + I``,
        ``P_l = Lambda H_l^{-1} Lambda'``, per row the leverage ``h_i = z_i'P_l z_i``, the
        score ``s_i`` and ``w'_i``, the derivative of the weight in ``eta``; per level
        ``C_l = Z_l'W X_l``, ``r_l = Z_l's``, ``t_l = sum_i w'_i h_i z_i``. The modes move
        with the parameters (``du_l = -H_l^{-1} d(grad_u)``), which moves the weights in
        the determinant::

            dD/dbeta    = -2 X's + X'(w' h) - sum_l C_l'P_l t_l
            dD/dtheta_j = sum_l [-2 r_l'E_j u_l + 2 tr(H_l^{-1} Lambda'A_l E_j)
                                 + t_l'E_j u_l + t_l'Lambda du_l/dtheta_j],
            du_l/dtheta_j = -H_l^{-1} (Lambda'A_l E_j u_l - E_j'r_l),

        ``E_j = dLambda/dtheta_j``. (The first terms are those at fixed modes: ``u`` is
        stationary for the penalized deviance.)
        """
        if len(self.structures) > 1:
            return self._value_and_grad_dense(x, u)
        value, mode = self.value(x, u)
        theta, beta = mode.theta, mode.beta
        (lam,) = self.lams(theta)
        (u_l,) = mode.u
        A = mode.curvature_objective.stats.ZtZ[0]  # the statistics are not resorted: one term
        q = lam.shape[0]
        H = np.matmul(np.matmul(lam.T, A), lam)
        H[:, np.arange(q), np.arange(q)] += 1.0
        Hinv = np.linalg.inv(H)
        P = np.matmul(np.matmul(lam, Hinv), lam.T)
        g = self.data.gradient_pass(self.family, beta, mode.b, P)
        C, r, t = g["C"], g["r"], g["t"]
        PT = np.einsum("lab,lb->la", P, t)
        grad_beta = -2.0 * g["Xs"] + g["Xwh"] - np.einsum("lap,la->p", C, PT)
        E = self.structures[0].basis()
        HinvLtA = np.matmul(Hinv, np.matmul(lam.T, A))  # (m, q, q)
        grad_theta = np.empty(len(E))
        for j, Ej in enumerate(E):
            Eu = u_l @ Ej.T  # E_j u_l per level
            envelope = -2.0 * np.einsum("la,la->", r, Eu)
            logdet = 2.0 * np.einsum("lab,ba->", HinvLtA, Ej)
            rhs = np.einsum("lab,lb->la", np.matmul(lam.T, A), Eu) - r @ Ej
            du = -np.einsum("lab,lb->la", Hinv, rhs)
            moved = np.einsum("la,la->", t, Eu) + np.einsum("la,la->", t @ lam, du)
            grad_theta[j] = envelope + logdet + moved
        return value, np.concatenate([grad_theta, grad_beta]), mode


def _fd_gradient(fun, x, lower, h):
    """Central differences (forward ones at a lower bound)."""
    g = np.empty_like(x)
    f0 = None
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h[i]
        if x[i] - h[i] < lower[i]:
            if f0 is None:
                f0 = fun(x)
            g[i] = (fun(x + e) - f0) / h[i]
        else:
            g[i] = (fun(x + e) - fun(x - e)) / (2 * h[i])
    return g


def fd_hessian(fun, x, h):
    """The Hessian of ``fun`` at ``x`` by central differences of its values."""
    d = len(x)
    H = np.empty((d, d))
    f0 = fun(x)
    E = np.diag(h)
    fp = [fun(x + E[i]) for i in range(d)]
    fm = [fun(x - E[i]) for i in range(d)]
    for i in range(d):
        H[i, i] = (fp[i] - 2 * f0 + fm[i]) / h[i] ** 2
        for j in range(i):
            v = (
                fun(x + E[i] + E[j])
                - fun(x + E[i] - E[j])
                - fun(x - E[i] + E[j])
                + fun(x - E[i] - E[j])
            ) / (4 * h[i] * h[j])
            H[i, j] = H[j, i] = v
    return H


def gradient_hessian(grad, x, h):
    """The Hessian by central differences of an exact gradient, symmetrized."""
    d = len(x)
    H = np.empty((d, d))
    for i in range(d):
        e = np.zeros(d)
        e[i] = h[i]
        H[:, i] = (grad(x + e) - grad(x - e)) / (2 * h[i])
    return 0.5 * (H + H.T)


@dataclass
class GLMMFit:
    """The result of :func:`fit_glmm`."""

    theta: np.ndarray
    beta: np.ndarray
    mode: object
    deviance: float
    hessian: np.ndarray
    converged: bool
    n_iter: int
    message: str
    n_pirls: int
    n_evaluations: int
    log: list


#: The criterion's value where it cannot be evaluated (the working statistics overflow).
_FAR = 1e300


def _bounds(lower):
    return [(lo if np.isfinite(lo) else None, None) for lo in lower]


def fit_glmm(criterion, *, max_iter=200, tol=1e-7, hessian=True, start=None):
    """Fit ``theta`` and ``beta`` (see the module docstring's two stages).

    ``start``: ``(theta, beta, u)`` of an earlier fit (a warm start): the second stage
    starts there, without the GLM and the first stage (``u`` may be ``None``).
    """
    c = criterion
    data = c.data
    log = []
    scale = max(1.0, float(data.n))
    if start is not None:
        theta0, beta0, u0 = start
        if u0 is not None:
            c.u = u0
        m1 = c.pirls(np.asarray(theta0, float), np.asarray(beta0, float), c.u, joint=False)
        return _stage2(c, m1, log, scale, max_iter, tol, hessian, n_glm=0)
    # The GLM: PIRLS with theta = 0 from R's mustart.
    glm = c.pirls(np.zeros(c.n_theta), np.zeros(c.p), c.u, joint=True, start=True)
    if not np.all(np.isfinite(glm.beta)):
        raise SeparationError("the GLM without random effects does not converge")
    theta = np.concatenate([s.initial_theta() for s in c.structures] + [np.zeros(0)])
    state = {"beta": glm.beta, "u": glm.u}

    # Stage 1: theta alone, beta and u from the joint PIRLS (lme4's nAGQ = 0).
    best = {"f": np.inf, "mode": None}

    def fun1(th):
        mode = c.pirls(th, state["beta"], state["u"], joint=True)
        if mode.deviance < best["f"]:
            best.update(f=mode.deviance, mode=mode)
        return mode.deviance

    # With the exact gradient the second stage starts from the GLM directly: its
    # quasi-Newton steps in (theta, beta) cost less than a first stage's differences.
    if c.n_theta and not c.analytic_gradient:
        res1 = scipy.optimize.minimize(
            fun1,
            theta,
            jac=lambda th: _fd_gradient(fun1, th, c.lower, np.full(c.n_theta, 1e-4)),
            method="L-BFGS-B",
            bounds=_bounds(c.lower),
            options={"maxiter": max_iter, "ftol": 1e-10, "gtol": 1e-4 * scale},
        )
        theta = res1.x
        log.append(("stage 1", int(res1.nit), float(res1.fun)))
    m1 = best["mode"]
    if m1 is None:
        m1 = c.pirls(theta, state["beta"], state["u"], joint=True)
    return _stage2(c, m1, log, scale, max_iter, tol, hessian, n_glm=glm.iterations)


def _stage2(c, m1, log, scale, max_iter, tol, hessian, n_glm):
    """The second stage from the modes ``m1``, the Hessian and the convergence check."""
    c.u = m1.u

    # Stage 2: (theta, beta) on the Laplace (or quadrature) deviance.
    x0 = np.concatenate([m1.theta, m1.beta])
    lower = np.concatenate([c.lower, np.full(c.p, -np.inf)])
    # Every evaluation starts PIRLS at the modes of the best point so far: a trial step
    # far out (its modes far off, or PIRLS stopped short there) must not become the start
    # of the next evaluation.
    center = {"u": m1.u, "best": np.inf}

    def keep(val, mode):
        if mode.converged and np.isfinite(val) and val < center["best"]:
            center.update(u=mode.u, best=val)

    if c.analytic_gradient:

        def fun_grad(x):
            try:
                val, grad, mode = c.value_and_grad(x, center["u"])
            except FloatingPointError:  # a trial step far out: the line search backs off
                return _FAR, np.zeros_like(x)
            if not np.isfinite(val):
                return _FAR, np.zeros_like(x)
            keep(val, mode)
            return val, grad

        def grad_at(x, u):
            return c.value_and_grad(x, u)[1]

    else:

        def fun2(x):
            try:
                return c.value(x, center["u"])[0]
            except FloatingPointError:
                return _FAR

        def fun_grad(x):
            try:
                val, mode = c.value(x, center["u"])
            except FloatingPointError:  # a trial step far out: the line search backs off
                return _FAR, np.zeros_like(x)
            keep(val, mode)  # the differences start at these modes
            h = 1e-4 * np.maximum(1.0, np.abs(x))
            return val, _fd_gradient(fun2, x, lower, h)

    res2 = scipy.optimize.minimize(
        fun_grad,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=_bounds(lower),
        options={"maxiter": max_iter, "ftol": 1e-15, "gtol": tol * scale},
    )
    x = res2.x
    dev, mode = c.value(x, center["u"])
    c.u = mode.u
    log.append(("stage 2", int(res2.nit), float(dev)))
    H = None
    if hessian:
        h = 1e-4 * np.maximum(1.0, np.abs(x))
        if c.analytic_gradient:
            H = gradient_hessian(lambda v: grad_at(v, mode.u), x, h)
        else:
            H = fd_hessian(lambda v: c.value(v, mode.u)[0], x, h)
    # The linear model's rule: every entry of the projected gradient, times
    # max(1, |x_i|), at most tol * n (L-BFGS-B may stop on its relative reduction first).
    pg = projected_gradient(x, np.asarray(res2.jac, dtype=float), lower)
    gnorm = float(np.max(np.abs(pg) * np.maximum(1.0, np.abs(x)), initial=0.0))
    converged = bool(gnorm <= 10 * tol * scale) and mode.converged
    return GLMMFit(
        theta=x[: c.n_theta],
        beta=x[c.n_theta :],
        mode=mode,
        deviance=float(dev),
        hessian=H,
        converged=converged,
        n_iter=int(res2.nit) if c.n_theta else n_glm,  # a GLM: its IRLS steps
        message=str(res2.message),
        n_pirls=c.n_pirls,
        n_evaluations=c.n_evaluations,
        log=log,
    )
