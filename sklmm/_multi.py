"""Models with several random-effects terms: from labels to the blocked engine and back.

The estimator's shell for the general engine of :mod:`sklmm._blocked`. Two ways to
ask for several terms reach the same fit:

* variance components (the statsmodels design): ``fit(X, y, groups=g,
  variance_components=vc)``. Each column ``c`` of ``vc`` is a random intercept per
  distinct (group, label) pair, lme4's ``(1 | g:c)``; with ``groups=None`` per distinct
  label, lme4's ``(1 | c)`` (crossed factors);
* an lme4-style specification, the estimator's ``random_effects`` parameter, whose
  factor names refer to the columns of ``groups`` and slope names to the columns of
  ``X`` (:mod:`sklmm._formula`).

Both are resolved into :class:`TermDesign` objects (a term, where its factor columns
come from, and the fitted levels), which also serve prediction: a row whose level of a
term was not seen in ``fit`` gets no contribution from that term (lme4's
``allow.new.levels = TRUE``).
"""

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._formula import Term, parse_random_effects


@dataclass
class TermDesign:
    """One random-effects term as fitted.

    Attributes
    ----------
    name : str
        Output name: the component name, or the factor name(s) joined by ``":"``
        (made unique as lme4 does, ``g`` then ``g.1``).
    term : Term
        The term's specification (columns, covariance).
    sources : list of tuple
        For each factor of the interaction, ``("groups", column)`` or
        ``("variance_components", column)``.
    slopes : ndarray of int
        Positions of the slope columns in ``X``.
    levels : list of ndarray
        Fitted labels of every factor column (sorted when they can be).
    combos : ndarray of shape (n_levels, n_factors)
        For each level of the term, the position of its label in ``levels[j]``.
    keys : ndarray of int
        Sorted integer key of every level (the combined positions), for matching.
    """

    name: str
    term: Term
    sources: list
    slopes: np.ndarray
    levels: list = None
    combos: np.ndarray = None
    keys: np.ndarray = None

    @property
    def n_levels(self):
        """Number of levels of the term."""
        return len(self.combos)

    def index(self):
        """The levels as a pandas Index (a MultiIndex for an interaction)."""
        names = [col for _, col in self.sources]
        if len(self.levels) == 1:
            return pd.Index(self.levels[0][self.combos[:, 0]], name=names[0])
        return pd.MultiIndex.from_arrays(
            [lv[self.combos[:, j]] for j, lv in enumerate(self.levels)], names=names
        )

    def z(self, X):
        """The term's columns for the rows of ``X``: the intercept, then the slopes."""
        cols = [np.ones(X.shape[0])] if self.term.intercept else []
        cols += [X[:, j] for j in self.slopes]
        return np.column_stack(cols)


def label_columns(obj, what, n_rows, check):
    """Named 1-D label arrays from ``groups`` or ``variance_components``.

    A DataFrame gives its columns; a Series its name (``what`` when unnamed); a 1-D
    array ``what``; a 2-D array ``what0``, ``what1``, ... ``check(values, n, name)``
    validates each column.
    """
    if obj is None:
        return {}
    if isinstance(obj, pd.DataFrame):
        cols = {str(c): obj[c] for c in obj.columns}
    elif isinstance(obj, pd.Series):
        default = "group" if what == "groups" else what
        cols = {str(obj.name) if obj.name is not None else default: obj}
    else:
        arr = np.asarray(obj)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 1:
            cols = {"group" if what == "groups" else what: arr}
        elif arr.ndim == 2:
            cols = {f"{what}{j}": arr[:, j] for j in range(arr.shape[1])}
        else:
            raise ValueError(f"{what} must be 1-D or 2-D, got an array of shape {arr.shape}")
    if not cols:
        raise ValueError(f"{what} has no columns")
    return {name: check(values, n_rows, f"{what} column {name!r}") for name, values in cols.items()}


def _unique_names(names):
    """lme4's names for repeated factors (``g``, ``g.1``, ...), never colliding with another."""
    taken, out = set(names), []
    for name in names:
        if name not in out:
            out.append(name)
            continue
        k = 1
        while f"{name}.{k}" in taken or f"{name}.{k}" in out:
            k += 1
        out.append(f"{name}.{k}")
    return out


def resolve_terms(est, feature_names, groups_cols, vc_cols, main_slopes):
    """The terms of the model, from the specification or from the variance components.

    Parameters
    ----------
    est : MixedLMRegressor
        Its ``random_effects``, ``covariance_type`` are read.
    feature_names : list of str
        Column names of ``X`` (``x0``, ``x1``, ... for arrays).
    groups_cols, vc_cols : dict
        Label columns from :func:`label_columns`.
    main_slopes : ndarray of int
        Positions of ``random_slopes`` (variance-components form).

    Returns
    -------
    list of TermDesign
    """
    if est.random_effects is None:
        terms, names = [], []
        group = next(iter(groups_cols), None)
        if group is not None:
            slopes = tuple(feature_names[j] for j in main_slopes)
            terms.append(
                TermDesign(
                    group,
                    Term((group,), True, slopes, est.covariance_type),
                    [("groups", group)],
                    np.asarray(main_slopes, dtype=int),
                )
            )
            names.append(group)
        for c in vc_cols:
            factors = [("groups", group)] if group is not None else []
            factors.append(("variance_components", c))
            key = tuple(f for _, f in factors)
            if len(set(key)) < len(key):
                raise ValueError(
                    f"variance_components column {c!r} has the name of the groups; rename it"
                )
            terms.append(TermDesign(c, Term(key, True), factors, np.zeros(0, dtype=int)))
        return terms
    parsed = parse_random_effects(est.random_effects)
    available = list(groups_cols)
    factor_names = {f for t in parsed for f in t.group}
    rename = {}
    if len(available) == 1 and len(factor_names) == 1 and not factor_names <= set(available):
        # One unnamed (or differently named) grouping column and one factor in the
        # specification: the column is that factor.
        rename = {next(iter(factor_names)): available[0]}
    terms = []
    for t, name in zip(parsed, _unique_names([t.name for t in parsed]), strict=True):
        sources = []
        for f in t.group:
            col = rename.get(f, f)
            if col not in groups_cols:
                raise ValueError(
                    f"random_effects term {t} names the grouping factor {f!r}, which is not a "
                    f"column of groups (columns: {available}); pass groups as a DataFrame with "
                    "one column per factor"
                )
            sources.append(("groups", col))
        slopes = []
        for s in t.slopes:
            if s not in feature_names:
                raise ValueError(
                    f"random_effects term {t} names the slope {s!r}, which is not a column of X "
                    f"(columns: {feature_names})"
                )
            slopes.append(feature_names.index(s))
        terms.append(TermDesign(name, t, sources, np.asarray(slopes, dtype=int)))
    return terms


def _column(source, groups_cols, vc_cols):
    kind, col = source
    cols = groups_cols if kind == "groups" else vc_cols
    return cols.get(col)


def _combine(codes, sizes):
    """One integer key per row from the codes of several factors (their interaction).

    The key is the mixed-radix number of the codes, the same at fit and at prediction.
    """
    if np.prod([float(max(m, 1)) for m in sizes]) >= 2.0**62:
        raise ValueError(
            f"an interaction of factors with {sizes} levels has too many possible level "
            "combinations to encode; combine the labels into one column first"
        )
    key = np.zeros(len(codes[0]), dtype=np.int64)
    for c, m in zip(codes, sizes, strict=True):
        key = key * m + c
    return key


def encode_terms(terms, groups_cols, vc_cols, factorize):
    """Fit-time codes of every term; sets ``levels`` and ``combos`` of each term.

    Returns
    -------
    list of ndarray
        The level of every row, per term.
    """
    cache, out = {}, []
    for td in terms:
        codes, levels = [], []
        for src in td.sources:
            if src not in cache:
                cache[src] = factorize(_column(src, groups_cols, vc_cols))
            c, lv = cache[src]
            codes.append(c.astype(np.int64))
            levels.append(np.asarray(lv))
        sizes = [len(lv) for lv in levels]
        key = _combine(codes, sizes)
        uniq, inverse = np.unique(key, return_inverse=True)
        combos = np.empty((len(uniq), len(sizes)), dtype=np.int64)
        rest = uniq.copy()
        for j in range(len(sizes) - 1, -1, -1):
            combos[:, j] = rest % sizes[j]
            rest //= sizes[j]
        td.levels, td.combos = levels, combos
        td.keys = uniq
        out.append(inverse.astype(np.intp))
    return out


def match_terms(terms, groups_cols, vc_cols, n_rows, match):
    """Prediction-time level of every row per term (-1: unseen, or labels not given)."""
    out = []
    for td in terms:
        idx = []
        for src, lv in zip(td.sources, td.levels, strict=True):
            values = _column(src, groups_cols, vc_cols)
            idx.append(np.full(n_rows, -1) if values is None else match(lv, values))
        idx = [np.asarray(i, dtype=np.int64) for i in idx]
        unseen = np.any(np.column_stack(idx) < 0, axis=1)
        key = _combine([np.where(unseen, 0, i) for i in idx], [len(lv) for lv in td.levels])
        pos = np.searchsorted(td.keys, key)
        pos = np.minimum(pos, len(td.keys) - 1)
        found = ~unseen & (td.keys[pos] == key)
        out.append(np.where(found, pos, -1))
    return out


#: Arrays of the dense block's size that a fit holds at once at its peak (G, GP, A22 =
#: L22, its inverse, products and temporaries: measured 7-8 on fits, summaries and
#: predictions), plus the dense part of the split product of the contingency table (at
#: most half the block, twice), for the memory check before the fit.
DENSE_COPIES = 10


def _memory_bytes():
    """Physical memory of the machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux/macOS
        return None


def _check_dense_block(terms):
    """A clear error when the dense block of the blocked factorization cannot fit in memory.

    Every term but the one with most levels goes into one dense block of
    ``sum m_k q_k`` rows; the fit holds a few arrays of its square.
    """
    # The engine's rule: the term with most levels (the first of them on a tie) is the
    # block-diagonal one; every other term is in the dense block.
    levels = np.array([td.n_levels for td in terms])
    rest = np.argsort(-levels, kind="stable")[1:]
    m_r = sum(terms[k].n_levels * len(terms[k].term.columns) for k in rest)
    need = DENSE_COPIES * 8 * m_r * m_r
    have = _memory_bytes()
    if have is not None and need > 0.8 * have:
        names = [str(terms[k].term) for k in sorted(rest)]
        raise ValueError(
            f"the terms {names} have {m_r:,} random effects together: the dense block of "
            f"the factorization ({m_r:,} x {m_r:,}) would need about {need / 1e9:,.1f} GB "
            f"of the machine's {have / 1e9:,.1f} GB. Only the term with most levels may be "
            "that large; coarsen the other factors or fit them as fixed effects"
        )


def fit_multi(est, X, y, groups, variance_components):
    """Fit ``est`` with several random-effects terms (the blocked engine); returns ``est``."""
    from sklearn.utils.validation import validate_data

    from ._blocked import BlockedDeviance, blocked_stats, minimize_blocked
    from ._covariance import CovarianceStructure
    from ._estimator import _check_groups, _factorize

    est._one_term = None
    X = est._prepare_X(X)
    X, y = validate_data(
        est, X, y, y_numeric=True, ensure_min_samples=2, ensure_min_features=0, dtype=np.float64
    )
    n = X.shape[0]
    names = est._feature_names()
    groups_cols = label_columns(groups, "groups", n, _check_groups)
    vc_cols = label_columns(variance_components, "variance_components", n, _check_groups)
    main_slopes = np.zeros(0, dtype=int)
    if est.random_effects is None:
        if len(groups_cols) > 1:
            raise ValueError(
                f"groups has {len(groups_cols)} columns; with variance_components it must be "
                "one column of labels (several grouping factors: use random_effects)"
            )
        if groups is None and est.random_slopes is not None:
            raise ValueError(
                "random_slopes needs groups: with groups=None the variance components are "
                "random intercepts only"
            )
        if groups is not None:
            main_slopes = est._resolve_slopes(n)
    terms = resolve_terms(est, names, groups_cols, vc_cols, main_slopes)
    codes = encode_terms(terms, groups_cols, vc_cols, _factorize)
    est._label_columns = {"groups": list(groups_cols), "variance_components": list(vc_cols)}
    for td in terms:
        q = len(td.term.columns)
        if td.n_levels < 2:
            raise ValueError(
                f"the random-effects term {td.term} has a single level; a variance needs at "
                "least two levels"
            )
        if n <= td.n_levels * q:
            raise ValueError(
                f"{n} rows for the {td.n_levels} levels x {q} random effects of the term "
                f"{td.term}: the number of rows must exceed the number of random effects of "
                "every term, or the residual and random-effect variances cannot be told apart "
                "(for example, every level has a single row)"
            )
    _check_dense_block(terms)
    big_y = np.max(np.abs(y))
    if big_y > np.sqrt(np.finfo(np.float64).max / n):
        raise ValueError(
            f"y has values too large to square and sum in float64 (max |y| = {big_y:.3g}); "
            "rescale it"
        )
    col_means = (np.ones(n) @ X) / n
    x_mean = col_means if est.fit_intercept else np.zeros(len(col_means))
    y_mean = float(y.mean()) if est.fit_intercept else 0.0
    Xc = X - x_mean
    if est.fit_intercept:
        Xc = np.column_stack([np.ones(n), Xc])
    # Reparameterizations of each term's columns, undone in _store_multi (the likelihood
    # is unchanged): the slopes of an unstructured term with an intercept centred (its
    # covariance family is closed under the shift, a diagonal one is not), then every
    # column at unit root mean square.
    Zs, scales, shifts = [], [], []
    for td in terms:
        Z = td.z(X)
        A = np.eye(Z.shape[1])  # b = A b_centred
        if td.term.intercept and Z.shape[1] > 1 and td.term.covariance == "unstructured":
            Z[:, 1:] -= col_means[td.slopes]
            A[0, 1:] = -col_means[td.slopes]
        rms = np.sqrt(np.mean(Z * Z, axis=0))
        rms[~(rms > 0)] = 1.0
        Zs.append(Z / rms)
        scales.append(rms)
        shifts.append(A)
    with np.errstate(over="ignore", invalid="ignore"):
        stats = blocked_stats(Xc, y - y_mean, codes, [td.n_levels for td in terms], Zs)
    if not (np.isfinite(stats.XytXy).all() and all(np.isfinite(z).all() for z in stats.ZtXy)):
        raise ValueError("X has values too large to square and sum in float64; rescale its columns")
    fixed_names = est._check_fixed_effects(stats.XytXy, n, col_means, names)
    for td, c in zip(terms, codes, strict=True):
        if td.term.intercept and len(td.slopes):
            # Within-level spread of each slope column, from the globally centred column
            # (no cancellation from an offset such as calendar years).
            xc = X[:, td.slopes] - col_means[td.slopes]
            counts = np.bincount(c, minlength=td.n_levels)[:, None]
            sums = np.column_stack([np.bincount(c, v, td.n_levels) for v in xc.T])
            squares = np.column_stack([np.bincount(c, v * v, td.n_levels) for v in xc.T])
            within = counts * squares - sums**2
            constant = np.all(within <= 1e-10 * counts * squares + 1e-300, axis=0)
            if constant.any():
                bad = [td.term.slopes[j] for j in np.flatnonzero(constant)]
                raise ValueError(
                    f"the slope(s) {bad} of the term {td.term} are constant within every level, "
                    "so their random slopes cannot be told apart from the random intercept; "
                    "keep them as fixed effects only"
                )
    structures = [CovarianceStructure(len(td.term.columns), td.term.covariance) for td in terms]
    objective = BlockedDeviance(stats, est.reml, structures)
    result = minimize_blocked(objective, tol=est.tol, max_iter=max(est.max_iter, 1))
    _store_multi(est, result, objective, terms, codes, scales, shifts, x_mean, y_mean, fixed_names)
    objective.release()
    est._core = {
        "objective": objective,
        "theta": result.theta,
        "transforms": (scales, shifts),
        "x_mean": x_mean,
    }
    return est


def _store_multi(est, result, objective, terms, codes, scales, shifts, x_mean, y_mean, fixed_names):
    import warnings

    from ._estimator import SINGULAR_TOL
    from ._exceptions import MixedLMConvergenceWarning, SingularFitWarning
    from ._inference import information_criteria

    ev, theta = result.evaluation, result.theta
    p = len(ev.beta)
    T = np.eye(p)
    if est.fit_intercept:
        T[0, 1:] = -x_mean
    beta = T @ ev.beta
    if est.fit_intercept:
        beta[0] += y_mean
        est.intercept_, est.coef_ = float(beta[0]), beta[1:].copy()
    else:
        est.intercept_, est.coef_ = 0.0, beta.copy()
    sigma2 = float(ev.sigma2)
    est.residual_variance_ = sigma2
    b, condvar = objective.conditional_modes(theta)
    est.random_effects_, est.random_effects_condvar_, est.random_effects_cov_ = {}, {}, {}
    variances, singular = {}, []
    for k, (td, s, A) in enumerate(zip(terms, scales, shifts, strict=True)):
        cols = list(td.term.columns)
        lam_scaled = objective.structures[k].lam(theta[objective._slices[k]])
        lam = A @ (lam_scaled / s[:, None])
        cov = sigma2 * lam @ lam.T
        est.random_effects_cov_[td.name] = pd.DataFrame(cov, index=cols, columns=cols)
        est.random_effects_[td.name] = pd.DataFrame(
            (b[k] / s) @ A.T, index=td.index(), columns=cols
        )
        est.random_effects_condvar_[td.name] = A @ (condvar[k] / np.outer(s, s)) @ A.T
        if cols == ["(Intercept)"]:
            variances[td.name] = float(cov[0, 0])
        if np.min(np.diag(lam_scaled)) < SINGULAR_TOL:
            singular.append(td.name)
    est.variance_components_ = pd.Series(variances, name="variance", dtype=float)
    est.terms_ = tuple(str(td.term) for td in terms)
    est.log_likelihood_ = -0.5 * ev.deviance
    est.fixed_effects_cov_ = T @ objective.fixed_effects_cov(theta) @ T.T
    est.n_params_ = p + objective.n_theta + 1
    est.aic_, est.bic_ = information_criteria(est.log_likelihood_, est.n_params_, objective.stats.n)
    est._fixed_names = fixed_names
    est.converged_ = bool(result.converged)
    est.n_iter_ = int(result.n_iter)
    est.is_singular_ = bool(singular)
    est.fit_log_ = pd.DataFrame.from_records(
        [
            {
                "phase": "lbfgs",
                "iteration": i,
                "objective": rec["deviance"],
                "log_likelihood": -0.5 * rec["deviance"],
                "gradient_norm": rec["gradient_norm"],
            }
            for i, rec in enumerate(result.log)
        ]
    )
    est._terms = terms
    means = np.r_[[1.0] if est.fit_intercept else [], x_mean]
    cp = objective.stats.XytXy
    est._fingerprint = {
        "n": objective.stats.n,
        "y": (y_mean, cp[p, p]),
        "factors": {
            td.name: (tuple(td.index()), np.bincount(c, minlength=td.n_levels))
            for td, c in zip(terms, codes, strict=True)
        },
        "columns": {name: (means[j], cp[j, j], cp[j, p]) for j, name in enumerate(fixed_names)},
    }
    if not est.converged_:
        warnings.warn(
            f"The L-BFGS-B solver of the several-term model stopped before converging "
            f"({result.message}) after {est.n_iter_} evaluations. Try a larger max_iter or "
            "rescaling the columns of X that carry random slopes.",
            MixedLMConvergenceWarning,
            stacklevel=6,
        )
    if singular:
        warnings.warn(
            f"Boundary (singular) fit: the random-effects covariance of the term(s) {singular} "
            "is singular (a variance is zero or a correlation is +/-1). The estimates are the "
            "optimum on the boundary. Consider a simpler random-effects structure.",
            SingularFitWarning,
            stacklevel=6,
        )


def predict_multi(est, X, groups, variance_components, return_std=False, include_residual=False):
    """``X beta`` plus, per term, the BLUP of each row's level when it was seen in ``fit``.

    With ``return_std``, the standard deviation of the prediction error of each row
    (variance parameters treated as known)::

        d' Cov(beta) d + sigma2 w'Pw + sum over unseen terms z_k' Sigma_k z_k,

    with ``w`` the row's columns at its seen levels, ``P = Lambda M^{-1} Lambda'`` (the
    BLUPs' relative conditional covariance, across terms) and ``d = x - G'w``,
    ``G = P Z'X`` (how the BLUPs move with ``beta``), all in the coordinates of the
    fit (centred and rescaled columns).
    """
    from sklearn.utils.validation import validate_data

    from ._estimator import _check_groups, _match_groups

    X = validate_data(est, est._prepare_X(X), reset=False, ensure_min_features=0, dtype=np.float64)
    n = X.shape[0]
    pred = X @ est.coef_ + est.intercept_
    given = {
        "groups": label_columns(groups, "groups", n, _check_groups),
        "variance_components": label_columns(
            variance_components, "variance_components", n, _check_groups
        ),
    }
    if any(given.values()):
        for kind in given:
            given[kind] = _align(given[kind], est._terms, kind, est._label_columns[kind])
    groups_cols, vc_cols = given["groups"], given["variance_components"]
    idx_all = match_terms(est._terms, groups_cols, vc_cols, n, _match_groups)
    for td, idx in zip(est._terms, idx_all, strict=True):
        seen = idx >= 0
        if seen.any():
            b = est.random_effects_[td.name].to_numpy()[idx[seen]]
            pred[seen] += np.einsum("ij,ij->i", td.z(X[seen]), b)
    if not return_std:
        return pred
    objective, theta = est._core["objective"], est._core["theta"]
    scales, shifts = est._core["transforms"]
    zs_user = [td.z(X) for td in est._terms]
    zs = [z @ A / s for z, s, A in zip(zs_user, scales, shifts, strict=True)]
    try:
        quad, Gw = objective.prediction_variance(theta, idx_all, zs)
        cov_beta = objective.fixed_effects_cov(theta)
    finally:
        objective.release()  # the dense block is rebuilt on demand, not kept
    Xe = X - est._core["x_mean"]
    if est.fit_intercept:
        Xe = np.column_stack([np.ones(n), Xe])
    d = Xe - Gw
    var = np.einsum("ij,jk,ik->i", d, cov_beta, d)
    var += est.residual_variance_ * quad
    for td, z, idx in zip(est._terms, zs_user, idx_all, strict=True):
        unseen = idx < 0
        cov = est.random_effects_cov_[td.name].to_numpy()
        var[unseen] += np.einsum("ij,jk,ik->i", z[unseen], cov, z[unseen])
    if include_residual:
        var += est.residual_variance_
    return pred, np.sqrt(np.maximum(var, 0.0))


def _align(given, terms, kind, fitted_columns):
    """The label columns given at prediction, under the names the terms use.

    Columns are matched by name. Where no name matches (an unnamed array, a renamed
    Series), they are matched by position, in the order of ``fit``'s columns, if there
    are as many as in ``fit``. A column the model needs that cannot be matched is an
    error, and so is ``None`` for a kind of labels the model needs when the other kind
    is given: treating those labels as unseen would silently drop terms from every
    prediction. (Both ``None``: population predictions, handled by the caller.)
    """
    wanted = list(dict.fromkeys(col for td in terms for k, col in td.sources if k == kind))
    if not wanted:
        return given
    if not given:
        raise ValueError(
            f"{kind}=None, but the model's terms {[str(td.term) for td in terms]} use its "
            f"columns {wanted}: pass them as in fit (or every label argument None for "
            "population predictions)"
        )
    if set(wanted) <= set(given):
        return given
    if len(given) == len(fitted_columns) and not set(given) & set(fitted_columns):
        return dict(zip(fitted_columns, given.values(), strict=True))
    missing = [c for c in wanted if c not in given]
    raise ValueError(
        f"{kind} at prediction has the columns {list(given)} but the model was fitted with "
        f"{fitted_columns}: {missing} are missing. Pass the same columns as in fit (or "
        "every label argument None for population predictions)"
    )
