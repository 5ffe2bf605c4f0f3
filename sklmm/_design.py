"""The formula front end: an lme4 formula and a DataFrame to the core's arrays.

``"Reaction ~ Days + (Days | Subject)"`` is split into its response, its fixed part and
its bar terms (:func:`split_formula`). The fixed part and the left side of every bar
term are model matrices built by formulaic with R's semantics: treatment contrasts for
unordered factors (first level the reference), polynomial contrasts for ordered ones
(R's ``contr.poly``), full dummy coding where there is no intercept to absorb a level,
and stateful transforms (``center``, ``scale``, ``poly``, splines) learned in ``fit``
and reused at prediction. The grouping factors are columns of the data, parsed by
:mod:`sklmm._formula`. :class:`FormulaDesign` keeps the encoding; it gives the core
one matrix (the fixed-effects columns, then the columns only random terms use), the
response, the label columns and the random-effects specification in
:mod:`sklmm._formula`'s syntax.

Missing data as lme4's default ``na.action = na.omit``: a row with a missing value in a
variable the formula uses is left out of the fit (``"raise"``: an error naming the
columns); at prediction such a row gets ``NaN``.
"""

import ast
import functools
import itertools
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._formula import _quote, parse_random_effects
from ._validation import as_pandas

NA_ACTIONS = ("omit", "raise")  # the estimator's na_action
_ANSI = re.compile(r"\x1b\[[0-9;]*m|[\u29da\u29db]")


@dataclass(frozen=True)
class BarTerm:
    """A random-effects term of a formula as written: ``(lhs | grouping)`` or ``||``."""

    lhs: str
    double: bool
    grouping: str
    text: str


@dataclass(frozen=True)
class SplitFormula:
    """A formula's response (``None`` if one-sided), fixed part and bar terms."""

    response: str | None
    fixed: str
    bars: tuple


def _fail(formula, pos, what):
    """A ``ValueError`` pointing at position ``pos`` of the formula."""
    raise ValueError(f"formula: {what} at position {pos}:\n  {formula}\n  {' ' * pos}^")


def _scan(formula):
    """Top-level structure: ``(depth, char, pos)`` of every character outside quotes.

    Raises on unbalanced parentheses and unclosed quotes, naming the position.
    """
    out, depth, stack, quote = [], 0, [], None
    for pos, ch in enumerate(formula):
        if quote is not None:
            if ch == quote[0]:
                quote = None
            continue
        if ch in "`'\"":
            quote = (ch, pos)
            continue
        if ch == "(":
            stack.append(pos)
            depth += 1
        elif ch == ")":
            if not stack:
                _fail(formula, pos, "a ')' without its '('")
            stack.pop()
            depth -= 1
        out.append((depth, ch, pos))
    if quote is not None:
        _fail(formula, quote[1], f"an unclosed {quote[0]}")
    if stack:
        _fail(formula, stack[-1], "a '(' that is never closed")
    return out


def _outside_quotes(text):
    """``(position, character, depth)`` of the characters of ``text`` outside quotes and
    backquotes; ``depth`` counts the open brackets of any kind before the character."""
    depth, quote = 0, None
    for i, ch in enumerate(text):
        if quote is not None:
            quote = None if ch == quote else quote
        elif ch in "`'\"":
            quote = ch
        else:
            if ch in ")]}":
                depth -= 1
            yield i, ch, depth
            if ch in "([{":
                depth += 1


def _summands(text, offset, formula):
    """Split ``text`` at its top-level ``+`` and ``-``: ``[(sign, summand, position)]``."""
    out, sign, start = [], "+", 0
    for i, ch, depth in _outside_quotes(text):
        if depth == 0 and ch in "+-" and not _in_exponent(text, i):
            out.append((sign, text[start:i], offset + start))
            sign, start = ch, i + 1
    out.append((sign, text[start:], offset + start))
    return out


def _in_exponent(text, i):
    """Whether the ``+``/``-`` at ``i`` is the sign of a number's exponent (``1e-3``)."""
    return bool(re.search(r"(?<![A-Za-z_.])[0-9.]+[eE]$", text[:i]))


def _bar_term(summand, pos, formula):
    """The :class:`BarTerm` of a parenthesised summand with a top-level bar, else None."""
    s = summand.strip()
    lead = pos + len(summand) - len(summand.lstrip())
    if not (s.startswith("(") and s.endswith(")")):
        return None
    inner, bar = s[1:-1], None
    for i, ch, depth in _outside_quotes(inner):
        if depth < 0:  # "(a) + (b)": the parentheses do not wrap the summand
            return None
        if ch == "|" and depth == 0:
            bar = i
            break
    if bar is None:
        return None
    double = inner[bar + 1 : bar + 2] == "|"
    lhs, grouping = inner[:bar], inner[bar + 1 + double :]
    if not lhs.strip():
        _fail(formula, lead + 1, f"the random-effects term {s!r} has an empty left side")
    if not grouping.strip():
        _fail(
            formula,
            lead + 1 + bar,
            f"the random-effects term {s!r} has no grouping factor after "
            f"'{'||' if double else '|'}'",
        )
    return BarTerm(lhs.strip(), double, grouping.strip(), s)


def split_formula(formula):
    """Split an lme4 formula into response, fixed part and bar terms.

    Parameters
    ----------
    formula : str
        ``"response ~ fixed + (lhs | grouping) + ..."``; one-sided (``"~ ..."``) when
        the response is given separately.

    Returns
    -------
    SplitFormula

    Raises
    ------
    ValueError
        For a malformed formula, naming the position of the problem.

    Examples
    --------
    >>> f = split_formula("Reaction ~ Days + (Days | Subject)")
    >>> f.response, f.fixed, [b.text for b in f.bars]
    ('Reaction', 'Days', ['(Days | Subject)'])
    >>> split_formula("y ~ 0 + (1 | a/b)").fixed
    '0'
    """
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a str, got {type(formula).__name__}")
    if not formula.strip():
        raise ValueError("formula: empty; expected for example 'y ~ x + (1 | g)'")
    chars = _scan(formula)
    tildes = [pos for depth, ch, pos in chars if ch == "~" and depth == 0]
    if not tildes:
        raise ValueError(
            f"formula: {formula!r} has no '~'; expected 'response ~ terms' (or '~ terms' "
            "with the response given as y)"
        )
    if len(tildes) > 1:
        _fail(formula, tildes[1], "a second '~'")
    tilde = tildes[0]
    response = formula[:tilde].strip() or None
    rhs_at = tilde + 1
    rhs = formula[rhs_at:]
    fixed, bars = [], []
    for sign, summand, pos in _summands(rhs, rhs_at, formula):
        bar = _bar_term(summand, pos, formula)
        if bar is not None:
            if sign == "-":
                _fail(formula, pos - 1, f"'-' before the random-effects term {bar.text!r}")
            bars.append(bar)
            continue
        for _, ch, at in chars:
            if ch == "|" and pos <= at < pos + len(summand):
                _fail(
                    formula,
                    at,
                    "a '|' outside a parenthesised random-effects term; write the term as "
                    "'+ (lhs | group)'",
                )
        if summand.strip():
            fixed.append(f"{sign} {summand.strip()}" if fixed or sign == "-" else summand.strip())
        elif sign == "-" or (fixed or bars):
            _fail(formula, pos, "an empty term")
    if not fixed and not bars:
        _fail(formula, len(formula), "no term on the right of '~'")
    _check_power(formula, chars)
    return SplitFormula(response, " ".join(fixed) if fixed else "1", tuple(bars))


def _check_power(formula, chars):
    """``^`` inside a function call (``I(x^2)``) is Python's XOR there: an error.

    At the top level ``(a + b)^2`` is the formula's interaction power, as in R.
    """
    opens = []
    for _, ch, pos in chars:
        if ch == "(":
            before = formula[:pos].rstrip()
            opens.append(bool(before) and (before[-1].isalnum() or before[-1] in "_."))
        elif ch == ")":
            opens.pop()
        elif ch == "^" and any(opens):
            _fail(
                formula,
                pos,
                "'^' inside a function call is Python's bitwise XOR, not a power: write "
                "'**' (for example I(x**2), R's I(x^2))",
            )


# -- formulaic with R's contrasts ------------------------------------------------------


def _materializer():
    """formulaic's pandas materializer with R's default contrasts for ordered factors.

    Registered under its own name, so formulaic's own defaults elsewhere are unchanged.
    """
    from formulaic.materializers import PandasMaterializer
    from formulaic.transforms.contrasts import PolyContrasts, encode_contrasts
    from interface_meta import override

    class RPandasMaterializer(PandasMaterializer):
        REGISTER_NAME = "sklmm_pandas"
        REGISTER_INPUTS = ()
        REGISTER_OUTPUTS = ("pandas",)

        @override
        def _encode_categorical(
            self, values, metadata, encoder_state, spec, drop_rows, reduced_rank=False
        ):
            # R: contr.poly for an ordered factor, contr.treatment otherwise; decided in
            # fit (from the column's dtype) and kept in the state for prediction.
            if "sklmm_ordered" not in encoder_state:
                raw = getattr(values, "__wrapped__", values)
                dtype = getattr(raw, "dtype", None)
                ordered = isinstance(dtype, pd.CategoricalDtype) and bool(dtype.ordered)
                explicit = metadata is not None and getattr(metadata, "contrasts", None)
                encoder_state["sklmm_ordered"] = ordered and not explicit
            if not encoder_state["sklmm_ordered"]:
                return super()._encode_categorical(
                    values, metadata, encoder_state, spec, drop_rows, reduced_rank
                )
            if drop_rows:
                from formulaic.utils.null_handling import drop_rows as drop_nulls

                values = drop_nulls(values, indices=drop_rows)
            from formulaic.materializers.pandas import as_columns

            return as_columns(
                encode_contrasts(
                    values,
                    contrasts=PolyContrasts(),
                    reduced_rank=reduced_rank,
                    _metadata=metadata,
                    _state=encoder_state,
                    _spec=spec,
                )
            )

    return RPandasMaterializer


_MATERIALIZER = None


def _get_materializer():
    global _MATERIALIZER
    if _MATERIALIZER is None:
        _MATERIALIZER = _materializer()
    return _MATERIALIZER


def _clean(exc):
    """A formulaic error message without its terminal colours."""
    return _ANSI.sub("", str(exc)).strip()


def _model_matrix(rhs, data, where):
    """formulaic's model matrix of the one-sided formula ``rhs`` (fit: learns the spec)."""
    import formulaic
    from formulaic.errors import FormulaicError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", formulaic.errors.DataMismatchWarning)
            return formulaic.model_matrix(
                _parsed(rhs),
                data,
                materializer=_get_materializer(),
                na_action="ignore",
                output="pandas",
            )
    except FormulaicError as exc:
        raise ValueError(f"formula: {where} {rhs!r}: {_clean(exc)}") from None


@functools.lru_cache(maxsize=1)
def _intercept_spec():
    """formulaic's spec of ``1`` (it learns nothing from the data: built once)."""
    return _model_matrix("1", pd.DataFrame(index=pd.RangeIndex(1)), "the part").model_spec


@functools.lru_cache(maxsize=256)
def _parsed(rhs):
    """formulaic's parse of a formula part, kept: a grid search or a bootstrap fits the
    same formula again and again (formulas are immutable once parsed)."""
    import formulaic

    return formulaic.Formula(rhs)


def _apply(spec, data, where):
    """The model matrix of ``data`` by a fitted spec; unseen factor levels are an error."""
    import formulaic
    from formulaic.errors import FormulaicError

    _get_materializer()  # registered under its name in this process (an unpickled spec)
    _check_levels(spec, data, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", formulaic.errors.DataMismatchWarning)
            return spec.get_model_matrix(data, na_action="ignore")
    except (FormulaicError, formulaic.errors.DataMismatchWarning) as exc:
        raise ValueError(f"formula: {where}: {_clean(exc)}") from None


def _check_levels(spec, data, where):
    """Error naming the variable and the levels a fixed-effect factor never had in fit."""
    for expr, (kind, state) in spec.encoder_state.items():
        levels = state.get("categories") if isinstance(state, dict) else None
        if str(getattr(kind, "value", kind)) != "categorical" or levels is None:
            continue
        name = _plain_name(expr)
        if name is None or name not in data.columns:
            continue
        values = data[name]
        seen = pd.unique(values[values.notna()])
        new = [v.item() if isinstance(v, np.generic) else v for v in seen if v not in set(levels)]
        if new:
            raise ValueError(
                f"formula: {where}: the factor {name!r} has the level(s) {new[:10]} never "
                f"seen in fit (fitted levels: {list(levels)[:20]}); the coefficient of a "
                "new level of a covariate cannot be estimated. Drop those rows, or refit "
                "with them"
            )


def _plain_name(expr):
    """The column name of a factor written as a bare name or ``C(name, ...)``."""
    m = re.fullmatch(r"\s*(?:C\(\s*)?`?([^`,()]+?)`?\s*(?:,.*\))?\s*\)?\s*", expr)
    return m.group(1).strip() if m else None


def _variables(spec):
    """The data variables a fitted formulaic spec reads."""
    return set(map(str, spec.required_variables))


@dataclass
class _Part:
    """A fitted left side of a bar term: its spec and where its columns go."""

    spec: object
    intercept: bool
    columns: list  # positions of its slope columns in the core's matrix


class FormulaDesign:
    """The encoding of a formula, learned by :meth:`fit`, reused by :meth:`transform`.

    Parameters
    ----------
    formula : str
        The lme4-style formula.
    na_action : {"omit", "raise"}
        What a missing value does in ``fit``.

    Attributes
    ----------
    fit_intercept : bool
        Whether the fixed part has an intercept.
    names : list of str
        Columns of the core's matrix: the fixed-effects columns (the intercept left
        out), then the columns only random terms use.
    n_fixed : int
        Number of fixed-effects columns in ``names``.
    random_effects : str or None
        The random part in :mod:`sklmm._formula`'s syntax, with the model matrix's
        column names as slopes.
    factors : list of str
        The grouping factors (columns of the data), in the order of the terms.
    variables : list of str
        The data columns the right-hand side reads (fixed part, bar terms' left sides
        and grouping factors), in the data's column order.
    labels_only : list of str
        The grouping factors that are nothing else in the formula: data without such a
        column at prediction gives its terms' population predictions (lme4's
        ``re.form``), as ``groups=None`` does without a formula.
    response : str or None
        The response's expression.

    Examples
    --------
    >>> from sklmm.datasets import load_sleepstudy
    >>> d = FormulaDesign("Reaction ~ Days + (Days | Subject)", "omit")
    >>> X, y, groups, keep = d.fit(load_sleepstudy())
    >>> d.names, d.random_effects, list(groups.columns)
    (['Days'], '(1 + Days | Subject)', ['Subject'])
    """

    def __init__(self, formula, na_action="omit"):
        self.formula = formula
        self.na_action = na_action
        self.parts = split_formula(formula)

    # -- fit -------------------------------------------------------------------------
    def fit(self, data, y=None):
        """Learn the encoding on ``data``; return the core's arrays.

        As R's model frame: a row is kept when every variable of the formula is present
        (and ``y``); stateful transforms (``center``, ``scale``, ``poly``, splines) learn
        their state on the rows where their own part of the formula is complete, before
        the rows missing other variables are left out; factors keep only the levels of
        the kept rows (``drop.unused.levels``).

        Returns
        -------
        X : ndarray of shape (n_kept, len(names))
        y : ndarray of shape (n_kept,)
        groups : DataFrame or None
            The grouping factors' columns of the kept rows.
        keep : ndarray of bool of shape (n_samples,)
            The rows used (rows with missing values left out).
        """
        data = _frame(data)
        f = self.parts
        if f.response is None and y is None:
            raise ValueError(
                f"the formula {self.formula!r} is one-sided and y=None: write the "
                "response on the left of '~' (for example 'y ~ x + (1 | g)') or pass y"
            )
        if y is not None:
            y = _check_y(y, len(data))
        groups_terms = [t for b in f.bars for t in _grouping(b)]
        self.factors = list(dict.fromkeys(g for t in groups_terms for g in t.group))
        for name in self.factors:
            if name not in data.columns:
                raise ValueError(
                    f"formula: the grouping factor {name!r} is not a column of the data "
                    f"(columns: {list(data.columns)})"
                )
        texts = {"fixed": f.fixed, **{f"bar{k}": b.lhs for k, b in enumerate(f.bars)}}
        if f.response is not None:
            texts["response"] = f.response
        part_vars = {key: _part_variables(text, data) for key, text in texts.items()}
        needed = set(self.factors).union(*part_vars.values())
        used = [c for c in data.columns if c in needed]
        _check_columns(data, used, self.factors)
        covariates = [c for c in used if c not in self.factors or _in_parts(c, part_vars)]
        self.numeric = {
            c: pd.api.types.is_numeric_dtype(data[c]) and not pd.api.types.is_bool_dtype(data[c])
            for c in used
        }
        masks = _missing_masks(data, used)
        keep = self._complete_rows(data, used, y, "fit", masks)
        frame = _levels_of_kept_rows(data, [c for c in covariates if not self.numeric[c]], keep)
        rhs_used = set(self.factors)
        # the response
        self.response_spec = None
        if f.response is not None:
            if f.response in data.columns:  # a column: no formulaic
                self.response_variables = [f.response]
                column = data[f.response]
                # a boolean column is a 0/1 response (a GLMM classifier's two classes)
                if not (self.numeric[f.response] or pd.api.types.is_bool_dtype(column)):
                    raise ValueError(
                        f"formula: the response {f.response!r} must be one numeric column; "
                        f"it has dtype {column.dtype}"
                    )
                response = column.to_numpy(dtype=float)[keep]
            else:
                spec, ym = _evaluate(f"0 + {f.response}", frame, keep, keep, "the response")
                if ym.shape[1] != 1 or not _numeric(ym) or _has_factor(spec):
                    raise ValueError(
                        f"formula: the response {f.response!r} must be one numeric column; "
                        f"it gives {list(ym.columns)}"
                    )
                response = ym.to_numpy(dtype=float)[:, 0]
                self.response_spec = spec
                self.response_variables = sorted(part_vars["response"])
            if y is not None and not np.allclose(y[keep], response, rtol=1e-12, atol=0.0):
                raise ValueError(
                    f"y differs from the formula's response {f.response!r}: pass y=None "
                    "(the response is read from the data), the same values, or a "
                    "one-sided formula '~ ...' with y"
                )
            y = response
        else:
            y = y[keep]
        # the fixed part
        complete = _complete(data, part_vars["fixed"], masks)
        self.fixed_spec, fixed = _evaluate(f.fixed, frame, complete, keep, "the fixed part")
        rhs_used |= _variables(self.fixed_spec)
        names = [str(c) for c in fixed.columns]
        self.fit_intercept = "Intercept" in names
        keep_cols = [c for c in names if c != "Intercept"]
        columns = [fixed[c].to_numpy(dtype=float) for c in keep_cols]  # no copy if float
        self.names = list(keep_cols)
        self.n_fixed = len(self.names)
        # the bar terms
        self.bar_parts, specs = [], []
        for k, bar in enumerate(f.bars):
            where = f"the random-effects term {bar.text}"
            complete = _complete(data, part_vars[f"bar{k}"], masks)
            for spec, mm, diagonal in _bar_matrices(bar, frame, complete, keep, where):
                rhs_used |= _variables(spec)
                cols = [str(c) for c in mm.columns]
                intercept = "Intercept" in cols
                positions = [
                    self._column(c, mm[c].to_numpy(dtype=float), columns)
                    for c in cols
                    if c != "Intercept"
                ]
                if not intercept and not positions:
                    raise ValueError(f"formula: {where} has no column")
                self.bar_parts.append(_Part(spec, intercept, positions))
                lhs_spec = " + ".join(
                    ["1" if intercept else "0"] + [_quote(self.names[j]) for j in positions]
                )
                specs.append(f"({lhs_spec} {'||' if diagonal else '|'} {bar.grouping})")
        self.random_effects = " + ".join(specs) if specs else None
        if self.random_effects is not None:
            try:  # errors (a column twice) early, in the formula's words
                parse_random_effects(self.random_effects)
            except ValueError as exc:
                raise ValueError(str(exc).replace("random_effects: ", "formula: ", 1)) from None
        rhs_used |= set().union(*(v for key, v in part_vars.items() if key != "response"))
        self.variables = [c for c in data.columns if c in rhs_used]
        self.labels_only = [c for c in self.factors if not _in_parts(c, part_vars, "response")]
        X = np.empty((int(keep.sum()), len(columns)))  # one copy, in row-major order
        for j, values in enumerate(columns):
            X[:, j] = values
        _check_finite(X, self.names, y)
        if not self.factors:
            groups = None
        else:
            groups = data[self.factors] if keep.all() else data.loc[keep, self.factors]
        return X, y, groups, keep

    def fixed_terms(self):
        """The fixed part's terms: ``{label: (column names, factors)}``, intercept left out."""
        spec, out = self.fixed_spec, {}
        names = [str(c) for c in spec.column_names]
        for term, indices in spec.term_indices.items():
            factors = [str(f) for f in term.factors]
            if factors == ["1"]:
                continue
            out[str(term)] = ([names[i] for i in indices], factors)
        return out

    def type3_contrasts(self, fixed_names):
        """lmerTest's type III contrast of every fixed term, or None where not defined here.

        The hypothesis of a term is about the expected response on a grid of the
        variables: the term's factors at each of their levels, every other factor
        averaged over its levels with equal weights, the covariates outside the term at
        0, and the term's covariates as a unit change (1 against 0). The contrast rows
        are the term's interaction contrasts (products of the level differences of its
        variables) of those grid means. For treatment contrasts this is lmerTest's
        type III test: ``age`` in ``age * Sex`` is the slope averaged over the levels
        of ``Sex``, ``Sex`` the difference at ``age = 0``.

        Only hierarchical formulas (every lower-order term of a term present) whose
        variables enter the fixed part as plain columns are supported (a transformation
        such as ``poly(x, 2)`` has no unit change): otherwise the result is None.
        """
        spec = self.fixed_spec
        kinds = {}
        for expr, (kind, state) in spec.encoder_state.items():
            categorical = str(getattr(kind, "value", kind)) == "categorical"
            name = _plain_name(expr) if categorical else expr
            if name is None or name not in self.numeric:
                return None
            kinds[name] = state.get("categories") if categorical else None
        if any(levels is not None and len(levels) < 1 for levels in kinds.values()):
            return None
        if not kinds:  # an intercept-only fixed part: no term to test
            return {}
        axes = {v: (list(lv) if lv is not None else [0.0, 1.0]) for v, lv in kinds.items()}
        n_cells = int(np.prod([len(a) for a in axes.values()])) if axes else 1
        if n_cells > 100_000:
            return None
        grid = pd.MultiIndex.from_product(list(axes.values()), names=list(axes)).to_frame(
            index=False
        )
        for v, levels in kinds.items():
            if levels is not None:
                grid[v] = pd.Categorical(grid[v], categories=levels)
        # a hierarchical formula only: every subset of a term's variables is a term too
        # (in y ~ A + A:B, lmerTest's contrasts are not these grid contrasts)
        present = set()
        for term in spec.term_indices:
            present.add(frozenset(str(f.expr) for f in term.factors if str(f.expr) != "1"))
        for variables in list(present):
            for r in range(1, len(variables)):
                if any(frozenset(c) not in present for c in itertools.combinations(variables, r)):
                    return None
        Xg = _apply(spec, grid, "type III contrasts")
        names = ["Intercept" if c == "(Intercept)" else c for c in fixed_names]
        Xg = Xg.reindex(columns=names, fill_value=0.0).to_numpy(dtype=float)
        out = {}
        for term, _ in spec.term_indices.items():
            variables = [str(f.expr) for f in term.factors if str(f.expr) != "1"]
            variables = [
                _plain_name(v) if kinds.get(_plain_name(v) or "", 0) is not None else v
                for v in variables
            ]
            if not variables:
                continue
            if any(v not in axes for v in variables):
                return None
            keep = np.ones(len(grid), dtype=bool)
            for v, levels in kinds.items():
                if levels is None and v not in variables:
                    keep &= grid[v].to_numpy(dtype=float) == 0.0  # other covariates at 0
            cells = grid.loc[keep, variables].astype(object)
            means = (
                pd.DataFrame(Xg[keep])
                .groupby([cells[v].to_numpy() for v in variables], sort=False)
                .mean()
            )
            rows = []
            for combo in itertools.product(*[range(1, len(axes[v])) for v in variables]):
                coef = np.zeros(len(means))
                for pos, key in enumerate(means.index):
                    key = key if isinstance(key, tuple) else (key,)
                    c = 1.0
                    for v, k, value in zip(variables, combo, key, strict=True):
                        level = axes[v].index(value)
                        c *= 1.0 if level == k else (-1.0 if level == 0 else 0.0)
                    coef[pos] = c
                rows.append(coef @ means.to_numpy())
            out[str(term)] = np.array(rows)
        return out

    def _column(self, name, values, columns):
        """Position of a random term's column in the core's matrix (appended if new).

        A column of the fixed part with the same name is the same expression, so the
        same values; a sample of rows confirms it (a full comparison costs a pass).
        """
        step = max(1, len(values) // 10_000)
        for j, existing in enumerate(self.names):
            if existing == name and np.array_equal(
                columns[j][::step], values[::step], equal_nan=True
            ):
                return j
        unique = name
        k = 1
        while unique in self.names:
            unique, k = f"{name}.{k}", k + 1
        self.names.append(unique)
        columns.append(values)
        return len(self.names) - 1

    def _complete_rows(self, data, columns, y, where, masks=None):
        """Rows without a missing value in ``columns`` (and ``y``); ``raise`` raises.

        ``masks`` (:func:`_missing_masks` of these columns) saves computing them again.
        """
        masks = _missing_masks(data, columns) if masks is None else masks
        bad = np.zeros(len(data), dtype=bool)
        for c in columns:
            bad |= masks[c]
        if y is not None:
            bad = bad | pd.isna(np.asarray(y))
        if not bad.any():
            return ~bad
        counts = {c: int(masks[c].sum()) for c in columns if masks[c].any()}
        if self.na_action == "raise":
            raise ValueError(
                f"{where}: {int(bad.sum())} row(s) have missing values in the formula's "
                f"variables {counts} (na_action='raise'); drop or impute them, or pass "
                "na_action='omit' to leave them out as lme4 does"
            )
        return ~bad

    # -- transform -------------------------------------------------------------------
    def transform(self, data, with_response=False):
        """The core's arrays for new data, by the encoding of ``fit``.

        Returns
        -------
        X : ndarray of shape (n_complete, len(names))
        groups : DataFrame or None
            The grouping factors present in ``data`` (see ``labels_only``).
        y : ndarray or None
            The response, when ``with_response`` and the formula names one (rows
            with it missing are among those left out).
        keep : ndarray of bool of shape (n_samples,)
            Rows with every variable present (the others get no prediction).
        """
        data = _frame(data)
        missing = [c for c in self.variables if c not in data.columns and c not in self.labels_only]
        if missing:
            raise ValueError(
                f"the data has no column(s) {missing}, which the formula "
                f"{self.formula!r} uses (columns: {list(data.columns)})"
            )
        columns = [c for c in self.variables if c in data.columns]
        with_response = with_response and self.parts.response is not None
        if with_response:
            absent = [c for c in self.response_variables if c not in data.columns]
            if absent:
                raise ValueError(
                    f"the data has no column(s) {absent} for the formula's response "
                    f"{self.parts.response!r}: pass y, or data with the response"
                )
            columns += [c for c in self.response_variables if c not in columns]
        changed = [
            c
            for c in columns
            if self.numeric.get(c)
            and not pd.api.types.is_numeric_dtype(data[c])
            and c not in self.factors
        ]
        if changed:
            raise ValueError(
                f"the column(s) {changed} were numeric in fit but are "
                f"{[str(data[c].dtype) for c in changed]} here; pass numbers"
            )
        keep = self._complete_rows(data, columns, None, "predict")
        data = data.loc[keep]
        text = [c for c in columns if not self.numeric.get(c, True) and c not in self.labels_only]
        if text:  # strings of any storage as objects, which formulaic matches to its levels
            data = data.assign(**{c: data[c].astype(object) for c in text})
        y = None
        if with_response and self.response_spec is None:
            y = pd.to_numeric(data[self.parts.response]).to_numpy(dtype=float)
        elif with_response:
            y = _apply(self.response_spec, data, "the response").to_numpy(dtype=float)[:, 0]
        fixed = _apply(self.fixed_spec, data, "the fixed part")
        cols = [c for c in fixed.columns if c != "Intercept"]
        out = np.empty((len(data), len(self.names)))
        out[:, : self.n_fixed] = fixed[cols].to_numpy(dtype=float)
        for part in self.bar_parts:
            mm = _apply(part.spec, data, "a random-effects term")
            slope_cols = [c for c in mm.columns if c != "Intercept"]
            for c, j in zip(slope_cols, part.columns, strict=True):
                if j >= self.n_fixed:
                    out[:, j] = mm[c].to_numpy(dtype=float)
        bad = ~np.isfinite(out).all(axis=0)
        if bad.any():
            raise ValueError(
                f"formula: at prediction, the model-matrix column(s) "
                f"{[self.names[j] for j in np.flatnonzero(bad)]} have non-finite values "
                "(infinite values in the data, or a transformation such as log of 0)"
            )
        present = [c for c in self.factors if c in data.columns]
        groups = data[present] if present else None
        return out, groups, y, keep


def _in_parts(column, part_vars, skip=None):
    """Whether ``column`` is read by a part of the formula (other than ``skip``)."""
    return any(column in v for key, v in part_vars.items() if key != skip)


def _part_variables(text, data):
    """The data columns a part of the formula reads.

    formulaic's ``required_variables``, plus the names inside Python expressions
    (formulaic leaves out those of stateful transforms such as ``center(x)``).
    """
    out = set()
    for v in _required_variables(text):
        if "callable" in {str(getattr(r, "value", r)) for r in v.roles}:
            raise ValueError(
                f"formula: unknown function {str(v)!r} in {text!r}"
                + (
                    "; lme4's offset() is not supported in formulas: for a GLMM pass "
                    "offset= to fit and predict; for a linear model subtract the offset "
                    "from the response, e.g. 'I(y - z) ~ ...'"
                    if str(v) == "offset"
                    else ""
                )
            )
        out.add(str(v))
    for expr in _factor_expressions(text):
        try:
            tree = ast.parse(expr, mode="eval")
        except SyntaxError:
            continue
        out |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} & set(
            data.columns
        )
    unknown = sorted(v for v in out if v not in data.columns and not _is_known(v))
    if unknown:
        raise ValueError(
            f"formula: {unknown} {'is' if len(unknown) == 1 else 'are'} not a column of "
            f"the data (columns: {list(data.columns)})"
        )
    return {v for v in out if v in data.columns}


@functools.lru_cache(maxsize=256)
def _factor_expressions(text):
    """The Python expressions among the factors of a formula part (cached)."""
    from formulaic import Formula

    try:
        terms = list(Formula(text))
    except Exception:  # reported by _required_variables
        return ()
    return tuple(
        str(f.expr)
        for t in terms
        for f in t.factors
        if str(getattr(f.eval_method, "value", f.eval_method)) == "python"
    )


def _missing_masks(data, columns):
    """Per column, whether each row's value is missing (one pass per column: cheaper than
    a DataFrame's ``isna`` on a selection of columns)."""
    return {c: np.asarray(pd.isna(data[c].to_numpy()), dtype=bool) for c in columns}


def _complete(data, columns, masks=None):
    """Rows with every one of ``columns`` present (``masks``: their missing values)."""
    if not columns:
        return np.ones(len(data), dtype=bool)
    masks = {} if masks is None else masks
    bad = np.zeros(len(data), dtype=bool)
    for c in columns:
        bad |= masks[c] if c in masks else np.asarray(pd.isna(data[c].to_numpy()), dtype=bool)
    return ~bad


def _levels_of_kept_rows(data, columns, keep):
    """A copy of ``data`` whose non-numeric ``columns`` are categoricals of the levels of
    the kept rows (R's ``drop.unused.levels``); other rows' other levels become missing.

    Categories keep their order (and ``ordered``); strings of any storage (object,
    ``string``, pyarrow) get sorted levels, as R's ``factor`` and formulaic do.
    """
    if not columns:
        return data
    data = data.copy(deep=False)
    for c in columns:
        values = data[c]
        if pd.api.types.is_bool_dtype(values):
            continue
        present = pd.unique(values[keep])
        if isinstance(values.dtype, pd.CategoricalDtype):
            levels = [v for v in values.cat.categories if v in set(present)]
            ordered = bool(values.dtype.ordered)
        else:
            levels = sorted(v for v in present if not pd.isna(v))
            ordered = False
        raw = values.astype(object).where(values.isin(levels), None)
        data[c] = pd.Categorical(raw, categories=levels, ordered=ordered)
    return data


def _evaluate(text, frame, complete, keep, where):
    """``(spec, matrix)`` of a formula part: its state learned on the ``complete`` rows,
    the matrix returned on the ``keep`` rows (a subset of them)."""
    if text.strip() == "1":  # an intercept alone (a random intercept's bar): no formulaic
        index = frame.index[keep]
        return _intercept_spec(), pd.DataFrame({"Intercept": np.ones(len(index))}, index=index)
    rows = np.flatnonzero(complete)
    part = frame if complete.all() else frame.iloc[rows]
    mm = _model_matrix(text, part, where)
    spec = mm.model_spec
    if not keep[complete].all():
        mm = mm.iloc[np.flatnonzero(keep[complete])]
    return spec, mm


def _check_y(y, n_rows):
    """``y`` given with a formula: numbers, one per row of the data."""
    from sklearn.utils.validation import check_array, column_or_1d

    try:
        y = check_array(
            as_pandas(y),
            ensure_2d=False,
            dtype=np.float64,
            ensure_all_finite="allow-nan",
            input_name="y",
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y must be numbers, one per row of the data: {exc}") from None
    y = column_or_1d(y)
    if len(y) != n_rows:
        raise ValueError(f"y has {len(y)} values but the data has {n_rows} rows")
    return y


def _bar_matrices(bar, frame, complete, keep, where):
    """The model matrices of a bar term's left side: ``[(spec, matrix, diagonal)]``.

    ``(lhs | g)`` is one matrix. lme4 rewrites ``(1 + x + f || g)`` as
    ``(1 | g) + (0 + x | g) + (0 + f | g)``: a term with several columns (a factor's
    dummies, all of them with no intercept to absorb one; ``poly(x, 2)``; a spline) keeps
    them correlated. When every term has one column that is one term with a diagonal
    covariance, which is how it is kept.
    """
    spec, full = _evaluate(bar.lhs, frame, complete, keep, where)
    if not bar.double:
        return [(spec, full, False)]
    terms = {str(t): (t, idx) for t, idx in spec.term_indices.items()}
    slopes = [(t, idx) for name, (t, idx) in terms.items() if name != "1"]
    if not _has_factor(spec) and all(len(idx) == 1 for _, idx in slopes):
        return [(spec, full, True)]
    pieces = ["1"] * ("1" in terms) + [f"0 + {_term_text(t)}" for t, _ in slopes]
    return [(*_evaluate(p, frame, complete, keep, where), False) for p in pieces]


def _term_text(term):
    """A formulaic term written back as formula text (names backquoted where needed)."""
    parts = []
    for factor in term.factors:
        expr = str(factor.expr)
        lookup = str(getattr(factor.eval_method, "value", factor.eval_method)) == "lookup"
        parts.append(f"`{expr}`" if lookup and not expr.isidentifier() else expr)
    return ":".join(parts)


@functools.lru_cache(maxsize=256)
def _required_variables(text):
    """formulaic's variables of a formula (cached: a grid search parses the same ones)."""
    from formulaic import Formula

    try:
        return tuple(Formula(text).required_variables)
    except Exception as exc:  # formulaic's parse errors
        raise ValueError(f"formula: cannot parse {text!r}: {_clean(exc)}") from None


def _has_factor(spec):
    """Whether a fitted formulaic spec encodes a categorical variable."""
    kinds = [str(getattr(kind, "value", kind)) for kind, _ in spec.encoder_state.values()]
    return "categorical" in kinds


def _grouping(bar):
    """The terms of a bar term's grouping (column names joined by ``:`` and ``/``)."""
    try:
        return parse_random_effects(f"(1 | {bar.grouping})")
    except ValueError:
        raise ValueError(
            f"formula: the grouping {bar.grouping!r} of the term {bar.text} must be column "
            "names joined by ':' (interaction) or '/' (nesting), such as 'g', 'a:b' or "
            "'a/b'; every column is a factor there, so R's factor() is not needed, and "
            "other expressions are not supported (make a column first)"
        ) from None


def _check_columns(data, used, factors):
    """Errors for repeated column names and for dates used as covariates."""
    repeated = (
        [] if data.columns.is_unique else sorted({c for c in used if (data.columns == c).sum() > 1})
    )
    if repeated:
        raise ValueError(f"formula: the data has several columns named {repeated}; rename them")
    dates = [
        c
        for c in used
        if c not in factors
        and (
            pd.api.types.is_datetime64_any_dtype(data[c])
            or pd.api.types.is_timedelta64_dtype(data[c])
        )
    ]
    if dates:
        c = dates[0]
        raise ValueError(
            f"formula: the date or duration column(s) {dates} must be converted to numbers "
            f"first, for example days since the first date: (df[{c!r}] - "
            f"df[{c!r}].min()).dt.days"
        )


def _numeric(frame):
    return all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes)


def _is_known(name):
    """Names formulaic resolves without the data (functions, constants, modules)."""
    return name in {"np", "numpy", "pi", "e", "True", "False", "None"}


def _check_finite(X, names, y):
    """Errors for non-finite values a transformation produced (``log(0)``, ...)."""
    bad = ~np.isfinite(X).all(axis=0)
    if bad.any():
        cols = [names[j] for j in np.flatnonzero(bad)]
        raise ValueError(
            f"formula: the model-matrix column(s) {cols} have non-finite values (infinite "
            "values in the data, or a transformation such as log of 0); fix the data or "
            "the formula"
        )
    if y is not None and not np.isfinite(y).all():
        raise ValueError("formula: the response has non-finite values after its transformation")


def _frame(data):
    """The data as a pandas DataFrame (polars and other frames through narwhals)."""
    if type(data).__name__ == "LazyFrame":
        raise TypeError("with a formula, X must be a DataFrame: collect() the LazyFrame first")
    frame = as_pandas(data)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            "with a formula, X must be a DataFrame with the formula's columns (pandas, "
            f"polars or another DataFrame), got {type(data).__name__}"
        )
    if not all(isinstance(c, str) for c in frame.columns):
        raise ValueError(
            "with a formula, the DataFrame's column names must be str; got "
            f"{[c for c in frame.columns if not isinstance(c, str)][:5]}"
        )
    return frame
