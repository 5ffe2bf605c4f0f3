"""The model: terms, fixed-effects transform and cross-product statistics, however built.

:class:`MixedModel` is the one internal representation of every linear mixed model in
sklmm: a list of :class:`~sklmm._terms.RandomTerm` (none, one or several), the
centring of the fixed effects, each term's reparameterization (its slopes centred,
its columns rescaled), the statistics :class:`~sklmm._crossprod.BlockedStats` of the
transformed columns, and REML or ML. It is built the same way from in-memory data
(:func:`build_model`) and from Dask collections (:mod:`sklmm._dask`): both form
the raw statistics and hand them to :func:`model_from_stats`, which runs the checks
that need them and applies the reparameterization.

The criterion is chosen here (:meth:`MixedModel.criterion`): the one-factor criterion
of :mod:`sklmm._profile` for a model with a single term with an intercept (or none),
the blocked criterion of :mod:`sklmm._blocked` otherwise (or when L-BFGS-B is asked
for).

Reparameterizations (the likelihood is unchanged; :mod:`sklmm._fitted` undoes them):

* ``X`` and ``y`` centred on their means when there is an intercept:
  ``beta = T beta_c`` (plus the mean of ``y`` on the intercept);
* the slope columns of an unstructured term with an intercept centred:
  ``b_k = A_k b_k,c``;
* every term's columns divided by their root mean square ``s_k``:
  ``b_k,c = b_k,s / s_k``.
"""

import os
from dataclasses import dataclass

import numpy as np

from . import _compiled
from ._blocked import BlockedDeviance
from ._covariance import CovarianceStructure
from ._crossprod import SufficientStats, model_stats, rescale_terms
from ._profile import ProfiledDeviance, _chol_last, _lower_solve_last
from ._terms import check_term_sizes
from ._validation import check_fixed_effects, check_y_range

#: Arrays of the dense block's size that a fit holds at once at its peak (G, GP, A22 =
#: L22, its inverse, products and temporaries: measured 7-8 on fits, summaries and
#: predictions), plus the dense part of the split product of the contingency table (at
#: most ``GRAM_DENSE_COLUMNS = 3`` times the block, and its weighted copy), for the
#: memory check before the fit.
DENSE_COPIES = 8 + 2 * 3


@dataclass
class MixedModel:
    """A linear mixed model ready to be optimised.

    Attributes
    ----------
    terms : list of RandomTerm
        The random-effects terms (levels set), in the model's order.
    stats : BlockedStats
        Cross-products of the centred and rescaled columns.
    scales : list of ndarray
        Root mean square of every term's (centred) columns.
    shifts : list of ndarray
        ``A_k`` of every term (``b_k = A_k b_k,c``).
    reml : bool
        REML criterion if true, else ML.
    fit_intercept : bool
        Whether the first fixed-effect column is the intercept.
    fixed_names : list of str
        Names of the fixed-effect columns (``"(Intercept)"`` first when fitted).
    x_mean : ndarray
        What the columns of ``X`` were centred on (zeros without an intercept).
    y_mean : float
        What ``y`` was centred on (0 without an intercept).
    label_columns : dict
        Names of the label columns of ``groups`` and ``variance_components`` in fit.
    counts : list of ndarray
        Rows per level of every term.
    weighted : bool
        Whether the model was fitted with precision weights.
    """

    terms: list
    stats: object
    scales: list
    shifts: list
    reml: bool
    fit_intercept: bool
    fixed_names: list
    x_mean: np.ndarray
    y_mean: float
    label_columns: dict
    counts: list
    weighted: bool = False

    @property
    def one_factor(self):
        """Whether the one-factor criterion applies: one term with an intercept, or none."""
        return not self.terms or (len(self.terms) == 1 and self.terms[0].spec.intercept)

    @property
    def n(self):
        """Number of rows."""
        return self.stats.n

    @property
    def slices(self):
        """The slice of ``theta`` of every term."""
        out, start = [], 0
        for t in self.terms:
            k = t.structure.n_theta
            out.append(slice(start, start + k))
            start += k
        return out

    @property
    def blocks(self):
        """Each term's slice of ``theta`` and its covariance structure."""
        return [(sl, t.structure) for t, sl in zip(self.terms, self.slices, strict=True)]

    @property
    def T(self):
        """``beta = T beta_c`` (the intercept then gets the mean of ``y`` added)."""
        p = self.stats.p
        T = np.eye(p)
        if self.fit_intercept:
            T[0, 1:] = -self.x_mean
        return T

    def criterion(self, solver="auto", reml=None):
        """The criterion ``D(theta)`` for this model (``reml`` overrides the model's)."""
        reml = self.reml if reml is None else reml
        st = self.stats
        if not self.terms:
            p = st.p
            one = SufficientStats(
                np.zeros((1, 0, 0)),
                np.zeros((1, 0, p + 1)),
                st.XytXy,
                np.array([st.n]),
                st.n,
                st.log_weights,
            )
            return ProfiledDeviance(one, CovarianceStructure(0), reml)
        if self.one_factor and solver != "lbfgs":
            return ProfiledDeviance(st.term(0), self.terms[0].structure, reml)
        return BlockedDeviance(st, reml, [t.structure for t in self.terms])


def _memory_bytes():
    """Memory the process may use: the least of physical memory, the address-space limit
    (``RLIMIT_AS``) and the cgroup limit (containers), or None where none is known."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux/macOS
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            limits.append(soft)
    except (ImportError, ValueError, OSError):  # pragma: no cover - Windows
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max", or a huge "no limit" value
            limits.append(int(text))
    return min(limits) if limits else None


def check_dense_block(terms):
    """A clear error when the dense block of the blocked factorization cannot fit in memory.

    Every term but the one with most levels goes into one dense block of
    ``sum m_k q_k`` rows; the fit holds a few arrays of its square.
    """
    if len(terms) < 2:
        return
    # The engine's rule: the term with most levels (the first of them on a tie) is the
    # block-diagonal one; every other term is in the dense block.
    levels = np.array([t.n_levels for t in terms])
    rest = np.argsort(-levels, kind="stable")[1:]
    m_r = sum(terms[k].n_levels * terms[k].q for k in rest)
    need = DENSE_COPIES * 8 * m_r * m_r
    have = _memory_bytes()  # physical memory, or the process's limit if lower
    if have is not None and need > 0.8 * have:
        names = [str(terms[k].spec) for k in sorted(rest)]
        raise ValueError(
            f"the terms {names} have {m_r:,} random effects together: the dense block of "
            f"the factorization ({m_r:,} x {m_r:,}) would need about {need / 1e9:,.1f} GB "
            f"of the machine's {have / 1e9:,.1f} GB. Only the term with most levels may be "
            "that large; coarsen the other factors or fit them as fixed effects"
        )


def centring(terms, col_means, y_mean, fit_intercept, n_fixed=None):
    """What ``X``, ``y`` and each term's columns are centred on.

    The fixed effects are the first ``n_fixed`` columns (``None``: all).

    Returns
    -------
    x_mean : ndarray
    y_centre : float
    z_means : list of ndarray
        Per term, the centre of each of its columns (0 for the intercept).
    """
    fixed = col_means[: len(col_means) if n_fixed is None else n_fixed]
    x_mean = fixed if fit_intercept else np.zeros(len(fixed))
    y_centre = y_mean if fit_intercept else 0.0
    z_means = []
    for t in terms:
        z = np.zeros(t.q)
        if t.centred():
            z[1:] = col_means[t.slopes]
        z_means.append(z)
    return x_mean, y_centre, z_means


def _projected(ZtZ, ZtXy):
    """``sum_l ZtXy_l' ZtZ_l^+ ZtXy_l``: a Cholesky per level, eigenvalues for the singular.

    A level whose block is singular (a slope constant within it, one row with a slope)
    goes through the pseudo-inverse by eigenvalues; only those levels do. The Cholesky
    part runs in the compiled kernel where the criterion's would
    (:data:`sklmm._compiled.MAX_WORK`), else as the criterion's numpy kernels, the levels
    last (:mod:`sklmm._profile`).
    """
    if _compiled.use_for(ZtZ.shape[0], ZtZ.shape[1]):
        total, singular = _compiled.kernels().projected(
            np.ascontiguousarray(ZtZ, dtype=float), np.ascontiguousarray(ZtXy, dtype=float)
        )
    else:
        L, good = _chol_last(np.ascontiguousarray(np.moveaxis(ZtZ, 0, -1)), masked=True)
        B = np.moveaxis(ZtXy, 0, -1)
        singular = ~good
        total = np.zeros((ZtXy.shape[2], ZtXy.shape[2]))
        if good.any():
            Lg, Bg = (L, B) if good.all() else (L[:, :, good], B[:, :, good])
            U = _lower_solve_last(Lg, Bg)  # L_l^{-1} Z_l'[X y]: (q, m, levels)
            total = total + sum(U[i] @ U[i].T for i in range(U.shape[0]))
    if singular.any():
        w, V = np.linalg.eigh(ZtZ[singular])
        keep = w > 1e-12 * np.maximum(w[:, -1:], np.finfo(float).tiny)
        U = (
            np.matmul(np.swapaxes(V, 1, 2), ZtXy[singular])
            * np.where(keep, 1.0 / np.sqrt(np.where(keep, w, 1.0)), 0.0)[:, :, None]
        )
        total = total + np.einsum("lqa,lqb->ab", U, U)
    return total


def check_exact_fit(raw, terms):
    """Error when the fixed effects and one term's random effects fit ``y`` exactly.

    For example ``y`` constant within every level of a factor: its random intercepts can
    reproduce ``y`` with a residual variance of 0, where the likelihood has no maximum
    (it grows without bound as ``sigma2`` goes to 0). The residual sum of squares of ``y``
    on ``[X Z_k]`` (``Z_k`` as fixed dummies and slopes) comes from the statistics: the
    within-level cross-products ``[X y]'[X y] - sum_l Z_l'[X y]' (Z_l'Z_l)^+ Z_l'[X y]``.
    """
    cp, p = raw.XytXy, raw.p
    total = cp[p, p]
    if p:
        total = total - cp[p, :p] @ np.linalg.lstsq(cp[:p, :p], cp[:p, p], rcond=None)[0]
    for i, k in enumerate(raw.order):
        W = cp - _projected(raw.ZtZ[i], raw.ZtXy[i])
        rss = W[p, p]
        if p:
            rss = rss - W[p, :p] @ np.linalg.lstsq(W[:p, :p], W[:p, p], rcond=None)[0]
        if rss <= 5e-15 * max(total, np.finfo(float).tiny):  # float64 rounding: ~1e-15
            t = terms[k]
            raise ValueError(
                "y is fitted exactly, to float64 rounding, by the fixed effects and the "
                f"random effects of the term {t.spec}: for example y constant within every "
                f"level of {t.name!r}, or a variation within its levels below 1e-7 of y's "
                "size (then centre or rescale y, or fit an intercept). The residual "
                "variance would be 0, where the "
                "likelihood has no maximum. Remove the term, or model y at another level"
            )


def check_before_stats(terms, n, y_max_abs):
    """The checks that need no statistics: term sizes, the dense block, the range of y."""
    check_term_sizes(terms, n)
    check_dense_block(terms)
    check_y_range(y_max_abs, n)


class _Rows:
    """Rows ``a:b`` of a centred design, as a new array (call) or written into one (fill).

    ``columns`` lists, per output column, the column of ``X`` it copies (``None``: the
    intercept, a column of ones) and ``centres`` what is subtracted from it. Filling a
    slice of the cross-products' work array directly saves two copies of every chunk
    (a stack of columns, then the copy into the work array).
    """

    def __init__(self, X, columns, centres):
        self.X, self.columns = X, list(columns)
        self.centres = np.asarray(centres, dtype=float)
        k = len(self.columns)
        self._block = None
        if (
            k
            and None not in self.columns
            and self.columns == list(range(self.columns[0], self.columns[0] + k))
        ):
            self._block = slice(self.columns[0], self.columns[0] + k)  # one subtraction

    def fill(self, a, b, out):
        if self._block is not None:
            np.subtract(self.X[a:b, self._block], self.centres, out=out)
            return out
        for j, (col, centre) in enumerate(zip(self.columns, self.centres, strict=True)):
            if col is None:
                out[:, j] = 1.0 - centre
            else:
                np.subtract(self.X[a:b, col], centre, out=out[:, j])
        return out

    def __call__(self, a, b):
        b = min(b, self.X.shape[0])
        return self.fill(a, b, np.empty((max(b - a, 0), len(self.columns))))


def row_readers(X, terms, x_mean, z_means, fit_intercept):
    """Readers of rows ``a:b`` of the centred fixed-effects design and of each term.

    The fixed effects are the first ``len(x_mean)`` columns of ``X``; any after them are
    random-effects columns only (see :func:`build_model`). Each reader is called as
    ``reader(a, b)`` (a new array) or ``reader.fill(a, b, out)``.
    """
    p = len(x_mean)
    x_cols = ([None] if fit_intercept else []) + list(range(p))
    x_centres = ([0.0] if fit_intercept else []) + list(x_mean)

    def z_reader(t, zm):
        cols = ([None] if t.spec.intercept else []) + [int(j) for j in t.slopes]
        return _Rows(X, cols, zm)

    readers = [z_reader(t, zm) for t, zm in zip(terms, z_means, strict=True)]
    return _Rows(X, x_cols, x_centres), readers


def build_model(
    X,
    y,
    terms,
    codes,
    *,
    fit_intercept,
    reml,
    feature_names,
    label_columns,
    weights=None,
    names_given=True,
    n_fixed=None,
):
    """The model of in-memory data.

    Parameters
    ----------
    X : ndarray of shape (n, p + r)
        Validated covariates: the ``p`` fixed-effects columns, then ``r`` columns that
        only random-effects terms use (a formula's ``(0 + condition | subject)`` with
        ``condition`` not in the fixed part). The terms' ``slopes`` index all of them.
    y : ndarray of shape (n,)
        Validated response.
    terms : list of RandomTerm
        Terms with their levels set.
    codes : list of ndarray
        Level of every row per term.
    weights : ndarray of shape (n,), default=None
        Precision weights, all positive (rows of zero weight already left out).
    names_given : bool, default=True
        Whether ``X`` named its columns (for the messages of the checks).
    n_fixed : int, default=None
        ``p``, the number of fixed-effects columns of ``X`` (``None``: all).
    """
    n = X.shape[0]
    p = X.shape[1] if n_fixed is None else n_fixed
    check_before_stats(terms, n, float(np.max(np.abs(y))))
    if weights is None:
        col_means = (np.ones(n) @ X) / n  # one matrix-vector product, not a strided reduce
        y_mean = float(y.mean())
    else:  # weighted means: the weighted cross-products are then centred
        total = float(weights.sum())
        col_means, y_mean = (weights @ X) / total, float(weights @ y) / total
    x_mean, y_centre, z_means = centring(terms, col_means, y_mean, fit_intercept, p)
    x_rows, z_rows = row_readers(X, terms, x_mean, z_means, fit_intercept)
    with np.errstate(over="ignore", invalid="ignore"):  # huge X: checked after
        raw = model_stats(
            x_rows, y - y_centre, codes, [t.n_levels for t in terms], z_rows, weights=weights
        )
    options = {"fit_intercept": fit_intercept, "reml": reml, "feature_names": feature_names[:p]}
    return model_from_stats(
        raw,
        terms,
        col_means[:p],
        (x_mean, y_centre, z_means),
        label_columns,
        weight_total=None if weights is None else total,
        names_given=names_given,
        **options,
    )


def model_from_stats(
    raw,
    terms,
    col_means,
    centres,
    label_columns,
    *,
    fit_intercept,
    reml,
    feature_names,
    weight_total=None,
    names_given=True,
    check_exact=True,
):
    """Check the raw statistics, reparameterize and return the :class:`MixedModel`.

    ``centres`` is what :func:`centring` returned for the data; ``weight_total`` the
    sum of the weights of a weighted model (``None`` without weights); ``check_exact``:
    run :func:`check_exact_fit` (``False`` where it passed on the same statistics and
    terms already).
    """
    _, y_centre, z_means = centres
    n = raw.n
    if not (np.isfinite(raw.XytXy).all() and all(np.isfinite(z).all() for z in raw.ZtXy)):
        raise ValueError("X has values too large to square and sum in float64; rescale its columns")
    fixed_names = (["(Intercept)"] if fit_intercept else []) + list(feature_names)
    check_fixed_effects(
        raw.XytXy, n, col_means, fixed_names, fit_intercept, weight_total, names_given
    )
    if check_exact:
        check_exact_fit(raw, terms)
    counts = [None] * len(terms)
    for i, k in enumerate(raw.order):
        t, ZtZ = terms[k], raw.ZtZ[i]
        counts[k] = np.asarray(raw.level_counts[i])
        if t.spec.intercept and t.q > 1:
            c, sums = ZtZ[:, 0, 0], ZtZ[:, 0, 1:]
            squares = np.diagonal(ZtZ, axis1=1, axis2=2)[:, 1:]
            within = c[:, None] * squares - sums**2
            constant = np.all(within <= 1e-10 * c[:, None] * squares + 1e-300, axis=0)
            if constant.any():
                bad = [t.spec.slopes[j] for j in np.flatnonzero(constant)]
                raise ValueError(
                    f"the random slope(s) {bad} of the term {t.spec} are constant within "
                    "every level, so their random slopes cannot be told apart from the random "
                    "intercept; keep them as fixed effects only"
                )
    shifts = []
    for t, zm in zip(terms, z_means, strict=True):
        A = np.eye(t.q)  # b = A b_centred
        A[0, 1:] = -zm[1:] if t.spec.intercept else 0.0
        shifts.append(A)
    stats, scales = rescale_terms(raw)
    return MixedModel(
        terms=terms,
        stats=stats,
        scales=scales,
        shifts=shifts,
        reml=bool(reml),
        fit_intercept=bool(fit_intercept),
        fixed_names=fixed_names,
        x_mean=(col_means if fit_intercept else np.zeros(len(col_means))).copy(),
        y_mean=float(y_centre),
        label_columns=label_columns,
        counts=counts,
        weighted=weight_total is not None,
    )
