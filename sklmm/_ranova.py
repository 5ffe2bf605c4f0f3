"""Likelihood-ratio tests of the random effects from the statistics (lmerTest's ``ranova``).

Each random-effects term is reduced in turn, as lmerTest does: a term with one column
is removed, and a term with several loses one column (``Days in (Days | Subject)``:
``(1 | Subject)``). The reduced model's statistics are the full model's with that
term's rows and columns left out (its cross-products with the data and with the other
terms included), so no refit reads the data; the likelihoods compared are those of the
fit's criterion (REML for a REML fit, lme4's ``anova(..., refit = FALSE)``).
"""

import dataclasses
import re

import numpy as np
import pandas as pd
from scipy import stats

from ._formula import INTERCEPT, Term, _quote
from ._optimize import optimize


def _drop_columns(model, k, drop):
    """The model with the columns ``drop`` of term ``k`` left out (all: the term)."""
    st = model.stats
    i = int(np.flatnonzero(st.order == k)[0])
    t = model.terms[k]
    terms, scales, shifts = list(model.terms), list(model.scales), list(model.shifts)
    if len(drop) == t.q:  # remove the term
        keep_sorted = [j for j in range(len(st.ZtZ)) if j != i]
        new_index = {old: new for new, old in enumerate(keep_sorted)}
        cross = {
            (new_index[a], new_index[b]): m for (a, b), m in st.cross.items() if a != i and b != i
        }
        order = np.array([o - (o > k) for o in st.order if o != k], dtype=int)
        counts = None if st.level_counts is None else [st.level_counts[j] for j in keep_sorted]
        new = dataclasses.replace(
            st,
            ZtZ=[st.ZtZ[j] for j in keep_sorted],
            ZtXy=[st.ZtXy[j] for j in keep_sorted],
            cross=cross,
            order=order,
            level_counts=counts,
        )
        del terms[k], scales[k], shifts[k]
        return dataclasses.replace(model, terms=terms, stats=new, scales=scales, shifts=shifts)
    keep = [j for j in range(t.q) if j not in drop]
    m = t.n_levels
    rows = (np.arange(m)[:, None] * t.q + np.array(keep)[None, :]).ravel()
    cross = {}
    for (a, b), mat in st.cross.items():
        if a == i:
            mat = mat[rows]
        if b == i:
            mat = mat[:, rows]
        cross[(a, b)] = mat
    ZtZ, ZtXy = list(st.ZtZ), list(st.ZtXy)
    ZtZ[i] = ZtZ[i][:, keep][:, :, keep]
    ZtXy[i] = ZtXy[i][:, keep, :]
    new = dataclasses.replace(st, ZtZ=ZtZ, ZtXy=ZtXy, cross=cross)
    columns = t.spec.columns
    gone = {columns[c] for c in drop}
    slopes = tuple(s for s in t.spec.slopes if s not in gone)
    intercept = t.spec.intercept and INTERCEPT not in gone
    spec = Term(t.spec.group, intercept, slopes, t.spec.covariance)
    slope_pos = [p for name, p in zip(t.spec.slopes, t.slopes, strict=True) if name in slopes]
    terms[k] = dataclasses.replace(t, spec=spec, slopes=np.asarray(slope_pos, dtype=int))
    scales[k] = scales[k][keep]
    shifts[k] = shifts[k][np.ix_(keep, keep)]
    return dataclasses.replace(model, terms=terms, stats=new, scales=scales, shifts=shifts)


def _variable(column):
    """The variable of a model-matrix column: ``g3[T.b]`` -> ``g3`` (formulaic's names)."""
    return re.sub(r"\[[^\]]*\]", "", column)


def reductions(t):
    """lmerTest's reductions of a term: ``[(label, columns dropped)]``.

    A term whose columns are one variable is removed; otherwise each variable's columns
    go together (a factor's dummies at once), the intercept of a correlated term kept
    (``Days in (1 + Days | Subject)`` compares with ``(1 | Subject)``), that of a
    diagonal term reduced too (lme4's ``||`` is separate terms).
    """
    groups = {}
    for c, name in enumerate(t.spec.columns):
        groups.setdefault("1" if name == INTERCEPT else _variable(name), []).append(c)
    if len(groups) == 1:
        return [(str(t.spec), list(range(t.q)))]
    out = []
    for variable, cols in groups.items():
        if variable == "1" and t.covariance == "unstructured":
            continue
        label = variable if variable == "1" else _quote(variable)
        out.append((f"{label} in {t.spec}", cols))
    return out


def ranova_table(fitted, options):
    """The table of :meth:`MixedLMRegressor.ranova`."""
    from ._optimize import resolve_solver

    model = fitted.model
    rows = [("<none>", fitted.n_params, fitted.log_likelihood)]
    for k, t in enumerate(model.terms):
        for label, drop in reductions(t):
            reduced = _drop_columns(model, k, drop)
            solver, em = resolve_solver(
                options["requested_solver"], options["em_max_iter"], reduced.one_factor
            )
            objective = reduced.criterion(solver)
            opt = optimize(
                objective,
                solver,
                max_iter=options["max_iter"],
                em_max_iter=em,
                tol=options["tol"],
                blocks=reduced.blocks,
            )
            objective.release()
            n_theta = sum(u.structure.n_theta for u in reduced.terms)
            rows.append((label, model.stats.p + n_theta + 1, -0.5 * opt.objective))
    table = pd.DataFrame(rows, columns=["term", "npar", "logLik"]).set_index("term")
    table["AIC"] = -2 * table["logLik"] + 2 * table["npar"]
    full = table.iloc[0]
    lrt = np.maximum(2 * (full["logLik"] - table["logLik"]), 0.0)
    df = full["npar"] - table["npar"]
    table["LRT"] = lrt.where(df > 0)
    table["Df"] = df.where(df > 0)
    table["p_value"] = stats.chi2.sf(table["LRT"], table["Df"])
    return table
