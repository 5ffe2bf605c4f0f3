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


class SeparationWarning(UserWarning):
    """A GLMM's fixed effects separate the outcomes: some estimates diverge."""


class MissingDataWarning(UserWarning):
    """Rows with missing values in a formula's variables were left out (``na_action="omit"``).

    In ``fit`` they are left out of the model, as lme4's default ``na.action = na.omit``;
    in ``predict`` they get ``NaN``; in ``score`` they are left out of the score.
    """


class MixedLMConvergenceWarning(ConvergenceWarning):
    """The solver stopped before its convergence rule held."""


#: Packages whose frames a warning skips on its way to the user's line: sklmm, the
#: libraries that call it (scikit-learn, joblib, Dask), and the standard library.
_SKIPPED = frozenset({"sklmm", "sklearn", "joblib", "dask", "distributed", "threadpoolctl"})


def _outside_frame_depth():
    """Stack level of the first frame outside sklmm, its callers' libraries and the stdlib.

    Frames are told by their module's package name (not by file paths, which differ
    between virtual environments and installations).
    """
    import sys

    skip = _SKIPPED | set(getattr(sys, "stdlib_module_names", ()))
    frame, level = sys._getframe(2), 2
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        if module.partition(".")[0] not in skip:
            break
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 1


def warn_user(message, category):
    """Warn with the warning pointing at the user's line (not into sklmm or scikit-learn)."""
    import warnings

    warnings.warn(message, category, stacklevel=_outside_frame_depth())


def warn_lost_levels(lost):
    """The :class:`ZeroWeightWarning` for levels whose rows all have weight 0 (if any)."""
    if lost:
        warn_user(
            "sample_weight is 0 on every row of some levels, which are left out of the fit "
            f"(by term: {lost}); predict treats them as new levels.",
            ZeroWeightWarning,
        )
