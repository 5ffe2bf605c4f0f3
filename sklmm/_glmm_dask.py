"""GLMMs on Dask collections: every pass of the fit sums the partitions' statistics.

A GLMM's statistics change at every PIRLS step (the weights and the working response
depend on the current linear predictor), so, unlike the linear model, the rows are read
once per pass. The partitions are turned once into in-memory row blocks
(:class:`~sklmm._glmm.GLMMData`, each with its own levels' codes and sorted by level
for one term) and persisted, on the workers with a distributed client; a pass sends
the current ``beta`` and random effects to every block and sums what comes back:
the log-likelihood, the weighted per-level cross-products (they add up over any
partition of the rows, as for the linear model), the sums of the Laplace gradient, or
the per-level log-likelihoods at the quadrature nodes. The optimization runs in the
client on those per-level sums only. :class:`DaskGLMMData` has the interface of
:class:`~sklmm._glmm.GLMMData` that :mod:`sklmm._glmm` uses.
"""

import numpy as np
import pandas as pd

from ._crossprod import sum_stats
from ._dask import (
    _LABELS,
    _blocks,
    _n_blocks,
    _raw_labels,
    _require_dask,
    _w_block,
    _x_block,
    _y_block,
)
from ._glm_family import check_response
from ._glmm import GLMMData, RowPass, agq_total
from ._terms import label_sources, match_terms


def _chunk(Xp, yp, gp, vp, wp, op, terms, fit_intercept, p, center):
    """One partition as a :class:`GLMMData` block (rows of weight 0 left out)."""
    X, y, w = _x_block(Xp), _y_block(yp), _w_block(wp)
    off = None if op is None else _w_block(op)
    labels = label_sources(_raw_labels(gp, "groups"), _raw_labels(vp, _LABELS[1]))
    labels = {
        k: np.asarray(v.astype(object) if isinstance(v, pd.Series) else v)
        for k, v in labels.items()
    }
    if off is not None and len(off) != len(X):
        raise ValueError(f"offset has {len(off)} rows in a partition where X has {len(X)}")
    if w is not None:
        keep = w > 0
        X, y, w = X[keep], y[keep], w[keep]
        off = None if off is None else off[keep]
        labels = {k: v[keep] for k, v in labels.items()}
    n = len(y)
    if off is not None and not np.isfinite(off).all():
        raise ValueError("offset must be finite")
    codes = match_terms(terms, labels, n)
    Xf = X[:, :p] - center  # centred on the data's means (the in-memory fit's start)
    design = np.column_stack([np.ones(n), Xf]) if fit_intercept else Xf
    return GLMMData(
        X=design,
        y=y,
        m=np.ones(n) if w is None else w,
        offset=np.zeros(n) if off is None else off,
        codes=[np.asarray(c, dtype=np.intp) for c in codes],
        n_levels=[t.n_levels for t in terms],
        Z=[np.ascontiguousarray(t.z(X)) for t in terms],
    )


def _chunk_summary(chunk, family, binary):
    """What the client checks of the response and the fixed effects, for one block."""
    y, m = chunk.y, chunk.m
    if binary and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(
            "a Dask y for MixedGLMClassifier must hold 0/1 (or booleans): the classes are "
            "not encoded lazily"
        )
    if chunk.n:
        check_response(family, y, m)
    Xf = chunk.X
    return {
        "n": chunk.n,
        "y_min": float(y.min(initial=np.inf)),
        "y_max": float(y.max(initial=-np.inf)),
        "x_sum": Xf.sum(axis=0),
        "xtx": Xf.T @ Xf,
        "constant": None,
    }


def _row_pass(chunk, family, beta, b, joint, start):
    return chunk.row_pass(family, beta, b, joint, start=start)


def _gradient_pass(chunk, family, beta, b, P):
    return chunk.gradient_pass(family, beta, b, P)


def _node_loglik(chunk, family, beta, theta, u_hat, h, n_agq):
    return chunk.node_loglik(family, beta, theta, u_hat, h, n_agq)


def _constant(chunk, family):
    return chunk.constant(family)


def _extreme(chunk, family, beta):
    return chunk.extreme_rows(family, beta)


def _data_sums(chunk):
    return chunk.data_sums()


class DaskGLMMData:
    """Persisted row blocks with :class:`~sklmm._glmm.GLMMData`'s interface (summed)."""

    def __init__(self, chunks, n, p, n_levels):
        self.chunks, self.n, self.p, self.n_levels = chunks, n, p, list(n_levels)
        self.sorted = len(n_levels) == 1
        self._constants = {}

    def _map(self, func, *args):
        import dask

        shared = [
            dask.delayed(a, pure=True) if isinstance(a, (list, np.ndarray)) else a for a in args
        ]
        task = dask.delayed(func, pure=True)
        return dask.compute(*[task(c, *shared) for c in self.chunks])

    def constant(self, family):
        if family not in self._constants:
            self._constants[family] = float(sum(self._map(_constant, family)))
        return self._constants[family]

    def row_pass(self, family, beta, b, joint, start=False):
        parts = self._map(_row_pass, family, beta, b, joint, start)
        stats_obs = None
        if parts[0].stats_obs is not None:
            stats_obs = sum_stats(*[p.stats_obs for p in parts])
        return RowPass(
            float(sum(p.loglik for p in parts)), sum_stats(*[p.stats for p in parts]), stats_obs
        )

    def gradient_pass(self, family, beta, b, P):
        parts = self._map(_gradient_pass, family, beta, b, P)
        return {key: sum(p[key] for p in parts) for key in parts[0]}

    def node_loglik(self, family, beta, theta, u_hat, h, n_agq):
        return sum(self._map(_node_loglik, family, beta, theta, u_hat, h, n_agq))

    def quadrature(self, family, beta, theta, u_hat, h, n_agq):
        nodes = self.node_loglik(family, beta, theta, u_hat, h, n_agq)
        return agq_total(nodes, u_hat, h, n_agq) + self.constant(family)

    def extreme_rows(self, family, beta):
        return int(sum(self._map(_extreme, family, beta)))

    def data_sums(self):
        parts = self._map(_data_sums)
        lists = ("counts", "level_k", "level_m")
        out = {key: sum(p[key] for p in parts) for key in parts[0] if key not in lists}
        for key in lists:
            out[key] = [sum(p[key][k] for p in parts) for k in range(len(self.n_levels))]
        return out


def dask_glmm_data(data, terms, offset, *, fit_intercept, n_features, family, binary, center):
    """The persisted row blocks of validated :class:`~sklmm._dask.DaskData` (levels set).

    Returns
    -------
    DaskGLMMData
    summary : dict
        Rows, the range of ``y`` and the cross-products of the fixed-effects design.
    """
    import dask

    blocks = data._blocks
    n_parts = len(blocks[0])
    if offset is None:
        offsets = [None] * n_parts
    else:
        kind = _require_dask(offset, "offset", ("series", "array"))
        if _n_blocks(offset, kind) != n_parts:
            raise ValueError(
                f"offset has {_n_blocks(offset, kind)} partitions, X has {n_parts}: give the "
                "offset the partitions of X (a column of the same Dask DataFrame)"
            )
        offsets = _blocks(offset, kind)
    shared = dask.delayed(terms, pure=True)
    task = dask.delayed(_chunk, pure=True)
    chunks = [
        task(*b, o, shared, fit_intercept, n_features, center)
        for b, o in zip(zip(*blocks, strict=True), offsets, strict=True)
    ]
    chunks = list(dask.persist(*chunks))
    summaries = dask.compute(*[dask.delayed(_chunk_summary)(c, family, binary) for c in chunks])
    summary = {
        "n": sum(s["n"] for s in summaries),
        "y_min": min(s["y_min"] for s in summaries),
        "y_max": max(s["y_max"] for s in summaries),
        "x_sum": sum(s["x_sum"] for s in summaries),
        "xtx": sum(s["xtx"] for s in summaries),
    }
    out = DaskGLMMData(chunks, summary["n"], len(summary["x_sum"]), [t.n_levels for t in terms])
    return out, summary
