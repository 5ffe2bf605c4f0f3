"""Bad input gets a clear error naming the problem, never a crash from deep inside numpy."""

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedLMRegressor, NoGroupsWarning


def data(n_groups=6, per_group=5, seed=0):
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(n_groups)], per_group)
    X = pd.DataFrame({"a": rng.standard_normal(len(g)), "b": rng.uniform(0, 9, len(g))})
    idx = np.repeat(np.arange(n_groups), per_group)
    b0, b1 = 2.0 * rng.standard_normal(n_groups)[idx], rng.standard_normal(n_groups)[idx]
    y = 1.0 + (1.0 + b1) * X["a"] + 0.5 * X["b"] + b0 + 0.3 * rng.standard_normal(len(g))
    return X, y.to_numpy(), g


def with_nan(a, where=3):
    a = np.array(a, dtype=float)
    a.flat[where] = np.nan
    return a


X0, Y0, G0 = data()

# (case id, estimator params, fit args builder, expected exception, message pattern)
FIT_CASES = [
    ("nan-X", {}, lambda: (with_nan(X0), Y0, G0), ValueError, "X contains NaN"),
    ("inf-X", {}, lambda: (np.where(X0 > 1, np.inf, X0), Y0, G0), ValueError, "infinity"),
    ("nan-y", {}, lambda: (X0, with_nan(Y0), G0), ValueError, "y contains NaN"),
    ("inf-y", {}, lambda: (X0, np.r_[np.inf, Y0[1:]], G0), ValueError, "infinity"),
    (
        "nan-groups",
        {},
        lambda: (X0, Y0, np.r_[[np.nan], np.arange(len(Y0) - 1) // 5].astype(float)),
        ValueError,
        r"groups contains missing labels .* rows \[0\]",
    ),
    (
        "none-groups-label",
        {},
        lambda: (X0, Y0, np.r_[[None], G0[1:]].astype(object)),
        ValueError,
        "groups contains missing labels",
    ),
    (
        "inf-groups",
        {},
        lambda: (X0, Y0, np.r_[[np.inf], np.arange(len(Y0) - 1) // 5].astype(float)),
        ValueError,
        "groups contains infinite labels",
    ),
    ("short-y", {}, lambda: (X0, Y0[:-1], G0), ValueError, "inconsistent numbers of samples"),
    (
        "short-groups",
        {},
        lambda: (X0, Y0, G0[:-1]),
        ValueError,
        "groups has 29 entries but X has 30",
    ),
    (
        "2d-groups",
        {},
        lambda: (X0, Y0, np.c_[G0, G0]),
        ValueError,
        r"groups has 2 columns; several grouping factors need random_effects",
    ),
    (
        "string-column",
        {},
        lambda: (X0.assign(c=["u", "v"] * 15), Y0, G0),
        ValueError,
        r"non-numeric columns \['c'\]",
    ),
    (
        "object-array",
        {},
        lambda: (np.c_[X0.to_numpy(), ["u", "v"] * 15].astype(object), Y0, G0),
        ValueError,
        "non-numeric column at position 2",
    ),
    (
        "complex-X",
        {},
        lambda: (X0.to_numpy() + 1j, Y0, G0),
        ValueError,
        "X contains complex numbers",
    ),
    (
        "missing-slope-name",
        {"random_slopes": ["bb"]},
        lambda: (X0, Y0, G0),
        ValueError,
        r"random_slopes names column 'bb', which is not in X",
    ),
    (
        "slope-name-without-names",
        {"random_slopes": ["a"]},
        lambda: (X0.to_numpy(), Y0, G0),
        ValueError,
        "X has no column names",
    ),
    (
        "slope-position-out-of-range",
        {"random_slopes": [5]},
        lambda: (X0.to_numpy(), Y0, G0),
        ValueError,
        "random_slopes position 5 is out of range",
    ),
    (
        "one-group",
        {},
        lambda: (X0, Y0, np.full(len(Y0), "only")),
        ValueError,
        r"the random-effects term \(1 \| group\) has a single level",
    ),
    (
        "all-singleton-groups",
        {},
        lambda: (X0, Y0, np.arange(len(Y0))),
        ValueError,
        "number of rows must exceed the number of random effects",
    ),
    ("one-row", {}, lambda: (X0.iloc[:1], Y0[:1], G0[:1]), ValueError, "minimum of 2 is required"),
    ("empty", {}, lambda: (X0.iloc[:0], Y0[:0], G0[:0]), ValueError, "0 sample"),
    (
        "constant-column",
        {},
        lambda: (X0.assign(c=3.0), Y0, G0),
        ValueError,
        r"columns \['c'\] are constant or linear combinations",
    ),
    (
        "collinear-columns",
        {},
        lambda: (X0.assign(c=X0["a"] - 2 * X0["b"]), Y0, G0),
        ValueError,
        r"columns \['c'\] are constant or linear combinations",
    ),
    (
        "more-columns-than-rows",
        {},
        lambda: (np.random.default_rng(1).standard_normal((30, 40)), Y0, G0),
        ValueError,
        "30 rows for 41 fixed-effect columns",
    ),
    (
        "constant-y",
        {},
        lambda: (X0, np.full(len(Y0), 2.5), G0),
        ValueError,
        "y is fitted exactly by the fixed effects",
    ),
    (
        "group-constant-slope",
        {"random_slopes": ["c"]},
        lambda: (X0.assign(c=np.repeat(np.arange(6.0), 5) ** 2), Y0, G0),
        ValueError,
        r"random slope\(s\) \['c'\] of the term \(1 \+ c \| group\) "
        r"are constant within every level",
    ),
    (
        "huge-X",
        {},
        lambda: (X0.assign(a=X0["a"] * 1e300), Y0, G0),
        ValueError,
        "X has values too large to square",
    ),
    (
        "huge-y",
        {},
        lambda: (X0, Y0 * 1e200, G0),
        ValueError,
        "y has values too large to square",
    ),
    ("y-two-columns", {}, lambda: (X0, np.c_[Y0, Y0], G0), ValueError, "y should be a 1d array"),
]


@pytest.mark.parametrize(
    "params, make, exc, match", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES]
)
def test_fit_rejects(params, make, exc, match):
    X, y, g = make()
    copies = [np.array(a, copy=True) for a in (X, y, g)]
    with pytest.raises(exc, match=match):
        MixedLMRegressor(**params).fit(X, y, groups=g)
    for before, after in zip(copies, (X, y, g), strict=True):
        np.testing.assert_array_equal(before, np.asarray(after))  # input untouched


@pytest.fixture(scope="module")
def fitted():
    return MixedLMRegressor(random_slopes=["a"]).fit(X0, Y0, groups=G0)


# (case id, predict args builder, expected exception, message pattern)
PREDICT_CASES = [
    (
        "groups-wrong-length",
        lambda: (X0.iloc[:5], G0[:4]),
        ValueError,
        "groups has 4 entries but X has 5 rows",
    ),
    ("columns-reordered", lambda: (X0[["b", "a"]], G0), ValueError, "feature names"),
    ("column-missing", lambda: (X0[["a"]], G0), ValueError, "missing:\n- b"),
    (
        "nan-in-X",
        lambda: (X0.assign(a=np.r_[np.nan, X0["a"].to_numpy()[1:]]), G0),
        ValueError,
        "X contains NaN",
    ),
    (
        "missing-group-label",
        lambda: (X0, np.r_[[None], G0[1:]].astype(object)),
        ValueError,
        "groups contains missing labels",
    ),
]


@pytest.mark.parametrize(
    "make, exc, match", [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_rejects(fitted, make, exc, match):
    X, g = make()
    with pytest.raises(exc, match=match):
        fitted.predict(X, groups=g)


def test_predict_unseen_groups_work(fitted):
    new = np.array(["new1", "g0", "new2"])
    rows = X0.iloc[:3]
    pred = fitted.predict(rows, groups=new)
    population = fitted.predict(rows)
    assert pred[0] == population[0] and pred[2] == population[2]
    assert pred[1] != population[1]


def test_group_label_types_agree():
    """Integer, string and categorical labels of the same grouping give the same fit."""
    codes = np.repeat(np.arange(6), 5)
    fits = [
        MixedLMRegressor().fit(X0, Y0, groups=labels)
        for labels in (codes, codes.astype(str), pd.Categorical(codes), pd.Series(codes))
    ]
    for est in fits[1:]:
        assert est.log_likelihood_ == pytest.approx(fits[0].log_likelihood_, abs=1e-10)
        assert list(est.random_effects_) == list(fits[0].random_effects_) == ["group"]
        np.testing.assert_allclose(
            est.random_effects_["group"].to_numpy(), fits[0].random_effects_["group"].to_numpy()
        )


def test_y_column_vector_is_raveled_with_warning():
    from sklearn.exceptions import DataConversionWarning

    with pytest.warns(DataConversionWarning):
        est = MixedLMRegressor().fit(X0, Y0[:, None], groups=G0)
    ref = MixedLMRegressor().fit(X0, Y0, groups=G0)
    assert est.log_likelihood_ == ref.log_likelihood_


def test_no_groups_warns_and_fits_ols():
    with pytest.warns(NoGroupsWarning, match="enable_metadata_routing=True"):
        est = MixedLMRegressor().fit(X0, Y0)
    ols = np.linalg.lstsq(np.c_[np.ones(len(Y0)), X0], Y0, rcond=None)[0]
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_], ols, rtol=1e-10)
    assert est.random_effects_ == {}
    np.testing.assert_allclose(est.predict(X0, groups=G0), est.predict(X0))


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="covariance_type"):
        MixedLMRegressor(covariance_type="full").fit(X0, Y0, groups=G0)
    with pytest.raises(ValueError, match="solver"):
        MixedLMRegressor(solver="bfgs").fit(X0, Y0, groups=G0)
    with pytest.raises(ValueError, match="random_slopes lists a column twice"):
        MixedLMRegressor(random_slopes=["a", "a"]).fit(X0, Y0, groups=G0)


def test_predict_matches_labels_across_kinds():
    """Groups fitted as ints and given as strings at predict (or the reverse) still match."""
    codes = np.repeat(np.arange(6), 5)
    est_int = MixedLMRegressor().fit(X0, Y0, groups=codes)
    est_str = MixedLMRegressor().fit(X0, Y0, groups=codes.astype(str))
    expected = est_int.predict(X0, groups=codes)
    assert not np.allclose(expected, est_int.predict(X0))  # the random effects matter here
    np.testing.assert_allclose(est_int.predict(X0, groups=codes.astype(str)), expected)
    np.testing.assert_allclose(est_str.predict(X0, groups=codes), expected)
    np.testing.assert_allclose(est_str.predict(X0, groups=pd.Series(codes)), expected)


def test_predict_checks_groups_without_random_effects():
    with pytest.warns(NoGroupsWarning):
        est = MixedLMRegressor().fit(X0, Y0)
    with pytest.raises(ValueError, match="groups has 2 entries but X has 30 rows"):
        est.predict(X0, groups=["a", "b"])
