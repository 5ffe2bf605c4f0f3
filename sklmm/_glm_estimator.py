"""The GLMM estimators: :class:`MixedGLMClassifier` and :class:`MixedGLMRegressor`.

Thin shells, as :class:`~sklmm.MixedLMRegressor`: the shared plumbing of
:class:`~sklmm._base.MixedModelBase` prepares the rows (validation, formula, terms and
their levels, rows left out), :mod:`sklmm._glmm` fits, :mod:`sklmm._glm_fitted` holds
the results and predicts the linear predictor.
"""

from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import assert_all_finite, check_is_fitted, column_or_1d

from ._base import MixedModelBase, _is_dask_collection, _term_signature, check_offset
from ._covariance import COVARIANCE_TYPES
from ._design import NA_ACTIONS
from ._exceptions import (
    MixedLMConvergenceWarning,
    NoGroupsWarning,
    SeparationWarning,
    warn_user,
)
from ._glm_family import LINKS, Family, check_response
from ._glm_fitted import FittedGLMM, GLMMModel
from ._glmm import GLMMData, LaplaceCriterion, fit_glmm
from ._inference import MixedLMSummary, check_alpha, fixed_effects_table, summary_blocks
from ._validation import check_fixed_effects

_NO_GROUPS = (
    "fit() received groups=None, so the model has no random effects: this is a "
    "generalized linear model. Pass the group labels as fit(X, y, groups=g) (inside "
    "Pipeline or GridSearchCV: metadata routing, est.set_fit_request(groups=True))."
)


def _check_design(xtx, n, fixed_names, fit_intercept, names_given):
    """The linear model's checks of the fixed effects (rows, constant and collinear
    columns) from the design's cross-products ``X'X`` (intercept column first when
    fitted), centred here; a response column of 1 stands in for ``y``."""
    k = xtx.shape[0]
    cp = np.zeros((k + 1, k + 1))
    if fit_intercept and n:
        col_means = xtx[0, 1:] / n
        cp[0, 0] = n
        cp[1:k, 1:k] = xtx[1:, 1:] - n * np.outer(col_means, col_means)
    else:
        col_means = np.zeros(max(k - 1, 0))
        cp[:k, :k] = xtx
    cp[-1, -1] = 1.0
    check_fixed_effects(cp, n, col_means, fixed_names, fit_intercept, None, names_given)


class _MixedGLMBase(MixedModelBase):
    """The fit, linear predictor and summary of both GLMM estimators."""

    _shared_constraints: dict = {
        "formula": [None, str],
        "na_action": [StrOptions(set(NA_ACTIONS))],
        "random_effects": [None, str],
        "random_slopes": [None, "array-like", str, Integral],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "fit_intercept": ["boolean"],
        "n_agq": [Interval(Integral, 1, 100, closed="both")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    # -- fit ---------------------------------------------------------------------------
    def _family(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode_y(self, y):
        return y

    def _fit(self, X, y, groups, variance_components, sample_weight, offset):
        warm = self._warm_start_state()
        self._reset()
        self._family_ = self._family()
        if y is not None and not _is_dask_collection(y) and self.formula is None:
            y = self._encode_y(y)
            if np.asarray(y).dtype.kind in "USO":  # the regressor's y: numbers only
                try:
                    y = np.asarray(y, dtype=float)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"y must be numbers for {type(self).__name__} (proportions or "
                        "counts); for classes use MixedGLMClassifier"
                    ) from None
        model = self._prepare(X, y, groups, variance_components, sample_weight, offset)
        gmodel, data = model
        if self.formula is not None and isinstance(self, ClassifierMixin):
            self._formula_classes(X)
        if not gmodel.terms:
            warn_user(_NO_GROUPS, NoGroupsWarning)
        if self.n_agq > 1 and not (len(gmodel.terms) == 1 and gmodel.terms[0].q == 1):
            raise ValueError(
                f"n_agq={self.n_agq}: adaptive Gauss-Hermite quadrature is available for a "
                "model with one random-effects term with one column (a random intercept, "
                "as lme4's nAGQ > 1); use n_agq=1 (the Laplace approximation)"
            )
        criterion = LaplaceCriterion(
            data, self._family_, [t.structure for t in gmodel.terms], n_agq=self.n_agq
        )
        start = None
        if (
            warm is not None
            and warm[0] == _term_signature(gmodel.terms)
            and warm[1].model.fixed_names == gmodel.fixed_names
            and warm[1].family == self._family_
        ):
            old = warm[1]
            same_levels = all(
                np.array_equal(a.keys, b.keys) and a.n_levels == b.n_levels
                for a, b in zip(old.model.terms, gmodel.terms, strict=True)
            )
            u0 = [np.asarray(m) for m in old.fit.mode.u] if same_levels else None
            start = (old.theta, np.linalg.solve(gmodel.T, old.beta), u0)
        # Many small matrices per pass: BLAS threads only spin against each other there
        # (a 178 x 178 Cholesky took 37 ms with two threads, 0.2 ms with one).
        from ._estimator import _blas_controller

        with _blas_controller().limit(limits=1, user_api="blas"):
            fit = fit_glmm(criterion, max_iter=self.max_iter, tol=self.tol, start=start)
            fitted = FittedGLMM(gmodel, criterion, fit)
        self._fitted_offset = offset is not None
        self._set_fitted(fitted, data)
        return self

    def _build_model(
        self,
        X,
        y,
        terms,
        codes,
        *,
        fit_intercept,
        feature_names,
        label_columns,
        weights=None,
        names_given=True,
        n_fixed=None,
        offset=None,
    ):
        """The design and rows of a GLMM: ``(GLMMModel, GLMMData)``."""
        n = X.shape[0]
        p = X.shape[1] if n_fixed is None else n_fixed
        family = self._family_
        m = np.ones(n) if weights is None else weights
        if self.formula is not None:
            y = self._encode_y(y)
        check_response(family, y, m)
        if family.family == "poisson" and n and np.all(y == 0):
            raise ValueError(
                "every count is 0: the Poisson mean has no finite maximum-likelihood estimate"
            )
        if family.family == "binomial" and n and (np.all(y == 0) or np.all(y == 1)):
            raise ValueError(
                f"every row (of positive weight) has the response {y[0]:g}: only one class "
                "is left, and its probability has no finite maximum-likelihood estimate"
            )
        Xf = X[:, :p]
        design = np.column_stack([np.ones(n), Xf]) if fit_intercept else Xf
        fixed_names = (["(Intercept)"] if fit_intercept else []) + list(feature_names[:p])
        _check_design(design.T @ design, n, fixed_names, fit_intercept, names_given)
        # The fit runs on centred (with an intercept) and standardized columns: the same
        # likelihood, far better conditioned for covariates such as a year or a height.
        center = Xf.mean(axis=0) if fit_intercept and n else np.zeros(p)
        scale = Xf.std(axis=0) if n else np.ones(p)
        scale[~(scale > 0)] = 1.0
        data = GLMMData(
            X=(
                np.column_stack([np.ones(n), (Xf - center) / scale])
                if fit_intercept
                else Xf / scale
            ),
            y=np.asarray(y, dtype=float),
            m=np.asarray(m, dtype=float),
            offset=np.zeros(n) if offset is None else offset,
            codes=[np.asarray(c, dtype=np.intp) for c in codes],
            n_levels=[t.n_levels for t in terms],
            Z=[np.ascontiguousarray(t.z(X)) for t in terms],
        )
        model = GLMMModel(
            terms=terms,
            fixed_names=fixed_names,
            fit_intercept=bool(fit_intercept),
            x_mean=np.zeros(p),
            label_columns=label_columns,
            n=n,
            family=family,
            weighted=weights is not None,
            x_center=center,
            x_scale=scale,
        )
        return model, data

    def _dask_model(self, X, y, groups, variance_components, sample_weight, offset=None):
        """The model of Dask collections: persisted row blocks, summed per pass."""
        from ._glmm_dask import dask_glmm_data

        data, terms, pass1 = self._dask_inputs(X, y, groups, variance_components, sample_weight)
        # Centred columns (the in-memory fit also divides by their standard deviations).
        center = (
            pass1["x_sum"] / pass1["w_sum"]
            if self.fit_intercept and pass1["w_sum"] > 0
            else np.zeros(data.n_features)
        )
        binary = isinstance(self, ClassifierMixin)
        if binary:  # the classes are not encoded lazily: 0/1 (or booleans) only
            boolean = str(getattr(y, "dtype", "")) == "bool"
            self.classes_ = np.array([False, True]) if boolean else np.array([0, 1])
        gdata, summary = dask_glmm_data(
            data,
            terms,
            offset,
            fit_intercept=self.fit_intercept,
            n_features=data.n_features,
            family=self._family_,
            binary=binary,
            center=center,
        )
        names = self._feature_names()
        fixed_names = (["(Intercept)"] if self.fit_intercept else []) + list(names)
        n = summary["n"]
        _check_design(
            summary["xtx"], n, fixed_names, self.fit_intercept, data.feature_names is not None
        )
        if self._family_.family == "poisson" and summary["y_max"] == 0:
            raise ValueError(
                "every count is 0: the Poisson mean has no finite maximum-likelihood estimate"
            )
        if self._family_.family == "binomial" and summary["y_min"] == summary["y_max"]:
            raise ValueError(
                f"every row (of positive weight) has the response {summary['y_min']:g}: only "
                "one class is left, and its probability has no finite maximum-likelihood "
                "estimate"
            )
        model = GLMMModel(
            terms=terms,
            fixed_names=fixed_names,
            fit_intercept=bool(self.fit_intercept),
            x_mean=np.zeros(data.n_features),
            label_columns={
                "groups": data.groups_names.names(),
                "variance_components": data.vc_names.names(),
            },
            n=n,
            family=self._family_,
            weighted=sample_weight is not None,
            x_center=center,
        )
        return model, gdata

    def _set_fitted(self, fitted, data):
        self._set_results(fitted, fitted.fit.converged, fitted.fit.n_iter)
        if not self.converged_:
            warn_user(
                f"The fit stopped before converging ({fitted.fit.message}) after "
                f"{self.n_iter_} iterations. Try a larger max_iter, or rescaling the "
                "columns of X that carry random slopes.",
                MixedLMConvergenceWarning,
            )
        self._check_separation(fitted, data)
        self._warn_singular(fitted)

    def _check_separation(self, fitted, data):
        """Warn where the outcomes are (nearly) separated and estimates diverge.

        By the fixed effects: rows whose fitted probability from the fixed effects alone
        is within 1e-7 of 0 or 1, together with a coefficient of the standardized columns
        beyond 8 (logits or log-means per standard deviation) whose standard error is more
        than a quarter of it (a strong but well-determined effect has a small standard
        error; a diverging one a large one). By a term: random intercepts whose standard
        deviation exceeds 5 on the link scale, with the number of its levels whose
        responses are all 0 (or all 1).
        """
        fam = fitted.family
        T = fitted.model.T
        cov_int = np.linalg.solve(T, np.linalg.solve(T, fitted.fixed_cov).T)
        b = fitted.beta_internal
        with np.errstate(invalid="ignore"):
            se = np.sqrt(np.diag(cov_int))
        first = 1 if fitted.model.fit_intercept else 0
        diverging = [
            name
            for name, bj, sj in zip(
                fitted.model.fixed_names[first:], b[first:], se[first:], strict=True
            )
            if abs(bj) > 8 and not (sj <= abs(bj) / 4)
        ]
        if fam.family == "binomial" and diverging:
            extreme = data.extreme_rows(fam, b)
            if extreme:
                warn_user(
                    f"{extreme} row(s) have fitted probabilities within 1e-7 of 0 or 1 from "
                    f"the fixed effects alone, and the coefficients of {diverging} are large "
                    "with larger standard errors: the fixed effects (quasi-)separate the "
                    "outcomes, so these estimates and their standard errors are not finite "
                    "in fact (they stop where the optimizer stopped). Remove or merge the "
                    "separating covariates or factor levels.",
                    SeparationWarning,
                )
        sums = fitted._data_sums
        for k, t in enumerate(fitted.model.terms):
            if t.spec.intercept:
                sd = float(np.sqrt(fitted.covs[t.name].iloc[0, 0]))
                if sd > 5:
                    k_sum, m_sum = sums["level_k"][k], sums["level_m"][k]
                    zero = int(np.count_nonzero(k_sum <= 0))
                    full = int(np.count_nonzero(k_sum >= m_sum)) if fam.family == "binomial" else 0
                    warn_user(
                        f"the random intercepts of {t.name!r} have a standard deviation of "
                        f"{sd:.3g} on the link scale: {zero} of its {len(k_sum)} levels have "
                        "all responses 0"
                        + (f" and {full} all 1" if fam.family == "binomial" else "")
                        + ", so the levels (nearly) separate the outcomes and the variance "
                        "and the conditional modes diverge. Their values mean little; "
                        "consider merging levels or a model without this term.",
                        SeparationWarning,
                    )

    # -- predict -----------------------------------------------------------------------
    def linear_predictor(
        self, X, groups=None, *, offset=None, variance_components=None, return_std=False
    ):
        """The linear predictor ``eta = offset + X beta + Z b`` (the link scale).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or DataFrame
            Covariates (with a ``formula``: the data).
        groups : array-like or DataFrame, default=None
            Group labels, as in ``fit``. A level not seen in ``fit`` adds nothing (the
            population prediction of that term, lme4's ``allow.new.levels = TRUE``);
            ``None``: the population predictions ``offset + X beta`` (lme4's
            ``re.form = NA``).
        offset : array-like of shape (n_samples,), default=None
            Offset of every row (for example the log of an exposure), as in ``fit``.
        variance_components : array-like or DataFrame, default=None
            Labels of the variance components, as in ``fit``.
        return_std : bool, default=False
            Also return the standard deviation of the prediction error of ``eta``.

        Returns
        -------
        eta : ndarray of shape (n_samples,)
        eta_std : ndarray of shape (n_samples,)
            When ``return_std=True``.
        """
        return self._eta(X, groups, offset, variance_components, return_std, "linear_predictor")

    def _eta(self, X, groups, offset, variance_components, return_std, method):
        """:meth:`linear_predictor`, for the public ``method`` that asks (for its warning)."""
        check_is_fitted(self)
        self._check_offset_given(offset, method)
        out = self._predict_raw(X, groups, variance_components, return_std)
        eta = out[0] if return_std else out
        if offset is not None:
            if _is_dask_collection(eta) or _is_dask_collection(offset):
                eta = eta + offset  # lazily; the offset partitioned like X
            else:
                eta = eta + check_offset(offset, len(eta))
        return (eta, out[1]) if return_std else eta

    def _response(self, raw, response_method):
        """Predictions of ``response_method`` from the linear predictor (``"link"``: itself)."""
        if response_method in ("link", "decision_function"):
            return raw
        if _is_dask_collection(raw):
            return self._dask_response(raw, response_method)
        mu = self._family_.linkinv(raw)
        if response_method == "predict" and not isinstance(self, ClassifierMixin):
            return mu
        if response_method == "predict":
            return self.classes_[(mu > 0.5).astype(int)]
        if response_method == "predict_proba":
            return np.column_stack([1.0 - mu, mu])
        raise ValueError(f"{type(self).__name__} has no {response_method}()")

    def _dask_response(self, raw, response_method):
        """:meth:`_response` of a lazy linear predictor, partition by partition (a Dask
        Series stays one; ``predict_proba`` gives a Dask Array of two columns)."""
        if response_method == "predict_proba":
            eta = raw.to_dask_array(lengths=True) if hasattr(raw, "to_dask_array") else raw
            return eta.map_blocks(
                lambda e: self._response(e, response_method),
                dtype=float,
                new_axis=1,
                chunks=(eta.chunks[0], (2,)),
            )
        dtype = (
            self.classes_.dtype
            if response_method == "predict" and hasattr(self, "classes_")
            else float
        )
        if hasattr(raw, "map_partitions"):
            return raw.map_partitions(
                lambda e: pd.Series(
                    self._response(e.to_numpy(), response_method), index=e.index, name=e.name
                ),
                meta=pd.Series(dtype=dtype, name=raw.name),
            )
        return raw.map_blocks(lambda e: self._response(e, response_method), dtype=dtype)

    def _check_offset_given(self, offset, method):
        """Warn when a model fitted with an offset predicts without one (taken as 0)."""
        if offset is None and getattr(self, "_fitted_offset", False):
            warn_user(
                f"the model was fitted with an offset, but {method}() received none: the "
                "offset of these rows is taken as 0. Pass offset= (for example the log of "
                "their exposure).",
                UserWarning,
            )

    def _predict_response(self, X, groups, offset, variance_components, response_method):
        eta = self._eta(X, groups, offset, variance_components, False, response_method)
        return self._response(eta, response_method)

    def _warn_no_labels(self, method, groups, variance_components):
        if (
            not self._from_formula
            and groups is None
            and variance_components is None
            and self._fitted.model.terms
        ):
            warn_user(
                f"{method}() received no groups, so it scores the population predictions "
                "(lme4's re.form = NA), not the conditional ones. Pass groups=g (in "
                "GridSearchCV: route them with set_score_request(groups=True)).",
                NoGroupsWarning,
            )

    # -- inference ---------------------------------------------------------------------
    def summary(self, alpha=0.05):
        """glmer's summary: fit statistics, variance parameters and Wald z tests.

        Parameters
        ----------
        alpha : float, default=0.05
            One minus the confidence level of the Wald intervals.

        Returns
        -------
        MixedLMSummary
            ``str()`` gives the text of lme4's ``summary(glmer(...))``; its
            ``fixed_effects`` table has the estimates, standard errors (lme4's default,
            from the Hessian of the deviance in the variance parameters and the fixed
            effects), z statistics, p-values and Wald intervals; ``random_effects`` is
            lme4's ``as.data.frame(VarCorr(fit))``.
        """
        check_is_fitted(self)
        alpha = check_alpha(alpha)
        fitted = self._fitted
        fixed = fixed_effects_table(
            fitted.model.fixed_names, fitted.beta, fitted.fixed_cov, alpha, None
        )
        vc, random_terms = fitted.variance_table()
        fam = fitted.family
        method = (
            "Laplace Approximation"
            if fitted.n_agq == 1
            else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {fitted.n_agq}"
        )
        title = (
            f"Generalized linear mixed model fit by maximum likelihood ({method}) [sklmm]\n"
            f" Family: {fam.family}  ( {fam.link} )"
        )
        blocks = summary_blocks(
            reml=False,
            log_likelihood=self.log_likelihood_,
            aic=self.aic_,
            bic=self.bic_,
            df=self.n_params_,
            n_obs=fitted.model.n,
            random_terms=random_terms,
            random_table=vc,
            sigma2=None,
            fixed=fixed,
            fixed_cov=fitted.fixed_cov,
            scaled_residuals=None,
            singular=self.is_singular_,
            converged=self.converged_,
            message="see n_iter_",
            formula=self._design.formula if self._from_formula else None,
            title=title,
        )
        return MixedLMSummary(blocks, fixed, vc)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        if getattr(self, "family", None) == "poisson":
            tags.target_tags.positive_only = True
        return tags


_CLASSIFIER_LINKS = ("logit", "probit")


class MixedGLMClassifier(ClassifierMixin, _MixedGLMBase):
    """Mixed-effects logistic (or probit) regression: lme4's ``glmer(family = binomial)``.

    For a row of group ``i``: ``P(y = classes_[1]) = g^{-1}(x'beta + z'b_i)``,
    ``b_i ~ N(0, Sigma)``, fitted by maximum likelihood with the Laplace approximation
    (lme4's default, ``nAGQ = 1``) or, for a single random intercept, adaptive
    Gauss-Hermite quadrature (``n_agq > 1``). The random-effects parameters are those of
    :class:`~sklmm.MixedLMRegressor`. Prediction uses the random effects of the levels
    seen in ``fit`` and the population prediction for new ones.

    Parameters
    ----------
    link : {"logit", "probit"}, default="logit"
        The link function. For the probit link the Laplace approximation uses the
        observed curvature (the textbook approximation, as glmmTMB); lme4 uses the
        expected one, so its log-likelihood differs (see the GLMM page).
    formula : str, default=None
        An lme4-style formula such as ``"y ~ x + (1 | g)"``; the response must be a
        numeric or boolean column with two distinct values.
    na_action : {"omit", "raise"}, default="omit"
        Rows with missing values in the formula's variables (formula models only).
    random_effects : str, default=None
        lme4's bar terms, as for :class:`~sklmm.MixedLMRegressor`.
    random_slopes : array-like of int or str, default=None
        Columns of ``X`` with random slopes (one grouping factor).
    covariance_type : {"unstructured", "diagonal"}, default="unstructured"
        Covariance of a term's random effects.
    fit_intercept : bool, default=True
        Whether to fit a fixed intercept.
    n_agq : int, default=1
        lme4's ``nAGQ``: 1 is the Laplace approximation; more is adaptive Gauss-Hermite
        quadrature with that many nodes (one random-effects term with one column).
    max_iter : int, default=200
        Iterations of the optimizer of each stage.
    tol : float, default=1e-7
        Convergence tolerance of the projected gradient, per row.
    verbose : int, default=0
        Unused; kept for the interface of the linear model.
    warm_start : bool, default=False
        A refit with the same terms and fixed effects starts from the previous
        estimates (and conditional modes, when the levels are the same), skipping
        the GLM and the first stage.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two classes; the model gives the probability of ``classes_[1]``.
    intercept_, coef_ : float, ndarray
        Fixed effects (link scale).
    fixed_effects_ : pandas.Series
        All fixed effects by name (lme4's ``fixef``).
    random_effects_ : dict of DataFrame
        The conditional modes of the random effects per term (lme4's ``ranef``).
    random_effects_cov_ : dict of DataFrame
        The covariance of every term's random effects (lme4's ``VarCorr``).
    random_effects_condvar_ : dict of DataFrame
        The conditional variances of the modes (lme4's ``condVar``).
    variance_components_ : pandas.Series
        The variance of every intercept-only term.
    log_likelihood_ : float
        The log-likelihood (Laplace or quadrature), constants included: lme4's
        ``logLik`` for ``nAGQ = 1``.
    fixed_effects_cov_ : ndarray
        lme4's ``vcov``: from the Hessian of the deviance in all parameters.
    aic_, bic_, n_params_ : float, float, int
    converged_, n_iter_, is_singular_ : bool, int, bool
    terms_ : tuple of str
    n_features_in_, feature_names_in_ : int, ndarray

    See Also
    --------
    MixedGLMRegressor : binomial proportions and Poisson counts.

    Examples
    --------
    >>> import numpy as np
    >>> from sklmm import MixedGLMClassifier
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(30), 20)
    >>> x = rng.normal(size=600)
    >>> eta = -0.5 + x + rng.normal(size=30)[g]
    >>> y = rng.random(600) < 1 / (1 + np.exp(-eta))
    >>> clf = MixedGLMClassifier().fit(x[:, None], y, groups=g)
    >>> clf.predict_proba(x[:3, None], groups=g[:3]).shape
    (3, 2)
    """

    _parameter_constraints: dict = {
        "link": [StrOptions(set(_CLASSIFIER_LINKS))],
        **_MixedGLMBase._shared_constraints,
    }

    def __init__(
        self,
        *,
        link="logit",
        formula=None,
        na_action="omit",
        random_effects=None,
        random_slopes=None,
        covariance_type="unstructured",
        fit_intercept=True,
        n_agq=1,
        max_iter=200,
        tol=1e-7,
        verbose=0,
        warm_start=False,
    ):
        self.link = link
        self.formula = formula
        self.na_action = na_action
        self.random_effects = random_effects
        self.random_slopes = random_slopes
        self.covariance_type = covariance_type
        self.fit_intercept = fit_intercept
        self.n_agq = n_agq
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start

    def _family(self):
        return Family("binomial", self.link)

    def _encode_y(self, y):
        y = column_or_1d(np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y), warn=True)
        if y.dtype.kind in "fc":
            assert_all_finite(y, input_name="y")
        check_classification_targets(y)
        classes, y01 = np.unique(y, return_inverse=True)
        if len(classes) != 2:
            raise ValueError(
                "Only binary classification is supported: MixedGLMClassifier needs a "
                f"response with exactly two classes, got {len(classes)} class(es): "
                f"{classes[:5].tolist()}"
            )
        self.classes_ = classes
        return y01.astype(float)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X, y=None, groups=None, *, sample_weight=None, offset=None, variance_components=None
    ):
        """Fit the model by maximum likelihood (Laplace approximation or quadrature).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or DataFrame
            Covariates (with a ``formula``: the data).
        y : array-like of shape (n_samples,)
            Two classes (with a two-sided formula: ``None``).
        groups : array-like or DataFrame, default=None
            Group labels, as for :class:`~sklmm.MixedLMRegressor`.
        sample_weight : array-like of shape (n_samples,), default=None
            Prior weights (lme4's ``weights``): a row of weight ``k`` counts as ``k``
            identical rows (for a binary response, a binomial with ``k`` trials).
        offset : array-like of shape (n_samples,), default=None
            A known term added to the linear predictor.
        variance_components : array-like or DataFrame, default=None
            As for :class:`~sklmm.MixedLMRegressor`.

        Returns
        -------
        self : MixedGLMClassifier
        """
        return self._fit(X, y, groups, variance_components, sample_weight, offset)

    def decision_function(self, X, groups=None, *, offset=None, variance_components=None):
        """The linear predictor: positive where ``classes_[1]`` is the more likely class.

        Parameters
        ----------
        X, groups, offset, variance_components
            As in :meth:`linear_predictor`.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._eta(X, groups, offset, variance_components, False, "decision_function")

    def predict_proba(self, X, groups=None, *, offset=None, variance_components=None):
        """Class probabilities with the random effects of the levels seen in ``fit``.

        Parameters
        ----------
        X, groups, offset, variance_components
            As in :meth:`linear_predictor`.

        Returns
        -------
        ndarray of shape (n_samples, 2)
            The probabilities of ``classes_[0]`` and ``classes_[1]``.
        """
        return self._predict_response(X, groups, offset, variance_components, "predict_proba")

    def predict(self, X, groups=None, *, offset=None, variance_components=None):
        """The more probable class of each row.

        Parameters
        ----------
        X, groups, offset, variance_components
            As in :meth:`linear_predictor`.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._predict_response(X, groups, offset, variance_components, "predict")

    def score(
        self, X, y=None, sample_weight=None, *, groups=None, offset=None, variance_components=None
    ):
        """Accuracy of :meth:`predict` with ``groups``.

        Parameters
        ----------
        X : array-like or DataFrame
        y : array-like of shape (n_samples,), default=None
            True classes (``None`` with a two-sided formula: read from the data).
        sample_weight : array-like, default=None
        groups, offset, variance_components
            As in :meth:`linear_predictor`.

        Returns
        -------
        float
        """
        from sklearn.metrics import accuracy_score

        check_is_fitted(self)
        if self._from_formula:
            self._check_offset_given(offset, "score")
            y_true, eta, weights = self._formula_targets(
                X,
                y,
                sample_weight,
                "score",
                groups,
                variance_components,
                response_method="link",
                offset=offset,
            )
            pred = self.classes_[(self._family_.linkinv(eta) > 0.5).astype(int)]
            return accuracy_score(y_true, pred, sample_weight=weights)
        if y is None:
            raise ValueError("score() requires y (the true classes) for a model without a formula")
        self._warn_no_labels("score", groups, variance_components)
        pred = self.predict(X, groups, offset=offset, variance_components=variance_components)
        return accuracy_score(y, pred, sample_weight=sample_weight)

    def _formula_classes(self, data):
        """A boolean response column keeps its classes: ``[False, True]``, not ``[0., 1.]``."""
        from ._validation import as_pandas

        frame = as_pandas(data)
        names = getattr(self._design, "response_variables", [])
        if len(names) == 1 and names[0] in getattr(frame, "columns", ()):
            if pd.api.types.is_bool_dtype(frame[names[0]]):
                self.classes_ = np.array([False, True])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


class MixedGLMRegressor(RegressorMixin, _MixedGLMBase):
    """Mixed-effects generalized linear regression: lme4's ``glmer`` for proportions and counts.

    ``E(y | b) = g^{-1}(offset + x'beta + z'b)``, ``b ~ N(0, Sigma)``, with ``y`` binomial
    proportions (the trials as ``sample_weight``, lme4's ``weights =``) or Poisson
    counts, fitted by maximum likelihood (Laplace approximation, or adaptive quadrature
    for one random intercept). The random-effects parameters are those of
    :class:`~sklmm.MixedLMRegressor`; ``predict`` gives the mean (response scale),
    :meth:`linear_predictor` the link scale.

    Parameters
    ----------
    family : {"binomial", "poisson"}, default="poisson"
        The conditional distribution of ``y``.
    link : str, default=None
        The link: the family's canonical one (``"logit"``, ``"log"``) when None; the
        binomial family also takes ``"probit"`` and ``"cloglog"``.
    formula, na_action, random_effects, random_slopes, covariance_type, fit_intercept, \
n_agq, max_iter, tol, verbose, warm_start
        As for :class:`MixedGLMClassifier`.

    Attributes
    ----------
    intercept_, coef_, fixed_effects_, random_effects_, random_effects_cov_, \
random_effects_condvar_, variance_components_, log_likelihood_, fixed_effects_cov_, \
aic_, bic_, n_params_, converged_, n_iter_, is_singular_, terms_, n_features_in_, \
feature_names_in_
        As for :class:`MixedGLMClassifier`.

    See Also
    --------
    MixedGLMClassifier : binary outcomes, with ``predict_proba``.

    Examples
    --------
    >>> from sklmm import MixedGLMRegressor
    >>> from sklmm.datasets import load_cbpp
    >>> df = load_cbpp()
    >>> formula = "I(incidence / size) ~ period + (1 | herd)"
    >>> est = MixedGLMRegressor(family="binomial", formula=formula)
    >>> est = est.fit(df, sample_weight=df["size"])
    >>> round(est.log_likelihood_, 4)
    -92.0263
    """

    _parameter_constraints: dict = {
        "family": [StrOptions(set(LINKS))],
        "link": [None, StrOptions({link for links in LINKS.values() for link in links})],
        **_MixedGLMBase._shared_constraints,
    }

    def __init__(
        self,
        *,
        family="poisson",
        link=None,
        formula=None,
        na_action="omit",
        random_effects=None,
        random_slopes=None,
        covariance_type="unstructured",
        fit_intercept=True,
        n_agq=1,
        max_iter=200,
        tol=1e-7,
        verbose=0,
        warm_start=False,
    ):
        self.family = family
        self.link = link
        self.formula = formula
        self.na_action = na_action
        self.random_effects = random_effects
        self.random_slopes = random_slopes
        self.covariance_type = covariance_type
        self.fit_intercept = fit_intercept
        self.n_agq = n_agq
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start

    def _family(self):
        return Family(self.family, self.link)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X, y=None, groups=None, *, sample_weight=None, offset=None, variance_components=None
    ):
        """Fit the model by maximum likelihood (Laplace approximation or quadrature).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or DataFrame
            Covariates (with a ``formula``: the data).
        y : array-like of shape (n_samples,)
            Binomial: proportions in [0, 1]; Poisson: counts.
        groups : array-like or DataFrame, default=None
            Group labels, as for :class:`~sklmm.MixedLMRegressor`.
        sample_weight : array-like of shape (n_samples,), default=None
            Binomial: the number of trials of each row (lme4's ``weights`` with a
            proportion response); Poisson: prior weights of the log-likelihood.
        offset : array-like of shape (n_samples,), default=None
            A known term added to the linear predictor (the log of an exposure).
        variance_components : array-like or DataFrame, default=None
            As for :class:`~sklmm.MixedLMRegressor`.

        Returns
        -------
        self : MixedGLMRegressor
        """
        return self._fit(X, y, groups, variance_components, sample_weight, offset)

    def predict(self, X, groups=None, *, offset=None, variance_components=None):
        """The conditional mean ``g^{-1}(eta)`` (response scale) of every row.

        Parameters
        ----------
        X, groups, offset, variance_components
            As in :meth:`linear_predictor`.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._predict_response(X, groups, offset, variance_components, "predict")

    def score(
        self, X, y=None, sample_weight=None, *, groups=None, offset=None, variance_components=None
    ):
        """D^2, the fraction of the deviance explained (scikit-learn's GLM ``score``).

        ``1 - D(y, mu) / D(y, mean(y))`` with the family's deviance (the weighted mean of
        ``y`` as the null model's), on the conditional predictions with ``groups``.

        Parameters
        ----------
        X : array-like or DataFrame
        y : array-like of shape (n_samples,), default=None
            True responses (``None`` with a two-sided formula).
        sample_weight : array-like, default=None
            Trials (binomial) or prior weights, as in ``fit``.
        groups, offset, variance_components
            As in :meth:`linear_predictor`.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        if self._from_formula:
            self._check_offset_given(offset, "score")
            y_true, eta, weights = self._formula_targets(
                X,
                y,
                sample_weight,
                "score",
                groups,
                variance_components,
                response_method="link",
                offset=offset,
            )
            mu = self._family_.linkinv(eta)
        else:
            if y is None:
                raise ValueError("score() requires y for a model without a formula")
            self._warn_no_labels("score", groups, variance_components)
            mu = self.predict(X, groups, offset=offset, variance_components=variance_components)
            y_true = np.asarray(y, dtype=float).reshape(-1)
            weights = None if sample_weight is None else np.asarray(sample_weight, float)
        w = np.ones(len(y_true)) if weights is None else weights
        fam = self._family_
        dev = np.sum(fam.deviance_residuals(y_true, mu, w))
        null = np.full(len(y_true), np.average(y_true, weights=w))
        dev0 = np.sum(fam.deviance_residuals(y_true, null, w))
        return float(1.0 - dev / dev0) if dev0 > 0 else float("nan")
