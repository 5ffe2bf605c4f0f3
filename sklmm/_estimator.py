"""The scikit-learn estimator: a thin shell over the numpy/scipy core."""

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
from ._profile import ProfiledDeviance
from ._solvers import SOLVERS, minimize_deviance

#: A diagonal entry of Lambda below this marks a singular (boundary) fit, as lme4's isSingular;
#: Lambda here is that of the random-effect columns rescaled to unit root mean square.
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
    """Linear mixed-effects model with one grouping factor.

    For group ``i``: ``y_i = X_i beta + Z_i b_i + e_i`` with
    ``b_i ~ N(0, Sigma)`` and ``e_i ~ N(0, sigma2 I)``. ``Z_i`` holds a
    random intercept and the columns of ``X`` named in ``random_slopes``
    (lme4: ``y ~ x1 + x2 + (1 + x1 | g)``). The variance parameters are
    estimated by REML or ML with EM iterations followed by Newton iterations
    on the criterion with ``beta`` and ``sigma2`` profiled out (Lindstrom and
    Bates, 1988).

    Parameters
    ----------
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
        three stop on the same convergence rule.
    max_iter : int, default=100
        Maximum iterations of the final phase (Newton, or EM for
        ``solver="em"``).
    em_max_iter : int, default=25
        Maximum EM iterations before Newton takes over (``"em-newton"``).
    tol : float, default=1e-7
        Convergence rule: every component of the projected gradient of
        ``-2 log L`` in the square-root-scale parameters is at most
        ``tol * max(1, |2 log L|)`` in absolute value.
    verbose : int, default=0
        Print one line per iteration when positive.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Fixed-effect coefficients of the columns of ``X``.
    intercept_ : float
        Fixed intercept (0.0 when ``fit_intercept=False``).
    random_effects_cov_ : ndarray of shape (q, q)
        Covariance ``Sigma`` of the random effects, ordered as the
        intercept, then ``random_slopes`` (lme4 ``VarCorr``).
    residual_variance_ : float
        Residual variance ``sigma2`` (lme4 ``sigma(fit)^2``).
    random_effects_ : pandas.DataFrame of shape (n_groups, q)
        Conditional modes (BLUPs) of the random effects, indexed by group
        label (lme4 ``ranef``).
    random_effects_condvar_ : ndarray of shape (n_groups, q, q)
        Conditional covariance of each group's random effects
        (lme4 ``ranef(condVar = TRUE)``).
    groups_ : ndarray
        Group labels seen in ``fit``, sorted when they can be.
    log_likelihood_ : float
        The REML or ML log-likelihood at the optimum (lme4 ``logLik``).
    is_singular_ : bool
        Whether the fit lies on the boundary (a random-effect variance at
        zero, or a correlation at +/-1), by lme4's rule.
    converged_ : bool
        Whether the convergence rule held.
    n_iter_ : int
        Iterations of EM and Newton together.
    fit_log_ : pandas.DataFrame
        One row per iteration: phase, iteration, ``-2 log L``,
        log-likelihood, gradient norm, step size, and the variance
        parameters on the user scale at that iterate.
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
    scale ``Psi = Lambda Lambda'``) are defined in :mod:`sklmm._profile`.
    Only user-scale values are exposed as attributes.

    Per-group cross-products of ``[Z X y]`` are formed once; every iteration
    afterwards costs nothing in the number of rows.

    ``fit`` does not accept ``sample_weight``; ``score`` does (for the
    weighted R^2 only).

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
    """

    _parameter_constraints: dict = {
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
    def fit(self, X, y, groups=None):
        """Fit the model by REML or ML.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates (without an intercept column).
        y : array-like of shape (n_samples,)
            Response.
        groups : array-like of shape (n_samples,), default=None
            Group label of each row (ints, strings or a pandas categorical).
            ``None`` fits a model without random effects and warns with
            :class:`~sklmm.NoGroupsWarning`.

        Returns
        -------
        self : MixedLMRegressor
            The fitted estimator.
        """
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
        slopes = self._resolve_slopes(X.shape[0])
        names = self._feature_names()
        if groups is None:
            warnings.warn(_NO_GROUPS, NoGroupsWarning, stacklevel=3)
            codes, levels = np.zeros(n, dtype=np.intp), np.zeros(0, dtype=object)
            n_groups, q = 1, 0
        else:
            values = _check_groups(groups, n)
            codes, levels = _factorize(values)
            n_groups, q = len(levels), 1 + len(slopes)
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
        p = X.shape[1] + self.fit_intercept
        if n <= p:
            raise ValueError(
                f"X has {n} rows for {p} fixed-effect columns (intercept included); "
                "at least one more row than columns is needed"
            )

        def x_rows(a, b):
            return np.column_stack([np.ones(b - a), X[a:b]]) if self.fit_intercept else X[a:b]

        def z_rows(a, b):
            return np.column_stack([np.ones(b - a), X[a:b, slopes]])

        stats = compute_stats(x_rows, z_rows if q else np.zeros((n, 0)), y, codes, n_groups)
        fixed_names = (["(Intercept)"] if self.fit_intercept else []) + names
        dropped = _collinear_columns(stats.XytXy[:p, :p], fixed_names)
        if dropped:
            raise ValueError(
                f"the fixed-effect columns {dropped} are constant or linear combinations of "
                "other columns (the intercept included); remove them from X"
            )
        yy = stats.XytXy
        ols_r2 = yy[p, p] - yy[p, :p] @ np.linalg.solve(yy[:p, :p], yy[:p, p])
        if ols_r2 <= 1e-12 * max(yy[p, p], np.finfo(float).tiny):
            raise ValueError(
                "y is fitted exactly by the fixed effects (for example a constant y): "
                "there is no residual variance to estimate"
            )

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
        # Optimise with Z's columns at unit root mean square; map back in _store.
        stats, z_scale = rescale_random_effects(stats)
        cov = CovarianceStructure(q, self.covariance_type)
        objective = ProfiledDeviance(stats, cov, self.reml)
        result = minimize_deviance(
            objective,
            self.solver,
            max_iter=self.max_iter,
            em_max_iter=self.em_max_iter,
            tol=self.tol,
            verbose=self.verbose,
        )
        self._store(result, objective, cov, z_scale, levels, slopes, names)
        return self

    def _store(self, result, objective, cov, z_scale, levels, slopes, names):
        ev = result.evaluation
        beta, sigma2 = ev.beta, ev.sigma2
        if self.fit_intercept:
            self.intercept_, self.coef_ = float(beta[0]), beta[1:].copy()
        else:
            self.intercept_, self.coef_ = 0.0, beta.copy()
        self.residual_variance_ = float(sigma2)
        lam_scaled = cov.lam(result.theta)
        lam = lam_scaled / z_scale[:, None]  # Lambda for the unscaled Z
        self.random_effects_cov_ = sigma2 * lam @ lam.T
        self.log_likelihood_ = -0.5 * ev.deviance
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.groups_ = np.asarray(levels)
        self.random_slopes_idx_ = slopes
        re_names = ["(Intercept)"] + [names[j] for j in slopes] if cov.q else []
        if cov.q:
            b, condvar = objective.conditional_modes(result.theta)
            b = b / z_scale
            condvar = condvar / np.outer(z_scale, z_scale)
        else:
            b, condvar = np.zeros((0, 0)), np.zeros((0, 0, 0))
        self.random_effects_ = pd.DataFrame(
            b, index=pd.Index(self.groups_, name="group"), columns=re_names
        )
        self.random_effects_condvar_ = condvar
        self.is_singular_ = bool(cov.q and (np.min(np.diag(lam_scaled)) < SINGULAR_TOL))
        self.fit_log_ = self._fit_log(result.log, cov, z_scale, re_names)
        if not self.converged_:
            warnings.warn(
                f"The {self.solver} solver stopped before converging ({result.message}) after "
                f"{self.n_iter_} iterations. Try a larger max_iter, solver='em-newton', or "
                "rescaling the columns of X that carry random slopes.",
                MixedLMConvergenceWarning,
                stacklevel=4,
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
                stacklevel=4,
            )

    def _fit_log(self, log, cov, z_scale, re_names):
        rows, cols = np.tril_indices(cov.q)
        labels = [
            f"Var[{re_names[i]}]" if i == j else f"Cov[{re_names[j]},{re_names[i]}]"
            for i, j in zip(rows, cols, strict=True)
        ]
        records = []
        for rec in log:
            lam = cov.lam(rec["theta"]) / z_scale[:, None]
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
    def predict(self, X, groups=None):
        """Predict with the random effects of the groups seen in ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates.
        groups : array-like of shape (n_samples,), default=None
            Group labels. Rows of groups seen in ``fit`` get
            ``X beta + Z b_hat``; rows of unseen groups, or every row when
            ``groups=None``, get the population prediction ``X beta``
            (lme4 ``predict(..., allow.new.levels = TRUE)``).

        Returns
        -------
        ndarray of shape (n_samples,)
            Predictions.
        """
        check_is_fitted(self)
        X = validate_data(
            self, self._prepare_X(X), reset=False, ensure_min_features=0, dtype=np.float64
        )
        pred = X @ self.coef_ + self.intercept_
        if groups is None or self.random_effects_.shape[1] == 0:
            return pred
        values = _check_groups(groups, X.shape[0])
        idx = pd.Index(self.groups_).get_indexer(values)
        seen = idx >= 0
        if seen.any():
            b = self.random_effects_.to_numpy()[idx[seen]]
            Z = np.column_stack([np.ones(seen.sum()), X[seen][:, self.random_slopes_idx_]])
            pred[seen] += np.einsum("ij,ij->i", Z, b)
        return pred

    def score(self, X, y, groups=None, sample_weight=None):
        """R^2 of :meth:`predict` with ``groups``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates.
        y : array-like of shape (n_samples,)
            True response.
        groups : array-like of shape (n_samples,), default=None
            Group labels, as in :meth:`predict`.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the R^2.

        Returns
        -------
        float
            Coefficient of determination.
        """
        return r2_score(y, self.predict(X, groups=groups), sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
