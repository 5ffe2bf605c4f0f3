"""
Pass or fail: a mixed-effects logistic regression in a scikit-learn search
==========================================================================

Students in 100 schools sit an exam. Whether a student passes depends on their weekly
hours of study and their previous grade, and on their school: some schools do better
than others at equal hours and grades (a random intercept), and in some schools the
hours pay off more than in others (a random slope). That is lme4's
``glmer(passed ~ hours + prior + (hours | school), family = binomial)``, here
:class:`~sklmm.MixedGLMClassifier` in a scikit-learn ``Pipeline``.

We let ``GridSearchCV`` choose the random-effects structure (a random intercept, or an
intercept and a slope on ``hours``) and the link (logit or probit), twice:

- with ``GroupKFold``, every validation school is new to the model, whose predictions for
  it are population predictions (its random effects are unknown, so 0);
- with ``KFold``, the validation rows come from schools the model has seen, whose
  predictions use the schools' conditional modes.

Metadata routing carries the school labels to the splitter, to ``fit`` and, where the
scorer asks for them, to ``predict_proba``. See :ref:`glmm` for the model and
:ref:`sklearn` for the routing.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import sklearn
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedGLMClassifier, make_group_scorer

pd.set_option("display.width", 100)

# %%
# The data
# --------
# 10 to 40 students per school. On the standardized scale of the covariates the true
# model has the fixed effects -0.3 (intercept), 1.0 (hours) and 0.6 (previous grade),
# a school intercept of standard deviation 1.2 and a school slope on hours of standard
# deviation 0.7, independent. Twenty schools are kept out of everything as *new*
# schools; of the other eighty, a fifth of every school's students are kept out as
# held-out rows of *seen* schools.

rng = np.random.default_rng(1)
n_schools = 100
size = rng.integers(10, 41, n_schools)
school_index = np.repeat(np.arange(n_schools), size)
names = np.array([f"S{i:03d}" for i in range(n_schools)])
hours = rng.gamma(4.0, 2.5, len(school_index))  # weekly hours, mean 10
prior = np.clip(rng.normal(12, 3, len(school_index)), 0, 20)  # previous grade, out of 20
b0 = rng.normal(0, 1.2, n_schools)  # the schools' intercepts
b1 = rng.normal(0, 0.7, n_schools)  # and their slopes on standardized hours
eta = -0.3 + (1.0 + b1[school_index]) * (hours - 10) / 5 + 0.6 * (prior - 12) / 3 + b0[school_index]
passed = rng.random(len(eta)) < 1 / (1 + np.exp(-eta))
df = pd.DataFrame({"hours": hours, "prior": prior, "school": names[school_index], "passed": passed})

new_schools = rng.choice(names, 20, replace=False)
test_new = df[df["school"].isin(new_schools)]
seen = df[~df["school"].isin(new_schools)]
train, test_seen = train_test_split(seen, test_size=0.2, random_state=0, stratify=seen["school"])
features = ["hours", "prior"]
print(
    f"{len(train)} training rows in {train['school'].nunique()} schools, "
    f"{len(test_seen)} held-out rows of the same schools, "
    f"{len(test_new)} rows of {len(new_schools)} new schools; "
    f"pass rate {df['passed'].mean():.2f}"
)

# %%
# The pipeline and the routing of ``groups``
# ------------------------------------------
# ``StandardScaler().set_output(transform="pandas")`` keeps the column names, so that
# the random slope can be named (``random_slopes=["hours"]``). With metadata routing
# enabled, the classifier asks for ``groups`` in ``fit`` and in ``predict_proba``.

sklearn.set_config(enable_metadata_routing=True)

clf = MixedGLMClassifier().set_fit_request(groups=True).set_predict_proba_request(groups=True)
pipe = make_pipeline(StandardScaler().set_output(transform="pandas"), clf)
grid = {
    "mixedglmclassifier__random_slopes": [None, ["hours"]],
    "mixedglmclassifier__link": ["logit", "probit"],
}


def results(search, columns):
    """The search's mean scores, one row per candidate."""
    table = pd.DataFrame(search.cv_results_)
    table = table.rename(
        columns={
            "param_mixedglmclassifier__link": "link",
            "param_mixedglmclassifier__random_slopes": "random_slopes",
        }
    )
    return table[["link", "random_slopes", *columns]].to_string(float_format="%.4f")


# %%
# New schools: ``GroupKFold`` and scikit-learn's string scorers
# -------------------------------------------------------------
# A string scorer such as ``"neg_log_loss"`` or ``"roc_auc"`` calls ``predict_proba(X)``
# (or ``decision_function(X)``) **without** groups, so it scores population predictions.
# With ``GroupKFold`` every validation school is new, and the population prediction is
# exactly what the model predicts for a new school: here the string scorers score the
# right thing.

search_new = GridSearchCV(
    pipe,
    grid,
    cv=GroupKFold(5),
    scoring={"neg_log_loss": "neg_log_loss", "roc_auc": "roc_auc"},
    refit="neg_log_loss",
)
search_new.fit(train[features], train["passed"], groups=train["school"])
print(results(search_new, ["mean_test_neg_log_loss", "mean_test_roc_auc"]))
print("best for new schools:", search_new.best_params_)

# %%
# For a new school the random slope is no help: its slope is unknown, the population
# prediction uses the mean slope, and the candidates differ in the third decimal.

# %%
# Seen schools: ``KFold`` and a group scorer
# ------------------------------------------
# With row folds the validation students come from schools seen in ``fit``, and their
# predictions should use the schools' conditional modes: the scorer must pass the
# validation rows' groups to ``predict_proba``. A string scorer cannot (it would score
# population predictions without a warning); :func:`sklmm.make_group_scorer` with
# ``response_method="predict_proba"`` does.

scorer = make_group_scorer(log_loss, greater_is_better=False, response_method="predict_proba")
search_seen = GridSearchCV(pipe, grid, cv=KFold(5, shuffle=True, random_state=0), scoring=scorer)
search_seen.fit(train[features], train["passed"], groups=train["school"])
print(results(search_seen, ["mean_test_score"]))
print("best for seen schools:", search_seen.best_params_)

# %%
# Now the random slope pays: a seen school's own slope on hours is estimated from its
# students, and the candidates with ``random_slopes=["hours"]`` have the lower held-out
# log-loss.

# %%
# The chosen model
# ----------------
# ``best_estimator_`` is the pipeline refitted on all the training rows. Its summary is
# glmer's: the variance parameters of the school term, Wald z tests of the fixed effects
# (on the standardized covariates) and the log-likelihood of the Laplace approximation.

best = search_seen.best_estimator_
model = best[-1]
print(model.summary())

# %%
# Held-out rows
# -------------
# ``predict_proba`` with the school labels: the students of seen schools get their
# school's conditional modes, those of new schools the population prediction (the
# random effects of a new level are 0, lme4's ``allow.new.levels = TRUE``). Without the
# labels (``groups=None``, lme4's ``re.form = NA``) every row gets the population
# prediction, which for seen schools throws their information away.

cases = {
    "seen schools, with groups": (test_seen, test_seen["school"]),
    "seen schools, groups=None": (test_seen, None),
    "new schools, with groups": (test_new, test_new["school"]),
}
proba = {}
rows = []
for label, (frame, groups) in cases.items():
    p = best.predict_proba(frame[features], groups=groups)[:, 1]
    proba[label] = p
    rows.append(
        {
            "rows": label,
            "log-loss": log_loss(frame["passed"], p),
            "ROC AUC": roc_auc_score(frame["passed"], p),
        }
    )
print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))

# %%
# The picture
# -----------
# Left: calibration of the held-out predictions (the observed pass rate of the rows in
# each bin of predicted probability). The seen schools' predictions follow the diagonal.
# The new schools' curve is flatter (and noisier: 20 schools): their prediction is that
# of a school whose random effects are 0, while the pass rate averaged over schools is
# closer to 1/2 at every hours and grade. Right: the estimated school intercepts (the
# conditional modes, with +/- 2 conditional standard deviations from
# ``random_effects_condvar_``) against the simulated ones, on the link scale. The modes
# are shrunk towards 0, the more so for small schools.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
for label, (frame, _) in cases.items():
    if label.endswith("groups=None"):
        continue
    observed, predicted = calibration_curve(frame["passed"], proba[label], n_bins=8)
    ax1.plot(predicted, observed, "o-", label=label)
ax1.plot([0, 1], [0, 1], "k:", lw=1)
ax1.set_xlabel("predicted probability of passing")
ax1.set_ylabel("observed pass rate")
ax1.legend(loc="upper left")
ax1.set_title("calibration on held-out rows")

modes = model.random_effects_["school"]["(Intercept)"]
condvar = model.random_effects_condvar_["school"]
sd = np.sqrt([condvar.loc[(s, "(Intercept)"), "(Intercept)"] for s in modes.index])
true = pd.Series(b0, index=names).loc[modes.index]
ax2.errorbar(true, modes, yerr=2 * sd, fmt="o", ms=3, alpha=0.6, elinewidth=0.8)
lim = [min(true.min(), modes.min()) - 0.3, max(true.max(), modes.max()) + 0.3]
ax2.plot(lim, lim, "k:", lw=1)
ax2.set_xlabel("simulated school intercept")
ax2.set_ylabel("conditional mode (link scale)")
ax2.set_title("school intercepts")
fig.tight_layout()

# %%
# The random effects are on the link scale. The search chose the logit link, so a school
# one standard deviation above the mean has its odds of passing multiplied by
# ``exp(sd)`` at equal hours and grades.

sd_school = np.sqrt(model.random_effects_cov_["school"].loc["(Intercept)", "(Intercept)"])
print(f"link: {model.link}; school sd {sd_school:.2f}; odds ratio {np.exp(sd_school):.1f}")

sklearn.set_config(enable_metadata_routing=False)
