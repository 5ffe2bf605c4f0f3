"""Fits from lme4 formulas checked against lme4.

Two sets of cases:

* every case of ``tests/reference/*/spec.json`` (the matrix-path reference cases),
  fitted from its lme4 formula on the model-frame columns of ``data.csv``;
* ``tests/reference/formulas/``: formulas with factors (treatment and polynomial
  contrasts), factor random slopes with and without the intercept, lme4's ``||`` on a
  factor, a random slope that is not a fixed effect, orthogonal polynomials, ``I()``,
  and missing data (``na.omit``); ``make.R`` there wrote ``lme4.json``.

Tolerances are those of the matrix-path reference tests.
"""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from _reference import REFERENCE

from sklmm import MissingDataWarning, MixedLMRegressor, SingularFitWarning

FORMULAS = json.loads((REFERENCE / "formulas" / "lme4.json").read_text())
MATRIX_CASES = sorted(p.parent.name for p in REFERENCE.glob("*/spec.json"))


def r_name(name):
    """formulaic's column name in R's spelling: ``x[T.b]`` -> ``xb``, ``x[.L]`` -> ``x.L``."""
    name = name.replace("[T.", "").replace("[", "").replace("]", "").replace(" ** ", "^")
    return "(Intercept)" if name == "Intercept" else name


def _list(v):
    """A JSON field as a list (R's jsonlite writes a length-one vector as a scalar)."""
    return v if isinstance(v, list) else [v]


def _typed(frame, factors):
    """R's factor levels as pandas categoricals (ordered factors as ordered ones)."""
    frame = frame.copy()
    for col, spec in factors.items():
        values = frame[col].astype(str)
        frame[col] = pd.Categorical(values, categories=spec["levels"], ordered=spec["ordered"])
    return frame


def _fit(formula, train, reml, sample_weight=None, singular=False):
    est = MixedLMRegressor(formula=formula, reml=reml, tol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDataWarning)
        if singular:
            with pytest.warns(SingularFitWarning):
                est.fit(train, sample_weight=sample_weight)
        else:
            est.fit(train, sample_weight=sample_weight)
    return est


def _check_fit(est, ref, fixef, terms):
    assert est.converged_
    assert est.log_likelihood_ >= ref["logLik"] - 1e-6
    assert est.log_likelihood_ == pytest.approx(ref["logLik"], abs=1e-4)
    got = est.fixed_effects_.rename(r_name)
    assert sorted(got.index) == sorted(_list(fixef["names"]))
    want = pd.Series(_list(fixef["values"]), index=_list(fixef["names"]))
    np.testing.assert_allclose(got[want.index], want, rtol=1e-4, atol=1e-6 * want.abs().max())
    assert est.residual_variance_ == pytest.approx(ref["sigma2"], rel=1e-3)
    for name, (columns, cov) in terms.items():
        columns = _list(columns)
        mine = est.random_effects_cov_[name].rename(index=r_name, columns=r_name)
        got = mine.loc[columns, columns].to_numpy()
        cov = np.asarray(cov, dtype=float)
        zero = np.abs(cov) < 1e-6 * max(1.0, np.abs(cov).max())
        np.testing.assert_allclose(got[~zero], cov[~zero], rtol=1e-3)
        np.testing.assert_allclose(got[zero], 0.0, atol=1e-6 * max(1.0, np.abs(cov).max()))


# -- the matrix-path reference cases, from their formulas -----------------------------


def _matrix_case(name):
    folder = REFERENCE / name
    spec = json.loads((folder / "spec.json").read_text())
    lme4 = json.loads((folder / "lme4.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype={c: str for c in spec["group_columns"]})
    data = data[[c for c in data.columns if not c.startswith("X:")]]
    return spec, lme4, data


@pytest.fixture(scope="module", params=MATRIX_CASES)
def matrix_case(request):
    spec, ref, data = _matrix_case(request.param)
    if request.param.startswith("orthodont"):  # nlme's factor order: Male first
        data = _typed(data, {"Sex": {"levels": ["Male", "Female"], "ordered": False}})
    train, test = data[data["split"] == "train"], data[data["split"] == "test"]
    weights = spec.get("weights")
    w = None if weights is None else train[weights["column"]].to_numpy()
    est = _fit(spec["formula"], train, spec["reml"], w, singular=ref["isSingular"])
    return spec, ref, est, test


def test_matrix_cases_from_formula(matrix_case):
    spec, ref, est, _ = matrix_case
    assert len(est.terms_) == len(spec["random"])
    terms = {}
    for k, term in enumerate(spec["random"]):
        group = term["group"] if isinstance(term["group"], str) else ":".join(term["group"])
        terms[group] = (ref["random_terms"][k]["columns"], ref["random_terms"][k]["cov"])
    _check_fit(est, ref, ref["fixef"], terms)


def test_matrix_cases_predictions(matrix_case):
    # predict(fit, newdata, allow.new.levels = TRUE) and re.form = NA
    spec, ref, est, test = matrix_case
    pred = ref["predictions"]
    rows = test.set_index("row_id").loc[pred["row_id"]]
    np.testing.assert_allclose(est.predict(rows), pred["conditional"], rtol=1e-4)
    population = rows.drop(columns=spec["group_columns"])
    np.testing.assert_allclose(est.predict(population), pred["population"], rtol=1e-4)


# -- the formula cases -------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(FORMULAS))
def formula_case(request):
    ref = FORMULAS[request.param]
    data = pd.read_csv(REFERENCE / "formulas" / f"{request.param}.csv", keep_default_na=True)
    for col in data.columns:
        if data[col].dtype == object:
            data[col] = data[col].astype(str).where(data[col].notna())
    data = _typed(data, ref["factors"] or {})
    train, test = data[data["split"] == "train"], data[data["split"] == "test"]
    est = _fit(ref["py_formula"], train, ref["reml"], singular=ref["isSingular"])
    return request.param, ref, est, train, test


def test_formula_cases(formula_case):
    _, ref, est, train, _ = formula_case
    terms = {}
    for t in ref["terms"]:
        terms[t["group"]] = ([r_name(c) for c in _list(t["columns"])], t["cov"])
    _check_fit(est, ref, ref["fixef"], terms)
    se = np.sqrt(np.diag(est.fixed_effects_cov_))
    names = list(est.fixed_effects_.rename(r_name).index)
    order = [names.index(n) for n in _list(ref["fixef"]["names"])]
    np.testing.assert_allclose(se[order], _list(ref["se_fixef"]), rtol=1e-3)
    assert est.n_rows_dropped_ == len(ref["dropped_row_ids"])
    dropped = train.loc[est.rows_dropped_, "row_id"].tolist()
    assert dropped == ref["dropped_row_ids"]


def test_formula_cases_fitted_and_predictions(formula_case):
    # fitted(fit); predict(fit, newdata, allow.new.levels = TRUE) and re.form = NA
    _, ref, est, train, test = formula_case
    fitted = ref["fitted"]
    rows = train.set_index("row_id").loc[fitted["row_id"]]
    np.testing.assert_allclose(est.predict(rows), fitted["values"], rtol=1e-5)
    pred = ref["predictions"]
    rows = test.set_index("row_id").loc[pred["row_id"]]
    np.testing.assert_allclose(est.predict(rows), pred["conditional"], rtol=1e-5)
    labels = [c for c in est._design.labels_only]
    np.testing.assert_allclose(
        est.predict(rows.drop(columns=labels)), pred["population"], rtol=1e-5
    )


def test_missing_rows_dropped_as_lme4():
    # lme4 drops the rows with a missing value in a variable of the formula (Reaction,
    # Days or Subject), not those missing only in an unused column.
    ref = FORMULAS["sleep_na_reml"]
    data = pd.read_csv(REFERENCE / "formulas" / "sleep_na_reml.csv")
    data["Subject"] = data["Subject"].astype("Int64").astype(str).where(data["Subject"].notna())
    train = data[data["split"] == "train"]
    est = MixedLMRegressor(formula=ref["py_formula"])
    with pytest.warns(MissingDataWarning, match="6 of 155 rows"):
        est.fit(train)
    assert train.loc[est.rows_dropped_, "row_id"].tolist() == ref["dropped_row_ids"]
    assert est.log_likelihood_ == pytest.approx(ref["logLik"], abs=1e-4)
    with pytest.raises(
        ValueError,
        match=r"6 row\(s\) .* \{'Reaction': 3, 'Days': 2, 'Subject': 1\} \(na_action='raise'\)",
    ):
        MixedLMRegressor(formula=ref["py_formula"], na_action="raise").fit(train)
    # rows with missing values get NaN predictions, and are left out of the score
    with pytest.warns(MissingDataWarning, match="gives them NaN"):
        pred = est.predict(train)
    assert np.isnan(pred).sum() == 3  # the rows missing Days or Subject; y is not needed
    with pytest.warns(MissingDataWarning, match="leaves them out"):
        score = est.score(train)
    keep = ~np.isnan(pred) & train["Reaction"].notna().to_numpy()
    y = train["Reaction"].to_numpy()[keep]
    assert score == pytest.approx(1 - np.sum((y - pred[keep]) ** 2) / np.sum((y - y.mean()) ** 2))


def test_r_name():
    assert r_name("recipe[T.B]:temperature[.L]") == "recipeB:temperature.L"
    assert r_name("temperature[^4]") == "temperature^4"
    assert r_name("poly(Days, 2)[1]") == "poly(Days, 2)1"
    assert r_name("I(Days ** 2)") == "I(Days^2)"
    assert re.fullmatch(r"Machine\w", r_name("Machine[A]"))
