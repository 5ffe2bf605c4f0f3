"""Random-effects terms: one type for every structure, from its specification to its levels.

Every model, whatever form it was given in, is a list of :class:`RandomTerm`:

* ``random_slopes`` / ``covariance_type`` with one column of ``groups``: one term
  ``(1 + slopes | g)`` (or ``||``);
* ``random_effects``, lme4's syntax (:mod:`sklmm._formula`): its terms, factor names
  referring to the columns of ``groups``;
* ``variance_components`` (the statsmodels design): the groups' term (if any) and, per
  column ``c``, a random intercept ``(1 | g:c)``, or ``(1 | c)`` with ``groups=None``.

One naming rule for all: a term is named after its grouping factor in lme4's way, the
factor names joined by ``":"`` (``"Subject"``, ``"batch:cask"``), made unique as lme4
does (``g``, then ``g.1``). The same model therefore has the same term names in every
form.

A term also owns its level encoding: the fitted labels of each factor column, the
level combinations seen in ``fit`` and a sorted integer key per level, which
prediction uses to find each row's level (-1 when unseen: lme4's
``allow.new.levels = TRUE``).
"""

import functools
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd

from ._covariance import CovarianceStructure
from ._formula import Term, parse_random_effects
from ._validation import factorize, match_labels


@dataclass
class RandomTerm:
    """One random-effects term of a model.

    Attributes
    ----------
    name : str
        The term's name (see the module docstring).
    spec : Term
        The specification: factors, intercept, slope names, covariance.
    sources : list of tuple
        For each factor of the (interaction) grouping, ``("groups", column)`` or
        ``("variance_components", column)``.
    slopes : ndarray of int
        Positions of the slope columns in ``X``.
    levels : list of ndarray
        Fitted labels of every factor column (sorted when they can be).
    combos : ndarray of shape (n_levels, n_factors)
        For each level of the term, the position of its label in ``levels[j]``.
    keys : ndarray of int
        Sorted integer key of every level (the combined positions), for matching.
    dtypes : list
        The dtype of every factor column as given in ``fit`` (``None``: inferred), kept
        by :meth:`index`.
    """

    name: str
    spec: Term
    sources: list
    slopes: np.ndarray
    dtypes: list = None
    levels: list = None
    combos: np.ndarray = None
    keys: np.ndarray = None

    @property
    def columns(self):
        """Names of the term's random effects: ``"(Intercept)"``, then the slopes."""
        return list(self.spec.columns)

    @property
    def q(self):
        """Random effects per level."""
        return len(self.spec.columns)

    @property
    def covariance(self):
        """``"unstructured"`` or ``"diagonal"``."""
        return self.spec.covariance

    @property
    def structure(self):
        """The :class:`~sklmm._covariance.CovarianceStructure` of the term."""
        return _structure(self.q, self.covariance)

    @property
    def n_levels(self):
        """Number of levels seen in ``fit``."""
        return len(self.combos)

    @property
    def factor_names(self):
        """Names of the factor columns, in the order of the interaction."""
        return [col for _, col in self.sources]

    def index(self):
        """The levels as a pandas Index (a MultiIndex for an interaction), of the labels' dtype."""
        dtypes = self.dtypes or [None] * len(self.levels)
        arrays = [
            _typed_index(lv[self.combos[:, j]], dtype, name)
            for j, (lv, dtype, name) in enumerate(
                zip(self.levels, dtypes, self.factor_names, strict=True)
            )
        ]
        if len(arrays) == 1:
            return arrays[0]
        return pd.MultiIndex.from_arrays(arrays)

    def z(self, X):
        """The term's columns for the rows of ``X``: the intercept, then the slopes."""
        cols = [np.ones(X.shape[0])] if self.spec.intercept else []
        cols += [X[:, j] for j in self.slopes]
        return np.column_stack(cols) if cols else np.zeros((X.shape[0], 0))

    def centred(self):
        """Whether the slope columns are centred before the cross-products.

        Only for an unstructured term with an intercept and slopes: its covariance family
        is closed under the shift (a diagonal one is not: lme4's ``(x || g)`` depends on
        it), so the likelihood is unchanged.
        """
        return self.spec.intercept and self.q > 1 and self.covariance == "unstructured"


@functools.lru_cache(maxsize=64)
def _structure(q, covariance):
    """One (immutable) covariance structure per size and kind: it is asked for often."""
    return CovarianceStructure(q, covariance)


def _typed_index(values, dtype, name):
    """Labels as a pandas Index of their ``fit`` dtype (inferred when unknown or not castable)."""
    index = pd.Index(values, name=name)
    if dtype is None:
        return index.infer_objects() if index.dtype == object else index
    try:
        return index.astype(dtype)
    except (TypeError, ValueError):
        return index.infer_objects()


def _unique_names(names):
    """lme4's names for repeated factors (``g``, ``g.1``, ...), never colliding with another."""
    taken, out = set(names), []
    for name in names:
        if name not in out:
            out.append(name)
            continue
        k = 1
        while f"{name}.{k}" in taken or f"{name}.{k}" in out:
            k += 1
        out.append(f"{name}.{k}")
    return out


def slope_positions(random_slopes, feature_names, n_features, n_samples):
    """Column positions in ``X`` of the shorthand's ``random_slopes`` (names or positions).

    ``feature_names`` is ``None`` when ``X`` has no column names.
    """
    slopes = random_slopes
    if slopes is None:
        return np.zeros(0, dtype=int)
    if isinstance(slopes, (str, Integral)):
        slopes = [slopes]
    slopes = list(slopes)
    out = []
    for s in slopes:
        if isinstance(s, (bool, np.bool_)):
            raise ValueError(f"random_slopes entries must be column names or positions, got {s!r}")
        if isinstance(s, (Integral, np.integer)):
            if not 0 <= s < n_features:
                raise ValueError(
                    f"random_slopes position {s} is out of range: X has "
                    f"{n_features} feature(s) (shape=({n_samples}, "
                    f"{n_features})) while a minimum of {s + 1} is required by "
                    f"random_slopes={random_slopes!r}"
                )
            out.append(int(s))
        elif isinstance(s, str):
            if feature_names is None:
                raise ValueError(
                    f"random_slopes names column {s!r}, but X has no column names; "
                    f"pass X as a DataFrame or give integer positions. {_KEEP_NAMES}"
                )
            hits = np.flatnonzero(np.asarray(feature_names) == s)
            if not len(hits):
                raise ValueError(
                    f"random_slopes names column {s!r}, which is not in X "
                    f"(columns: {list(feature_names)})"
                )
            out.append(int(hits[0]))
        else:
            raise ValueError(f"random_slopes entries must be column names or positions, got {s!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"random_slopes lists a column twice: {slopes}")
    return np.asarray(out, dtype=int)


_KEEP_NAMES = (
    "A Pipeline or ColumnTransformer outputs arrays without names unless told otherwise: "
    "set_output(transform='pandas') on it keeps the column names."
)


def _slope_positions(term, feature_names, names_given=True):
    out = []
    for s in term.slopes:
        if s not in feature_names:
            raise ValueError(
                f"random_effects term {term} names the slope {s!r}, which is not a column of X "
                f"(columns: {feature_names})" + ("" if names_given else f". {_KEEP_NAMES}")
            )
        out.append(feature_names.index(s))
    return np.asarray(out, dtype=int)


def resolve_terms(
    random_effects, slopes, covariance_type, feature_names, groups, vc, names_given=True
):
    """The terms of the model, from whichever form it was given in.

    Parameters
    ----------
    random_effects : str or None
        lme4-style specification.
    slopes : ndarray of int
        Positions of ``random_slopes`` in ``X`` (the shorthand form).
    covariance_type : str
        Covariance of the shorthand form's term.
    feature_names : list of str
        Column names of ``X`` (``x0``, ``x1``, ... for arrays).
    groups, vc : LabelColumns
        The label columns of ``groups`` and ``variance_components`` (their names,
        whether the names came from the input, and their dtypes).
    names_given : bool, default=True
        Whether ``X`` named its columns (for the message of an unknown slope).

    Returns
    -------
    list of RandomTerm
        Levels not yet set (see :func:`encode_terms`).
    """
    terms = _resolve(
        random_effects, slopes, covariance_type, feature_names, groups, list(vc), names_given
    )
    dtypes = {("groups", k): v for k, v in (getattr(groups, "dtypes", None) or {}).items()} | {
        ("variance_components", k): v for k, v in (getattr(vc, "dtypes", None) or {}).items()
    }
    for t in terms:
        t.dtypes = [dtypes.get(src) for src in t.sources]
    return terms


def _resolve(random_effects, slopes, covariance_type, feature_names, groups, vc_names, names_given):
    groups_names = list(groups)
    if random_effects is None:
        if len(groups_names) > 1:
            raise ValueError(
                f"groups has {len(groups_names)} columns; several grouping factors need "
                "random_effects (for example '(1 | a) + (1 | b)' or '(1 | a/b)')"
            )
        terms = []
        group = groups_names[0] if groups_names else None
        if group is not None:
            spec = Term((group,), True, tuple(feature_names[j] for j in slopes), covariance_type)
            terms.append(RandomTerm(group, spec, [("groups", group)], np.asarray(slopes, int)))
        elif len(slopes) and vc_names:
            raise ValueError(
                "random_slopes needs groups: with groups=None the variance components are "
                "random intercepts only"
            )
        for c in vc_names:
            sources = [("groups", group)] if group is not None else []
            sources.append(("variance_components", c))
            key = tuple(f for _, f in sources)
            if len(set(key)) < len(key):
                raise ValueError(
                    f"variance_components column {c!r} has the name of the groups; rename it"
                )
            terms.append(RandomTerm(":".join(key), Term(key, True), sources, np.zeros(0, int)))
        names = _unique_names([t.name for t in terms])
        for t, name in zip(terms, names, strict=True):
            t.name = name
        return terms
    parsed = parse_random_effects(random_effects)
    factor_names = list(dict.fromkeys(f for t in parsed for f in t.group))
    rename = {}
    if len(groups_names) == 1 and len(factor_names) == 1 and factor_names != groups_names:
        if getattr(groups, "named", False):
            # A named Series or a one-column DataFrame is taken at its word: fitting it
            # under another factor's name would mislabel every table.
            raise ValueError(
                f"random_effects={random_effects!r} names the grouping factor "
                f"{factor_names[0]!r}, but groups is the column {groups_names[0]!r}. Pass "
                f"the column the term names (groups=df[[{factor_names[0]!r}]]), or name the "
                f"factor after the column ('(... | {groups_names[0]})'); only unnamed labels "
                "(an array or a list) are matched to the factor by position"
            )
        # One unnamed grouping column and one factor in the specification: the column is
        # that factor.
        rename = {factor_names[0]: groups_names[0]}
    terms = []
    for t, name in zip(parsed, _unique_names([t.name for t in parsed]), strict=True):
        sources = []
        for f in t.group:
            col = rename.get(f, f)
            if col not in groups_names:
                raise ValueError(
                    f"random_effects term {t} names the grouping factor {f!r}, which is not a "
                    f"column of groups (columns: {list(groups_names)}); pass groups as a "
                    "DataFrame with one column per factor"
                )
            sources.append(("groups", col))
        terms.append(RandomTerm(name, t, sources, _slope_positions(t, feature_names, names_given)))
    return terms


def combine_codes(codes, sizes):
    """One integer key per row from the codes of several factors (their interaction).

    The key is the mixed-radix number of the codes, the same at fit and at prediction.
    """
    if np.prod([float(max(m, 1)) for m in sizes]) >= 2.0**62:
        raise ValueError(
            f"an interaction of factors with {sizes} levels has too many possible level "
            "combinations to encode; combine the labels into one column first"
        )
    key = np.zeros(len(codes[0]), dtype=np.int64)
    for c, m in zip(codes, sizes, strict=True):
        key = key * m + c
    return key


def _set_keys(term, levels, keys):
    """Record the levels of ``term``: the factor labels and the sorted level keys."""
    sizes = [len(lv) for lv in levels]
    combos = np.empty((len(keys), len(sizes)), dtype=np.int64)
    rest = keys.copy()
    for j in range(len(sizes) - 1, -1, -1):
        combos[:, j] = rest % sizes[j]
        rest //= sizes[j]
    term.levels, term.combos, term.keys = levels, combos, keys


def encode_terms(terms, columns):
    """Fit-time level of every row per term; sets the terms' levels.

    ``columns`` maps ``(kind, name)`` to a label array (:func:`label_sources`).
    """
    cache, out = {}, []
    for t in terms:
        codes, levels = [], []
        for src in t.sources:
            if src not in cache:
                cache[src] = factorize(columns[src])
            c, lv = cache[src]
            codes.append(np.asarray(c, dtype=np.int64))
            levels.append(np.asarray(lv))
        if len(codes) == 1:  # one factor: its codes are the levels already (no sort)
            _set_keys(t, levels, np.arange(len(levels[0]), dtype=np.int64))
            out.append(codes[0].astype(np.intp, copy=False))
            continue
        key = combine_codes(codes, [len(lv) for lv in levels])
        uniq, inverse = np.unique(key, return_inverse=True)
        _set_keys(t, levels, uniq)
        out.append(inverse.astype(np.intp))
    return out


def terms_from_labels(terms, distinct_labels, distinct_rows):
    """Set the terms' levels from the distinct labels of the data (no row pass).

    Parameters
    ----------
    distinct_labels : dict
        ``(kind, name)`` -> the distinct labels of that column.
    distinct_rows : dict
        Term name -> a DataFrame of the distinct label combinations of a term with
        several factors (its columns in the order of ``sources``).

    The levels and keys are those :func:`encode_terms` gives on the whole data.
    """
    levels_of = {src: np.asarray(factorize(v)[1]) for src, v in distinct_labels.items()}
    for t in terms:
        levels = [levels_of[src] for src in t.sources]
        if len(levels) == 1:
            keys = np.arange(len(levels[0]), dtype=np.int64)
        else:
            rows = distinct_rows[t.name]
            codes = [
                match_labels(lv, rows.iloc[:, j].to_numpy()).astype(np.int64)
                for j, lv in enumerate(levels)
            ]
            keys = np.unique(combine_codes(codes, [len(lv) for lv in levels]))
        _set_keys(t, levels, keys)


def match_terms(terms, columns, n_rows):
    """Level of every row per term (-1: unseen, or its labels not given)."""
    out = []
    for t in terms:
        idx = []
        for src, lv in zip(t.sources, t.levels, strict=True):
            values = columns.get(src)
            idx.append(np.full(n_rows, -1) if values is None else match_labels(lv, values))
        idx = [np.asarray(i, dtype=np.int64) for i in idx]
        unseen = np.any(np.column_stack(idx) < 0, axis=1) if n_rows else np.zeros(0, bool)
        key = combine_codes([np.where(unseen, 0, i) for i in idx], [len(lv) for lv in t.levels])
        pos = np.minimum(np.searchsorted(t.keys, key), len(t.keys) - 1)
        found = ~unseen & (t.keys[pos] == key)
        out.append(np.where(found, pos, -1))
    return out


def label_sources(groups_cols, vc_cols):
    """One mapping ``(kind, name) -> labels`` from the two kinds of label columns."""
    out = {("groups", k): v for k, v in groups_cols.items()}
    out.update({("variance_components", k): v for k, v in vc_cols.items()})
    return out


def align_labels(given, terms, kind, fitted_columns):
    """The label columns given at prediction, under the names the terms use.

    Named columns (a DataFrame, a named Series) are matched by name to the named columns
    of ``fit``. Unnamed labels (an array, a list), or any labels for a model fitted on
    unnamed ones, are matched by position, in the order of ``fit``'s columns, if there
    are as many as in ``fit``. A column the model needs that cannot be matched is an
    error, and so is ``None`` for a kind of labels the model needs when the other kind
    is given: treating those labels as unseen would silently drop terms from every
    prediction. (Both ``None``: population predictions, handled by the caller.)
    """
    wanted = list(dict.fromkeys(col for t in terms for k, col in t.sources if k == kind))
    if not wanted:
        return given
    if not given:
        raise ValueError(
            f"{kind}=None, but the model's terms {[str(t.spec) for t in terms]} use its "
            f"columns {wanted}: pass them as in fit (or every label argument None for "
            "population predictions)"
        )
    if set(wanted) <= set(given):
        return given
    named = getattr(given, "named", False) and getattr(fitted_columns, "named", False)
    if len(given) == len(fitted_columns) and not set(given) & set(fitted_columns):
        if not named:
            return dict(zip(fitted_columns, given.values(), strict=True))
        raise ValueError(
            f"{kind} at prediction is named {list(given)}, but the model was fitted with "
            f"{fitted_columns}: named labels are matched by name. Pass the columns of fit "
            "(rename them), or unnamed labels (.to_numpy()) to match them by position"
        )
    missing = [c for c in wanted if c not in given]
    raise ValueError(
        f"{kind} at prediction has the columns {list(given)} but the model was fitted with "
        f"{fitted_columns}: {missing} are missing. Pass the same columns as in fit (or "
        "every label argument None for population predictions)"
    )


def lost_levels(all_rows, kept_rows):
    """Levels of each term seen on all rows but not on the kept ones (rows of weight 0).

    ``all_rows`` and ``kept_rows`` are the same terms, their levels set from all the rows
    and from the kept rows. Returns ``{term name: [levels]}`` (at most 10 per term) for
    the terms that lost levels.
    """
    out = {}
    for full, kept in zip(all_rows, kept_rows, strict=True):
        lost = full.index().difference(kept.index())
        if len(lost):
            out[full.name] = lost.tolist()[:10]
    return out


def check_term_sizes(terms, n):
    """Errors for a term with one level or with no fewer random effects than rows."""
    for t in terms:
        if t.n_levels < 2:
            raise ValueError(
                f"the random-effects term {t.spec} has a single level "
                f"({t.index()[0]!r}); a variance needs at least two levels. Pass "
                "groups=None to fit without random effects."
            )
        if n <= t.n_levels * t.q:
            # lme4's check.nobs.vs.nRE: with no more rows than random effects, they would
            # absorb the residual variance.
            raise ValueError(
                f"{n} rows for the {t.n_levels} levels x {t.q} random effects of the term "
                f"{t.spec}: the number of rows must exceed the number of random effects of "
                "every term, or the residual and random-effect variances cannot be told apart "
                "(for example, every level has a single row). Use fewer random slopes or "
                "coarser groups."
            )
