"""Satterthwaite degrees of freedom, t and F tests against lmerTest.

``tests/reference/*_inference/inference.json`` hold lmerTest's
``summary(as_lmerModLmerTest(fit), ddf = "Satterthwaite")``, its type III ``anova`` and
``contest(fit, L, joint = TRUE)`` for the ``lme4.json`` fit of the same folder (see
``tests/reference/README.md``).
"""

import json

import numpy as np
import pandas as pd
import pytest
from _reference import REFERENCE
from scipy import stats

from sklmm import MixedLMRegressor, SingularFitWarning, lmer
from sklmm.datasets import load_sleepstudy

CASES = sorted(p.parent.name for p in REFERENCE.glob("*_inference/inference.json"))


@pytest.fixture(scope="module", params=CASES)
def case(request):
    folder = REFERENCE / request.param
    spec = json.loads((folder / "spec.json").read_text())
    ref = json.loads((folder / "inference.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype={c: str for c in spec["group_columns"]})
    train = data[data["split"] == "train"]
    est = MixedLMRegressor(formula=spec["formula"], reml=spec["reml"], tol=1e-10).fit(train)
    return ref, est


def test_coefficient_tests(case):
    # summary(as_lmerModLmerTest(fit), ddf = "Satterthwaite")$coefficients
    ref, est = case
    want = ref["coef_satterthwaite"]
    table = est.summary().fixed_effects
    assert list(table.index) == want["names"]
    np.testing.assert_allclose(table["estimate"], want["estimate"], rtol=1e-6)
    np.testing.assert_allclose(table["std_error"], want["se"], rtol=1e-5)
    np.testing.assert_allclose(table["df"], want["df"], rtol=1e-3)
    np.testing.assert_allclose(table["t"], want["t"], rtol=1e-4)
    np.testing.assert_allclose(table["p_value"], want["p"], rtol=1e-4)
    # the intervals use the t quantiles with those df
    crit = stats.t.ppf(0.975, table["df"])
    np.testing.assert_allclose(table["ci_0.975"], table["estimate"] + crit * table["std_error"])


def test_type3_anova_and_joint_tests(case):
    # anova(fit, type = 3); contest(fit, L, joint = TRUE)
    ref, est = case
    table = est.anova()
    tests = ref["anova_type3_satterthwaite"]["tests"]
    assert list(table.index) == [t["term"] for t in tests]
    for t in tests:
        row = table.loc[t["term"]]
        assert row["num_df"] == t["num_df"]
        assert row["den_df"] == pytest.approx(t["den_df"], rel=1e-3)
        assert row["F"] == pytest.approx(t["F"], rel=1e-4)
        assert row["p_value"] == pytest.approx(t["p"], rel=1e-4)
        assert row["sum_sq"] == pytest.approx(t["sum_sq"], rel=1e-4)
        joint = est.test_contrast(pd.DataFrame(t["L"], columns=est.fixed_effects_.index))
        assert joint.loc[0, "F"] == pytest.approx(t["F"], rel=1e-4)
    for t in ref["column_tests"]:
        L = np.eye(len(est.fixed_effects_))[t["column_indices"]]
        got = est.test_contrast(L).iloc[0]
        want = t["satterthwaite"]
        assert got["den_df"] == pytest.approx(want["den_df"], rel=1e-3)
        assert got["F"] == pytest.approx(want["F"], rel=1e-4)


def test_balanced_design_gives_the_exact_df():
    # lmerTest on the full sleepstudy: df = 17 (balanced: the exact between-subject df),
    # Days: t = 6.771, p = 3.26e-06.
    fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
    days = fit.test_contrast({"Days": 1}, joint=False).iloc[0]
    assert days["df"] == pytest.approx(17.0, rel=1e-6)
    assert days["p_value"] == pytest.approx(2 * stats.t.sf(6.771485, 17), rel=1e-5)
    normal = fit.test_contrast({"Days": 1}, joint=False, ddf="normal").iloc[0]
    assert np.isinf(normal["df"])
    assert normal["p_value"] == pytest.approx(2 * stats.norm.sf(6.771485), rel=1e-5)


def test_no_random_effects_gives_the_ols_t_test():
    # With sigma2 the only variance parameter, Satterthwaite's df is n - p (REML).
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 1 + 0.3 * x + rng.normal(size=40)
    with pytest.warns(UserWarning):
        est = MixedLMRegressor().fit(x[:, None], y)
    table = est.summary().fixed_effects
    np.testing.assert_allclose(table["df"], 38.0, rtol=1e-6)


def test_type1_is_sequential():
    # Type I: the first term tested alone, the second given the first.
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(12), 6)
    x1 = rng.normal(size=72)
    x2 = 0.6 * x1 + rng.normal(size=72)
    y = x1 + 0.5 * x2 + rng.normal(size=12)[g] + rng.normal(size=72)
    data = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g": g})
    est = MixedLMRegressor(formula="y ~ x1 + x2 + (1 | g)").fit(data)
    t1, t3 = est.anova(type=1), est.anova(type=3)
    # the last term's type I and III tests are the same test
    assert t1.loc["x2", "F"] == pytest.approx(t3.loc["x2", "F"], rel=1e-8)
    assert t1.loc["x1", "F"] != pytest.approx(t3.loc["x1", "F"], rel=1e-3)
    # type I of x1 = the test of the first row of the unit upper Doolittle factor
    X = np.column_stack([np.ones(72), x1, x2])
    R = np.linalg.cholesky(X.T @ X).T
    L = (R / np.diag(R)[:, None])[[1]]
    assert est.test_contrast(L).loc[0, "F"] == pytest.approx(t1.loc["x1", "F"], rel=1e-8)
    # the order of a terms mapping is the sequence: x2 first, then x1 given x2
    swapped = est.anova(type=1, terms={"x2": ["x2"], "x1": ["x1"]})
    assert swapped.loc["x1", "F"] == pytest.approx(t3.loc["x1", "F"], rel=1e-8)
    assert swapped.loc["x2", "F"] != pytest.approx(t3.loc["x2", "F"], rel=1e-3)


def test_contrast_inputs_and_errors():
    fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
    by_name = fit.test_contrast(pd.Series({"(Intercept)": 1.0, "Days": 9.0}), joint=False)
    by_array = fit.test_contrast([[1.0, 9.0]], joint=False)
    pd.testing.assert_frame_equal(by_name, by_array)
    with pytest.raises(ValueError, match="not fixed effects"):
        fit.test_contrast({"days": 1})
    with pytest.raises(ValueError, match="one column per fixed effect"):
        fit.test_contrast([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="is not one of"):
        fit.summary(ddf="kr")
    with pytest.raises(ValueError, match="no estimable direction"):
        fit.test_contrast([[0.0, 0.0]])
    with pytest.raises(ValueError, match="type=2"):
        fit.anova(type=2)
    with pytest.raises(ValueError, match="not fixed effects"):
        fit.anova(terms={"slope": ["days"]})
    # the normal reference: a Wald chi-square for several rows, without warnings
    both = fit.test_contrast(np.eye(2), ddf="normal").iloc[0]
    assert np.isinf(both["den_df"]) and both["num_df"] == 2
    named = fit.test_contrast(pd.DataFrame({"Days": [1.0, 2.0]}, index=["a", "b"]), joint=False)
    assert list(named.index) == ["a", "b"]


def test_type3_of_contained_terms_as_lmertest():
    # lmerTest's anova(fit, type = 3) on hierarchical formulas (factor x factor, factor x
    # covariate, a three-way interaction, two covariates): every term, contained ones
    # included, from sklmm's grid contrasts (tests/reference/satterthwaite/type3.R)
    data = pd.read_csv(REFERENCE / "satterthwaite" / "type3.csv")
    ref = json.loads((REFERENCE / "satterthwaite" / "type3.json").read_text())
    for formula, want in ref.items():
        est = MixedLMRegressor(formula=formula).fit(data)
        if formula.startswith("y ~ A + A:B"):  # not hierarchical: B has no main effect
            with pytest.raises(ValueError, match="contain: lmerTest's contrast for it"):
                est.anova()
            cols = [c for c in est.fixed_effects_.index if ":" in c]
            got = est.anova(terms={"A:B": cols}).loc["A:B"]
            assert got["F"] == pytest.approx(want["F"][1], rel=1e-4)
            continue
        table = est.anova()
        assert list(table.index) == want["terms"], formula
        np.testing.assert_allclose(table["F"], want["F"], rtol=1e-4, err_msg=formula)
        np.testing.assert_allclose(table["den_df"], want["den"], rtol=1e-3, err_msg=formula)
        np.testing.assert_array_equal(table["num_df"], want["num"])


# -- more designs: tests/reference/satterthwaite (make.R there) --------------------------

SATT = json.loads((REFERENCE / "satterthwaite" / "lmerTest.json").read_text())


@pytest.fixture(scope="module", params=sorted(SATT))
def satt_case(request):
    ref = SATT[request.param]
    data = pd.read_csv(REFERENCE / "satterthwaite" / f"{request.param}.csv")
    for col in data.columns:
        if data[col].dtype == object:
            data[col] = data[col].astype(str)
    for col, spec in (ref["factors"] or {}).items():
        data[col] = pd.Categorical(data[col], categories=spec["levels"], ordered=spec["ordered"])
    est = MixedLMRegressor(formula=ref["formula"], reml=ref["reml"])
    if ref["isSingular"]:
        with pytest.warns(SingularFitWarning):
            est.fit(data)
    else:
        est.fit(data)
    return ref, est


def _r_names(index):
    return [n.replace("[T.", "").replace("]", "") for n in index]


def test_satterthwaite_designs_coefficients(satt_case):
    ref, est = satt_case
    assert est.log_likelihood_ == pytest.approx(ref["logLik"], abs=1e-6)
    table = est.summary().fixed_effects
    assert _r_names(table.index) == list(np.atleast_1d(ref["coef"]["names"]))
    np.testing.assert_allclose(table["df"], ref["coef"]["df"], rtol=1e-3)
    np.testing.assert_allclose(table["t"], ref["coef"]["t"], rtol=1e-4)
    np.testing.assert_allclose(table["p_value"], ref["coef"]["p"], rtol=1e-4)


def _term_key(name):
    """lme4's parameter name with the factors of an interaction sorted (lme4 names the
    nested term of (1 | Worker/Machine) 'Machine:Worker', sklmm 'Worker:Machine')."""
    if "|" not in name:
        return name
    head, term = name.rsplit("|", 1)
    return f"{head}|{':'.join(sorted(term.split(':')))}"


def test_profile_intervals(satt_case):
    # confint(fit, method = "profile"): every parameter on the ML deviance, lme4's
    # limits to 1e-2 of the interval's width (lme4 interpolates its profile by splines)
    ref, est = satt_case
    want = ref["confint_profile"]
    got = est.conf_int("profile").rename(
        index=lambda n: _term_key(n.replace("[T.", "").replace("]", ""))
    )
    for name, lo, hi in zip(want["names"], want["lower"], want["upper"], strict=True):
        key = _term_key(name)
        width = hi - lo
        assert got.loc[key, "2.5 %"] == pytest.approx(lo, abs=1e-2 * width), name
        assert got.loc[key, "97.5 %"] == pytest.approx(hi, abs=1e-2 * width), name


def test_satterthwaite_designs_f_tests(satt_case):
    ref, est = satt_case
    names = est.fixed_effects_.index
    # every lmerTest contrast (type I and III, contained terms included) through
    # test_contrast, and the tables where sklmm builds the contrasts itself
    for kind in ("anova_type1", "anova_type3"):
        for t in ref[kind]:
            got = est.test_contrast(pd.DataFrame(t["L"], columns=names)).iloc[0]
            assert got["num_df"] == t["num_df"]
            assert got["den_df"] == pytest.approx(t["den_df"], rel=1e-3)
            assert got["F"] == pytest.approx(t["F"], rel=1e-4)
            assert got["p_value"] == pytest.approx(t["p"], rel=1e-4)
    type3 = est.anova()  # sklmm's own type III contrasts, contained terms included
    for t in ref["anova_type3"]:
        assert type3.loc[t["term"], "F"] == pytest.approx(t["F"], rel=1e-4)
        assert type3.loc[t["term"], "den_df"] == pytest.approx(t["den_df"], rel=1e-3)
    type1 = est.anova(type=1)
    for t in ref["anova_type1"]:
        assert type1.loc[t["term"], "F"] == pytest.approx(t["F"], rel=1e-4)
        assert type1.loc[t["term"], "den_df"] == pytest.approx(t["den_df"], rel=1e-3)
    for t in ref["column_tests"]:
        L = np.eye(len(names))[t["column_indices"]]
        got = est.test_contrast(L).iloc[0]
        assert got["F"] == pytest.approx(t["F"], rel=1e-4)
        assert got["den_df"] == pytest.approx(t["den_df"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")  # some replicates: expected
def test_satterthwaite_intervals_cover_with_few_groups():
    # 8 groups of 6 rows, a group-level covariate w: its coefficient has about 6 df. The
    # 95% Satterthwaite intervals cover 93-97% of the time; the z intervals visibly less.
    rng = np.random.default_rng(20261127)
    n_rep, g = 1000, np.repeat(np.arange(8), 6)
    w = np.linspace(-1, 1, 8)[g]
    x = np.tile(np.linspace(-1, 1, 6), 8)
    hits = {"satterthwaite": 0, "normal": 0}
    for _ in range(n_rep):
        y = 1 + 0.5 * w + 0.3 * x + rng.normal(size=8)[g] + rng.normal(size=48)
        est = MixedLMRegressor().fit(np.column_stack([w, x]), y, groups=g)
        for ddf in hits:
            table = est.summary(ddf=ddf).fixed_effects.iloc[1]
            hits[ddf] += table["ci_0.025"] <= 0.5 <= table["ci_0.975"]
    coverage = {k: v / n_rep for k, v in hits.items()}
    assert 0.93 <= coverage["satterthwaite"] <= 0.97, coverage
    assert coverage["normal"] < coverage["satterthwaite"] - 0.02, coverage


def test_profile_intervals_of_the_full_sleepstudy():
    # confint(lmer(Reaction ~ Days + (Days | Subject), sleepstudy)), as lme4 prints it
    fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
    got = fit.conf_int("profile")
    lme4 = {
        "sd_(Intercept)|Subject": (14.3814, 37.7159),
        "cor_Days.(Intercept)|Subject": (-0.4815, 0.6849),
        "sd_Days|Subject": (3.8012, 8.7533),
        "sigma": (22.8982, 28.8579),
        "(Intercept)": (237.6806, 265.1295),
        "Days": (7.3587, 13.5759),
    }
    assert list(got.index) == ["(Intercept)", "Days", *list(lme4)[:4]]
    for name, (lo, hi) in lme4.items():
        width = hi - lo
        assert got.loc[name, "2.5 %"] == pytest.approx(lo, abs=1e-3 * width), name
        assert got.loc[name, "97.5 %"] == pytest.approx(hi, abs=1e-3 * width), name


# -- Kenward-Roger (pbkrtest) -------------------------------------------------------------


def test_kenward_roger_against_pbkrtest(satt_case):
    # summary(fit, ddf = "Kenward-Roger"), pbkrtest::vcovAdj(fit), anova(fit, ddf = "K-R")
    ref, est = satt_case
    kr = ref["kenward_roger"]
    if not kr:  # ML fits (pbkrtest needs REML) and fits on the boundary
        with pytest.raises(ValueError, match=r"REML fit|boundary"):
            est.summary(ddf="kenward-roger")
        return
    table = est.summary(ddf="kenward-roger").fixed_effects
    np.testing.assert_allclose(table["std_error"], kr["coef"]["se"], rtol=1e-4)
    np.testing.assert_allclose(table["df"], kr["coef"]["df"], rtol=1e-3)
    np.testing.assert_allclose(table["t"], kr["coef"]["t"], rtol=1e-4)
    np.testing.assert_allclose(table["p_value"], kr["coef"]["p"], rtol=1e-4)
    names = est.fixed_effects_.index
    for kind in ("anova_type1", "anova_type3"):
        for t in kr[kind]:
            got = est.test_contrast(pd.DataFrame(t["L"], columns=names), ddf="kenward-roger")
            got = got.iloc[0]
            assert got["sum_sq"] == pytest.approx(t["sum_sq"], rel=1e-4)  # the Wald F's
            assert got["num_df"] == t["num_df"]
            assert got["den_df"] == pytest.approx(t["den_df"], rel=1e-3)
            assert got["F"] == pytest.approx(t["F"], rel=1e-4)
            assert got["p_value"] == pytest.approx(t["p"], rel=1e-4)


@pytest.mark.parametrize("name", ["kr_zero_cov", "kr_small_cov"])
def test_kenward_roger_with_a_covariance_near_zero(name):
    # The steps of the differences follow the variances, not the covariance itself
    # (a covariance of 0 has no scale): pbkrtest's numbers (kr_small_cov.R)
    ref = json.loads((REFERENCE / "satterthwaite" / "kr_small_cov.json").read_text())[name]
    data = pd.read_csv(REFERENCE / "satterthwaite" / f"{name}.csv")
    fit = MixedLMRegressor(formula="y ~ x + (x | g)", tol=1e-10).fit(data)
    table = fit.summary(ddf="kenward-roger").fixed_effects
    np.testing.assert_allclose(table["std_error"], ref["se"], rtol=1e-4)
    np.testing.assert_allclose(table["df"], ref["df"], rtol=1e-3)
    np.testing.assert_allclose(
        fit._fitted._ddf["kenward-roger"].cov, ref["vcov_adj"], rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("case", CASES)
def test_kenward_roger_inference_cases(case):
    folder = REFERENCE / case
    spec = json.loads((folder / "spec.json").read_text())
    ref = json.loads((folder / "inference.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype={c: str for c in spec["group_columns"]})
    est = MixedLMRegressor(formula=spec["formula"], tol=1e-10).fit(data[data["split"] == "train"])
    table = est.summary(ddf="kenward-roger").fixed_effects
    want = ref["coef_kenward_roger"]
    np.testing.assert_allclose(table["std_error"], want["se"], rtol=1e-5)
    np.testing.assert_allclose(table["df"], want["df"], rtol=1e-3)
    np.testing.assert_allclose(table["p_value"], want["p"], rtol=1e-4)
    method = est._fitted._ddf["kenward-roger"]
    np.testing.assert_allclose(method.cov, ref["vcov_kenward_roger"], rtol=1e-5)
    for t in ref["anova_type3_kenward_roger"]["tests"]:
        got = est.anova(ddf="kenward-roger").loc[t["term"]]
        assert got["F"] == pytest.approx(t["F"], rel=1e-4)
        assert got["den_df"] == pytest.approx(t["den_df"], rel=1e-3)


# -- tests of the random effects ---------------------------------------------------------


def test_ranova_sleepstudy():
    # lmerTest::ranova(lmer(Reaction ~ Days + (Days | Subject), sleepstudy)):
    #   <none> 6 -871.81; Days in (Days | Subject) 4 -893.23, LRT 42.837, Df 2
    fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
    table = fit.ranova()
    assert list(table.index) == ["<none>", "Days in (1 + Days | Subject)"]
    assert table.loc["<none>", "logLik"] == pytest.approx(fit.log_likelihood_)
    row = table.iloc[1]
    assert row["npar"] == 4 and row["Df"] == 2
    assert row["logLik"] == pytest.approx(-893.2325, abs=1e-3)
    assert row["LRT"] == pytest.approx(42.837, abs=1e-3)
    assert row["p_value"] == pytest.approx(stats.chi2.sf(row["LRT"], 2), rel=1e-12)


def test_ranova_and_lrt_without_refit_penicillin():
    # lme4's anova(m_small, m_big, refit = FALSE) on the Penicillin train rows: REML
    # logLik -278.9285 (1 | plate) and -149.0212 (both terms), Chisq 259.8145
    from sklmm import likelihood_ratio_test

    folder = REFERENCE / "penicillin_reml_inference"
    spec = json.loads((folder / "spec.json").read_text())
    ref = json.loads((folder / "inference.json").read_text())["lrt"]
    data = pd.read_csv(folder / "data.csv", dtype={c: str for c in spec["group_columns"]})
    train = data[data["split"] == "train"]
    big = MixedLMRegressor(formula=ref["big"], tol=1e-10).fit(train)
    small = MixedLMRegressor(formula=ref["small"], tol=1e-10).fit(train)
    want = ref["refit_false"]["table"]
    got = likelihood_ratio_test(small, big, refit=False)
    np.testing.assert_allclose(got["logLik"], want["logLik"], atol=1e-4)
    assert got.loc["large", "Chisq"] == pytest.approx(want["Chisq"][1], abs=1e-3)
    refit = likelihood_ratio_test(small, big)
    np.testing.assert_allclose(refit["logLik"], ref["table"]["logLik"], atol=1e-4)
    table = big.ranova()
    assert table.loc["(1 | sample)", "logLik"] == pytest.approx(want["logLik"][0], abs=1e-4)
    assert table.loc["(1 | sample)", "LRT"] == pytest.approx(want["Chisq"][1], abs=1e-3)
    # refit=False needs two REML fits with the same fixed effects
    ml = MixedLMRegressor(formula=ref["small"], reml=False).fit(train)
    with pytest.raises(ValueError, match="refit=False compares REML likelihoods"):
        likelihood_ratio_test(ml, big, refit=False)


def test_ranova_reduces_each_slope_and_matches_refits():
    # Reduced models refitted from the statistics equal fits of the reduced formulas.
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(15), 10)
    a, b = rng.normal(size=(2, 150))
    u = rng.normal(size=(15, 3)) * [1.0, 0.7, 0.5]
    y = 1 + a + b + u[g, 0] + u[g, 1] * a + u[g, 2] * b + rng.normal(size=150)
    data = pd.DataFrame({"y": y, "a": a, "b": b, "g": g, "h": g % 5})
    fit = MixedLMRegressor(formula="y ~ a + b + (1 + a + b | g) + (1 | h)").fit(data)
    table = fit.ranova()
    assert list(table.index) == [
        "<none>",
        "a in (1 + a + b | g)",
        "b in (1 + a + b | g)",
        "(1 | h)",
    ]
    for label, formula in [
        ("a in (1 + a + b | g)", "y ~ a + b + (1 + b | g) + (1 | h)"),
        ("b in (1 + a + b | g)", "y ~ a + b + (1 + a | g) + (1 | h)"),
        ("(1 | h)", "y ~ a + b + (1 + a + b | g)"),
    ]:
        refit = MixedLMRegressor(formula=formula).fit(data)
        assert table.loc[label, "logLik"] == pytest.approx(refit.log_likelihood_, abs=1e-5)


def test_profiles_and_their_plot():
    # profile(): the evaluated points, crossing +/- 1.96 at the limits of conf_int
    plt = pytest.importorskip("matplotlib.pyplot")
    from sklmm import plot_profile

    fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
    profiles = fit.profile()
    limits = fit.conf_int("profile")
    assert list(dict.fromkeys(profiles["parameter"])) == list(limits.index)
    for name, part in profiles.groupby("parameter"):
        part = part.sort_values("value")
        assert np.all(np.diff(part["zeta"]) >= -1e-8), name  # increasing
        lo, hi = limits.loc[name]
        assert np.interp(-1.959964, part["zeta"], part["value"]) == pytest.approx(lo, rel=1e-4)
        assert np.interp(1.959964, part["zeta"], part["value"]) == pytest.approx(hi, rel=1e-4)
    fig = plot_profile(fit, profiles=profiles)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == list(limits.index)
    plt.close(fig)


def test_ranova_of_diagonal_terms_and_factor_slopes():
    # lmerTest::ranova (tests/reference/satterthwaite/ranova.R): a diagonal term reduces
    # its intercept too (lme4's || is separate terms), a factor's dummies go together
    ref = json.loads((REFERENCE / "satterthwaite" / "ranova.json").read_text())
    diag = lmer("Reaction ~ Days + (Days || Subject)", load_sleepstudy()).ranova()
    data = pd.read_csv(REFERENCE / "satterthwaite" / "ranova_factor.csv")
    data["Subject"] = data["Subject"].astype(str)
    factor = lmer("Reaction ~ Days + g3 + (1 + g3 | Subject)", data).ranova()
    for got, want in ((diag, ref["diagonal"]), (factor, ref["factor"])):
        assert len(got) == len(want["terms"])
        np.testing.assert_array_equal(got["npar"], want["npar"])
        np.testing.assert_allclose(got["logLik"], want["logLik"], atol=1e-3)
        np.testing.assert_allclose(got["LRT"].iloc[1:], want["LRT"][1:], atol=2e-3)
        np.testing.assert_allclose(got["p_value"].iloc[1:], want["p"][1:], rtol=1e-3)
    assert list(factor.index)[1].startswith("g3 in (1 + ")


def test_profiles_are_monotone_without_a_fixed_intercept():
    # An inner fit that stopped early near a bound left a jag in this profile; the
    # restart of the inner minimisation removes it.
    fit = lmer("Reaction ~ 0 + Days + (Days | Subject)", load_sleepstudy())
    for name, part in fit.profile().groupby("parameter"):
        zeta = part.sort_values("value")["zeta"].to_numpy()
        assert np.all(np.diff(zeta) >= -1e-6), name
