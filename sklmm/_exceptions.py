"""Warning classes: one per situation, each saying what was seen and what to try."""

from sklearn.exceptions import ConvergenceWarning


class NoGroupsWarning(UserWarning):
    """Labels are missing where they matter.

    ``fit`` was called without ``groups`` (the model has no random effects), or a model
    with random effects was scored without them (the score is that of the population
    predictions).
    """


class SingularFitWarning(UserWarning):
    """The optimum lies on the boundary: a variance is zero or a correlation is +/-1."""


class ZeroWeightWarning(UserWarning):
    """Rows of zero ``sample_weight`` left some levels of a grouping factor without rows."""


class MixedLMConvergenceWarning(ConvergenceWarning):
    """The solver stopped before its convergence rule held."""


def _outside_frame_depth():
    """Stack level of the first frame outside sklmm, scikit-learn and the standard library."""
    import os
    import sys
    import sysconfig

    import sklearn

    skip = (
        os.path.dirname(os.path.abspath(__file__)),
        os.path.dirname(os.path.abspath(sklearn.__file__)),
        sysconfig.get_paths()["stdlib"],
    )
    frame, level = sys._getframe(2), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 1


def warn_user(message, category):
    """Warn with the warning pointing at the user's line (not into sklmm or scikit-learn)."""
    import warnings

    warnings.warn(message, category, stacklevel=_outside_frame_depth())
