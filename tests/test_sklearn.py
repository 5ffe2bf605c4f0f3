"""scikit-learn integration: estimator checks, metadata routing of ``groups``, scoring.

The scenarios and the tests that cover them:

1. estimator checks over four configurations: ``test_sklearn_estimator_checks``.
2. routing with ``enable_metadata_routing=True``: ``test_pipeline_routes_groups``,
   ``test_grid_search_routes_groups`` (GroupKFold: unseen groups, population predictions;
   KFold: seen groups, conditional predictions), ``test_grid_search_over_pipeline``,
   ``test_cross_validate_routes_groups``, ``test_cross_validate_routes_groups_in_parallel``,
   ``test_cross_val_predict_routes_groups_to_fit_only``.
3. scoring: ``test_default_scorer_receives_groups``,
   ``test_string_scorer_predicts_without_groups``, ``test_group_scorer_*``.
4. routing off: ``test_fit_with_groups_without_routing``,
   ``test_pipeline_fit_params_without_routing``,
   ``test_groups_for_the_splitter_only_warn_without_routing``,
   ``test_unrequested_groups_with_routing_raise``.
5. column names: ``test_random_slopes_by_name_*``, ``test_random_slopes_by_position_*``,
   ``test_missing_named_slope_*``, ``test_feature_names_*``.
6. ``test_clone_*``, ``test_get_set_params``, ``test_pickle_round_trip``,
   ``test_refit_*``, ``test_fit_rejects_sample_weight``, ``test_score_sample_weight*``.
7. the example ``examples/plot_model_selection.py``: ``test_model_selection_example_runs``.

Metadata routing is a global setting: the tests that need it turn it on with the ``routing``
fixture (``sklearn.config_context``), which turns it off again afterwards; ``routing`` and
``no_routing`` are in ``conftest.py``.

The groups are ``Subject`` (a named Series), so every model fitted with them has the one
random-effects term ``"Subject"``, whose levels are the index of ``random_effects_["Subject"]``.
"""

import inspect
import pickle
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    cross_val_predict,
    cross_validate,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import has_fit_parameter

from sklmm import MixedLMRegressor, NoGroupsWarning, make_group_scorer
from sklmm.datasets import load_sleepstudy

# ---------------------------------------------------------------------------------------------
# data and helpers
# ---------------------------------------------------------------------------------------------

GROUP_KFOLD = GroupKFold(n_splits=3)
# Shuffled, so that every validation fold holds rows of every subject (seen groups).
KFOLD = KFold(n_splits=3, shuffle=True, random_state=0)
PARAM_GRID = {
    "reml": [True, False],
    "covariance_type": ["unstructured", "diagonal"],
    "random_slopes": [None, ["Days"]],
}


def sleep():
    """Sleepstudy as ``X`` (DataFrame with ``Days``), ``y`` and ``groups`` (Subject)."""
    df = load_sleepstudy()
    return df[["Days"]], df["Reaction"], df["Subject"]


def sleep_wide():
    """Sleepstudy with two more columns: a numeric ``Noise`` and a categorical ``Phase``."""
    df = load_sleepstudy()
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "Days": df["Days"],
            "Noise": rng.standard_normal(len(df)),
            "Phase": np.where(df["Days"] < 5, "early", "late"),
        }
    )
    return X, df["Reaction"], df["Subject"]


def routed(est):
    """Request ``groups`` for fit, predict and score (needs routing to be on)."""
    return (
        est.set_fit_request(groups=True)
        .set_predict_request(groups=True)
        .set_score_request(groups=True)
    )


def fitted_levels(est, term="Subject"):
    """The levels of ``term`` seen in fit: the index of its random effects."""
    assert list(est.random_effects_) == [term]
    return est.random_effects_[term].index.to_numpy()


def rows(a, idx):
    return a.iloc[idx] if isinstance(a, (pd.DataFrame, pd.Series)) else a[idx]


def split(cv, X, y, g):
    """The splits of ``cv``; groups go to the group splitters only (KFold warns on them)."""
    return list(cv.split(X, y, g if isinstance(cv, GroupKFold) else None))


def fit_fold(params, X, y, g, train):
    return MixedLMRegressor(**params).fit(rows(X, train), rows(y, train), groups=rows(g, train))


def fitted_state(est):
    """The public fitted attributes (names ending in ``_``), those built on first use too."""
    state = {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}
    if state:
        state["random_effects_condvar_"] = est.random_effects_condvar_
        state["fit_log_"] = est.fit_log_
    return state


def assert_same_value(va, vb, key):
    """``va`` and ``vb`` agree (up to rounding); dicts (per-term attributes) key by key."""
    if isinstance(va, dict):
        assert isinstance(vb, dict), key
        assert list(va) == list(vb), key
        for name in va:
            assert_same_value(va[name], vb[name], f"{key}[{name!r}]")
    elif isinstance(va, pd.DataFrame):
        pd.testing.assert_frame_equal(va, vb, check_exact=False, rtol=1e-6, atol=1e-8, obj=key)
    elif isinstance(va, pd.Series):
        pd.testing.assert_series_equal(va, vb, check_exact=False, rtol=1e-6, atol=1e-8, obj=key)
    elif isinstance(va, pd.Index):
        pd.testing.assert_index_equal(va, vb, obj=key)
    elif isinstance(va, np.ndarray) and va.dtype.kind in "fc":
        np.testing.assert_allclose(va, vb, rtol=1e-6, atol=1e-8, err_msg=key)
    elif isinstance(va, np.ndarray):
        np.testing.assert_array_equal(va, vb, err_msg=key)
    elif isinstance(va, (bool, str, tuple, type(None))):
        assert va == vb, key
    else:
        assert va == pytest.approx(vb, rel=1e-6, abs=1e-8), key


def assert_same_fitted_state(a, b):
    sa, sb = fitted_state(a), fitted_state(b)
    assert sa.keys() == sb.keys()
    for key, va in sa.items():
        assert_same_value(va, sb[key], key)


def assert_same_random_effects_cov(a, b):
    """The same terms, with the same covariance matrices (whatever their labels)."""
    assert list(a.random_effects_cov_) == list(b.random_effects_cov_)
    for name, cov in a.random_effects_cov_.items():
        np.testing.assert_allclose(cov.to_numpy(), b.random_effects_cov_[name].to_numpy())


class RecordingMixedLM(MixedLMRegressor):
    """Logs the groups that each fitted copy receives in ``fit`` and ``predict``.

    Every clone made by a meta-estimator shares the class-level ``calls`` list, in which
    ``fit`` appends ``("fit", groups)`` and ``predict`` appends
    ``("predict", groups seen in fit, groups)``; ``score`` goes through ``predict``.
    """

    calls = []

    def fit(self, X, y, groups=None, *, variance_components=None):
        RecordingMixedLM.calls.append(("fit", None if groups is None else np.asarray(groups)))
        return super().fit(X, y, groups=groups, variance_components=variance_components)

    def predict(
        self, X, groups=None, *, return_std=False, include_residual=False, variance_components=None
    ):
        given = None if groups is None else np.asarray(groups)
        RecordingMixedLM.calls.append(("predict", set(fitted_levels(self)), given))
        return super().predict(
            X,
            groups=groups,
            return_std=return_std,
            include_residual=include_residual,
            variance_components=variance_components,
        )


@pytest.fixture
def recorder():
    RecordingMixedLM.calls.clear()
    yield RecordingMixedLM.calls
    RecordingMixedLM.calls.clear()


def recorded_fit_groups(calls):
    return sorted(tuple(groups) for kind, groups, *_ in calls if kind == "fit")


def recorded_predicts(calls):
    return [(call[1], call[2]) for call in calls if call[0] == "predict"]


# ---------------------------------------------------------------------------------------------
# 1. scikit-learn's estimator checks
# ---------------------------------------------------------------------------------------------

CHECKED_CONFIGURATIONS = [
    MixedLMRegressor(),  # random intercept
    MixedLMRegressor(random_slopes=[0]),  # random slope by position
    MixedLMRegressor(random_slopes=[0, 1], covariance_type="diagonal"),
    MixedLMRegressor(reml=False),  # ML
]


def expected_failed_checks(estimator):
    """The checks this estimator fails on purpose, each with its reason."""
    failures = {
        "check_regressors_no_decision_function": (
            "The check fits y = X[:, 0] exactly. A perfect fit leaves no residual variance, "
            "so the likelihood is unbounded; fit refuses it with a ValueError that says so."
        ),
        "check_non_transformer_estimators_n_iter": (
            "The checks fit without groups, so the model has no variance parameters: beta "
            "and sigma2 are closed-form and n_iter_ truthfully reports 0 iterations."
        ),
        "check_sample_weights_shape": (
            "The check's y is 2.5 - 0.5 X[:, 1] exactly, a fit that fit refuses (no residual "
            "variance). tests/test_weights.py checks the same errors on data with noise."
        ),
        "check_sample_weights_not_overwritten": (
            "The check's y is fitted exactly, which fit refuses. tests/test_weights.py "
            "checks that the weights are not modified on data with noise."
        ),
        "check_sample_weight_equivalence_on_dense_data": (
            "The check fits 30 columns to at most 15 distinct rows, more fixed effects than "
            "rows, which fit refuses. tests/test_weights.py checks that a zero weight equals "
            "removing the row, and how integer weights relate to repeated rows (the same "
            "beta and BLUPs at given variance parameters; precision, not frequency, weights)."
        ),
    }
    if estimator.random_slopes is None:
        failures["check_estimators_empty_data_messages"] = (
            "An intercept-only model (lme4 y ~ 1 + (1 | g)) is fitted from an X with zero "
            "columns, so X without features is valid input and fit does not raise."
        )
    return failures


# The checks call fit without groups, which warns NoGroupsWarning by design.
@pytest.mark.filterwarnings("ignore::sklmm.NoGroupsWarning")
@parametrize_with_checks(CHECKED_CONFIGURATIONS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------------
# 2. metadata routing of groups (enable_metadata_routing=True)
# ---------------------------------------------------------------------------------------------


def test_pipeline_routes_groups(routing):
    X, y, g = sleep()
    pipe = make_pipeline(StandardScaler(), routed(MixedLMRegressor(random_slopes=[0])))
    pipe.fit(X, y, groups=g)

    model = pipe[-1]
    np.testing.assert_array_equal(fitted_levels(model), np.unique(g))
    assert list(model.random_effects_["Subject"].columns) == ["(Intercept)", "x0"]
    Xt = pipe[:-1].transform(X)
    direct = MixedLMRegressor(random_slopes=[0]).fit(Xt, y, groups=g)
    assert_same_random_effects_cov(model, direct)

    conditional = pipe.predict(X, groups=g)
    population = pipe.predict(X)
    np.testing.assert_allclose(conditional, direct.predict(Xt, groups=g))
    np.testing.assert_allclose(population, direct.predict(Xt))
    assert not np.allclose(conditional, population)
    assert pipe.score(X, y, groups=g) == pytest.approx(r2_score(y, conditional))
    with pytest.warns(NoGroupsWarning, match="population predictions"):
        assert pipe.score(X, y) == pytest.approx(r2_score(y, population))


@pytest.mark.parametrize(
    ("cv", "seen"),
    [(GROUP_KFOLD, False), (KFOLD, True)],
    ids=["GroupKFold-unseen-groups", "KFold-seen-groups"],
)
def test_grid_search_routes_groups(routing, recorder, cv, seen):
    X, y, g = sleep()
    est = RecordingMixedLM().set_fit_request(groups=True).set_score_request(groups=True)
    search = GridSearchCV(est, PARAM_GRID, cv=cv).fit(X, y, groups=g)
    splits = split(cv, X, y, g)
    n_candidates = len(search.cv_results_["params"])
    assert n_candidates == 8

    # Splitter: groups reached it (GroupKFold raises without them) and it produced these splits.
    # Fit: each fold's model saw exactly the groups of its training rows; the refit saw all.
    expected = [tuple(g.iloc[train]) for train, _ in splits] * n_candidates + [tuple(g)]
    assert recorded_fit_groups(recorder) == sorted(expected)
    np.testing.assert_array_equal(fitted_levels(search.best_estimator_), np.unique(g))

    # Scoring: the default scorer (score) received the validation groups: unseen groups
    # (population predictions) with GroupKFold, seen groups (conditional) with KFold.
    predicts = recorded_predicts(recorder)
    assert len(predicts) == n_candidates * len(splits)
    for fit_groups, given in predicts:
        assert given is not None
        if seen:
            assert set(given) <= fit_groups
        else:
            assert fit_groups.isdisjoint(given)

    # The reported scores are the R^2 of those predictions, recomputed fold by fold.
    for i, params in enumerate(search.cv_results_["params"]):
        for k, (train, test) in enumerate(splits):
            model = fit_fold(params, X, y, g, train)
            conditional = model.predict(X.iloc[test], groups=g.iloc[test])
            population = model.predict(X.iloc[test])
            score = search.cv_results_[f"split{k}_test_score"][i]
            assert score == pytest.approx(r2_score(y.iloc[test], conditional))
            if seen:
                assert score > r2_score(y.iloc[test], population) + 0.1
            else:
                np.testing.assert_allclose(conditional, population)


def test_grid_search_over_pipeline(routing):
    X, y, g = sleep_wide()
    X = X[["Days", "Noise"]]
    pipe = Pipeline(
        [
            ("scale", StandardScaler().set_output(transform="pandas")),
            ("lmm", routed(MixedLMRegressor())),
        ]
    )
    grid = {f"lmm__{name}": values for name, values in PARAM_GRID.items()}
    search = GridSearchCV(pipe, grid, cv=KFOLD).fit(X, y, groups=g)

    best = search.best_estimator_
    assert best.named_steps["lmm"].random_slopes == ["Days"]
    np.testing.assert_array_equal(fitted_levels(best.named_steps["lmm"]), np.unique(g))
    # With the random slope, conditional R^2 on seen subjects is far above the intercept-only.
    results = pd.DataFrame(search.cv_results_)
    with_slope = results["param_lmm__random_slopes"].apply(lambda s: s is not None)
    assert results.loc[with_slope, "mean_test_score"].min() > (
        results.loc[~with_slope, "mean_test_score"].max()
    )
    train, test = next(KFOLD.split(X))
    model = clone(pipe).set_params(**search.cv_results_["params"][0])
    model.fit(X.iloc[train], y.iloc[train], groups=g.iloc[train])
    expected = r2_score(y.iloc[test], model.predict(X.iloc[test], groups=g.iloc[test]))
    assert search.cv_results_["split0_test_score"][0] == pytest.approx(expected)


@pytest.mark.parametrize("cv", [GROUP_KFOLD, KFOLD], ids=["GroupKFold", "KFold"])
def test_cross_validate_routes_groups(routing, cv):
    X, y, g = sleep()
    est = routed(MixedLMRegressor(random_slopes=["Days"]))
    result = cross_validate(
        est, X, y, cv=cv, params={"groups": g}, return_estimator=True, return_indices=True
    )
    splits = split(cv, X, y, g)
    for k, model in enumerate(result["estimator"]):
        train, test = result["indices"]["train"][k], result["indices"]["test"][k]
        np.testing.assert_array_equal(train, splits[k][0])
        np.testing.assert_array_equal(fitted_levels(model), np.unique(g.iloc[train]))
        conditional = model.predict(X.iloc[test], groups=g.iloc[test])
        assert result["test_score"][k] == pytest.approx(r2_score(y.iloc[test], conditional))
        if cv is KFOLD:
            assert not np.allclose(conditional, model.predict(X.iloc[test]))


def test_cross_validate_routes_groups_in_parallel(routing):
    """Requests and groups survive the trip to worker processes."""
    X, y, g = sleep()
    est = routed(MixedLMRegressor(random_slopes=["Days"]))
    result = cross_validate(
        est,
        X,
        y,
        cv=GROUP_KFOLD,
        params={"groups": g},
        n_jobs=2,
        return_estimator=True,
        return_indices=True,
    )
    for model, train in zip(result["estimator"], result["indices"]["train"], strict=True):
        np.testing.assert_array_equal(fitted_levels(model), np.unique(g.iloc[train]))


def test_cross_val_predict_routes_groups_to_fit_only(routing, recorder):
    """cross_val_predict (scikit-learn 1.9) routes params to split and fit, not to predict.

    Its out-of-fold predictions are therefore population predictions, even for rows of groups
    seen in the fold's fit; for conditional out-of-fold predictions, use
    ``cross_validate(..., return_estimator=True, return_indices=True)`` and call
    ``predict(X_test, groups=g_test)`` on each fold's model (the second half of this test).
    """
    X, y, g = sleep()
    est = RecordingMixedLM(random_slopes=["Days"]).set_fit_request(groups=True)
    est.set_predict_request(groups=True)
    pred = cross_val_predict(est, X, y, cv=KFOLD, params={"groups": g})
    splits = list(KFOLD.split(X))
    assert recorded_fit_groups(recorder) == sorted(tuple(g.iloc[tr]) for tr, _ in splits)
    assert all(given is None for _, given in recorded_predicts(recorder))

    conditional = np.empty(len(y))
    for train, test in splits:
        model = fit_fold({"random_slopes": ["Days"]}, X, y, g, train)
        np.testing.assert_allclose(pred[test], model.predict(X.iloc[test]))
        conditional[test] = model.predict(X.iloc[test], groups=g.iloc[test])

    result = cross_validate(
        routed(MixedLMRegressor(random_slopes=["Days"])),
        X,
        y,
        cv=KFOLD,
        params={"groups": g},
        return_estimator=True,
        return_indices=True,
    )
    recipe = np.empty(len(y))
    for model, test in zip(result["estimator"], result["indices"]["test"], strict=True):
        recipe[test] = model.predict(X.iloc[test], groups=g.iloc[test])
    np.testing.assert_allclose(recipe, conditional)
    assert mean_squared_error(y, recipe) < 0.5 * mean_squared_error(y, pred)


# ---------------------------------------------------------------------------------------------
# 3. scoring
# ---------------------------------------------------------------------------------------------


def test_default_scorer_receives_groups(routing):
    X, y, g = sleep()
    est = routed(MixedLMRegressor(random_slopes=["Days"]))
    scores = cross_validate(est, X, y, cv=KFOLD, params={"groups": g})["test_score"]
    for k, (train, test) in enumerate(KFOLD.split(X)):
        model = fit_fold({"random_slopes": ["Days"]}, X, y, g, train)
        expected = model.score(X.iloc[test], y.iloc[test], groups=g.iloc[test])
        assert scores[k] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("scoring", "metric", "sign"),
    [("r2", r2_score, 1), ("neg_mean_squared_error", mean_squared_error, -1)],
)
def test_string_scorer_predicts_without_groups(routing, recorder, scoring, metric, sign):
    """The pitfall that make_group_scorer fixes: string scorers call predict(X)."""
    X, y, g = sleep()
    est = RecordingMixedLM(random_slopes=["Days"]).set_fit_request(groups=True)
    search = GridSearchCV(est, {"reml": [True]}, cv=KFOLD, scoring=scoring, refit=False)
    search.fit(X, y, groups=g)
    assert all(given is None for _, given in recorded_predicts(recorder))
    for k, (train, test) in enumerate(KFOLD.split(X)):
        model = fit_fold({"random_slopes": ["Days"]}, X, y, g, train)
        population = model.predict(X.iloc[test])
        expected = sign * metric(y.iloc[test], population)
        assert search.cv_results_[f"split{k}_test_score"][0] == pytest.approx(expected)


def test_group_scorer_direct_call(no_routing):
    X, y, g = sleep()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    conditional = est.predict(X, groups=g)

    mse = make_group_scorer(mean_squared_error, greater_is_better=False)
    assert mse(est, X, y, groups=g) == pytest.approx(-mean_squared_error(y, conditional))
    r2 = make_group_scorer(r2_score)
    assert r2(est, X, y, groups=g) == pytest.approx(est.score(X, y, groups=g))

    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    expected = -mean_squared_error(y, conditional, sample_weight=w)
    assert mse(est, X, y, groups=g, sample_weight=w) == pytest.approx(expected)

    # Extra keyword arguments go to the metric.
    raw = make_group_scorer(r2_score, multioutput="raw_values")
    np.testing.assert_allclose(raw(est, X, y, groups=g), [est.score(X, y, groups=g)])


def test_group_scorer_without_groups_warns(no_routing):
    X, y, g = sleep()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    scorer = make_group_scorer(mean_squared_error, greater_is_better=False)
    with pytest.warns(NoGroupsWarning, match="enable_metadata_routing"):
        score = scorer(est, X, y)
    assert score == pytest.approx(-mean_squared_error(y, est.predict(X)))


@pytest.mark.parametrize(
    ("cv", "seen"), [(GROUP_KFOLD, False), (KFOLD, True)], ids=["GroupKFold", "KFold"]
)
def test_group_scorer_in_grid_search(routing, recorder, cv, seen):
    X, y, g = sleep()
    est = RecordingMixedLM().set_fit_request(groups=True).set_predict_request(groups=True)
    scorer = make_group_scorer(mean_absolute_error, greater_is_better=False)
    search = GridSearchCV(est, PARAM_GRID, cv=cv, scoring=scorer).fit(X, y, groups=g)

    for fit_groups, given in recorded_predicts(recorder):
        assert given is not None
        assert (set(given) <= fit_groups) if seen else fit_groups.isdisjoint(given)
    splits = split(cv, X, y, g)
    for i, params in enumerate(search.cv_results_["params"]):
        for k, (train, test) in enumerate(splits):
            model = fit_fold(params, X, y, g, train)
            conditional = model.predict(X.iloc[test], groups=g.iloc[test])
            expected = -mean_absolute_error(y.iloc[test], conditional)
            assert search.cv_results_[f"split{k}_test_score"][i] == pytest.approx(expected)
    if seen:
        assert search.best_params_["random_slopes"] == ["Days"]


def test_group_scorer_multimetric(routing):
    X, y, g = sleep()
    est = routed(MixedLMRegressor())
    scoring = {
        "mse": make_group_scorer(mean_squared_error, greater_is_better=False),
        "r2": "r2",
        "default_like": make_group_scorer(r2_score),
    }
    search = GridSearchCV(est, PARAM_GRID, cv=KFOLD, scoring=scoring, refit="mse")
    search.fit(X, y, groups=g)
    assert search.best_params_["random_slopes"] == ["Days"]
    train, test = next(KFOLD.split(X))
    model = fit_fold(search.cv_results_["params"][0], X, y, g, train)
    conditional = model.predict(X.iloc[test], groups=g.iloc[test])
    population = model.predict(X.iloc[test])
    results = search.cv_results_
    assert results["split0_test_mse"][0] == pytest.approx(
        -mean_squared_error(y.iloc[test], conditional)
    )
    assert results["split0_test_r2"][0] == pytest.approx(r2_score(y.iloc[test], population))
    assert results["split0_test_default_like"][0] == pytest.approx(
        r2_score(y.iloc[test], conditional)
    )


def test_group_scorer_in_pipeline(routing):
    X, y, g = sleep()
    pipe = make_pipeline(
        StandardScaler().set_output(transform="pandas"),
        MixedLMRegressor(random_slopes=["Days"])
        .set_fit_request(groups=True)
        .set_predict_request(groups=True),
    )
    scorer = make_group_scorer(mean_squared_error, greater_is_better=False)
    scores = cross_validate(pipe, X, y, cv=KFOLD, scoring=scorer, params={"groups": g})
    for k, (train, test) in enumerate(KFOLD.split(X)):
        model = clone(pipe).fit(X.iloc[train], y.iloc[train], groups=g.iloc[train])
        conditional = model.predict(X.iloc[test], groups=g.iloc[test])
        expected = -mean_squared_error(y.iloc[test], conditional)
        assert scores["test_score"][k] == pytest.approx(expected)


def test_group_scorer_routes_sample_weight_on_request(routing):
    X, y, g = sleep()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    # The weights weigh the score only, not the fit.
    est = MixedLMRegressor(random_slopes=["Days"]).set_fit_request(groups=True, sample_weight=False)
    scorer = make_group_scorer(mean_squared_error, greater_is_better=False)
    # Like scikit-learn's scorers, sample_weight must be requested before it is routed.
    with pytest.raises(UnsetMetadataPassedError, match="sample_weight"):
        cross_validate(
            est, X, y, cv=KFOLD, scoring=scorer, params={"groups": g, "sample_weight": w}
        )
    scorer.set_score_request(sample_weight=True)
    scores = cross_validate(
        est, X, y, cv=KFOLD, scoring=scorer, params={"groups": g, "sample_weight": w}
    )["test_score"]
    for k, (train, test) in enumerate(KFOLD.split(X)):
        model = fit_fold({"random_slopes": ["Days"]}, X, y, g, train)
        conditional = model.predict(X.iloc[test], groups=g.iloc[test])
        expected = -mean_squared_error(y.iloc[test], conditional, sample_weight=w[test])
        assert scores[k] == pytest.approx(expected)


def test_group_scorer_pickles():
    scorer = make_group_scorer(mean_squared_error, greater_is_better=False)
    X, y, g = sleep()
    est = MixedLMRegressor().fit(X, y, groups=g)
    again = pickle.loads(pickle.dumps(scorer))
    assert again(est, X, y, groups=g) == scorer(est, X, y, groups=g)


# ---------------------------------------------------------------------------------------------
# 4. routing off (the default)
# ---------------------------------------------------------------------------------------------


def test_fit_with_groups_without_routing(no_routing):
    X, y, g = sleep()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    assert est.random_effects_["Subject"].shape == (18, 2)
    assert not np.allclose(est.predict(X, groups=g), est.predict(X))


def test_pipeline_fit_params_without_routing(no_routing):
    X, y, g = sleep()
    pipe = make_pipeline(
        StandardScaler().set_output(transform="pandas"), MixedLMRegressor(random_slopes=["Days"])
    )
    pipe.fit(X, y, mixedlmregressor__groups=g)
    model = pipe[-1]
    np.testing.assert_array_equal(fitted_levels(model), np.unique(g))
    Xt = pipe[:-1].transform(X)
    # Without routing, Pipeline.predict passes its keyword arguments to the last step.
    np.testing.assert_allclose(pipe.predict(X, groups=g), model.predict(Xt, groups=g))


@pytest.mark.parametrize("meta", ["cross_validate", "GridSearchCV"])
def test_groups_for_the_splitter_only_warn_without_routing(no_routing, meta):
    """Without routing, ``groups=g`` goes to the splitter only: fit warns how to fix it."""
    X, y, g = sleep()
    est = MixedLMRegressor()
    with pytest.warns(NoGroupsWarning, match="enable_metadata_routing") as record:
        if meta == "cross_validate":
            cross_validate(est, X, y, groups=g, cv=GROUP_KFOLD)
        else:
            GridSearchCV(est, {"reml": [True, False]}, cv=GROUP_KFOLD).fit(X, y, groups=g)
    message = next(str(w.message) for w in record if w.category is NoGroupsWarning)
    assert "groups=None" in message
    assert "set_fit_request(groups=True)" in message


def test_unrequested_groups_with_routing_raise(routing):
    """With routing on, scikit-learn itself says to request groups."""
    X, y, g = sleep()
    with pytest.raises(UnsetMetadataPassedError, match="set_fit_request"):
        cross_validate(MixedLMRegressor(), X, y, cv=GROUP_KFOLD, params={"groups": g})


# ---------------------------------------------------------------------------------------------
# 5. random slopes by column name or position; feature names
# ---------------------------------------------------------------------------------------------


def test_random_slopes_by_position_match_names(no_routing):
    X, y, g = sleep_wide()
    X = X[["Noise", "Days"]]
    by_name = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    by_position = MixedLMRegressor(random_slopes=[1]).fit(X.to_numpy(), y, groups=g)
    by_position_df = MixedLMRegressor(random_slopes=[1]).fit(X, y, groups=g)
    for other in (by_position, by_position_df):
        np.testing.assert_allclose(other.coef_, by_name.coef_)
        assert_same_random_effects_cov(other, by_name)
        np.testing.assert_allclose(
            other.random_effects_["Subject"].to_numpy(),
            by_name.random_effects_["Subject"].to_numpy(),
        )
    assert list(by_name.random_effects_["Subject"].columns) == ["(Intercept)", "Days"]
    assert list(by_position_df.random_effects_["Subject"].columns) == ["(Intercept)", "Days"]
    assert list(by_position.random_effects_["Subject"].columns) == ["(Intercept)", "x1"]
    np.testing.assert_allclose(
        by_position.predict(X.to_numpy(), groups=g), by_name.predict(X, groups=g)
    )


def test_random_slopes_by_name_after_set_output(no_routing):
    X, y, g = sleep_wide()
    X = X[["Days", "Noise"]]
    pipe = make_pipeline(
        StandardScaler().set_output(transform="pandas"), MixedLMRegressor(random_slopes=["Days"])
    )
    pipe.fit(X, y, mixedlmregressor__groups=g)
    model = pipe[-1]
    assert list(model.feature_names_in_) == ["Days", "Noise"]
    assert model.n_features_in_ == 2
    assert list(model.random_effects_["Subject"].columns) == ["(Intercept)", "Days"]
    np.testing.assert_array_equal(pipe[:-1].get_feature_names_out(), model.feature_names_in_)
    np.testing.assert_array_equal(pipe.feature_names_in_, ["Days", "Noise"])

    scaled = StandardScaler().fit_transform(X)
    by_position = MixedLMRegressor(random_slopes=[0]).fit(scaled, y, groups=g)
    np.testing.assert_allclose(pipe.predict(X, groups=g), by_position.predict(scaled, groups=g))


def test_random_slopes_by_name_after_column_transformer(no_routing):
    X, y, g = sleep_wide()
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["Days", "Noise"]),
            ("cat", OneHotEncoder(drop="first", sparse_output=False), ["Phase"]),
        ]
    ).set_output(transform="pandas")
    pipe = make_pipeline(pre, MixedLMRegressor(random_slopes=["num__Days"]))
    pipe.fit(X, y, mixedlmregressor__groups=g)
    model = pipe[-1]
    names = ["num__Days", "num__Noise", "cat__Phase_late"]
    assert list(model.feature_names_in_) == names
    assert model.n_features_in_ == 3
    np.testing.assert_array_equal(pipe[:-1].get_feature_names_out(), names)
    assert list(model.random_effects_["Subject"].columns) == ["(Intercept)", "num__Days"]
    by_position = MixedLMRegressor(random_slopes=[0]).fit(pre.transform(X).to_numpy(), y, groups=g)
    assert_same_random_effects_cov(model, by_position)


def test_missing_named_slope_after_transform(no_routing):
    X, y, g = sleep()
    pre = ColumnTransformer([("num", StandardScaler(), ["Days"])]).set_output(transform="pandas")
    pipe = make_pipeline(pre, MixedLMRegressor(random_slopes=["Days"]))
    with pytest.raises(ValueError, match="'Days'") as excinfo:
        pipe.fit(X, y, mixedlmregressor__groups=g)
    assert "num__Days" in str(excinfo.value)  # the columns that are there


def test_missing_named_slope_without_column_names(no_routing):
    X, y, g = sleep()
    pipe = make_pipeline(StandardScaler(), MixedLMRegressor(random_slopes=["Days"]))
    with pytest.raises(ValueError, match=r"'Days'.*no column names"):
        pipe.fit(X, y, mixedlmregressor__groups=g)


def test_feature_names_from_arrays_and_frames(no_routing):
    X, y, g = sleep_wide()
    X = X[["Days", "Noise"]]
    est = MixedLMRegressor().fit(X, y, groups=g)
    np.testing.assert_array_equal(est.feature_names_in_, ["Days", "Noise"])
    assert est.n_features_in_ == 2
    # Columns in another order at predict time are refused rather than silently misread.
    with pytest.raises(ValueError, match="same order"):
        est.predict(X[["Noise", "Days"]])
    est.fit(X.to_numpy(), y, groups=g)
    assert not hasattr(est, "feature_names_in_")
    assert est.n_features_in_ == 2


# ---------------------------------------------------------------------------------------------
# 6. clone, params, pickling, refitting, sample_weight
# ---------------------------------------------------------------------------------------------


def test_clone_copies_parameters_not_fitted_state(no_routing):
    X, y, g = sleep()
    est = MixedLMRegressor(random_slopes=["Days"], covariance_type="diagonal", reml=False)
    est.fit(X, y, groups=g)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert fitted_state(copy) == {}
    assert_same_fitted_state(copy.fit(X, y, groups=g), est)


def test_clone_keeps_metadata_requests(routing):
    est = routed(MixedLMRegressor())
    again = pickle.loads(pickle.dumps(clone(est)))
    routing_info = again.get_metadata_routing()
    for method in ("fit", "predict", "score"):
        assert getattr(routing_info, method).requests["groups"] is True


def test_get_set_params(no_routing):
    est = MixedLMRegressor()
    defaults = {
        name: param.default
        for name, param in inspect.signature(MixedLMRegressor).parameters.items()
    }
    assert est.get_params() == defaults
    assert defaults["random_slopes"] is None
    assert est.set_params(random_slopes=["Days"], reml=False) is est
    assert est.get_params()["random_slopes"] == ["Days"]
    assert est.reml is False
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(slopes=["Days"])

    pipe = make_pipeline(StandardScaler(), MixedLMRegressor())
    pipe.set_params(mixedlmregressor__covariance_type="diagonal")
    assert pipe[-1].covariance_type == "diagonal"


def test_pickle_round_trip(no_routing):
    X, y, g = sleep()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    again = pickle.loads(pickle.dumps(est))
    assert_same_fitted_state(again, est)
    np.testing.assert_array_equal(again.predict(X, groups=g), est.predict(X, groups=g))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    new = pd.DataFrame({"Days": [0, 5]})
    np.testing.assert_array_equal(
        again.predict(new, groups=["308", "unseen"]), est.predict(new, groups=["308", "unseen"])
    )


def test_refit_on_other_data_leaves_no_state(no_routing):
    X, y, g = sleep_wide()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X[["Days", "Noise"]], y, groups=g)
    assert est.random_effects_["Subject"].shape == (18, 2)

    # Other rows, other groups, other columns, no random slope, numpy input.
    keep = g.isin(sorted(g.unique())[:10]).to_numpy()
    X2, y2, g2 = X.loc[keep, ["Days"]].to_numpy(), y[keep], g[keep]
    est.set_params(random_slopes=None).fit(X2, y2, groups=g2)
    fresh = MixedLMRegressor().fit(X2, y2, groups=g2)
    assert_same_fitted_state(est, fresh)
    np.testing.assert_array_equal(fitted_levels(est), np.unique(g2))
    assert list(est.random_effects_["Subject"].columns) == ["(Intercept)"]
    # One 1 x 1 conditional covariance per level: the old (10, 1, 1) array.
    assert list(est.random_effects_condvar_) == ["Subject"]
    condvar = est.random_effects_condvar_["Subject"]
    assert condvar.shape == (10 * 1, 1)
    assert condvar.index.get_level_values("Subject").nunique() == 10
    assert list(condvar.index.get_level_values("effect").unique()) == ["(Intercept)"]
    assert est.n_features_in_ == 1
    assert not hasattr(est, "feature_names_in_")

    # And back: the first fit is reproduced exactly.
    est.set_params(random_slopes=["Days"]).fit(X[["Days", "Noise"]], y, groups=g)
    first = MixedLMRegressor(random_slopes=["Days"]).fit(X[["Days", "Noise"]], y, groups=g)
    assert_same_fitted_state(est, first)


def test_refit_with_groups_after_fit_without(no_routing):
    X, y, g = sleep()
    est = MixedLMRegressor()
    with pytest.warns(NoGroupsWarning):
        est.fit(X, y)
    assert est.random_effects_ == {}  # no random effects
    est.fit(X, y, groups=g)
    assert_same_fitted_state(est, MixedLMRegressor().fit(X, y, groups=g))


def test_fit_takes_sample_weight(no_routing):
    """fit has sample_weight: meta-estimators see it, and it changes the fit."""
    X, y, g = sleep()
    est = MixedLMRegressor()
    assert has_fit_parameter(est, "sample_weight")
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    weighted = est.fit(X, y, groups=g, sample_weight=w).log_likelihood_
    assert weighted != MixedLMRegressor().fit(X, y, groups=g).log_likelihood_
    assert "precision weights" in MixedLMRegressor.fit.__doc__.lower()


def test_score_sample_weight(no_routing):
    X, y, g = sleep()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(y))
    expected = r2_score(y, est.predict(X, groups=g), sample_weight=w)
    assert est.score(X, y, groups=g, sample_weight=w) == pytest.approx(expected)
    # A zero weight equals removing the row.
    w[::3] = 0.0
    keep = w > 0
    assert est.score(X, y, groups=g, sample_weight=w) == pytest.approx(
        est.score(X[keep], y[keep], groups=g[keep], sample_weight=w[keep])
    )


def test_score_sample_weight_routed_to_default_scorer(routing):
    X, y, g = sleep()
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    est = MixedLMRegressor().set_fit_request(groups=True, sample_weight=False)
    est.set_score_request(groups=True, sample_weight=True)
    scores = cross_validate(est, X, y, cv=KFOLD, params={"groups": g, "sample_weight": w})
    train, test = next(KFOLD.split(X))
    model = fit_fold({}, X, y, g, train)
    expected = model.score(X.iloc[test], y.iloc[test], groups=g.iloc[test], sample_weight=w[test])
    assert scores["test_score"][0] == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# 7. the model-selection example
# ---------------------------------------------------------------------------------------------


def test_model_selection_example_runs(capsys):
    path = Path(__file__).resolve().parents[1] / "examples" / "plot_model_selection.py"
    namespace = runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert "ranked by the log-likelihood of unseen subjects" in out
    assert namespace["search"].best_params_["random_slopes"] == ["Days"]
    assert not sklearn.get_config()["enable_metadata_routing"]
