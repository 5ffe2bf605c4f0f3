"""Scorers for conditional predictions: ``predict(X, groups=groups)`` under a named metric."""

from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import UNCHANGED, MetadataRequest, get_routing_for_object

from ._exceptions import NoGroupsWarning, warn_user

_SCORER_NO_GROUPS = (
    "The group scorer received groups=None, so every row gets the population prediction "
    "X beta. Inside GridSearchCV, cross_validate or cross_val_score, enable metadata routing "
    "with sklearn.set_config(enable_metadata_routing=True) and pass the groups as "
    "fit(X, y, groups=g) or params={'groups': g}; when calling the scorer yourself, pass "
    "groups=g."
)


class _GroupScorer:
    """``sign * metric(y, estimator.predict(X, groups=groups), **kwargs)``.

    Built by :func:`make_group_scorer`. Uses only scikit-learn's public routing protocol: it
    states what it consumes in :meth:`get_metadata_routing`, so meta-estimators route
    ``groups`` and ``variance_components`` (requested by default) and ``sample_weight``
    (once requested with :meth:`set_score_request`) to it.
    """

    def __init__(self, score_func, sign, kwargs, response_method="predict"):
        self._score_func = score_func
        self._sign = sign
        self._kwargs = kwargs
        self._response_method = response_method
        self._requests = {"groups": True, "variance_components": True, "sample_weight": None}

    def __call__(
        self, estimator, X, y_true, groups=None, variance_components=None, sample_weight=None
    ):
        final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
        if getattr(final, "_from_formula", False) and not isinstance(estimator, Pipeline):
            # A formula model reads its grouping factors (and the response, for a
            # two-sided formula scored with y=None) from the data.
            y_true, y_pred, weights = final._formula_targets(
                X, y_true, sample_weight, "score", response_method=self._response_method
            )
            kwargs = dict(self._kwargs)
            if weights is not None:
                kwargs["sample_weight"] = weights
            return self._sign * self._score_func(y_true, y_pred, **kwargs)
        no_labels = groups is None and variance_components is None
        if no_labels and not getattr(final, "_from_formula", False):
            warn_user(_SCORER_NO_GROUPS, NoGroupsWarning)
        labels = {"groups": groups, "variance_components": variance_components}
        labels = {k: v for k, v in labels.items() if v is not None}
        y_pred = _predict(estimator, X, labels, self._response_method)
        kwargs = dict(self._kwargs)
        if sample_weight is not None:
            kwargs["sample_weight"] = sample_weight
        return self._sign * self._score_func(y_true, y_pred, **kwargs)

    def __repr__(self):
        name = getattr(self._score_func, "__name__", repr(self._score_func))
        sign = "" if self._sign > 0 else ", greater_is_better=False"
        kwargs = "".join(f", {k}={v!r}" for k, v in self._kwargs.items())
        return f"make_group_scorer({name}{sign}{kwargs})"

    def set_score_request(
        self, *, groups=UNCHANGED, variance_components=UNCHANGED, sample_weight=UNCHANGED
    ):
        """Set the metadata this scorer requests.

        Parameters
        ----------
        groups, variance_components, sample_weight : bool, None or str, default=UNCHANGED
            ``True`` (request), ``False`` (do not request), ``None`` (error if passed) or
            an alias, as in scikit-learn's ``set_score_request``. By default ``groups`` and
            ``variance_components`` are requested and ``sample_weight`` is not.

        Returns
        -------
        self
        """
        for param, alias in (
            ("groups", groups),
            ("variance_components", variance_components),
            ("sample_weight", sample_weight),
        ):
            if alias is not UNCHANGED:
                self._requests[param] = alias
        return self

    def get_metadata_routing(self):
        """The metadata this scorer consumes (scikit-learn's routing protocol)."""
        request = MetadataRequest(owner=repr(self))
        for param, alias in self._requests.items():
            request.score.add_request(param=param, alias=alias)
        return request


def _predict(estimator, X, labels, method="predict"):
    """``estimator.<method>(X, **labels)``; a Pipeline's last step gets the labels directly.

    With metadata routing, a Pipeline passes ``groups`` to its last step's ``predict``
    only when that step requested it (``set_predict_request(groups=True)``); without the
    request the call raises, and a search would score NaN on every fold. Then, if no
    step before the last asks for metadata in ``transform``, the scorer transforms ``X``
    through those steps and hands the labels to the last one itself. Any other failure
    is raised as it is.
    """
    if not labels:
        return getattr(estimator, method)(X)
    try:
        return getattr(estimator, method)(X, **labels)
    except UnsetMetadataPassedError:
        if not isinstance(estimator, Pipeline) or _transform_requests(estimator):
            raise
    Xt = X
    for _, step in estimator.steps[:-1]:
        if step is not None and not (isinstance(step, str) and step == "passthrough"):
            Xt = step.transform(Xt)
    return _predict(estimator.steps[-1][1], Xt, labels, method)


def _transform_requests(pipeline):
    """Whether a step before the last requests metadata for ``transform``."""
    for _, step in pipeline.steps[:-1]:
        if step is None or isinstance(step, str):
            continue
        routing = get_routing_for_object(step)
        if routing.consumes("transform", ["groups", "variance_components", "sample_weight"]):
            return True
    return False


_RESPONSE_METHODS = ("predict", "predict_proba", "decision_function")


def make_group_scorer(metric, *, greater_is_better=True, response_method="predict", **kwargs):
    """Make a scorer that scores conditional predictions with a metric.

    scikit-learn's string scorers (``"r2"``, ``"neg_mean_squared_error"``) call
    ``predict(X)`` without groups, so every row gets the population prediction. The scorer
    made here calls ``estimator.predict(X, groups=groups)``: rows of groups seen in ``fit``
    get their conditional modes. With metadata routing enabled it requests ``groups``, so
    ``GridSearchCV``, ``cross_validate`` and ``cross_val_score`` pass it the validation
    rows' labels. Called directly: ``scorer(estimator, X, y, groups=g)``. For a
    ``Pipeline`` it transforms ``X`` through the steps before the last and passes the
    labels to the last step's ``predict`` itself, so the Pipeline needs no
    ``set_predict_request``. ``permutation_importance`` routes no metadata: bind the
    labels, ``functools.partial(scorer, groups=g)`` (rows in the order of ``X``).

    Parameters
    ----------
    metric : callable
        ``metric(y_true, y_pred, **kwargs)``, such as
        :func:`sklearn.metrics.mean_squared_error`.
    greater_is_better : bool, default=True
        Whether a higher ``metric`` is better; if not, the scorer returns its negative, as
        scikit-learn's ``make_scorer`` does.
    response_method : {"predict", "predict_proba", "decision_function"}, default="predict"
        The estimator's method whose output ``metric`` scores (with the labels):
        ``"predict_proba"`` passes a classifier's (n, 2) probabilities, as to
        :func:`sklearn.metrics.log_loss`; for a metric of the probability of the second
        class, such as :func:`sklearn.metrics.roc_auc_score`, use
        ``"decision_function"`` (a monotone function of it) or wrap the metric.
    **kwargs
        Further keyword arguments of ``metric``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, groups=None, variance_components=None,
        sample_weight=None)``. ``sample_weight`` is
        routed once requested with ``scorer.set_score_request(sample_weight=True)``.

    Examples
    --------
    >>> import sklearn
    >>> from sklearn.metrics import mean_squared_error
    >>> from sklearn.model_selection import GridSearchCV, KFold
    >>> from sklmm import MixedLMRegressor, make_group_scorer
    >>> from sklmm.datasets import load_sleepstudy
    >>> df = load_sleepstudy()
    >>> scorer = make_group_scorer(mean_squared_error, greater_is_better=False)
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     est = MixedLMRegressor().set_fit_request(groups=True).set_predict_request(groups=True)
    ...     search = GridSearchCV(
    ...         est,
    ...         {"random_slopes": [None, ["Days"]]},
    ...         cv=KFold(3, shuffle=True, random_state=0),
    ...         scoring=scorer,
    ...     ).fit(df[["Days"]], df["Reaction"], groups=df["Subject"])
    >>> search.best_params_
    {'random_slopes': ['Days']}
    """
    if not callable(metric):
        raise TypeError(f"metric must be a callable metric(y_true, y_pred), got {metric!r}")
    if response_method not in _RESPONSE_METHODS:
        raise ValueError(
            f"response_method={response_method!r}: expected one of {list(_RESPONSE_METHODS)}"
        )
    return _GroupScorer(metric, 1 if greater_is_better else -1, kwargs, response_method)
