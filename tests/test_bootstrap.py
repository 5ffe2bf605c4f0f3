"""The parametric bootstrap from statistics (lme4's bootMer)."""

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedLMRegressor, lmer
from sklmm._bootstrap import StatsSimulator
from sklmm.datasets import load_penicillin, load_sleepstudy

SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def fit():
    return lmer(SLEEP, load_sleepstudy())


def test_simulated_statistics_have_the_distribution_of_simulated_data(fit):
    # The statistics drawn without the rows have the moments of those of responses
    # simulated row by row from the same model (Z'y, X'y, y'y).
    df = load_sleepstudy()
    f = fit._fitted
    m, t = f.model, f.model.terms[0]
    lam, beta, sigma = t.structure.lam(f.opt.theta), f.opt.evaluation.beta, np.sqrt(f.sigma2)
    sim = StatsSimulator(m.stats.term(0), beta, lam, f.sigma2)
    X = df[["Days"]].to_numpy(float)
    n = len(X)
    Xc = np.column_stack([np.ones(n), X - m.x_mean])
    Zc = (t.z(X) - np.array([0.0, m.x_mean[0]])) / m.scales[0]
    level = {str(k): i for i, k in enumerate(t.index())}
    codes = df["Subject"].astype(str).map(level).to_numpy()
    rng = np.random.default_rng(0)
    draws, rows = [], []
    for _ in range(3000):
        s = sim.draw(rng)
        draws.append(np.r_[s.ZtXy[0, :, 2], s.XytXy[:2, 2], s.XytXy[2, 2]])
        b = sigma * rng.standard_normal((t.n_levels, 2)) @ lam.T
        y = Xc @ beta + np.einsum("ni,ni->n", Zc, b[codes]) + sigma * rng.standard_normal(n)
        rows.append(np.r_[Zc[codes == 0].T @ y[codes == 0], Xc.T @ y, y @ y])
    a, b = np.array(draws), np.array(rows)
    z = (a.mean(0) - b.mean(0)) / np.sqrt((a.var(0) + b.var(0)) / len(a))
    assert np.all(np.abs(z) < 4), z
    np.testing.assert_allclose(a.std(0), b.std(0), rtol=0.08)
    np.testing.assert_allclose(np.corrcoef(a.T), np.corrcoef(b.T), atol=0.08)


def test_replicates_are_reproducible_and_parallel_safe(fit):
    a = fit.bootstrap(40, random_state=3)
    b = fit.bootstrap(40, random_state=3, n_jobs=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(fit.bootstrap(40, random_state=4))
    assert list(a.columns) == [
        "(Intercept)",
        "Days",
        "sd_(Intercept)|Subject",  # lme4's order: per column, its sd then its correlations
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
        "sigma",
        "converged",
        "n_iter",
    ]


def test_progress_bar_does_not_change_the_replicates(fit, capsys):
    pytest.importorskip("tqdm")
    a = fit.bootstrap(30, random_state=5)
    b = fit.bootstrap(30, random_state=5, progress=True)
    pd.testing.assert_frame_equal(a, b)
    assert "30/30" in capsys.readouterr().err


def test_bootstrap_spread_matches_the_standard_errors(fit):
    boot = fit.bootstrap(400, random_state=0)
    assert boot["converged"].all()
    se = np.sqrt(np.diag(fit.fixed_effects_cov_))
    np.testing.assert_allclose(boot[["(Intercept)", "Days"]].std(), se, rtol=0.12)
    # centred near the estimates (REML: sigma nearly unbiased)
    assert abs(boot["Days"].mean() - fit.coef_[0]) < 3 * se[1] / np.sqrt(400)
    assert boot["sigma"].mean() == pytest.approx(np.sqrt(fit.residual_variance_), rel=0.03)


def test_model_without_random_effects_profile_and_bootstrap():
    rng = np.random.default_rng(1)
    x = rng.normal(size=60)
    y = 2 - x + rng.normal(size=60)
    with pytest.warns(UserWarning):
        est = MixedLMRegressor().fit(x[:, None], y)
    boot = est.bootstrap(300, random_state=0)
    assert list(boot.columns) == ["(Intercept)", "x0", "sigma", "converged", "n_iter"]
    se = np.sqrt(np.diag(est.fixed_effects_cov_))
    np.testing.assert_allclose(boot[["(Intercept)", "x0"]].std(), se, rtol=0.15)
    # without random effects the profile interval of a coefficient is the ML-based
    # chi-square interval, close to the Wald one
    profile = est.conf_int("profile")
    assert list(profile.index) == ["(Intercept)", "x0", "sigma"]
    wald = est.conf_int()
    np.testing.assert_allclose(profile.iloc[:2], wald.iloc[:2], rtol=0.05)


def test_conf_int(fit):
    wald = fit.conf_int()
    table = fit.summary(ddf="normal").fixed_effects
    np.testing.assert_allclose(wald.iloc[:2, 0], table["ci_0.025"])
    np.testing.assert_allclose(wald.iloc[:2, 1], table["ci_0.975"])
    assert list(wald.columns) == ["2.5 %", "97.5 %"]
    # the variance rows are summary's Wald intervals, under lme4's names and order
    vc = fit.summary().random_effects
    np.testing.assert_allclose(
        wald.loc["cor_Days.(Intercept)|Subject"], vc.iloc[2, -2:].astype(float)
    )
    np.testing.assert_allclose(wald.loc["sd_Days|Subject"], vc.iloc[1, -2:].astype(float))
    assert (
        wald.index[-1] == "sigma"
        and wald.loc["sigma", "2.5 %"] < 25.59 < wald.loc["sigma", "97.5 %"]
    )
    pct = fit.conf_int("bootstrap", n_boot=100, random_state=0)
    basic = fit.conf_int("bootstrap", n_boot=100, random_state=0, boot_type="basic")
    estimate = fit.fixed_effects_["Days"]
    assert basic.loc["Days", "2.5 %"] == pytest.approx(2 * estimate - pct.loc["Days", "97.5 %"])
    assert fit.conf_int(alpha=0.1).columns.tolist() == ["5 %", "95 %"]
    with pytest.raises(ValueError, match="expected 'wald', 'bootstrap' or 'profile'"):
        fit.conf_int("likelihood")
    with pytest.raises(ValueError, match="boot_type"):
        fit.conf_int("bootstrap", n_boot=5, boot_type="bca")


def test_func_and_errors(fit):
    out = fit.bootstrap(20, random_state=0, func=lambda p: p["Days"] / p["sigma"])
    assert out.shape == (20, 1) and list(out.columns) == ["value"]
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        fit.bootstrap(0)
    df = load_penicillin()
    crossed = lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", df)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sklmm._bootstrap.MAX_DENSE_EFFECTS", 10)
        with pytest.raises(ValueError, match="dense 30 x 30 matrix"):
            crossed.bootstrap(10)


def test_crossed_model_replicates_match_refits_of_simulated_data():
    # Several terms: the statistics are drawn from the dense [Z X]'[Z X]. The replicates
    # have the distribution of fits to responses simulated row by row from the model.
    df = load_penicillin()
    fit = lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", df)
    boot = fit.bootstrap(300, random_state=0)
    assert boot["converged"].all()
    rng = np.random.default_rng(1)
    sd_plate = np.sqrt(fit.variance_components_["plate"])
    sd_sample = np.sqrt(fit.variance_components_["sample"])
    plate = df["plate"].astype("category").cat.codes.to_numpy()
    sample = df["sample"].astype("category").cat.codes.to_numpy()
    refits = []
    for _ in range(300):
        y = (
            fit.intercept_
            + sd_plate * rng.standard_normal(plate.max() + 1)[plate]
            + sd_sample * rng.standard_normal(sample.max() + 1)[sample]
            + np.sqrt(fit.residual_variance_) * rng.standard_normal(len(df))
        )
        est = lmer("y ~ 1 + (1 | plate) + (1 | sample)", df.assign(y=y))
        sds = np.sqrt(est.variance_components_[["plate", "sample"]].to_numpy())
        refits.append([est.intercept_, *sds, np.sqrt(est.residual_variance_)])
    refits = np.array(refits)
    ours = boot[["(Intercept)", "sd_(Intercept)|plate", "sd_(Intercept)|sample", "sigma"]]
    se = np.sqrt((ours.var().to_numpy() + refits.var(0)) / 300)
    assert np.all(np.abs(ours.mean().to_numpy() - refits.mean(0)) < 4 * se)
    np.testing.assert_allclose(ours.std().to_numpy(), refits.std(0), rtol=0.2)


def test_term_without_intercept():
    sleep = load_sleepstudy()
    fit = lmer("Reaction ~ Days + (0 + Days | Subject)", sleep)
    boot = fit.bootstrap(50, random_state=0)
    assert list(boot.columns)[:3] == ["(Intercept)", "Days", "sd_Days|Subject"]
    assert boot["converged"].all()


def test_bad_inputs_of_the_intervals(fit):
    for alpha in (0, 1, 1.5, -0.1, float("nan"), True, "0.05"):
        with pytest.raises(ValueError, match="alpha must be a number strictly between"):
            fit.conf_int(alpha=alpha)
        with pytest.raises(ValueError, match="alpha must be a number strictly between"):
            fit.summary(alpha=alpha)
    with pytest.raises(ValueError, match="func must be a callable"):
        fit.bootstrap(5, func="mean")
    with pytest.raises(ValueError, match="n_jobs must be None or a non-zero integer"):
        fit.bootstrap(5, n_jobs=0)
    varying = iter([pd.Series({"a": 1.0}), pd.Series({"a": 1.0, "b": 2.0})] * 5)
    with pytest.raises(ValueError, match="func must return a number, or a pandas Series"):
        fit.bootstrap(4, random_state=0, func=lambda p: next(varying))
    # a Generator seeds the replicates as an int does: the same generator, the same table
    a = fit.bootstrap(5, random_state=np.random.default_rng(3))
    b = fit.bootstrap(5, random_state=np.random.default_rng(3))
    pd.testing.assert_frame_equal(a, b)
    out = fit.bootstrap(6, random_state=0, func=lambda p: p[["Days", "sigma"]])
    assert list(out.columns) == ["Days", "sigma"] and out.shape == (6, 2)
