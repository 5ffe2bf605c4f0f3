"""Classic mixed-model datasets, bundled for examples and documentation.

Each loader returns the full original data as a :class:`pandas.DataFrame`,
exported from the R packages lme4 (1.1-31) and nlme (3.1-162).
"""

from importlib import resources

import pandas as pd

__all__ = [
    "load_cbpp",
    "load_dyestuff",
    "load_orthodont",
    "load_pastes",
    "load_penicillin",
    "load_sleepstudy",
]


def _load(name, categorical):
    with resources.files(__name__).joinpath("data", f"{name}.csv").open("r") as fh:
        frame = pd.read_csv(fh, dtype={c: str for c in categorical})
    return frame


def load_sleepstudy():
    """Reaction times under sleep deprivation (Belenky et al., 2003).

    180 rows: ``Reaction`` (ms), ``Days`` of deprivation (0-9), ``Subject``
    (18 levels, as strings). From lme4's ``sleepstudy``. Classic model:
    ``Reaction ~ Days + (Days | Subject)``.

    Returns
    -------
    pandas.DataFrame
    """
    return _load("sleepstudy", ["Subject"])


def load_dyestuff():
    """Yield of dyestuff by batch of an intermediate product (Davies, 1947).

    30 rows: ``Batch`` (6 levels), ``Yield``. From lme4's ``Dyestuff``.
    Classic model: ``Yield ~ 1 + (1 | Batch)``.

    Returns
    -------
    pandas.DataFrame
    """
    return _load("dyestuff", ["Batch"])


def load_penicillin():
    """Penicillin potency: 24 plates crossed with 6 samples (Davies, 1972).

    144 rows: ``diameter``, ``plate``, ``sample``. From lme4's
    ``Penicillin``. Classic model: ``diameter ~ 1 + (1 | plate) + (1 | sample)``.

    Returns
    -------
    pandas.DataFrame
    """
    return _load("penicillin", ["plate", "sample"])


def load_pastes():
    """Paste strength: casks nested in batches (Davies, 1972).

    60 rows: ``strength``, ``batch`` (10), ``cask`` (3 per batch), ``sample``.
    From lme4's ``Pastes``. Classic model: ``strength ~ 1 + (1 | batch/cask)``.

    Returns
    -------
    pandas.DataFrame
    """
    return _load("pastes", ["batch", "cask", "sample"])


def load_orthodont():
    """Orthodontic growth curves (Potthoff and Roy, 1964).

    108 rows: ``distance`` (mm), ``age`` (8-14), ``Subject`` (27), ``Sex``.
    From nlme's ``Orthodont``. Classic model:
    ``distance ~ age + Sex + (age | Subject)``.

    Returns
    -------
    pandas.DataFrame
    """
    return _load("orthodont", ["Subject", "Sex"])


def load_cbpp():
    """Contagious bovine pleuropneumonia in zebu herds (Lesnoff et al., 2004).

    56 rows: ``incidence`` (new cases in the period), ``size`` (herd size at the start of
    the period), ``period`` (1-4, as strings), ``herd`` (15 levels, as strings). From
    lme4's ``cbpp``. Classic model (binomial proportions, the sizes as trials):
    ``cbind(incidence, size - incidence) ~ period + (1 | herd)``, in sklmm
    ``MixedGLMRegressor(family="binomial", formula="I(incidence / size) ~ period +
    (1 | herd)").fit(df, sample_weight=df["size"])``.

    Returns
    -------
    pandas.DataFrame
    """
    return _load("cbpp", ["herd", "period"])
