"""
Predicting for new groups, with intervals
=========================================

A mixed model predicts differently for a group it has seen and for one it has not. For a
seen group, ``predict(X, groups=...)`` adds the group's own random effects (its BLUPs) to
the population line ``X beta``; for a new group, whose random effects are unknown, it
returns ``X beta`` (lme4's ``allow.new.levels = TRUE``). ``return_std=True`` gives the
standard deviation of each prediction, and it is much larger for a new group: it carries
the spread of groups, ``z' Sigma z``.

We hold three subjects of the sleepstudy data out of the fit, then predict every subject's
reaction times with 95% prediction intervals (``include_residual=True``: intervals for new
observations, not for their mean).
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sklmm import MixedLMRegressor
from sklmm.datasets import load_sleepstudy

df = load_sleepstudy()
held_out = ["308", "335", "372"]
train = df[~df["Subject"].isin(held_out)]
test = df[df["Subject"].isin(held_out)]

est = MixedLMRegressor(random_slopes=["Days"])
est.fit(train[["Days"]], train["Reaction"], groups=train["Subject"])
seen = set(est.random_effects_["Subject"].index)  # the subjects of the fit
print(f"fitted on {len(seen)} subjects; held out: {held_out}")

# %%
# Seen and unseen subjects in one call
# ------------------------------------
# Subject 309 was in the fit, the three others were not. The rows of a new subject all get
# the same population line, with a wider interval.

days = pd.DataFrame({"Days": np.arange(10)})
curves = {}
for subject in ["309", *held_out]:
    pred, std = est.predict(
        days, groups=[subject] * len(days), return_std=True, include_residual=True
    )
    curves[subject] = (pred, std)

table = pd.DataFrame(
    {
        subject: {
            "seen in fit": subject in seen,
            "prediction at day 9": pred[-1],
            "std at day 9": std[-1],
        }
        for subject, (pred, std) in curves.items()
    }
).T
print(table.to_string(float_format=lambda v: f"{v:.1f}"))

# %%
# The picture: a seen subject follows its own line; new subjects get the population line
# and an interval wide enough for the spread between subjects.

fig, axes = plt.subplots(1, 4, figsize=(11, 3.2), sharey=True)
for ax, (subject, (pred, std)) in zip(axes, curves.items(), strict=True):
    rows = df["Subject"] == subject
    ax.fill_between(days["Days"], pred - 1.96 * std, pred + 1.96 * std, alpha=0.25)
    ax.plot(days["Days"], pred, lw=2)
    ax.plot(df.loc[rows, "Days"], df.loc[rows, "Reaction"], "o", ms=4, color="k")
    kind = "seen" if subject in seen else "new"
    ax.set_title(f"subject {subject} ({kind})")
    ax.set_xlabel("Days")
axes[0].set_ylabel("Reaction (ms)")
fig.tight_layout()

# %%
# Do the intervals hold?
# ----------------------
# On the held-out subjects, the share of observations inside their 95% interval. The
# intervals treat the variance parameters as known, so with 15 subjects in the fit a
# coverage a little below 95% is expected.

pred, std = est.predict(
    test[["Days"]], groups=test["Subject"], return_std=True, include_residual=True
)
inside = np.abs(test["Reaction"] - pred) <= 1.96 * std
print(f"held-out coverage of the 95% intervals: {inside.mean():.0%} of {len(test)} rows")

# %%
# The same call without ``include_residual`` gives the standard deviation of the *mean*
# response: for a new subject it is still dominated by the spread of subjects.

_, std_mean = est.predict(test[["Days"]], groups=test["Subject"], return_std=True)
print(f"std of the mean at day 0, new subject: {std_mean[0]:.1f} ms")
sd_intercept = np.sqrt(est.random_effects_cov_["Subject"].loc["(Intercept)", "(Intercept)"])
print(f"between-subject sd of the intercept:   {sd_intercept:.1f} ms")
