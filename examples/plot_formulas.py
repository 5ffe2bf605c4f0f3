"""
Formulas: factors, contrasts, transforms and missing data
=========================================================

``MixedLMRegressor(formula=...)`` and ``sklmm.lmer(formula, data)`` take lme4's formulas.
The fixed part and the left side of every random-effects term are model matrices built
by formulaic with R's semantics, so factors, contrasts and transforms work as in R; only
the column names are formulaic's (``Sex[T.Male]`` where R writes ``SexMale``). This
example goes through:

* factors with treatment contrasts, and how to choose the reference level;
* an ordered factor with R's polynomial contrasts;
* ``poly()`` and ``I()``, and stateful transforms at prediction;
* a factor on the left of a random-effects term, ``(0 + Machine | Worker)``;
* missing values, left out as lme4's ``na.action = na.omit``;
* predictions for new data, with new levels.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sklmm import (
    MissingDataWarning,
    MixedLMRegressor,
    SingularFitWarning,
    likelihood_ratio_test,
    lmer,
)
from sklmm.datasets import load_orthodont, load_sleepstudy

# %%
# Factors and treatment contrasts
# -------------------------------
# Orthodont: the distance from the pituitary to the pterygomaxillary fissure (mm) of 27
# children, measured at ages 8, 10, 12 and 14. ``Sex`` is a string column, so it is a
# factor, coded by treatment contrasts: its first level is the reference and every other
# level gets a column ``Sex[T.level]``. The levels of a string column are sorted, as R's
# ``factor()`` sorts a character vector: ``Female`` comes first.

orthodont = load_orthodont()
fit = MixedLMRegressor(formula="distance ~ age + Sex + (age | Subject)").fit(orthodont)
print(fit.fixed_effects_.round(4).to_string())

# %%
# nlme's ``Orthodont`` has the levels in the order ``Male``, ``Female``, so R reports the
# column ``SexFemale``. A pandas ``Categorical`` sets the order of the levels, and so the
# reference level (``C(Sex, contr.treatment("Male"))`` in the formula does the same). The
# model is the same, only parameterized from the other sex:

by_male = orthodont.assign(Sex=pd.Categorical(orthodont["Sex"], categories=["Male", "Female"]))
fit_male = lmer("distance ~ age + Sex + (age | Subject)", by_male)
print(fit_male.fixed_effects_.round(4).to_string())
same = np.isclose(fit_male.log_likelihood_, fit.log_likelihood_, rtol=1e-10) and np.allclose(
    fit_male.predict(by_male), fit.predict(orthodont)
)
print(f"same fit and predictions: {same}")

# %%
# An ordered factor: polynomial contrasts
# ---------------------------------------
# R codes an *ordered* factor by orthogonal polynomial contrasts (``contr.poly``): the
# linear, quadratic and cubic trends across its levels, the columns ``.L``, ``.Q``,
# ``.C``. A pandas ordered ``Categorical`` is R's ordered factor. Here the four ages
# become an ordered factor:

orthodont["age_class"] = pd.Categorical(orthodont["age"], categories=[8, 10, 12, 14], ordered=True)
by_class = lmer("distance ~ Sex + age_class + (1 | Subject)", orthodont, reml=False)
print(by_class.fixed_effects_.round(4).to_string())

# %%
# The linear trend dominates: the quadratic and cubic terms are small. The joint F test
# that both are 0 (lmerTest's ``contest``, with Satterthwaite's degrees of freedom) names
# the columns:

curvature = pd.DataFrame({"age_class[.Q]": [1, 0], "age_class[.C]": [0, 1]})
print(by_class.test_contrast(curvature).to_string(index=False, float_format=lambda v: f"{v:.4g}"))

# %%
# With four equally
# spaced ages, these contrasts span the same columns as the orthogonal polynomials
# ``poly(age, 3)``: the same model, whose coefficients differ by a constant factor (the
# contrasts have unit length over the four levels, ``poly`` over the 108 rows):

by_poly = lmer("distance ~ Sex + poly(age, 3) + (1 | Subject)", orthodont, reml=False)
ratio = by_poly.fixed_effects_.iloc[2:5].to_numpy() / by_class.fixed_effects_.iloc[2:5].to_numpy()
print(f"ML log-likelihoods {by_class.log_likelihood_:.6f} and {by_poly.log_likelihood_:.6f}")
print(f"coefficient ratios {np.round(ratio, 4)} (sqrt(27) = {np.sqrt(27):.4f})")

# %%
# ``poly()``, ``I()`` and stateful transforms
# -------------------------------------------
# A quadratic trend in sleepstudy, written two ways: orthogonal polynomials ``poly(Days,
# 2)``, or ``Days + I(Days**2)`` (Python's ``**``: in Python, ``^`` is the bitwise
# exclusive or). They are the same model, so their predictions agree:

sleep = load_sleepstudy()
quad_poly = lmer("Reaction ~ poly(Days, 2) + (Days | Subject)", sleep)
quad_power = lmer("Reaction ~ Days + I(Days**2) + (Days | Subject)", sleep)
print(quad_poly.fixed_effects_.round(3).to_string())
print(quad_power.fixed_effects_.round(3).to_string())
print(f"same predictions: {np.allclose(quad_poly.predict(sleep), quad_power.predict(sleep))}")

# %%
# ``poly``, ``center``, ``scale`` and the splines are *stateful*: the polynomial basis,
# the mean, the knots are learned in ``fit`` and reused in ``predict``. Three new rows
# therefore get the predictions of the fitted curve, not of a basis recomputed from
# three values of ``Days``:

new = pd.DataFrame({"Days": [0, 4, 9], "Subject": "new subject"})
print(
    new.assign(
        poly=quad_poly.predict(new).round(3),
        power=quad_power.predict(new).round(3),
    ).to_string(index=False)
)

# %%
# A factor in a random-effects term
# ---------------------------------
# The left side of a bar term is a model matrix too. Simulated data shaped like lme4's
# ``Machines``: eight workers each use three machines, three times. A worker's skill
# differs from machine to machine, and ``(0 + Machine | Worker)`` gives every worker one
# random effect per machine, correlated: one column per level (no intercept absorbs a
# level), named ``Machine[A]``, ... (R: ``MachineA``).

rng = np.random.default_rng(7)
workers = [f"W{i}" for i in range(1, 9)]
machines = ["A", "B", "C"]
machine_data = pd.DataFrame(
    [(w, m) for w in workers for m in machines for _ in range(3)], columns=["Worker", "Machine"]
)
worker_cov = np.array([[16.0, 10.0, 8.0], [10.0, 25.0, 12.0], [8.0, 12.0, 12.0]])
effects = dict(zip(workers, rng.multivariate_normal(np.zeros(3), worker_cov, 8), strict=True))
machine_mean = {"A": 52.0, "B": 60.0, "C": 66.0}
machine_data["score"] = [
    machine_mean[m] + effects[w][machines.index(m)] + rng.normal()
    for w, m in zip(machine_data["Worker"], machine_data["Machine"], strict=True)
]

per_machine = lmer("score ~ Machine + (0 + Machine | Worker)", machine_data)
print(per_machine.terms_)
print(per_machine.random_effects_cov_["Worker"].round(2))

# %%
# ``(Machine | Worker)`` is the same model with treatment coding (an intercept, and the
# differences of machines ``B`` and ``C`` from ``A``), so it has the same likelihood. A
# random intercept alone, ``(1 | Worker)``, is nested in it: lme4's ``anova`` is
# :func:`~sklmm.likelihood_ratio_test`, which refits both by ML.

treatment = lmer("score ~ Machine + (Machine | Worker)", machine_data)
print(treatment.terms_)
print(
    "same likelihood: "
    f"{np.isclose(treatment.log_likelihood_, per_machine.log_likelihood_, rtol=1e-8)}"
)
intercept_only = lmer("score ~ Machine + (1 | Worker)", machine_data)
print(likelihood_ratio_test(intercept_only, treatment)[["npar", "logLik", "Chisq", "Df"]])

# %%
# With ``||``, lme4 rewrites a factor's term as ``(1 | Worker) + (0 + Machine | Worker)``:
# the machines' effects stay correlated with each other, only the intercept is separate.
# sklmm does the same, and names the terms as lme4 does, ``Worker`` and ``Worker.1``.
# Here the intercept is redundant (the three machine effects already hold a worker's
# common level), so its variance goes to zero: a singular fit, which is expected here and
# caught.

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=SingularFitWarning)
    independent = lmer("score ~ Machine + (Machine || Worker)", machine_data)
print(independent.terms_)
print(f"singular: {independent.is_singular_}")

# %%
# Missing values
# --------------
# As lme4's default ``na.action = na.omit``, ``fit`` leaves out every row with a missing
# value in a variable of the formula (the response, the covariates, the grouping
# factors; not other columns), and warns :class:`~sklmm.MissingDataWarning`.
# ``rows_dropped_`` holds the index labels of those rows (lme4's ``na.action(fit)``);
# ``na_action="raise"`` raises instead.

holes = sleep.assign(note="")
holes.loc[[3, 50], "Reaction"] = np.nan
holes.loc[100, "Days"] = np.nan
holes.loc[150, "Subject"] = None
holes.loc[[10, 20], "note"] = None  # not in the formula: these rows stay

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", MissingDataWarning)
    with_holes = lmer("Reaction ~ Days + (Days | Subject)", holes)
for warning in caught:
    print(f"{warning.category.__name__}: {warning.message}")
print(f"n_rows_dropped_ = {with_holes.n_rows_dropped_}")
print(f"rows_dropped_ = {list(with_holes.rows_dropped_)}")

try:
    MixedLMRegressor(formula="Reaction ~ Days + (Days | Subject)", na_action="raise").fit(holes)
except ValueError as error:
    print(f"ValueError: {error}")

# %%
# ``predict`` gives ``NaN`` to the rows missing a variable it needs (``Days`` or
# ``Subject``), and a prediction to those missing only the response; ``score`` leaves
# out every incomplete row. Both warn.

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", MissingDataWarning)
    predicted = with_holes.predict(holes)
    r2 = with_holes.score(holes)
for warning in caught:
    print(f"{warning.category.__name__}: {warning.message}")
print(holes.loc[[3, 50, 100, 150]].assign(prediction=predicted[[3, 50, 100, 150]].round(2)))
print(f"R^2 on the complete rows: {r2:.4f}")

# %%
# New data and new levels
# -----------------------
# ``predict`` reads the formula's columns from new data. A subject seen in ``fit`` gets
# its BLUPs; a new subject gets the population prediction (lme4's ``allow.new.levels =
# TRUE``), as do all rows of data without the ``Subject`` column (lme4's ``re.form =
# NA``). A new level of a factor of the *fixed* part has no coefficient, so it is an
# error that names it.

new_children = pd.DataFrame(
    {"age": [8, 14, 8, 14], "Sex": ["Male", "Male", "Female", "Female"], "Subject": "M01"}
)
new_children.loc[2:, "Subject"] = "a new child"
print(new_children.assign(prediction=fit.predict(new_children).round(3)).to_string(index=False))
population = fit.predict(new_children.drop(columns="Subject"))
print(f"population predictions: {population.round(3)}")

try:
    fit.predict(new_children.assign(Sex="Unknown"))
except ValueError as error:
    print(f"ValueError: {error}")

# %%
# The population curves of both sexes, from data without the ``Subject`` column, over the
# children's measurements:

grid = pd.DataFrame(
    {"age": np.tile(np.linspace(8, 14, 13), 2), "Sex": np.repeat(["Female", "Male"], 13)}
)
grid["distance"] = fit.predict(grid)
fig, ax = plt.subplots(figsize=(6, 4))
for sex, color in [("Female", "tab:red"), ("Male", "tab:blue")]:
    rows = orthodont[orthodont["Sex"] == sex]
    jitter = rng.uniform(-0.15, 0.15, len(rows))
    ax.scatter(rows["age"] + jitter, rows["distance"], s=10, alpha=0.5, color=color)
    curve = grid[grid["Sex"] == sex]
    ax.plot(curve["age"], curve["distance"], color=color, label=f"{sex} (population)")
ax.set_xlabel("age (years)")
ax.set_ylabel("distance (mm)")
ax.legend()
fig.tight_layout()
