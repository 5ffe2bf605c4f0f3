"""The scikit-learn estimator: a thin shell over the numpy/scipy core.

``fit`` = validate, resolve the terms, build the model, minimise, set the fitted
attributes; ``predict`` = validate, find each row's levels, ask the fitted model. The
numerics live in the layers below (see the documentation's architecture page):
:mod:`sklmm._validation`, :mod:`sklmm._terms`, :mod:`sklmm._model`,
:mod:`sklmm._optimize`, :mod:`sklmm._fitted`, and :mod:`sklmm._dask` for Dask input.
"""

import functools
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import MixedModelBase, _term_signature
from ._covariance import COVARIANCE_TYPES
from ._ddf import anova_table, contrast_matrix, ddf_method
from ._design import NA_ACTIONS
from ._exceptions import (
    MixedLMConvergenceWarning,
    NoGroupsWarning,
    warn_user,
)
from ._fitted import FittedModel
from ._inference import MixedLMSummary, check_alpha, fixed_effects_table, summary_blocks
from ._model import build_model
from ._optimize import ALL_SOLVERS, optimize, resolve_solver
from ._validation import (
    check_sample_weight,
)

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


def _varcorr_positions(terms):
    """Rows of lme4's ``as.data.frame(VarCorr)`` table (per term: the sd's, then the
    correlations by column; sigma last) in lme4's parameter order (per column: its sd,
    then its correlations with the later columns)."""
    from ._bootstrap import term_parameters

    rows, start = [], 0
    for t in terms:
        unstructured = t.covariance == "unstructured"
        pairs = [(i, j) for j in range(t.q) for i in range(j + 1, t.q)] if unstructured else []
        for kind, i, j in term_parameters(t.q, unstructured):
            rows.append(start + (j if kind == "sd" else t.q + pairs.index((i, j))))
        start += t.q + len(pairs)
    return [*rows, start]


@functools.cache
def _blas_controller():
    """One threadpoolctl controller per process (it inspects the loaded libraries once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class MixedLMRegressor(RegressorMixin, MixedModelBase):
    """Linear mixed-effects model: random intercepts and slopes, nested or crossed.

    For group ``i``: ``y_i = X_i beta + Z_i b_i + e_i`` with
    ``b_i ~ N(0, Sigma)`` and ``e_i ~ N(0, sigma2 I)``. ``Z_i`` holds a
    random intercept and the columns of ``X`` named in ``random_slopes``
    (lme4: ``y ~ x1 + x2 + (1 + x1 | g)``). The variance parameters are
    estimated by REML or ML on the criterion with ``beta`` and ``sigma2``
    profiled out.

    Several independent terms (variance components; nested or crossed
    grouping factors; lme4's ``(1 + x | subj) + (1 | item)``) are given by
    ``fit(..., variance_components=vc)`` or by ``random_effects``. Every
    model has the same fitted attributes: per term, keyed by the term's name.
    With ``solver="auto"`` a model with a single term with an intercept is
    fitted by EM iterations followed by Newton iterations (Lindstrom and
    Bates, 1988), every other model by L-BFGS-B on a blocked Cholesky
    factorization (see the documentation's algorithm page).

    Parameters
    ----------
    formula : str, default=None
        An lme4-style two-sided formula, for example
        ``"Reaction ~ Days + (Days | Subject)"``: the model is then fitted by
        ``fit(data)`` from the columns of one DataFrame (pandas, polars, ...),
        which ``predict(data)`` and ``score(data)`` read too. The fixed part is
        a formulaic model matrix with R's semantics (treatment contrasts,
        ``contr.poly`` for ordered factors, ``*``, ``:``, ``0 +``, ``I()``,
        ``poly()``, ``center()``, ``scale()``, splines), the bar terms follow
        ``random_effects``' syntax with any such expression on their left side;
        see the documentation's formulas page. A one-sided formula
        (``"~ Days + (Days | Subject)"``) takes the response as ``y``. Not
        combined with ``random_effects``, ``random_slopes``,
        ``covariance_type``, ``fit_intercept=False`` or label arguments:
        the formula says all of it.
    na_action : {"omit", "raise"}, default="omit"
        With a formula, what a missing value in one of its variables does:
        ``"omit"`` leaves the row out of ``fit`` with a
        :class:`~sklmm.MissingDataWarning` (lme4's ``na.action = na.omit``),
        gives it a ``NaN`` prediction and leaves it out of ``score``;
        ``"raise"`` raises ``ValueError`` naming the columns. Without a
        formula, missing values are always an error.
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
    solver : {"auto", "em-newton", "em", "newton", "lbfgs"}, default="auto"
        How the variance parameters are estimated.

        - ``"em-newton"``: EM iterations, then Newton iterations on the
          one-factor criterion (analytic Hessian); Newton is also run from
          the start, and the better of the two optima is kept.
        - ``"em"``: EM alone. ``"newton"``: Newton alone.
        - ``"lbfgs"``: L-BFGS-B on the blocked Cholesky criterion (analytic
          gradient), finished by Newton steps when it stops short. Works for
          every model.
        - ``"auto"``: ``"em-newton"`` for a model with a single random-effects
          term with an intercept (or none), ``"lbfgs"`` otherwise.

        ``"em-newton"``, ``"em"`` and ``"newton"`` need a model with a single
        term with an intercept (or none); on any other model they raise
        ``ValueError``. Every solver stops on the rule of ``tol``.
    max_iter : int, default=100
        Maximum iterations of the main phase of the solver: each Newton pass
        (``"em-newton"`` runs two: one from the EM result and one from the
        start; ``"newton"`` one), EM for ``solver="em"``, L-BFGS-B over its
        restarts for ``"lbfgs"``.
    em_max_iter : int, default=None
        Maximum EM iterations before Newton takes over, for the solver
        ``"em-newton"`` (also when ``"auto"`` chooses it). ``None`` means 25.
        Setting it when the solver that runs is not ``"em-newton"`` raises
        ``ValueError`` (``solver="em"`` is capped by ``max_iter``).
    tol : float, default=1e-7
        Convergence rule, the same for every solver: every entry of the
        projected gradient of ``-2 log L`` in ``theta`` (the square-root-scale
        parameters), times ``max(1, |theta_i|)`` (a relative change where
        ``theta_i`` is large), is at most ``tol * n`` in absolute value (``n``
        rows; a rule free of the units of ``y`` and of the scale of
        ``theta``). ``"em-newton"``, ``"em"`` and ``"newton"`` also require
        that the Hessian on the free parameters have no negative eigenvalue
        (no saddle point); ``"lbfgs"`` accepts up to ``10 * tol * n``
        (L-BFGS-B may stop on a negligible decrease) and checks the curvature
        on the boundary only (see the algorithm page).
    verbose : int, default=0
        Print one line per iteration when positive (per evaluation of the
        criterion with its gradient requested by L-BFGS-B), for every
        solver: the phase, the iteration, ``-2 log L`` and the gradient norm
        of the row of ``fit_log_``.
    warm_start : bool, default=False
        scikit-learn's convention: a refit starts from the variance parameters
        of the previous fit (its covariances relative to the residual variance,
        moved to the new data's column scales) when the random-effects terms
        are the same; otherwise from the usual start. A refit on the same data
        then converges in one or two iterations, at the estimates of a cold
        start. On other data the estimates are a cold start's where the
        likelihood has one optimum; where it has several (small, very
        unbalanced designs), a warm refit, which runs Newton alone from the last
        estimates, can end in another one (see the algorithm page).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Fixed-effect coefficients of the columns of ``X``.
    intercept_ : float
        Fixed intercept (0.0 when ``fit_intercept=False``).
    random_effects_cov_ : dict of str to pandas.DataFrame
        Covariance ``Sigma`` of the random effects of every term
        (lme4 ``VarCorr``), keyed by term name: a ``q x q`` DataFrame whose
        index and columns are the term's effects, ``"(Intercept)"`` first,
        then the slopes, for example
        ``est.random_effects_cov_["Subject"].loc["Days", "Days"]``. ``{}`` for
        a model without random effects.
    residual_variance_ : float
        Residual variance ``sigma2`` (lme4 ``sigma(fit)^2``).
    random_effects_ : dict of str to pandas.DataFrame
        Conditional modes (BLUPs) of the random effects (lme4 ``ranef``),
        keyed by term name: one row per level of the term seen in ``fit``
        (its index holds the levels, a MultiIndex for an interaction such as
        ``batch:cask``) and one column per effect (``"(Intercept)"``, then
        the slopes). ``{}`` for a model without random effects.
    random_effects_condvar_ : dict of str to pandas.DataFrame
        Conditional covariance of the random effects of every level
        (lme4 ``ranef(condVar = TRUE)``), keyed by term name: a DataFrame
        indexed by (level..., ``"effect"``) with the effects as columns.
        ``df.loc[level]`` is the ``q x q`` matrix of one level;
        ``df.to_numpy().reshape(m, q, q)`` the array of all ``m`` levels.
    variance_components_ : pandas.Series
        The variance of every intercept-only term, by term name (empty for a
        model whose terms all have slopes, or no random effects).
    terms_ : tuple of str
        The random-effects terms in lme4's syntax, for example
        ``("(1 + Days | Subject)",)`` or ``("(1 | batch)", "(1 | batch:cask)")``.
        A term's name, the key of the dictionaries above, is the name of its
        grouping factor, or the names of its factors joined by ``":"``: the
        name of ``groups`` (a Series's name or a DataFrame's column,
        ``"group"`` for an unnamed array); a variance component ``c`` within
        ``groups`` ``g`` is the term ``"g:c"``, without ``groups`` the term
        ``"c"``.
    log_likelihood_ : float
        The REML or ML log-likelihood at the optimum (lme4 ``logLik``).
    is_singular_ : bool
        Whether the fit lies on the boundary (a random-effect variance at
        zero, or a correlation at +/-1), by lme4's rule.
    converged_ : bool
        Whether the convergence rule held.
    n_iter_ : int
        Iterations of the optimizer: EM and Newton iterations (of both
        Newton passes of ``"em-newton"``), or L-BFGS-B iterations and the
        Newton steps that finish them (``"lbfgs"``), plus those of the fits
        from other starts when the first optimum is on the boundary (so it can
        exceed ``max_iter``, which caps each fit). 0 for a model without random
        effects.
    fit_log_ : pandas.DataFrame
        One row per iteration (per evaluation of the criterion with its
        gradient requested by L-BFGS-B; ``"lbfgs"`` starts from one-term fits
        of every term alone, which are not logged), with the same columns
        for every model: ``phase``
        (``"em"``, ``"newton"``, ``"restart"`` for the Newton pass from the
        start of ``"em-newton"``; ``"lbfgs"``, ``"polish"`` for the Newton
        steps after L-BFGS-B; ``"multistart"`` for the fits from the other
        starts tried when the first optimum is on the boundary;
        ``"none"`` for a model without variance parameters), ``iteration``,
        ``objective`` (``-2 log L``), ``log_likelihood``, ``gradient_norm``
        (the largest entry of the projected gradient times
        ``max(1, |theta_i|)``, as in the rule of ``tol``), ``step_size``,
        ``residual_variance``, then the
        variance parameters of every term on the user scale at that iterate:
        ``"<term>: Var[<effect>]"`` and, for correlated effects,
        ``"<term>: Cov[<a>,<b>]"`` (for example ``"Subject: Var[(Intercept)]"``,
        ``"Subject: Cov[(Intercept),Days]"``).
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
    fixed_effects_ : pandas.Series
        The fixed effects by name (lme4 ``fixef``): ``"(Intercept)"`` (when
        fitted), then the columns of ``X``, or of the formula's model matrix.
    n_features_in_ : int
        Number of columns of ``X`` (with a formula: of the data columns its
        right-hand side reads).
    feature_names_in_ : ndarray of str
        Column names of ``X``, when it is a DataFrame with string names (with a
        formula: the data columns its right-hand side reads).
    n_rows_dropped_ : int
        With a formula, the rows left out of ``fit`` for missing values (0
        without a formula).
    rows_dropped_ : pandas.Index
        With a formula, the index labels of those rows (lme4's
        ``na.action(fit)``); empty without a formula.

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

    Per-level cross-products of ``[Z X y]``, blocked by term, are formed
    once; every iteration afterwards costs nothing in the number of rows.

    ``fit(..., sample_weight=w)`` takes lme4's precision weights
    (``weights = w``): the residual variance of row ``i`` is ``sigma2 / w_i``.
    They are not frequency weights: weight ``k`` and ``k`` copies of a row give
    the same cross-products, but the likelihood counts one residual of variance
    ``sigma2 / k`` instead of ``k`` residuals of variance ``sigma2``, so the
    variance estimates differ (see the documentation's weights page). ``score``
    takes weights for a weighted R^2, in scikit-learn's positional order
    ``score(X, y, sample_weight=None, *, groups=None, variance_components=None)``:
    pass the labels by keyword.

    ``X``, ``y``, ``groups`` and ``variance_components`` may be Dask
    collections (the ``dask`` extra), for every model: the statistics are
    summed over the partitions by Dask and the fit is the same as in
    memory; ``predict`` on Dask input is lazy.

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
    >>> est.terms_
    ('(1 + Days | Subject)',)
    >>> print(f"{est.random_effects_cov_['Subject'].loc['Days', 'Days']:.3f}")
    35.072

    Nested random intercepts, lme4's ``strength ~ 1 + (1 | batch/cask)``:

    >>> from sklmm.datasets import load_pastes
    >>> df = load_pastes()
    >>> est = MixedLMRegressor(random_effects="(1 | batch/cask)")
    >>> est = est.fit(df[[]], df["strength"], groups=df[["batch", "cask"]])
    >>> est.variance_components_.round(3).to_dict()
    {'batch': 1.657, 'batch:cask': 8.434}
    """

    _parameter_constraints: dict = {
        "formula": [None, str],
        "na_action": [StrOptions(set(NA_ACTIONS))],
        "random_effects": [None, str],
        "random_slopes": [None, "array-like", str, Integral],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "reml": ["boolean"],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions(set(ALL_SOLVERS))],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "em_max_iter": [None, Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        *,
        formula=None,
        na_action="omit",
        random_effects=None,
        random_slopes=None,
        covariance_type="unstructured",
        reml=True,
        fit_intercept=True,
        solver="auto",
        max_iter=100,
        em_max_iter=None,
        tol=1e-7,
        verbose=0,
        warm_start=False,
    ):
        self.formula = formula
        self.na_action = na_action
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
        self.warm_start = warm_start

    # -- fit ------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None, *, sample_weight=None, variance_components=None):
        """Fit the model by REML or ML.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates (without an intercept column). With a
            ``formula``: the DataFrame holding every column it names.
        y : array-like of shape (n_samples,), default=None
            Response. Required without a formula; with a two-sided formula it
            must be ``None`` (the formula names the response).
        groups : array-like of shape (n_samples,) or DataFrame, default=None
            Group label of each row (ints, strings or a pandas categorical).
            With ``random_effects``, a DataFrame with one column per grouping
            factor it names (a single factor may also be given as one column).
            ``None`` (and no ``variance_components``) fits a model without
            random effects and warns with :class:`~sklmm.NoGroupsWarning`.
        sample_weight : array-like of shape (n_samples,), default=None
            Precision weights, lme4's ``weights=``: the residual variance of row
            ``i`` is ``sigma2 / w_i`` (a row that is the mean of ``k``
            observations has weight ``k``). The log-likelihood is lme4's,
            ``sum(log w) / 2`` included. Weights must be finite and
            non-negative; rows of weight 0 are left out, as if absent (a level
            whose rows all have weight 0 is left out too, with a
            :class:`~sklmm.ZeroWeightWarning`). They are not frequency weights:
            see the Notes of the class.
        variance_components : array-like of shape (n_samples, n_components) \
                or DataFrame, default=None
            Labels of the variance components, one column per component
            (named by the DataFrame's columns, else ``variance_components0``,
            ...). Within each group, each distinct label of a component gets
            an independent random intercept, and all of a component's
            intercepts share one variance: lme4's ``(1 | group:component)``,
            i.e. nested effects, a term named ``"group:component"``. With
            ``groups=None`` a component's labels span all rows: lme4's
            ``(1 | component)``, i.e. crossed factors. Not combined with
            ``random_effects``.

        Returns
        -------
        self : MixedLMRegressor
            The fitted estimator.
        """
        # The per-iteration work is on many small matrices: BLAS threads only spin
        # against each other there (the blocked criterion sets its own limit).
        with _blas_controller().limit(limits=1, user_api="blas"):
            return self._fit(X, y, groups, variance_components, sample_weight)

    def _fit(self, X, y, groups, variance_components, sample_weight):
        warm = self._warm_start_state()
        self._reset()
        model = self._prepare(X, y, groups, variance_components, sample_weight)
        if not model.terms:
            warn_user(_NO_GROUPS, NoGroupsWarning)
        solver, em_max_iter = resolve_solver(self.solver, self.em_max_iter, model.one_factor)
        objective = model.criterion(solver)
        theta0 = None
        if warm is not None and warm[0] == _term_signature(model.terms):
            # The last fit's variance parameters, moved to this data's column scales.
            theta0 = warm[1].theta_for(model)
        opt = optimize(
            objective,
            solver,
            max_iter=self.max_iter,
            em_max_iter=em_max_iter,
            tol=self.tol,
            verbose=self.verbose,
            blocks=model.blocks,
            theta0=theta0,
            warm=True,
        )
        fitted = FittedModel(
            model, objective, opt, tol=self.tol, max_iter=self.max_iter, em_max_iter=em_max_iter
        )
        self._set_fitted(fitted)
        return self

    def _build_model(self, X, y, terms, codes, *, offset=None, **options):
        """The linear model of prepared arrays (:func:`~sklmm._model.build_model`)."""
        if offset is not None:  # pragma: no cover - fit takes no offset
            raise ValueError("a linear mixed model takes no offset: subtract it from y")
        return build_model(X, y, terms, codes, reml=self.reml, **options)

    def _dask_model(self, X, y, groups, variance_components, sample_weight, offset=None):
        data, terms, summary = self._dask_inputs(X, y, groups, variance_components, sample_weight)
        return data.model(
            terms,
            summary,
            fit_intercept=self.fit_intercept,
            reml=self.reml,
            feature_names=self._feature_names(),
        )

    def _set_fitted(self, fitted):
        """Copy the user-scale results onto the estimator and warn about the fit."""
        self._set_results(fitted, fitted.opt.converged, fitted.opt.n_iter)
        self.residual_variance_ = fitted.sigma2
        if not self.converged_:
            warn_user(
                f"The {fitted.opt.solver} solver stopped before converging "
                f"({fitted.opt.message}) after {self.n_iter_} iterations. Try a larger "
                "max_iter, another solver, or rescaling the columns of X that carry random "
                "slopes.",
                MixedLMConvergenceWarning,
            )
        self._warn_singular(fitted)

    # -- predict ------------------------------------------------------------
    def predict(
        self, X, groups=None, *, return_std=False, include_residual=False, variance_components=None
    ):
        """Predict with the random effects of the levels seen in ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates.
        groups : array-like of shape (n_samples,) or DataFrame, default=None
            Group labels, as in ``fit``. Each term adds its BLUP to the rows
            whose level of that term was seen in ``fit`` and nothing to the
            others, so unseen groups get the population prediction ``X beta``
            (lme4 ``predict(..., allow.new.levels = TRUE)``). ``groups=None``
            (and no ``variance_components``) gives every row the population
            prediction ``X beta``, lme4's ``predict(fit, re.form = NA)``: by design
            and without a warning, since that is a legitimate prediction (for new
            groups, for instance). A scikit-learn string scorer such as
            ``scoring="r2"`` calls ``predict(X)`` this way, so it scores population
            predictions; :func:`sklmm.make_group_scorer` scores conditional ones.
        return_std : bool, default=False
            Also return the standard deviation of each prediction (the
            ``BayesianRidge`` convention): of the prediction error of
            ``x'beta + z'b`` given the data, with the conditional covariance of
            the BLUPs across terms and their dependence on ``beta``; each term
            whose level is unseen adds ``z' Sigma_k z`` (a new level's effect
            is unknown). The variance parameters are treated as known. Through a
            ``Pipeline`` with metadata routing enabled, request it as the labels
            are requested: ``est.set_predict_request(groups=True,
            return_std=True)``, then ``pipe.predict(X, groups=g, return_std=True)``.
        include_residual : bool, default=False
            With ``return_std``, add the residual variance: the standard
            deviation of a new observation rather than of its mean. A new row
            gets ``residual_variance_``, the residual variance of a row of
            weight 1 when the model was fitted with ``sample_weight`` (a new
            row of weight ``w`` would have ``residual_variance_ / w``).
        variance_components : array-like or DataFrame, default=None
            Labels of the variance components, as in ``fit`` (ignored by a
            model fitted without them). ``None`` is allowed only together with
            ``groups=None`` (population predictions): leaving the components out
            while giving ``groups`` raises ``ValueError``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predictions: a NumPy array for every in-memory input, pandas or
            polars included, as scikit-learn's regressors return (wrap it as
            ``pd.Series(y_pred, index=X.index)`` to keep the index).
        y_std : ndarray of shape (n_samples,)
            Standard deviations, when ``return_std=True``.

        Notes
        -----
        When ``X`` is a Dask collection, the results are lazy Dask collections
        (a Series for a DataFrame, an Array otherwise), computed per partition.
        """
        return self._predict_raw(X, groups, variance_components, return_std, include_residual)

    def score(self, X, y=None, sample_weight=None, *, groups=None, variance_components=None):
        """R^2 of :meth:`predict` with ``groups`` (and ``variance_components``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates. With a ``formula``: the DataFrame, whose
            grouping factors give the conditional predictions.
        y : array-like of shape (n_samples,), default=None
            True response. With a two-sided formula, ``None`` reads it from
            ``X`` (rows with missing values are left out of the score, with a
            :class:`~sklmm.MissingDataWarning`). Required without a formula.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the R^2 (scikit-learn's positional order).
        groups : array-like of shape (n_samples,) or DataFrame, default=None
            Group labels, as in :meth:`predict`.
        variance_components : array-like or DataFrame, default=None
            Labels of the variance components, as in :meth:`predict`.

        Returns
        -------
        float
            Coefficient of determination.

        Warns
        -----
        NoGroupsWarning
            When the model has random effects and neither ``groups`` nor
            ``variance_components`` is given: the score is then that of the
            population predictions ``X beta``, usually far below the conditional
            one. This is what ``GridSearchCV`` and ``cross_validate`` call with the
            default ``scoring=None`` unless ``groups`` is routed to ``score``
            (``set_score_request(groups=True)``). String scorers such as
            ``scoring="r2"`` call :meth:`predict` without groups and cannot be
            warned about: use :func:`sklmm.make_group_scorer` instead.
        """
        check_is_fitted(self)
        if self._from_formula:
            y_true, pred, weights = self._formula_targets(
                X, y, sample_weight, "score", groups, variance_components
            )
            return r2_score(y_true, pred, sample_weight=weights)
        if y is None:
            raise ValueError("score() requires y (the true response) for a model without a formula")
        self._warn_population("score", groups, variance_components)
        pred = self.predict(X, groups=groups, variance_components=variance_components)
        return r2_score(y, pred, sample_weight=sample_weight)

    def summary(
        self,
        X=None,
        y=None,
        groups=None,
        alpha=0.05,
        *,
        ddf="satterthwaite",
        sample_weight=None,
        variance_components=None,
    ):
        """lme4-shaped summary with tables of fixed effects and variance parameters.

        Parameters
        ----------
        X, y, groups, variance_components : array-like, default=None
            The training data; when given, the scaled conditional residuals are
            summarised too (lme4's "Scaled residuals").
        alpha : float, default=0.05
            One minus the confidence level of the intervals.
        ddf : {"satterthwaite", "kenward-roger", "normal"}, default="satterthwaite"
            The reference distribution of the fixed-effects tests and intervals.
            ``"satterthwaite"``: t tests with Satterthwaite's degrees of freedom,
            lmerTest's ``summary`` (its default, and the default here: with few
            groups the normal reference is anti-conservative, and the df show
            how much information each estimate has). ``"kenward-roger"``:
            Kenward and Roger's adjusted standard errors and df (pbkrtest, lmerTest's
            ``ddf = "Kenward-Roger"``; REML fits off the boundary).
            ``"normal"``: Wald z tests, as lme4's ``confint(method = "Wald")``.
        sample_weight : array-like of shape (n_samples,), default=None
            The weights of ``fit``, required with ``X`` and ``y`` for a weighted
            model: the scaled residuals are then lme4's Pearson residuals
            ``sqrt(w) (y - fitted) / sigma`` (rows of weight 0 left out).

        Returns
        -------
        MixedLMSummary
            ``str()`` gives the text of lme4's ``summary(lmer(...))``; in a
            notebook it renders as HTML. Its ``fixed_effects`` table has the
            estimates, standard errors, the df, t statistics, p-values and
            intervals of ``ddf`` (z statistics for ``"normal"``); its
            ``random_effects`` table is
            lme4's ``as.data.frame(VarCorr(fit))`` with Wald intervals of
            ``sdcor`` on the log-sd / atanh-correlation scale (NaN for the
            terms on the boundary of a singular fit, which are held at their
            estimates for the intervals of the other parameters and of the
            residual).
        """
        check_is_fitted(self)
        alpha = check_alpha(alpha)
        if sample_weight is not None and (X is None or (y is None and not self._from_formula)):
            raise ValueError(
                "summary() uses sample_weight for the scaled residuals only: pass it "
                "with X, y and groups"
            )
        fitted = self._fitted
        fixed = self._fixed_table(alpha, ddf)
        resid = None
        if self._from_formula and X is not None:
            y_true, pred, weights = self._formula_targets(
                X, y, sample_weight, "summary", groups, variance_components
            )
            resid = (y_true - pred) / np.sqrt(self.residual_variance_)
        elif X is not None and y is not None:
            self._warn_population("summary", groups, variance_components)
            pred = self.predict(X, groups=groups, variance_components=variance_components)
            resid = (np.asarray(y, dtype=float) - pred) / np.sqrt(self.residual_variance_)
            weights = check_sample_weight(sample_weight, len(resid))
        if resid is not None:
            if fitted.model.weighted and weights is None:
                raise ValueError(
                    "the model was fitted with sample_weight: pass the same weights to "
                    "summary(X, y, groups, sample_weight=w) for lme4's scaled (Pearson) "
                    "residuals, sqrt(w) (y - fitted) / sigma"
                )
            if weights is not None and not fitted.model.weighted:
                raise ValueError(
                    "summary() received sample_weight, but the model was fitted without "
                    "weights: pass the weights to fit, or none to summary"
                )
            if weights is not None:
                resid = (resid * np.sqrt(weights))[weights > 0]
        vc, random_terms = fitted.variance_table(alpha)
        blocks = summary_blocks(
            reml=self.reml,
            log_likelihood=self.log_likelihood_,
            aic=self.aic_,
            bic=self.bic_,
            df=self.n_params_,
            n_obs=fitted.model.n,
            random_terms=random_terms,
            random_table=vc,
            sigma2=self.residual_variance_,
            fixed=fixed,
            fixed_cov=self.fixed_effects_cov_,
            scaled_residuals=resid,
            singular=self.is_singular_,
            converged=self.converged_,
            message="see fit_log_",
            formula=self._design.formula if self._from_formula else None,
        )
        return MixedLMSummary(blocks, fixed, vc)

    def _fixed_table(self, alpha, ddf):
        """The fixed-effects table with the tests of ``ddf``."""
        fitted = self._fitted
        method = ddf_method(fitted, ddf)
        df = None
        if ddf != "normal":
            df = method.t_tests(np.eye(len(fitted.beta)))["df"].to_numpy()
        # Kenward-Roger's table has its adjusted standard errors (pbkrtest's vcovAdj)
        return fixed_effects_table(fitted.model.fixed_names, fitted.beta, method.cov, alpha, df)

    def test_contrast(self, L, *, ddf="satterthwaite", joint=True):
        """Test linear combinations ``L beta`` of the fixed effects (lmerTest's ``contest``).

        Parameters
        ----------
        L : array-like of shape (n_contrasts, n_fixed_effects), DataFrame, Series or dict
            The contrasts: one column per fixed effect, in the order of
            ``fixed_effects_`` (the intercept first when fitted), or named by
            ``fixed_effects_``'s index (a DataFrame with those columns, a Series or a
            dict for one contrast; effects left out get 0).
        ddf : {"satterthwaite", "kenward-roger", "normal"}, default="satterthwaite"
            Satterthwaite's degrees of freedom (lmerTest), Kenward and Roger's
            adjusted covariance, scaled F and df (pbkrtest's ``KRmodcomp``; REML fits
            off the boundary), or the normal reference (Wald z and chi-square tests).
        joint : bool, default=True
            One F test of ``L beta = 0`` (all rows together; lmerTest's
            ``contest(..., joint = TRUE)``), or one t test per row.

        Returns
        -------
        pandas.DataFrame
            ``joint=True``: one row with ``sum_sq``, ``mean_sq`` (``F`` times the
            residual variance, lmerTest's convention), ``num_df`` (the rank of
            ``L``), ``den_df``, ``F`` and ``p_value``. ``joint=False``: one row per
            contrast with ``estimate``, ``std_error``, ``df``, ``t`` and ``p_value``
            (two-sided).

        Examples
        --------
        >>> from sklmm import lmer
        >>> from sklmm.datasets import load_sleepstudy
        >>> fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
        >>> fit.test_contrast({"Days": 1}, joint=False).round(4)
           estimate  std_error    df       t  p_value
        0   10.4673     1.5458  17.0  6.7715      0.0
        """
        check_is_fitted(self)
        fitted = self._fitted
        Lm = contrast_matrix(L, list(fitted.model.fixed_names))
        method = ddf_method(fitted, ddf)
        if not joint:
            out = method.t_tests(Lm)
            if isinstance(L, pd.DataFrame):  # the contrasts keep their names
                out.index = L.index
            return out.rename(columns={"se": "std_error", "p": "p_value"})
        out = method.f_test(Lm)
        wald = out.get("F_unscaled", out["F"])  # lmerTest's sums of squares: the Wald F
        row = {
            "sum_sq": wald * out["num_df"] * self.residual_variance_,
            "mean_sq": wald * self.residual_variance_,
            "num_df": out["num_df"],
            "den_df": out["den_df"],
            "F": out["F"],
            "p_value": out["p"],
        }
        return pd.DataFrame([row])

    def anova(self, *, ddf="satterthwaite", type=3, terms=None):
        """F tests of the fixed-effects terms (lmerTest's ``anova(fit)``).

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "normal"}, default="satterthwaite"
            Denominator degrees of freedom, as in :meth:`test_contrast`.
        type : {3, 1}, default=3
            Type III: lmerTest's type III tests. For a formula that is hierarchical
            (every lower-order term of a term present) in plain variables, every term
            is tested by lmerTest's contrast, contained terms included: ``age`` in
            ``age * Sex`` is the slope averaged over the levels of ``Sex``, ``Sex``
            the difference at ``age = 0``. Otherwise (a ``terms`` mapping, no formula,
            a non-hierarchical formula, transformed variables) a term is tested by the
            joint test that its columns are 0, which is lmerTest's type III test for a
            term no other term contains; for a contained term a ``ValueError`` says
            so. Type I: sequential tests, in the order of the terms (lmerTest's
            Doolittle contrasts of ``X'X``).
        terms : dict of str to list of str, default=None
            Term name -> its fixed-effect columns (names of ``fixed_effects_``).
            ``None``: the terms of the formula; without a formula, every column is
            its own term.

        Returns
        -------
        pandas.DataFrame
            One row per term (index ``term``): ``sum_sq``, ``mean_sq``, ``num_df``,
            ``den_df``, ``F``, ``p_value``, as lmerTest's table.
        """
        check_is_fitted(self)
        if type not in (1, 3):
            raise ValueError(f"type={type!r}: expected 3 (type III) or 1 (type I, sequential)")
        fitted = self._fitted
        names = list(fitted.model.fixed_names)
        contained = type3 = None
        if terms is None and self._from_formula:
            type3 = self._design.type3_contrasts(names) if type == 3 else None
            spec = self._design.fixed_terms()
            terms = {label: cols for label, (cols, _) in spec.items()}
            factors = {label: set(f) for label, (_, f) in spec.items()}
            contained = {
                a: [b for b in factors if b != a and factors[a] < factors[b]] for a in factors
            }
        elif terms is None:
            terms = {name: [name] for name in names if name != "(Intercept)"}
        positions = {}
        for label, cols in terms.items():
            cols = [cols] if isinstance(cols, str) else list(cols)
            unknown = [c for c in cols if c not in names]
            if unknown or not cols:
                raise ValueError(
                    f"anova: the term {label!r} names {unknown or cols}, which are not "
                    f"fixed effects {names}"
                )
            positions[label] = [names.index(c) for c in cols]
        xtx = fitted.fixed_crossprod() if type == 1 else None
        return anova_table(
            ddf_method(fitted, ddf),
            positions,
            self.residual_variance_,
            type,
            xtx,
            contained,
            type3,
        )

    def bootstrap(self, n_boot=1000, *, func=None, random_state=None, n_jobs=None, progress=False):
        """Parametric bootstrap replicates (lme4's ``bootMer``, MixedModels.jl's
        ``parametricbootstrap``).

        Each replicate simulates a response from the fitted model (new random effects
        and residuals at the estimates, ``use.u = FALSE``) and refits it by the same
        criterion (REML or ML) and solver. Only the cross-products that involve the
        response change, and they are simulated exactly from the fit's statistics: a
        replicate is a refit from statistics, with no pass over the data, so ``X``,
        ``y`` and the groups are not needed again.

        Parameters
        ----------
        n_boot : int, default=1000
            Number of replicates.
        func : callable, default=None
            ``func(params) -> float or pandas.Series``, applied to each replicate's
            parameters (a Series indexed as below); ``None`` keeps the parameters. A
            number gives a one-column table (``value``); a Series (the same index for
            every replicate) one column per entry.
        random_state : int, RandomState or Generator instance, or None, default=None
            Seeds the replicates: the same seed gives the same table, whatever
            ``n_jobs``.
        n_jobs : int, default=None
            Replicates run in parallel with joblib (``None``: one process).
        progress : bool, default=False
            Show a tqdm progress bar (the ``progress`` extra: ``pip install tqdm``).

        Returns
        -------
        pandas.DataFrame
            One row per replicate. Without ``func``: the fixed effects (by name), the
            standard deviations ``"sd_<effect>|<term>"`` and correlations
            ``"cor_<a>.<b>|<term>"`` of every term and ``"sigma"`` (lme4's names of
            ``confint``), and ``converged`` / ``n_iter`` of each refit.

        Notes
        -----
        A model with one random-effects term with an intercept (or none) draws the
        statistics per level, at a cost linear in the levels. Any other model (several
        terms, nested or crossed, or a term without an intercept) draws them from a
        dense factorization of ``[Z X]'W[Z X]``, computed once; beyond 6,000 random
        effects in all that is refused with ``ValueError``.

        Examples
        --------
        >>> from sklmm import lmer
        >>> from sklmm.datasets import load_sleepstudy
        >>> fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
        >>> boot = fit.bootstrap(200, random_state=0)
        >>> list(boot.columns)[:4]
        ['(Intercept)', 'Days', 'sd_(Intercept)|Subject', 'cor_Days.(Intercept)|Subject']
        >>> bool(boot["converged"].all())
        True
        """
        from ._bootstrap import bootstrap_table

        check_is_fitted(self)
        if not isinstance(n_boot, Integral) or isinstance(n_boot, bool) or n_boot < 1:
            raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
        if func is not None and not callable(func):
            raise ValueError(f"func must be a callable of the parameters, got {func!r}")
        if n_jobs is not None and (
            not isinstance(n_jobs, Integral) or isinstance(n_jobs, bool) or n_jobs == 0
        ):
            raise ValueError(f"n_jobs must be None or a non-zero integer, got {n_jobs!r}")
        fitted = self._fitted
        table = bootstrap_table(
            fitted, int(n_boot), random_state, n_jobs, self._refit_options(), progress
        )
        if not table["converged"].all():
            warn_user(
                f"{int((~table['converged']).sum())} of {n_boot} bootstrap refits did not "
                "converge (see the converged column).",
                MixedLMConvergenceWarning,
            )
        if func is None:
            return table
        params = table.drop(columns=["converged", "n_iter"])
        values = [func(row) for _, row in params.iterrows()]
        if all(np.ndim(v) == 0 and v is not None for v in values):
            return pd.DataFrame({"value": np.asarray(values, dtype=float)})
        if all(isinstance(v, pd.Series) for v in values):
            index = values[0].index
            if all(v.index.equals(index) for v in values):
                return pd.DataFrame([v.to_numpy() for v in values], columns=index)
        raise ValueError(
            "func must return a number, or a pandas Series with the same index, for every replicate"
        )

    def ranova(self):
        """Likelihood-ratio tests of the random effects (lmerTest's ``ranova``).

        Each term is reduced in turn: a term with one column is removed, a term with
        several loses one column other than its intercept (``Days in (Days |
        Subject)`` compares with ``(1 | Subject)``). The reduced models are refitted
        from the statistics (no data needed) by the same criterion: REML fits are
        compared by their REML likelihoods (lme4's ``anova(..., refit = FALSE)``,
        valid since the fixed effects are the same). The chi-square reference is
        conservative for a variance on the boundary of its space (the p-value of a
        test of one variance is about twice the exact one).

        Returns
        -------
        pandas.DataFrame
            Rows ``"<none>"`` (the model) and one per reduction, with ``npar``,
            ``logLik``, ``AIC``, ``LRT``, ``Df`` and ``p_value``.

        Examples
        --------
        >>> from sklmm import lmer
        >>> from sklmm.datasets import load_sleepstudy
        >>> fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
        >>> fit.ranova().round(3)[["npar", "logLik", "LRT", "Df"]]  # doctest: +NORMALIZE_WHITESPACE
                                      npar   logLik     LRT   Df
        term
        <none>                           6 -871.814     NaN  NaN
        Days in (1 + Days | Subject)     4 -893.233  42.837  2.0
        """
        from ._ranova import ranova_table

        check_is_fitted(self)
        options = self._refit_options()
        options["requested_solver"] = self.solver
        options["em_max_iter"] = self.em_max_iter
        return ranova_table(self._fitted, options)

    def profile(self, alpha=0.05):
        """The likelihood profiles of every parameter (lme4's ``profile(fit)``).

        The points evaluated to find the profile intervals of :meth:`conf_int`
        (``method="profile"``): for each parameter, its value and the signed square
        root of the likelihood-ratio statistic, ``zeta`` (on the ML deviance, as lme4),
        from the estimate out to ``|zeta| = z_{1 - alpha/2}`` or the edge of the
        parameter space. :func:`sklmm.plot_profile` draws them (lme4's
        ``xyplot(profile(fit))``).

        Parameters
        ----------
        alpha : float, default=0.05
            How far out the profiles go, as the intervals of :meth:`conf_int`.

        Returns
        -------
        pandas.DataFrame
            Columns ``parameter`` (lme4's names, as :meth:`conf_int`), ``value`` and
            ``zeta``, sorted by value within each parameter.
        """
        from ._bootstrap import parameter_names
        from ._likelihood_profile import profile_table

        check_is_fitted(self)
        alpha = check_alpha(alpha)
        names = parameter_names(self._fitted.model)
        return profile_table(self._fitted, alpha, self._refit_options(), names)[1]

    def _refit_options(self):
        """The solver settings of ``fit``, for refits from the statistics."""
        one_factor = self._fitted.model.one_factor
        solver, em_max_iter = resolve_solver(self.solver, self.em_max_iter, one_factor)
        return {
            "solver": solver,
            "max_iter": self.max_iter,
            "em_max_iter": em_max_iter,
            "tol": self.tol,
        }

    def conf_int(
        self,
        method="wald",
        alpha=0.05,
        *,
        n_boot=1000,
        boot_type="percentile",
        random_state=None,
        n_jobs=None,
    ):
        """Confidence intervals for every parameter (lme4's ``confint``).

        Parameters
        ----------
        method : {"wald", "profile", "bootstrap"}, default="wald"
            ``"wald"``: the fixed effects by the normal approximation (lme4's
            ``method = "Wald"``) and the standard deviations, correlations and sigma
            by Wald intervals on the log-sd / atanh-correlation scale (where lme4
            gives NA; NaN on the boundary of a singular fit). ``"profile"``: lme4's
            default, profile-likelihood intervals: every parameter (of REML fits
            too, as lme4) on the ML deviance, the others minimised; a limit that the
            profile does not reach before the edge of the parameter space is the
            edge (0 for a standard deviation, +/-1 for a correlation), one that
            cannot be computed NaN. ``"bootstrap"``: the parametric bootstrap
            (:meth:`bootstrap`).
        alpha : float, default=0.05
            One minus the confidence level.
        n_boot, random_state, n_jobs : see :meth:`bootstrap`
            For ``method="bootstrap"``.
        boot_type : {"percentile", "basic"}, default="percentile"
            Percentile intervals (the replicates' ``alpha/2`` and ``1 - alpha/2``
            quantiles), or basic ones (twice the estimate minus those quantiles,
            swapped).

        Returns
        -------
        pandas.DataFrame
            One row per parameter, indexed by lme4's names (see :meth:`bootstrap`),
            with the columns ``"<alpha/2>"`` and ``"<1 - alpha/2>"`` (for example
            ``"2.5 %"``, ``"97.5 %"``), as R prints them.
        """
        check_is_fitted(self)
        from ._bootstrap import parameter_names, parameters

        alpha = check_alpha(alpha)
        fitted = self._fitted
        names = parameter_names(fitted.model)
        covs = [fitted.covs[t.name].to_numpy() for t in fitted.model.terms]
        estimate = pd.Series(
            parameters(fitted.model, fitted.beta, covs, fitted.sigma2), index=names
        )
        lo_name, hi_name = f"{100 * alpha / 2:g} %", f"{100 * (1 - alpha / 2):g} %"
        if method == "wald":
            fixed = self._fixed_table(alpha, "normal")
            vc, _ = fitted.variance_table(alpha)
            rows = _varcorr_positions(fitted.model.terms)  # lme4's order in VarCorr's
            lo = [*fixed.iloc[:, -2], *vc.iloc[rows, -2]]
            hi = [*fixed.iloc[:, -1], *vc.iloc[rows, -1]]
        elif method == "bootstrap":
            if boot_type not in ("percentile", "basic"):
                raise ValueError(f"boot_type={boot_type!r}: expected 'percentile' or 'basic'")
            boot = self.bootstrap(n_boot, random_state=random_state, n_jobs=n_jobs)[names]
            q_lo, q_hi = boot.quantile(alpha / 2), boot.quantile(1 - alpha / 2)
            if boot_type == "percentile":
                lo, hi = q_lo.to_numpy(), q_hi.to_numpy()
            else:
                lo, hi = (2 * estimate - q_hi).to_numpy(), (2 * estimate - q_lo).to_numpy()
        elif method == "profile":
            from ._likelihood_profile import profile_table

            # lme4 profiles every parameter on the ML deviance
            both, _ = profile_table(fitted, alpha, self._refit_options(), names)
            lo, hi = both[:, 0], both[:, 1]
        else:
            raise ValueError(f"method={method!r}: expected 'wald', 'bootstrap' or 'profile'")
        return pd.DataFrame({lo_name: lo, hi_name: hi}, index=pd.Index(names, name="parameter"))

    # Built on first use from the fitted model; documented with the class's attributes.
    @property
    def fit_log_(self):
        check_is_fitted(self)
        return self._fitted.fit_log
