"""Diagnostic plots of a fitted :class:`~sklmm.MixedLMRegressor` (matplotlib, optional).

matplotlib is an optional dependency (``pip install sklmm[plot]``): it is imported inside
the functions, never when :mod:`sklmm` is imported.
"""

from numbers import Real

import numpy as np
from scipy.stats import norm
from sklearn.utils import check_consistent_length, column_or_1d
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["plot_caterpillar", "plot_profile", "plot_residuals"]


def _pyplot():
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "sklmm's plotting functions need matplotlib, which is not installed. "
            "Install it with `pip install sklmm[plot]` (or `pip install matplotlib`)."
        ) from exc
    return plt


def _random_effects(estimator, factor=None):
    """The fitted BLUPs of one term and their conditional covariances, with clear errors."""
    check_is_fitted(estimator)
    if not hasattr(estimator, "random_effects_") or not hasattr(
        estimator, "random_effects_condvar_"
    ):
        raise TypeError(
            "plot_caterpillar needs a fitted sklmm.MixedLMRegressor (with random_effects_ "
            f"and random_effects_condvar_), got {type(estimator).__name__}"
        )
    blups, condvar = estimator.random_effects_, estimator.random_effects_condvar_
    if not blups:
        raise ValueError(
            "the model has no random effects (it was fitted with groups=None), so there "
            "are no BLUPs to plot; fit it with groups=... first"
        )
    if factor is None:
        factor = next(iter(blups))
    if factor not in blups:
        raise ValueError(
            f"unknown random-effects factor {factor!r}; the model's terms are {list(blups)}"
        )
    table = blups[factor]
    m, q = table.shape
    return table, condvar[factor].to_numpy().reshape(m, q, q)


def plot_caterpillar(estimator, term=None, level=0.95, ax=None, sort=True, factor=None):
    """Caterpillar plot of the BLUPs of one random effect, with intervals.

    One point per group: the conditional mode (BLUP) of the random effect
    ``term``, with a horizontal bar for the ``level`` interval
    ``b_hat +/- z * sqrt(condvar)`` from its conditional variance
    (``z = norm.ppf((1 + level) / 2)``), and a vertical line at 0. This is
    lme4's ``dotplot(ranef(fit, condVar = TRUE))``, one panel per call.

    Parameters
    ----------
    estimator : MixedLMRegressor
        A fitted estimator with random effects (fitted with ``groups``).
    term : str, default=None
        Name of the random-effect column to plot, a column of
        ``estimator.random_effects_[factor]``: ``"(Intercept)"`` or the name of a
        random slope. ``None`` plots the first column, ``"(Intercept)"``.
    level : float, default=0.95
        Coverage of the normal intervals, strictly between 0 and 1.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw into. ``None`` draws into a new figure
        (``matplotlib.pyplot.subplots``) whose height grows with the number
        of groups.
    sort : bool, default=True
        Order the groups by the plotted BLUP (smallest at the bottom), as
        lme4 does. ``False`` keeps the order of the BLUP table's index.
    factor : str, default=None
        The random-effects term to plot: a key of ``estimator.random_effects_``
        (``None``: the first term).

    Returns
    -------
    ax : matplotlib.axes.Axes
        The Axes holding the plot: an ``errorbar`` container whose points are
        the BLUPs (x) at positions ``0, ..., n_groups - 1`` (y), labelled with
        the group names.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        If the model has no random effects, ``factor`` or ``term`` is not one
        of its terms or random-effect columns, or ``level`` is not in (0, 1).
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    plot_residuals : Residuals against fitted values.

    Notes
    -----
    The intervals are conditional on the estimated variance parameters, as
    lme4's: they ignore the uncertainty in those parameters and in the fixed
    effects.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklmm import MixedLMRegressor
    >>> from sklmm import plot_caterpillar
    >>> from sklmm.datasets import load_sleepstudy
    >>> df = load_sleepstudy()
    >>> est = MixedLMRegressor(random_slopes=["Days"])
    >>> est = est.fit(df[["Days"]], df["Reaction"], groups=df["Subject"])
    >>> ax = plot_caterpillar(est, term="Days")
    >>> ax.get_xlabel()
    'Days'
    >>> plt.close(ax.figure)
    """
    blups, condvar = _random_effects(estimator, factor)
    names = list(blups.columns)
    if term is None:
        term = names[0]
    if not isinstance(term, str) or term not in names:
        raise ValueError(f"unknown random-effect term {term!r}; the model has {names}")
    if (
        isinstance(level, bool)
        or not isinstance(level, Real)
        or not np.isfinite(level)
        or not 0 < level < 1
    ):
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    plt = _pyplot()

    j = names.index(term)
    values = blups.iloc[:, j].to_numpy(dtype=float)
    # Clip the rounding noise of a (near) zero conditional variance at a boundary fit.
    half = norm.ppf(0.5 + level / 2) * np.sqrt(np.clip(condvar[:, j, j], 0.0, None))
    labels = [":".join(map(str, g)) if isinstance(g, tuple) else str(g) for g in blups.index]
    order = np.argsort(values, kind="stable") if sort else np.arange(len(values))
    pos = np.arange(len(values))

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, max(3.0, 1.2 + 0.22 * len(values))))
    ax.axvline(0.0, color="0.5", linestyle="--", linewidth=1)
    ax.errorbar(
        values[order],
        pos,
        xerr=half[order],
        fmt="o",
        markersize=4,
        capsize=2,
        label=f"BLUP and {100 * level:g}% interval",
    )
    ax.set_yticks(pos, [labels[i] for i in order])
    ax.set_ylim(-0.5, len(values) - 0.5)
    ax.set_xlabel(term)
    index_names = [n for n in blups.index.names if n is not None]
    ax.set_ylabel(":".join(index_names) or "group")
    ax.set_title(f"Random effects: {term} ({100 * level:g}% conditional intervals)")
    return ax


def plot_residuals(estimator, X, y=None, groups=None, ax=None, variance_components=None):
    """Residuals against fitted values.

    Scatter plot of ``y - estimator.predict(X, groups=groups)`` against
    ``estimator.predict(X, groups=groups)``, with a horizontal line at 0.

    Parameters
    ----------
    estimator : MixedLMRegressor
        A fitted estimator.
    X : array-like of shape (n_samples, n_features)
        Fixed-effect covariates, as for :meth:`MixedLMRegressor.predict` (for a model
        fitted from a formula: the data, whose grouping factors give conditional
        fitted values).
    y : array-like of shape (n_samples,), default=None
        Observed response; with a two-sided formula, ``None`` reads it from ``X``.
        Required without a formula.
    groups : array-like of shape (n_samples,) or DataFrame, default=None
        Group labels, as for :meth:`MixedLMRegressor.predict`. With them, the
        rows of groups seen in ``fit`` get conditional fitted values
        ``X beta + Z b_hat`` (lme4's ``plot(fit)``); ``None`` plots the
        marginal residuals ``y - X beta``.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw into. ``None`` draws into a new figure
        (``matplotlib.pyplot.subplots``).
    variance_components : array-like or DataFrame, default=None
        Labels of the variance components, as for
        :meth:`MixedLMRegressor.predict`.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The Axes holding the plot: one scatter collection whose offsets are
        the (fitted value, residual) pairs, in the order of the rows.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        If ``y`` is not 1-D, not finite, or not as long as ``X``.
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    plot_caterpillar : BLUPs of the random effects with intervals.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklmm import MixedLMRegressor
    >>> from sklmm import plot_residuals
    >>> from sklmm.datasets import load_sleepstudy
    >>> df = load_sleepstudy()
    >>> X, y, g = df[["Days"]], df["Reaction"], df["Subject"]
    >>> est = MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)
    >>> ax = plot_residuals(est, X, y, groups=g)
    >>> ax.get_ylabel()
    'Residuals'
    >>> plt.close(ax.figure)
    """
    check_is_fitted(estimator)
    if hasattr(estimator, "_family_"):
        raise TypeError(
            "plot_residuals draws the residuals of a linear mixed model; a GLMM's raw "
            "residuals y - mu are not comparable across rows (their variance is the "
            "family's). Plot its Pearson or deviance residuals yourself."
        )
    formula = getattr(estimator, "_from_formula", False)
    if formula:
        # The data hold the grouping factors (and the response, unless y is given); rows
        # with missing values are left out with a MissingDataWarning.
        y, fitted, _ = estimator._formula_targets(X, y, None, "plot_residuals")
    elif y is None:
        raise ValueError("plot_residuals needs y (the response) for a model without a formula")
    else:
        y = column_or_1d(check_array(y, ensure_2d=False, dtype=np.float64, input_name="y"))
        labels = {"groups": groups}
        if variance_components is not None:
            labels["variance_components"] = variance_components
        fitted = estimator.predict(X, **labels)
    fitted = np.asarray(fitted, dtype=float)
    check_consistent_length(fitted, y)
    residuals = y - fitted
    plt = _pyplot()

    if ax is None:
        _, ax = plt.subplots()
    ax.scatter(fitted, residuals, s=12, alpha=0.7)
    ax.axhline(0.0, color="0.5", linestyle="--", linewidth=1)
    n_random = len(getattr(estimator, "random_effects_", {}))
    given = formula or groups is not None or variance_components is not None
    random = given and n_random > 0
    ax.set_xlabel("Fitted values (conditional)" if random else "Fitted values (marginal)")
    ax.set_ylabel("Residuals")
    ax.set_title("Residuals vs fitted")
    return ax


def plot_profile(estimator, alpha=0.05, profiles=None):
    """The likelihood profiles of every parameter: lme4's ``xyplot(profile(fit))``.

    One panel per parameter: ``zeta`` (the signed square root of the likelihood-ratio
    statistic, on the ML deviance) against the parameter's value, with the horizontal
    lines ``+/- z_{1-alpha/2}`` whose crossings are the profile intervals of
    ``estimator.conf_int("profile", alpha)``. A profile close to a straight line means
    the Wald interval is close to the profile one.

    Parameters
    ----------
    estimator : MixedLMRegressor
        A fitted estimator.
    alpha : float, default=0.05
        One minus the confidence level of the lines (and how far the profiles go).
    profiles : pandas.DataFrame, default=None
        ``estimator.profile(alpha)``, if already computed.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One Axes per parameter, titled with lme4's parameter name.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklmm import lmer, plot_profile
    >>> from sklmm.datasets import load_dyestuff
    >>> fit = lmer("Yield ~ 1 + (1 | Batch)", load_dyestuff())
    >>> fig = plot_profile(fit)
    >>> [ax.get_title() for ax in fig.axes]
    ['(Intercept)', 'sd_(Intercept)|Batch', 'sigma']
    >>> plt.close(fig)
    """
    check_is_fitted(estimator)
    if profiles is None:
        profiles = estimator.profile(alpha)
    plt = _pyplot()
    names = list(dict.fromkeys(profiles["parameter"]))
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), squeeze=False)
    crit = norm.ppf(1 - alpha / 2)
    for ax, name in zip(axes.ravel(), names, strict=False):
        part = profiles[profiles["parameter"] == name].sort_values("value")
        ax.plot(part["value"], part["zeta"], "-o", markersize=3)
        for level in (-crit, 0.0, crit):
            ax.axhline(level, color="0.6", linestyle="--" if level else ":", linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("value")
        ax.set_ylabel("zeta")
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
