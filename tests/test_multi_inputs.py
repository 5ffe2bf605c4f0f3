"""Several random-effects terms: bad input, scikit-learn integration, inference.

* a table of bad inputs specific to ``variance_components`` and ``random_effects``, each
  with its exception and a message naming the problem, inputs left unmodified;
* metadata routing of ``groups`` (a DataFrame) and ``variance_components`` through
  ``Pipeline``, ``cross_validate`` and ``GridSearchCV`` over ``random_effects``, and the
  group scorer; clone and pickle of a fitted several-term model;
* ``summary`` and ``likelihood_ratio_test`` with several terms;
* a crossed design with a random slope (``(1 + x | a) + (1 | b)``) through the estimator.
"""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla
import sklearn
from _simulate import nested_crossed
from sklearn.base import clone
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLMRegressor, SingularFitWarning, likelihood_ratio_test, make_group_scorer
from sklmm._blocked import minimize_blocked
from sklmm.datasets import load_pastes, load_penicillin


def crossed(seed=0, n_a=12, n_b=8, reps=3, slope=0.0):
    """A crossed design: every (a, b) pair ``reps`` times; a covariate x."""
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(n_a), n_b * reps)
    b = np.tile(np.repeat(np.arange(n_b), reps), n_a)
    n = len(a)
    x = rng.normal(size=n)
    ua, ub, sa = rng.normal(0, 1.0, n_a), rng.normal(0, 0.7, n_b), rng.normal(0, 0.5, n_a)
    y = 2.0 + 0.5 * x + ua[a] + ub[b] + slope * sa[a] * x + rng.normal(0, 0.5, n)
    X = pd.DataFrame({"x": x})
    labels = pd.DataFrame({"a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})
    return X, pd.Series(y, name="y"), labels


X0, Y0, L0 = crossed()

# (id, estimator params, fit kwargs builder, exception, message)
BAD = [
    (
        "nan-component",
        {},
        lambda: {"variance_components": L0.assign(b=L0["b"].where(L0.index != 4))},
        ValueError,
        r"variance_components column 'b' contains missing labels .* rows \[4\]",
    ),
    (
        "short-component",
        {},
        lambda: {"variance_components": L0.iloc[:-1]},
        ValueError,
        "variance_components column 'a' has 287 entries but X has 288 rows",
    ),
    (
        "3d-component",
        {},
        lambda: {"variance_components": np.zeros((len(L0), 2, 2))},
        ValueError,
        "variance_components must be 1-D or 2-D",
    ),
    (
        "two-column-groups-with-components",
        {},
        lambda: {"groups": L0, "variance_components": L0[["b"]]},
        ValueError,
        "groups has 2 columns; several grouping factors need random_effects",
    ),
    (
        "component-named-as-groups",
        {},
        lambda: {"groups": L0["a"], "variance_components": L0[["a"]]},
        ValueError,
        "has the name of the groups",
    ),
    (
        "slopes-without-groups",
        {"random_slopes": ["x"]},
        lambda: {"variance_components": L0},
        ValueError,
        "random_slopes needs groups",
    ),
    (
        "spec-and-components",
        {"random_effects": "(1 | a)"},
        lambda: {"groups": L0, "variance_components": L0[["b"]]},
        ValueError,
        "either as random_effects or by variance_components",
    ),
    (
        "spec-and-slopes",
        {"random_effects": "(1 | a)", "random_slopes": ["x"]},
        lambda: {"groups": L0},
        ValueError,
        "leave random_slopes=None",
    ),
    (
        "spec-without-groups",
        {"random_effects": "(1 | a) + (1 | b)"},
        lambda: {},
        ValueError,
        "groups=None",
    ),
    (
        "spec-unknown-factor",
        {"random_effects": "(1 | a) + (1 | c)"},
        lambda: {"groups": L0},
        ValueError,
        r"grouping factor 'c', which is not a column of groups \(columns: \['a', 'b'\]\)",
    ),
    (
        "spec-unknown-slope",
        {"random_effects": "(1 + z | a) + (1 | b)"},
        lambda: {"groups": L0},
        ValueError,
        r"slope 'z', which is not a column of X \(columns: \['x'\]\)",
    ),
    (
        "spec-malformed",
        {"random_effects": "(1 + x a) + (1 | b)"},
        lambda: {"groups": L0},
        ValueError,
        "random_effects: ",
    ),
    (
        "spec-not-a-string",
        {"random_effects": 3},
        lambda: {"groups": L0},
        ValueError,
        "'random_effects' parameter of MixedLMRegressor must be None or an instance of 'str'",
    ),
    (
        "single-level-term",
        {},
        lambda: {"variance_components": L0.assign(b="same")},
        ValueError,
        r"the random-effects term \(1 \| b\) has a single level",
    ),
    (
        "too-many-levels",
        {},
        lambda: {"variance_components": L0.assign(b=[f"r{i}" for i in range(len(L0))])},
        ValueError,
        r"288 rows for the 288 levels x 1 random effects of the term \(1 \| b\)",
    ),
    (
        "slope-constant-within-levels",
        {"random_effects": "(1 + c | a) + (1 | b)"},
        lambda: {"groups": L0, "X": X0.assign(c=L0["a"].str[1:].astype(float))},
        ValueError,
        r"the random slope\(s\) \['c'\] of the term \(1 \+ c \| a\) are constant "
        "within every level",
    ),
]


@pytest.mark.parametrize(
    ("params", "build", "exc", "match"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input(params, build, exc, match):
    kwargs = build()
    X = kwargs.pop("X", X0)
    before = {k: v.copy() for k, v in kwargs.items() if hasattr(v, "copy")}
    X_before = X.copy()
    with pytest.raises(exc, match=match):
        MixedLMRegressor(**params).fit(X, Y0, **kwargs)
    pd.testing.assert_frame_equal(X, X_before)
    for k, v in before.items():
        if isinstance(v, pd.DataFrame):
            pd.testing.assert_frame_equal(kwargs[k], v)
        elif isinstance(v, pd.Series):
            pd.testing.assert_series_equal(kwargs[k], v)
        else:
            np.testing.assert_array_equal(kwargs[k], v)


def test_dask_with_several_terms_gives_the_in_memory_fit():
    dd = pytest.importorskip("dask.dataframe")
    mem = MixedLMRegressor().fit(X0, Y0, variance_components=L0)
    dsk = MixedLMRegressor().fit(
        dd.from_pandas(X0, npartitions=2),
        dd.from_pandas(Y0, npartitions=2),
        variance_components=dd.from_pandas(L0, npartitions=2),
    )
    assert dsk.terms_ == mem.terms_ == ("(1 | a)", "(1 | b)")
    assert dsk.log_likelihood_ == pytest.approx(mem.log_likelihood_, abs=1e-8)
    pd.testing.assert_series_equal(dsk.variance_components_, mem.variance_components_, rtol=1e-6)


def test_unseen_labels_and_missing_components_at_predict():
    est = MixedLMRegressor().fit(X0, Y0, variance_components=L0)
    pop = est.predict(X0)
    both = est.predict(X0, variance_components=L0)
    only_a = est.predict(X0, variance_components=L0.assign(b="new"))
    b_eff = est.random_effects_["b"]["(Intercept)"].reindex(L0["b"]).to_numpy()
    a_eff = est.random_effects_["a"]["(Intercept)"].reindex(L0["a"]).to_numpy()
    np.testing.assert_allclose(both, pop + a_eff + b_eff)
    np.testing.assert_allclose(only_a, pop + a_eff)
    # unnamed labels: matched by position (as many columns as in fit)
    np.testing.assert_array_equal(est.predict(X0, variance_components=L0.to_numpy()), both)
    # a missing or misspelled column is an error, not a silently dropped term
    with pytest.raises(ValueError, match=r"\['b'\] are missing"):
        est.predict(X0, variance_components=L0[["a"]])
    with pytest.raises(ValueError, match=r"\['b'\] are missing"):
        est.predict(X0, variance_components=L0.rename(columns={"b": "B"}))
    # labels of another kind are matched by their string form, as for groups
    est_int = MixedLMRegressor().fit(X0, Y0, variance_components=L0.apply(lambda s: s.str[1:]))
    as_int = est_int.predict(X0, variance_components=L0.apply(lambda s: s.str[1:].astype(int)))
    np.testing.assert_allclose(as_int, both)


def test_nested_groups_given_as_a_list_but_not_as_a_renamed_series():
    df = load_pastes()
    est = MixedLMRegressor().fit(
        df[[]], df["strength"], groups=df["batch"], variance_components=df[["cask"]]
    )
    new = pd.DataFrame({"batch": ["A", "A", "K"], "cask": ["a", "d", "a"]})
    want = est.predict(new[[]], groups=new["batch"], variance_components=new[["cask"]])
    assert want[0] > want[1] > want[2] == pytest.approx(est.intercept_)
    for groups in (list(new["batch"]), new["batch"].to_numpy()):
        got = est.predict(new[[]], groups=groups, variance_components=new[["cask"]])
        np.testing.assert_array_equal(got, want)
    # a renamed Series is not matched by position: named labels are matched by name
    with pytest.raises(ValueError, match=r"named \['b'\].*matched by name"):
        est.predict(new[[]], groups=new["batch"].rename("b"), variance_components=new[["cask"]])
    got = est.predict(new[[]], groups=new["batch"], variance_components=list(new["cask"]))
    np.testing.assert_array_equal(got, want)
    spec = MixedLMRegressor(random_effects="(1 | batch/cask)").fit(
        df[[]], df["strength"], groups=df[["batch", "cask"]]
    )
    np.testing.assert_allclose(spec.predict(new[[]], groups=new), want, rtol=1e-10)
    with pytest.raises(ValueError, match=r"\['cask'\] are missing"):
        spec.predict(new[[]], groups=new.rename(columns={"cask": "Cask"}))


# -- scikit-learn -------------------------------------------------------------------


def requested(est):
    return (
        est.set_fit_request(groups=True, variance_components=True)
        .set_predict_request(groups=True, variance_components=True)
        .set_score_request(groups=True, variance_components=True)
    )


def test_pipeline_routes_variance_components(routing):
    pipe = make_pipeline(StandardScaler(), requested(MixedLMRegressor()))
    pipe.fit(X0, Y0, variance_components=L0)
    direct = MixedLMRegressor().fit(pipe[:-1].transform(X0), Y0, variance_components=L0)
    assert pipe[-1].log_likelihood_ == pytest.approx(direct.log_likelihood_, abs=1e-10)
    cond = pipe.predict(X0, variance_components=L0)
    np.testing.assert_allclose(
        cond, direct.predict(pipe[:-1].transform(X0), variance_components=L0)
    )
    assert pipe.score(X0, Y0, variance_components=L0) == pytest.approx(r2_score(Y0, cond))


def test_cross_validate_routes_variance_components(routing):
    cv = KFold(4, shuffle=True, random_state=0)
    est = requested(MixedLMRegressor())
    result = cross_validate(
        est, X0, Y0, cv=cv, params={"variance_components": L0}, return_indices=True
    )
    for k, (train, test) in enumerate(zip(*result["indices"].values(), strict=True)):
        model = MixedLMRegressor().fit(
            X0.iloc[train], Y0.iloc[train], variance_components=L0.iloc[train]
        )
        pred = model.predict(X0.iloc[test], variance_components=L0.iloc[test])
        assert result["test_score"][k] == pytest.approx(r2_score(Y0.iloc[test], pred))


def test_grid_search_over_random_effects(routing):
    # groups as a DataFrame of both factors; the structure is a hyperparameter.
    X, y, labels = crossed(1, slope=1.0)
    specs = ["(1 | a)", "(1 | a) + (1 | b)", "(1 + x | a) + (1 | b)"]
    cv = KFold(3, shuffle=True, random_state=0)
    est = MixedLMRegressor().set_fit_request(groups=True).set_score_request(groups=True)
    search = GridSearchCV(est, {"random_effects": specs}, cv=cv).fit(X, y, groups=labels)
    assert search.best_params_ == {"random_effects": "(1 + x | a) + (1 | b)"}
    assert search.best_estimator_.terms_ == ("(1 + x | a)", "(1 | b)")
    train, test = next(cv.split(X))
    for i, spec in enumerate(specs):
        model = MixedLMRegressor(random_effects=spec).fit(
            X.iloc[train], y.iloc[train], groups=labels.iloc[train]
        )
        expected = r2_score(y.iloc[test], model.predict(X.iloc[test], groups=labels.iloc[test]))
        assert search.cv_results_["split0_test_score"][i] == pytest.approx(expected)


def test_group_scorer_passes_variance_components():
    est = MixedLMRegressor().fit(X0, Y0, variance_components=L0)
    scorer = make_group_scorer(mean_squared_error, greater_is_better=False)
    got = scorer(est, X0, Y0, variance_components=L0)
    assert got == pytest.approx(-mean_squared_error(Y0, est.predict(X0, variance_components=L0)))


def test_clone_and_pickle_of_a_several_term_fit():
    est = MixedLMRegressor(random_effects="(1 + x || a) + (1 | b)").fit(X0, Y0, groups=L0)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X0, groups=L0), est.predict(X0, groups=L0))
    fresh = clone(est)
    assert fresh.get_params() == est.get_params()
    assert not hasattr(fresh, "terms_")
    refit = fresh.fit(X0, Y0, groups=L0)
    assert refit.log_likelihood_ == est.log_likelihood_


# -- inference ----------------------------------------------------------------------


def test_summary_lists_every_term():
    df = load_penicillin()
    est = MixedLMRegressor().fit(
        df[[]], df["diameter"], variance_components=df[["plate", "sample"]]
    )
    s = est.summary(df[[]], df["diameter"], variance_components=df[["plate", "sample"]])
    text = str(s)
    assert "plate    (Intercept)" in text and "sample   (Intercept)" in text
    assert "groups:  plate, 24; sample, 6" in text
    assert "Scaled residuals" in text
    vc = s.random_effects
    assert list(vc["grp"]) == ["plate", "sample", "Residual"]
    np.testing.assert_allclose(vc["vcov"], [0.7169, 3.7311, 0.3024], rtol=1e-3)  # lme4


def test_likelihood_ratio_test_between_one_and_two_terms():
    df = load_penicillin()
    y, X = df["diameter"], df[[]]
    one = MixedLMRegressor().fit(X, y, groups=df["plate"])
    two = MixedLMRegressor(random_effects="(1 | plate) + (1 | sample)").fit(
        X, y, groups=df[["plate", "sample"]]
    )
    table = likelihood_ratio_test(one, two)
    ml_one = MixedLMRegressor(reml=False).fit(X, y, groups=df["plate"])
    ml_two = MixedLMRegressor(reml=False).fit(X, y, variance_components=df[["plate", "sample"]])
    assert table.loc["small", "logLik"] == pytest.approx(ml_one.log_likelihood_, abs=1e-6)
    assert table.loc["large", "logLik"] == pytest.approx(ml_two.log_likelihood_, abs=1e-6)
    chi2 = 2 * (ml_two.log_likelihood_ - ml_one.log_likelihood_)
    assert table.loc["large", "Chisq"] == pytest.approx(chi2, rel=1e-6)
    assert table.loc["large", "Df"] == 1
    with pytest.raises(ValueError, match="not fitted on the same data"):
        likelihood_ratio_test(
            one, MixedLMRegressor().fit(X.iloc[:-6], y.iloc[:-6], groups=df["plate"].iloc[:-6])
        )


# -- a random slope in a crossed design -----------------------------------------------


def test_crossed_design_with_a_random_slope():
    X, y, labels = crossed(2, n_a=30, n_b=10, reps=2, slope=1.0)
    est = MixedLMRegressor(random_effects="(1 + x | a) + (1 | b)").fit(X, y, groups=labels)
    assert est.converged_ and not est.is_singular_
    cov_a = est.random_effects_cov_["a"]
    assert list(cov_a.columns) == ["(Intercept)", "x"]
    assert 0.1 < cov_a.loc["x", "x"] < 0.6  # simulated 0.25
    # The optimum: the diagonal form nests in it and fits no better.
    diag = MixedLMRegressor(random_effects="(1 + x || a) + (1 | b)").fit(X, y, groups=labels)
    assert diag.log_likelihood_ <= est.log_likelihood_ + 1e-8
    np.testing.assert_allclose(diag.random_effects_cov_["a"].loc["x", "(Intercept)"], 0.0)
    # New level of a, seen level of b: the b effect stays, a's intercept and slope do not.
    new = labels.iloc[:3].assign(a="new")
    pred = est.predict(X.iloc[:3], groups=new)
    b_eff = est.random_effects_["b"].loc[new["b"], "(Intercept)"].to_numpy()
    np.testing.assert_allclose(pred, est.intercept_ + est.coef_[0] * X["x"].iloc[:3] + b_eff)


# -- hard fits ------------------------------------------------------------------------


def test_zero_variance_component_at_the_optimum():
    # y and x with the mean of every b level removed: nothing varies between the b
    # levels, so the b variance's optimum is 0.
    X, y, labels = crossed(4, n_a=15, n_b=10, reps=2)
    y = y - y.groupby(labels["b"]).transform("mean") + y.mean()
    X = X - X.groupby(labels["b"]).transform("mean") + X.mean()
    with pytest.warns(SingularFitWarning, match=r"\['b'\]"):
        est = MixedLMRegressor().fit(X, y, variance_components=labels)
    assert est.converged_ and est.is_singular_
    assert est.variance_components_["b"] < 1e-8 * est.variance_components_["a"]
    # The same likelihood as the model without the term.
    alone = MixedLMRegressor().fit(X, y, groups=labels["a"])
    assert est.log_likelihood_ == pytest.approx(alone.log_likelihood_, abs=1e-6)
    assert est.variance_components_["a"] == pytest.approx(
        alone.random_effects_cov_["a"].iloc[0, 0], rel=1e-4
    )


@pytest.mark.parametrize("scale", [1e8, 1e-8])
def test_huge_and_tiny_response(scale):
    X, y, labels = crossed(5)
    ref = MixedLMRegressor().fit(X, y, variance_components=labels)
    est = MixedLMRegressor().fit(X, y * scale, variance_components=labels)
    assert est.converged_
    n, p = len(y), 2
    # REML log-likelihood of a*y: shifted by -(n - p) log a exactly.
    assert est.log_likelihood_ == pytest.approx(
        ref.log_likelihood_ - (n - p) * np.log(scale), abs=1e-6
    )
    np.testing.assert_allclose(
        est.variance_components_ / scale**2, ref.variance_components_, rtol=1e-6
    )
    np.testing.assert_allclose(
        est.predict(X, variance_components=labels) / scale,
        ref.predict(X, variance_components=labels),
        rtol=1e-7,
    )


@pytest.mark.parametrize("offset", [2000.0, 1e6])
def test_slope_column_offset_leaves_the_fit_unchanged(offset):
    X, y, labels = crossed(6, n_a=15, n_b=10, reps=2, slope=1.0)
    spec = "(1 + x | a) + (1 | b)"
    ref = MixedLMRegressor(random_effects=spec).fit(X, y, groups=labels)
    Xo = X.assign(x=X["x"] + offset)
    est = MixedLMRegressor(random_effects=spec).fit(Xo, y, groups=labels)
    assert est.converged_
    assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-6)
    np.testing.assert_allclose(
        est.predict(Xo, groups=labels), ref.predict(X, groups=labels), rtol=1e-7
    )
    np.testing.assert_allclose(
        est.random_effects_cov_["a"].loc["x", "x"],
        ref.random_effects_cov_["a"].loc["x", "x"],
        rtol=1e-4,
    )


def test_rescaled_covariate_shifts_the_reml_likelihood_by_its_log():
    X, y, labels = crossed(7, slope=1.0)
    spec = "(1 + x | a) + (1 | b)"
    ref = MixedLMRegressor(random_effects=spec).fit(X, y, groups=labels)
    est = MixedLMRegressor(random_effects=spec).fit(X * 1e6, y, groups=labels)
    assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_ - np.log(1e6), abs=1e-6)
    np.testing.assert_allclose(est.coef_ * 1e6, ref.coef_, rtol=1e-6)


def test_nested_component_with_single_row_levels():
    # Every (a, c) pair has one row: the c variance cannot be told from the residual one;
    # the fit says so by putting it on the boundary, and stays usable.
    X, y, labels = crossed(8, n_a=15, n_b=10, reps=2)
    c = pd.DataFrame({"c": [f"c{i}" for i in range(len(y))]})
    with pytest.raises(ValueError, match="the number of rows must exceed"):
        MixedLMRegressor().fit(X, y, groups=labels["a"], variance_components=c)
    c = pd.DataFrame({"c": [f"c{i % 7}" for i in range(len(y))]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)  # data-dependent
        est = MixedLMRegressor().fit(X, y, groups=labels["a"], variance_components=c)
    assert est.converged_
    assert np.isfinite(est.log_likelihood_)


# -- review findings: state, names, positional arguments, label matching ---------------


def test_positional_label_matching_follows_the_columns_of_fit():
    # Terms in the order (b, a), groups columns in the order (a, b): an unnamed array is
    # matched to fit's column order, not to the order the terms use them.
    X, y, labels = crossed(9)
    ints = labels.apply(lambda s: s.str[1:].astype(int))
    for lab in (labels, ints):
        est = MixedLMRegressor(random_effects="(1 | b) + (1 | a)").fit(X, y, groups=lab)
        np.testing.assert_array_equal(
            est.predict(X, groups=lab.to_numpy()), est.predict(X, groups=lab)
        )
        assert not np.allclose(est.predict(X, groups=lab), est.predict(X))


def test_a_needed_label_argument_left_out_is_an_error():
    df = load_pastes()
    est = MixedLMRegressor().fit(
        df[[]], df["strength"], groups=df["batch"], variance_components=df[["cask"]]
    )
    with pytest.raises(ValueError, match="groups=None, but the model's terms"):
        est.predict(df[[]], variance_components=df[["cask"]])
    with pytest.raises(ValueError, match="variance_components=None, but the model's terms"):
        est.predict(df[[]], groups=df["batch"])
    np.testing.assert_allclose(est.predict(df[[]]), est.intercept_)  # both None: population


def test_repeated_factor_names_never_collide():
    X, y, labels = crossed(10, slope=1.0)
    groups = pd.DataFrame({"g": labels["a"], "g.1": labels["b"]})
    est = MixedLMRegressor(random_effects="(1 | g) + (0 + x | g) + (1 | g.1)").fit(
        X, y, groups=groups
    )
    assert list(est.random_effects_) == ["g", "g.2", "g.1"]
    assert list(est.random_effects_["g.2"].columns) == ["x"]
    assert list(est.random_effects_["g.1"].index) == sorted(labels["b"].unique())
    # the slope term's BLUPs are used for it, the b intercepts for (1 | g.1)
    pred = est.predict(X, groups=groups)
    want = (
        est.intercept_
        + X["x"].to_numpy() * est.coef_[0]
        + est.random_effects_["g"]["(Intercept)"].reindex(groups["g"]).to_numpy()
        + X["x"].to_numpy() * est.random_effects_["g.2"]["x"].reindex(groups["g"]).to_numpy()
        + est.random_effects_["g.1"]["(Intercept)"].reindex(groups["g.1"]).to_numpy()
    )
    np.testing.assert_allclose(pred, want)


def same_state(est, fresh):
    """The fitted state of ``est`` is that of a fresh fit of the same model: no leftovers."""
    assert set(vars(est)) == set(vars(fresh))
    assert est.terms_ == fresh.terms_
    for attr in ("random_effects_", "random_effects_cov_", "random_effects_condvar_"):
        assert list(getattr(est, attr)) == list(getattr(fresh, attr))
    pd.testing.assert_series_equal(est.variance_components_, fresh.variance_components_)
    assert list(est.fit_log_.columns) == list(fresh.fit_log_.columns)
    assert est.log_likelihood_ == fresh.log_likelihood_


def test_refit_of_another_kind_leaves_no_state():
    X, y, labels = crossed(11, slope=1.0)
    est = MixedLMRegressor(random_slopes=["x"]).fit(X, y, groups=labels["a"])
    one_term = set(vars(est))
    est.fit(X, y, groups=labels["a"], variance_components=labels[["b"]])
    several = set(vars(est))
    fresh = MixedLMRegressor(random_slopes=["x"])
    same_state(est, fresh.fit(X, y, groups=labels["a"], variance_components=labels[["b"]]))
    assert list(est.random_effects_) == ["a", "a:b"]
    est.set_params(random_slopes=None).fit(X, y, groups=labels["a"])
    same_state(est, MixedLMRegressor().fit(X, y, groups=labels["a"]))
    assert list(est.variance_components_.index) == ["a"]  # not the former "a:b"
    assert set(vars(est)) <= one_term
    assert set(vars(est)) <= several
    # a refit that fails validation leaves an unfitted estimator, not a mixed one
    with pytest.raises(ValueError):
        est.fit(X, y, variance_components=labels.assign(b="same"))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        est.predict(X)


def test_new_keyword_does_not_shift_positional_arguments():
    X, y, labels = crossed(12)
    est = MixedLMRegressor().fit(X, y, labels["a"])
    assert est.log_likelihood_ == MixedLMRegressor().fit(X, y, groups=labels["a"]).log_likelihood_
    w = np.linspace(0.1, 1.0, len(y))
    # scikit-learn's positional order: score(X, y, sample_weight); the labels by keyword
    assert est.score(X, y, w, groups=labels["a"]) == est.score(
        X, y, groups=labels["a"], sample_weight=w
    )
    np.testing.assert_array_equal(est.predict(X, labels["a"]), est.predict(X, groups=labels["a"]))
    pred, std = est.predict(X, labels["a"], return_std=True)
    assert std.shape == pred.shape
    # a third positional argument of predict is not silently taken as return_std
    with pytest.raises(TypeError):
        est.predict(X, labels["a"], True)
    table = est.summary(X, y, labels["a"], 0.5).random_effects
    assert "ci_0.25" in table.columns


def test_likelihood_ratio_test_across_engines_with_array_groups():
    X, y, labels = crossed(13, slope=1.0)
    g = labels["a"].to_numpy()
    small = MixedLMRegressor(random_effects="(1 | a)").fit(X, y, groups=g)
    large = MixedLMRegressor(random_effects="(1 | a) + (0 + x | a)").fit(X, y, groups=g)
    table = likelihood_ratio_test(small, large)
    assert table.loc["large", "Df"] == 1 and table.loc["large", "Chisq"] > 0
    one = MixedLMRegressor().fit(X, y, groups=g)
    two = MixedLMRegressor().fit(X, y, groups=g, variance_components=labels[["b"]])
    assert likelihood_ratio_test(one, two).loc["large", "Df"] == 1


def test_pickle_of_a_fit_does_not_carry_the_dense_block():
    X, y, labels = crossed(14, n_a=60, n_b=50, reps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)  # not the point here
        est = MixedLMRegressor().fit(X, y, variance_components=labels)
    m_r = 50
    size = len(pickle.dumps(est))
    assert size < 40 * len(y) * 8 + 8 * m_r * m_r  # far below several dense blocks
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(
        again.predict(X, variance_components=labels), est.predict(X, variance_components=labels)
    )
    # the ML refit of the likelihood-ratio test rebuilds what was released
    small = MixedLMRegressor().fit(X, y, variance_components=labels[["a"]])
    assert likelihood_ratio_test(small, again).loc["large", "Df"] == 1


def term_columns(frame, X):
    """A term's columns for the rows of ``X``, from its BLUPs' columns: 1 or the slope."""
    return np.column_stack(
        [np.ones(len(X)) if c == "(Intercept)" else X[c].to_numpy() for c in frame.columns]
    )


DENSE_SPECS = [
    "(0 + x | a) + (1 | b)",
    "(1 | a) + (0 + x | a) + (1 | b)",
    "(1 + x || a) + (1 + x | b)",
    "(1 + x | a:b) + (1 | a)",
]


@pytest.mark.parametrize("spec", DENSE_SPECS)
@pytest.mark.parametrize("reml", [True, False])
def test_fit_against_a_dense_computation(spec, reml):
    # The criterion at the fitted variances from the n x n V, and the BLUPs from it.
    X, y, labels = crossed(15, n_a=10, n_b=6, reps=3, slope=1.0)
    X = X.assign(x=X["x"] + 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)  # not the point here
        est = MixedLMRegressor(random_effects=spec, reml=reml).fit(X, y, groups=labels)
    n = len(y)
    Xf = np.column_stack([np.ones(n), X.to_numpy()])
    V = est.residual_variance_ * np.eye(n)
    Zs = {}
    assert len(est.random_effects_) == len(est.terms_)
    for name, frame in est.random_effects_.items():
        # the term's factors are the names of its levels' index (a MultiIndex for a:b)
        factors = list(frame.index.names)
        keys = pd.MultiIndex.from_frame(labels[factors])
        if len(factors) == 1:
            keys = keys.get_level_values(0)
        idx = frame.index.get_indexer(keys)
        assert (idx >= 0).all()
        z = term_columns(frame, X)
        m, q = frame.shape
        Z = np.zeros((n, m * q))
        for j in range(q):
            Z[np.arange(n), idx * q + j] = z[:, j]
        cov = est.random_effects_cov_[name].to_numpy()
        V += Z @ np.kron(np.eye(m), cov) @ Z.T
        Zs[name] = (Z, np.kron(np.eye(m), cov))
    Vi = np.linalg.inv(V)
    C = Xf.T @ Vi @ Xf
    beta = np.linalg.solve(C, Xf.T @ Vi @ y.to_numpy())
    r = y.to_numpy() - Xf @ beta
    # -2 log L (ML), or lme4's REML criterion: log|V| + log|X'V^-1 X| + r'V^-1 r
    # + (n - p) log(2 pi), with V at the fitted variances.
    dev = np.linalg.slogdet(V)[1] + r @ Vi @ r
    if reml:
        dev += np.linalg.slogdet(C)[1] + (n - 2) * np.log(2 * np.pi)
    else:
        dev += n * np.log(2 * np.pi)
    assert est.log_likelihood_ == pytest.approx(-0.5 * dev, abs=1e-6)
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_], beta, rtol=1e-7)
    for name, (Z, G) in Zs.items():
        b = G @ Z.T @ Vi @ r
        np.testing.assert_allclose(
            est.random_effects_[name].to_numpy().ravel(), b, rtol=1e-5, atol=1e-7
        )
    # Prediction standard deviations: rows of the data, some levels replaced by new ones.
    # Seen terms: d' Cov(beta) d + w'(S - S Z'V^-1 Z S)w with S the prior covariance of b
    # and d = x - (S Z'V^-1 X)'w; unseen terms add z' Sigma_k z.
    rng = np.random.default_rng(0)
    rows = rng.choice(n, 25, replace=False)
    new = labels.iloc[rows].copy()
    new.loc[new.index[:8], "a"] = "new a"
    new.loc[new.index[5:12], "b"] = "new b"
    _, std = est.predict(X.iloc[rows], groups=new, return_std=True)
    Zall = np.hstack([Z for Z, _ in Zs.values()])
    S = sla.block_diag(*[G for _, G in Zs.values()])
    Cb = S - S @ Zall.T @ Vi @ Zall @ S
    Gx = S @ Zall.T @ Vi @ Xf
    cov_beta = np.linalg.inv(C)
    for j, i in enumerate(rows):
        w = Zall[i].copy()
        extra, start = 0.0, 0
        for name, (Z, _) in Zs.items():
            frame = est.random_effects_[name]
            cols = slice(start, start + Z.shape[1])
            start += Z.shape[1]
            if any(new.iloc[j][c] != labels.iloc[i][c] for c in frame.index.names):
                w[cols] = 0.0
                z = term_columns(frame, X.iloc[i : i + 1])[0]
                extra += z @ est.random_effects_cov_[name].to_numpy() @ z
        d = Xf[i] - Gx.T @ w
        want = d @ cov_beta @ d + w @ Cb @ w + extra
        assert std[j] ** 2 == pytest.approx(want, rel=1e-6)


def test_a_dense_block_too_large_for_memory_is_refused(monkeypatch):
    import sklmm._model as model

    # b's 30 levels go into the dense block: DENSE_COPIES arrays of 30 x 30 doubles.
    need = model.DENSE_COPIES * 8 * 30**2
    X, y, labels = crossed(16, n_a=40, n_b=30, reps=1)
    monkeypatch.setattr(model, "_memory_bytes", lambda: need)  # refused above 80% of it
    with pytest.raises(ValueError, match=r"the terms \['\(1 \| b\)'\] have 30 random effects"):
        MixedLMRegressor().fit(X, y, variance_components=labels)
    monkeypatch.setattr(model, "_memory_bytes", lambda: 2 * need)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        assert MixedLMRegressor().fit(X, y, variance_components=labels).converged_


def test_memory_check_follows_the_engines_choice_of_the_block_diagonal_term(monkeypatch):
    # a and b tie at 12 levels: the engine puts a (first) in the block-diagonal term and
    # b's 3 columns x 12 levels = 36 rows in the dense block, not a's 12.
    import sklmm._model as model

    X, y, labels = crossed(17, n_a=12, n_b=12, reps=3, slope=1.0)
    X = X.assign(x2=np.random.default_rng(0).normal(size=len(y)))
    spec = "(1 | a) + (1 + x + x2 | b)"
    need_12 = model.DENSE_COPIES * 8 * 12**2
    monkeypatch.setattr(model, "_memory_bytes", lambda: 2 * need_12)
    with pytest.raises(ValueError, match=r"the terms \['\(1 \+ x \+ x2 \| b\)'\] have 36"):
        MixedLMRegressor(random_effects=spec).fit(X, y, groups=labels)


@pytest.mark.parametrize(
    "draw",
    [
        # L-BFGS-B stepped to theta ~ 1e6, where [X y]'V^-1[X y] is numerically singular
        # (a LinAlgError from numpy escaped the fit).
        (2134359285, 10, 7, 89, (0.40584782088933147, 1.1418553573145152, 0.0)),
        # A saddle at a zero variance left slowly: L-BFGS-B stopped short, far from the
        # optimum (log-likelihood -98.36 against -94.87), and reported non-convergence.
        (1716130827, 6, 4, 82, (0.9319784931781023, 0.49890406150325195, 0.5244985720304953)),
    ],
    ids=["singular-step", "slow-saddle"],
)
def test_hard_crossed_designs_found_by_hypothesis(draw):
    X, y, labels = nested_crossed(*draw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)  # a boundary fit is legitimate
        est = MixedLMRegressor(random_effects="(1 | a) + (1 | b) + (1 | a:c)").fit(
            X, y, groups=labels
        )
    assert est.converged_
    # No better optimum from other starts.
    objective, theta = est._fitted.objective, est._fitted.opt.theta
    best = objective(theta).deviance
    rng = np.random.default_rng(0)
    for _ in range(4):
        other = minimize_blocked(objective, rng.uniform(0.05, 2.0, objective.n_theta))
        assert other.evaluation.deviance >= best - 1e-6
