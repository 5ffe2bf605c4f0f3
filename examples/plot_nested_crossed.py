"""
Nested and crossed random effects
=================================

Several random-effects terms in one model, on two classic designs of Davies (1972): casks
*nested* in batches (lme4's ``Pastes``) and plates *crossed* with samples
(``Penicillin``). Each model can be given in three ways that fit the same thing:

* as lme4's formula, ``MixedLMRegressor(formula=...).fit(df)`` or ``lmer(formula, df)``,
  which reads the grouping factors from the columns of the data;
* from matrices, as variance components, the statsmodels design: ``fit(X, y,
  groups=..., variance_components=...)``;
* from matrices, as an lme4-style specification of the random part, the
  ``random_effects`` parameter, with one column of ``groups`` per grouping factor it
  names.

Both models have no fixed covariate, only an intercept: in the matrix forms, ``X`` is a
DataFrame with no columns, ``df[[]]``.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sklmm import MixedLMRegressor, lmer, plot_caterpillar
from sklmm.datasets import load_pastes, load_penicillin

# %%
# Nested: casks within batches
# ----------------------------
# Ten batches of paste, three casks from each, two strength measurements per cask. The
# casks are labelled ``a``, ``b``, ``c`` *within* each batch: cask ``a`` of batch ``A``
# has nothing to do with cask ``a`` of batch ``B``. lme4 writes the model
# ``strength ~ 1 + (1 | batch/cask)``, short for ``(1 | batch) + (1 | batch:cask)``.
# A variance component is nested in ``groups`` by construction: each (batch, cask) pair
# gets its own random intercept.

pastes = load_pastes()
X, y = pastes[[]], pastes["strength"]

by_components = MixedLMRegressor().fit(
    X, y, groups=pastes["batch"], variance_components=pastes[["cask"]]
)
by_formula = MixedLMRegressor(random_effects="(1 | batch/cask)").fit(
    X, y, groups=pastes[["batch", "cask"]]
)
print("terms:", by_components.terms_, by_formula.terms_)
print(
    pd.DataFrame(
        {
            "variance_components=": by_components.variance_components_,
            "random_effects=": by_formula.variance_components_,
        }
    )
)
same = np.allclose(
    by_components.variance_components_, by_formula.variance_components_
) and np.isclose(by_components.log_likelihood_, by_formula.log_likelihood_)
print(f"same fit: {same}")

# %%
# Both forms name the terms by lme4's rule, the grouping factors joined by ``:``: the
# batches are ``batch`` and the casks within them ``batch:cask``, so every fitted
# attribute (``variance_components_``, ``random_effects_``, ``random_effects_cov_``, ...)
# has the same keys whichever form fitted the model. Next to lme4's
# ``lmer(strength ~ 1 + (1 | batch/cask), Pastes)`` (REML):

lme4 = {"batch": 1.657, "batch:cask": 8.434, "Residual": 0.678, "(Intercept)": 60.05}
ours = {
    **by_formula.variance_components_,
    "Residual": by_formula.residual_variance_,
    "(Intercept)": by_formula.intercept_,
}
print(f"{'':12}{'sklmm':>8}{'lme4':>8}")
for name, value in lme4.items():
    digits = 2 if name == "(Intercept)" else 3
    print(f"{name:12}{ours[name]:8.{digits}f}{value:8.{digits}f}")

# %%
# The BLUPs of the nested term are indexed by (batch, cask) pairs:

print(by_formula.random_effects_["batch:cask"].head(4).round(3))

# %%
# Prediction adds, term by term, the BLUP of each level seen in ``fit`` and nothing for a
# new one (lme4's ``allow.new.levels = TRUE``). A new cask ``d`` in batch ``A`` keeps the
# effect of batch ``A``; cask ``a`` of a new batch ``K`` is a new (batch, cask) pair too,
# and gets the population mean. Labels are matched to the fitted terms by column name, so
# pass them with the names used in ``fit``.

new = pd.DataFrame({"batch": ["A", "A", "K"], "cask": ["a", "d", "a"]})
pred_components = by_components.predict(
    new[[]], groups=new["batch"], variance_components=new[["cask"]]
)
pred_formula = by_formula.predict(new[[]], groups=new[["batch", "cask"]])
blups = by_formula.random_effects_
table = new.assign(
    batch_effect=[blups["batch"]["(Intercept)"].get(b, 0.0) for b in new["batch"]],
    cask_effect=[
        blups["batch:cask"]["(Intercept)"].get((b, c), 0.0)
        for b, c in zip(new["batch"], new["cask"], strict=True)
    ],
    prediction=pred_formula,
)
print(table.round(3).to_string(index=False))
print(f"same predictions from both forms: {np.allclose(pred_components, pred_formula)}")

# %%
# The same model from a formula
# -----------------------------
# lme4's formula fits the same model from the data frame itself: the grouping factors
# are its columns ``batch`` and ``cask``, and ``predict`` reads them from the new data.

from_formula = lmer("strength ~ 1 + (1 | batch/cask)", pastes)
print("terms:", from_formula.terms_)
same = (
    np.isclose(from_formula.log_likelihood_, by_formula.log_likelihood_, rtol=1e-10)
    and np.allclose(from_formula.variance_components_, by_formula.variance_components_)
    and np.allclose(from_formula.predict(new), pred_formula)
)
print(f"same fit and predictions as the matrix forms: {same}")

# %%
# Crossed: plates and samples
# ---------------------------
# Six samples of penicillin, each tested on every one of 24 plates: every plate meets
# every sample, so neither factor is nested in the other. lme4 writes
# ``diameter ~ 1 + (1 | plate) + (1 | sample)``. As variance components, the factors
# are crossed when there are no ``groups``: a component's labels then span all rows.

penicillin = load_penicillin()
X, y = penicillin[[]], penicillin["diameter"]

crossed = MixedLMRegressor().fit(X, y, variance_components=penicillin[["plate", "sample"]])
crossed_formula = MixedLMRegressor(random_effects="(1 | plate) + (1 | sample)").fit(
    X, y, groups=penicillin[["plate", "sample"]]
)
print("terms:", crossed.terms_)
same = np.allclose(
    crossed.variance_components_.to_numpy(), crossed_formula.variance_components_.to_numpy()
) and np.isclose(crossed.log_likelihood_, crossed_formula.log_likelihood_)
print(f"same fit from both forms: {same}")

lme4 = {"plate": 0.7169, "sample": 3.7311, "Residual": 0.3024, "(Intercept)": 22.97}
ours = {
    **crossed.variance_components_,
    "Residual": crossed.residual_variance_,
    "(Intercept)": crossed.intercept_,
}
print(f"{'':12}{'sklmm':>8}{'lme4':>8}")
for name, value in lme4.items():
    digits = 2 if name == "(Intercept)" else 4
    print(f"{name:12}{ours[name]:8.{digits}f}{value:8.{digits}f}")
print(f"REML criterion {-2 * crossed.log_likelihood_:.4f} (lme4: 330.8606)")

# %%
# From lme4's formula, the same fit again:

crossed_lmer = lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin)
same = np.isclose(crossed_lmer.log_likelihood_, crossed.log_likelihood_, rtol=1e-10) and (
    np.allclose(crossed_lmer.variance_components_, crossed.variance_components_)
)
print(f"same fit from the formula: {same}")

# %%
# The sample variance differs from lme4's in the fourth digit, while the REML criterion
# agrees to every digit lme4 prints: with six samples, the criterion is very flat along
# the sample variance, and two optimizers stop at slightly different points of it.
#
# The BLUPs of both crossed factors with 95% intervals from their conditional variances
# (lme4's ``dotplot(ranef(fit, condVar = TRUE))``; ``plot_caterpillar`` draws one term
# per call, chosen by ``factor``): the samples differ far more than the plates, as their
# variances say.

fig, axes = plt.subplots(1, 2, figsize=(9, 5.5), layout="constrained")
for ax, term in zip(axes, ["plate", "sample"], strict=True):
    plot_caterpillar(crossed, factor=term, ax=ax)
    ax.set_title(f"{term} ({len(crossed.random_effects_[term])} levels)")

# %%
# From lme4 and statsmodels to sklmm
# ----------------------------------
# With a formula, or from matrices with ``X`` the fixed covariates (``df[[]]`` for an
# intercept-only model):
#
# * lme4 ``y ~ x + (1 | g/c)``, statsmodels ``mixedlm("y ~ x", df, groups="g",
#   re_formula="1", vc_formula={"c": "0 + C(c)"})``: ``lmer("y ~ x + (1 | g/c)", df)``;
#   from matrices, ``MixedLMRegressor(random_effects="(1 | g/c)")`` with
#   ``fit(X, y, groups=df[["g", "c"]])``, or ``MixedLMRegressor()`` with
#   ``fit(X, y, groups=df["g"], variance_components=df[["c"]])``.
# * lme4 ``y ~ x + (1 | a) + (1 | b)``, statsmodels with one group holding every row and
#   ``vc_formula={"a": "0 + C(a)", "b": "0 + C(b)"}``:
#   ``lmer("y ~ x + (1 | a) + (1 | b)", df)``; from matrices,
#   ``MixedLMRegressor(random_effects="(1 | a) + (1 | b)")`` with
#   ``fit(X, y, groups=df[["a", "b"]])``, or ``MixedLMRegressor()`` with
#   ``fit(X, y, variance_components=df[["a", "b"]])``.
# * lme4 ``ranef(fit)``, ``VarCorr(fit)``: ``random_effects_`` and
#   ``random_effects_cov_``, dictionaries keyed by term (``variance_components_`` holds the
#   variances of the intercept-only terms); ``ranef(fit, condVar = TRUE)``:
#   ``random_effects_condvar_``.
# * lme4 ``predict(fit, newdata, allow.new.levels = TRUE)``: ``predict(newdata)`` for a
#   formula model; from matrices, ``predict(X, groups=..., variance_components=...)``,
#   with the label columns named as in ``fit``.
