"""
Pitfalls: scoring, splitting and importance with groups
=======================================================

scikit-learn's tools assume that ``X`` and ``y`` are all a model needs at predict time. A
mixed model also needs the group labels: without them it predicts ``X beta`` for every row,
the population prediction (lme4's ``predict(fit, re.form = NA)``), which is a legitimate
prediction but usually not the one being evaluated. This example runs the four places
where the labels are easily lost and shows what to write instead:

a. scoring without groups (``score``, string scorers such as ``scoring="r2"``);
b. a ``Pipeline`` with :func:`sklmm.make_group_scorer` and prediction standard deviations;
c. group splitters with several grouping factors (:class:`sklmm.SplitByFactor`);
d. ``permutation_importance``.

The rules are summarised in the user guide, :ref:`sklearn_pitfalls` (the scikit-learn page).
"""

import functools
import warnings

import numpy as np
import pandas as pd
import sklearn
from sklearn.inspection import permutation_importance
from sklearn.metrics import r2_score, root_mean_squared_error
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLMRegressor, SingularFitWarning, SplitByFactor, make_group_scorer
from sklmm.datasets import load_pastes, load_sleepstudy


def first_sentence(message):
    """The first sentence of a warning or error message."""
    return str(message).split(". ")[0].rstrip(".") + "."


df = load_sleepstudy()
X, y, g = df[["Days"]], df["Reaction"], df["Subject"]

# %%
# a. Scoring without groups
# -------------------------
# ``est.score(X, y)`` without ``groups`` scores the population predictions. On a model
# with random effects it warns :class:`sklmm.NoGroupsWarning`; with ``groups`` it scores
# the conditional predictions ``X beta + Z b``, which use each subject's random effects.

est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    r2_population = est.score(X, y)
for w in caught:
    print(f"{w.category.__name__}: {first_sentence(w.message)}")

r2_conditional = est.score(X, y, groups=g)
print(f"est.score(X, y)             R^2 = {r2_population:.3f}  (population)")
print(f"est.score(X, y, groups=g)   R^2 = {r2_conditional:.3f}  (conditional)")

# %%
# ``est.predict(X)`` without groups does not warn: it is the population prediction by
# design. A string scorer such as ``scoring="r2"`` calls exactly that, so it scores
# population predictions, and nothing can warn about it. :func:`sklmm.make_group_scorer`
# turns a metric into a scorer that requests ``groups`` (with metadata routing enabled)
# and calls ``predict(X, groups=...)``.
#
# Below, ``GridSearchCV`` compares a random intercept with a correlated random intercept
# and slope, on ``KFold`` splits (the validation rows belong to subjects seen in ``fit``),
# and scores them both ways. The string scorer barely tells the two structures apart,
# since their population predictions are nearly the same; the group scorer measures what
# the random slopes add to the predictions for known subjects.

scoring = {"r2": "r2", "group_r2": make_group_scorer(r2_score)}
with sklearn.config_context(enable_metadata_routing=True):
    search = GridSearchCV(
        MixedLMRegressor().set_fit_request(groups=True),
        {"random_slopes": [None, ["Days"]]},
        cv=KFold(n_splits=5, shuffle=True, random_state=0),
        scoring=scoring,
        refit=False,
    )
    search.fit(X, y, groups=g)  # groups go to fit and to the group scorer

results = pd.DataFrame(
    {
        "random_slopes": [str(p["random_slopes"]) for p in search.cv_results_["params"]],
        'scoring="r2"': search.cv_results_["mean_test_r2"],
        "make_group_scorer(r2_score)": search.cv_results_["mean_test_group_r2"],
    }
)
print(results.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

# %%
# b. A Pipeline and the group scorer
# ----------------------------------
# Inside a ``Pipeline``, the estimator requests ``groups`` for ``fit``. The group scorer
# needs nothing more: for a ``Pipeline`` it transforms ``X`` through the steps before the
# last and passes the labels to the last step's ``predict`` itself, so no
# ``set_predict_request`` is required.

cv = KFold(n_splits=5, shuffle=True, random_state=0)
with sklearn.config_context(enable_metadata_routing=True):
    pipe = make_pipeline(
        StandardScaler().set_output(transform="pandas"),  # keeps the name "Days"
        MixedLMRegressor(random_slopes=["Days"]).set_fit_request(groups=True),
    )
    scores = cross_validate(
        pipe, X, y, cv=cv, scoring=make_group_scorer(r2_score), params={"groups": g}
    )
print(f"conditional R^2 by fold: {np.round(scores['test_score'], 3)}")

# %%
# Calling the pipeline's own ``predict`` with ``groups`` is different: the ``Pipeline``
# routes ``groups`` (and ``return_std``) to the last step only if that step requested
# them. Without the request scikit-learn raises an error; with
# ``set_predict_request(groups=True, return_std=True)`` the call works.

with sklearn.config_context(enable_metadata_routing=True):
    pipe.fit(X, y, groups=g)
    try:
        pipe.predict(X, groups=g, return_std=True)
    except Exception as exc:
        print(f"{type(exc).__name__}: {first_sentence(exc)}")

    pipe[-1].set_predict_request(groups=True, return_std=True)
    mean, std = pipe.predict(X.iloc[:3], groups=g.iloc[:3], return_std=True)
print(pd.DataFrame({"Days": X["Days"].iloc[:3], "prediction": mean, "std": std}).round(2))

# %%
# c. Group splitters with several grouping factors
# ------------------------------------------------
# A model with crossed or nested terms takes ``groups`` as a DataFrame, one column per
# grouping factor. scikit-learn's group splitters (``GroupKFold``, ``LeaveOneGroupOut``,
# ``GroupShuffleSplit``) take one label per row and fail on it. We simulate a crossed
# design, 30 subjects who each answer the same 20 items, with lme4's model
# ``y ~ x + (1 | subj) + (1 | item)``.

rng = np.random.default_rng(0)
n_subj, n_item = 30, 20
subj = np.repeat([f"s{i:02d}" for i in range(n_subj)], n_item)
item = np.tile([f"i{j:02d}" for j in range(n_item)], n_subj)
x = rng.normal(size=subj.size)
subj_effect = rng.normal(scale=2.0, size=n_subj)
item_effect = rng.normal(scale=1.5, size=n_item)
noise = rng.normal(scale=1.0, size=subj.size)
crossed_df = pd.DataFrame(
    {
        "x": x,
        "subj": subj,
        "item": item,
        "y": 1.0 + 0.5 * x + np.repeat(subj_effect, n_item) + np.tile(item_effect, n_subj) + noise,
    }
)
Xc, yc, G = crossed_df[["x"]], crossed_df["y"], crossed_df[["subj", "item"]]
group_r2 = make_group_scorer(r2_score)

with sklearn.config_context(enable_metadata_routing=True):
    crossed = MixedLMRegressor(random_effects="(1 | subj) + (1 | item)").set_fit_request(
        groups=True
    )
    try:
        cross_validate(crossed, Xc, yc, cv=GroupKFold(5), scoring=group_r2, params={"groups": G})
    except Exception as exc:
        print(f"GroupKFold, two columns of groups: {type(exc).__name__}: {exc}")

# %%
# :class:`sklmm.SplitByFactor` wraps the splitter and hands it one column of ``groups``,
# the factor to hold out, while ``fit`` receives the whole DataFrame. Which factor to hold
# out depends on the predictions being evaluated: hold out the factor whose *new* levels
# the model will meet. Holding out subjects scores predictions for new subjects answering
# known items (only the item effects help); holding out items scores known subjects
# answering new items; ``KFold`` holds out rows, so both effects are known.

splitters = {
    "SplitByFactor(GroupKFold(5), 'subj')": SplitByFactor(GroupKFold(5), "subj"),
    "SplitByFactor(GroupKFold(5), 'item')": SplitByFactor(GroupKFold(5), "item"),
    "KFold(5, shuffle=True)": KFold(5, shuffle=True, random_state=0),
}
with sklearn.config_context(enable_metadata_routing=True):
    for name, splitter in splitters.items():
        scores = cross_validate(
            crossed, Xc, yc, cv=splitter, scoring=group_r2, params={"groups": G}
        )
        print(f"{name:38s} mean conditional R^2 = {scores['test_score'].mean():.3f}")

# %%
# Nested factors: lme4's ``Pastes``, three casks within each of ten batches, fitted with
# ``(1 | batch/cask)`` (terms ``batch`` and ``batch:cask``). Hold out ``"batch"`` to score
# predictions for new batches (all their casks are new too), or the interaction
# ``"batch:cask"`` for new casks of known batches. The column ``"cask"`` alone would be a
# mistake: its labels ``a``, ``b``, ``c`` are reused in every batch, so it has only three
# levels, each pooling ten unrelated casks.
#
# The model has no covariate, so R^2 of held-out batches is meaningless (their prediction
# is the overall mean); we score the root mean squared error. The batch variance is small
# next to the cask variance (lme4: 1.66 and 8.43), so knowing the batch helps little: with
# ten batches the first two scores do not differ beyond the spread across folds. On some
# training sets the batch variance is estimated as zero: those fits warn
# :class:`sklmm.SingularFitWarning`, which we count here instead of letting it through.

pastes = load_pastes()
Xp, yp, Gp = pastes[[]], pastes["strength"], pastes[["batch", "cask"]]
rmse = make_group_scorer(root_mean_squared_error, greater_is_better=False)
splitters = {
    "SplitByFactor(GroupKFold(5), 'batch')": SplitByFactor(GroupKFold(5), "batch"),
    "SplitByFactor(GroupKFold(5), 'batch:cask')": SplitByFactor(GroupKFold(5), "batch:cask"),
    "KFold(5, shuffle=True)": KFold(5, shuffle=True, random_state=0),
}
with sklearn.config_context(enable_metadata_routing=True):
    nested = MixedLMRegressor(random_effects="(1 | batch/cask)").set_fit_request(groups=True)
    for name, splitter in splitters.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SingularFitWarning)
            scores = cross_validate(
                nested, Xp, yp, cv=splitter, scoring=rmse, params={"groups": Gp}
            )
        singular = sum(issubclass(w.category, SingularFitWarning) for w in caught)
        print(
            f"{name:42s} RMSE = {-scores['test_score'].mean():.2f}"
            f" (sd over folds {scores['test_score'].std():.2f}; singular fits: {singular} of 5)"
        )

# %%
# d. Permutation importance
# -------------------------
# ``permutation_importance`` routes no metadata. With its default scoring it calls
# ``est.score(X, y)`` without groups, once for the baseline and once per permutation, and
# every call warns: the importances are those of the population predictions. We add a
# column of pure noise to sleepstudy next to ``Days``.

df["noise"] = np.random.default_rng(1).normal(size=len(df))
X2 = df[["Days", "noise"]]
est2 = MixedLMRegressor(random_slopes=["Days"]).fit(X2, y, groups=g)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    population = permutation_importance(est2, X2, y, n_repeats=5, random_state=0)
print(f"{len(caught)} warnings, {caught[0].category.__name__}: {first_sentence(caught[0].message)}")

# %%
# Bind the labels to the group scorer with ``functools.partial``. Permuting a column of
# ``X`` leaves the rows of ``X`` in place, so ``g`` stays aligned with them; keep
# ``max_samples=1.0`` (the default), since a subsample of the rows would no longer match
# the bound labels. Both scorings find nothing in the noise column; the importances of
# ``Days`` differ because they are decreases of different baselines, the population and
# the conditional R^2 (0.29 and 0.83 above).

conditional = permutation_importance(
    est2,
    X2,
    y,
    n_repeats=5,
    random_state=0,
    scoring=functools.partial(make_group_scorer(r2_score), groups=g),
)
importances = pd.DataFrame(
    {
        "default scoring (population)": population.importances_mean,
        "group scorer (conditional)": conditional.importances_mean,
    },
    index=X2.columns,
)
print("mean decrease of R^2 when the column is permuted:")
print(importances.round(3) + 0.0)  # + 0.0 prints -0.0 as 0.0
