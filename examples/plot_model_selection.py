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
"""

import numpy as np
import pandas as pd
import sklearn
from scipy.stats import multivariate_normal
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.utils.metadata_routing import MetadataRequest

from sklmm import MixedLMRegressor
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
