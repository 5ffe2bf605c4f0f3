"""One model, one pipeline: the fitted attributes have one shape for every specification,
settings a model cannot honour are errors, and the package's layers import in one direction.
"""

import ast
import pathlib

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedLMRegressor, NoGroupsWarning

SPECS = {
    "one factor": ({}, ["g"]),
    "one factor with slope": ({"random_slopes": ["x"]}, ["g"]),
    "diagonal": ({"random_slopes": ["x"], "covariance_type": "diagonal"}, ["g"]),
    "(1 | g)": ({"random_effects": "(1 | g)"}, ["g"]),
    "(0 + x | g)": ({"random_effects": "(0 + x | g)"}, ["g"]),
    "(1 | g:h)": ({"random_effects": "(1 | g:h)"}, ["g", "h"]),
    "nested": ({"random_effects": "(1 | g/h)"}, ["g", "h"]),
    "crossed": ({"random_effects": "(1 | g) + (1 | c)"}, ["g", "c"]),
    "slopes on two factors": ({"random_effects": "(1 + x | g) + (1 + x | c)"}, ["g", "c"]),
    "variance components": ({"_vc": True}, ["g"]),
}


def _data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    g, h, c = rng.integers(0, 12, n), rng.integers(0, 3, n), rng.integers(0, 9, n)
    x = rng.normal(size=n)
    y = (
        1.0
        + x
        + rng.normal(size=12)[g]
        + 0.5 * rng.normal(size=12)[g] * x
        + rng.normal(size=(12, 3))[g, h]
        + rng.normal(size=9)[c]
        + 0.3 * rng.normal(size=9)[c] * x
        + rng.normal(size=n)
    )
    return pd.DataFrame({"x": x, "y": y, "g": g, "h": h, "c": [f"c{v}" for v in c]})


def _fit(params, factors, df):
    params = dict(params)
    if params.pop("_vc", False):
        return MixedLMRegressor(**params).fit(
            df[["x"]], df["y"], groups=df["g"], variance_components=df[["h"]]
        )
    groups = df[factors] if len(factors) > 1 else df[factors[0]]
    return MixedLMRegressor(**params).fit(df[["x"]], df["y"], groups=groups)


@pytest.mark.parametrize("kind", list(SPECS))
def test_fitted_attributes_have_one_shape(kind):
    df = _data()
    params, factors = SPECS[kind]
    est = _fit(params, factors, df)
    # per-term attributes: dicts keyed by term name, the same keys, labelled pandas values
    names = list(est.random_effects_)
    assert names and len(names) == len(est.terms_)
    for attr in ("random_effects_", "random_effects_cov_", "random_effects_condvar_"):
        value = getattr(est, attr)
        assert type(value) is dict, attr
        assert list(value) == names, attr
    for name in names:
        blups = est.random_effects_[name]
        cov = est.random_effects_cov_[name]
        condvar = est.random_effects_condvar_[name]
        assert isinstance(blups, pd.DataFrame)
        assert isinstance(cov, pd.DataFrame)
        assert isinstance(condvar, pd.DataFrame)
        effects = list(blups.columns)
        assert list(cov.index) == list(cov.columns) == effects
        assert list(condvar.columns) == effects
        # the conditional covariances are indexed by (level..., effect)
        assert condvar.index.names[:-1] == list(blups.index.names)
        assert condvar.index.names[-1] == "effect"
        assert len(condvar) == len(blups) * len(effects)
        level = blups.index[0]
        assert condvar.loc[level].shape == (len(effects), len(effects))
        # the index names are the factor names of the term's name
        assert ":".join(blups.index.names) == name.split(".")[0]
    # attributes that exist for one specification exist for all
    assert isinstance(est.variance_components_, pd.Series)
    assert set(est.variance_components_.index) <= set(names)
    for attr in ("groups_", "groups_name_", "random_slopes_idx_"):
        assert not hasattr(est, attr)
    assert isinstance(est.fit_log_, pd.DataFrame)
    assert list(est.fit_log_.columns[:7]) == [
        "phase",
        "iteration",
        "objective",
        "log_likelihood",
        "gradient_norm",
        "step_size",
        "residual_variance",
    ]
    assert est.fit_log_["objective"].iloc[-1] == pytest.approx(-2 * est.log_likelihood_, rel=1e-9)
    assert isinstance(est.n_iter_, int) and est.n_iter_ >= 0  # 0: the start is the optimum
    assert len(est.fit_log_) >= 1
    assert est.converged_


def test_one_naming_rule_across_forms():
    df = _data()
    X, y = df[["x"]], df["y"]
    by_spec = MixedLMRegressor(random_effects="(1 | g/h)").fit(X, y, groups=df[["g", "h"]])
    by_vc = MixedLMRegressor().fit(X, y, groups=df["g"], variance_components=df[["h"]])
    assert list(by_spec.random_effects_) == list(by_vc.random_effects_) == ["g", "g:h"]
    assert by_spec.terms_ == by_vc.terms_ == ("(1 | g)", "(1 | g:h)")
    assert by_vc.log_likelihood_ == pytest.approx(by_spec.log_likelihood_, rel=1e-10)
    pd.testing.assert_index_equal(
        by_vc.random_effects_["g:h"].index, by_spec.random_effects_["g:h"].index
    )
    slopes = MixedLMRegressor(random_slopes=["x"]).fit(X, y, groups=df["g"])
    spec = MixedLMRegressor(random_effects="(1 + x | g)").fit(X, y, groups=df[["g"]])
    assert list(slopes.random_effects_) == list(spec.random_effects_) == ["g"]
    # an unnamed array of groups is the factor "group"
    arr = MixedLMRegressor().fit(X, y, groups=df["g"].to_numpy())
    assert list(arr.random_effects_) == ["group"]


def test_solver_auto_and_lbfgs_agree():
    df = _data()
    X, y, g = df[["x"]], df["y"], df["g"]
    auto = MixedLMRegressor(random_slopes=["x"]).fit(X, y, groups=g)
    assert auto._fitted.opt.solver == "em-newton"
    lbfgs = MixedLMRegressor(random_slopes=["x"], solver="lbfgs").fit(X, y, groups=g)
    assert lbfgs._fitted.opt.solver == "lbfgs"
    assert set(lbfgs.fit_log_["phase"]) <= {"lbfgs", "polish"}
    assert lbfgs.log_likelihood_ == pytest.approx(auto.log_likelihood_, abs=1e-7)
    pd.testing.assert_frame_equal(
        lbfgs.random_effects_cov_["g"], auto.random_effects_cov_["g"], rtol=1e-4
    )
    several = MixedLMRegressor(random_effects="(1 | g) + (1 | c)").fit(X, y, groups=df[["g", "c"]])
    assert several._fitted.opt.solver == "lbfgs"


@pytest.mark.parametrize("solver", ["em-newton", "em", "newton"])
def test_solver_a_model_cannot_honour_is_an_error(solver):
    df = _data()
    est = MixedLMRegressor(random_effects="(1 | g) + (1 | c)", solver=solver)
    with pytest.raises(ValueError, match=r"solver='auto' or solver='lbfgs'"):
        est.fit(df[["x"]], df["y"], groups=df[["g", "c"]])
    assert not hasattr(est, "coef_")


@pytest.mark.parametrize(
    ("params", "factors"),
    [
        ({"solver": "lbfgs", "em_max_iter": 10}, ["g"]),
        ({"solver": "newton", "em_max_iter": 10}, ["g"]),
        ({"random_effects": "(1 | g) + (1 | c)", "em_max_iter": 10}, ["g", "c"]),
    ],
)
def test_em_max_iter_without_em_phase_is_an_error(params, factors):
    df = _data()
    groups = df[factors] if len(factors) > 1 else df[factors[0]]
    with pytest.raises(ValueError, match="em_max_iter=10 caps the EM phase"):
        MixedLMRegressor(**params).fit(df[["x"]], df["y"], groups=groups)


def test_em_max_iter_caps_the_em_phase():
    df = _data()
    est = MixedLMRegressor(random_slopes=["x"], em_max_iter=2).fit(
        df[["x"]], df["y"], groups=df["g"]
    )
    assert (est.fit_log_["phase"] == "em").sum() <= 3  # the iterate before each step, logged


def test_verbose_prints_for_every_solver(capsys):
    df = _data()
    MixedLMRegressor(random_effects="(1 | g) + (1 | c)", verbose=1).fit(
        df[["x"]], df["y"], groups=df[["g", "c"]]
    )
    out = capsys.readouterr().out
    assert "lbfgs" in out and "D=" in out
    MixedLMRegressor(verbose=1).fit(df[["x"]], df["y"], groups=df["g"])
    assert "newton" in capsys.readouterr().out


def test_score_keeps_scikit_learns_positional_order():
    df = _data()
    X, y, g = df[["x"]], df["y"], df["g"]
    est = MixedLMRegressor().fit(X, y, groups=g)
    w = np.linspace(1.0, 2.0, len(y))
    from sklearn.metrics import r2_score

    with pytest.warns(NoGroupsWarning, match="population predictions"):
        score = est.score(X, y, w)
    assert score == pytest.approx(r2_score(y, est.predict(X), sample_weight=w))
    assert est.score(X, y, w, groups=g) == pytest.approx(
        r2_score(y, est.predict(X, groups=g), sample_weight=w)
    )
    with pytest.raises(TypeError):
        est.predict(X, g, True)  # return_std is keyword-only


def _imports(path, package):
    """The sklmm modules a module imports (at any level of the file)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
    return out


def test_no_import_cycles_and_no_linear_algebra_in_the_estimator():
    root = pathlib.Path(__file__).resolve().parents[1] / "sklmm"
    graph = {p.stem: _imports(p, "sklmm") for p in root.glob("*.py")}
    graph = {k: {m for m in v if m in graph} for k, v in graph.items()}
    state = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", f"import cycle: {' -> '.join([*path, node])}"
        state[node] = "active"
        for dep in sorted(graph[node]):
            visit(dep, [*path, node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])
    source = (root / "_estimator.py").read_text()
    for word in ("np.linalg", "import scipy", "from scipy", "einsum", "cholesky", "solve("):
        assert word not in source, word


def test_lbfgs_without_random_effects_is_ols():
    from sklmm import NoGroupsWarning

    df = _data()
    with pytest.warns(NoGroupsWarning):
        lbfgs = MixedLMRegressor(solver="lbfgs").fit(df[["x"]], df["y"])
    with pytest.warns(NoGroupsWarning):
        auto = MixedLMRegressor().fit(df[["x"]], df["y"])
    assert lbfgs.log_likelihood_ == pytest.approx(auto.log_likelihood_, rel=1e-12)
    assert lbfgs.random_effects_ == {} and lbfgs.n_iter_ == 0


def test_max_iter_zero_is_honoured_by_lbfgs():
    from sklmm import MixedLMConvergenceWarning

    df = _data()
    est = MixedLMRegressor(random_effects="(1 | g) + (1 | c)", max_iter=0)
    with pytest.warns(MixedLMConvergenceWarning, match="after 0 iterations"):
        est.fit(df[["x"]], df["y"], groups=df[["g", "c"]])
    assert est.n_iter_ == 0 and not est.converged_
