"""Parametric bootstrap from the statistics: lme4's ``bootMer``, no pass over the data.

A replicate simulates ``y* = X beta + Z b* + e*`` (``b* ~ N(0, Sigma)``,
``e* ~ N(0, sigma2 W^{-1})``, at the estimates) and refits. The criterion needs only the
cross-products, and only those with ``y`` change: per level ``Z_l'y*``, and ``X'y*``,
``y*'y*``. With ``u_l = Z_l'W e*``, ``r = X'W e*`` and ``e*'W e*``, they are

* ``Z_l'y* = Z_l'X beta + Z_l'Z_l b_l + u_l``;
* ``X'y* = X'X beta + sum_l X_l'Z_l b_l + r``;
* ``y*'y* = |X beta + Z b|^2 + 2 (beta'r + sum_l b_l'u_l) + e*'W e*``.

``(u_1, ..., u_m, r)`` is Gaussian with covariance ``sigma2 [Z X]'W[Z X]``, whose blocks
are the statistics: the ``u_l`` are independent, ``N(0, sigma2 Z_l'Z_l)``; given them,
``r ~ N(sum_l X_l'Z_l (Z_l'Z_l)^+ u_l, sigma2 S)`` with ``S`` the Schur complement
``X'X - sum_l X_l'Z_l (Z_l'Z_l)^+ Z_l'X_l``; and ``e*'W e*`` is the squared length of the
projection of ``W^{1/2} e*`` on the columns (a function of ``u`` and ``r``) plus
``sigma2`` times an independent chi-square on ``n - rank`` degrees of freedom. So a
replicate is exact, costs ``O(m q^3)`` plus a refit from statistics, and does not touch
the rows. Models with several random-effects terms are not supported yet (their
``Z'e*`` couple the terms' levels).
"""

import dataclasses

import numpy as np
import pandas as pd

from ._covariance import CovarianceStructure
from ._crossprod import SufficientStats
from ._fitted import user_beta
from ._optimize import optimize
from ._profile import ProfiledDeviance


def _pinv_parts(G, rcond=1e-12):
    """Batched eigen-decomposition of PSD ``G``: ``(V, sqrt(w), 1/w on the kept part, rank)``."""
    w, V = np.linalg.eigh(G)
    top = np.maximum(w[..., -1:], np.finfo(float).tiny)
    keep = w > rcond * top
    root = np.sqrt(np.where(keep, w, 0.0))
    inv = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
    return V, root, inv, keep.sum(axis=-1)


class StatsSimulator:
    """Simulates the statistics of new responses from a fitted one-factor model.

    Parameters
    ----------
    stats : SufficientStats
        The fit's statistics (model coordinates: centred, rescaled columns).
    beta : ndarray of shape (p,)
        Fixed effects in the same coordinates.
    lam : ndarray of shape (q, q)
        ``Lambda`` (``Sigma = sigma2 Lambda Lambda'`` in these coordinates).
    sigma2 : float
        Residual variance.
    """

    def __init__(self, stats, beta, lam, sigma2):
        self.stats, self.beta, self.lam, self.sigma = stats, beta, lam, np.sqrt(sigma2)
        p, q = stats.p, stats.q
        ZtZ, ZtX, XtX = stats.ZtZ, stats.ZtXy[:, :, :p], stats.XytXy[:p, :p]
        self.V, self.root, self.inv, ranks = _pinv_parts(ZtZ) if q else (None,) * 3 + (0,)
        if q:
            # (Z_l'Z_l)^+ Z_l'X_l and the Schur complement S of X'X
            pinv = np.einsum("lij,lj,lkj->lik", self.V, self.inv, self.V)
            self.gain = np.matmul(pinv, ZtX)  # (m, q, p)
            S = XtX - np.einsum("lqi,lqj->ij", ZtX, self.gain)
        else:
            self.gain, S = None, XtX
        S = (S + S.T) / 2
        self.S_V, self.S_root, self.S_inv, s_rank = _pinv_parts(S)
        self.df = max(int(stats.n - np.sum(ranks) - s_rank), 0)
        # the parts of the statistics that do not change
        self.ZtXb = ZtX @ beta if q else None
        self.XtXb = XtX @ beta
        self.bXtXb = float(beta @ XtX @ beta)

    def draw(self, rng):
        """The statistics of one simulated response (a new :class:`SufficientStats`)."""
        st, beta, sigma = self.stats, self.beta, self.sigma
        p, q, m = st.p, st.q, st.n_groups
        z = rng.standard_normal(p)
        r = sigma * (self.S_V @ (self.S_root * z))  # the part of X'We* orthogonal to u
        epe = float(np.sum(self.S_inv * (self.S_V.T @ r) ** 2))
        Xty = self.XtXb + r
        yty = self.bXtXb + 2 * beta @ r
        new = st.XytXy.copy()
        if q:
            b = sigma * rng.standard_normal((m, q)) @ self.lam.T
            c = rng.standard_normal((m, q))
            u = sigma * np.einsum("lij,lj->li", self.V, self.root * c)  # Z_l'We*
            ZtZb = np.einsum("lij,lj->li", st.ZtZ, b)
            Zty = self.ZtXb + ZtZb + u
            Xty = Xty + np.einsum("lqi,lq->i", st.ZtXy[:, :, :p], b)
            Xty = Xty + np.einsum("lqi,lq->i", self.gain, u)
            epe += float(np.sum(self.inv * np.einsum("lij,li->lj", self.V, u) ** 2))
            rb = np.einsum("lqi,lq->i", self.gain, u)  # the part of X'We* given u
            yty += 2 * float(np.einsum("lq,lqi,i->", b, st.ZtXy[:, :, :p], beta))
            yty += float(np.einsum("lq,lq->", b, ZtZb)) + 2 * float(beta @ rb)
            yty += 2 * float(np.einsum("lq,lq->", b, u))
            ZtXy = st.ZtXy.copy()
            ZtXy[:, :, p] = Zty
        else:
            ZtXy = st.ZtXy
        yty += epe + (sigma**2 * rng.chisquare(self.df) if self.df else 0.0)
        new[:p, p] = new[p, :p] = Xty
        new[p, p] = yty
        return SufficientStats(st.ZtZ, ZtXy, new, st.counts, st.n, st.log_weights)


def term_parameters(q, unstructured):
    """lme4's order of a term's parameters: per column ``j``, its sd, then its
    correlations with the later columns: ``[("sd", j, j) or ("cor", i, j)]``."""
    out = []
    for j in range(q):
        out.append(("sd", j, j))
        if unstructured:
            out += [("cor", i, j) for i in range(j + 1, q)]
    return out


def parameter_names(model):
    """lme4's new-style names: fixed effects, ``sd_<col>|<term>``, ``cor_<a>.<b>|<term>``,
    ``sigma``, in lme4's order."""
    names = list(model.fixed_names)
    for t in model.terms:
        cols = t.columns
        for kind, i, j in term_parameters(t.q, t.covariance == "unstructured"):
            names.append(
                f"sd_{cols[j]}|{t.name}" if kind == "sd" else f"cor_{cols[i]}.{cols[j]}|{t.name}"
            )
    return [*names, "sigma"]


def variance_values(terms, covs):
    """The standard deviations and correlations of :func:`parameter_names`, in order."""
    values = []
    for t, cov in zip(terms, covs, strict=True):
        sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        for kind, i, j in term_parameters(t.q, t.covariance == "unstructured"):
            if kind == "sd":
                values.append(sd[j])
            else:
                d = sd[i] * sd[j]
                values.append(float(np.clip(cov[i, j] / d, -1, 1)) if d > 0 else np.nan)
    return values


def parameters(model, beta, covs, sigma2):
    """The values of :func:`parameter_names` (user scale)."""
    return [*beta, *variance_values(model.terms, covs), np.sqrt(sigma2)]


#: Random effects of all terms together above which the general simulator (a dense
#: factorization of ``[Z X]'W[Z X]``) is refused: its memory grows as their square.
MAX_DENSE_EFFECTS = 6000


class DenseStatsSimulator:
    """The statistics of new responses for any model, from the dense Gram matrix.

    ``G = [Z X]'W[Z X]`` (every term's columns, in the statistics' sorted order, then
    ``X``) is assembled from the blocks of the statistics and factorized once;
    ``(Z'We*, X'We*) ~ N(0, sigma2 G)`` is drawn from it, ``e*'We*`` is its squared
    length in the ``G^+`` metric plus ``sigma2`` times a chi-square on ``n - rank(G)``
    degrees of freedom, and the new cross-products with ``y*`` follow as in
    :class:`StatsSimulator`. Each draw costs ``O(M^2)`` for ``M`` random effects.
    """

    def __init__(self, fitted):
        model, st = fitted.model, fitted.model.stats
        p = st.p
        sizes = [z.shape[0] * z.shape[1] for z in st.ZtZ]
        M = int(sum(sizes))
        if M > MAX_DENSE_EFFECTS:
            raise ValueError(
                f"bootstrap of a model with several terms draws from a dense {M:,} x {M:,} "
                f"matrix (all the random effects), more than {MAX_DENSE_EFFECTS:,}: not "
                "supported; use conf_int('profile')"
            )
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        G = np.zeros((M + p, M + p))
        for i, (z, zx) in enumerate(zip(st.ZtZ, st.ZtXy, strict=True)):
            m, q = z.shape[:2]
            sl = slice(starts[i], starts[i + 1])
            block = np.zeros((m * q, m * q))
            for lvl in range(m):
                block[lvl * q : (lvl + 1) * q, lvl * q : (lvl + 1) * q] = z[lvl]
            G[sl, sl] = block
            G[sl, M:] = zx[:, :, :p].reshape(m * q, p)
            G[M:, sl] = G[sl, M:].T
        for (i, j), mat in st.cross.items():
            dense = mat.toarray()
            G[starts[i] : starts[i + 1], starts[j] : starts[j + 1]] = dense
            G[starts[j] : starts[j + 1], starts[i] : starts[i + 1]] = dense.T
        G[M:, M:] = st.XytXy[:p, :p]
        self.G, self.M, self.p, self.starts = (G + G.T) / 2, M, p, starts
        self.V, self.root, self.inv, rank = _pinv_parts(self.G)
        self.df = max(int(st.n - rank), 0)
        self.stats, self.sigma = st, np.sqrt(fitted.sigma2)
        theta = fitted.opt.theta
        self.lams = []  # per sorted term: Lambda in the statistics' coordinates
        for k in st.order:
            t, sl = model.terms[k], model.slices[k]
            self.lams.append(t.structure.lam(theta[sl]))
        self.beta = np.asarray(fitted.opt.evaluation.beta, float)

    def draw(self, rng):
        st, sigma, M, p = self.stats, self.sigma, self.M, self.p
        b = np.concatenate(
            [
                (sigma * rng.standard_normal((z.shape[0], z.shape[1])) @ lam.T).ravel()
                for z, lam in zip(st.ZtZ, self.lams, strict=True)
            ]
        )
        w = sigma * (self.V @ (self.root * rng.standard_normal(M + p)))  # [Z'We*; X'We*]
        epe = float(np.sum(self.inv * (self.V.T @ w) ** 2))
        mean = np.concatenate([b, self.beta])  # the coefficients of [Z X]
        Gm = self.G @ mean
        cross = Gm + w  # [Z X]'W y*
        yty = float(mean @ Gm) + 2 * float(mean @ w) + epe
        if self.df:
            yty += sigma**2 * rng.chisquare(self.df)
        ZtXy = []
        for i, z in enumerate(st.ZtXy):
            new = z.copy()
            new[:, :, p] = cross[self.starts[i] : self.starts[i + 1]].reshape(z.shape[:2])
            ZtXy.append(new)
        XytXy = st.XytXy.copy()
        XytXy[:p, p] = XytXy[p, :p] = cross[M:]
        XytXy[p, p] = yty
        return dataclasses.replace(st, ZtXy=ZtXy, XytXy=XytXy)


def run_replicates(fitted, seeds, options):
    """Refit the model on the simulated statistics of each seed; rows of parameters."""
    model = fitted.model
    if len(model.terms) > 1 or (model.terms and not model.one_factor):
        return _run_general(fitted, seeds, options)
    ev = fitted.opt.evaluation
    term = model.terms[0] if model.terms else None
    structure = term.structure if term else None
    base = model.stats.term(0) if term else _no_terms_stats(model.stats)
    lam = structure.lam(fitted.opt.theta) if term else np.zeros((0, 0))
    sim = StatsSimulator(base, np.asarray(ev.beta, float), lam, fitted.sigma2)
    rows = []
    for seed in seeds:
        stats = sim.draw(np.random.default_rng(seed))
        objective = ProfiledDeviance(stats, structure or CovarianceStructure(0), model.reml)
        opt = optimize(objective, blocks=model.blocks, theta0=fitted.opt.theta, **options)
        rows.append(_row(fitted, opt))
    return rows


def _row(fitted, opt):
    """A replicate's parameters (lme4's order), ``converged`` and ``n_iter``."""
    sigma2 = float(opt.evaluation.sigma2)
    beta = user_beta(fitted.model, opt.evaluation.beta)
    covs = fitted._user_covs(opt.theta, sigma2)
    return [*parameters(fitted.model, beta, covs, sigma2), float(opt.converged), float(opt.n_iter)]


def _run_general(fitted, seeds, options):
    """:func:`run_replicates` for any model, by :class:`DenseStatsSimulator`."""
    model = fitted.model
    sim = DenseStatsSimulator(fitted)
    rows = []
    for seed in seeds:
        reduced = dataclasses.replace(model, stats=sim.draw(np.random.default_rng(seed)))
        objective = reduced.criterion(options["solver"])
        opt = optimize(objective, blocks=model.blocks, theta0=fitted.opt.theta, **options)
        objective.release()
        rows.append(_row(fitted, opt))
    return rows


def _no_terms_stats(st):
    return SufficientStats(
        np.zeros((1, 0, 0)),
        np.zeros((1, 0, st.p + 1)),
        st.XytXy,
        np.array([st.n]),
        st.n,
        st.log_weights,
    )


def bootstrap_table(fitted, n_boot, random_state, n_jobs, options, progress=False):
    """``n_boot`` replicates as a DataFrame (one column per parameter), in seed order.

    The replicates run in chunks (joblib workers for ``n_jobs``); with ``progress`` a
    tqdm bar counts them as chunks finish. The seeds are spawned from one
    ``SeedSequence``, so the table does not depend on the chunks or workers.
    """
    from joblib import Parallel, delayed
    from sklearn.utils import check_random_state

    bar = _progress_bar(n_boot) if progress else None
    if isinstance(random_state, np.random.Generator):
        root = np.random.SeedSequence(int(random_state.integers(0, 2**31 - 1)))
    else:
        rng = check_random_state(random_state)
        root = np.random.SeedSequence(int(rng.randint(0, 2**31 - 1)))
    seeds = root.spawn(n_boot)
    n_chunks = 1 if n_jobs in (None, 1) else min(n_boot, 4 * max(abs(int(n_jobs)), 2))
    if progress:
        n_chunks = max(n_chunks, min(n_boot, 50))
    chunks = [c for c in np.array_split(np.arange(n_boot), n_chunks) if len(c)]
    parts = []
    with fitted.objective.blas_limit():
        jobs = (
            delayed(run_replicates)(fitted, [seeds[i] for i in chunk], options) for chunk in chunks
        )
        for part in Parallel(n_jobs=n_jobs, return_as="generator")(jobs):
            parts.append(part)
            if bar is not None:
                bar.update(len(part))
    if bar is not None:
        bar.close()
    rows = [row for part in parts for row in part]
    columns = [*parameter_names(fitted.model), "converged", "n_iter"]
    table = pd.DataFrame(rows, columns=columns)
    table["converged"] = table["converged"].astype(bool)
    table["n_iter"] = table["n_iter"].astype(int)
    return table


def _progress_bar(total):
    """A tqdm progress bar, or an ImportError saying how to get tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(
            "progress=True shows a tqdm progress bar, and tqdm is not installed: "
            "pip install tqdm (or sklmm[progress])"
        ) from exc
    return tqdm(total=total, desc="bootstrap", unit="replicate")
