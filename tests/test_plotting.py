"""The caterpillar plot of the BLUPs and the plot of residuals versus fitted values.

Drawn with the Agg backend; every test closes its figures. The values drawn are read back
from the Axes (the errorbar container, the scatter offsets) and compared with the fitted
attributes of the estimator.
"""

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.exceptions import NotFittedError

from sklmm import MixedLMRegressor, NoGroupsWarning
from sklmm._plotting import plot_caterpillar, plot_residuals
from sklmm.datasets import load_sleepstudy

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def sleep():
    df = load_sleepstudy()
    return df[["Days"]], df["Reaction"], df["Subject"]


@pytest.fixture(scope="module")
def fitted(sleep):
    """lme4's ``Reaction ~ Days + (Days | Subject)`` by REML."""
    X, y, g = sleep
    return MixedLMRegressor(random_slopes=["Days"]).fit(X, y, groups=g)


@pytest.fixture(scope="module")
def fitted_no_groups(sleep):
    X, y, _ = sleep
    with pytest.warns(NoGroupsWarning):
        return MixedLMRegressor().fit(X, y)


def errorbars(ax):
    """The x values, y positions and interval half-widths of the single errorbar plot."""
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 1
    data_line, _, (bars,) = containers[0].lines
    segments = np.array(bars.get_segments())  # (n, 2 ends, (x, y))
    np.testing.assert_allclose(segments[:, 0, 1], segments[:, 1, 1])  # horizontal bars
    centres = segments[:, :, 0].mean(axis=1)
    np.testing.assert_allclose(centres, data_line.get_xdata())
    half = (segments[:, 1, 0] - segments[:, 0, 0]) / 2
    return np.asarray(data_line.get_xdata()), np.asarray(data_line.get_ydata()), half


def has_reference_line(ax, vertical):
    """Whether ``ax`` holds a straight line at 0 (``axvline`` or ``axhline``)."""
    for line in ax.get_lines():
        data = line.get_xdata() if vertical else line.get_ydata()
        if len(data) == 2 and np.allclose(np.asarray(data, dtype=float), 0.0):
            return True
    return False


def condvar(est, term):
    """The conditional covariances of the BLUPs of ``term`` as an (m, q, q) array, in the
    order of the levels of ``est.random_effects_[term]``."""
    blups = est.random_effects_[term]
    frame = est.random_effects_condvar_[term]
    return np.stack([frame.loc[level].to_numpy() for level in blups.index])


def tick_labels(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


# ---------------------------------------------------------------------------------------------
# plot_caterpillar
# ---------------------------------------------------------------------------------------------


def test_caterpillar_default_term_is_the_intercept(fitted):
    ax = plot_caterpillar(fitted)
    assert isinstance(ax, matplotlib.axes.Axes)

    blups = fitted.random_effects_["Subject"]["(Intercept)"].to_numpy()
    sd = np.sqrt(condvar(fitted, "Subject")[:, 0, 0])
    levels = fitted.random_effects_["Subject"].index
    order = np.argsort(blups)
    x, y, half = errorbars(ax)
    assert len(x) == len(levels) == 18
    np.testing.assert_allclose(x, blups[order])
    np.testing.assert_allclose(x, np.sort(blups))
    np.testing.assert_array_equal(y, np.arange(18))
    np.testing.assert_allclose(half, norm.ppf(0.975) * sd[order], rtol=1e-12)
    assert tick_labels(ax) == [str(g) for g in levels[order]]
    assert has_reference_line(ax, vertical=True)
    assert ax.get_xlabel() == "(Intercept)"
    assert ax.get_ylabel() == "Subject"  # the name of the groups Series given to fit
    assert "95%" in ax.get_title()


def test_caterpillar_slope_term_and_level(fitted):
    ax = plot_caterpillar(fitted, term="Days", level=0.8)
    blups = fitted.random_effects_["Subject"]["Days"].to_numpy()
    sd = np.sqrt(condvar(fitted, "Subject")[:, 1, 1])
    levels = fitted.random_effects_["Subject"].index
    order = np.argsort(blups)
    x, _, half = errorbars(ax)
    np.testing.assert_allclose(x, np.sort(blups))
    np.testing.assert_allclose(half, norm.ppf(0.9) * sd[order], rtol=1e-12)
    assert tick_labels(ax) == [str(g) for g in levels[order]]
    assert ax.get_xlabel() == "Days"
    assert "80%" in ax.get_title()


def test_caterpillar_unsorted_keeps_group_order(fitted):
    ax = plot_caterpillar(fitted, sort=False)
    x, _, half = errorbars(ax)
    np.testing.assert_allclose(x, fitted.random_effects_["Subject"]["(Intercept)"].to_numpy())
    np.testing.assert_allclose(half, norm.ppf(0.975) * np.sqrt(condvar(fitted, "Subject")[:, 0, 0]))
    assert tick_labels(ax) == [str(g) for g in fitted.random_effects_["Subject"].index]


def test_caterpillar_draws_into_given_axes(fitted):
    _, (left, right) = plt.subplots(1, 2)
    assert plot_caterpillar(fitted, ax=left) is left
    assert plot_caterpillar(fitted, term="Days", ax=right) is right
    assert len(plt.get_fignums()) == 1
    assert left.get_xlabel() == "(Intercept)" and right.get_xlabel() == "Days"


def test_caterpillar_new_figure_per_call(fitted):
    a, b = plot_caterpillar(fitted), plot_caterpillar(fitted)
    assert a.figure is not b.figure


def test_caterpillar_random_intercept_only(sleep):
    X, y, g = sleep
    est = MixedLMRegressor().fit(X, y, groups=g)
    x, _, half = errorbars(plot_caterpillar(est))
    np.testing.assert_allclose(x, np.sort(est.random_effects_["Subject"]["(Intercept)"].to_numpy()))
    assert np.all(half > 0)


def test_caterpillar_unfitted():
    with pytest.raises(NotFittedError):
        plot_caterpillar(MixedLMRegressor())


def test_caterpillar_without_random_effects(fitted_no_groups):
    with pytest.raises(ValueError, match="no random effects"):
        plot_caterpillar(fitted_no_groups)


@pytest.mark.parametrize("term", ["days", "Reaction", 0])
def test_caterpillar_unknown_term_names_the_available_ones(fitted, term):
    with pytest.raises(ValueError, match=r"unknown random-effect term.*\(Intercept\).*Days"):
        plot_caterpillar(fitted, term=term)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.5, np.nan, True, "0.95"])
def test_caterpillar_bad_level(fitted, level):
    with pytest.raises(ValueError, match="level must be"):
        plot_caterpillar(fitted, level=level)


def test_caterpillar_wrong_estimator(sleep):
    from sklearn.linear_model import LinearRegression

    X, y, _ = sleep
    with pytest.raises(TypeError, match="MixedLMRegressor"):
        plot_caterpillar(LinearRegression().fit(X, y))


# ---------------------------------------------------------------------------------------------
# plot_residuals
# ---------------------------------------------------------------------------------------------


def scatter_offsets(ax):
    assert len(ax.collections) == 1
    return np.asarray(ax.collections[0].get_offsets())


def test_residuals_conditional(fitted, sleep):
    X, y, g = sleep
    ax = plot_residuals(fitted, X, y, groups=g)
    assert isinstance(ax, matplotlib.axes.Axes)
    pred = fitted.predict(X, groups=g)
    offsets = scatter_offsets(ax)
    assert offsets.shape == (len(y), 2)
    np.testing.assert_allclose(offsets[:, 0], pred)
    np.testing.assert_allclose(offsets[:, 1], y.to_numpy() - pred)
    assert has_reference_line(ax, vertical=False)
    assert ax.get_xlabel() == "Fitted values (conditional)"
    assert ax.get_ylabel() == "Residuals"


def test_residuals_marginal_into_given_axes(fitted, sleep):
    X, y, _ = sleep
    _, ax = plt.subplots()
    assert plot_residuals(fitted, X, y.to_list(), ax=ax) is ax
    pred = fitted.intercept_ + X.to_numpy() @ fitted.coef_
    offsets = scatter_offsets(ax)
    np.testing.assert_allclose(offsets[:, 0], pred)
    np.testing.assert_allclose(offsets[:, 1], y.to_numpy() - pred)
    assert ax.get_xlabel() == "Fitted values (marginal)"


def test_residuals_model_without_random_effects(fitted_no_groups, sleep):
    X, y, g = sleep
    ax = plot_residuals(fitted_no_groups, X, y, groups=g)
    np.testing.assert_allclose(scatter_offsets(ax)[:, 1], y - fitted_no_groups.predict(X))
    assert ax.get_xlabel() == "Fitted values (marginal)"


def test_residuals_unfitted(sleep):
    X, y, g = sleep
    with pytest.raises(NotFittedError):
        plot_residuals(MixedLMRegressor(), X, y, groups=g)


def test_residuals_bad_y(fitted, sleep):
    X, y, g = sleep
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        plot_residuals(fitted, X, y[:-1], groups=g)
    with pytest.raises(ValueError, match="NaN"):
        plot_residuals(fitted, X, np.where(np.arange(len(y)) == 3, np.nan, y), groups=g)


# ---------------------------------------------------------------------------------------------
# matplotlib is optional and imported lazily
# ---------------------------------------------------------------------------------------------


def test_importing_sklmm_does_not_import_matplotlib():
    code = "import sys, sklmm, sklmm._plotting; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("plot", ["caterpillar", "residuals"])
def test_missing_matplotlib_says_how_to_install(fitted, sleep, monkeypatch, plot):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # `import` now fails
    X, y, g = sleep
    with pytest.raises(ImportError, match=r"pip install sklmm\[plot\]"):
        if plot == "caterpillar":
            plot_caterpillar(fitted)
        else:
            plot_residuals(fitted, X, y, groups=g)


def test_caterpillar_and_residuals_of_a_several_term_model():
    from sklmm.datasets import load_pastes

    df = load_pastes()
    est = MixedLMRegressor(random_effects="(1 | batch/cask)").fit(
        df[[]], df["strength"], groups=df[["batch", "cask"]]
    )
    ax = plot_caterpillar(est, factor="batch:cask")
    points = ax.containers[0].lines[0].get_xdata()
    want = est.random_effects_["batch:cask"]["(Intercept)"].to_numpy()
    np.testing.assert_allclose(np.sort(points), np.sort(want))
    assert ax.get_ylabel() == "batch:cask"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 30 and all(":" in t for t in labels)
    ax = plot_caterpillar(est)  # the first term, batch
    assert len(ax.get_yticklabels()) == 10
    with pytest.raises(ValueError, match=r"unknown random-effects factor 'cask'.*\['batch'"):
        plot_caterpillar(est, factor="cask")
    ax = plot_residuals(est, df[[]], df["strength"], groups=df[["batch", "cask"]])
    fitted = ax.collections[0].get_offsets()[:, 0]
    np.testing.assert_allclose(fitted, est.predict(df[[]], groups=df[["batch", "cask"]]))
    assert ax.get_xlabel() == "Fitted values (conditional)"
    vc = MixedLMRegressor().fit(df[[]], df["strength"], variance_components=df[["batch"]])
    ax = plot_residuals(vc, df[[]], df["strength"], variance_components=df[["batch"]])
    assert ax.get_xlabel() == "Fitted values (conditional)"
    plt.close("all")
