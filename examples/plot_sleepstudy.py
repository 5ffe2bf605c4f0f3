"""
Sleepstudy: a random intercept and slope per subject
====================================================

lme4's classic ``Reaction ~ Days + (Days | Subject)`` fitted by REML on the bundled data,
then predictions for a seen and an unseen subject.
"""

import matplotlib.pyplot as plt
import pandas as pd

from sklmm import MixedLMRegressor, plot_caterpillar, plot_residuals
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
# The whole summary, as lme4's ``summary(fit)`` prints it (with the training data, the
# scaled residuals too):

print(est.summary(df[["Days"]], df["Reaction"], df["Subject"]))

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
