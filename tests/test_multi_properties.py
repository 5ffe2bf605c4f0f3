"""Invariances of several-term fits, checked with hypothesis on generated crossed designs.

Random crossed and nested designs with unbalanced, incomplete cells: row order, level
relabelling (the BLUPs follow their labels), ``y -> a y + c``, and agreement of the
variance-components and specification forms on every generated design.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from _simulate import nested_crossed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sklmm import MixedLMRegressor, SingularFitWarning

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def crossed_data(draw):
    """Two crossed factors (some cells empty) and a factor nested in the first."""
    seed = draw(st.integers(0, 2**31 - 1))
    n_a, n_b = draw(st.integers(4, 10)), draw(st.integers(3, 8))
    n = draw(st.integers(3 * (n_a + n_b), 120))
    sd = draw(st.tuples(st.floats(0.3, 2.0), st.floats(0.3, 2.0), st.floats(0.0, 1.0)))
    X, y, labels = nested_crossed(seed, n_a, n_b, n, sd)
    return X, y, labels, np.random.default_rng(seed + 1)


SPEC = "(1 | a) + (1 | b) + (1 | a:c)"


def fit(X, y, labels):
    est = MixedLMRegressor(random_effects=SPEC)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)  # boundary fits are legitimate
        return est.fit(X, y, groups=labels)


def assert_same_fit(a, b, scale=1.0):
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, rel=1e-9, abs=1e-6)
    np.testing.assert_allclose(a.coef_, b.coef_ * scale, rtol=1e-5, atol=1e-6 * scale)
    va, vb = a.variance_components_.to_numpy(), b.variance_components_.to_numpy() * scale**2
    np.testing.assert_allclose(va, vb, rtol=1e-3, atol=1e-4 * scale**2 * max(1.0, vb.max()))


@SETTINGS
@given(crossed_data())
def test_row_order_invariance(data):
    X, y, labels, rng = data
    perm = rng.permutation(len(y))
    a = fit(X, y, labels)
    b = fit(X.iloc[perm], y.iloc[perm], labels.iloc[perm])
    assert_same_fit(a, b)
    for name in a.random_effects_:
        pd.testing.assert_frame_equal(
            a.random_effects_[name], b.random_effects_[name], rtol=1e-3, atol=1e-4
        )


@SETTINGS
@given(crossed_data())
def test_relabelled_levels_carry_their_blups(data):
    X, y, labels, rng = data
    names = labels["a"].unique()
    new_names = dict(zip(names, rng.permutation([f"z{i}" for i in range(len(names))]), strict=True))
    relabelled = labels.assign(a=labels["a"].map(new_names))
    a, b = fit(X, y, labels), fit(X, y, relabelled)
    assert_same_fit(a, b)
    ba = a.random_effects_["a"].rename(index=new_names).sort_index()
    pd.testing.assert_frame_equal(ba, b.random_effects_["a"].sort_index(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(
        a.predict(X, groups=labels), b.predict(X, groups=relabelled), rtol=1e-5, atol=1e-5
    )


@SETTINGS
@given(crossed_data(), st.floats(1e-3, 1e3), st.floats(-100, 100))
def test_affine_response(data, scale, shift):
    X, y, labels, _ = data
    a, b = fit(X, y * scale + shift, labels), fit(X, y, labels)
    n, p = len(y), 2
    assert a.log_likelihood_ == pytest.approx(
        b.log_likelihood_ - (n - p) * np.log(scale), rel=1e-9, abs=1e-6
    )
    np.testing.assert_allclose(a.coef_, b.coef_ * scale, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(
        a.predict(X, groups=labels),
        b.predict(X, groups=labels) * scale + shift,
        rtol=1e-6,
        atol=1e-4 * scale,
    )


@SETTINGS
@given(crossed_data())
def test_forms_agree(data):
    # The specification and crossed variance components with an explicit a:c column.
    X, y, labels, _ = data
    spec = fit(X, y, labels)
    components = pd.DataFrame(
        {"a": labels["a"], "b": labels["b"], "a:c": labels["a"] + ":" + labels["c"].astype(str)}
    )
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        vc = MixedLMRegressor().fit(X, y, variance_components=components)
    assert vc.log_likelihood_ == pytest.approx(spec.log_likelihood_, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(
        vc.variance_components_.to_numpy(),
        spec.variance_components_.to_numpy(),
        rtol=1e-9,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        vc.predict(X, variance_components=components),
        spec.predict(X, groups=labels),
        rtol=1e-9,
        atol=1e-9,
    )
