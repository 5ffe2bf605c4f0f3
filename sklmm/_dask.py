"""Fit and predict on Dask collections.

The sufficient statistics of the model (:class:`~sklmm._crossprod.SufficientStats`)
are sums over the rows, so they add up over any partition of the rows, even when
one group's rows are spread over many partitions. ``fit`` reduces each Dask
partition to its own statistics and sums them with a tree reduction; the
optimization then runs in the client process, on the small per-group arrays
only, exactly as for in-memory data. No partition is ever brought to the client.

Two passes over the data:

1. per-partition summaries (row count, column sums of ``X``, sum and largest
   ``|y|``, non-finite values, bad group labels and the distinct labels), combined
   in order by a tree reduction: the validation and centring of the in-memory
   path, and the sorted group levels;
2. per-partition cross-products of the centred ``[Z X y]``, with each row's group
   code looked up among the levels, summed by a tree reduction.

Dask is an optional dependency: this module is imported only when ``fit`` or
``predict`` receives a Dask collection.
"""

import copy

import numpy as np
import pandas as pd
from sklearn.utils.validation import _get_feature_names, check_is_fitted, validate_data

from ._crossprod import SufficientStats, compute_stats
from ._estimator import _factorize

#: Partial results combined per node of the tree reductions.
SPLIT_EVERY = 8

_ALIGN_HINT = (
    "; give X, y and groups the same partitions (for example, columns of one Dask "
    "DataFrame, or Dask arrays with the same chunks along the rows)"
)


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
            f"receives Dask input, got {_describe(obj)}; pass X, y and groups all as Dask "
            "collections (or all in memory)"
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
            f"X, y and groups are split into different numbers of partitions "
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
    from ._estimator import MixedLMRegressor

    if isinstance(part, pd.DataFrame):
        if part.shape[1] == 0:
            return np.zeros((len(part), 0))
        MixedLMRegressor._prepare_X(part)
        return part.to_numpy(dtype=np.float64, na_value=np.nan)
    part = MixedLMRegressor._prepare_X(np.asarray(part))
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


def _group_block(part):
    """A partition of groups as the 1-D numpy labels ``_check_groups`` would see."""
    if isinstance(part, pd.DataFrame):
        part = part.iloc[:, 0]
    values = np.asarray(part.astype(object) if isinstance(part, pd.Series) else part)
    if values.ndim == 2:
        values = values[:, 0]
    return values


def _check_lengths(i, X, y, g):
    sizes = {"X": len(X), "y": len(y)}
    if g is not None:
        sizes["groups"] = len(g)
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise ValueError(
            f"X, y and groups are not aligned: partition {i} has rows {detail}{_ALIGN_HINT}"
        )


# -- pass 1: validation, means, levels --------------------------------------------------------
def _summary(i, Xp, yp, gp):
    X, y = _x_block(Xp), _y_block(yp)
    g = None if gp is None else _group_block(gp)
    _check_lengths(i, X, y, g)
    with np.errstate(over="ignore", invalid="ignore"):
        x_sum = np.ones(len(X)) @ X
        out = {
            "n": len(X),
            "x_sum": x_sum,
            # A NaN or an infinity in X makes its column sum NaN or infinite.
            "x_nan": bool(not np.isfinite(x_sum).all() and np.isnan(X).any()),
            "x_inf": bool(not np.isfinite(x_sum).all() and np.isinf(X).any()),
            "y_sum": float(y.sum()),
            "y_max": float(np.max(np.abs(y), initial=0.0)),
            "y_nan": bool(np.isnan(y).any()),
            "y_inf": bool(np.isinf(y).any()),
        }
    if g is not None:
        missing = pd.isna(g)
        out["g_missing"] = np.flatnonzero(missing)[:5].tolist()
        out["g_complex"] = g.dtype.kind == "c"
        bad = ~np.isfinite(g) if g.dtype.kind == "f" else np.zeros(len(g), dtype=bool)
        out["g_inf"] = np.flatnonzero(bad)[:5].tolist()
        out["levels"] = pd.unique(g[~missing]) if missing.any() else pd.unique(g)
    return out


def _combine_summaries(*parts):
    """Sum the summaries in row order (so row numbers and first appearances stay right)."""
    out = dict(parts[0])
    for b in parts[1:]:
        offset = out["n"]
        out["n"] = offset + b["n"]
        with np.errstate(over="ignore", invalid="ignore"):
            out["x_sum"] = out["x_sum"] + b["x_sum"]
        out["y_sum"] += b["y_sum"]
        out["y_max"] = max(out["y_max"], b["y_max"])
        for key in ("x_nan", "x_inf", "y_nan", "y_inf"):
            out[key] = out[key] or b[key]
        if "levels" in out:
            for key in ("g_missing", "g_inf"):
                out[key] = (out[key] + [r + offset for r in b[key]])[:5]
            out["g_complex"] = out["g_complex"] or b["g_complex"]
            out["levels"] = pd.unique(np.concatenate([out["levels"], b["levels"]]))
    return out


# -- pass 2: cross-products ------------------------------------------------------------------
def _partition_stats(Xp, yp, gp, levels, fit_intercept, slopes, centres, q, n_groups):
    X, y = _x_block(Xp), _y_block(yp)
    n = len(y)
    if gp is None:
        codes = np.zeros(n, dtype=np.intp)
    else:
        codes = pd.Index(levels).get_indexer(_group_block(gp))
        if (codes < 0).any():  # cannot happen: the levels are this data's labels
            raise RuntimeError("a group label was not found among the levels of the data")
    x_mean, y_centre, z_mean = centres

    def x_rows(a, b):
        Xc = X[a:b] - x_mean
        return np.column_stack([np.ones(b - a), Xc]) if fit_intercept else Xc

    def z_rows(a, b):
        return np.column_stack([np.ones(b - a), X[a:b, slopes] - z_mean])

    with np.errstate(over="ignore", invalid="ignore"):  # huge X: checked by _fit_design
        return compute_stats(
            x_rows, z_rows if q else np.zeros((n, 0)), y - y_centre, codes, n_groups
        )


def _sum_stats(*parts):
    with np.errstate(over="ignore", invalid="ignore"):
        return SufficientStats(
            ZtZ=sum(s.ZtZ for s in parts[1:]) + parts[0].ZtZ,
            ZtXy=sum(s.ZtXy for s in parts[1:]) + parts[0].ZtXy,
            XytXy=sum(s.XytXy for s in parts[1:]) + parts[0].XytXy,
            counts=sum(s.counts for s in parts[1:]) + parts[0].counts,
            n=sum(s.n for s in parts),
        )


# -- fit ---------------------------------------------------------------------------------------
def _set_features(est, X, kind):
    """``n_features_in_`` and ``feature_names_in_`` as ``validate_data(reset=True)`` sets them."""
    if kind == "frame":
        meta = X._meta
        est._prepare_X(meta)  # non-numeric or complex columns: the in-memory errors
        n_features, names = meta.shape[1], _get_feature_names(meta)
    else:
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
        n_features, names = X.shape[1], None
    est.n_features_in_ = int(n_features)
    if names is None:
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    else:
        est.feature_names_in_ = np.asarray(names, dtype=object)


def _inputs(X, y, groups):
    """Check the kinds of X, y and groups; return them aligned, with their kinds."""
    kx = _require_dask(X, "X", ("frame", "array"))
    ky = _require_dask(y, "y", ("series", "array"))
    if ky == "array" and y.ndim != 1:
        raise ValueError(f"y must be 1-D, got a Dask array of shape {y.shape}")
    parts = {"X": (X, kx), "y": (y, ky)}
    if groups is not None:
        kg = _require_dask(groups, "groups", ("series", "frame", "array"))
        if kg == "frame" and len(groups.columns) != 1:
            raise ValueError(
                "groups must be one column of labels, got a DataFrame with "
                f"{len(groups.columns)} columns"
            )
        if kg == "array" and not (groups.ndim == 1 or (groups.ndim == 2 and groups.shape[1] == 1)):
            raise ValueError(f"groups must be 1-D, got an array of shape {groups.shape}")
        if kg == "array" and groups.dtype.kind == "c":
            raise ValueError("groups contains complex numbers; use integer or string labels")
        parts["groups"] = (groups, kg)
    if kx == "array" and X.ndim == 2 and X.numblocks[1] > 1:
        X = X.rechunk({1: -1})  # whole rows in each block
        parts["X"] = (X, kx)
    if kx == "array":
        parts = _align_arrays(X, parts)
    _check_partitions(parts)
    return parts


def dask_design(est, X, y, groups):
    """The Dask counterpart of ``MixedLMRegressor._design``.

    Parameters
    ----------
    est : MixedLMRegressor
        The estimator being fitted; its ``n_features_in_`` and
        ``feature_names_in_`` are set here.
    X : dask.dataframe.DataFrame or dask.array.Array of shape (n_samples, n_features)
        Numeric covariates.
    y : dask.dataframe.Series or dask.array.Array of shape (n_samples,)
        Response.
    groups : dask.dataframe.Series, dask.array.Array or None
        Group labels, partitioned like ``X`` and ``y``.

    Returns
    -------
    dict
        The keys of ``_design``'s result: ``stats``, ``levels``, ``slopes``,
        ``col_means``, ``centres``, ``groups_name``.
    """
    import dask

    parts = _inputs(X, y, groups)
    X, kx = parts["X"]
    _set_features(est, X, kx)
    blocks = {name: _blocks(obj, kind) for name, (obj, kind) in parts.items()}
    g_blocks = blocks.get("groups", [None] * len(blocks["X"]))
    triples = list(zip(blocks["X"], blocks["y"], g_blocks, strict=True))

    summary_task = dask.delayed(_summary, pure=True)
    summaries = [summary_task(i, *t) for i, t in enumerate(triples)]
    (s,) = dask.compute(_tree_reduce(summaries, _combine_summaries))

    n = s["n"]
    if s["x_nan"]:
        raise ValueError("Input X contains NaN.")
    if s["x_inf"]:
        raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
    if s["y_nan"]:
        raise ValueError("Input y contains NaN.")
    if s["y_inf"]:
        raise ValueError("Input y contains infinity or a value too large for dtype('float64').")
    if n < 2:
        raise ValueError(
            f"Found array with {n} sample(s) (shape=({n}, {est.n_features_in_})) while a "
            f"minimum of 2 is required by {type(est).__name__}."
        )
    slopes = est._resolve_slopes(n)
    if groups is None:
        levels, n_groups, q = None, 1, 0
    else:
        if s["g_missing"]:
            raise ValueError(
                f"groups contains missing labels (None or NaN) at rows {s['g_missing']}"
            )
        if s["g_complex"]:
            raise ValueError("groups contains complex numbers; use integer or string labels")
        if s["g_inf"]:
            raise ValueError(f"groups contains infinite labels at rows {s['g_inf']}")
        levels = _factorize(s["levels"])[1]
        levels = np.asarray(levels)
        n_groups, q = len(levels), 1 + len(slopes)
    big_y = s["y_max"]
    if big_y > np.sqrt(np.finfo(np.float64).max / n):
        raise ValueError(
            f"y has values too large to square and sum in float64 (max |y| = {big_y:.3g}); "
            "rescale it"
        )
    col_means = s["x_sum"] / n
    centres = est._centres(col_means, s["y_sum"] / n, slopes, q)

    shared = dask.delayed(levels, pure=True) if levels is not None else None
    stats_task = dask.delayed(_partition_stats, pure=True)
    per_part = [
        stats_task(Xp, yp, gp, shared, est.fit_intercept, slopes, centres, q, n_groups)
        for Xp, yp, gp in triples
    ]
    (stats,) = dask.compute(_tree_reduce(per_part, _sum_stats))
    name = getattr(groups, "name", None) if _kind(groups) == "series" else None
    return {
        "stats": stats,
        "levels": levels,
        "slopes": slopes,
        "col_means": col_means,
        "centres": centres,
        "groups_name": str(name or "group"),
    }


# -- predict -------------------------------------------------------------------------------
def _predict_block(Xp, gp, est, return_std, include_residual):
    groups = None if gp is None else _group_block(gp)
    if groups is not None and len(groups) != len(Xp):
        raise ValueError(
            f"X and groups are not aligned: a partition has {len(Xp)} rows of X and "
            f"{len(groups)} group labels{_ALIGN_HINT}"
        )
    # The feature names were checked (and any warning given) once, on the client: give
    # each partition in the form fit saw, so that the workers do not warn again.
    names = getattr(est, "feature_names_in_", None)
    if names is not None and not isinstance(Xp, pd.DataFrame):
        Xp = pd.DataFrame(np.asarray(Xp), columns=names)
    elif names is None and isinstance(Xp, pd.DataFrame):
        Xp = _x_block(Xp)
    out = est.predict(Xp, groups=groups, return_std=return_std, include_residual=include_residual)
    return np.column_stack(out) if return_std else out


def _predict_frame_block(Xp, gp, est, return_std, include_residual):
    out = _predict_block(Xp, gp, est, return_std, include_residual)
    if return_std:
        return pd.DataFrame(out, index=Xp.index, columns=["prediction", "std"])
    return pd.Series(out, index=Xp.index, name="prediction")


def predict_dask(est, X, groups=None, return_std=False, include_residual=False):
    """Lazy ``est.predict`` over the partitions of Dask ``X`` (and ``groups``).

    Parameters
    ----------
    est : MixedLMRegressor
        A fitted estimator.
    X : dask.dataframe.DataFrame or dask.array.Array of shape (n_samples, n_features)
        Covariates.
    groups : dask.dataframe.Series, dask.array.Array or None, default=None
        Group labels, partitioned like ``X``; unseen groups get the population
        prediction.
    return_std, include_residual : bool, default=False
        As in :meth:`MixedLMRegressor.predict`.

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

    check_is_fitted(est)
    kx = _require_dask(X, "X", ("frame", "array"))
    if kx == "array" and X.ndim != 2:
        raise ValueError(f"X must be a 2-D Dask array, got {X.ndim}-D (shape {X.shape})")
    parts = {"X": (X, kx)}
    if groups is not None:
        allowed = ("series", "frame") if kx == "frame" else ("array",)
        kg = _require_dask(groups, "groups", allowed)
        if kg == "frame" and len(groups.columns) != 1:
            raise ValueError(
                "groups must be one column of labels, got a DataFrame with "
                f"{len(groups.columns)} columns"
            )
        if kg == "array" and groups.ndim == 2 and groups.shape[1] == 1:
            groups = groups[:, 0]
        if kg == "array" and groups.ndim != 1:
            raise ValueError(f"groups must be 1-D, got an array of shape {groups.shape}")
        parts["groups"] = (groups, kg)
    # Column count, names and types checked once here, on an empty X (warnings included).
    empty = est._prepare_X(X._meta) if kx == "frame" else np.zeros((0, X.shape[1]))
    validate_data(
        est, empty, reset=False, ensure_min_samples=0, ensure_min_features=0, dtype=np.float64
    )
    if kx == "array":
        if X.numblocks[1] > 1:
            X = X.rechunk({1: -1})
        parts = _align_arrays(X, parts)
    _check_partitions(parts)
    g = parts["groups"][0] if groups is not None else None

    light = copy.copy(est)
    light.__dict__.pop("_core", None)  # the cross-products: not needed to predict
    light.__dict__.pop("fit_log_", None)
    est_d = dask.delayed(light, pure=True)  # one task, shared by every partition

    if kx == "frame":
        args = (g,) if g is not None else (None,)
        meta = (
            pd.DataFrame({"prediction": pd.Series(dtype="f8"), "std": pd.Series(dtype="f8")})
            if return_std
            else pd.Series(dtype="f8", name="prediction")
        )
        out = X.map_partitions(
            _predict_frame_block, *args, est_d, return_std, include_residual, meta=meta
        )
        return (out["prediction"], out["std"]) if return_std else out
    if g is None:
        g_args = (None, None)
    else:
        g_args = (g, "i")
    # One column of predictions, or two (prediction, std) on a new axis.
    extra = {"new_axes": {"j": 2}} if return_std else {}
    out = da.blockwise(
        _predict_block,
        "ij" if return_std else "i",
        X,
        "ik",
        *g_args,
        est_d,
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
