"""
Aggregated data: cell means with their counts as precision weights
==================================================================

Data often arrive aggregated: one row per (subject, condition) cell holding the mean of
the cell's ``k`` observations and ``k`` itself. The mean of ``k`` observations has residual
variance ``sigma2 / k``, which is what lme4's ``weights = k`` says, and what
``fit(..., sample_weight=k)`` says in sklmm: **precision weights**.

We simulate raw reaction times of 40 subjects under 4 conditions (2 to 30 trials per
cell), fit the raw rows, then the cell means weighted by their counts, and the same means
without weights.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sklmm import MixedLMRegressor

rng = np.random.default_rng(7)
n_subjects, conditions = 40, np.array([0.0, 1.0, 2.0, 3.0])
subject_effect = rng.normal(0.0, 20.0, n_subjects)
rows = []
for s in range(n_subjects):
    for c in conditions:
        k = rng.integers(2, 31)  # trials in this cell
        rt = 300.0 + 15.0 * c + subject_effect[s] + rng.normal(0.0, 40.0, k)
        rows += [{"subject": f"s{s:02d}", "condition": c, "rt": v} for v in rt]
raw = pd.DataFrame(rows)
cells = (
    raw.groupby(["subject", "condition"], as_index=False)
    .agg(rt=("rt", "mean"), trials=("rt", "size"))
    .sort_values(["subject", "condition"])
)
print(f"{len(raw):,} raw rows, {len(cells)} cells of 2..30 trials")

# %%
# Three fits
# ----------
# The raw fit is the reference. The weighted fit of the cell means sees each mean with its
# precision; the unweighted one treats a mean of 2 trials and a mean of 30 alike.

fits = {
    "raw rows": MixedLMRegressor().fit(raw[["condition"]], raw["rt"], groups=raw["subject"]),
    "cell means, sample_weight=trials": MixedLMRegressor().fit(
        cells[["condition"]], cells["rt"], groups=cells["subject"], sample_weight=cells["trials"]
    ),
}
fits["cell means, unweighted"] = MixedLMRegressor().fit(
    cells[["condition"]], cells["rt"], groups=cells["subject"]
)

table = pd.DataFrame(
    {
        name: {
            "slope of condition": est.coef_[0],
            "its std. error": np.sqrt(est.fixed_effects_cov_[1, 1]),
            "subject SD": np.sqrt(est.random_effects_cov_["subject"].iloc[0, 0]),
            "residual SD of one trial": np.sqrt(est.residual_variance_),
        }
        for name, est in fits.items()
    }
).T
print(table.to_string(float_format=lambda v: f"{v:.2f}"))

# %%
# The weighted fit of the means agrees with the raw fit: the same slope, standard error
# and subject SD up to what the means lose (the spread within cells), and
# ``residual_variance_`` is the variance of **one trial**, ``sigma2``: a mean of ``k``
# trials has ``sigma2 / k``. Without weights, ``residual_variance_`` is a blend of the
# cells' different variances and the standard error of the slope is off.
#
# Precision weights are not frequency weights: ``sample_weight=trials`` on the means is not
# the same as repeating each mean ``trials`` times, which would claim far more residual
# information than the data hold (the documentation's weights page says exactly how the
# two relate).

sd = table["its std. error"]
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.errorbar(table["slope of condition"], np.arange(len(table)), xerr=1.96 * sd, fmt="o", capsize=4)
ax.axvline(15.0, color="grey", linestyle=":", label="true slope")
ax.set_yticks(np.arange(len(table)), table.index)
ax.set_xlabel("slope of condition, with 95% Wald interval")
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()
