"""Sufficient statistics of the one-factor linear mixed model.

One pass over the rows reduces the data to per-group cross-products of
``[Z X y]`` and the totals of ``[X y]'[X y]``; every later evaluation of the
profiled criterion works on these small arrays only. The reduction runs over
chunks of rows, so its working memory is bounded by the chunk size and not by
the number of rows.
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
    """

    ZtZ: np.ndarray
    ZtXy: np.ndarray
    XytXy: np.ndarray
    counts: np.ndarray
    n: int

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


def rescale_random_effects(stats):
    """Stats of ``Z D^{-1}``, where ``D`` holds the root mean squares of ``Z``'s columns.

    The likelihood is unchanged (``b`` becomes ``D b``), but ``theta`` no longer
    depends on the units of the random-slope columns, which keeps the
    optimizer's steps and its convergence rule free of them.

    Returns
    -------
    stats : SufficientStats
        Cross-products of the rescaled ``Z``.
    scale : ndarray of shape (q,)
        ``D``'s diagonal (1 for a column of zeros).
    """
    scale = np.sqrt(np.einsum("gjj->j", stats.ZtZ) / stats.n)
    scale[scale == 0] = 1.0
    inv = 1.0 / scale
    scaled = SufficientStats(
        ZtZ=stats.ZtZ * inv[:, None] * inv[None, :],
        ZtXy=stats.ZtXy * inv[:, None],
        XytXy=stats.XytXy,
        counts=stats.counts,
        n=stats.n,
    )
    return scaled, scale


def _row_reader(A):
    return A if callable(A) else (lambda start, stop: A[start:stop])


def compute_stats(X, Z, y, codes, n_groups, chunk_rows=CHUNK_ROWS):
    """Reduce the rows to :class:`SufficientStats`.

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

    Returns
    -------
    SufficientStats
    """
    x_rows, z_rows = _row_reader(X), _row_reader(Z)
    n = len(y)
    p = x_rows(0, 1).shape[1]
    q = z_rows(0, 1).shape[1]
    m = q + p + 1
    blocks = np.zeros((n_groups * q, m))
    XytXy = np.zeros((p + 1, p + 1))
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        rows = stop - start
        Zc = z_rows(start, stop)
        W = np.empty((rows, m))
        W[:, :q] = Zc
        W[:, q : q + p] = x_rows(start, stop)
        W[:, -1] = y[start:stop]
        XytXy += W[:, q:].T @ W[:, q:]
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
        blocks += expanded @ W
    blocks = blocks.reshape(n_groups, q, m)
    counts = np.bincount(codes, minlength=n_groups)
    return SufficientStats(
        ZtZ=np.ascontiguousarray(blocks[:, :, :q]),
        ZtXy=np.ascontiguousarray(blocks[:, :, q:]),
        XytXy=XytXy,
        counts=counts,
        n=n,
    )
