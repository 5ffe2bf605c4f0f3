"""``lmer(formula, data)``: lme4's call, as a thin wrapper over :class:`MixedLMRegressor`."""

from ._estimator import MixedLMRegressor


def lmer(formula, data, *, reml=True, weights=None, na_action="omit", **params):
    """Fit a linear mixed model from an lme4 formula, as ``lme4::lmer`` does.

    ``lmer(formula, data, reml=True)`` is
    ``MixedLMRegressor(formula=formula, reml=reml).fit(data)``: the returned estimator
    is an ordinary fitted scikit-learn estimator.

    Parameters
    ----------
    formula : str
        A two-sided lme4-style formula, for example
        ``"Reaction ~ Days + (Days | Subject)"`` (see the formulas page).
    data : DataFrame
        The data, with every column the formula names (pandas, polars, ...).
    reml : bool, default=True
        lme4's ``REML``: restricted maximum likelihood if true, else maximum
        likelihood.
    weights : array-like of shape (n_samples,), default=None
        lme4's ``weights``: precision weights, passed to ``fit`` as
        ``sample_weight``.
    na_action : {"omit", "raise"}, default="omit"
        lme4's ``na.action``: ``"omit"`` (R's ``na.omit``) leaves out the rows with a
        missing value in a variable of the formula, with a warning.
    **params
        Other parameters of :class:`MixedLMRegressor` (``solver``, ``tol``, ...).

    Returns
    -------
    MixedLMRegressor
        The fitted estimator.

    Examples
    --------
    >>> from sklmm import lmer
    >>> from sklmm.datasets import load_sleepstudy
    >>> fit = lmer("Reaction ~ Days + (Days | Subject)", load_sleepstudy())
    >>> fit.fixed_effects_.round(4).to_dict()
    {'(Intercept)': 251.4051, 'Days': 10.4673}
    """
    est = MixedLMRegressor(formula=formula, reml=reml, na_action=na_action, **params)
    return est.fit(data, sample_weight=weights)
