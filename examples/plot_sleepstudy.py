"""
Sleepstudy: a random intercept and slope per subject
====================================================

lme4's classic ``Reaction ~ Days + (Days | Subject)`` fitted by REML on the bundled data,
then predictions for a seen and an unseen subject. The model is fitted from matrices
first (``X``, ``y`` and the group labels), then from the formula itself, whose fixed
effects are tested as R's lmerTest tests them. Last, lme4's profile-likelihood intervals
and a parametric bootstrap.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sklmm import MixedLMRegressor, lmer, plot_caterpillar, plot_residuals
from sklmm.datasets import load_sleepstudy

df = load_sleepstudy()
est = MixedLMRegressor(random_slopes=["Days"]).fit(
    df[["Days"]], df["Reaction"], groups=df["Subject"]
)
print(f"REML log-likelihood {est.log_likelihood_:.4f} (lme4: -871.8141)")
print(f"fixed effects: intercept {est.intercept_:.4f}, Days {est.coef_[0]:.4f}")
print("random-effects covariance (Subject):")
print(est.random_effects_cov_["Subject"].round(3))
print(f"residual variance {est.residual_variance_:.3f}")

new = pd.DataFrame({"Days": [0, 5, 9] * 2})
subjects = ["308"] * 3 + ["new subject"] * 3
print(
    pd.DataFrame(
        {
            "Subject": subjects,
            "Days": new["Days"],
            "prediction": est.predict(new, groups=subjects).round(2),
        }
    )
)

# %%
# The same model from a formula
# -----------------------------
# ``formula=`` takes lme4's formula, and ``fit``, ``predict``, ``score`` and ``summary``
# then read every variable, the grouping factor ``Subject`` included, from the columns of
# one DataFrame. ``sklmm.lmer(formula, data)`` is lme4's call and returns the same fitted
# estimator. The numbers are those of the matrix form:

by_formula = MixedLMRegressor(formula="Reaction ~ Days + (Days | Subject)").fit(df)
fit = lmer("Reaction ~ Days + (Days | Subject)", df)
print(by_formula.fixed_effects_)  # lme4's fixef(fit): a Series by name
new_data = new.assign(Subject=subjects)  # the new rows, with their Subject column
same = (
    np.isclose(by_formula.log_likelihood_, est.log_likelihood_, rtol=1e-10)
    and np.isclose(fit.log_likelihood_, est.log_likelihood_, rtol=1e-10)
    and np.allclose(by_formula.fixed_effects_, [est.intercept_, *est.coef_])
    and np.allclose(by_formula.random_effects_cov_["Subject"], est.random_effects_cov_["Subject"])
    and np.allclose(by_formula.predict(new_data), est.predict(new, groups=subjects))
)
print(f"same fit and predictions from the formula and the matrices: {same}")

# %%
# The whole summary, as lme4's ``summary(fit)`` prints it, with lme4's ``Formula:`` line
# (given the training data, the scaled residuals too; from the matrix form,
# ``est.summary(df[["Days"]], df["Reaction"], df["Subject"])`` prints the same without
# that line). The fixed-effects table is R's lmerTest's: t tests with Satterthwaite's
# degrees of freedom (lmerTest: ``Days`` 10.467, 1.546, df 17.000, t 6.771,
# ``Pr(>|t|)`` 3.26e-06).

print(by_formula.summary(df))

# %%
# Tests of the fixed effects
# --------------------------
# The same table as a DataFrame. The 17 degrees of freedom say that the uncertainty of
# the slope comes from 18 subjects, not from 180 rows; ``ddf="normal"`` refers the same
# statistics to the normal distribution (Wald z), whose intervals are narrower, and too
# narrow with few groups.


def show(table, index=True):
    """Four decimals, p-values in three significant digits."""
    p_value = {"p_value": lambda v: f"{v:.3g}"}
    print(table.to_string(float_format=lambda v: f"{v:.4f}", formatters=p_value, index=index))


show(by_formula.summary().fixed_effects)
show(by_formula.summary(ddf="normal").fixed_effects)

# %%
# ``anova()`` gives an F test per term of the formula (lmerTest's ``anova(fit)``; for
# the one-column term ``Days``, ``F = t^2``), and ``test_contrast`` tests any linear
# combination of the fixed effects named by their columns (lmerTest's ``contest``): here
# the mean reaction time on day 9, ``(Intercept) + 9 Days``.

show(by_formula.anova())
show(by_formula.test_contrast({"(Intercept)": 1, "Days": 9}, joint=False), index=False)

# %%
# Each subject's deviation from the average line (its BLUPs, lme4's ``ranef``) with 95%
# intervals from their conditional variances (lme4's ``dotplot(ranef(fit, condVar = TRUE))``).
# The plots need matplotlib (``pip install sklmm[plot]``).

fig, axes = plt.subplots(1, 2, figsize=(10, 5))
plot_caterpillar(est, "(Intercept)", ax=axes[0])
plot_caterpillar(est, "Days", ax=axes[1])
for ax in axes:
    ax.set_title(ax.get_title(), fontsize=10)
fig.tight_layout()

# %%
# The residuals against the conditional fitted values ``X beta + Z b``: no pattern, a few
# large residuals (the scaled residuals of the summary reach -4 and 5).

ax = plot_residuals(est, df[["Days"]], df["Reaction"], groups=df["Subject"])
ax.figure.set_size_inches(6, 4)
ax.figure.tight_layout()

# %%
# Confidence intervals: profile and bootstrap
# -------------------------------------------
# ``conf_int("profile")`` is lme4's default ``confint(fit)``: profile-likelihood
# intervals of every parameter, on lme4's names (``confint(fit, oldNames = FALSE)``),
# fixed effects first. lme4 gives ``Days`` 7.3587 to 13.5759 and the standard deviation
# of the slopes 3.8012 to 8.7534. The intervals of the standard deviations are
# asymmetric about the estimates (24.74 and 5.92), and the correlation's reaches from
# -0.48 to 0.69: 18 subjects say little about it. ``conf_int()`` alone gives Wald
# intervals.

intervals = fit.conf_int("profile")
print(intervals.round(4))

# %%
# ``bootstrap`` is lme4's parametric ``bootMer``. Each replicate simulates a new
# response from the fitted model (new subjects' effects, new residuals) and refits it.
# The cross-products of the simulated response are drawn from the fit's statistics, so
# a replicate is a refit without a pass over the data. The histogram shows 300
# replicates of the ``Days`` slope, with their 2.5% and 97.5% quantiles (the percentile
# interval, what ``conf_int("bootstrap", n_boot=300, random_state=0)`` returns) and the
# profile interval. 300 replicates keep this example fast; the quantiles of so few move
# visibly with the seed, so use 1,000 or more for limits to report.

boot = fit.bootstrap(300, random_state=0)
slope = boot["Days"]
low, high = slope.quantile([0.025, 0.975])
se = np.sqrt(fit.fixed_effects_cov_[1, 1])
print(f"refits converged: {boot['converged'].mean():.0%}")
print(f"sd of the replicates {slope.std():.3f}, standard error {se:.3f}")
print(f"percentile interval {low:.3f} to {high:.3f}")

profile = intervals.loc["Days"]
fig, ax = plt.subplots(figsize=(6, 4))
ax.hist(slope, bins=30, color="0.75", edgecolor="white")
ax.axvline(fit.fixed_effects_["Days"], color="black", label="estimate")
for k, x in enumerate((low, high)):
    label = "bootstrap percentile" if k == 0 else None
    ax.axvline(x, color="tab:blue", linestyle="--", label=label)
for k, x in enumerate(profile):
    ax.axvline(x, color="tab:red", linestyle=":", label="profile" if k == 0 else None)
ax.set_xlabel("Days slope (ms/day)")
ax.set_ylabel("replicates")
ax.set_title("300 parametric-bootstrap replicates of the Days slope", fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
