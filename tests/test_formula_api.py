"""The formula front end as an estimator parameter: errors, model selection, routing.

The numbers of formula fits are checked against lme4 in ``test_formula_fit.py``.
"""

import pickle

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_validate

from sklmm import MissingDataWarning, MixedLMRegressor, NoGroupsWarning, lmer
from sklmm.datasets import load_sleepstudy

SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return load_sleepstudy()


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def simulate(seed=0, n_groups=40, per_group=15):
    """``y = 1 + 2 x1 - 1.5 x2 + b0 + b1 x1 + e``: the true model is
    ``y ~ x1 + x2 + (x1 | g)``; ``x3`` is noise."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    n = len(g)
    x1, x2, x3 = rng.normal(size=(3, n))
    b0, b1 = rng.normal(size=(2, n_groups))
    y = 1 + 2 * x1 - 1.5 * x2 + b0[g] + b1[g] * x1 + 0.5 * rng.normal(size=n)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "x3": x3, "g": [f"G{i}" for i in g]})


# -- the formula is a hyperparameter ------------------------------------------------------


def test_formula_equals_matrix_form(sleep):
    a = MixedLMRegressor(formula=SLEEP).fit(sleep)
    b = MixedLMRegressor(random_slopes=["Days"]).fit(
        sleep[["Days"]], sleep["Reaction"], groups=sleep["Subject"]
    )
    assert a.log_likelihood_ == b.log_likelihood_
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(
        a.predict(sleep), b.predict(sleep[["Days"]], groups=sleep["Subject"])
    )
    assert a.score(sleep) == b.score(sleep[["Days"]], sleep["Reaction"], groups=sleep["Subject"])
    text = str(a.summary(sleep))
    line = f"Formula: {SLEEP}\n"  # lme4's line under the title
    assert line in text
    assert text.replace(line, "") == str(
        b.summary(sleep[["Days"]], sleep["Reaction"], sleep["Subject"])
    )
    for got, want in zip(
        a.predict(sleep, return_std=True, include_residual=True),
        b.predict(sleep[["Days"]], groups=sleep["Subject"], return_std=True, include_residual=True),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    assert list(a.fixed_effects_.index) == ["(Intercept)", "Days"]
    assert list(a.feature_names_in_) == ["Days", "Subject"]
    assert a.n_rows_dropped_ == 0 and len(a.rows_dropped_) == 0


def test_clone_get_set_params_pickle(sleep):
    est = MixedLMRegressor(formula=SLEEP, reml=False).fit(sleep)
    copy = clone(est)
    assert copy.get_params()["formula"] == SLEEP
    assert not hasattr(copy, "coef_")
    copy.set_params(formula="Reaction ~ Days + (1 | Subject)").fit(sleep)
    assert copy.terms_ == ("(1 | Subject)",)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(sleep), est.predict(sleep))


def test_one_sided_formula_with_y(sleep):
    est = MixedLMRegressor(formula="~ Days + (Days | Subject)")
    est.fit(sleep, sleep["Reaction"])
    ref = MixedLMRegressor(formula=SLEEP).fit(sleep)
    assert est.log_likelihood_ == ref.log_likelihood_
    assert est.score(sleep, sleep["Reaction"]) == ref.score(sleep)
    with pytest.raises(ValueError, match="one-sided: pass y to score"):
        est.score(sleep)


def test_polars_data(sleep):
    pl = pytest.importorskip("polars")
    est = MixedLMRegressor(formula=SLEEP).fit(pl.from_pandas(sleep))
    ref = MixedLMRegressor(formula=SLEEP).fit(sleep)
    assert est.log_likelihood_ == ref.log_likelihood_
    np.testing.assert_array_equal(est.predict(pl.from_pandas(sleep)), ref.predict(sleep))


def test_polars_categoricals_are_factors(sleep):
    # an Enum keeps its declared order (reference level first) but is not ordinal; a
    # Categorical gets sorted levels, as strings
    pl = pytest.importorskip("polars")
    data = sleep.assign(f=np.where(sleep["Days"] > 4, "late", "early"))
    frame = pl.from_pandas(data).with_columns(
        pl.col("f").cast(pl.Enum(["late", "early"])).alias("e"),
        pl.col("f").cast(pl.Categorical).alias("c"),
    )
    e = MixedLMRegressor(formula="Reaction ~ e + (1 | Subject)").fit(frame)
    c = MixedLMRegressor(formula="Reaction ~ c + (1 | Subject)").fit(frame)
    assert list(e.fixed_effects_.index) == ["(Intercept)", "e[T.early]"]
    assert list(c.fixed_effects_.index) == ["(Intercept)", "c[T.late]"]
    assert e.log_likelihood_ == pytest.approx(c.log_likelihood_, abs=1e-9)


def test_grouping_factor_of_any_dtype(sleep):
    ref = MixedLMRegressor(formula=SLEEP).fit(sleep)
    for labels in (sleep["Subject"].astype(int), sleep["Subject"].astype("category")):
        est = MixedLMRegressor(formula=SLEEP).fit(sleep.assign(Subject=labels))
        assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-9)
        assert est.random_effects_["Subject"].index.dtype == labels.dtype


def test_population_predictions_without_the_grouping_column(sleep):
    est = MixedLMRegressor(formula=SLEEP).fit(sleep)
    population = est.intercept_ + est.coef_[0] * sleep["Days"].to_numpy()
    np.testing.assert_allclose(est.predict(sleep.drop(columns="Subject")), population)
    with pytest.warns(NoGroupsWarning, match="population predictions"):
        est.score(sleep.drop(columns="Subject"))
    # new levels get the population prediction, as lme4's allow.new.levels = TRUE
    new = sleep.assign(Subject="new")
    np.testing.assert_allclose(est.predict(new), population)


def test_unseen_level_of_a_fixed_effect_factor():
    data = simulate().assign(f=lambda d: np.where(d.x3 > 0, "a", "b"))
    est = MixedLMRegressor(formula="y ~ x1 + f + (1 | g)").fit(data)
    with pytest.raises(ValueError, match=r"factor 'f' has the level\(s\) \['c'\] never seen"):
        est.predict(data.assign(f="c"))


def test_random_slope_only_columns_and_factor_slopes():
    data = simulate().assign(f=lambda d: np.where(d.x3 > 0, "a", "b"))
    est = MixedLMRegressor(formula="y ~ x1 + (0 + f | g) + (0 + x2 | g)").fit(data)
    assert est.terms_ == ("(0 + `f[a]` + `f[b]` | g)", "(0 + x2 | g)")
    assert list(est.random_effects_cov_) == ["g", "g.1"]  # lme4's names
    assert list(est.fixed_effects_.index) == ["(Intercept)", "x1"]
    assert est.random_effects_cov_["g"].shape == (2, 2)


def test_group_scorer_and_plots_read_the_data(sleep):
    from sklmm import make_group_scorer, plot_residuals

    est = MixedLMRegressor(formula=SLEEP).fit(sleep)
    scorer = make_group_scorer(r2_score)
    assert scorer(est, sleep, None) == pytest.approx(est.score(sleep))  # no NoGroupsWarning
    plt = pytest.importorskip("matplotlib.pyplot")
    ax = plot_residuals(est, sleep)
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], est.predict(sleep))
    assert ax.get_xlabel() == "Fitted values (conditional)"
    plt.close(ax.figure)


def test_lmer_wrapper(sleep):
    est = lmer(SLEEP, sleep, reml=False)
    ref = MixedLMRegressor(formula=SLEEP, reml=False).fit(sleep)
    assert isinstance(est, MixedLMRegressor)
    assert est.log_likelihood_ == ref.log_likelihood_
    w = np.linspace(0.5, 2, len(sleep))
    weighted = lmer(SLEEP, sleep, weights=w)
    assert (
        weighted.log_likelihood_
        == MixedLMRegressor(formula=SLEEP).fit(sleep, sample_weight=w).log_likelihood_
    )


# -- model selection ----------------------------------------------------------------------

CANDIDATES = [
    "y ~ x1 + (1 | g)",
    "y ~ x1 + x2 + (x1 | g)",  # the true model
    "y ~ x2 + (x2 | g)",
    "y ~ 1 + (x1 | g)",
    "y ~ x1 + (x1 + x2 | g)",
]


# Wrong random parts are often singular (a slope variance estimated as 0): expected.
@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
def test_grid_search_over_formulas_with_group_kfold():
    # Whole groups held out: population predictions are scored, which pick the fixed
    # part (the groups go to the splitter only; no routing needed).
    data = simulate()
    search = GridSearchCV(MixedLMRegressor(), {"formula": CANDIDATES}, cv=GroupKFold(5))
    search.fit(data, groups=data["g"])
    assert search.best_params_["formula"] == CANDIDATES[1]
    assert search.best_estimator_.terms_ == ("(1 + x1 | g)",)


@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
def test_grid_search_over_random_parts_with_row_folds():
    # Rows held out within seen groups: conditional predictions are scored, which pick
    # the random part too.
    data = simulate()
    candidates = ["y ~ x1 + x2 + (1 | g)", "y ~ x1 + x2 + (x1 | g)", "y ~ x1 + x2 + (0 + x1 | g)"]
    search = GridSearchCV(
        MixedLMRegressor(), {"formula": candidates}, cv=KFold(5, shuffle=True, random_state=0)
    )
    search.fit(data)
    assert search.best_params_["formula"] == candidates[1]


@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
def test_routing_sends_groups_to_the_splitter_only(routing):
    data = simulate()
    est = MixedLMRegressor().set_fit_request(groups=False).set_score_request(groups=False)
    search = GridSearchCV(est, {"formula": CANDIDATES}, cv=GroupKFold(5))
    search.fit(data, groups=data["g"])
    assert search.best_params_["formula"] == CANDIDATES[1]
    # a formula estimator requests no groups by default: nothing to set
    result = cross_validate(
        MixedLMRegressor(formula=CANDIDATES[1]),
        data,
        params={"groups": data["g"]},
        cv=GroupKFold(5),
    )
    assert np.all(result["test_score"] > 0.5)


# -- errors ------------------------------------------------------------------------------

BAD_FORMULAS = [
    ("Reaction ~ Days + (Days | Subject", r"'\(' that is never closed at position 18"),
    ("Reaction ~ Days + Days | Subject)", r"'\)' without its '\('"),
    ("Reaction ~ Days + (Days | Sbject)", r"grouping factor 'Sbject' is not a column"),
    ("Reaction ~ Dayz + (Days | Subject)", r"\['Dayz'\] is not a column of the data"),
    ("Reaction ~ Days + (Days | )", r"has no grouping factor after '\|' at position 24"),
    ("Reaction ~ Days + ( | Subject)", r"has an empty left side at position 19"),
    ("Reaction ~ Days | Subject", r"'\|' outside a parenthesised random-effects term"),
    ("Speed ~ Days + (Days | Subject)", r"\['Speed'\] is not a column of the data"),
    ("~ Days + (Days | Subject)", r"one-sided and y=None"),
    ("Reaction ~ Days ~ x", r"a second '~' at position 16"),
    ("Reaction + Days + (1 | Subject)", r"has no '~'"),
    ("Reaction ~ ", r"no term on the right of '~'"),
    ("Reaction ~ I(Days^2) + (1 | Subject)", r"bitwise XOR, not a power: write '\*\*'"),
    ("Reaction ~ Days + (1 | Subject/)", r"the grouping .Subject/. of the term"),
]


@pytest.mark.parametrize(("formula", "message"), BAD_FORMULAS)
def test_bad_formulas(sleep, formula, message):
    with pytest.raises(ValueError, match=message):
        MixedLMRegressor(formula=formula).fit(sleep)


@pytest.mark.parametrize(
    ("params", "fit_kwargs", "names"),
    [
        ({"random_effects": "(1 | Subject)"}, {}, "random_effects"),
        ({"random_slopes": ["Days"]}, {}, "random_slopes"),
        ({"covariance_type": "diagonal"}, {}, "covariance_type"),
        ({"fit_intercept": False}, {}, "fit_intercept"),
        ({}, {"groups": "Subject"}, "groups"),
    ],
)
def test_formula_with_other_model_arguments(sleep, params, fit_kwargs, names):
    kwargs = {k: sleep[v] for k, v in fit_kwargs.items()}
    with pytest.raises(ValueError, match=f"so \\['{names}'\\] must be left at their defaults"):
        MixedLMRegressor(formula=SLEEP, **params).fit(sleep, **kwargs)


def test_formula_errors_on_data(sleep):
    # y may be given with a two-sided formula (scikit-learn's scorers need it), if it
    # is the response
    with_y = MixedLMRegressor(formula=SLEEP).fit(sleep, sleep["Reaction"])
    assert with_y.log_likelihood_ == MixedLMRegressor(formula=SLEEP).fit(sleep).log_likelihood_
    with pytest.raises(ValueError, match="y differs from the formula's response 'Reaction'"):
        MixedLMRegressor(formula=SLEEP).fit(sleep, sleep["Reaction"] + 1)
    with pytest.raises(ValueError, match="y has 179 values but the data has 180 rows"):
        MixedLMRegressor(formula="~ Days + (1 | Subject)").fit(sleep, sleep["Reaction"][1:])
    with pytest.raises(ValueError, match="y must be numbers"):
        MixedLMRegressor(formula="~ Days + (1 | Subject)").fit(sleep, sleep["Subject"] + "x")
    with pytest.raises(TypeError, match="X must be a DataFrame"):
        MixedLMRegressor(formula=SLEEP).fit(sleep.to_numpy())
    with pytest.raises(ValueError, match="response 'Subject' must be one numeric column"):
        MixedLMRegressor(formula="Subject ~ Days + (1 | Subject)").fit(sleep)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=r"non-finite values"):
        MixedLMRegressor(formula="Reaction ~ np.log(Days) + (1 | Subject)").fit(sleep)
    est = MixedLMRegressor(formula=SLEEP).fit(sleep)
    with pytest.raises(ValueError, match=r"no column\(s\) \['Days'\]"):
        est.predict(sleep.drop(columns="Days"))
    with pytest.raises(ValueError, match="takes the grouping factors from the data"):
        est.predict(sleep, groups=sleep["Subject"])


BAD_DATA = [
    ("Subject ~ Days + (1 | Subject)", {}, "response 'Subject' must be one numeric column"),
    ("Reaction ~ Days + (1 | factor(Subject))", {}, r"R's factor\(\) is not needed"),
    ("Reaction ~ Days + (1 | Subject) + (1 | Subject)", {}, "formula: the terms"),
    ("Reaction ~ Days + offset(Days) + (1 | Subject)", {}, "unknown function 'offset'"),
    ("Reaction ~ t + (1 | Subject)", {"t": pd.Timestamp(0)}, r"date or duration column\(s\)"),
]


@pytest.mark.parametrize(("formula", "columns", "message"), BAD_DATA)
def test_bad_data_for_a_formula(sleep, formula, columns, message):
    with pytest.raises(ValueError, match=message):
        MixedLMRegressor(formula=formula).fit(sleep.assign(**columns))


def test_collinear_columns_of_a_formula(sleep):
    data = sleep.assign(D2=sleep["Days"] * 2)
    with pytest.raises(ValueError, match="remove the terms that make them from the formula"):
        MixedLMRegressor(formula="Reaction ~ Days + D2 + (1 | Subject)").fit(data)


def test_bad_data_at_prediction(sleep):
    est = MixedLMRegressor(formula=SLEEP).fit(sleep)
    logged = MixedLMRegressor(formula="Reaction ~ np.log(Days + 1) + (1 | Subject)").fit(sleep)
    with pytest.raises(ValueError, match=r"at prediction.*non-finite"):
        with pytest.warns(RuntimeWarning):  # numpy's, from log(0)
            logged.predict(sleep.assign(Days=-1.0))
    with pytest.raises(ValueError, match=r"\['Days'\] were numeric in fit"):
        est.predict(sleep.assign(Days=sleep["Days"].astype(str)))
    with pytest.raises(ValueError, match="several columns named"):
        MixedLMRegressor(formula=SLEEP).fit(pd.concat([sleep, sleep[["Days"]]], axis=1))


def test_pickled_model_predicts_in_a_new_process(sleep, tmp_path):
    import subprocess
    import sys

    est = MixedLMRegressor(formula="Reaction ~ poly(Days, 2) + (1 | Subject)").fit(sleep)
    path = tmp_path / "est.pkl"
    path.write_bytes(pickle.dumps(est))
    code = (
        "import pickle, sys; from sklmm.datasets import load_sleepstudy; "
        f"est = pickle.loads(open({str(path)!r}, 'rb').read()); "
        "print(repr(est.predict(load_sleepstudy())[:3].tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == est.predict(sleep)[:3].tolist()


def test_missing_values_inside_stateful_transforms(sleep):
    # formulaic does not list x among the variables of center(x); rows missing it are
    # still left out, and text passed for it at prediction is still an error.
    data = sleep.assign(Days=sleep["Days"].astype(float))
    data.loc[[4, 9], "Days"] = np.nan
    with pytest.warns(MissingDataWarning, match="2 of 180 rows"):
        est = MixedLMRegressor(formula="Reaction ~ center(Days) + (1 | Subject)").fit(data)
    assert list(est.rows_dropped_) == [4, 9]
    ref = MixedLMRegressor(formula="Reaction ~ center(Days) + (1 | Subject)")
    ref.fit(data.drop(index=[4, 9]))
    assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-10)
    with pytest.raises(ValueError, match="were numeric in fit"):
        est.predict(sleep.assign(Days=sleep["Days"].astype(str)))


def test_unused_levels_and_string_dtypes(sleep):
    # R's drop.unused.levels: an unused category is no column; strings of any storage
    rng = np.random.default_rng(0)
    data = sleep.assign(f=rng.choice(["a", "b", "c"], len(sleep)))
    ref = MixedLMRegressor(formula="Reaction ~ Days + f + (1 | Subject)").fit(data)
    for f in (
        pd.Categorical(data["f"], categories=["a", "b", "c", "z"]),
        data["f"].astype("string"),
        data["f"].astype("string[pyarrow]") if _has_pyarrow() else data["f"],
    ):
        est = MixedLMRegressor(formula="Reaction ~ Days + f + (1 | Subject)").fit(data.assign(f=f))
        assert list(est.fixed_effects_.index) == list(ref.fixed_effects_.index)
        assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-10)
        np.testing.assert_allclose(est.predict(data.assign(f=f)), ref.predict(data))
    # an ordered factor missing a level in the data: contr.poly of the levels present
    o = pd.Categorical(data["f"].where(data["f"] != "b", "a"), categories=list("abc"), ordered=True)
    est = MixedLMRegressor(formula="Reaction ~ Days + o + (1 | Subject)").fit(data.assign(o=o))
    assert list(est.fixed_effects_.index) == ["(Intercept)", "Days", "o[.L]"]


def _has_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_formula_with_dask_input_is_refused(sleep):
    dd = pytest.importorskip("dask.dataframe")
    with pytest.raises(ValueError, match="a formula needs in-memory data"):
        MixedLMRegressor(formula=SLEEP).fit(dd.from_pandas(sleep, npartitions=2))


def test_missing_values_raise_names_the_columns(sleep):
    data = sleep.copy()
    data.loc[3, "Days"] = np.nan
    data.loc[7, "Subject"] = None
    with pytest.raises(ValueError, match=r"2 row\(s\).*\{'Days': 1, 'Subject': 1\}"):
        MixedLMRegressor(formula=SLEEP, na_action="raise").fit(data)
    with pytest.warns(MissingDataWarning, match="2 of 180 rows"):
        est = MixedLMRegressor(formula=SLEEP).fit(data)
    assert list(est.rows_dropped_) == [3, 7]
    before = data.copy()
    with pytest.warns(MissingDataWarning):
        est.predict(data)
    pd.testing.assert_frame_equal(data, before)  # inputs are never modified
