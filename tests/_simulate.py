"""Grouped data simulated for the tests: one-factor, and crossed with a nested factor."""

import numpy as np
import pandas as pd


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


def nested_crossed(seed, n_a, n_b, n, sd):
    """Factors a and b crossed (some cells empty), c nested in a; random intercepts.

    ``sd`` holds the standard deviations of the a, b and a:c effects. Returns ``X``
    (a column ``x``), ``y`` and the labels ``a``, ``b``, ``c``.
    """
    rng = np.random.default_rng(seed)
    a = np.r_[np.arange(n_a), rng.integers(0, n_a, n - n_a)]
    b = np.r_[np.arange(n_b), rng.integers(0, n_b, n - n_b)]
    c = rng.integers(0, 3, n)  # nested in a: labels reused across a's levels
    x = rng.normal(size=n)
    y = (
        1.0
        + 0.5 * x
        + rng.normal(0, sd[0], n_a)[a]
        + rng.normal(0, sd[1], n_b)[b]
        + rng.normal(0, sd[2], (n_a, 3))[a, c]
        + rng.normal(0, 0.7, n)
    )
    labels = pd.DataFrame({"a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b], "c": c})
    return pd.DataFrame({"x": x}), pd.Series(y), labels


def unbalanced(seed, min_groups=6, max_groups=30):
    """Small random designs whose likelihood can have several optima (a review's
    generator): ``min_groups`` to ``max_groups - 1`` groups, 5 to 13 rows per group on
    average, a random intercept of SD 0.3, residual SD 1 to 3, and one group with 70% of
    the rows when ``seed % 4 == 0``. Returns ``X`` (a DataFrame of ``x0``, ``x1``), ``y``,
    ``groups``."""
    rng = np.random.default_rng(seed)
    G = int(rng.integers(min_groups, max_groups))
    n = G * int(rng.integers(5, 14))
    g = rng.integers(0, G, n)
    X = rng.standard_normal((n, 2))
    y = X @ [1.0, -0.5] + 0.3 * rng.standard_normal(G)[g]
    y = y + rng.standard_normal(n) * (1 + seed % 3)
    if seed % 4 == 0:
        g = np.where(rng.random(n) < 0.7, 0, g)
    return pd.DataFrame(X, columns=["x0", "x1"]), y, g
