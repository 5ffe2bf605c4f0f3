"""Warning classes: one per situation, each saying what was seen and what to try."""

from sklearn.exceptions import ConvergenceWarning


class NoGroupsWarning(UserWarning):
    """``fit`` was called with ``groups=None``: the model has no random effects."""


class SingularFitWarning(UserWarning):
    """The optimum lies on the boundary: a variance is zero or a correlation is +/-1."""


class MixedLMConvergenceWarning(ConvergenceWarning):
    """The solver stopped before its convergence rule held."""
