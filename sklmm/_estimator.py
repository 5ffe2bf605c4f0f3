"""The scikit-learn estimator: a thin shell over the numpy/scipy core."""

import functools
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._covariance import COVARIANCE_TYPES, CovarianceStructure
from ._crossprod import compute_stats, rescale_random_effects
from ._exceptions import MixedLMConvergenceWarning, NoGroupsWarning, SingularFitWarning
from ._formula import Term, parse_random_effects
from ._inference import (
    MixedLMSummary,
    fixed_effects_table,
    information_criteria,
    summary_text,
    varcorr_table,
    variance_parameter_cis,
)
from ._inference import (
    likelihood_ratio_test as _lr_table,
)
from ._profile import ProfiledDeviance
from ._solvers import SOLVERS, minimize_deviance

#: A diagonal entry of Lambda below this marks a singular (boundary) fit: lme4's isSingular
#: threshold, applied here to the Lambda of the centred random-effect columns rescaled to unit
#: root mean square (so the flag does not depend on the units or offsets of the columns).
SINGULAR_TOL = 1e-4

_NO_GROUPS = (
    "fit() received groups=None, so the model has no random effects: this is "
    "ordinary least squares through the mixed-model core. Pass the group "
    "labels as fit(X, y, groups=g). Inside Pipeline, GridSearchCV or "
    "cross_validate, enable metadata routing with "
    "sklearn.set_config(enable_metadata_routing=True) and request them with "
    "est.set_fit_request(groups=True) (and set_score_request/"
    "set_predict_request for conditional predictions); without routing, "
    "cross_validate(..., groups=g) passes groups to the splitter only."
)


def _check_groups(groups, n_rows, name="groups"):
    """Group labels as a 1-D numpy array, with clear errors for bad input."""
    if isinstance(groups, pd.DataFrame):
        if groups.shape[1] != 1:
            raise ValueError(
                f"{name} must be one column of labels, got a DataFrame with "
                f"{groups.shape[1]} columns"
            )
        groups = groups.iloc[:, 0]
    values = np.asarray(groups.astype(object) if isinstance(groups, pd.Series) else groups)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {values.shape}")
    if len(values) != n_rows:
        raise ValueError(f"{name} has {len(values)} entries but X has {n_rows} rows")
    missing = pd.isna(values)
    if missing.any():
        rows = np.flatnonzero(missing)[:5].tolist()
        raise ValueError(f"{name} contains missing labels (None or NaN) at rows {rows}")
    if values.dtype.kind == "c":
        raise ValueError(f"{name} contains complex numbers; use integer or string labels")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        rows = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise ValueError(f"{name} contains infinite labels at rows {rows}")
    return values


def _is_dask_collection(obj):
    """Whether ``obj`` is a Dask collection, without importing Dask."""
    return type(obj).__module__.partition(".")[0] in ("dask", "dask_expr")


@functools.cache
def _blas_controller():
    """One threadpoolctl controller per process (it inspects the loaded libraries once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _match_groups(levels, values):
    """Positions of ``values`` among the fitted ``levels`` (-1 for unseen).

    Labels are matched as they are; when the kinds differ (numbers in fit,
    strings at predict, or the reverse), they are matched by their string
    forms, so that ``308`` and ``"308"`` name the same group.
    """
    idx = pd.Index(levels).get_indexer(values)
    numeric = [
        pd.api.types.infer_dtype(np.asarray(a), skipna=False)
        in ("integer", "floating", "mixed-integer-float", "decimal")
        for a in (levels, values)
    ]
    if numeric[0] != numeric[1] and len(values):
        as_str = pd.Index(np.asarray(levels).astype(str)).get_indexer(
            np.asarray(values).astype(str)
        )
        idx = np.where(idx >= 0, idx, as_str)
    return idx


def _factorize(values):
    try:
        return pd.factorize(values, sort=True)
    except TypeError:  # labels of mixed, unorderable types
        return pd.factorize(values, sort=False)


def _collinear_columns(XtX, names):
    """Names of columns that are constant zero or linear combinations of earlier ones."""
    d = np.sqrt(np.diag(XtX))
    zero = d <= 0
    d[zero] = 1.0
    corr = XtX / np.outer(d, d)
    dropped = []
    kept = []
    for j in range(len(names)):
        if zero[j]:
            dropped.append(names[j])
            continue
        trial = [*kept, j]
        w = np.linalg.eigvalsh(corr[np.ix_(trial, trial)])
        if w[0] <= 1e-10 * max(1.0, w[-1]):
            dropped.append(names[j])
        else:
            kept.append(j)
    return dropped


class MixedLMRegressor(RegressorMixin, BaseEstimator):
    """Linear mixed-effects model: random intercepts and slopes, nested or crossed.

    For group ``i``: ``y_i = X_i beta + Z_i b_i + e_i`` with
    ``b_i ~ N(0, Sigma)`` and ``e_i ~ N(0, sigma2 I)``. ``Z_i`` holds a
    random intercept and the columns of ``X`` named in ``random_slopes``
    (lme4: ``y ~ x1 + x2 + (1 + x1 | g)``). The variance parameters are
    estimated by REML or ML with EM iterations followed by Newton iterations
    on the criterion with ``beta`` and ``sigma2`` profiled out (Lindstrom and
    Bates, 1988).

    Several independent terms (variance components; nested or crossed
    grouping factors; lme4's ``(1 + x | subj) + (1 | item)``) are given by
    ``fit(..., variance_components=vc)`` or by ``random_effects``; they are
    fitted by a blocked Cholesky factorization and L-BFGS-B (see the
    documentation's algorithm page).

    Parameters
    ----------
    random_effects : str, default=None
        lme4-style specification of the random-effects terms, for example
        ``"(1 + Days | Subject)"``, ``"(1 | plate) + (1 | sample)"`` or
        ``"(1 | batch/cask)"``: ``|`` correlated, ``||`` independent effects,
        ``0 +`` no intercept, ``a/b`` nesting, ``a:b`` interaction. Factor
        names refer to columns of ``groups`` (a DataFrame), slope names to
        columns of ``X`` (``x0``, ``x1``, ... for arrays). ``None`` uses
        ``random_slopes`` and ``covariance_type``, the shorthand for one
        factor.
    random_slopes : list of str or int, default=None
        Columns of ``X`` whose coefficients also vary by group: column names
        when ``X`` is a DataFrame, integer positions otherwise. ``None`` fits
        a random intercept only.
    covariance_type : {"unstructured", "diagonal"}, default="unstructured"
        ``"unstructured"``: correlated random effects, lme4 ``(x | g)``.
        ``"diagonal"``: independent random effects, lme4 ``(x || g)``.
    reml : bool, default=True
        Restricted maximum likelihood if true, maximum likelihood otherwise.
    fit_intercept : bool, default=True
        Whether to fit a fixed intercept. The random intercept is always
        part of the model.
    solver : {"em-newton", "em", "newton"}, default="em-newton"
        EM iterations, then Newton iterations; EM alone; Newton alone. All
        three stop on the same convergence rule. Models with several terms
        always use L-BFGS-B.
    max_iter : int, default=100
        Maximum iterations of each Newton pass (``"em-newton"`` runs two: one
        from the EM result and one from the start, and keeps the better), or of
        EM for ``solver="em"``.
        With several terms: maximum L-BFGS-B iterations.
    em_max_iter : int, default=25
        Maximum EM iterations before Newton takes over (``"em-newton"``;
        ignored with several terms).
    tol : float, default=1e-7
        Convergence rule: every component of the projected gradient of
        ``-2 log L`` in the square-root-scale parameters is at most
        ``tol * max(1, |2 log L|)`` in absolute value, and the Hessian on the
        free parameters has no negative eigenvalue (no saddle point). With
        several terms: at most ``tol * n`` (``n`` rows), the curvature checked
        on the boundary only (see the algorithm page).
    verbose : int, default=0
        Print one line per iteration when positive (one-factor engine only).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Fixed-effect coefficients of the columns of ``X``.
    intercept_ : float
        Fixed intercept (0.0 when ``fit_intercept=False``).
    random_effects_cov_ : ndarray of shape (q, q) or dict
        Covariance ``Sigma`` of the random effects, ordered as the
        intercept, then ``random_slopes`` (lme4 ``VarCorr``). With several
        terms, a dict of DataFrames keyed by term name (the component name,
        or lme4's name of the grouping factor such as ``"batch:cask"``).
    residual_variance_ : float
        Residual variance ``sigma2`` (lme4 ``sigma(fit)^2``).
    random_effects_ : pandas.DataFrame of shape (n_groups, q) or dict
        Conditional modes (BLUPs) of the random effects, indexed by group
        label (lme4 ``ranef``). With several terms, a dict of DataFrames keyed
        by term name, each indexed by the term's levels (a MultiIndex for a
        nested term).
    random_effects_condvar_ : ndarray of shape (n_groups, q, q) or dict
        Conditional covariance of each group's random effects
        (lme4 ``ranef(condVar = TRUE)``); a dict of arrays keyed by term
        name with several terms.
    variance_components_ : pandas.Series
        With several terms: the variance of every intercept-only term, by
        term name.
    terms_ : tuple of str
        The random-effects terms in lme4's syntax, for example
        ``("(1 + Days | Subject)",)`` or ``("(1 | batch)", "(1 | batch:cask)")``.
    groups_ : ndarray
        Group labels seen in ``fit``, sorted when they can be (models fitted
        by the one-factor engine).
    log_likelihood_ : float
        The REML or ML log-likelihood at the optimum (lme4 ``logLik``).
    is_singular_ : bool
        Whether the fit lies on the boundary (a random-effect variance at
        zero, or a correlation at +/-1), by lme4's rule.
    converged_ : bool
        Whether the convergence rule held.
    n_iter_ : int
        Iterations of EM and Newton together; with several terms, evaluations of
        the criterion and its gradient.
    fit_log_ : pandas.DataFrame
        One row per iteration: phase, iteration, ``-2 log L``,
        log-likelihood, gradient norm, step size, and the variance
        parameters on the user scale at that iterate. With several terms, one
        row per evaluation (phase ``"lbfgs"``): ``-2 log L``, log-likelihood
        and gradient norm.
    fixed_effects_cov_ : ndarray of shape (p, p)
        Covariance of the fixed effects (the intercept first when
        ``fit_intercept=True``), given the variance parameters (lme4 ``vcov``).
    aic_ : float
        Akaike information criterion from ``log_likelihood_`` (lme4 ``AIC``).
    bic_ : float
        Bayesian information criterion from ``log_likelihood_`` (lme4 ``BIC``).
    n_params_ : int
        Fixed effects, variance parameters and the residual variance
        (lme4 ``attr(logLik(fit), "df")``).
    groups_name_ : str
        Name of the grouping factor (the name of ``groups`` when it is a
        Series, else ``"group"``; one-factor engine).
    random_slopes_idx_ : ndarray of int
        Column positions of ``random_slopes`` in ``X`` (one-factor engine).
    n_features_in_ : int
        Number of columns of ``X``.
    feature_names_in_ : ndarray of str
        Column names of ``X``, when it is a DataFrame with string names.

    See Also
    --------
    sklearn.linear_model.LinearRegression : The model without random effects.

    Notes
    -----
    The three parameterizations of the variance parameters (user scale
    ``Sigma, sigma2``; profile scale ``Psi = Sigma / sigma2``; square-root
    scale ``Psi = Lambda Lambda'``) are defined in the documentation's
    algorithm page (and in the docstring of ``sklmm/_profile.py``). Only
    user-scale values are exposed as attributes.

    Per-group cross-products of ``[Z X y]`` are formed once; every iteration
    afterwards costs nothing in the number of rows.

    ``fit`` does not accept ``sample_weight``; ``score`` does (for the
    weighted R^2 only).

    ``X``, ``y`` and ``groups`` may be Dask collections (the ``dask`` extra)
    for a one-factor model: the cross-products are then summed over partitions
    by Dask and the fit is the same as in memory.

    References
    ----------
    Lindstrom, M. J. and Bates, D. M. (1988). Newton-Raphson and EM
    algorithms for linear mixed-effects models for repeated-measures data.
    Journal of the American Statistical Association, 83(404), 1014-1022.

    Bates, D., Maechler, M., Bolker, B. and Walker, S. (2015). Fitting linear
    mixed-effects models using lme4. Journal of Statistical Software, 67(1).

    Examples
    --------
    >>> from sklmm import MixedLMRegressor
    >>> from sklmm.datasets import load_sleepstudy
    >>> df = load_sleepstudy()
    >>> est = MixedLMRegressor(random_slopes=["Days"])
    >>> est = est.fit(df[["Days"]], df["Reaction"], groups=df["Subject"])
    >>> print(f"{est.intercept_:.4f} {est.coef_[0]:.4f}")
    251.4051 10.4673

    Nested random intercepts, lme4's ``strength ~ 1 + (1 | batch/cask)``:

    >>> from sklmm.datasets import load_pastes
    >>> df = load_pastes()
    >>> est = MixedLMRegressor(random_effects="(1 | batch/cask)")
    >>> est = est.fit(df[[]], df["strength"], groups=df[["batch", "cask"]])
    >>> est.variance_components_.round(3).to_dict()
    {'batch': 1.657, 'batch:cask': 8.434}
    """

    _parameter_constraints: dict = {
        "random_effects": [None, str],
        "random_slopes": [None, "array-like", str, Integral],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "reml": ["boolean"],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions(set(SOLVERS))],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "em_max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        random_effects=None,
        random_slopes=None,
        covariance_type="unstructured",
        reml=True,
        fit_intercept=True,
        solver="em-newton",
        max_iter=100,
        em_max_iter=25,
        tol=1e-7,
        verbose=0,
    ):
        self.random_effects = random_effects
        self.random_slopes = random_slopes
        self.covariance_type = covariance_type
        self.reml = reml
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.em_max_iter = em_max_iter
        self.tol = tol
        self.verbose = verbose

    # -- helpers ------------------------------------------------------------
    def _feature_names(self):
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return [f"x{j}" for j in range(self.n_features_in_)]
        return [str(c) for c in names]

    def _resolve_slopes(self, n_samples):
        """Column positions of the random slopes."""
        one = getattr(self, "_one_term", None)
        if one is not None:  # a one-term specification: names of X's columns
            names = self._feature_names()
            missing = [s for s in one.slopes if s not in names]
            if missing:
                raise ValueError(
                    f"random_effects term {one} names the slope(s) {missing}, which "
                    f"are not columns of X (columns: {names})"
                )
            return np.asarray([names.index(s) for s in one.slopes], dtype=int)
        slopes = self.random_slopes
        if slopes is None:
            return np.zeros(0, dtype=int)
        if isinstance(slopes, (str, Integral)):
            slopes = [slopes]
        slopes = list(slopes)
        names = getattr(self, "feature_names_in_", None)
        out = []
        for s in slopes:
            if isinstance(s, (bool, np.bool_)):
                raise ValueError(
                    f"random_slopes entries must be column names or positions, got {s!r}"
                )
            if isinstance(s, (Integral, np.integer)):
                if not 0 <= s < self.n_features_in_:
                    raise ValueError(
                        f"random_slopes position {s} is out of range: X has "
                        f"{self.n_features_in_} feature(s) (shape=({n_samples}, "
                        f"{self.n_features_in_})) while a minimum of {s + 1} is required by "
                        f"random_slopes={self.random_slopes!r}"
                    )
                out.append(int(s))
            elif isinstance(s, str):
                if names is None:
                    raise ValueError(
                        f"random_slopes names column {s!r}, but X has no column names; "
                        "pass X as a pandas DataFrame or give integer positions"
                    )
                hits = np.flatnonzero(names == s)
                if not len(hits):
                    raise ValueError(
                        f"random_slopes names column {s!r}, which is not in X "
                        f"(columns: {list(names)})"
                    )
                out.append(int(hits[0]))
            else:
                raise ValueError(
                    f"random_slopes entries must be column names or positions, got {s!r}"
                )
        if len(set(out)) != len(out):
            raise ValueError(f"random_slopes lists a column twice: {slopes}")
        return np.asarray(out, dtype=int)

    @staticmethod
    def _prepare_X(X):
        """Reject non-numeric DataFrame columns by name; let X have zero columns.

        An intercept-only model (lme4 ``y ~ 1 + (1 | g)``) is fitted from an
        ``X`` with no columns.
        """
        if isinstance(X, pd.DataFrame) and X.shape[1] == 0:
            return np.zeros((X.shape[0], 0))
        if np.iscomplexobj(np.asarray(X)):
            raise ValueError(
                "Complex data not supported: X contains complex numbers; mixed models "
                "need real-valued columns"
            )
        if isinstance(X, np.ndarray) and X.dtype.kind in "OUS" and X.ndim == 2:
            for j in range(X.shape[1]):
                try:
                    X[:, j].astype(np.float64)
                except ValueError:
                    raise ValueError(
                        f"X has a non-numeric column at position {j} (first value "
                        f"{X[0, j]!r}); encode it first (for example with "
                        "sklearn.preprocessing.OneHotEncoder)"
                    ) from None
        if isinstance(X, pd.DataFrame):
            bad = [
                c
                for c in X.columns
                if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
            ]
            if bad:
                raise ValueError(
                    f"X has non-numeric columns {bad}; encode them first "
                    "(for example with sklearn.preprocessing.OneHotEncoder)"
                )
        return X

    # -- fit ------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None, *, variance_components=None):
        """Fit the model by REML or ML.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates (without an intercept column).
        y : array-like of shape (n_samples,)
            Response.
        groups : array-like of shape (n_samples,) or DataFrame, default=None
            Group label of each row (ints, strings or a pandas categorical).
            With ``random_effects``, a DataFrame with one column per grouping
            factor it names (a single factor may also be given as one column).
            ``None`` (and no ``variance_components``) fits a model without
            random effects and warns with :class:`~sklmm.NoGroupsWarning`.
        variance_components : array-like of shape (n_samples, n_components) \
                or DataFrame, default=None
            Labels of the variance components, one column per component
            (named by the DataFrame's columns, else ``variance_components0``,
            ...). Within each group, each distinct label of a component gets
            an independent random intercept, and all of a component's
            intercepts share one variance: lme4's ``(1 | group:component)``,
            i.e. nested effects. With ``groups=None`` a component's labels
            span all rows: lme4's ``(1 | component)``, i.e. crossed factors.
            Not combined with ``random_effects``.

        Returns
        -------
        self : MixedLMRegressor
            The fitted estimator.
        """
        # The per-iteration work is on many small matrices: BLAS threads only spin
        # against each other there (and numpy and scipy each bring their own pool).
        with _blas_controller().limit(limits=1, user_api="blas"):
            return self._fit(X, y, groups, variance_components)

    def _reset(self):
        """Forget every fitted attribute (a refit may be of another kind of model)."""
        for name in list(vars(self)):
            if name.endswith("_") and not name.startswith("__"):
                delattr(self, name)
        for name in ("_core", "_blup_gain", "_fingerprint", "_fixed_names", "_label_columns"):
            self.__dict__.pop(name, None)
        self._one_term, self._terms = None, None

    def _fit(self, X, y, groups, variance_components):
        self._reset()
        if self.random_effects is not None:
            if self.random_slopes is not None or self.covariance_type != "unstructured":
                raise ValueError(
                    "random_effects already says which slopes vary and how they covary; "
                    "leave random_slopes=None and covariance_type='unstructured'"
                )
            if variance_components is not None:
                raise ValueError(
                    "give the model either as random_effects or by variance_components, not "
                    "both: add the components to random_effects as (1 | group:component) "
                    "terms and their labels to groups"
                )
            terms = parse_random_effects(self.random_effects)
            if groups is None:
                raise ValueError(
                    f"random_effects={self.random_effects!r} names grouping factors, but "
                    "groups=None; pass groups (a DataFrame with one column per factor)"
                )
            t = terms[0]
            if len(terms) == 1 and len(t.group) == 1 and t.intercept:
                # One term with an intercept: the one-factor engine, as random_slopes would.
                self._one_term = t
                groups = self._single_groups_column(groups)
                variance_components = None
        dask = any(_is_dask_collection(a) for a in (X, y, groups, variance_components))
        if variance_components is not None or (
            self.random_effects is not None and self._one_term is None
        ):
            if dask:
                raise ValueError(
                    "Dask collections are supported for one random-effects term only; "
                    "compute them first for a model with several terms"
                )
            from ._multi import fit_multi

            return fit_multi(self, X, y, groups, variance_components)
        if dask:
            from ._dask import dask_design

            design = dask_design(self, X, y, groups)
        else:
            design = self._design(X, y, groups)
        return self._fit_design(design)

    def _covariance_kind(self):
        """The covariance structure of the one-factor model."""
        one = getattr(self, "_one_term", None)
        return one.covariance if one is not None else self.covariance_type

    def _single_groups_column(self, groups):
        """The grouping column of a one-term ``random_effects`` from ``groups``."""
        factor = self._one_term.group[0]
        if isinstance(groups, pd.DataFrame):
            if factor in groups.columns:
                return groups[factor]
            if groups.shape[1] == 1:
                return groups.iloc[:, 0]
            raise ValueError(
                f"random_effects term {self._one_term} names the grouping factor {factor!r}, "
                f"which is not a column of groups (columns: {list(groups.columns)})"
            )
        return groups

    def _centres(self, col_means, y_mean, slopes, q):
        """What the columns are centred on before the cross-products are formed.

        Centring is a reparameterization that leaves the likelihood unchanged
        (undone in ``_store``); the cross-products then carry no large offsets.
        ``X`` and ``y`` are centred when there is an intercept; the random
        slopes only for an unstructured covariance, whose family is closed
        under the shift (a diagonal one is not: lme4's ``(x || g)`` depends on it).
        """
        x_mean = col_means if self.fit_intercept else np.zeros(len(col_means))
        y_centre = y_mean if self.fit_intercept else 0.0
        centre_z = q > 1 and self._covariance_kind() == "unstructured"
        z_mean = col_means[slopes] if centre_z else np.zeros(len(slopes))
        return x_mean, y_centre, z_mean

    def _design(self, X, y, groups):
        """Validate in-memory data and reduce it to centred cross-products."""
        X = self._prepare_X(X)
        X, y = validate_data(
            self,
            X,
            y,
            y_numeric=True,
            ensure_min_samples=2,
            ensure_min_features=0,
            dtype=np.float64,
        )
        n = X.shape[0]
        slopes = self._resolve_slopes(n)
        if groups is None:
            codes, levels, n_groups, q = np.zeros(n, dtype=np.intp), None, 1, 0
        else:
            codes, levels = _factorize(_check_groups(groups, n))
            n_groups, q = len(levels), 1 + len(slopes)
        big_y = np.max(np.abs(y))
        if big_y > np.sqrt(np.finfo(np.float64).max / n):
            raise ValueError(
                f"y has values too large to square and sum in float64 (max |y| = {big_y:.3g}); "
                "rescale it"
            )
        col_means = (np.ones(n) @ X) / n  # one matrix-vector product, not a strided reduce
        x_mean, y_centre, z_mean = self._centres(col_means, float(y.mean()), slopes, q)

        def x_rows(a, b):
            Xc = X[a:b] - x_mean
            return np.column_stack([np.ones(b - a), Xc]) if self.fit_intercept else Xc

        def z_rows(a, b):
            return np.column_stack([np.ones(b - a), X[a:b, slopes] - z_mean])

        with np.errstate(over="ignore", invalid="ignore"):  # huge X: checked after
            stats = compute_stats(
                x_rows, z_rows if q else np.zeros((n, 0)), y - y_centre, codes, n_groups
            )
        return {
            "stats": stats,
            "levels": levels,
            "slopes": slopes,
            "col_means": col_means,
            "centres": (x_mean, y_centre, z_mean),
            "groups_name": str(getattr(groups, "name", None) or "group"),
        }

    def _check_fixed_effects(self, cp, n, col_means, names):
        """Errors for too few rows, constant or collinear columns and an exactly fitted y.

        ``cp`` is ``[X y]'[X y]`` of the centred design (intercept column first when
        fitted); returns the fixed-effect names.
        """
        p = cp.shape[0] - 1
        if n <= p:
            raise ValueError(
                f"X has {n} rows for {p} fixed-effect columns (intercept included); "
                "at least one more row than columns is needed"
            )
        fixed_names = (["(Intercept)"] if self.fit_intercept else []) + names
        if self.fit_intercept and p > 1:
            # A constant column is all zeros once centred, up to the rounding of its mean
            # (relative 1e-10 at worst): far below 1e-18 of its uncentred square.
            centred_ss = np.diag(cp)[1:p]
            constant = centred_ss <= 1e-18 * n * col_means**2
            if constant.any():
                raise ValueError(
                    f"the fixed-effect columns {[names[j] for j in np.flatnonzero(constant)]} "
                    "are constant or linear combinations of other columns (the intercept "
                    "included); remove them from X"
                )
        dropped = _collinear_columns(cp[:p, :p], fixed_names)
        if dropped:
            raise ValueError(
                f"the fixed-effect columns {dropped} are constant or linear combinations of "
                "other columns (the intercept included); remove them from X"
            )
        ols_r2 = cp[p, p] - cp[p, :p] @ np.linalg.solve(cp[:p, :p], cp[:p, p])
        if ols_r2 <= 1e-12 * max(cp[p, p], np.finfo(float).tiny):
            raise ValueError(
                "y is fitted exactly by the fixed effects (for example a constant y): "
                "there is no residual variance to estimate"
            )
        return fixed_names

    def _fit_design(self, design):
        """Checks on the cross-products, the solver, and the fitted attributes."""
        stats, levels, slopes = design["stats"], design["levels"], design["slopes"]
        x_mean, y_mean, z_mean = design["centres"]
        names = self._feature_names()
        n, p, q = stats.n, stats.p, stats.q
        one = getattr(self, "_one_term", None)
        self.groups_name_ = one.group[0] if one is not None else design["groups_name"]
        if levels is None:
            warnings.warn(_NO_GROUPS, NoGroupsWarning, stacklevel=5)
            levels = np.zeros(0, dtype=object)
        else:
            n_groups = len(levels)
            if n_groups < 2:
                raise ValueError(
                    f"groups has a single level ({levels[0]!r}); a random-effect variance "
                    "needs at least two groups. Pass groups=None to fit without random effects."
                )
            if n <= n_groups * q:
                # lme4's check.nobs.vs.nRE: with no more rows than random effects, they would
                # absorb the residual variance.
                raise ValueError(
                    f"{n} rows for {n_groups} groups x {q} random effects per group: the "
                    "number of rows must exceed the number of random effects, or the residual "
                    "and random-effect variances cannot be told apart (for example, every "
                    "group has a single row). Use fewer random slopes or coarser groups."
                )
        if not (np.isfinite(stats.XytXy).all() and np.isfinite(stats.ZtXy).all()):
            raise ValueError(
                "X has values too large to square and sum in float64; rescale its columns"
            )
        fixed_names = self._check_fixed_effects(stats.XytXy, n, design["col_means"], names)
        cp = stats.XytXy
        if q > 1:
            counts, sums = stats.ZtZ[:, 0, 0], stats.ZtZ[:, 0, 1:]
            squares = np.diagonal(stats.ZtZ, axis1=1, axis2=2)[:, 1:]
            within = counts[:, None] * squares - sums**2
            constant = np.all(within <= 1e-10 * counts[:, None] * squares + 1e-300, axis=0)
            if constant.any():
                bad = [names[j] for j in slopes[constant]]
                raise ValueError(
                    f"random_slopes column(s) {bad} are constant within every group, so their "
                    "random slopes cannot be told apart from the random intercept; keep them "
                    "as fixed effects only"
                )
        T = np.eye(p)  # beta = T beta_centred (+ y_mean on the intercept)
        if self.fit_intercept:
            T[0, 1:] = -x_mean
        A = np.eye(q)  # b = A b_centred
        if q:
            A[0, 1:] = -z_mean
        centring = {"T": T, "A": A, "y_mean": y_mean}
        # What likelihood_ratio_test checks to tell that two fits saw the same data.
        means = np.r_[[1.0] if self.fit_intercept else [], x_mean]
        self._fingerprint = {
            "n": n,
            "y": (y_mean, cp[p, p]),
            "factors": {}
            if levels is None
            else {self.groups_name_: (tuple(levels), np.asarray(stats.counts))},
            "columns": {name: (means[j], cp[j, j], cp[j, p]) for j, name in enumerate(fixed_names)},
        }
        # Optimise with Z's columns at unit root mean square; map back in _store.
        stats, z_scale = rescale_random_effects(stats)
        cov = CovarianceStructure(q, self._covariance_kind())
        objective = ProfiledDeviance(stats, cov, self.reml)
        result = minimize_deviance(
            objective,
            self.solver,
            max_iter=self.max_iter,
            em_max_iter=self.em_max_iter,
            tol=self.tol,
            verbose=self.verbose,
        )
        self._store(result, objective, cov, z_scale, centring, levels, slopes, names)
        objective._cache = None  # keep the fitted estimator (and its pickle) small
        self._core = {
            "objective": objective,
            "theta": result.theta,
            "z_scale": z_scale,
            "A": centring["A"],
        }
        return self

    def _store(self, result, objective, cov, z_scale, centring, levels, slopes, names):
        ev = result.evaluation
        T, A = centring["T"], centring["A"]
        beta, sigma2 = T @ ev.beta, ev.sigma2
        if self.fit_intercept:
            beta[0] += centring["y_mean"]
        if self.fit_intercept:
            self.intercept_, self.coef_ = float(beta[0]), beta[1:].copy()
        else:
            self.intercept_, self.coef_ = 0.0, beta.copy()
        self.residual_variance_ = float(sigma2)
        lam_scaled = cov.lam(result.theta)
        lam = A @ (lam_scaled / z_scale[:, None])  # a square root of Sigma / sigma2
        self.random_effects_cov_ = sigma2 * lam @ lam.T
        self.log_likelihood_ = -0.5 * ev.deviance
        self.fixed_effects_cov_ = T @ objective.fixed_effects_cov(result.theta) @ T.T
        self.n_params_ = len(beta) + cov.n_theta + 1
        self.aic_, self.bic_ = information_criteria(
            self.log_likelihood_, self.n_params_, objective.stats.n
        )
        self._fixed_names = (["(Intercept)"] if self.fit_intercept else []) + list(names)
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.groups_ = np.asarray(levels)
        self.random_slopes_idx_ = slopes
        re_names = ["(Intercept)"] + [names[j] for j in slopes] if cov.q else []
        self.terms_ = (
            (str(Term((self.groups_name_,), True, re_names[1:], cov.kind)),) if cov.q else ()
        )
        if cov.q:
            b, condvar = objective.conditional_modes(result.theta)
            b = (b / z_scale) @ A.T
            condvar = A @ (condvar / np.outer(z_scale, z_scale)) @ A.T
            gain = objective.blup_gain(result.theta) / z_scale[None, :, None]
            self._blup_gain = A @ gain @ np.linalg.inv(T)  # T is unit triangular
        else:
            b, condvar = np.zeros((0, 0)), np.zeros((0, 0, 0))
        self.random_effects_ = pd.DataFrame(
            b, index=pd.Index(self.groups_, name=self.groups_name_), columns=re_names
        )
        self.random_effects_condvar_ = condvar
        self.is_singular_ = bool(cov.q and (np.min(np.diag(lam_scaled)) < SINGULAR_TOL))
        self.fit_log_ = self._fit_log(result.log, cov, z_scale, A, re_names)
        if not self.converged_:
            warnings.warn(
                f"The {self.solver} solver stopped before converging ({result.message}) after "
                f"{self.n_iter_} iterations. Try a larger max_iter, solver='em-newton', or "
                "rescaling the columns of X that carry random slopes.",
                MixedLMConvergenceWarning,
                stacklevel=5,
            )
        if self.is_singular_:
            sd = dict(
                zip(
                    re_names,
                    np.sqrt(np.diag(self.random_effects_cov_)).round(6).tolist(),
                    strict=True,
                )
            )
            warnings.warn(
                "Boundary (singular) fit: the random-effects covariance is singular "
                f"(standard deviations {sd}); a variance "
                "is zero or a correlation is +/-1. The estimates are the optimum on the "
                "boundary. Consider a simpler random-effects structure (fewer random "
                "slopes, or covariance_type='diagonal').",
                SingularFitWarning,
                stacklevel=5,
            )

    def _fit_log(self, log, cov, z_scale, A, re_names):
        rows, cols = np.tril_indices(cov.q)
        labels = [
            f"Var[{re_names[i]}]" if i == j else f"Cov[{re_names[j]},{re_names[i]}]"
            for i, j in zip(rows, cols, strict=True)
        ]
        records = []
        for rec in log:
            lam = A @ (cov.lam(rec["theta"]) / z_scale[:, None])
            sigma = rec["sigma2"] * lam @ lam.T
            row = {
                "phase": rec["phase"],
                "iteration": rec["iteration"],
                "objective": rec["deviance"],
                "log_likelihood": -0.5 * rec["deviance"],
                "gradient_norm": rec["gradient_norm"],
                "step_size": rec["step_size"],
                "residual_variance": rec["sigma2"],
            }
            row.update(zip(labels, sigma[rows, cols], strict=True))
            records.append(row)
        return pd.DataFrame.from_records(records)

    # -- predict ------------------------------------------------------------
    def predict(
        self, X, groups=None, return_std=False, include_residual=False, *, variance_components=None
    ):
        """Predict with the random effects of the groups seen in ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates.
        groups : array-like of shape (n_samples,) or DataFrame, default=None
            Group labels, as in ``fit``. Rows of groups seen in ``fit`` get
            ``X beta + Z b_hat``; rows of unseen groups, or every row when
            ``groups=None``, get the population prediction ``X beta``
            (lme4 ``predict(..., allow.new.levels = TRUE)``). With several
            terms, each term adds its BLUP for the rows whose level of that
            term was seen in ``fit`` and nothing for the others.
        variance_components : array-like or DataFrame, default=None
            Labels of the variance components, as in ``fit`` (ignored by a
            model fitted without them). ``None`` is allowed only together with
            ``groups=None`` (population predictions): leaving the components out
            while giving ``groups`` raises ``ValueError``.
        return_std : bool, default=False
            Also return the standard deviation of each prediction (the
            ``BayesianRidge`` convention). With several terms, the conditional
            covariance of the BLUPs across terms is included, and each unseen
            term adds ``z' Sigma_k z``. Seen groups: the prediction error of
            ``x'beta + z'b`` given the group's data,
            ``(x - G'z)' Cov(beta) (x - G'z) + z' Var(b | y, beta) z`` with
            ``G = P Z'X`` (the dependence of the BLUP on ``beta``). Unseen groups:
            ``x' Cov(beta) x + z' Sigma z`` (a new group's effect is unknown).
            The variance parameters are treated as known.
        include_residual : bool, default=False
            With ``return_std``, add the residual variance: the standard
            deviation of a new observation rather than of its mean.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predictions.
        y_std : ndarray of shape (n_samples,)
            Standard deviations, when ``return_std=True``.

        Notes
        -----
        When ``X`` is a Dask collection, the results are lazy Dask collections
        (a Series for a DataFrame, an Array otherwise), computed per partition.
        """
        check_is_fitted(self)
        if getattr(self, "_terms", None) is not None:
            from ._multi import predict_multi

            return predict_multi(self, X, groups, variance_components, return_std, include_residual)
        if getattr(self, "_one_term", None) is not None and groups is not None:
            groups = self._single_groups_column(groups)
        if _is_dask_collection(X) or _is_dask_collection(groups):
            from ._dask import predict_dask

            return predict_dask(
                self, X, groups, return_std=return_std, include_residual=include_residual
            )
        X = validate_data(
            self, self._prepare_X(X), reset=False, ensure_min_features=0, dtype=np.float64
        )
        pred = X @ self.coef_ + self.intercept_
        n, q = X.shape[0], self.random_effects_.shape[1]
        idx = np.full(n, -1)
        if groups is not None:
            values = _check_groups(groups, n)
            if q:
                idx = _match_groups(self.groups_, values)
        seen = idx >= 0
        Z = np.column_stack([np.ones(n), X[:, self.random_slopes_idx_]]) if q else None
        if seen.any():
            b = self.random_effects_.to_numpy()[idx[seen]]
            pred[seen] += np.einsum("ij,ij->i", Z[seen], b)
        if not return_std:
            return pred
        Xf = np.column_stack([np.ones(n), X]) if self.fit_intercept else X
        var = np.einsum("ij,jk,ik->i", Xf, self.fixed_effects_cov_, Xf)
        if q:
            unseen = ~seen
            var[unseen] += np.einsum("ij,jk,ik->i", Z[unseen], self.random_effects_cov_, Z[unseen])
            if seen.any():
                G = self._blup_gain[idx[seen]]  # (m, q, p)
                d = Xf[seen] - np.einsum("mqp,mq->mp", G, Z[seen])
                var[seen] = np.einsum("ij,jk,ik->i", d, self.fixed_effects_cov_, d)
                cv = self.random_effects_condvar_[idx[seen]]
                var[seen] += np.einsum("mi,mij,mj->m", Z[seen], cv, Z[seen])
        if include_residual:
            var += self.residual_variance_
        return pred, np.sqrt(np.maximum(var, 0.0))

    def score(self, X, y, groups=None, sample_weight=None, *, variance_components=None):
        """R^2 of :meth:`predict` with ``groups`` (and ``variance_components``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates.
        y : array-like of shape (n_samples,)
            True response.
        groups : array-like of shape (n_samples,) or DataFrame, default=None
            Group labels, as in :meth:`predict`.
        variance_components : array-like or DataFrame, default=None
            Labels of the variance components, as in :meth:`predict`.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the R^2.

        Returns
        -------
        float
            Coefficient of determination.
        """
        if variance_components is None:  # (subclasses may predict without the argument)
            pred = self.predict(X, groups=groups)
        else:
            pred = self.predict(X, groups=groups, variance_components=variance_components)
        return r2_score(y, pred, sample_weight=sample_weight)

    def _variance_parameter_cis(self, alpha):
        """Wald intervals for sd's, correlations and sigma (see ``variance_parameter_cis``)."""
        core = self._core
        objective, z_scale = core["objective"], core["z_scale"]
        A_inv = np.linalg.inv(core["A"])  # unit triangular
        cov = objective.cov
        unstructured = cov.kind == "unstructured"
        n_par = cov.q + (cov.q * (cov.q - 1) // 2 if unstructured else 0) + 1
        if cov.q == 0 or self.is_singular_:
            return np.full((n_par, 2), np.nan)

        def deviance(sigmas, s2):
            psi = A_inv @ sigmas[0] @ A_inv.T * np.outer(z_scale, z_scale) / s2
            theta = _theta_from_psi(psi, cov)
            return np.inf if theta is None else objective.unprofiled_deviance(theta, s2)

        terms = [(self.random_effects_cov_, unstructured)]
        out = variance_parameter_cis(terms, self.residual_variance_, deviance, alpha)
        objective._cache = None
        return out

    def summary(self, X=None, y=None, groups=None, alpha=0.05, *, variance_components=None):
        """lme4-shaped summary with tables of fixed effects and variance parameters.

        Parameters
        ----------
        X, y, groups, variance_components : array-like, default=None
            The training data; when given, the scaled conditional residuals are
            summarised too (lme4's "Scaled residuals").
        alpha : float, default=0.05
            One minus the confidence level of the intervals.

        Returns
        -------
        MixedLMSummary
            ``str()`` gives the text of lme4's ``summary(lmer(...))``; in a
            notebook it renders as HTML. Its ``fixed_effects`` table has Wald
            z statistics, p-values and intervals; its ``random_effects`` table is
            lme4's ``as.data.frame(VarCorr(fit))`` with Wald intervals of
            ``sdcor`` on the log-sd / atanh-correlation scale (not available,
            NaN, for a singular fit).
        """
        check_is_fitted(self)
        beta = np.r_[self.intercept_, self.coef_] if self.fit_intercept else self.coef_
        fixed = fixed_effects_table(self._fixed_names, beta, self.fixed_effects_cov_, alpha)
        resid = None
        if X is not None and y is not None:
            pred = self.predict(X, groups=groups, variance_components=variance_components)
            resid = (np.asarray(y, dtype=float) - pred) / np.sqrt(self.residual_variance_)
        if getattr(self, "_terms", None) is not None:
            vc, random_terms = self._random_effects_table_multi(alpha)
        else:
            re_names = list(self.random_effects_.columns)
            unstructured = self._covariance_kind() == "unstructured"
            vc = varcorr_table(
                self.groups_name_,
                re_names,
                self.random_effects_cov_,
                self.residual_variance_,
                covariances=unstructured,
            )
            cis = self._variance_parameter_cis(alpha)
            vc[f"ci_{alpha / 2:g}"], vc[f"ci_{1 - alpha / 2:g}"] = cis[:, 0], cis[:, 1]
            random_terms = (
                [(self.groups_name_, re_names, self.random_effects_cov_, len(self.groups_))]
                if re_names
                else []
            )
        text = summary_text(
            reml=self.reml,
            log_likelihood=self.log_likelihood_,
            aic=self.aic_,
            bic=self.bic_,
            df=self.n_params_,
            n_obs=self._core["objective"].stats.n,
            random_terms=random_terms,
            sigma2=self.residual_variance_,
            fixed=fixed,
            fixed_cov=self.fixed_effects_cov_,
            scaled_residuals=resid,
            singular=self.is_singular_,
            converged=self.converged_,
            message="see fit_log_",
        )
        return MixedLMSummary(text, fixed, vc)

    def _variance_parameter_cis_multi(self, alpha, n_par):
        """Wald intervals of every term's sd's and correlations and of sigma."""
        if self.is_singular_:
            return np.full((n_par, 2), np.nan)
        objective, theta_hat = self._core["objective"], self._core["theta"]
        scales, shifts = self._core["transforms"]
        structures = objective.structures

        def deviance(sigmas, s2):
            theta = np.empty_like(theta_hat)
            for k, (sigma, s, A) in enumerate(zip(sigmas, scales, shifts, strict=True)):
                A_inv = np.linalg.inv(A)
                psi = A_inv @ sigma @ A_inv.T * np.outer(s, s) / s2
                t = _theta_from_psi(psi, structures[k])
                if t is None:
                    return np.inf
                theta[objective._slices[k]] = t
            return objective.unprofiled_deviance(theta, s2)

        terms = [
            (self.random_effects_cov_[td.name].to_numpy(), td.term.covariance == "unstructured")
            for td in self._terms
        ]
        try:
            with _blas_controller().limit(limits=objective.blas_threads(), user_api="blas"):
                return variance_parameter_cis(terms, self.residual_variance_, deviance, alpha)
        finally:
            objective.release()

    def _random_effects_table_multi(self, alpha):
        """The variance table (with intervals) and the terms of a several-term summary."""
        tables, random_terms = [], []
        for td in self._terms:
            cov = self.random_effects_cov_[td.name]
            names = list(cov.columns)
            table = varcorr_table(
                td.name,
                names,
                cov.to_numpy(),
                self.residual_variance_,
                covariances=td.term.covariance == "unstructured",
            )
            tables.append(table.iloc[:-1])
            random_terms.append((td.name, names, cov.to_numpy(), td.n_levels))
        tables.append(table.iloc[-1:])
        vc = pd.concat(tables, ignore_index=True)
        cis = self._variance_parameter_cis_multi(alpha, len(vc))
        vc[f"ci_{alpha / 2:g}"], vc[f"ci_{1 - alpha / 2:g}"] = cis[:, 0], cis[:, 1]
        return vc, random_terms

    def __sklearn_is_fitted__(self):
        """Fitted once a fit completed (a fit that fails validation leaves it unfitted)."""
        return hasattr(self, "coef_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def _theta_from_psi(psi, cov):
    """``theta`` of a relative covariance ``psi`` for a structure, None if not PD."""
    try:
        lam = (
            np.linalg.cholesky(psi)
            if cov.kind == "unstructured"
            else np.diag(np.sqrt(np.diag(psi)))
        )
    except np.linalg.LinAlgError:
        return None
    return lam[cov.rows, cov.cols]


def _ml_log_likelihood(est):
    """The ML log-likelihood of a fit, refitting by ML from its cross-products if REML."""
    if not est.reml:
        return est.log_likelihood_
    objective = est._core["objective"]
    if getattr(est, "_terms", None) is not None:
        from ._blocked import BlockedDeviance, minimize_blocked

        ml = BlockedDeviance(objective.stats, False, objective.structures)
        result = minimize_blocked(ml, tol=est.tol, max_iter=max(est.max_iter, 1))
    else:
        ml = ProfiledDeviance(objective.stats, objective.cov, reml=False)
        result = minimize_deviance(
            ml, est.solver, max_iter=est.max_iter, em_max_iter=est.em_max_iter, tol=est.tol
        )
    return -0.5 * result.evaluation.deviance


def _random_structure(est):
    """``{(factor, column)}`` of the random effects; factors with diagonal / correlated terms."""
    terms = getattr(est, "_terms", None)
    if terms is None:
        cols = list(est.random_effects_.columns)
        diagonal = {est.groups_name_} if est._covariance_kind() == "diagonal" else set()
        correlated = {est.groups_name_} if len(cols) > 1 and not diagonal else set()
        return {(est.groups_name_, c) for c in cols}, diagonal, correlated
    pairs, diagonal, correlated = set(), set(), set()
    for td in terms:
        key = td.term.name
        pairs |= {(key, c) for c in td.term.columns}
        if len(td.term.columns) > 1:
            (diagonal if td.term.covariance == "diagonal" else correlated).add(key)
    return pairs, diagonal, correlated


def likelihood_ratio_test(model_a, model_b):
    """Likelihood-ratio test between two nested fits (lme4's ``anova(m1, m2)``).

    REML fits are refitted by ML first (from their stored cross-products, no data
    needed), as lme4 does: REML likelihoods of models with different fixed effects
    are not comparable.

    Parameters
    ----------
    model_a, model_b : MixedLMRegressor
        Fitted on the same rows, the same response and the same groups; one nested
        in the other (its fixed-effect columns and random effects a subset of the
        other's, a random-effects term being identified by its grouping factor's
        name). Their order does not matter. Either may have several terms, for
        example ``(1 | Subject)`` against ``(1 | Subject) + (1 | Item)``.

    Returns
    -------
    pandas.DataFrame
        Rows ``small`` and ``large`` with npar, AIC, BIC, logLik, deviance (all ML),
        and for ``large`` the chi-squared statistic, its degrees of freedom and
        p-value.

    Raises
    ------
    ValueError
        When the models were fitted on different data or are not nested.
    """
    for m in (model_a, model_b):
        check_is_fitted(m)
    fa, fb = model_a._fingerprint, model_b._fingerprint
    shared = set(fa["factors"]) & set(fb["factors"])
    same = (
        fa["n"] == fb["n"]
        and np.allclose(fa["y"], fb["y"], rtol=1e-9, atol=0)
        and all(
            fa["factors"][k][0] == fb["factors"][k][0]
            and np.array_equal(fa["factors"][k][1], fb["factors"][k][1])
            for k in shared
        )
    )
    if not same:
        raise ValueError(
            "the two models were not fitted on the same data (rows, response and groups "
            "must be identical for a likelihood-ratio test)"
        )
    small, large = sorted((model_a, model_b), key=lambda m: m.n_params_)
    small_cols, large_cols = small._fingerprint["columns"], large._fingerprint["columns"]
    fixed_nested = all(
        name in large_cols and np.allclose(value, large_cols[name], rtol=1e-9, atol=1e-12)
        for name, value in small_cols.items()
    )
    small_re, _, small_corr = _random_structure(small)
    large_re, large_diag, _ = _random_structure(large)
    re_nested = small_re <= large_re
    # A correlated term is not nested in the same term with a diagonal covariance.
    cov_nested = not (small_corr & large_diag)
    if small.n_params_ == large.n_params_ or not (fixed_nested and re_nested and cov_nested):
        raise ValueError(
            "the models are not nested: one model's fixed-effect columns (the same columns, "
            "not only the same names) and random effects must be a subset of the other's, "
            "with fewer parameters"
        )
    info = [
        {"log_likelihood": _ml_log_likelihood(m), "df": m.n_params_, "n": fa["n"]}
        for m in (small, large)
    ]
    if info[0]["log_likelihood"] > info[1]["log_likelihood"] + 1e-6:
        raise ValueError(
            "the smaller model has the higher ML log-likelihood, so the models are not nested"
        )
    return _lr_table(*info)
