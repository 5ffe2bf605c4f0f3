"""
Choosing the random-effects structure with GridSearchCV and GroupKFold
======================================================================

Which random-effects structure suits the sleepstudy data: a random intercept per subject
(lme4 ``(1 | Subject)``), a correlated random intercept and slope (``(Days | Subject)``) or
independent ones (``(Days || Subject)``), each fitted by REML or ML? We let
``GridSearchCV`` decide with ``GroupKFold``, so that every validation fold holds subjects
the model has never seen, and scikit-learn's metadata routing carries ``groups`` to the
splitter, to ``fit`` and to the scorer.

The validation subjects are new, so their predictions are population predictions
``X beta``, and those barely depend on the random-effects structure (on this balanced
design, not at all): R^2 cannot tell the structures apart. What the structure does decide
is the *distribution* of a new subject's responses: ``y_i ~ N(X_i beta, Z_i Sigma Z_i' +
sigma2 I)``. So we rank the candidates by the log-likelihood of the held-out subjects
under that distribution, per observation, and report R^2 next to it. The spread across
folds mostly reflects which subjects are held out; all candidates are scored on the same
folds.

The search is run twice, from matrices (``random_slopes``, ``covariance_type``) and from
lme4 formulas (``formula``). Another section searches over formulas with both a fixed and
a random part, and shows what ``GroupKFold`` and row folds can and cannot select. The last
one runs the search of the random part with ``MixedLMRegressorCV``, which gives
``GridSearchCV``'s scores from one pass over the rows.
"""

import time

import numpy as np
import pandas as pd
import sklearn
from scipy.stats import multivariate_normal
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
from sklearn.utils.metadata_routing import MetadataRequest

from sklmm import MixedLMRegressor, MixedLMRegressorCV
from sklmm.datasets import load_sleepstudy


class HeldOutLogLikelihood:
    """Scorer: mean log-density per row of held-out groups under the fitted model.

    Each held-out group is treated as new: its responses are scored under
    ``N(X_i beta, Z_i Sigma Z_i' + sigma2 I)``, with ``Z_i`` the random-intercept column and
    the random-slope columns. It needs the group labels of the validation rows, so it
    requests ``groups`` from metadata routing (``get_metadata_routing``).
    """

    def __call__(self, estimator, X, y, groups=None):
        if groups is None:
            raise ValueError("HeldOutLogLikelihood needs groups: enable metadata routing")
        groups, y = np.asarray(groups), np.asarray(y)
        mean = estimator.predict(X)  # population predictions X beta
        (sigma,) = estimator.random_effects_cov_.values()  # the one term, (1 ... | Subject)
        slopes = list(sigma.columns[1:])  # "(Intercept)" comes first
        total = 0.0
        for label in pd.unique(groups):
            rows = groups == label
            Z = np.column_stack([np.ones(rows.sum()), X.loc[rows, slopes]])
            cov = Z @ sigma.to_numpy() @ Z.T
            cov += estimator.residual_variance_ * np.eye(rows.sum())
            total += multivariate_normal(mean[rows], cov).logpdf(y[rows])
        return total / len(y)

    def get_metadata_routing(self):
        request = MetadataRequest(owner="HeldOutLogLikelihood")
        request.score.add_request(param="groups", alias=True)
        return request


def structure(params):
    """lme4's notation for a candidate's random-effects term."""
    if params["random_slopes"] is None:
        term = "(1 | Subject)"
    elif params["covariance_type"] == "unstructured":
        term = "(Days | Subject)"
    else:
        term = "(Days || Subject)"
    return f"{term} {'REML' if params['reml'] else 'ML'}"


df = load_sleepstudy()
X, y, subjects = df[["Days"]], df["Reaction"], df["Subject"]

param_grid = [
    {"random_slopes": [None], "reml": [True, False]},
    {
        "random_slopes": [["Days"]],
        "covariance_type": ["unstructured", "diagonal"],
        "reml": [True, False],
    },
]

with sklearn.config_context(enable_metadata_routing=True):
    est = MixedLMRegressor().set_fit_request(groups=True)
    search = GridSearchCV(
        est,
        param_grid,
        cv=GroupKFold(n_splits=6),  # 3 unseen subjects per validation fold
        scoring={"loglik": HeldOutLogLikelihood(), "r2": "r2"},
        refit="loglik",
    )
    search.fit(X, y, groups=subjects)  # groups go to GroupKFold, fit and the scorer

results = pd.DataFrame(search.cv_results_)
ranking = pd.DataFrame(
    {
        "structure": [structure(p) for p in results["params"]],
        "held-out loglik/row": results["mean_test_loglik"],
        "(sd)": results["std_test_loglik"],
        "held-out R^2": results["mean_test_r2"],
        "rank": results["rank_test_loglik"],
    }
).sort_values("rank")
print("Candidates ranked by the log-likelihood of unseen subjects (higher is better):")
print(ranking.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

best = search.best_estimator_
print(f"\nBest: {structure(search.best_params_)}")
print(f"  fixed effects: intercept {best.intercept_:.2f}, Days {best.coef_[0]:.2f}")
print(f"  random-effects covariance of {best.terms_[0]}:")
print(best.random_effects_cov_["Subject"].round(2).to_string())
print(f"  residual variance: {best.residual_variance_:.2f}")

# %%
# An optional picture of the same ranking (skipped when matplotlib is not installed).
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None

if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3))
    shown = ranking.iloc[::-1]
    ax.errorbar(shown["held-out loglik/row"], shown["structure"], xerr=shown["(sd)"], fmt="o")
    ax.set_xlabel("held-out log-likelihood per row (GroupKFold, 6 folds)")
    fig.tight_layout()

# %%
# The same search over formulas
# -----------------------------
# The candidates can be lme4 formulas instead: ``formula`` is a hyperparameter like any
# other. These are one-sided (``"~ Days + (Days | Subject)"``), so ``y`` is passed
# separately, as the scorer needs it; the data frame holds the ``Subject`` column the
# formulas read. Under metadata routing, the base estimator of the search has no formula
# yet, so it must be told not to take ``groups`` in ``fit`` and ``score`` (a formula reads
# its grouping factors from the data): the labels go to ``GroupKFold`` and to the scorer.
# (``MixedLMRegressor(formula=...)`` requests no groups by default.)

terms = ["(1 | Subject)", "(Days | Subject)", "(Days || Subject)"]
formula_grid = {"formula": [f"~ Days + {term}" for term in terms], "reml": [True, False]}

with sklearn.config_context(enable_metadata_routing=True):
    est = MixedLMRegressor().set_fit_request(groups=False).set_score_request(groups=False)
    formula_search = GridSearchCV(
        est,
        formula_grid,
        cv=GroupKFold(n_splits=6),
        scoring={"loglik": HeldOutLogLikelihood(), "r2": "r2"},
        refit="loglik",
    )
    formula_search.fit(df, y, groups=subjects)

by_formula = pd.DataFrame(formula_search.cv_results_)
print(
    by_formula[["param_formula", "param_reml", "mean_test_loglik", "rank_test_loglik"]]
    .sort_values("rank_test_loglik")
    .to_string(index=False, float_format=lambda v: f"{v:.4f}")
)
same = np.allclose(by_formula["mean_test_loglik"], results["mean_test_loglik"]) and np.allclose(
    by_formula["mean_test_r2"], results["mean_test_r2"]
)
print(f"\nsame scores as the search from matrices: {same}")
print(f"best: {formula_search.best_params_}")

# %%
# Choosing the fixed and the random part: held-out groups versus held-out rows
# ----------------------------------------------------------------------------
# A formula holds both parts of the model, so one grid can vary both: here three fixed
# parts (none, a line, an orthogonal quadratic) times three random parts. With the
# default scoring, ``score(data)`` is the R^2 of ``predict(data)``, which reads each
# validation row's ``Subject`` from the data. What it measures depends on the folds:
#
# * ``GroupKFold`` holds out whole subjects. They are new to the fitted model, so their
#   predictions are population predictions ``X beta``: the score judges the *fixed* part.
#   The random part acts only through the estimate of ``beta``, and little: on this
#   balanced design, where the fixed part holds the random part's columns (``Days``), not
#   at all, so those random parts tie and cannot be chosen this way.
# * Row folds (``KFold`` with shuffling) hold out rows of subjects seen in ``fit``. Their
#   predictions are conditional, ``X beta + Z b``, and the BLUPs ``b`` depend on the
#   random part: the score judges the *random* part too.
#
# The groups go to ``GroupKFold`` only; no routing is needed, as the formulas read
# ``Subject`` from the data. (Wrong random parts are often singular fits, with a
# :class:`~sklmm.SingularFitWarning`; none of these is.)

fixed_parts = ["1", "Days", "poly(Days, 2)"]
random_parts = ["(1 | Subject)", "(0 + Days | Subject)", "(Days | Subject)"]
grid = {"formula": [f"Reaction ~ {f} + {r}" for f in fixed_parts for r in random_parts]}


def r2_table(search):
    """Mean validation R^2 of every formula: fixed parts by row, random parts by column."""
    table = pd.DataFrame(search.cv_results_)
    return (
        pd.DataFrame(
            {
                "fixed part": [f for f in fixed_parts for _ in random_parts],
                "random part": [r for _ in fixed_parts for r in random_parts],
                "R^2": table["mean_test_score"],
            }
        )
        .pivot(index="fixed part", columns="random part", values="R^2")
        .loc[fixed_parts, random_parts]
    )


by_subject = GridSearchCV(MixedLMRegressor(), grid, cv=GroupKFold(n_splits=6))
by_subject.fit(df, groups=df["Subject"])  # the groups go to GroupKFold only
print("GroupKFold (unseen subjects, population predictions): mean R^2")
print(r2_table(by_subject).round(4).to_string())

by_row = GridSearchCV(MixedLMRegressor(), grid, cv=KFold(n_splits=6, shuffle=True, random_state=0))
by_row.fit(df)
print("\nKFold (rows of seen subjects, conditional predictions): mean R^2")
print(r2_table(by_row).round(4).to_string())

# %%
# Held-out subjects choose the fixed part, ``Days``: a line beats no trend and the
# quadratic. (Without ``Days`` in the fixed part, the random part changes how the rows are
# weighted in the estimate of the intercept, so the scores differ, but all are poor.)
# Held-out rows choose the random part, a random intercept and slope,
# ``(Days | Subject)``; with a random slope they barely tell the fixed parts apart, as the
# subjects' BLUPs absorb a trend the fixed part lacks. A search of both parts therefore
# takes two steps: the fixed part by ``GroupKFold`` (with the richest random part), then
# the random part by row folds, with that fixed part.

step1 = GridSearchCV(
    MixedLMRegressor(),
    {"formula": [f"Reaction ~ {f} + (Days | Subject)" for f in fixed_parts]},
    cv=GroupKFold(n_splits=6),
).fit(df, groups=df["Subject"])
best_fixed = fixed_parts[step1.best_index_]
step2 = GridSearchCV(
    MixedLMRegressor(),
    {"formula": [f"Reaction ~ {best_fixed} + {r}" for r in random_parts]},
    cv=KFold(n_splits=6, shuffle=True, random_state=0),
).fit(df)
print(f"step 1, GroupKFold: fixed part {best_fixed!r}")
print(f"step 2, KFold:      {step2.best_params_['formula']!r}")
print(step2.best_estimator_.fixed_effects_.round(2).to_string())

# %%
# The random part in one pass: MixedLMRegressorCV
# -----------------------------------------------
# Step 2 searched the random part of one grouping factor with row folds. When the
# candidates differ only in their random slopes, covariance type and REML or ML,
# :class:`~sklmm.MixedLMRegressorCV` runs that search from one pass over the rows: the
# per-fold statistics are formed once, every candidate is fitted on every training set
# from their sums, and the held-out R^2 of the conditional predictions is computed from
# each fold's statistics. Its scores are those of ``GridSearchCV`` with ``groups`` routed
# to ``fit`` and ``score`` (not ``scoring="r2"``, which scores population predictions).
# It takes no formulas, so it cannot search the fixed part, nor a term without an
# intercept such as ``(0 + Days | Subject)``.

row_folds = KFold(n_splits=6, shuffle=True, random_state=0)
start = time.perf_counter()
one_pass = MixedLMRegressorCV(candidates=param_grid, cv=row_folds)
one_pass.fit(X, y, groups=subjects)
one_pass_time = time.perf_counter() - start

with sklearn.config_context(enable_metadata_routing=True):
    est = MixedLMRegressor().set_fit_request(groups=True).set_score_request(groups=True)
    start = time.perf_counter()
    grid_search = GridSearchCV(est, param_grid, cv=row_folds).fit(X, y, groups=subjects)
    grid_time = time.perf_counter() - start

comparison = pd.DataFrame(
    {
        "structure": [structure(p) for p in one_pass.cv_results_["params"]],
        "MixedLMRegressorCV": one_pass.cv_results_["mean_test_score"],
        "GridSearchCV": grid_search.cv_results_["mean_test_score"],
        "rank": one_pass.cv_results_["rank_test_score"],
    }
).sort_values("rank")
print("KFold (rows of seen subjects, conditional predictions): mean R^2")
print(comparison.to_string(index=False, float_format=lambda v: f"{v:.6f}"))
print(f"best: {structure(one_pass.best_params_)}")
print(f"time: MixedLMRegressorCV {one_pass_time:.2f} s, GridSearchCV {grid_time:.2f} s")

# %%
# The two searches agree to the printed digits (to 1e-8 in the tests) and choose the
# same structure: a random intercept and slope, here independent ones fitted by REML
# (step 2's formulas had no ``||`` candidate). The time saved is ``GridSearchCV``'s
# passes over the rows, one per fit: on 180,000 rows in 1,800 groups (8 candidates, 5
# folds) ``GridSearchCV`` took about 3 times as long as ``MixedLMRegressorCV``, which
# itself cost about 10 single fits. With ``GroupKFold`` the same search would score
# population predictions, which on this balanced design are the same for every random
# part: all candidates would tie. See :ref:`sklearn_cv` for its limits.
#
# ``warm_start=True`` fits each random-effects structure cold once and starts its other
# fits (other folds, REML and ML, the refit) from that fit, by Newton alone, on training
# sets of at least 100 levels. Where the likelihood has one optimum the scores are the
# cold search's to the convergence rule, from fewer iterations; where it has several (small,
# very unbalanced designs) a warm fit can end in another optimum, so the default is cold.
# Sleepstudy's 18 subjects are too few: every fit stays cold. On 400 simulated subjects:

rng = np.random.default_rng(1)
n_subjects, n_days = 400, 10
days = np.tile(np.arange(n_days, dtype=float), n_subjects)
ids = np.repeat(np.arange(n_subjects), n_days)
effects = rng.multivariate_normal([0.0, 0.0], [[600.0, 10.0], [10.0, 35.0]], n_subjects)
reaction = 250 + 10 * days + effects[ids, 0] + effects[ids, 1] * days
reaction += rng.normal(0.0, 25.0, len(days))
big_X, big_y, big_groups = pd.DataFrame({"Days": days}), reaction, ids
searches = {}
for warm_start in (False, True):
    start = time.perf_counter()
    search = MixedLMRegressorCV(candidates=param_grid, cv=row_folds, warm_start=warm_start)
    searches[warm_start] = search.fit(big_X, big_y, groups=big_groups)
    print(f"warm_start={warm_start}: {time.perf_counter() - start:.2f} s")
difference = (
    searches[True].cv_results_["mean_test_score"] - searches[False].cv_results_["mean_test_score"]
)
print(f"largest |difference| of the mean scores: {np.abs(difference).max():.1e}")
print(f"best: {structure(searches[True].best_params_)}, {structure(searches[False].best_params_)}")
