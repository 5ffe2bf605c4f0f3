"""Ordinary user mistakes: each one is an error or a warning that names the cause and the fix.

One test per trap, reproducing it as a user would hit it (issue "No silent traps"):
mislabelled groups, DataFrames of other libraries, scoring without groups, group scorers
in a Pipeline, splitters for several factors, permutation importance, misleading messages,
warnings that point into scikit-learn, and the dtype of the fitted levels.
"""

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from _reference import REFERENCE
from sklearn.compose import ColumnTransformer
from sklearn.inspection import permutation_importance
from sklearn.metrics import r2_score
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    cross_validate,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklmm import (
    MixedLMConvergenceWarning,
    MixedLMRegressor,
    NoGroupsWarning,
    SingularFitWarning,
    SplitByFactor,
    make_group_scorer,
)
from sklmm.datasets import load_pastes, load_sleepstudy

pl = pytest.importorskip("polars")


@pytest.fixture(scope="module")
def sleep():
    df = load_sleepstudy()
    return df[["Days"]], df["Reaction"], df["Subject"]


def crossed(seed=0, n_subj=12, n_item=8):
    """A crossed subject x item design with two covariates."""
    rng = np.random.default_rng(seed)
    subj, item = np.meshgrid(np.arange(n_subj), np.arange(n_item), indexing="ij")
    subj, item = subj.ravel(), item.ravel()
    n = len(subj)
    X = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n)})
    y = (
        1.0
        + 2.0 * X["x"]
        + rng.normal(size=n_subj)[subj]
        + 0.7 * rng.normal(size=n_item)[item]
        + 0.5 * rng.normal(size=n)
    )
    G = pd.DataFrame({"subj": [f"s{i}" for i in subj], "item": [f"i{i}" for i in item]})
    return X, y, G


# -- 1. a named column is never fitted under another factor's name ----------------------------
@pytest.mark.parametrize("as_frame", [False, True], ids=["series", "one-column-frame"])
def test_named_groups_that_are_not_the_terms_factor_are_an_error(sleep, as_frame):
    X, y, g = sleep
    groups = g.to_frame() if as_frame else g
    est = MixedLMRegressor(random_effects="(1 | item)")
    with pytest.raises(ValueError, match=r"names the grouping factor 'item', but groups is the"):
        est.fit(X, y, groups=groups)
    assert not hasattr(est, "random_effects_")


def test_unnamed_groups_are_matched_to_the_factor_by_position(sleep):
    X, y, g = sleep
    by_position = MixedLMRegressor(random_effects="(1 | Subject)").fit(X, y, groups=g.to_numpy())
    by_name = MixedLMRegressor(random_effects="(1 | Subject)").fit(X, y, groups=g)
    assert list(by_position.random_effects_) == ["Subject"]
    assert by_position.log_likelihood_ == pytest.approx(by_name.log_likelihood_, rel=1e-12)


def test_named_dask_groups_that_are_not_the_terms_factor_are_an_error(sleep):
    dd = pytest.importorskip("dask.dataframe")
    X, y, g = sleep
    with dask_sync():
        with pytest.raises(ValueError, match="names the grouping factor 'item'"):
            MixedLMRegressor(random_effects="(1 | item)").fit(
                dd.from_pandas(X, npartitions=2),
                dd.from_pandas(y, npartitions=2),
                groups=dd.from_pandas(g, npartitions=2),
            )


def dask_sync():
    import dask

    return dask.config.set(scheduler="synchronous")


# -- 2. DataFrames of other libraries keep their names --------------------------------------
def test_polars_groups_and_variance_components_keep_their_names():
    X, y, G = crossed()
    spec = "(1 | subj) + (1 | item)"
    want = MixedLMRegressor(random_effects=spec).fit(X, y, groups=G)
    got = MixedLMRegressor(random_effects=spec).fit(
        pl.from_pandas(X), pl.Series("y", y.to_numpy()), groups=pl.from_pandas(G)
    )
    assert list(got.random_effects_) == ["subj", "item"]
    assert list(got.feature_names_in_) == ["x", "z"]
    assert got.log_likelihood_ == pytest.approx(want.log_likelihood_, rel=1e-12)
    np.testing.assert_allclose(
        got.predict(pl.from_pandas(X), groups=pl.from_pandas(G)), want.predict(X, groups=G)
    )
    vc = MixedLMRegressor().fit(X, y, variance_components=pl.from_pandas(G))
    assert list(vc.random_effects_) == ["subj", "item"]
    series = MixedLMRegressor().fit(X, y, groups=pl.from_pandas(G)["subj"])
    assert list(series.random_effects_) == ["subj"]


def test_polars_categorical_groups_stay_categorical():
    X, y, G = crossed()
    g = pl.from_pandas(G)["subj"].cast(pl.Categorical)
    est = MixedLMRegressor().fit(X, y, groups=g)
    assert isinstance(est.random_effects_["subj"].index.dtype, pd.CategoricalDtype)


# -- 3. scoring without groups -------------------------------------------------------------------
def test_score_without_groups_warns_on_a_model_with_random_effects(sleep):
    X, y, g = sleep
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    with pytest.warns(NoGroupsWarning, match=r"population predictions.*make_group_scorer"):
        population = est.score(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conditional = est.score(X, y, groups=g)
        est.predict(X)  # the population prediction by design: no warning
    assert population == pytest.approx(r2_score(y, est.predict(X)))
    assert conditional > population + 0.3
    with pytest.warns(NoGroupsWarning, match="summary"):
        est.summary(X, y)


def test_score_without_groups_is_silent_for_a_model_without_random_effects(sleep):
    X, y, _ = sleep
    with pytest.warns(NoGroupsWarning, match="fit\\(\\) received groups=None"):
        est = MixedLMRegressor().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.score(X, y)


def test_default_scoring_in_a_search_warns_unless_groups_reach_score(sleep):
    X, y, g = sleep
    cv = KFold(3, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        est = MixedLMRegressor().set_fit_request(groups=True).set_score_request(groups=False)
        with pytest.warns(NoGroupsWarning, match="score\\(\\) received no groups"):
            cross_validate(est, X, y, cv=cv, params={"groups": g})
        est.set_score_request(groups=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cross_validate(est, X, y, cv=cv, params={"groups": g})


# -- 4. make_group_scorer in a Pipeline -----------------------------------------------------
def test_group_scorer_in_a_pipeline_needs_no_predict_request(sleep):
    X, y, g = sleep
    cv = KFold(3, shuffle=True, random_state=0)
    scorer = make_group_scorer(r2_score)
    grid = {"mixedlmregressor__random_slopes": [None, ["Days"]]}
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(
            StandardScaler().set_output(transform="pandas"),
            MixedLMRegressor().set_fit_request(groups=True),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            search = GridSearchCV(pipe, grid, cv=cv, scoring=scorer).fit(X, y, groups=g)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    assert search.best_params_ == {"mixedlmregressor__random_slopes": ["Days"]}
    # the same numbers as scoring each fold's conditional predictions by hand
    for k, (train, test) in enumerate(cv.split(X)):
        est = MixedLMRegressor().fit(X.iloc[train], y.iloc[train], groups=g.iloc[train])
        pred = est.predict(X.iloc[test], groups=g.iloc[test])
        assert search.cv_results_[f"split{k}_test_score"][0] == pytest.approx(
            r2_score(y.iloc[test], pred), rel=1e-8
        )


def test_return_std_through_a_routed_pipeline_needs_its_request(sleep):
    X, y, g = sleep
    with sklearn.config_context(enable_metadata_routing=True):
        est = MixedLMRegressor().set_fit_request(groups=True).set_predict_request(groups=True)
        pipe = make_pipeline(StandardScaler().set_output(transform="pandas"), est).fit(
            X, y, groups=g
        )
        with pytest.raises(sklearn.exceptions.UnsetMetadataPassedError, match="return_std"):
            pipe.predict(X, groups=g, return_std=True)
        est.set_predict_request(groups=True, return_std=True)
        mean, std = pipe.predict(X, groups=g, return_std=True)
    assert mean.shape == std.shape == (len(y),)


# -- 5. splitters for several factors ----------------------------------------------------------
def test_group_splitters_fail_on_a_dataframe_and_split_by_factor_works():
    X, y, G = crossed()
    with pytest.raises((ValueError, IndexError)):
        next(GroupKFold(3).split(X, y, G))
    cv = SplitByFactor(GroupKFold(3), "subj")
    folds = list(cv.split(X, y, G))
    assert len(folds) == cv.get_n_splits(X, y, G) == 3
    for train, test in folds:
        assert not set(G["subj"].iloc[train]) & set(G["subj"].iloc[test])
        assert set(G["item"].iloc[test]) <= set(G["item"].iloc[train])
    est = MixedLMRegressor(random_effects="(1 | subj) + (1 | item)")
    with sklearn.config_context(enable_metadata_routing=True):
        est.set_fit_request(groups=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = cross_validate(
                est,
                X,
                y,
                cv=cv,
                scoring=make_group_scorer(r2_score),
                params={"groups": G},
                return_estimator=True,
            )
    assert np.isfinite(res["test_score"]).all()
    assert all(m.terms_ == ("(1 | subj)", "(1 | item)") for m in res["estimator"])


def test_split_by_factor_holds_out_an_interaction_and_needs_labels():
    df = load_pastes()
    G = df[["batch", "cask"]]
    logo = SplitByFactor(LeaveOneGroupOut(), "batch:cask")
    assert logo.get_n_splits(groups=G) == 30
    assert [sorted(test) for _, test in logo.split(df, groups=G)][:1] == [
        sorted(np.flatnonzero((G["batch"] == "A") & (G["cask"] == "a")))
    ]
    same = SplitByFactor(LeaveOneGroupOut(), ["batch", "cask"])
    assert same.get_n_splits(groups=G) == 30
    with pytest.raises(ValueError, match=r"no column \['sample'\]"):
        next(SplitByFactor(GroupKFold(3), "sample").split(df, groups=G))
    with pytest.raises(ValueError, match="needs groups"):
        next(SplitByFactor(GroupKFold(3), "batch").split(df))
    with pytest.raises(ValueError, match="as a DataFrame"):
        next(SplitByFactor(GroupKFold(3), "batch").split(df, groups=G.to_numpy()))
    assert repr(logo) == "SplitByFactor(cv=LeaveOneGroupOut(), factor='batch:cask')"


def test_split_by_factor_without_routing_feeds_the_splitter_only():
    X, y, G = crossed()
    est = MixedLMRegressor()
    with pytest.warns(NoGroupsWarning, match="fit\\(\\) received groups=None"):
        cross_validate(est, X, y, cv=SplitByFactor(GroupKFold(3), "subj"), groups=G)


# -- 6. permutation importance ---------------------------------------------------------------
def test_permutation_importance_with_bound_groups(sleep):
    X, y, g = sleep
    X = X.assign(noise=np.random.default_rng(0).normal(size=len(y)))
    est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    with pytest.warns(NoGroupsWarning):
        permutation_importance(est, X, y, n_repeats=2, random_state=0)
    scorer = functools.partial(make_group_scorer(r2_score), groups=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = permutation_importance(est, X, y, scoring=scorer, n_repeats=3, random_state=0)
    baseline = est.score(X, y, groups=g)
    rng = np.random.default_rng(1)
    shuffled = X.assign(Days=rng.permutation(X["Days"].to_numpy()))
    assert result.importances_mean[0] > 0.5 * (baseline - est.score(shuffled, y, groups=g))
    assert abs(result.importances_mean[1]) < 0.05


# -- messages that name the real cause ---------------------------------------------------------
def test_groups_given_as_a_column_name(sleep):
    X, y, _ = sleep
    with pytest.raises(ValueError, match=r"not a column name: pass groups=df\['Subject'\]"):
        MixedLMRegressor().fit(X, y, groups="Subject")
    with pytest.raises(ValueError, match=r"pass variance_components=df\[\['Subject'\]\]"):
        MixedLMRegressor().fit(X, y, variance_components="Subject")
    est = MixedLMRegressor().fit(X, y, groups=load_sleepstudy()["Subject"])
    with pytest.raises(ValueError, match="not a column name"):
        est.predict(X, groups="Subject")


def test_date_column_in_x(sleep):
    X, y, g = sleep
    dated = X.assign(date=pd.Timestamp("2024-01-01") + pd.to_timedelta(X["Days"], unit="D"))
    with pytest.raises(ValueError, match=r"date or duration columns \['date'\].*dt\.days"):
        MixedLMRegressor().fit(dated, y, groups=g)
    with pytest.raises(ValueError, match="dates or durations"):
        MixedLMRegressor().fit(dated[["date"]].to_numpy(), y, groups=g)


def test_non_numeric_column_suggests_drop_first(sleep):
    X, y, g = sleep
    with pytest.raises(ValueError, match=r"non-numeric columns \['cond'\].*drop='first'"):
        MixedLMRegressor().fit(X.assign(cond="a"), y, groups=g)


def test_collinear_one_hot_columns_after_a_column_transformer(sleep):
    X, y, g = sleep
    data = X.assign(cond=np.where(X["Days"] % 2 == 0, "even", "odd"))
    encode = ColumnTransformer(
        [("onehot", OneHotEncoder(sparse_output=False), ["cond"])], remainder="passthrough"
    )
    pipe = make_pipeline(encode, MixedLMRegressor())
    with pytest.raises(ValueError, match=r"\['x1'\].*drop='first'.*set_output\(transform="):
        pipe.fit(data, y, mixedlmregressor__groups=g)
    named = make_pipeline(
        ColumnTransformer(
            [("onehot", OneHotEncoder(drop="first", sparse_output=False), ["cond"])],
            remainder="passthrough",
        ).set_output(transform="pandas"),
        MixedLMRegressor(),
    )
    named.fit(data, y, mixedlmregressor__groups=g)
    assert list(named[-1].feature_names_in_) == ["onehot__cond_odd", "remainder__Days"]


def test_slope_names_without_column_names_mention_set_output(sleep):
    X, y, g = sleep
    for est in (
        MixedLMRegressor(random_slopes=["Days"]),
        MixedLMRegressor(random_effects="(1 + Days | Subject)"),
    ):
        pipe = make_pipeline(StandardScaler(), est)
        with pytest.raises(ValueError, match=r"set_output\(transform='pandas'\)"):
            pipe.fit(X, y, mixedlmregressor__groups=g.to_numpy())


# -- warnings point at the user's line ---------------------------------------------------------
def _user_lines(record, category):
    return [w.filename for w in record if issubclass(w.category, category)]


def test_warnings_point_at_the_callers_line_through_scikit_learn():
    zero = pd.read_csv(REFERENCE / "summary_print" / "zero_variance.csv")  # a singular fit
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make_pipeline(MixedLMRegressor()).fit(
            zero[["x"]], zero["y"], mixedlmregressor__groups=zero["g"]
        )
        make_pipeline(MixedLMRegressor(random_slopes=["Days"], max_iter=1)).fit(
            load_sleepstudy()[["Days"]],
            load_sleepstudy()["Reaction"],
            mixedlmregressor__groups=load_sleepstudy()["Subject"],
        )
        with sklearn.config_context(enable_metadata_routing=True):
            cross_validate(
                MixedLMRegressor().set_fit_request(groups=True),
                load_sleepstudy()[["Days"]],
                load_sleepstudy()["Reaction"],
                cv=KFold(2),
                scoring=make_group_scorer(r2_score).set_score_request(groups=False),
                params={"groups": load_sleepstudy()["Subject"]},
            )
    for category in (SingularFitWarning, MixedLMConvergenceWarning, NoGroupsWarning):
        files = _user_lines(record, category)
        assert files, category
        assert set(files) == {__file__}, (category, files)


# -- what comes back --------------------------------------------------------------------------
def test_predict_returns_an_ndarray_for_every_frame(sleep):
    X, y, g = sleep
    est = MixedLMRegressor().fit(X, y, groups=g)
    for frame, labels in ((X, g), (pl.from_pandas(X), pl.from_pandas(g.to_frame())["Subject"])):
        pred = est.predict(frame, groups=labels)
        assert type(pred) is np.ndarray and pred.shape == (len(y),)


@pytest.mark.parametrize(
    "convert, dtype",
    [
        (lambda s: s.astype("category"), "category"),
        (lambda s: s.astype(np.int64), "int64"),
        (lambda s: s.astype(np.int64).to_numpy(), "int64"),
        (lambda s: s.astype(str), None),
    ],
    ids=["categorical", "integer", "integer-array", "string"],
)
def test_fitted_levels_keep_the_labels_dtype(sleep, convert, dtype):
    X, y, g = sleep
    est = MixedLMRegressor().fit(X, y, groups=convert(g))
    (blups,) = est.random_effects_.values()
    if dtype is None:
        assert pd.api.types.is_string_dtype(blups.index.dtype)
    else:
        assert str(blups.index.dtype) == dtype
    (condvar,) = est.random_effects_condvar_.values()
    assert condvar.index.levels[0].dtype == blups.index.dtype
    # the fitted levels still match the labels at prediction
    np.testing.assert_allclose(est.predict(X, groups=convert(g)), est.predict(X, groups=g))


def test_named_groups_at_prediction_are_matched_by_name(sleep):
    X, y, g = sleep
    est = MixedLMRegressor().fit(X, y, groups=g)
    wrong = pd.Series(np.roll(g.to_numpy(), 10), name="item")
    with pytest.raises(ValueError, match=r"named \['item'\].*fitted with \['Subject'\]"):
        est.predict(X, groups=wrong)
    with pytest.raises(ValueError, match="matched by name"):
        est.score(X, y, groups=wrong)
    # unnamed labels are matched by position; so is anything for a model fitted unnamed
    np.testing.assert_array_equal(est.predict(X, groups=g.to_numpy()), est.predict(X, groups=g))
    unnamed = MixedLMRegressor().fit(X, y, groups=g.to_numpy())
    np.testing.assert_array_equal(unnamed.predict(X, groups=g), est.predict(X, groups=g))


class _Select(sklearn.base.TransformerMixin, sklearn.base.BaseEstimator):
    """A stateless column selector (no fitted attribute)."""

    def __init__(self, columns=None):
        self.columns = columns

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X[self.columns]


def test_group_scorer_keeps_working_pipelines_working(sleep):
    X, y, g = sleep
    scorer = make_group_scorer(r2_score)
    data = X.assign(other=1.0)
    pipe = make_pipeline(_Select(["Days"]), MixedLMRegressor())
    pipe.fit(data, y, mixedlmregressor__groups=g)
    expected = r2_score(y, pipe.predict(data, groups=g))
    assert scorer(pipe, data, y, groups=g) == pytest.approx(expected)
    with sklearn.config_context(enable_metadata_routing=True):
        # a stateless step, and a one-step Pipeline, without set_predict_request
        est = MixedLMRegressor().set_fit_request(groups=True)
        pipe = make_pipeline(_Select(["Days"]), est).fit(data, y, groups=g)
        assert scorer(pipe, data, y, groups=g) == pytest.approx(expected)
        one = make_pipeline(MixedLMRegressor().set_fit_request(groups=True)).fit(X, y, groups=g)
        assert scorer(one, X, y, groups=g) == pytest.approx(expected)


def test_collinearity_messages_name_the_likely_cause(sleep):
    X, y, g = sleep
    named = X.assign(x0=X["Days"], x1=2.0 * X["Days"])[["x0", "x1"]]
    with pytest.raises(ValueError, match=r"\['x1'\]") as info:
        MixedLMRegressor().fit(named, y, groups=g)
    # named columns: no hint about names, and not a sum of dummies: no one-hot hint
    assert "no column names" not in str(info.value)
    assert "OneHotEncoder" not in str(info.value)
    dummies = pd.get_dummies(np.where(X["Days"] < 5, "early", "late")).astype(float)
    with pytest.raises(ValueError, match=r"sum to a constant.*drop='first'"):
        MixedLMRegressor().fit(dummies, y, groups=g)
