"""Covariance structures of a random-effects term on the square-root scale.

A structure maps the vector ``theta`` (the free entries of the lower-triangular
relative Cholesky factor ``Lambda``, lme4's ``theta``) to ``Lambda`` and back.
See :mod:`sklmm._profile` for the three parameterizations.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import lapack

COVARIANCE_TYPES = ("unstructured", "diagonal")


@dataclass(frozen=True)
class CovarianceStructure:
    """Relative Cholesky factor of one random-effects term.

    Parameters
    ----------
    q : int
        Number of random effects per group (intercept plus slopes).
    kind : {"unstructured", "diagonal"}
        ``"unstructured"`` keeps the whole lower triangle of ``Lambda``
        (lme4 ``(x | g)``); ``"diagonal"`` keeps its diagonal only
        (lme4 ``(x || g)``).
    """

    q: int
    kind: str = "unstructured"
    rows: np.ndarray = field(init=False, repr=False)
    cols: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.kind not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.kind!r}"
            )
        if self.kind == "unstructured":
            cols, rows = np.triu_indices(self.q)  # lower triangle column by column, as lme4
        else:
            rows = cols = np.arange(self.q)
        for name, index in (("rows", rows), ("cols", cols)):
            index = np.array(index)
            index.flags.writeable = False  # one structure is shared by the terms of its shape
            object.__setattr__(self, name, index)

    @property
    def n_theta(self):
        """Number of free parameters on the square-root scale."""
        return len(self.rows)

    @property
    def lower_bounds(self):
        """Lower bounds of ``theta``: 0 on the diagonal of ``Lambda``, else -inf."""
        return np.where(self.rows == self.cols, 0.0, -np.inf)

    def initial_theta(self):
        """lme4's starting value: ``Lambda`` equal to the identity."""
        return (self.rows == self.cols).astype(float)

    def lam(self, theta):
        """``Lambda`` (q x q, lower triangular) from ``theta``."""
        out = np.zeros((self.q, self.q))
        out[self.rows, self.cols] = theta
        return out

    def basis(self):
        """``d Lambda / d theta_a`` for every ``a``: an array (n_theta, q, q)."""
        out = np.zeros((self.n_theta, self.q, self.q))
        out[np.arange(self.n_theta), self.rows, self.cols] = 1.0
        return out

    def theta_from_psi(self, psi):
        """``theta`` whose ``Lambda Lambda'`` is the relative covariance ``psi``.

        A positive semi-definite ``psi`` that is numerically singular (a fit
        at the boundary) is factored after a relative jitter of 1e-12.
        """
        psi = 0.5 * (psi + psi.T)
        if self.kind == "diagonal":
            return np.sqrt(np.clip(np.diag(psi), 0.0, None))
        # LAPACK directly (numpy's wrapper costs several times the work on a q x q).
        lam, info = lapack.dpotrf(psi, lower=1, clean=1)
        if info == 0 and np.isfinite(lam).all():
            return lam[self.rows, self.cols]
        scale = max(float(np.trace(psi)), 1e-300)
        for jitter in (1e-12, 1e-9, 1e-6):
            lam, info = lapack.dpotrf(psi + jitter * scale * np.eye(self.q), lower=1, clean=1)
            if info == 0 and np.isfinite(lam).all():
                break
        else:  # pragma: no cover - psi is PSD by construction
            lam = np.diag(np.sqrt(np.clip(np.diag(psi), 0.0, None)))
        return lam[self.rows, self.cols]
