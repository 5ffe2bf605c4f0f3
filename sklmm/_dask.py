"""Fit and predict on Dask collections, for every model.

The statistics of a model (:class:`~sklmm._crossprod.BlockedStats`) are sums over the
rows, so they add up over any partition of the rows, even when one level's rows are
spread over many partitions. ``fit`` reduces each Dask partition to its own statistics
and sums them with a tree reduction; the optimization then runs in the client process,
on the small per-level arrays only, exactly as for in-memory data, through the same
:func:`~sklmm._model.model_from_stats`. No partition is ever brought to the client.

Two passes over the data:

1. per-partition summaries (row count, column sums of ``X``, sum and largest ``|y|``,
   non-finite values, bad labels, the distinct labels of every label column and the
   distinct label combinations of every interaction term), combined in order by a
   tree reduction: the validation and centring of the in-memory path, and the levels
   of every term (:func:`~sklmm._terms.terms_from_labels`);
2. per-partition statistics of the centred ``[Z_1 ... Z_K X y]``, with each row's
   level of every term looked up among the levels, summed by a tree reduction.

Dask is an optional dependency: this module is imported only when ``fit`` or
``predict`` receives a Dask collection. Nothing here knows of the estimator.
"""

import copy

import numpy as np
import pandas as pd
from sklearn.utils.validation import _get_feature_names

from ._crossprod import sum_stats
from ._exceptions import warn_lost_levels
from ._fitted import predict_labels
from ._model import centring, check_before_stats, model_from_stats, row_readers
from ._terms import label_sources, lost_levels, match_terms, terms_from_labels
from ._validation import LabelColumns, check_labels, label_columns, prepare_X

#: Partial results combined per node of the tree reductions.
SPLIT_EVERY = 8

_ALIGN_HINT = (
    "; give X, y and the labels the same partitions (for example, columns of one Dask "
    "DataFrame, or Dask arrays with the same chunks along the rows)"
)

_LABELS = ("groups", "variance_components")


# -- what the inputs are ------------------------------------------------------------------
def _kind(obj):
    """'frame', 'series', 'array' or None (not a Dask collection this module handles)."""
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(obj, dd.DataFrame):
        return "frame"
    if isinstance(obj, dd.Series):
        return "series"
    if isinstance(obj, da.Array):
        return "array"
    return None


def _describe(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _require_dask(obj, name, allowed):
    kind = _kind(obj)
    if kind not in allowed:
        what = {
            "frame": "a Dask DataFrame",
            "series": "a Dask Series",
            "array": "a Dask Array",
        }
        raise TypeError(
            f"{name} must be {' or '.join(what[k] for k in allowed)} when fit or predict "
            f"receives Dask input, got {_describe(obj)}; pass X, y and the labels all as "
            "Dask collections (or all in memory)"
        )
    return kind


def _n_blocks(obj, kind):
    return obj.npartitions if kind in ("frame", "series") else obj.numblocks[0]


def _blocks(obj, kind):
    """One Delayed per partition (row block), in order.

    The graphs are not optimized per collection, so that X, y and groups taken from
    one DataFrame share its partitions' tasks (read or generated once) when they are
    computed together.
    """
    if kind == "array":
        return list(obj.to_delayed(optimize_graph=False).ravel())
    return list(obj.to_delayed(optimize_graph=False))


def _rows_known(obj):
    return not np.isnan(obj.shape[0])


def _align_arrays(X, others):
    """Rechunk the Dask arrays among ``others`` to the row chunks of Dask array ``X``."""
    out = {}
    for name, (obj, kind) in others.items():
        if kind == "array" and _rows_known(X) and _rows_known(obj):
            if obj.shape[0] != X.shape[0]:
                what = "entries" if name != "X" else "rows"
                raise ValueError(
                    f"{name} has {obj.shape[0]} {what} but X has {X.shape[0]} rows{_ALIGN_HINT}"
                )
            if obj.chunks[0] != X.chunks[0]:
                obj = obj.rechunk({0: X.chunks[0]})
        out[name] = (obj, kind)
    return out


def _check_partitions(parts):
    counts = {name: _n_blocks(obj, kind) for name, (obj, kind) in parts.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name} has {c}" for name, c in counts.items())
        raise ValueError(
            f"X, y and the labels are split into different numbers of partitions "
            f"({detail}){_ALIGN_HINT}"
        )


def _tree_reduce(parts, combine, split_every=SPLIT_EVERY):
    """Combine Delayed partial results in order, ``split_every`` at a time."""
    import dask

    combine = dask.delayed(combine, pure=True)
    while len(parts) > 1:
        parts = [combine(*parts[i : i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0]


# -- one partition as numpy -----------------------------------------------------------------
def _x_block(part):
    """A partition of X as a float64 array, with the in-memory path's errors."""
    if isinstance(part, pd.DataFrame):
        if part.shape[1] == 0:
            return np.zeros((len(part), 0))
        prepare_X(part)
        return part.to_numpy(dtype=np.float64, na_value=np.nan)
    part = prepare_X(np.asarray(part))
    return np.asarray(part, dtype=np.float64)


def _y_block(part):
    if isinstance(part, pd.Series):
        try:
            return part.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            raise ValueError(
                f"y has non-numeric values (first value {part.iloc[0]!r}); mixed models "
                "need a numeric response"
            ) from None
    part = np.asarray(part)
    try:
        return part.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"y has non-numeric values (first value {part[0]!r}); mixed models need a "
            "numeric response"
        ) from None


def _w_block(part):
    """A partition of the weights as float64 (its checks are made in pass 1)."""
    if part is None:
        return None
    values = part.to_numpy() if isinstance(part, pd.Series) else np.asarray(part)
    try:
        return np.asarray(values, dtype=np.float64).reshape(len(values))
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be numbers, one per row of X") from None


def _raw_labels(part, what):
    """A partition of labels as named raw columns (before any check)."""
    if part is None:
        return LabelColumns()
    return label_columns(part, what, None, check=lambda values, n, name: values)


def _check_lengths(i, X, y, labels, w=None):
    sizes = {"X": len(X)}
    if y is not None:
        sizes["y"] = len(y)
    if w is not None:
        sizes["sample_weight"] = len(w)
    for what, cols in labels.items():
        for values in cols.values():
            sizes[what] = len(values)
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise ValueError(
            f"X, y and the labels are not aligned: partition {i} has rows {detail}{_ALIGN_HINT}"
        )


# -- pass 1: validation, means, levels --------------------------------------------------------
def _label_summary(values, keep=None):
    """Checks of a partition's labels; its distinct labels (of the rows of positive weight)."""
    values = np.asarray(values.astype(object) if isinstance(values, pd.Series) else values)
    missing = pd.isna(values)
    bad = ~np.isfinite(values) if values.dtype.kind == "f" else np.zeros(len(values), bool)
    valid = values[~missing] if missing.any() else values
    kept = valid if keep is None else values[keep & ~missing]
    return {
        "missing": np.flatnonzero(missing)[:5].tolist(),
        "complex": values.dtype.kind == "c",
        "inf": np.flatnonzero(bad & ~missing)[:5].tolist(),
        "distinct": pd.unique(kept),
        "distinct_all": None if keep is None else pd.unique(valid),
    }


def _summary(i, Xp, yp, gp, vp, wp, interactions):
    X, y, w = _x_block(Xp), _y_block(yp), _w_block(wp)
    labels = {
        "groups": _raw_labels(gp, "groups"),
        "variance_components": _raw_labels(vp, _LABELS[1]),
    }
    _check_lengths(i, X, y, labels, w)
    keep = None if w is None else w > 0
    with np.errstate(over="ignore", invalid="ignore"):
        weights = np.ones(len(X)) if w is None else np.where(keep, w, 0.0)
        x_sum = weights @ X
        out = {
            "n_rows": len(X),
            "n": len(X) if w is None else int(keep.sum()),
            "w_sum": float(weights.sum()),
            "x_sum": x_sum,
            # A NaN or an infinity in X makes its column sum NaN or infinite.
            "x_nan": bool(not np.isfinite(x_sum).all() and np.isnan(X).any()),
            "x_inf": bool(not np.isfinite(x_sum).all() and np.isinf(X).any()),
            "y_sum": float(weights @ y),
            "y_max": float(np.max(np.abs(y), initial=0.0)),
            "y_nan": bool(np.isnan(y).any()),
            "y_inf": bool(np.isinf(y).any()),
            "w_bad": {},
        }
    if w is not None:
        for bad, what in ((np.isnan(w), "NaN"), (np.isinf(w), "infinite"), (w < 0, "negative")):
            if bad.any():
                out["w_bad"][what] = (int(bad.sum()), np.flatnonzero(bad)[:5].tolist())
    out["labels"] = {
        (what, name): _label_summary(values, keep)
        for what, cols in labels.items()
        for name, values in cols.items()
    }
    columns = label_sources(labels["groups"], labels["variance_components"])
    out["rows"] = {}
    out["rows_all"] = {}
    for name, sources in interactions.items():
        if all(src in columns for src in sources):
            frame = pd.DataFrame({j: np.asarray(columns[src]) for j, src in enumerate(sources)})
            if keep is not None:
                out["rows_all"][name] = frame.drop_duplicates()
                frame = frame[keep]
            out["rows"][name] = frame.drop_duplicates()
    return out


def _combine_summaries(*parts):
    """Sum the summaries in row order (so row numbers and first appearances stay right)."""
    out = dict(parts[0])
    out["labels"] = {k: dict(v) for k, v in out["labels"].items()}
    out["rows"] = dict(out["rows"])
    out["rows_all"] = dict(out["rows_all"])
    out["w_bad"] = dict(out["w_bad"])
    for b in parts[1:]:
        offset = out["n_rows"]
        out["n_rows"] = offset + b["n_rows"]
        out["n"] += b["n"]
        out["w_sum"] += b["w_sum"]
        with np.errstate(over="ignore", invalid="ignore"):
            out["x_sum"] = out["x_sum"] + b["x_sum"]
        out["y_sum"] += b["y_sum"]
        for what, (count, rows) in b["w_bad"].items():
            c0, r0 = out["w_bad"].get(what, (0, []))
            out["w_bad"][what] = (c0 + count, (r0 + [r + offset for r in rows])[:5])
        out["y_max"] = max(out["y_max"], b["y_max"])
        for key in ("x_nan", "x_inf", "y_nan", "y_inf"):
            out[key] = out[key] or b[key]
        for key, s in b["labels"].items():
            mine = out["labels"][key]
            for field in ("missing", "inf"):
                mine[field] = (mine[field] + [r + offset for r in s[field]])[:5]
            mine["complex"] = mine["complex"] or s["complex"]
            mine["distinct"] = pd.unique(np.concatenate([mine["distinct"], s["distinct"]]))
            if mine["distinct_all"] is not None:
                mine["distinct_all"] = pd.unique(
                    np.concatenate([mine["distinct_all"], s["distinct_all"]])
                )
        for key in ("rows", "rows_all"):
            for name, frame in b[key].items():
                out[key][name] = pd.concat([out[key][name], frame]).drop_duplicates()
    return out


# -- pass 2: statistics ------------------------------------------------------------------------
def _partition_stats(Xp, yp, gp, vp, wp, terms, centres, fit_intercept):
    X, y, w = _x_block(Xp), _y_block(yp), _w_block(wp)
    labels = label_sources(_raw_labels(gp, "groups"), _raw_labels(vp, _LABELS[1]))
    labels = {
        k: np.asarray(v.astype(object) if isinstance(v, pd.Series) else v)
        for k, v in labels.items()
    }
    if w is not None:  # rows of weight 0 are left out, as in memory
        keep = w > 0
        X, y, w = X[keep], y[keep], w[keep]
        labels = {k: v[keep] for k, v in labels.items()}
    n = len(y)
    codes = match_terms(terms, labels, n)
    if any((c < 0).any() for c in codes):  # cannot happen: the levels are this data's labels
        raise RuntimeError("a label was not found among the levels of the data")
    x_mean, y_centre, z_means = centres
    x_rows, z_rows = row_readers(X, terms, x_mean, z_means, fit_intercept)
    from ._crossprod import model_stats

    with np.errstate(over="ignore", invalid="ignore"):  # huge X: checked by model_from_stats
        return model_stats(
            x_rows, y - y_centre, codes, [t.n_levels for t in terms], z_rows, weights=w
        )


# -- fit ---------------------------------------------------------------------------------------
def _features(X, kind):
    """``n_features`` and feature names (or None) of Dask ``X``, as ``validate_data`` sets them."""
    if kind == "frame":
        meta = X._meta
        prepare_X(meta)  # non-numeric or complex columns: the in-memory errors
        names = _get_feature_names(meta)
        return int(meta.shape[1]), names
    if X.ndim != 2:
        raise ValueError(
            f"X must be a 2-D Dask array, got {X.ndim}-D (shape {X.shape}); reshape it "
            "with X.reshape(-1, 1) for a single feature"
        )
    if X.dtype.kind == "c":
        raise ValueError(
            "Complex data not supported: X contains complex numbers; mixed models "
            "need real-valued columns"
        )
    if X.dtype.kind not in "biufOUS":
        raise ValueError(f"X has dtype {X.dtype}; mixed models need numeric columns")
    return int(X.shape[1]), None


def _label_input(obj, what, parts):
    """Check a Dask label argument; add it to ``parts``; return its (empty) columns.

    The :class:`~sklmm._validation.LabelColumns` of the metadata: the names of the
    columns, whether the input named them, their dtypes.
    """
    if obj is None:
        return LabelColumns()
    kind = _require_dask(obj, what, ("series", "frame", "array"))
    if kind == "array":
        if obj.dtype.kind == "c":
            raise ValueError(f"{what} contains complex numbers; use integer or string labels")
        if obj.ndim not in (1, 2):
            raise ValueError(f"{what} must be 1-D or 2-D, got an array of shape {obj.shape}")
        if obj.ndim == 2 and obj.numblocks[1] > 1:
            obj = obj.rechunk({1: -1})
    parts[what] = (obj, kind)
    meta = obj._meta if kind != "array" else np.empty((0, *obj.shape[1:]), dtype=obj.dtype)
    return _raw_labels(meta, what)


class DaskData:
    """Dask ``X``, ``y`` and label columns, checked and aligned, ready for the two passes.

    Attributes
    ----------
    n_features : int
    feature_names : ndarray or None
    groups_names, vc_names : LabelColumns
        The label columns' names (iterating gives them), whether the input named them,
        and their dtypes.
    """

    def __init__(self, X, y, groups, variance_components, sample_weight=None):
        kx = _require_dask(X, "X", ("frame", "array"))
        ky = _require_dask(y, "y", ("series", "array"))
        if ky == "array" and y.ndim != 1:
            raise ValueError(f"y must be 1-D, got a Dask array of shape {y.shape}")
        self.weighted = sample_weight is not None
        self.n_features, self.feature_names = _features(X, kx)
        if kx == "array" and X.numblocks[1] > 1:
            X = X.rechunk({1: -1})  # whole rows in each block
        parts = {"X": (X, kx), "y": (y, ky)}
        self.groups_names = _label_input(groups, "groups", parts)
        self.vc_names = _label_input(variance_components, "variance_components", parts)
        if sample_weight is not None:
            kw = _require_dask(sample_weight, "sample_weight", ("series", "array"))
            if kw == "array" and sample_weight.ndim != 1:
                raise ValueError(
                    f"sample_weight must be 1-D, got a Dask array of shape {sample_weight.shape}"
                )
            parts["sample_weight"] = (sample_weight, kw)
        if kx == "array":
            parts = _align_arrays(X, parts)
        _check_partitions(parts)
        blocks = {name: _blocks(obj, kind) for name, (obj, kind) in parts.items()}
        none = [None] * len(blocks["X"])
        self._blocks = [
            blocks["X"],
            blocks["y"],
            blocks.get("groups", none),
            blocks.get("variance_components", none),
            blocks.get("sample_weight", none),
        ]

    def summarize(self, terms):
        """Pass 1: the combined summary of every partition; sets the terms' levels."""
        import dask

        interactions = {t.name: t.sources for t in terms if len(t.sources) > 1}
        task = dask.delayed(_summary, pure=True)
        parts = [task(i, *b, interactions) for i, b in enumerate(zip(*self._blocks, strict=True))]
        (s,) = dask.compute(_tree_reduce(parts, _combine_summaries))
        if s["x_nan"]:
            raise ValueError("Input X contains NaN.")
        if s["x_inf"]:
            raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
        if s["y_nan"]:
            raise ValueError("Input y contains NaN.")
        if s["y_inf"]:
            raise ValueError("Input y contains infinity or a value too large for dtype('float64').")
        for what, (count, rows) in s["w_bad"].items():
            raise ValueError(
                f"sample_weight has {count} {what} value(s), at rows {rows}; precision "
                "weights must be finite and non-negative"
            )
        if self.weighted and s["n"] == 0:
            raise ValueError("sample_weight is zero on every row: there is nothing to fit")
        n = s["n"]
        if n < 2:
            raise ValueError(
                f"Found array with {n} sample(s) (shape=({n}, {self.n_features})) while a "
                "minimum of 2 is required by MixedLMRegressor."
            )
        single = {
            w: len(self.groups_names if w == "groups" else self.vc_names) == 1 for w in _LABELS
        }
        for (what, name), ls in s["labels"].items():
            label = what if single[what] else f"{what} column {name!r}"
            if ls["missing"]:
                raise ValueError(
                    f"{label} contains missing labels (None or NaN) at rows {ls['missing']}"
                )
            if ls["complex"]:
                raise ValueError(f"{label} contains complex numbers; use integer or string labels")
            if ls["inf"]:
                raise ValueError(f"{label} contains infinite labels at rows {ls['inf']}")
        terms_from_labels(
            terms, {key: ls["distinct"] for key, ls in s["labels"].items()}, s["rows"]
        )
        if self.weighted:  # the levels of the rows of weight 0 alone are left out
            all_terms = copy.deepcopy(terms)
            terms_from_labels(
                all_terms,
                {key: ls["distinct_all"] for key, ls in s["labels"].items()},
                s["rows_all"],
            )
            warn_lost_levels(lost_levels(all_terms, terms))
        return s

    def model(self, terms, summary, *, fit_intercept, reml, feature_names):
        """Pass 2: the :class:`~sklmm._model.MixedModel` from the summed statistics."""
        import dask

        n, total = summary["n"], summary["w_sum"]
        check_before_stats(terms, n, summary["y_max"])
        col_means = summary["x_sum"] / total
        centres = centring(terms, col_means, summary["y_sum"] / total, fit_intercept)
        shared = dask.delayed(terms, pure=True)
        task = dask.delayed(_partition_stats, pure=True)
        parts = [task(*b, shared, centres, fit_intercept) for b in zip(*self._blocks, strict=True)]
        (raw,) = dask.compute(_tree_reduce(parts, sum_stats))
        labels = {"groups": self.groups_names.names(), "variance_components": self.vc_names.names()}
        options = {"fit_intercept": fit_intercept, "reml": reml, "feature_names": feature_names}
        weight_total = total if self.weighted else None
        return model_from_stats(
            raw,
            terms,
            col_means,
            centres,
            labels,
            weight_total=weight_total,
            names_given=self.feature_names is not None,
            **options,
        )


# -- predict -------------------------------------------------------------------------------
def _predict_block(Xp, gp, vp, fitted, return_std, include_residual):
    X = _x_block(Xp)
    if not np.isfinite(X).all():  # the in-memory predict's errors
        if np.isnan(X).any():
            raise ValueError("Input X contains NaN.")
        raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
    labels = {
        "groups": _raw_labels(gp, "groups"),
        "variance_components": _raw_labels(vp, _LABELS[1]),
    }
    _check_lengths(0, X, None, labels)
    n = len(X)
    cols = {
        what: {k: check_labels(v, n, what) for k, v in labels[what].items()} for what in _LABELS
    }
    out = predict_labels(
        fitted,
        X,
        cols["groups"],
        cols["variance_components"],
        return_std=return_std,
        include_residual=include_residual,
    )
    return np.column_stack(out) if return_std else out


def _predict_frame_block(Xp, gp, vp, fitted, return_std, include_residual):
    out = _predict_block(Xp, gp, vp, fitted, return_std, include_residual)
    if return_std:
        return pd.DataFrame(out, index=Xp.index, columns=["prediction", "std"])
    return pd.Series(out, index=Xp.index, name="prediction")


def predict_dask(fitted, X, groups, variance_components, check_features, **kwargs):
    """Lazy predictions over the partitions of Dask ``X`` (and labels).

    Parameters
    ----------
    fitted : FittedModel
        The fitted model.
    X : dask.dataframe.DataFrame or dask.array.Array of shape (n_samples, n_features)
        Covariates.
    groups, variance_components : Dask collections or None
        Labels, partitioned like ``X``; unseen levels get no contribution.
    check_features : callable
        ``check_features(empty_X)`` checks the columns (count, names) once, on the
        client, as the in-memory ``predict`` does.
    **kwargs
        ``return_std`` and ``include_residual``.

    Returns
    -------
    y_pred : dask.array.Array or dask.dataframe.Series
        A Dask Array for array ``X``, a Dask Series (indexed like ``X``) for a
        Dask DataFrame; nothing is computed until asked.
    y_std : same type as ``y_pred``
        When ``return_std=True``.
    """
    import dask
    import dask.array as da

    return_std = kwargs.get("return_std", False)
    include_residual = kwargs.get("include_residual", False)
    kx = _require_dask(X, "X", ("frame", "array"))
    if kx == "array" and X.ndim != 2:
        raise ValueError(f"X must be a 2-D Dask array, got {X.ndim}-D (shape {X.shape})")
    check_features(prepare_X(X._meta) if kx == "frame" else np.zeros((0, X.shape[1])))
    if kx == "array" and X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    parts = {"X": (X, kx)}
    for what, obj in (("groups", groups), ("variance_components", variance_components)):
        if obj is None:
            continue
        allowed = ("series", "frame") if kx == "frame" else ("array",)
        kind = _require_dask(obj, what, allowed)
        if kind == "array" and obj.ndim == 2 and obj.numblocks[1] > 1:
            obj = obj.rechunk({1: -1})
        if kind == "array" and obj.ndim not in (1, 2):
            raise ValueError(f"{what} must be 1-D or 2-D, got an array of shape {obj.shape}")
        parts[what] = (obj, kind)
    if kx == "array":
        parts = _align_arrays(X, parts)
    _check_partitions(parts)
    g = parts.get("groups", (None,))[0]
    v = parts.get("variance_components", (None,))[0]
    # one task, shared by every partition
    fitted_d = dask.delayed(fitted.for_prediction(return_std), pure=True)

    if kx == "frame":
        meta = (
            pd.DataFrame({"prediction": pd.Series(dtype="f8"), "std": pd.Series(dtype="f8")})
            if return_std
            else pd.Series(dtype="f8", name="prediction")
        )
        out = X.map_partitions(
            _predict_frame_block, g, v, fitted_d, return_std, include_residual, meta=meta
        )
        return (out["prediction"], out["std"]) if return_std else out
    args = []
    for obj, col in ((g, "l"), (v, "m")):
        if obj is None:
            args += [None, None]
        else:
            args += [obj, "i" if obj.ndim == 1 else "i" + col]
    # One column of predictions, or two (prediction, std) on a new axis.
    extra = {"new_axes": {"j": 2}} if return_std else {}
    out = da.blockwise(
        _predict_block,
        "ij" if return_std else "i",
        X,
        "ik",
        *args,
        fitted_d,
        None,
        return_std,
        None,
        include_residual,
        None,
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((0, 0) if return_std else 0),
        **extra,
    )
    return (out[:, 0], out[:, 1]) if return_std else out
