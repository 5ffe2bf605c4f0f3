"""sklmm: linear and generalized linear mixed-effects models for scikit-learn.

The public surface is what this module exports; every other module is private.
"""

from ._cv import MixedLMRegressorCV
from ._estimator import MixedLMRegressor
from ._exceptions import (
    MissingDataWarning,
    MixedLMConvergenceWarning,
    NoGroupsWarning,
    SeparationWarning,
    SingularFitWarning,
    ZeroWeightWarning,
)
from ._glm_estimator import MixedGLMClassifier, MixedGLMRegressor
from ._inference import likelihood_ratio_test
from ._lmer import lmer
from ._plotting import plot_caterpillar, plot_profile, plot_residuals
from ._scorer import make_group_scorer
from ._splitters import SplitByFactor

__all__ = [
    "MissingDataWarning",
    "MixedGLMClassifier",
    "MixedGLMRegressor",
    "MixedLMConvergenceWarning",
    "MixedLMRegressor",
    "MixedLMRegressorCV",
    "NoGroupsWarning",
    "SeparationWarning",
    "SingularFitWarning",
    "SplitByFactor",
    "ZeroWeightWarning",
    "likelihood_ratio_test",
    "lmer",
    "make_group_scorer",
    "plot_caterpillar",
    "plot_profile",
    "plot_residuals",
]

__version__ = "0.1.0"
