"""Inference against lme4 (reference cases) and by simulation (coverage)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from _reference import ONE_FACTOR, REFERENCE, load_case

from sklmm import MixedLMRegressor, SingularFitWarning, likelihood_ratio_test
from sklmm._inference import format_pvalues, r_format
from sklmm.datasets import load_sleepstudy

CASES = {name: load_case(name) for name in ONE_FACTOR}


def fit(case, **params):
    est = MixedLMRegressor(**{**case.estimator_params(), **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        return est.fit(case.X(case.train), case.y(case.train), groups=case.groups(case.train))


@pytest.fixture(scope="module", params=ONE_FACTOR)
def case_fit(request):
    case = CASES[request.param]
    return case, fit(case)


def test_fixed_effects_cov(case_fit):
    # vcov(fit), sqrt(diag(vcov(fit)))
    case, est = case_fit
    np.testing.assert_allclose(est.fixed_effects_cov_, case.lme4["vcov_fixef"], rtol=1e-4)
    table = est.summary(ddf="normal").fixed_effects
    np.testing.assert_allclose(table["std_error"], case.lme4["se_fixef"], rtol=1e-4)
    np.testing.assert_allclose(table["z"], table["estimate"] / table["std_error"])
    table = est.summary().fixed_effects  # Satterthwaite's t tests by default
    np.testing.assert_allclose(table["std_error"], case.lme4["se_fixef"], rtol=1e-4)
    np.testing.assert_allclose(table["t"], table["estimate"] / table["std_error"])


def test_information_criteria(case_fit):
    # AIC(fit), BIC(fit), attr(logLik(fit), "df")
    case, est = case_fit
    assert est.n_params_ == case.lme4["logLik_df"]
    assert est.aic_ == pytest.approx(case.lme4["AIC"], abs=2e-6)
    assert est.bic_ == pytest.approx(case.lme4["BIC"], abs=2e-6)


def test_varcorr_table(case_fit):
    # as.data.frame(VarCorr(fit))
    case, est = case_fit
    vc = est.summary().random_effects
    assert list(vc.columns[:5]) == ["grp", "var1", "var2", "vcov", "sdcor"]
    ref = np.asarray(case.lme4["random_terms"][0]["cov"])
    q = len(ref)
    variances = vc["vcov"].to_numpy()[:q]
    np.testing.assert_allclose(variances, np.diag(ref), rtol=1e-3, atol=1e-6)
    assert vc["vcov"].iloc[-1] == pytest.approx(case.lme4["sigma2"], rel=1e-3)
    assert vc["grp"].iloc[-1] == "Residual"
    n_cov = q * (q - 1) // 2 if case.term["cov"] == "unstructured" else 0
    assert len(vc) == q + n_cov + 1


def test_ml_refit_in_lr_test_matches_lme4_ml():
    """The ML refit of a REML fit is lme4's ML fit (sleepstudy_ml, same rows)."""
    reml, ml = CASES["sleepstudy_reml"], CASES["sleepstudy_ml"]
    big = fit(reml)
    small = fit(reml, random_slopes=None)
    table = likelihood_ratio_test(big, small)
    assert table.loc["large", "logLik"] == pytest.approx(ml.lme4["logLik"], abs=1e-6)
    assert table.loc["large", "Df"] == 2
    chi2 = table.loc["large", "Chisq"]
    assert chi2 == pytest.approx(2 * (table.loc["large", "logLik"] - table.loc["small", "logLik"]))


def test_lr_test_sleepstudy_matches_lme4_anova():
    # anova(lmer(Reaction ~ Days + (1|Subject), sleepstudy),
    #       lmer(Reaction ~ Days + (Days|Subject), sleepstudy)): Chisq 42.139, AIC 1802.1, 1763.9
    df = load_sleepstudy()
    a = MixedLMRegressor().fit(df[["Days"]], df["Reaction"], groups=df["Subject"])
    b = MixedLMRegressor(random_slopes=["Days"]).fit(
        df[["Days"]], df["Reaction"], groups=df["Subject"]
    )
    table = likelihood_ratio_test(a, b)
    assert table.loc["large", "Chisq"] == pytest.approx(42.139, abs=1e-3)
    assert table.loc["small", "AIC"] == pytest.approx(1802.1, abs=0.05)
    assert table.loc["large", "AIC"] == pytest.approx(1763.9, abs=0.05)
    assert table.loc["large", "Pr(>Chisq)"] < 1e-9


def test_lr_test_rejects_incomparable_models():
    df = load_sleepstudy()
    X, y, g = df[["Days"]], df["Reaction"], df["Subject"]
    a = MixedLMRegressor().fit(X, y, groups=g)
    other = MixedLMRegressor(random_slopes=["Days"]).fit(
        X.iloc[:170], y.iloc[:170], groups=g.iloc[:170]
    )
    with pytest.raises(ValueError, match="not fitted on the same data"):
        likelihood_ratio_test(a, other)
    with pytest.raises(ValueError, match="not nested"):
        likelihood_ratio_test(a, MixedLMRegressor().fit(X, y, groups=g))
    d = MixedLMRegressor(random_slopes=["Days"], covariance_type="diagonal").fit(X, y, groups=g)
    u = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    assert likelihood_ratio_test(d, u).loc["large", "Df"] == 1


PRINT = json.loads((REFERENCE / "summary_print" / "lme4_print.json").read_text())


def _block(text):
    lines = text.split("\n")
    start = lines.index("Random effects:")
    end = next(i for i, line in enumerate(lines) if line.startswith("Number of obs:"))
    return lines[start : end + 1]


def test_summary_text_sleepstudy():
    """The numbers of lme4's summary(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))."""
    df = load_sleepstudy()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(
        df[["Days"]], df["Reaction"], groups=df["Subject"]
    )
    text = str(est.summary(df[["Days"]], df["Reaction"], df["Subject"], ddf="normal"))
    # The random-effects block, character for character as lme4 prints it at the optimum
    # (lme4's default optimizer stops 1e-12 short of it and prints 612.10 for 612.09).
    assert _block(text) == PRINT["sleepstudy"]["lines"]
    for expected in [
        "REML criterion at convergence: 1743.6",
        "-3.9536",
        "-0.4634",
        "0.0231",
        "0.4634",
        "5.1793",  # scaled residuals
        "251.4051",
        "6.8246",
        "36.8383",
        "10.4673",
        "1.5458",
        "6.7715",
        "-0.138",
        "Pr(>|z|)",
        "<2e-16",
        "1.27e-11",  # 2 * pnorm(-6.7715)
    ]:
        assert expected in text, expected
    # The default: lmerTest's summary, Satterthwaite's df (17 for this balanced design)
    text = str(est.summary(df[["Days"]], df["Reaction"], df["Subject"]))
    assert "Estimate  Std. Error      df  t value Pr(>|t|)" in text
    assert "Days          10.4673      1.5458 17.0000   6.7715 3.26e-06" in text


def test_html_summary_has_the_content_of_the_text():
    df = load_sleepstudy()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(
        df[["Days"]], df["Reaction"], groups=df["Subject"]
    )
    summary = est.summary(df[["Days"]], df["Reaction"], df["Subject"])
    html = summary._repr_html_()
    for expected in [
        "REML criterion at convergence: 1743.6283",
        "Scaled residuals",
        "Random effects",
        "Number of obs: 180, groups:  Subject, 18",
        "Fixed effects",
        "p_value",
        "Correlation of Fixed Effects",
        "-0.138",
    ]:
        assert expected in html, expected
    assert html.count("<table") == 3  # random effects, fixed effects, their correlations


def test_singular_summary_prints_as_lme4():
    """Zero variances print as zeros with a NaN correlation; the residual keeps its interval."""
    data = pd.read_csv(REFERENCE / "summary_print" / "zero_variance.csv")
    with pytest.warns(SingularFitWarning):
        est = MixedLMRegressor(random_slopes=["x"]).fit(data[["x"]], data["y"], groups=data["g"])
    assert est.log_likelihood_ == pytest.approx(-PRINT["zero_variance"]["reml_criterion"] / 2)
    summary = est.summary()
    ours, lme4 = _block(str(summary)), PRINT["zero_variance"]["lines"]
    assert len(ours) == len(lme4)
    for mine, theirs in zip(ours, lme4, strict=True):
        # The same cells; lme4's optimizer leaves 1e-18 where the variance is zero, which
        # turns its columns to scientific notation, so the numbers are compared as numbers.
        a, b = mine.split(), theirs.split()
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            try:
                assert float(x) == pytest.approx(float(y), rel=1e-3, abs=1e-8) or x == y
            except ValueError:
                assert x == y
    assert "NaN" in ours[3]  # the correlation of two zero standard deviations
    assert "0.9999" not in str(summary)
    vc = summary.random_effects
    assert vc.loc[vc["grp"] == "g", ["ci_0.025", "ci_0.975"]].isna().all().all()
    residual = vc[vc["grp"] == "Residual"].iloc[0]
    assert 0 < residual["ci_0.025"] < residual["sdcor"] < residual["ci_0.975"]


def test_r_format_matches_r():
    for case in PRINT["format"]:
        got = [v.strip() for v in r_format(case["values"])]
        assert got == [v.strip() for v in case["formatted"]], case
    for case in PRINT["pvalues"]:
        assert format_pvalues(case["values"]) == case["formatted"], case


def test_summary_states_boundary_and_ml():
    case = CASES["dyestuff2_reml"]
    est = fit(case)
    assert "boundary (singular) fit" in str(est.summary())
    vc = est.summary().random_effects
    # the term on the boundary has no Wald interval; the residual has its own
    assert np.isnan(vc["ci_0.025"].iloc[:-1]).all()
    assert np.isfinite(vc["ci_0.025"].iloc[-1])
    ml = fit(CASES["dyestuff_ml"])
    text = str(ml.summary())
    assert "AIC" in text and "333.3271" in text  # AIC(fit) in lme4: 333.327


def test_summary_states_non_convergence():
    from sklmm import MixedLMConvergenceWarning

    df = load_sleepstudy()
    with pytest.warns(MixedLMConvergenceWarning):
        est = MixedLMRegressor(random_slopes=["Days"], solver="em", max_iter=2).fit(
            df[["Days"]], df["Reaction"], groups=df["Subject"]
        )
    assert "did not converge" in str(est.summary())


def simulate(rng, n_groups=40, per_group=8, sd=(1.0, 0.5), sigma=1.0):
    codes = np.repeat(np.arange(n_groups), per_group)
    x = rng.uniform(-2, 2, len(codes))
    b = rng.standard_normal((n_groups, 2)) * sd
    y = 1.0 + 0.5 * x + b[codes, 0] + b[codes, 1] * x + sigma * rng.standard_normal(len(codes))
    return x[:, None], y, codes, b


def test_prediction_interval_coverage():
    """95% observation-level intervals cover new observations 93-97% of the time."""
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(60):
        X, y, g, b = simulate(rng)
        est = MixedLMRegressor(random_slopes=[0]).fit(X, y, groups=g)
        # 20 new rows of seen groups and 20 rows of new groups
        g_new = np.r_[rng.integers(0, 40, 20), np.arange(1000, 1020)]
        x_new = rng.uniform(-2, 2, 40)
        b_new = np.r_[b[g_new[:20]], rng.standard_normal((20, 2)) * (1.0, 0.5)]
        y_new = 1.0 + 0.5 * x_new + b_new[:, 0] + b_new[:, 1] * x_new + rng.standard_normal(40)
        pred, std = est.predict(
            x_new[:, None], groups=g_new, return_std=True, include_residual=True
        )
        hits.append(np.abs(y_new - pred) <= 1.959964 * std)
    hits = np.array(hits)
    assert hits.size >= 2000
    assert 0.93 <= hits.mean() <= 0.97, hits.mean()
    assert 0.92 <= hits[:, :20].mean() <= 0.98 and 0.92 <= hits[:, 20:].mean() <= 0.98


def test_prediction_std_parts():
    df = load_sleepstudy()
    est = MixedLMRegressor(random_slopes=["Days"]).fit(
        df[["Days"]], df["Reaction"], groups=df["Subject"]
    )
    X = df[["Days"]].iloc[:3]
    _, std = est.predict(X, groups=["new"] * 3, return_std=True)
    Xf = np.c_[np.ones(3), X]
    cov = est.fixed_effects_cov_ + est.random_effects_cov_["Subject"].to_numpy()
    expected = np.einsum("ij,jk,ik->i", Xf, cov, Xf)
    np.testing.assert_allclose(std, np.sqrt(expected))
    _, std_obs = est.predict(X, groups=["new"] * 3, return_std=True, include_residual=True)
    np.testing.assert_allclose(std_obs**2, std**2 + est.residual_variance_)
    _, std_seen = est.predict(X, groups=["308"] * 3, return_std=True)
    assert np.all(std_seen < std)
    np.testing.assert_array_equal(
        est.predict(X, groups=["308"] * 3, return_std=True)[0], est.predict(X, groups=["308"] * 3)
    )


def test_variance_parameter_interval_coverage():
    """Wald intervals (log-sd / atanh-corr scale) cover the true values near 95%."""
    rng = np.random.default_rng(1)
    true = np.array([1.0, 0.5, 0.0, 1.0])  # sd intercept, sd slope, corr, sigma
    cover = []
    for _ in range(200):
        X, y, g, _ = simulate(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            est = MixedLMRegressor(random_slopes=[0]).fit(X, y, groups=g)
        vc = est.summary().random_effects
        lo, hi = vc["ci_0.025"].to_numpy(), vc["ci_0.975"].to_numpy()
        cover.append((lo <= true) & (true <= hi))
    rate = np.mean(cover, axis=0)
    assert np.all((rate >= 0.90) & (rate <= 0.99)), rate


def test_lr_test_rejects_same_names_on_different_columns():
    """Array inputs are all named x0, x1, ...: the columns themselves must match."""
    df = load_sleepstudy()
    rng = np.random.default_rng(0)
    A = np.c_[df["Days"], rng.standard_normal(180), rng.standard_normal(180)]
    y, g = df["Reaction"], df["Subject"]
    m1 = MixedLMRegressor(reml=False).fit(A[:, [2]], y, groups=g)
    m2 = MixedLMRegressor(reml=False).fit(A[:, [0, 1]], y, groups=g)
    with pytest.raises(ValueError, match="not nested"):
        likelihood_ratio_test(m1, m2)
    m3 = MixedLMRegressor(reml=False).fit(A[:, [0]], y, groups=g)
    assert likelihood_ratio_test(m3, m2).loc["large", "Df"] == 1
