"""The statistics of a linear mixed model: per-level cross-products, formed once.

One pass over the rows reduces the data to the per-level cross-products of
``[Z_k X y]`` for every term ``k``, the contingency tables ``Z_i'Z_j`` between terms,
and the totals ``[X y]'[X y]`` (:class:`BlockedStats`, the one statistics type of every
model; :class:`SufficientStats` is its one-term view, read by the one-factor
criterion). Every later evaluation of a criterion works on these arrays only. They
are sums over the rows, so the statistics of a partition of the rows add up
(:func:`sum_stats`, for Dask). The reduction runs over chunks of rows, so its working
memory is bounded by the chunk size and not by the number of rows.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: Rows processed at once when forming the cross-products.
CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class SufficientStats:
    """Cross-products of the model matrices, blocked by group.

    Attributes
    ----------
    ZtZ : ndarray of shape (n_groups, q, q)
        ``Z_i' Z_i`` for each group.
    ZtXy : ndarray of shape (n_groups, q, p + 1)
        ``Z_i' [X_i y_i]`` for each group.
    XytXy : ndarray of shape (p + 1, p + 1)
        ``[X y]' [X y]`` over all rows.
    counts : ndarray of shape (n_groups,)
        Rows per group.
    n : int
        Number of rows.
    log_weights : float
        ``sum(log w)`` over the rows (0 without weights): the criterion subtracts it,
        as lme4 does, since the residual covariance is ``sigma2 W^{-1}``.
    """

    ZtZ: np.ndarray
    ZtXy: np.ndarray
    XytXy: np.ndarray
    counts: np.ndarray
    n: int
    log_weights: float = 0.0

    @property
    def p(self):
        """Number of fixed-effect columns."""
        return self.XytXy.shape[0] - 1

    @property
    def q(self):
        """Number of random effects per group."""
        return self.ZtZ.shape[1]

    @property
    def n_groups(self):
        """Number of groups."""
        return self.ZtZ.shape[0]


def _row_reader(A):
    return A if callable(A) else (lambda start, stop: A[start:stop])


def _fill(reader, start, stop, out):
    """Rows ``start:stop`` of a reader written into ``out`` (see :func:`_row_reader`)."""
    if hasattr(reader, "fill"):
        reader.fill(start, stop, out)
    else:
        out[...] = reader(start, stop)


#: While the dense indicator matrix (groups x rows) and the per-row products (rows x
#: q (q + p + 1)) of a chunk have at most this many entries each, :func:`compute_stats`
#: sums the per-group cross-products by a dense product instead of a sparse one.
DENSE_INDICATOR_MAX = 1 << 16


def compute_stats(X, Z, y, codes, n_groups, chunk_rows=CHUNK_ROWS, weights=None, log_weights=True):
    """Reduce the rows to :class:`SufficientStats`.

    With ``weights`` (precision weights ``w``, all positive), the cross-products are
    weighted: ``Z'WZ``, ``Z'W[X y]``, ``[X y]'W[X y]``; ``counts`` and ``n`` still count
    rows.

    Parameters
    ----------
    X : callable or ndarray of shape (n, p)
        Fixed-effects design (intercept column included when fitted), or a
        function ``X(start, stop)`` returning its rows ``start:stop`` (so that
        a design with an added column need not be materialised).
    Z : callable or ndarray of shape (n, q)
        Random-effects design, likewise.
    y : ndarray of shape (n,)
        Response.
    codes : ndarray of int of shape (n,)
        Group index of each row, in ``range(n_groups)``.
    n_groups : int
        Number of groups.
    chunk_rows : int, default=65536
        Rows per chunk.
    weights : ndarray of shape (n,), default=None
        Precision weights of the rows.
    log_weights : bool, default=True
        Whether to sum ``log w`` (``False`` for weights that need not be positive, such
        as a GLMM's working weights: ``log_weights`` is then 0).

    Returns
    -------
    SufficientStats
    """
    x_rows, z_rows = _row_reader(X), _row_reader(Z)
    n, n_groups = len(y), int(n_groups)  # a numpy integer of a small type could overflow
    p = x_rows(0, 1).shape[1]
    q = z_rows(0, 1).shape[1]
    m = q + p + 1
    blocks = np.zeros((n_groups * q, m))
    XytXy = np.zeros((p + 1, p + 1))
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        rows = stop - start
        W = np.empty((rows, m))
        _fill(z_rows, start, stop, W[:, :q])
        _fill(x_rows, start, stop, W[:, q : q + p])
        W[:, -1] = y[start:stop]
        Zc = W[:, :q]
        WW = W if weights is None else W * weights[start:stop, None]
        XytXy += WW[:, q:].T @ W[:, q:]
        if max(n_groups, q * m) * rows <= DENSE_INDICATOR_MAX:
            # Small data: a dense group-indicator matrix times the per-row products
            # Z[r, a] WW[r, :] costs a fraction of building a sparse matrix.
            indicator = np.zeros((n_groups, rows))
            indicator[codes[start:stop], np.arange(rows)] = 1.0
            outer = (Zc[:, :, None] * WW[:, None, :]).reshape(rows, q * m)
            blocks += (indicator @ outer).reshape(n_groups * q, m)
            continue
        # Block-expanded Z' (n_groups * q by rows), built column by column: column r
        # holds Z[r, :] in rows codes[r] * q + (0..q-1). CSC needs no sorting.
        expanded = sp.csc_matrix(
            (
                np.ascontiguousarray(Zc).ravel(),
                (codes[start:stop, None] * q + np.arange(q)).ravel(),
                np.arange(rows + 1) * q,
            ),
            shape=(n_groups * q, rows),
        )
        blocks += expanded @ WW
    blocks = blocks.reshape(n_groups, q, m)
    counts = np.bincount(codes, minlength=n_groups)
    return SufficientStats(
        ZtZ=np.ascontiguousarray(blocks[:, :, :q]),
        ZtXy=np.ascontiguousarray(blocks[:, :, q:]),
        XytXy=XytXy,
        counts=counts,
        n=n,
        log_weights=_log_weights(weights) if log_weights else 0.0,
    )


def _log_weights(weights):
    return 0.0 if weights is None else float(np.sum(np.log(weights)))


@dataclass(frozen=True)
class BlockedStats:
    """Cross-products of ``[Z_1 ... Z_K X y]``, blocked by term, terms sorted by size.

    The statistics of every model: one term (the one-factor criterion reads
    :meth:`term`) or several (the blocked criterion). Every array is in the sorted
    order: term ``i`` here is term ``order[i]`` of the caller. Level ``l`` of term
    ``i`` owns the rows ``l * q_i ... l * q_i + q_i - 1`` of that term's block. They
    are sums over the rows, so the statistics of a partition of the rows add up
    (:func:`sum_stats`).

    Attributes
    ----------
    ZtZ : list of ndarray
        ``ZtZ[i]`` of shape (m_i, q_i, q_i): the diagonal blocks of ``Z_i'Z_i``.
    cross : dict
        ``cross[(i, j)]`` for ``i > j``: ``Z_i'Z_j`` (m_i q_i x m_j q_j) as a
        ``scipy.sparse`` CSR matrix, the (weighted) contingency table of the two terms.
    ZtXy : list of ndarray
        ``ZtXy[i]`` of shape (m_i, q_i, p + 1): ``Z_i'[X y]``.
    XytXy : ndarray of shape (p + 1, p + 1)
        ``[X y]'[X y]``.
    n : int
        Number of rows.
    order : ndarray of int
        ``order[i]`` is the caller's index of sorted term ``i`` (decreasing
        number of levels, ties in the caller's order).
    level_counts : list of ndarray, optional
        Rows per level of every sorted term.
    log_weights : float
        ``sum(log w)`` over the rows of a weighted model (0 without weights); the
        cross-products are then weighted (``Z'WZ``, ...).
    """

    ZtZ: list
    cross: dict
    ZtXy: list
    XytXy: np.ndarray
    n: int
    order: np.ndarray
    level_counts: list = None
    log_weights: float = 0.0

    @property
    def p(self):
        """Number of fixed-effect columns."""
        return self.XytXy.shape[0] - 1

    @property
    def n_terms(self):
        """Number of random-effects terms."""
        return len(self.ZtZ)

    @property
    def n_levels(self):
        """Levels per term, in the sorted order."""
        return np.array([z.shape[0] for z in self.ZtZ], dtype=int)

    @property
    def q(self):
        """Columns per term, in the sorted order."""
        return np.array([z.shape[1] for z in self.ZtZ], dtype=int)

    @property
    def counts(self):
        """Rows per level of every term (sorted order), when the term has an intercept first."""
        return [z[:, 0, 0] for z in self.ZtZ]

    def block(self, i, j):
        """``Z_i'Z_j`` for sorted terms ``i != j`` (sparse)."""
        if i == j:
            raise ValueError("diagonal blocks are block diagonal: use ZtZ")
        return self.cross[(i, j)] if i > j else self.cross[(j, i)].T.tocsr()

    def term(self, i):
        """The :class:`SufficientStats` of sorted term ``i`` alone (the one-factor form)."""
        counts = self.ZtZ[i][:, 0, 0] if self.level_counts is None else self.level_counts[i]
        return SufficientStats(
            self.ZtZ[i], self.ZtXy[i], self.XytXy, counts, self.n, self.log_weights
        )


def model_stats(
    X, y, codes_list, n_levels, Z_list, chunk_rows=CHUNK_ROWS, weights=None, log_weights=True
):
    """Reduce the rows to :class:`BlockedStats` (any number of terms, zero included).

    Parameters
    ----------
    X : callable or ndarray of shape (n, p)
        Fixed-effects design (intercept column included when fitted), or a function
        ``X(start, stop)`` returning its rows ``start:stop``.
    y : ndarray of shape (n,)
        Response.
    codes_list : list of ndarray of int
        Level of each row for every term, in the caller's order.
    n_levels : list of int
        Levels per term.
    Z_list : list of (callable or ndarray of shape (n, q_k))
        Columns of every term. With two or more terms they are read whole (the
        contingency tables between terms are formed from them).
    chunk_rows : int
        Rows per chunk of the per-term reduction.
    weights : ndarray of shape (n,), default=None
        Precision weights of the rows (all positive): every cross-product is weighted.
    log_weights : bool, default=True
        Whether to sum ``log w`` (see :func:`compute_stats`).

    Returns
    -------
    BlockedStats
    """
    n = len(y)
    n_levels = np.asarray(n_levels, dtype=int)
    if not len(codes_list):
        x_rows = _row_reader(X)
        p = x_rows(0, 1).shape[1] if n else x_rows(0, 0).shape[1]
        XytXy = np.zeros((p + 1, p + 1))
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            W = np.column_stack([x_rows(start, stop), y[start:stop]])
            WW = W if weights is None else W * weights[start:stop, None]
            XytXy += WW.T @ W
        lw = _log_weights(weights) if log_weights else 0.0
        return BlockedStats([], {}, [], XytXy, n, np.zeros(0, dtype=int), [], lw)
    order = np.argsort(-n_levels, kind="stable")
    codes = [np.asarray(codes_list[k], dtype=np.intp) for k in order]
    Zs = [Z_list[k] for k in order]
    levels = n_levels[order]
    ZtZ, ZtXy, XytXy, counts = [], [], None, []
    for c, m, Z in zip(codes, levels, Zs, strict=True):
        st = compute_stats(X, Z, y, c, int(m), chunk_rows, weights, log_weights)
        ZtZ.append(st.ZtZ)
        ZtXy.append(st.ZtXy)
        counts.append(st.counts)
        XytXy = st.XytXy
    cross = {}
    if len(codes) > 1:
        Zs = [_row_reader(Z)(0, n) for Z in Zs]
    for i in range(len(codes) if len(codes) > 1 else 0):
        qi = Zs[i].shape[1]
        for j in range(i):
            qj = Zs[j].shape[1]
            rows = (codes[i][:, None, None] * qi + np.arange(qi)[None, :, None]) + 0 * np.arange(qj)
            cols = (codes[j][:, None, None] * qj + np.arange(qj)[None, None, :]) + 0 * rows
            data = Zs[i][:, :, None] * Zs[j][:, None, :]
            if weights is not None:
                data = data * weights[:, None, None]
            cross[(i, j)] = sp.csr_matrix(
                (data.ravel(), (rows.ravel(), cols.ravel())),
                shape=(levels[i] * qi, levels[j] * qj),
            )  # duplicates are summed
    return BlockedStats(
        ZtZ=ZtZ,
        cross=cross,
        ZtXy=ZtXy,
        XytXy=XytXy,
        n=n,
        order=order,
        level_counts=counts,
        log_weights=_log_weights(weights) if log_weights else 0.0,
    )


def sum_stats(*parts):
    """The statistics of the union of disjoint sets of rows (same terms and levels)."""
    first = parts[0]
    with np.errstate(over="ignore", invalid="ignore"):
        return BlockedStats(
            ZtZ=[sum(p.ZtZ[i] for p in parts) for i in range(first.n_terms)],
            cross={key: sum(p.cross[key] for p in parts).tocsr() for key in first.cross},
            ZtXy=[sum(p.ZtXy[i] for p in parts) for i in range(first.n_terms)],
            XytXy=sum(p.XytXy for p in parts),
            n=sum(p.n for p in parts),
            order=first.order,
            level_counts=[sum(p.level_counts[i] for p in parts) for i in range(first.n_terms)],
            log_weights=sum(p.log_weights for p in parts),
        )


def rescale_terms(stats):
    """Stats of every term's ``Z_k D_k^{-1}``, ``D_k`` the root mean squares of its columns.

    The likelihood is unchanged (``b_k`` becomes ``D_k b_k``), but ``theta`` no longer
    depends on the units of the random-slope columns, which keeps the optimizer's steps
    and its convergence rule free of them.

    Returns
    -------
    stats : BlockedStats
        Cross-products of the rescaled columns.
    scales : list of ndarray
        ``D_k``'s diagonal for every term, in the caller's order (1 for a column of zeros).
    """
    n = max(stats.n, 1)
    inv_sorted = []
    for ZtZ in stats.ZtZ:
        scale = np.sqrt(np.einsum("gjj->j", ZtZ) / n)
        scale[~(scale > 0)] = 1.0
        inv_sorted.append(1.0 / scale)
    cross = {}
    for (i, j), B in stats.cross.items():
        # Scale the nonzeros in place of a product with diagonal matrices: the pattern
        # (sorted, canonical indices) is kept, which the gram products of the blocked
        # criterion rely on for their speed.
        B = B.tocsr()
        ri = np.tile(inv_sorted[i], B.shape[0] // len(inv_sorted[i]))
        cj = np.tile(inv_sorted[j], B.shape[1] // len(inv_sorted[j]))
        rows = np.repeat(ri, np.diff(B.indptr))
        cross[(i, j)] = sp.csr_matrix(
            (B.data * rows * cj[B.indices], B.indices.copy(), B.indptr.copy()), shape=B.shape
        )
    scaled = BlockedStats(
        ZtZ=[z * s[:, None] * s[None, :] for z, s in zip(stats.ZtZ, inv_sorted, strict=True)],
        cross=cross,
        ZtXy=[z * s[:, None] for z, s in zip(stats.ZtXy, inv_sorted, strict=True)],
        XytXy=stats.XytXy,
        n=stats.n,
        order=stats.order,
        level_counts=stats.level_counts,
        log_weights=stats.log_weights,
    )
    scales = [None] * stats.n_terms
    for i, k in enumerate(stats.order):
        scales[k] = 1.0 / inv_sorted[i]
    return scaled, scales
