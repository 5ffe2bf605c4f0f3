"""
A pipeline with preprocessing and metadata routing
==================================================

``MixedLMRegressor`` takes numeric columns, so categorical covariates are encoded and
numeric ones scaled by scikit-learn transformers in a ``Pipeline``. The group labels are
not a column of ``X``: they travel next to it, as metadata. With scikit-learn's metadata
routing the estimator *requests* ``groups`` for ``fit`` and ``predict``, and the pipeline
and ``cross_validate`` hand them over.

The data are nlme's Orthodont growth curves: the ``distance`` between two points of the
skull of 27 children, measured at ages 8, 10, 12 and 14. We fit lme4's
``distance ~ age + Sex + (1 | Subject)``, with ``age`` centred and scaled and ``Sex``
one-hot encoded.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklmm import MixedLMRegressor, make_group_scorer
from sklmm.datasets import load_orthodont

df = load_orthodont()
X, y, subjects = df[["age", "Sex"]], df["distance"], df["Subject"]

# %%
# The pipeline
# ------------
# ``set_output(transform="pandas")`` keeps column names, so the summary shows them and a
# random slope could be named (``random_slopes=["age"]``);
# ``verbose_feature_names_out=False`` keeps them short (``age``, ``Sex_Male``).

sklearn.set_config(enable_metadata_routing=True)

preprocess = ColumnTransformer(
    [
        ("scale", StandardScaler(), ["age"]),
        ("encode", OneHotEncoder(drop="first", sparse_output=False), ["Sex"]),
    ],
    verbose_feature_names_out=False,
).set_output(transform="pandas")
mixed = (
    MixedLMRegressor()
    .set_fit_request(groups=True)
    .set_predict_request(groups=True)
    .set_score_request(groups=True)
)
pipe = make_pipeline(preprocess, mixed)
pipe.fit(X, y, groups=subjects)  # groups are routed to MixedLMRegressor.fit

print(pipe[-1].summary())

# %%
# On the scale of the data
# ------------------------
# The coefficient of the scaled ``age`` is per standard deviation of age; dividing by the
# scaler's standard deviation gives millimetres per year.

scaler = pipe[0].named_transformers_["scale"]
per_year = pipe[-1].coef_[0] / scaler.scale_[0]
print(f"growth: {per_year:.3f} mm/year on average (lme4: 0.660)")
print(f"boys vs girls: {pipe[-1].coef_[1]:+.3f} mm")

# %%
# Cross-validation: new children or new visits?
# ---------------------------------------------
# The ``groups`` passed to ``cross_validate`` go to the splitter, to ``fit`` and (requested
# above) to the scorer. :func:`sklmm.make_group_scorer` scores ``predict(X, groups=...)``
# under a named metric; a string such as ``"r2"`` would call ``predict(X)`` without groups.
#
# - ``GroupKFold`` holds whole children out: every validation child is new, so its
#   predictions are population predictions. This estimates the error for a new child.
# - ``KFold`` holds visits out: the validation children were seen in ``fit``, so their
#   predictions include their own random intercepts. This estimates the error for a new
#   visit of a known child, and knowing the child helps a lot.

scoring = {"r2": make_group_scorer(r2_score)}
for name, cv in [
    ("GroupKFold (new children)", GroupKFold(n_splits=3)),
    ("KFold (new visits)", KFold(n_splits=4, shuffle=True, random_state=0)),
]:
    scores = cross_validate(pipe, X, y, params={"groups": subjects}, cv=cv, scoring=scoring)
    print(f"{name:27s} R^2 by fold: {np.round(scores['test_r2'], 2)}")

# %%
# Predictions for the children in the fit follow their own lines (parallel to the
# population line of their sex, shifted by their random intercept); here four of them.

shown = ["M01", "M13", "F03", "F10"]
ages = np.array([8, 10, 12, 14])
fig, ax = plt.subplots(figsize=(6, 4))
for i, subject in enumerate(shown):
    sex = df.loc[df["Subject"] == subject, "Sex"].iloc[0]
    new = pd.DataFrame({"age": ages, "Sex": sex})
    rows = df["Subject"] == subject
    ax.plot(ages, pipe.predict(new, groups=[subject] * 4), color=f"C{i}", label=subject)
    ax.plot(df.loc[rows, "age"], df.loc[rows, "distance"], "o", color=f"C{i}")
for sex, style in [("Male", "k--"), ("Female", "k:")]:
    population = pipe.predict(pd.DataFrame({"age": ages, "Sex": sex}))
    ax.plot(ages, population, style, lw=1, label=f"population, {sex.lower()}")
ax.set_xlabel("age (years)")
ax.set_ylabel("distance (mm)")
ax.legend(fontsize=8, ncols=2)
fig.tight_layout()

sklearn.set_config(enable_metadata_routing=False)
