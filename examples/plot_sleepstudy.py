"""
Sleepstudy: a random intercept and slope per subject
====================================================

lme4's classic ``Reaction ~ Days + (Days | Subject)`` fitted by REML on the bundled data,
then predictions for a seen and an unseen subject.
"""

import pandas as pd

from sklmm import MixedLMRegressor
from sklmm.datasets import load_sleepstudy

df = load_sleepstudy()
est = MixedLMRegressor(random_slopes=["Days"]).fit(
    df[["Days"]], df["Reaction"], groups=df["Subject"]
)
print(f"REML log-likelihood {est.log_likelihood_:.4f} (lme4: -871.8141)")
print(f"fixed effects: intercept {est.intercept_:.4f}, Days {est.coef_[0]:.4f}")
print("random-effects covariance (Subject):")
print(
    pd.DataFrame(
        est.random_effects_cov_, index=["(Intercept)", "Days"], columns=["(Intercept)", "Days"]
    ).round(3)
)
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
