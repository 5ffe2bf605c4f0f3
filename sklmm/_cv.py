"""Cross-validated model selection from one pass over the rows: :class:`MixedLMRegressorCV`.

Every candidate structure of one grouping factor (its random slopes, covariance type,
REML or ML) is a sub-model of one union term: the intercept and every slope any
candidate has. The rows are read once, fold by fold, into the raw (uncentred) weighted
per-level cross-products of ``[Z_u 1 X y]`` (:mod:`sklmm._crossprod`): statistics
are sums over rows, so a training set's are the sum of its folds'. A candidate's
statistics on a training set follow by algebra: its columns are ``Z_c = Z_u A`` (the
selected columns, minus their training means through the intercept column, as the
in-memory fit centres them), and the centred fixed design ``[1, X - xbar, y - ybar]`` is
``[1 X y] G``, so ``Z_c'Z_c = A'(Z_u'Z_u)A``, ``Z_c'[X y]_c = A'(Z_u'[1 X y])G`` and
``[X y]_c'[X y]_c = G'([1 X y]'[1 X y])G``. The model of those statistics is built
and fitted exactly as :class:`~sklmm.MixedLMRegressor` builds and fits it
(:func:`~sklmm._model.model_from_stats`, the same criterion and optimizer), so its
estimates are those of a fit on the training rows.

The held-out score needs no pass either: the squared error of ``x'beta + z'b_g`` over
a fold's rows is a quadratic form in its per-level statistics::

    SSE = y'y - 2 beta'X'y + beta'X'X beta
          + sum_g [b_g'Z_g'Z_g b_g + 2 b_g'Z_g'X beta - 2 b_g'Z_g'y],

with ``b_g`` the training fit's BLUP of the level (0 for a level it did not see: the
population prediction, as ``predict`` gives). ``R^2 = 1 - SSE / SST`` with the fold's
own mean. These are the scores of ``GridSearchCV`` with the same folds and the
estimator's ``score`` given the groups (conditional predictions; whole-group folds get
population predictions), which is tested to 1e-8.
"""

import time
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import KFold, ParameterGrid, check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._covariance import COVARIANCE_TYPES
from ._crossprod import BlockedStats, model_stats, sum_stats
from ._estimator import MixedLMRegressor
from ._exceptions import MixedLMConvergenceWarning, SingularFitWarning, warn_user
from ._fitted import FittedModel
from ._model import model_from_stats
from ._optimize import on_boundary, optimize, resolve_solver
from ._terms import (
    check_term_sizes,
    encode_terms,
    label_sources,
    resolve_terms,
    slope_positions,
)
from ._validation import check_slope_labels, label_columns, prepare_X

#: The scores computed from the statistics (scikit-learn's names).
SCORINGS = ("r2", "neg_mean_squared_error", "neg_root_mean_squared_error")

#: The parameters a candidate may set.
CANDIDATE_PARAMS = ("random_slopes", "covariance_type", "reml")

#: With ``warm_start=True``, a warm-started candidate fit that needs more Newton
#: iterations than this is redone cold (it started far from its optimum).
WARM_MAX_ITER = 8

#: With ``warm_start=True``, only training sets with at least this many levels are fitted
#: warm: several local optima were seen here in small samples only (warm fits on random
#: designs of 6 to 99 groups ended in another optimum in 5 of 360 searches, of 100 to 199
#: groups in none of 120: ``benchmarks/check_cv_warm.py``).
WARM_MIN_LEVELS = 100


def _path_ends(opt):
    """The criterion where a cold EM-then-Newton fit's two paths from lme4's start ended
    (EM then Newton, and Newton alone: ``"first"`` and ``"restart"``, logged before any
    other starts of a fit on the boundary); ``None`` for another solver's fit (a warm
    fit's Newton alone)."""
    ends = {}
    for rec in opt.log:
        if rec["phase"] == "multistart":
            break
        path = {"em": "first", "newton": "first", "restart": "restart"}.get(rec["phase"])
        if path is None:
            return None
        ends[path] = rec["deviance"]
    return ends if set(ends) == {"first", "restart"} else None


def _same(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _paths_agree(opt):
    """Whether both paths of a cold EM-then-Newton fit ended at its optimum: no sign of a
    second optimum on its training set."""
    ends = _path_ends(opt)
    return ends is not None and all(_same(d, opt.objective) for d in ends.values())


def _two_optima(opt):
    """Whether a cold EM-then-Newton fit saw two optima: its two paths ended at different
    ones, or another start (of a fit on the boundary) found a better one."""
    ends = _path_ends(opt)
    if ends is None:
        return False
    return not _same(ends["first"], ends["restart"]) or not _same(ends["first"], opt.objective)


def _warm_root(opt, blocks):
    """Whether a cold candidate fit may start the warm fits of its structure: converged,
    interior, and both paths of the solver at its optimum."""
    return opt.converged and not on_boundary(opt.theta, blocks) and _paths_agree(opt)


def _warm_kept(opt, blocks, max_iter):
    """Whether a warm-started fit is kept (else it is redone cold): converged within
    ``max_iter`` iterations, and interior."""
    return opt.converged and opt.n_iter <= max_iter and not on_boundary(opt.theta, blocks)


class _IndexedRows:
    """Rows ``rows[a:b]`` of ``[1 X]`` (or of ``[1 X[:, columns]]``), as the cross-products
    read them (:func:`sklmm._crossprod.compute_stats`): gathered chunk by chunk."""

    def __init__(self, X, rows, columns):
        self.X, self.rows, self.columns = X, rows, columns

    def fill(self, a, b, out):
        out[:, 0] = 1.0
        idx = self.rows[a:b]
        out[:, 1:] = self.X[idx] if self.columns is None else self.X[idx[:, None], self.columns]
        return out

    def __call__(self, a, b):
        k = self.X.shape[1] if self.columns is None else len(self.columns)
        n = len(self.rows[a:b])
        return self.fill(a, b, np.empty((n, k + 1)))


def _sub_stats(raw, keep, A, G):
    """A candidate's centred statistics from the union's raw ones (module docstring)."""
    ZtZ = raw.ZtZ[0][keep]
    ZtXy = raw.ZtXy[0][keep]
    return BlockedStats(
        ZtZ=[np.ascontiguousarray(np.matmul(np.matmul(A.T, ZtZ), A))],
        cross={},
        ZtXy=[np.ascontiguousarray(np.matmul(np.matmul(A.T, ZtXy), G))],
        XytXy=G.T @ raw.XytXy @ G,
        n=raw.n,
        order=np.zeros(1, dtype=int),
        level_counts=[raw.level_counts[0][keep]],
        log_weights=raw.log_weights,
    )


class MixedLMRegressorCV(RegressorMixin, BaseEstimator):
    """Random-effects structure selected by cross-validation, from one pass over the rows.

    scikit-learn's ``RidgeCV``/``LassoCV`` tradition for :class:`MixedLMRegressor`: every
    candidate (random slopes, covariance type, REML or ML) is fitted on every training
    set and scored on its fold from per-(level, fold) statistics formed once (see the
    module docstring), then the best is refitted on all rows. The scores equal those of
    ``GridSearchCV(MixedLMRegressor(...), candidates, cv=cv)`` scoring conditional
    predictions with the groups (seen levels get their BLUPs; whole-group folds such as
    ``GroupKFold`` score population predictions).

    Parameters
    ----------
    candidates : dict or list of dict, default=None
        A parameter grid (``sklearn.model_selection.ParameterGrid``) over
        ``random_slopes``, ``covariance_type`` and ``reml``; ``None``: a random
        intercept against an intercept and slopes on every column.
    cv : int or cross-validation splitter, default=5
        The folds: an int is ``KFold(cv)``; any splitter (``GroupKFold``,
        ``KFold(shuffle=True)``...) is called with ``groups``. Each row must be in
        exactly one of a split's training and test sets.
    scoring : {"r2", "neg_mean_squared_error", "neg_root_mean_squared_error"}, default="r2"
        The score of the held-out predictions.
    fit_intercept : bool, default=True
    solver, max_iter, em_max_iter, tol
        As for :class:`MixedLMRegressor`, for every fit.
    refit : bool, default=True
        Refit the best candidate on all rows (``best_estimator_``).
    warm_start : bool, default=False
        Start most candidate fits by Newton alone from one cold fit of their random-effects
        structure (the first that converged, is interior and whose two ``"em-newton"``
        paths from lme4's start ended at its optimum), as :class:`MixedLMRegressor`'s
        ``warm_start``: the other training sets, REML and ML, and the refit of the best.
        Only training sets with at least :data:`WARM_MIN_LEVELS` levels are fitted warm;
        a warm fit that fails, needs more than :data:`WARM_MAX_ITER` iterations or ends on
        the boundary is redone cold; once a cold fit of a structure shows two optima, the
        rest of it is cold. About twice as fast on the benchmark's large data; the scores (and
        ``best_estimator_``) are then ``GridSearchCV``'s to the convergence rule where the
        likelihood has one optimum, and can differ where it has several. Needs the
        default ``solver`` (``"auto"`` or ``"em-newton"``; another is a ``ValueError``).
        ``False`` (default): every fit cold,
        ``GridSearchCV``'s scores on every design.

    Attributes
    ----------
    cv_results_ : dict of ndarray
        As ``GridSearchCV``'s: ``params``, ``param_<name>``, ``split<k>_test_score``,
        ``mean_test_score``, ``std_test_score``, ``rank_test_score``, ``mean_fit_time``.
    best_index_, best_params_, best_score_
        The best candidate (highest mean score; the first of ties).
    best_estimator_ : MixedLMRegressor
        The best candidate fitted on all rows (``refit=True``).
    n_splits_ : int
    n_features_in_, feature_names_in_

    Examples
    --------
    >>> from sklearn.model_selection import KFold
    >>> from sklmm import MixedLMRegressorCV
    >>> from sklmm.datasets import load_sleepstudy
    >>> df = load_sleepstudy()
    >>> cv = MixedLMRegressorCV(
    ...     candidates={"random_slopes": [None, ["Days"]], "reml": [True, False]},
    ...     cv=KFold(5, shuffle=True, random_state=0),
    ... ).fit(df[["Days"]], df["Reaction"], groups=df["Subject"])
    >>> cv.best_params_["random_slopes"]
    ['Days']
    """

    _parameter_constraints: dict = {
        "candidates": [None, dict, list],
        "cv": ["cv_object"],
        "scoring": [StrOptions(set(SCORINGS))],
        "fit_intercept": ["boolean"],
        "solver": [str],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "em_max_iter": [None, Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "refit": ["boolean"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        *,
        candidates=None,
        cv=5,
        scoring="r2",
        fit_intercept=True,
        solver="auto",
        max_iter=100,
        em_max_iter=None,
        tol=1e-7,
        refit=True,
        warm_start=False,
    ):
        self.candidates = candidates
        self.cv = cv
        self.scoring = scoring
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.em_max_iter = em_max_iter
        self.tol = tol
        self.refit = refit
        self.warm_start = warm_start

    def _base(self, **params):
        return MixedLMRegressor(
            fit_intercept=self.fit_intercept,
            solver=self.solver,
            max_iter=self.max_iter,
            em_max_iter=self.em_max_iter,
            tol=self.tol,
            **params,
        )

    def _grid(self, feature_names):
        if self.candidates is None:
            return list(ParameterGrid({"random_slopes": [None, list(feature_names)]}))
        grid = list(ParameterGrid(self.candidates))
        if not grid:
            raise ValueError("candidates is empty: give at least one parameter setting")
        for params in grid:
            bad = set(params) - set(CANDIDATE_PARAMS)
            if bad:
                raise ValueError(
                    f"candidates may set {list(CANDIDATE_PARAMS)}, not {sorted(bad)} (other "
                    "parameters are MixedLMRegressorCV's own, shared by every candidate)"
                )
            if params.get("covariance_type", "unstructured") not in COVARIANCE_TYPES:
                raise ValueError(
                    f"covariance_type={params['covariance_type']!r}: expected one of "
                    f"{COVARIANCE_TYPES}"
                )
        return grid

    def fit(self, X, y, groups):
        """Score every candidate on every fold and refit the best.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates.
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,)
            The grouping factor (one column), also given to the splitter.

        Returns
        -------
        self : MixedLMRegressorCV
        """
        self._validate_params()
        if self.warm_start and self.solver not in ("auto", "em-newton"):
            raise ValueError(
                f"warm_start=True needs solver='auto' or 'em-newton' (its two paths from "
                f"lme4's start tell which fits may start others), got solver={self.solver!r}"
            )
        if np.asarray(y).dtype.kind in "USO":
            try:
                y = np.asarray(y, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(
                    "y must be numbers (the response of a linear mixed model)"
                ) from None
        Xp = prepare_X(X)
        X_arr, y_arr = validate_data(
            self,
            Xp,
            y,
            y_numeric=True,
            ensure_min_samples=2,
            ensure_min_features=0,
            dtype=np.float64,
        )
        n, p = X_arr.shape
        if groups is None:
            raise ValueError("MixedLMRegressorCV needs groups (one grouping factor)")
        names_given = hasattr(self, "feature_names_in_")
        names = (
            [str(c) for c in self.feature_names_in_] if names_given else [f"x{j}" for j in range(p)]
        )
        grid = self._grid(names)
        groups_cols = label_columns(groups, "groups", n)
        if len(list(groups_cols)) != 1:
            raise ValueError("MixedLMRegressorCV takes one grouping factor (a 1-D groups)")
        vc_cols = label_columns(None, "variance_components", n)
        slopes = {}
        for params in grid:
            rs = params.get("random_slopes")
            if rs is not None:
                check_slope_labels(Xp, rs)
            slopes[id(params)] = (
                np.zeros(0, dtype=int)
                if rs is None
                else np.asarray(slope_positions(rs, getattr(self, "feature_names_in_", None), p, n))
            )
        union = np.unique(np.concatenate([np.zeros(0, dtype=int), *slopes.values()]))
        (u_term,) = resolve_terms(
            None, union, "unstructured", names, groups_cols, vc_cols, names_given
        )
        (codes,) = encode_terms([u_term], label_sources(groups_cols, vc_cols))
        m = u_term.n_levels

        # The folds: every row in exactly one of each split's sets.
        cv = check_cv(self.cv if not isinstance(self.cv, Integral) else KFold(self.cv))
        with warnings.catch_warnings():  # KFold and the like ignore the groups: fine here
            warnings.filterwarnings("ignore", message="The groups parameter is ignored")
            g_split = np.asarray(groups)
            if g_split.ndim == 2 and g_split.shape[1] == 1:  # a one-column DataFrame
                g_split = g_split[:, 0]
            splits = list(cv.split(X_arr, y_arr, g_split))
        tests = [np.asarray(te) for _, te in splits]
        for train, test in splits:
            seen = np.zeros(n, dtype=np.int8)
            seen[train] += 1
            seen[test] += 1
            if len(train) + len(test) != n or not (seen == 1).all():
                raise ValueError(
                    "MixedLMRegressorCV needs splits whose training and test sets together "
                    "are all rows, once (KFold, GroupKFold, LeaveOneGroupOut...)"
                )
        # One pass: the raw statistics of every test fold and of the rows in none.
        fold_of = np.full(n, -1)
        for k, te in enumerate(tests):
            if (fold_of[te] >= 0).any():
                raise ValueError("the splitter's test sets overlap: use a K-fold splitter")
            fold_of[te] = k
        # Every fold's rows read in chunks through its row indices (with the intercept
        # column), straight into the cross-products' work array: no copy of the data.
        # (small integers: numpy's stable sort is then a radix sort, O(n))
        small = np.int16 if len(tests) < np.iinfo(np.int16).max else np.int64
        order = np.argsort(fold_of.astype(small), kind="stable")
        edges = np.searchsorted(fold_of[order], np.arange(-1, len(tests) + 1))
        pieces = []
        for k in range(len(tests) + 1):
            lo, hi = (edges[k + 1], edges[k + 2]) if k < len(tests) else (edges[0], edges[1])
            rows = order[lo:hi]
            pieces.append(
                model_stats(
                    _IndexedRows(X_arr, rows, None),
                    y_arr[rows],
                    [codes[rows]],
                    [m],
                    [_IndexedRows(X_arr, rows, union)],
                )
                if len(rows)
                else None
            )
        fold_stats, rest = pieces[:-1], pieces[-1]

        results = {"params": grid, "fit_time": np.zeros((len(grid), len(tests)))}
        scores = np.zeros((len(grid), len(tests)))
        # The training sets' statistics, once; then every structure (random slopes and
        # covariance type) in turn, each fit cold or, with warm_start, from the structure's
        # first qualifying cold fit (see _run_structure and _fit_candidate).
        trains = []
        for k in range(len(tests)):
            parts = [s for j, s in enumerate(fold_stats) if j != k and s is not None]
            trains.append(sum_stats(*([*parts, rest] if rest is not None else parts)))
        structures = {}
        for i, params in enumerate(grid):
            key = (tuple(slopes[id(params)]), params.get("covariance_type", "unstructured"))
            structures.setdefault(key, []).append(i)
        # by position in the grid (the parameter dicts are copied into the jobs)
        slope_list = [slopes[id(params)] for params in grid]
        context = (grid, slope_list, union, u_term, (names, names_given), (groups_cols, vc_cols))
        # (Jobs over the structures, with joblib's processes, were slower on two cores at
        # 180,000 and 900,000 rows: the processes' start-up outweighs the fits.)
        jobs = [
            self._run_structure(indices, trains, fold_stats, context)
            for indices in structures.values()
        ]
        # each candidate's structure's first cold fit whose paths agree (warm_start)
        roots = {
            i: root
            for (_, root), indices in zip(jobs, structures.values(), strict=True)
            for i in indices
        }
        troubles = {"converged": [], "singular": [], "failed": []}
        errors = []
        for rows, _ in jobs:
            for i, k, score, seconds, converged, singular, error in rows:
                scores[i, k] = score
                results["fit_time"][i, k] = seconds
                if error is not None:
                    troubles["failed"].append((i, k))
                    errors.append(error)
                    continue
                if not converged:
                    troubles["converged"].append((i, k))
                if singular:
                    troubles["singular"].append((i, k))
        troubles = {kind: sorted(pairs) for kind, pairs in troubles.items()}
        if len(troubles["failed"]) == scores.size:
            raise ValueError(f"every candidate fit failed; the first error: {errors[0]}")
        self._warn(grid, troubles, errors)
        self.n_splits_ = len(tests)
        mean, std = scores.mean(axis=1), scores.std(axis=1)
        # GridSearchCV's ranking: ties share the lowest rank, a failed candidate (NaN) the
        # last; the best is the first of the best
        rank = scipy.stats.rankdata(-np.where(np.isnan(mean), -np.inf, mean), method="min").astype(
            np.int32
        )
        cv_results = {"params": grid}
        for key in sorted({k for params in grid for k in params}):
            values = np.empty(len(grid), dtype=object)  # lists stay elements (slopes)
            values[:] = [params.get(key) for params in grid]
            cv_results[f"param_{key}"] = np.ma.MaskedArray(
                values, mask=[key not in params for params in grid]
            )
        for k in range(len(tests)):
            cv_results[f"split{k}_test_score"] = scores[:, k]
        cv_results.update(
            mean_test_score=mean,
            std_test_score=std,
            rank_test_score=rank,
            mean_fit_time=results["fit_time"].mean(axis=1),
        )
        self.cv_results_ = cv_results
        self.best_index_ = int(rank.argmin())
        self.best_params_ = grid[self.best_index_]
        self.best_score_ = float(mean[self.best_index_])
        if self.refit:
            # From the statistics of all rows (the sum of the folds'): no second pass over
            # the data. A cold start, as a direct fit: the same optimum, and its checks;
            # with warm_start, from the structure's cold fit as the candidates' fits.
            every = [s for s in [*fold_stats, rest] if s is not None]
            fitted = self._fit_candidate(
                sum_stats(*every),
                self.best_params_,
                slope_list[self.best_index_],
                union,
                u_term,
                (names, names_given),
                (groups_cols, vc_cols),
                check=True,
                start=roots[self.best_index_],
            )
            best = self._base(**self.best_params_)
            best.n_features_in_ = self.n_features_in_
            if hasattr(self, "feature_names_in_"):
                best.feature_names_in_ = self.feature_names_in_
            best.n_rows_dropped_, best.rows_dropped_ = 0, pd.Index([])
            best._set_fitted(fitted)
            self.best_estimator_ = best
        return self

    def _run_structure(self, indices, trains, fold_stats, context):
        """Every fold of the candidates ``indices`` (one structure): a list of ``(i, k,
        score, seconds, converged, singular, error)``, one per fit, and the fit the others
        started from (``None`` without ``warm_start``, or where no fit qualified). Each fit
        starts cold or, with ``warm_start``, from the structure's first cold fit that
        qualifies (:func:`_warm_root`), until a cold fit shows two optima
        (:func:`_two_optima`). A fit that fails (a candidate with no fewer random effects
        than training rows, say) scores NaN with its error, as ``GridSearchCV``'s
        ``error_score=nan``."""
        grid, slopes, union, u_term, naming, labels = context
        out = []
        root = None  # the structure's first cold fit that qualifies to start the others
        warm = self.warm_start  # until a cold fit of the structure shows two optima
        checked = set()  # the training sets whose exact-fit check passed for the structure
        for i in indices:
            params = grid[i]
            for k, train in enumerate(trains):
                start = time.perf_counter()
                source = root if warm else None
                try:
                    fitted = self._fit_candidate(
                        train,
                        params,
                        slopes[i],
                        union,
                        u_term,
                        naming,
                        labels,
                        check=True,
                        start=source,
                        check_exact=k not in checked,
                    )
                except (ValueError, np.linalg.LinAlgError) as exc:
                    seconds = time.perf_counter() - start
                    out.append((i, k, np.nan, seconds, False, False, str(exc)))
                    continue
                if warm and _two_optima(fitted.opt):
                    warm, root = False, None  # the likelihood has several optima: all cold
                elif warm and root is None and _warm_root(fitted.opt, fitted.model.blocks):
                    root = fitted
                checked.add(k)
                beta, b = self._blups(fitted, train)
                seconds = time.perf_counter() - start
                score = self._score(fold_stats[k], beta, b, slopes[i], union)
                out.append(
                    (i, k, score, seconds, bool(fitted.opt.converged), bool(fitted.singular), None)
                )
        return out, root

    def _fit_candidate(
        self,
        train,
        params,
        slopes,
        union,
        u_term,
        naming,
        labels,
        check=False,
        start=None,
        check_exact=True,
    ):
        """The :class:`~sklmm._fitted.FittedModel` of a candidate on training statistics;
        ``check``: first the term-size checks of a fit on those rows (``ValueError``);
        ``start``: a fitted model of the same structure to start from (``warm_start``,
        on training sets of at least :data:`WARM_MIN_LEVELS` levels), redone cold unless
        :func:`_warm_kept`; ``check_exact``: the exact-fit check (not
        needed again for another candidate of the same structure and rows)."""
        names, names_given = naming
        cov = params.get("covariance_type", "unstructured")
        reml = params.get("reml", True)
        (term,) = resolve_terms(None, slopes, cov, names, *labels, names_given)
        term.levels, term.dtypes = u_term.levels, u_term.dtypes
        counts = train.level_counts[0]
        keep = counts > 0
        term.combos, term.keys = u_term.combos[keep], u_term.keys[keep]
        if check:  # as a fit on these rows would, before its statistics
            check_term_sizes([term], int(train.n))
        p1 = train.XytXy.shape[0] - 1  # 1 + p
        n_tot = train.ZtZ[0][:, 0, 0].sum()
        sums = train.XytXy[0]  # [n, sum x, sum y]
        means = sums[1:] / n_tot  # x means, then y's
        q_u = len(union) + 1
        cols = [0] + [1 + int(np.flatnonzero(union == s)[0]) for s in slopes]
        A = np.zeros((q_u, len(cols)))
        A[cols, np.arange(len(cols))] = 1.0
        if term.centred():  # as the in-memory fit, with or without a fixed intercept
            A[0, 1:] = -means[slopes]
        if self.fit_intercept:
            G = np.eye(p1 + 1)
            G[0, 1:] = -means  # columns 1..p and y, minus their means
            col_means, y_centre = means[:-1], means[-1]
            x_mean = col_means
        else:
            G = np.eye(p1 + 1)[:, 1:]
            col_means, y_centre = means[:-1], 0.0
            x_mean = np.zeros(p1 - 1)
        z_means = [np.r_[0.0, means[slopes]] if term.centred() else np.zeros(len(cols))]
        raw = _sub_stats(train, keep, A, G)
        labels = {"groups": [term.sources[0][1]], "variance_components": []}
        model = model_from_stats(
            raw,
            [term],
            col_means,
            (x_mean, y_centre, z_means),
            labels,
            fit_intercept=self.fit_intercept,
            reml=reml,
            feature_names=names,
            names_given=names_given,
            check_exact=check_exact,
        )
        solver, em_max_iter = resolve_solver(self.solver, self.em_max_iter, model.one_factor)
        objective = model.criterion(solver)
        settings = {
            "max_iter": self.max_iter,
            "em_max_iter": em_max_iter,
            "tol": self.tol,
            "blocks": model.blocks,
        }
        opt = None
        if start is not None and np.count_nonzero(keep) >= WARM_MIN_LEVELS:
            try:
                opt = optimize(
                    objective, solver, theta0=start.theta_for(model), warm=True, **settings
                )
            except (np.linalg.LinAlgError, ValueError, FloatingPointError):
                opt = None  # (the cold fit below tells whether the candidate fails)
            if opt is not None and not _warm_kept(opt, model.blocks, WARM_MAX_ITER):
                opt = None
        if opt is None:
            # A cold start, as GridSearchCV's fits (the default): the likelihood of a small
            # unbalanced design can have several optima, and a fit started from another
            # fold's estimates (by Newton alone, or by EM, Newton and a restart from
            # there) ended in a worse one than the cold fit on some random designs (split
            # scores 1e-3 to 5e-2 apart).
            opt = optimize(objective, solver, **settings)
        return FittedModel(
            model, objective, opt, tol=self.tol, max_iter=self.max_iter, em_max_iter=em_max_iter
        )

    @staticmethod
    def _warn(grid, troubles, errors=()):
        """One warning per kind of trouble of the candidate fits (as GridSearchCV's fits
        would each warn), naming the candidates and folds."""

        def where(pairs):
            return "; ".join(f"{grid[i]} in fold {k}" for i, k in pairs[:5]) + (
                f" (and {len(pairs) - 5} more)" if len(pairs) > 5 else ""
            )

        if troubles["converged"]:
            warn_user(
                "some candidate fits stopped before converging: "
                f"{where(troubles['converged'])}; their scores are those of the last "
                "iterate (try a larger max_iter)",
                MixedLMConvergenceWarning,
            )
        if troubles["singular"]:
            warn_user(
                "some candidate fits are on the boundary (a variance of 0 or a correlation "
                f"of +/-1): {where(troubles['singular'])}",
                SingularFitWarning,
            )
        if troubles.get("failed"):
            warn_user(
                f"some candidate fits failed and score NaN: {where(troubles['failed'])}; "
                f"the first error: {errors[0]}",
                FitFailedWarning,
            )

    @staticmethod
    def _blups(fitted, train):
        """``beta`` and the BLUPs of all levels (0 for the levels without training rows)."""
        keep = train.level_counts[0] > 0
        (term,) = fitted.model.terms
        b = np.zeros((len(keep), term.q))
        b[keep] = fitted.blup_array(term.name)
        return fitted.beta, b

    def _score(self, stats, beta, b, slopes, union):
        """The fold's score from its raw statistics (module docstring)."""
        cols = [0] + [1 + int(np.flatnonzero(union == s)[0]) for s in slopes]
        S = stats.XytXy  # [1 X y]'[1 X y]
        k = S.shape[0] - 1
        coef = beta if self.fit_intercept else np.r_[0.0, beta]
        ZtZ = stats.ZtZ[0][:, cols][:, :, cols]
        ZtX = stats.ZtXy[0][:, cols, :k]
        Zty = stats.ZtXy[0][:, cols, k]
        sse = (
            S[k, k]
            - 2 * coef @ S[:k, k]
            + coef @ S[:k, :k] @ coef
            + np.einsum("ga,gab,gb->", b, ZtZ, b)
            + 2 * np.einsum("ga,gab,b->", b, ZtX, coef)
            - 2 * np.einsum("ga,ga->", b, Zty)
        )
        n = S[0, 0]
        if n < 2 and self.scoring == "r2":  # scikit-learn's r2_score: undefined, NaN
            return np.nan
        if self.scoring == "neg_mean_squared_error":
            return -sse / n
        if self.scoring == "neg_root_mean_squared_error":
            return -np.sqrt(max(sse, 0.0) / n)
        sst = S[k, k] - S[0, k] ** 2 / n
        if sst <= 1e-12 * max(S[k, k], np.finfo(float).tiny):
            # a constant y in the fold: r2_score's force_finite (1 if predicted exactly)
            return 1.0 if sse <= 1e-12 * max(S[k, k], np.finfo(float).tiny) else 0.0
        return 1.0 - sse / sst

    # -- the best estimator ---------------------------------------------------------------
    def predict(self, X, groups=None, **kwargs):
        """:meth:`MixedLMRegressor.predict` of ``best_estimator_``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X, groups, **kwargs)

    def score(self, X, y, sample_weight=None, *, groups=None):
        """:meth:`MixedLMRegressor.score` of ``best_estimator_``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.score(X, y, sample_weight, groups=groups)
