"""MixedLMRegressorCV: one pass over the rows, the same scores as GridSearchCV.

GridSearchCV fits every candidate on every training set from the rows and scores the
held-out rows with the estimator's ``score`` given the groups (metadata routing) or with
``make_group_scorer``; MixedLMRegressorCV does both from per-fold statistics. Equal to
1e-8 for row-wise folds (seen groups, conditional predictions) and whole-group folds
(population predictions).
"""

import numpy as np
import pandas as pd
import pytest
from _simulate import unbalanced
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, ShuffleSplit

from sklmm import MixedLMRegressor, MixedLMRegressorCV, likelihood_ratio_test, make_group_scorer
from sklmm.datasets import load_sleepstudy

CANDIDATES = {
    "random_slopes": [None, ["Days"]],
    "reml": [True, False],
    "covariance_type": ["unstructured", "diagonal"],
}


def sleep(extra=False):
    df = load_sleepstudy()
    X = df[["Days"]]
    if extra:
        rng = np.random.default_rng(0)
        X = X.assign(noise=rng.normal(size=len(df)))
    return X, df["Reaction"], df["Subject"]


def assert_split_scores(ours, theirs, atol):
    """Every ``split<k>_test_score`` of two searches equal to ``atol``."""
    keys = [k for k in theirs.cv_results_ if k.startswith("split") and k.endswith("_test_score")]
    assert keys and keys == [k for k in ours.cv_results_ if k in keys]
    for key in keys:
        np.testing.assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=atol)


def grid_search(X, y, g, cv, scoring=None, candidates=CANDIDATES, **base):
    est = MixedLMRegressor(**base).set_fit_request(groups=True).set_score_request(groups=True)
    return GridSearchCV(est, candidates, cv=cv, scoring=scoring).fit(X, y, groups=g)


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
@pytest.mark.parametrize(
    "cv",
    [KFold(5, shuffle=True, random_state=0), GroupKFold(3), KFold(4)],
    ids=["rows-shuffled", "whole-groups", "rows-blocks"],
)
def test_scores_equal_grid_search(routing, cv):
    X, y, g = sleep()
    ours = MixedLMRegressorCV(candidates=CANDIDATES, cv=cv).fit(X, y, groups=g)
    theirs = grid_search(X, y, g, cv)
    assert ours.n_splits_ == theirs.n_splits_
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    assert_split_scores(ours, theirs, atol=1e-8)
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], atol=1e-8
    )
    # The best is the same up to ties (REML and ML give the same beta on balanced data).
    best = theirs.cv_results_["mean_test_score"][ours.best_index_]
    assert best == pytest.approx(theirs.best_score_, abs=1e-8)


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")  # a noise slope: boundary fits
@pytest.mark.parametrize(
    ("scoring", "metric"),
    [
        ("neg_mean_squared_error", lambda y, p: mean_squared_error(y, p)),
        ("neg_root_mean_squared_error", lambda y, p: np.sqrt(mean_squared_error(y, p))),
    ],
)
def test_other_scores_and_columns(routing, scoring, metric):
    X, y, g = sleep(extra=True)
    candidates = {"random_slopes": [None, ["Days"], ["Days", "noise"]], "reml": [False]}
    cv = KFold(5, shuffle=True, random_state=1)
    ours = MixedLMRegressorCV(candidates=candidates, cv=cv, scoring=scoring).fit(X, y, groups=g)
    scorer = make_group_scorer(metric, greater_is_better=False)
    theirs = grid_search(X, y, g, cv, scoring=scorer, candidates=candidates)
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], rtol=1e-8
    )


def _unbalanced(seed):
    """6 to 29 groups, one with 70% of the rows when ``seed % 4 == 0`` (``_simulate``)."""
    return unbalanced(seed)


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
@pytest.mark.filterwarnings("ignore::sklmm.MixedLMConvergenceWarning")
@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("seed", [0, 32, 33, 34])
def test_scores_equal_grid_search_where_the_likelihood_has_several_optima(
    routing, seed, warm_start
):
    # Fits warm-started from another fold's estimates ended in worse optima than
    # GridSearchCV's cold fits here (split scores 1e-3 to 5e-2 apart): by default every
    # fit is cold, and with warm_start these designs have too few levels to start warm.
    X, y, g = _unbalanced(seed)
    candidates = {
        "random_slopes": [["x0", "x1"]],
        "reml": [seed % 2 == 1],
        "covariance_type": ["unstructured", "diagonal"],
    }
    cv = KFold(3, shuffle=True, random_state=seed)
    ours = MixedLMRegressorCV(candidates=candidates, cv=cv, warm_start=warm_start)
    ours.fit(X, y, groups=g)
    theirs = grid_search(X, y, g, cv, candidates=candidates)
    assert_split_scores(ours, theirs, atol=1e-8)
    direct = MixedLMRegressor(**ours.best_params_).fit(X, y, groups=g)
    assert ours.best_estimator_.log_likelihood_ == pytest.approx(direct.log_likelihood_, abs=1e-8)


def test_refit_is_the_best_candidate_on_all_rows():
    X, y, g = sleep()
    ours = MixedLMRegressorCV(candidates=CANDIDATES, cv=KFold(5, shuffle=True, random_state=0))
    ours.fit(X, y, groups=g)
    direct = MixedLMRegressor(**ours.best_params_).fit(X, y, groups=g)
    np.testing.assert_allclose(ours.predict(X, g), direct.predict(X, g))
    assert ours.score(X, y, groups=g) == pytest.approx(direct.score(X, y, groups=g))
    assert set(ours.cv_results_["rank_test_score"]) <= set(range(1, 9))
    # The refit comes from the summed statistics of the folds, not a second pass: the same
    # fitted model as a direct fit, attribute by attribute.
    best = ours.best_estimator_
    assert best.get_params() == MixedLMRegressor(**ours.best_params_).get_params()
    assert best.log_likelihood_ == pytest.approx(direct.log_likelihood_, rel=1e-12)
    assert best.residual_variance_ == pytest.approx(direct.residual_variance_, rel=1e-8)
    pd.testing.assert_series_equal(best.fixed_effects_, direct.fixed_effects_, rtol=1e-8)
    np.testing.assert_allclose(best.fixed_effects_cov_, direct.fixed_effects_cov_, rtol=1e-7)
    (name,) = direct.random_effects_
    pd.testing.assert_frame_equal(
        best.random_effects_[name], direct.random_effects_[name], rtol=1e-7
    )
    pd.testing.assert_frame_equal(
        best.random_effects_cov_[name], direct.random_effects_cov_[name], rtol=1e-7
    )
    pd.testing.assert_frame_equal(
        best.random_effects_condvar_[name], direct.random_effects_condvar_[name], rtol=1e-7
    )
    assert list(best.feature_names_in_) == list(direct.feature_names_in_)
    assert best.n_features_in_ == direct.n_features_in_ and best.converged_
    assert str(best.summary()) == str(direct.summary())
    np.testing.assert_allclose(
        best.predict(X, g, return_std=True)[1], direct.predict(X, g, return_std=True)[1], rtol=1e-7
    )
    # it sees the same data as a direct fit: a likelihood-ratio test accepts the pair
    other = {**ours.best_params_, "random_slopes": None, "reml": False}
    null = MixedLMRegressor(**other).fit(X, y, groups=g)
    assert best.random_effects_cov_[name].shape[0] > 1  # the best has the Days slope
    ours_lrt = likelihood_ratio_test(null, best)
    direct_lrt = likelihood_ratio_test(null, direct)
    assert ours_lrt["Chisq"].iloc[-1] == pytest.approx(direct_lrt["Chisq"].iloc[-1], rel=1e-6)


def test_a_candidate_too_large_for_its_training_rows_scores_nan():
    # 10 groups of 3 rows, 3 random effects per group: 30 random effects, 30 rows in all;
    # a training set of 2/3 of the rows has fewer rows than random effects.
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(10), 3)
    X = pd.DataFrame({"a": rng.standard_normal(30), "b": rng.standard_normal(30)})
    y = X["a"] + rng.standard_normal(10)[g] + rng.standard_normal(30)
    cv = KFold(3, shuffle=True, random_state=0)
    search = MixedLMRegressorCV(candidates={"random_slopes": [None, ["a", "b"]]}, cv=cv)
    with pytest.warns(FitFailedWarning, match="score NaN"):
        search.fit(X, y, groups=g)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores[0]) and np.isnan(scores[1])
    assert list(search.cv_results_["rank_test_score"]) == [1, 2]
    assert search.best_params_ == {"random_slopes": None}


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
def test_no_intercept_and_default_candidates(routing):
    X, y, g = sleep()
    cv = KFold(3, shuffle=True, random_state=2)
    ours = MixedLMRegressorCV(cv=cv, fit_intercept=False).fit(X, y, groups=g)
    assert [p["random_slopes"] for p in ours.cv_results_["params"]] == [None, ["Days"]]
    theirs = grid_search(
        X, y, g, cv, candidates={"random_slopes": [None, ["Days"]]}, fit_intercept=False
    )
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], atol=1e-8
    )


def test_errors():
    X, y, g = sleep()
    with pytest.raises(ValueError, match="candidates may set"):
        MixedLMRegressorCV(candidates={"solver": ["lbfgs"]}).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="overlap"):
        MixedLMRegressorCV(cv=ShuffleSplit(3, test_size=0.2, random_state=0)).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="groups"):
        MixedLMRegressorCV().fit(X, y, groups=None)
    with pytest.raises(ValueError, match="one grouping factor"):
        MixedLMRegressorCV().fit(X, y, groups=pd.DataFrame({"a": g, "b": g}))


def test_candidate_fits_on_the_boundary_warn_once():
    """GridSearchCV's fits would each warn; the CV estimator warns once, naming them."""
    from sklmm import SingularFitWarning

    X, y, g = sleep(extra=True)
    candidates = {"random_slopes": [["noise"], ["Days", "noise"]]}
    with pytest.warns(SingularFitWarning, match="fold"):
        MixedLMRegressorCV(candidates=candidates, cv=KFold(5, shuffle=True, random_state=0)).fit(
            X, y, groups=g
        )


def test_warm_started_candidates_run_newton_alone():
    X, y, g = sleep()
    est = MixedLMRegressor(random_slopes=["Days"], warm_start=True).fit(X, y, groups=g)
    half = X["Days"] < 8
    est.fit(X[half], y[half], groups=g[half])
    cold = MixedLMRegressor(random_slopes=["Days"]).fit(X[half], y[half], groups=g[half])
    assert est.n_iter_ < cold.n_iter_
    assert est._fitted.opt.log[0]["phase"] == "newton"
    np.testing.assert_allclose(est.log_likelihood_, cold.log_likelihood_, rtol=1e-10)


@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
def test_constant_and_one_row_folds_score_as_r2_score(routing):
    """A fold with a constant y scores as r2_score's force_finite (0 unless predicted
    exactly), as GridSearchCV's."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(6), 10)
    x = rng.normal(size=60)
    y = 1 + x + rng.normal(size=6)[g] + rng.normal(size=60)
    y[g == 0] = 5.0
    X = pd.DataFrame({"x": x})
    cand = {"random_slopes": [None, ["x"]]}
    cv = GroupKFold(6)
    ours = MixedLMRegressorCV(candidates=cand, cv=cv).fit(X, y, groups=g)
    theirs = grid_search(X, y, g, cv, candidates=cand)
    assert_split_scores(ours, theirs, atol=1e-8)
    assert ours.best_index_ == theirs.best_index_


def test_one_column_groups_frame_and_empty_candidates():
    X, y, g = sleep()
    frame = MixedLMRegressorCV(cv=GroupKFold(3)).fit(X, y, groups=g.to_frame())
    series = MixedLMRegressorCV(cv=GroupKFold(3)).fit(X, y, groups=g)
    np.testing.assert_allclose(
        frame.cv_results_["mean_test_score"], series.cv_results_["mean_test_score"]
    )
    with pytest.raises(ValueError, match="empty"):
        MixedLMRegressorCV(candidates=[]).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="numbers"):
        MixedLMRegressorCV().fit(X, np.array(["a"] * len(y)), groups=g)


# -- warm_start=True ----------------------------------------------------------------------
WARM_CANDIDATES = {
    "random_slopes": [None, ["x0"]],
    "reml": [True, False],
    "covariance_type": ["unstructured", "diagonal"],
}


def many_groups(noise=False):
    """150 groups of 6 rows, a random intercept and slope: enough levels for warm fits."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(150), 6)
    x0 = rng.standard_normal(len(g))
    b = rng.standard_normal((150, 2)) * [1.0, 0.5]
    y = 1 + 2 * x0 + b[g, 0] + b[g, 1] * x0 + rng.standard_normal(len(g))
    X = pd.DataFrame({"x0": x0})
    if noise:
        X["noise"] = rng.standard_normal(len(g))
    return X, y, g.astype(str)


@pytest.fixture
def optimize_calls(monkeypatch):
    """Every call of the candidate fits' optimizer: (warm-started, result, blocks)."""
    import sklmm._cv

    calls, original = [], sklmm._cv.optimize

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((bool(kwargs.get("warm")), result, kwargs["blocks"]))
        return result

    monkeypatch.setattr(sklmm._cv, "optimize", spy)
    return calls


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize(
    "cv",
    [KFold(5, shuffle=True, random_state=0), GroupKFold(3), KFold(4)],
    ids=["rows-shuffled", "whole-groups", "rows-blocks"],
)
def test_warm_start_scores_equal_grid_search(routing, optimize_calls, cv, fit_intercept):
    import sklmm._cv

    # Levels missing from a training set (whole-group folds), other centrings (row
    # blocks), no fixed intercept: the warm fits start from their structure's cold fit on
    # other rows and end at the cold fits' optima (to about 2e-9 here).
    X, y, g = many_groups()
    warm = MixedLMRegressorCV(
        candidates=WARM_CANDIDATES, cv=cv, warm_start=True, fit_intercept=fit_intercept
    ).fit(X, y, groups=g)
    # 4 structures (slopes x covariance type): one cold fit each, the other fits (the
    # other folds, ML and REML) and the refit warm, by Newton alone.
    flags = [w for w, *_ in optimize_calls]
    n_fits = 8 * warm.n_splits_
    assert flags.count(False) == 4 and flags.count(True) == n_fits - 4 + 1
    assert all(res.n_iter <= sklmm._cv.WARM_MAX_ITER for w, res, _ in optimize_calls if w)
    warm_iter = sum(res.n_iter for _, res, _ in optimize_calls)
    optimize_calls.clear()
    theirs = grid_search(X, y, g, cv, candidates=WARM_CANDIDATES, fit_intercept=fit_intercept)
    assert_split_scores(warm, theirs, atol=1e-8)
    optimize_calls.clear()
    cold = MixedLMRegressorCV(candidates=WARM_CANDIDATES, cv=cv, fit_intercept=fit_intercept)
    cold.fit(X, y, groups=g)
    assert not any(w for w, *_ in optimize_calls)
    assert warm_iter < 0.5 * sum(res.n_iter for _, res, _ in optimize_calls)
    # The refit too: a direct fit's optimum, to the convergence rule.
    best = MixedLMRegressor(fit_intercept=fit_intercept, **warm.best_params_).fit(X, y, groups=g)
    assert warm.best_estimator_.log_likelihood_ == pytest.approx(best.log_likelihood_, abs=1e-8)


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
def test_warm_start_needs_enough_levels(routing, optimize_calls):
    # Sleepstudy's 18 subjects: too few levels, every fit cold, GridSearchCV's scores.
    X, y, g = sleep()
    cv = KFold(5, shuffle=True, random_state=0)
    warm = MixedLMRegressorCV(candidates=CANDIDATES, cv=cv, warm_start=True)
    warm.fit(X, y, groups=g)
    assert len(optimize_calls) == 41 and not any(w for w, *_ in optimize_calls)
    theirs = grid_search(X, y, g, cv)
    assert_split_scores(warm, theirs, atol=1e-8)


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
def test_warm_fits_that_miss_the_rule_are_redone_cold(routing, optimize_calls, monkeypatch):
    import sklmm._cv

    # No warm fit is kept within 0 iterations: each is redone cold, so the scores are the
    # cold search's (GridSearchCV's) exactly.
    monkeypatch.setattr(sklmm._cv, "WARM_MAX_ITER", 0)
    X, y, g = many_groups()
    cv = GroupKFold(3)
    warm = MixedLMRegressorCV(candidates=WARM_CANDIDATES, cv=cv, warm_start=True)
    warm.fit(X, y, groups=g)
    flags = [w for w, *_ in optimize_calls]
    assert flags.count(True) == 21 and flags.count(False) == 25
    theirs = grid_search(X, y, g, cv, candidates=WARM_CANDIDATES)
    assert_split_scores(warm, theirs, atol=1e-12)


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
def test_warm_fits_on_the_boundary_are_redone_cold(routing, optimize_calls):
    from sklmm._optimize import on_boundary

    # A noise slope: some training sets' optima have its variance at 0. Those cold fits
    # cannot start others; a warm fit that ends on the boundary is redone cold (the cold
    # fit also tries other starts there); the interior ones are kept.
    X, y, g = many_groups(noise=True)
    candidates = {"random_slopes": [["x0", "noise"]], "reml": [True, False]}
    cv = KFold(5, shuffle=True, random_state=0)
    warm = MixedLMRegressorCV(candidates=candidates, cv=cv, warm_start=True)
    warm.fit(X, y, groups=g)
    flags = [w for w, *_ in optimize_calls]
    boundary = [on_boundary(res.theta, blocks) for _, res, blocks in optimize_calls]
    redone = [i for i, w in enumerate(flags) if w and boundary[i]]
    assert redone and all(not flags[i + 1] for i in redone)
    root = flags.index(True) - 1  # the cold fit the warm ones start from: interior
    assert root > 0 and all(boundary[:root]) and not boundary[root]
    assert flags.count(True) > len(redone)  # the interior warm fits are kept
    theirs = grid_search(X, y, g, cv, candidates=candidates)
    assert_split_scores(warm, theirs, atol=1e-8)


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
def test_two_optima_in_a_cold_fit_stop_the_warm_starts(routing, optimize_calls, monkeypatch):
    import sklmm._cv

    # Once a cold fit of a structure shows two optima, the rest of the structure, refit
    # included, is cold. Here the second cold fit (a warm fit redone cold) "shows" them.
    monkeypatch.setattr(sklmm._cv, "WARM_MAX_ITER", 0)
    seen = []

    def two_optima(opt):
        seen.append(opt)
        return len(seen) == 2

    monkeypatch.setattr(sklmm._cv, "_two_optima", two_optima)
    X, y, g = many_groups()
    cv = KFold(3, shuffle=True, random_state=0)
    candidates = {"random_slopes": [["x0"]], "reml": [True, False]}
    MixedLMRegressorCV(candidates=candidates, cv=cv, warm_start=True).fit(X, y, groups=g)
    # the root (cold), one warm fit redone cold (two optima), then every fit cold
    assert [w for w, *_ in optimize_calls] == [False, True, False] + [False] * 5


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
def test_warm_start_counts_the_training_sets_levels(routing, optimize_calls):
    # GroupKFold(2) on 150 groups: 75 levels per training set, too few to start warm;
    # the refit on all 150 levels starts from the structure's cold fit.
    X, y, g = many_groups()
    candidates = {"random_slopes": [["x0"]], "reml": [True, False]}
    MixedLMRegressorCV(candidates=candidates, cv=GroupKFold(2), warm_start=True).fit(X, y, groups=g)
    assert [w for w, *_ in optimize_calls] == [False] * 4 + [True]


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored by KFold")
@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
@pytest.mark.filterwarnings("ignore::sklmm.MixedLMConvergenceWarning")
def test_warm_fits_on_small_designs_can_end_elsewhere(routing, monkeypatch):
    import sklmm._cv

    # Why WARM_MIN_LEVELS: on this design of the several-optima generator, warm fits on
    # every training set end in another optimum than the cold ones (1.4e-3 in a split
    # score); as shipped, its training sets are too small to start warm.
    X, y, g = _unbalanced(0)
    candidates = {"random_slopes": [None, ["x0"]], "reml": [True, False]}
    cv = KFold(3, shuffle=True, random_state=0)
    theirs = grid_search(X, y, g, cv, candidates=candidates)

    def distance(search):
        return max(
            np.max(np.abs(search.cv_results_[k] - theirs.cv_results_[k]))
            for k in theirs.cv_results_
            if k.startswith("split") and k.endswith("_test_score")
        )

    shipped = MixedLMRegressorCV(candidates=candidates, cv=cv, warm_start=True)
    assert distance(shipped.fit(X, y, groups=g)) <= 1e-8
    monkeypatch.setattr(sklmm._cv, "WARM_MIN_LEVELS", 1)
    everywhere = MixedLMRegressorCV(candidates=candidates, cv=cv, warm_start=True)
    assert distance(everywhere.fit(X, y, groups=g)) > 1e-4


def test_warm_start_needs_the_em_newton_solver():
    X, y, g = sleep()
    with pytest.raises(ValueError, match="warm_start=True needs solver"):
        MixedLMRegressorCV(warm_start=True, solver="lbfgs").fit(X, y, groups=g)


def test_paths_agree_needs_both_paths_at_the_optimum():
    from types import SimpleNamespace

    from sklmm._cv import _paths_agree, _two_optima

    def opt(*phases):
        log = [{"phase": p, "deviance": d} for p, d in phases]
        return SimpleNamespace(log=log, objective=min(d for _, d in phases))

    one = opt(("em", 5.0), ("newton", 1.0), ("restart", 3.0), ("restart", 1.0))
    assert _paths_agree(one) and not _two_optima(one)
    # the restart found a better optimum: the first path ended elsewhere
    two = opt(("em", 5.0), ("newton", 2.0), ("restart", 1.0))
    assert not _paths_agree(two) and _two_optima(two)
    # Newton alone (no restart: a warm fit): no evidence either way
    warm = opt(("newton", 2.0), ("newton", 1.0))
    assert not _paths_agree(warm) and not _two_optima(warm)
    # on the boundary, other starts: the paths before them count, and a better optimum
    # from another start is a second optimum
    for other in (
        opt(("em", 2.0), ("restart", 1.0), ("multistart", 1.5)),
        opt(("em", 2.0), ("restart", 2.0), ("multistart", 1.0)),
    ):
        assert not _paths_agree(other) and _two_optima(other)
    same = opt(("em", 2.0), ("restart", 2.0), ("multistart", 3.0))
    assert _paths_agree(same) and not _two_optima(same)
