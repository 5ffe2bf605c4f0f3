"""What every sklmm estimator shares: from the user's inputs to the model's rows, and back.

:class:`MixedModelBase` holds the plumbing of :class:`~sklmm.MixedLMRegressor` and the
GLMM estimators (:mod:`sklmm._glm_estimator`): the validation of ``X``, ``y``, the
label arguments and the weights, the random-effects terms and their levels, the
formula front end, the rows left out (missing values, weights of zero), and
prediction of the linear predictor from the levels seen in ``fit`` (a level not seen
adds nothing: lme4's ``allow.new.levels``). A subclass says how a model is built from
the prepared arrays (:meth:`MixedModelBase._build_model`) and how it is fitted.
"""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from ._exceptions import (
    MissingDataWarning,
    NoGroupsWarning,
    SingularFitWarning,
    warn_lost_levels,
    warn_user,
)
from ._fitted import predict_labels
from ._terms import (
    encode_terms,
    label_sources,
    lost_levels,
    match_terms,
    resolve_terms,
    slope_positions,
)
from ._validation import (
    as_pandas,
    check_sample_weight,
    check_slope_labels,
    label_columns,
    prepare_X,
)

_POPULATION = {
    "score": (
        "score() received no groups, so it scores the population predictions X beta "
        "(lme4's re.form = NA), not the conditional ones. Pass score(X, y, groups=g); in "
        "GridSearchCV or cross_validate route groups to score with metadata routing and "
        "set_score_request(groups=True), or use scoring=make_group_scorer(...). See "
        "'Pitfalls' in the documentation's scikit-learn page."
    ),
    "summary": (
        "summary() received X and y but no groups, so its scaled residuals are those of "
        "the population predictions X beta, not lme4's conditional residuals. Pass "
        "summary(X, y, groups=g)."
    ),
}


def _n_rows(X):
    """Rows of the data given with a formula (any DataFrame or array)."""
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None else len(X)


def _expand(out, keep):
    """Predictions (and standard deviations) on all rows: ``NaN`` where ``keep`` is false."""
    if keep.all():
        return out
    parts = out if isinstance(out, tuple) else (out,)
    full = []
    for a in parts:
        b = np.full(len(keep), np.nan)
        b[keep] = a
        full.append(b)
    return tuple(full) if isinstance(out, tuple) else full[0]


def _is_dask_collection(obj):
    """Whether ``obj`` is a Dask collection, without importing Dask."""
    return type(obj).__module__.partition(".")[0] in ("dask", "dask_expr")


def _term_signature(terms):
    """The terms' names, columns and covariance types (a warm start needs them equal)."""
    return tuple((t.name, tuple(t.columns), t.covariance) for t in terms)


def check_offset(offset, n):
    """An offset (one finite number per row) as a float array, or ``None``."""
    if offset is None:
        return None
    values = np.asarray(as_pandas(offset), dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"offset must be 1-D, one number per row of X; got shape {values.shape}")
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("offset must be numbers, one per row of X") from None
    if len(values) != n:
        raise ValueError(f"offset has {len(values)} values, X has {n} rows")
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise ValueError(f"offset must be finite; rows {bad} are not")
    return values


def _from_fitted(name):
    """A read-only fitted attribute: the fitted model's ``name``, built on first use."""

    def get(self):
        check_is_fitted(self)
        return getattr(self._fitted, name)

    return property(get, doc=f"The fitted model's {name} (see the estimator's Attributes).")


class MixedModelBase(BaseEstimator):
    """The shared plumbing of the mixed-model estimators (see the module docstring)."""

    # -- hooks ------------------------------------------------------------------------
    def _build_model(self, X, y, terms, codes, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def _dask_model(self, X, y, groups, variance_components, sample_weight, offset=None):
        raise NotImplementedError  # pragma: no cover - abstract

    # -- fit ----------------------------------------------------------------------------
    def _warm_start_state(self):
        """What a ``warm_start`` refit may start from: the last fit's terms (their names,
        columns and covariance types) and its fitted model; ``None`` without one."""
        if not getattr(self, "warm_start", False) or "_fitted" not in self.__dict__:
            return None
        fitted = self._fitted
        return _term_signature(fitted.model.terms), fitted

    def _dask_inputs(self, X, y, groups, variance_components, sample_weight):
        """Checked Dask inputs (:class:`~sklmm._dask.DaskData`), the terms with their levels
        (the first pass over the partitions) and that pass's summary."""
        from ._dask import DaskData

        if self.random_effects is None and _is_dask_collection(X) and hasattr(X, "columns"):
            check_slope_labels(X._meta, self.random_slopes)
        data = DaskData(X, y, groups, variance_components, sample_weight)
        self.n_features_in_ = data.n_features
        if data.feature_names is not None:
            self.feature_names_in_ = np.asarray(data.feature_names, dtype=object)
        terms = self._terms_for(None, data.groups_names, data.vc_names)
        return data, terms, data.summarize(terms)

    def _prepare(self, X, y, groups, variance_components, sample_weight, offset=None):
        """The model of the inputs of ``fit`` (formula, Dask or in-memory arrays)."""
        inputs = (X, y, groups, variance_components, sample_weight)
        self.n_rows_dropped_, self.rows_dropped_ = 0, pd.Index([])
        if self.formula is not None:
            return self._formula_model(*inputs, offset=offset)
        if any(_is_dask_collection(a) for a in (*inputs, offset)):
            self._check_spec(groups, variance_components)
            return self._dask_model(*inputs, offset=offset)
        self._check_spec(groups, variance_components)
        return self._memory_model(*inputs, offset=offset)

    def _reset(self):
        """Forget every fitted attribute (a refit may be of another kind of model)."""
        for name in list(vars(self)):
            if name.endswith("_") and not name.startswith("__"):
                delattr(self, name)
        self.__dict__.pop("_fitted", None)
        self.__dict__.pop("_design", None)

    def _check_spec(self, groups, variance_components):
        """Errors for combinations of parameters and label arguments that contradict."""
        if self.random_effects is None:
            return
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
        if groups is None:
            raise ValueError(
                f"random_effects={self.random_effects!r} names grouping factors, but "
                "groups=None; pass groups (a DataFrame with one column per factor)"
            )

    def _feature_names(self):
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return [f"x{j}" for j in range(self.n_features_in_)]
        return [str(c) for c in names]

    def _terms_for(self, n_samples, groups_cols, vc_cols):
        """The model's terms for these label columns (before their levels)."""
        if self._from_formula:
            return resolve_terms(
                self._design.random_effects,
                np.zeros(0, dtype=int),
                "unstructured",
                self._design.names,
                groups_cols,
                vc_cols,
            )
        slopes = np.zeros(0, dtype=int)
        if self.random_effects is None and self.random_slopes is not None:
            slopes = slope_positions(
                self.random_slopes,
                getattr(self, "feature_names_in_", None),
                self.n_features_in_,
                n_samples,
            )
        return resolve_terms(
            self.random_effects,
            slopes,
            self.covariance_type,
            self._feature_names(),
            groups_cols,
            vc_cols,
            names_given=hasattr(self, "feature_names_in_"),
        )

    def _formula_model(self, X, y, groups, variance_components, sample_weight, offset=None):
        """The model of a formula: the design's arrays through the in-memory path."""
        from ._design import FormulaDesign

        self._check_formula_spec(groups, variance_components)
        if any(_is_dask_collection(a) for a in (X, y, sample_weight)):
            raise ValueError(
                "a formula needs in-memory data: a Dask collection cannot be passed with "
                "formula=...; build the model matrix per partition and use random_effects "
                "with groups (see the Dask page), or compute the data first"
            )
        design = FormulaDesign(self.formula, self.na_action)
        n_all = _n_rows(X)
        weights = check_sample_weight(sample_weight, n_all)
        offset = check_offset(offset, n_all)
        Xm, y, groups, keep = design.fit(X, y)
        self._design = design
        self.n_features_in_ = len(design.variables)
        self.feature_names_in_ = np.asarray(design.variables, dtype=object)
        if not keep.all():
            index = getattr(as_pandas(X), "index", pd.RangeIndex(n_all))
            self.n_rows_dropped_ = int((~keep).sum())
            self.rows_dropped_ = index[~keep]
            warn_user(
                f"{self.n_rows_dropped_} of {n_all} rows have missing values in the "
                "formula's variables and are left out of the fit (lme4's na.action = "
                "na.omit; rows_dropped_ lists them; na_action='raise' raises instead).",
                MissingDataWarning,
            )
            weights = None if weights is None else weights[keep]
            offset = None if offset is None else offset[keep]
        if Xm.shape[0] < 2:
            raise ValueError(
                f"the formula leaves {Xm.shape[0]} row(s) of data ({self.n_rows_dropped_} "
                "with missing values); a fit needs at least 2"
            )
        return self._arrays_model(
            Xm,
            y,
            label_columns(groups, "groups", Xm.shape[0]),
            label_columns(None, "variance_components", Xm.shape[0]),
            weights,
            fit_intercept=design.fit_intercept,
            feature_names=design.names,
            n_fixed=design.n_fixed,
            names_given="formula",
            offset=offset,
        )

    def _check_formula_spec(self, groups, variance_components):
        """Errors for arguments that a formula makes redundant or contradicts."""
        given = {
            "random_effects": self.random_effects is not None,
            "random_slopes": self.random_slopes is not None,
            "covariance_type": self.covariance_type != "unstructured",
            "fit_intercept": not self.fit_intercept,
            "groups": groups is not None,
            "variance_components": variance_components is not None,
        }
        bad = [k for k, v in given.items() if v]
        if bad:
            raise ValueError(
                f"formula={self.formula!r} says the whole model, so {bad} must be left at "
                "their defaults: drop them (random terms, slopes and covariances go in the "
                "formula's bar terms, '0 +' removes the intercept, and the grouping factors "
                "are columns of the data)"
            )

    def _memory_model(self, X, y, groups, variance_components, sample_weight, offset=None):
        X = prepare_X(X)
        if self.random_effects is None:
            check_slope_labels(X, self.random_slopes)
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
        return self._arrays_model(
            X,
            y,
            label_columns(groups, "groups", n),
            label_columns(variance_components, "variance_components", n),
            check_sample_weight(sample_weight, n),
            fit_intercept=self.fit_intercept,
            feature_names=self._feature_names(),
            names_given=hasattr(self, "feature_names_in_"),
            offset=check_offset(offset, n),
        )

    def _arrays_model(
        self,
        X,
        y,
        groups_cols,
        vc_cols,
        weights,
        *,
        fit_intercept,
        feature_names,
        names_given,
        n_fixed=None,
        offset=None,
    ):
        """The model of validated arrays and label columns (both in-memory paths)."""
        n = X.shape[0]
        all_terms = None
        if weights is not None and not (weights > 0).all():
            # Rows of weight 0 are left out, as if absent: the levels they alone had too.
            all_terms = self._terms_for(n, groups_cols, vc_cols)
            encode_terms(all_terms, label_sources(groups_cols, vc_cols))
            keep = weights > 0
            X, y, weights = X[keep], y[keep], weights[keep]
            offset = None if offset is None else offset[keep]
            groups_cols, vc_cols = groups_cols.subset(keep), vc_cols.subset(keep)
            n = X.shape[0]
        terms = self._terms_for(n, groups_cols, vc_cols)
        codes = encode_terms(terms, label_sources(groups_cols, vc_cols))
        if all_terms is not None:
            warn_lost_levels(lost_levels(all_terms, terms))
        return self._build_model(
            X,
            y,
            terms,
            codes,
            fit_intercept=fit_intercept,
            feature_names=feature_names,
            label_columns={"groups": groups_cols.names(), "variance_components": vc_cols.names()},
            weights=weights,
            names_given=names_given,
            n_fixed=n_fixed,
            offset=offset,
        )

    def _formula_rows(self, X, groups, variance_components, with_response, method):
        """The design's arrays for new data of a formula model, and the complete rows."""
        if groups is not None or variance_components is not None:
            raise ValueError(
                f"the model was fitted from formula={self._design.formula!r}: {method}() takes the "
                "grouping factors from the data's columns; leave groups and "
                "variance_components None"
            )
        if _is_dask_collection(X):
            raise ValueError("a formula model predicts from in-memory data, not Dask")
        Xm, g, y, keep = self._design.transform(X, with_response)
        if not keep.all():
            warn_user(
                f"{int((~keep).sum())} of {len(keep)} rows have missing values in the "
                f"formula's variables: {method}() "
                + ("gives them NaN." if method == "predict" else "leaves them out."),
                MissingDataWarning,
            )
        return Xm, g, y, keep

    def _predict_design(self, Xm, g, return_std=False, include_residual=False):
        """Predictions for a formula design's arrays, the grouping factors of the data.

        A term whose factor column is absent gives its population prediction.
        """
        columns = {} if g is None else {("groups", c): g[c].to_numpy() for c in g.columns}
        levels = match_terms(self._fitted.model.terms, columns, Xm.shape[0])
        return self._fitted.predict(
            Xm, levels, return_std=return_std, include_residual=include_residual
        )

    def _response(self, raw, response_method):
        """The predictions of ``response_method`` from the fitted model's raw predictions."""
        if response_method != "predict":
            raise ValueError(f"{type(self).__name__} has no {response_method}()")
        return raw

    def _formula_targets(
        self,
        X,
        y,
        sample_weight,
        method,
        groups=None,
        variance_components=None,
        response_method="predict",
        offset=None,
    ):
        """``(y_true, y_pred, weights)`` of a formula model on the complete rows of ``X``
        (label arguments are refused: the data holds the grouping factors)."""
        Xm, g, y_data, keep = self._formula_rows(X, groups, variance_components, y is None, method)
        if g is None and self._fitted.model.terms:
            warn_user(
                f"the data has none of the grouping factors {self._design.factors}, so "
                f"{method}() uses the population predictions (lme4's re.form = NA), not "
                "the conditional ones.",
                NoGroupsWarning,
            )
        if y is None:
            if y_data is None:
                raise ValueError(
                    f"the formula {self._design.formula!r} is one-sided: pass y to {method}()"
                )
            y_true = y_data
        else:
            y_true = np.asarray(as_pandas(y), dtype=float).reshape(-1)
            if len(y_true) != len(keep):
                raise ValueError(f"y has {len(y_true)} rows, the data {len(keep)}")
            y_true = y_true[keep]
        weights = check_sample_weight(sample_weight, len(keep))
        weights = None if weights is None else weights[keep]
        raw = self._predict_design(Xm, g)
        if offset is not None:  # a GLMM's: one per row of the data, the complete ones kept
            raw = raw + check_offset(offset, len(keep))[keep]
        return y_true, self._response(raw, response_method), weights

    def _warn_population(self, method, groups, variance_components):
        """Warn when a model with random effects is scored without any labels."""
        check_is_fitted(self)
        if groups is None and variance_components is None and self._fitted.model.terms:
            warn_user(_POPULATION[method], NoGroupsWarning)

    @property
    def _from_formula(self):
        """Whether the fitted model came from a formula (the fitted state, not the
        parameter, which ``set_params`` may have changed since)."""
        return "_design" in self.__dict__

    def _get_metadata_request(self):
        """Metadata requests; with a formula, ``groups`` is not requested unless set.

        A formula model reads its grouping factors from the data, so under metadata
        routing the group labels given to ``GridSearchCV(...).fit(data, groups=g)`` go to
        the splitter only (``GroupKFold``), with no ``set_fit_request`` call needed.
        """
        requests = super()._get_metadata_request()
        if self.formula is not None:
            for method in ("fit", "predict", "score"):
                request = getattr(requests, method)
                if request.requests.get("groups") is None:
                    request.add_request(param="groups", alias=False)
        return requests

    def __sklearn_is_fitted__(self):
        """Fitted once a fit completed (a fit that fails validation leaves it unfitted)."""
        return hasattr(self, "_fitted")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # -- fitted attributes ----------------------------------------------------------------
    def _set_results(self, fitted, converged, n_iter):
        """The fitted attributes every model has, from its fitted model (user scale)."""
        beta = fitted.beta
        if fitted.model.fit_intercept:
            self.intercept_, self.coef_ = float(beta[0]), beta[1:].copy()
        else:
            self.intercept_, self.coef_ = 0.0, beta.copy()
        self.terms_ = tuple(str(t.spec) for t in fitted.model.terms)
        self.log_likelihood_ = fitted.log_likelihood
        self.fixed_effects_cov_ = fitted.fixed_cov
        self.n_params_ = fitted.n_params
        self.aic_, self.bic_ = fitted.aic, fitted.bic
        self.converged_ = bool(converged)
        self.n_iter_ = int(n_iter)
        self.is_singular_ = bool(fitted.singular)
        self._fitted = fitted

    # The labelled attributes (the fixed effects' Series, the per-term DataFrames) are
    # built from the fitted model on first use (pandas objects cost more than a small
    # fit's optimization, and a grid search's fits never read them); documented with each
    # estimator's attributes.
    fixed_effects_ = _from_fitted("fixed_effects")
    random_effects_ = _from_fitted("blups")
    random_effects_cov_ = _from_fitted("covs")
    random_effects_condvar_ = _from_fitted("condvars")
    variance_components_ = _from_fitted("variance_components")

    def _warn_singular(self, fitted):
        """:class:`~sklmm.SingularFitWarning` for a fit on the boundary, with the sd's."""
        if not fitted.singular:
            return
        sd = {
            f"{name}: {col}": round(float(np.sqrt(max(cov.loc[col, col], 0.0))), 6)
            for name in fitted.singular
            for cov in [fitted.covs[name]]
            for col in cov.columns
        }
        warn_user(
            "Boundary (singular) fit: the random-effects covariance of the term(s) "
            f"{fitted.singular} is singular (standard deviations {sd}); a variance is "
            "zero or a correlation is +/-1. The estimates are the optimum on the "
            "boundary. Consider a simpler random-effects structure (fewer random "
            "slopes, or a diagonal covariance).",
            SingularFitWarning,
        )

    # -- predict ------------------------------------------------------------------------
    def _predict_raw(
        self, X, groups, variance_components, return_std=False, include_residual=False
    ):
        """The fitted model's predictions for the inputs of ``predict`` (the linear
        predictor of a GLMM, without any offset)."""
        check_is_fitted(self)
        if self._from_formula:
            Xm, g, _, keep = self._formula_rows(X, groups, variance_components, False, "predict")
            out = self._predict_design(Xm, g, return_std, include_residual)
            return _expand(out, keep)
        if any(_is_dask_collection(a) for a in (X, groups, variance_components)):
            from ._dask import predict_dask

            def check_features(empty):
                validate_data(
                    self,
                    empty,
                    reset=False,
                    ensure_min_samples=0,
                    ensure_min_features=0,
                    dtype=np.float64,
                )

            return predict_dask(
                self._fitted,
                X,
                groups,
                variance_components,
                check_features,
                return_std=return_std,
                include_residual=include_residual,
            )
        X = validate_data(self, prepare_X(X), reset=False, ensure_min_features=0, dtype=np.float64)
        n = X.shape[0]
        return predict_labels(
            self._fitted,
            X,
            label_columns(groups, "groups", n),
            label_columns(variance_components, "variance_components", n),
            return_std=return_std,
            include_residual=include_residual,
        )
