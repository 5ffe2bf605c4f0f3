"""Grouped data simulated from the one-factor model, shared by the core-level tests."""

import numpy as np


def simulate(seed, q, p=3, n_groups=20, sizes=None, Sigma=None, min_size=3):
    """Grouped data with a random PD ``Sigma`` unless given; rows in random order.

    ``X`` and ``Z`` share no columns but the intercept. Returns
    ``X, Z, y, codes, n_groups``.
    """
    rng = np.random.default_rng(seed)
    if sizes is None:
        sizes = rng.integers(min_size, 9, n_groups)
    n_groups = len(sizes)
    codes = np.repeat(np.arange(n_groups), sizes)
    rng.shuffle(codes)
    n = len(codes)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    Z = np.column_stack([np.ones(n), rng.normal(size=(n, q - 1))])
    if Sigma is None:
        A = rng.normal(size=(q, q))
        Sigma = A @ A.T / q + 0.5 * np.eye(q)
    b = rng.multivariate_normal(np.zeros(q), Sigma, size=n_groups)
    y = X @ rng.normal(size=p) + np.einsum("ij,ij->i", Z, b[codes]) + rng.normal(size=n)
    return X, Z, y, codes, n_groups
