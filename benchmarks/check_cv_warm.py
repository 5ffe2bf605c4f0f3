"""How far ``MixedLMRegressorCV(warm_start=True)`` is from the cold search, on random designs.

Run from the repository root::

    python benchmarks/check_cv_warm.py          # about 5 minutes; --seeds N for fewer

Not a timing: the evidence behind ``WARM_MIN_LEVELS`` (``sklmm/_cv.py``) and the warm
search's documentation. The designs are the tests' generator of likelihoods with several
optima (``tests/_simulate.py::unbalanced``), with the number of groups drawn from a range:
``G`` groups, 5 to 13 rows per group on average, a random intercept of SD 0.3, residual SD
1 to 3, and one group holding 70% of the rows for every fourth seed. Two grids per design:
``A``, slopes on ``x0`` and ``x1`` by one of REML or ML, unstructured and diagonal; ``B``, no
slope or a slope on ``x0``, by REML and ML. Folds: ``KFold(3, shuffle=True,
random_state=seed)``.

For each range it prints how many searches had a split score of the warm search away
from the cold search's (which equals ``GridSearchCV``'s, tested) by more than 1e-6 (another
optimum) and by 1e-8 to 1e-6 (the convergence rule), first with warm fits on every
training set (``WARM_MIN_LEVELS = 1``), then as shipped.
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

import sklmm._cv
from sklmm import MixedLMRegressorCV

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _simulate import unbalanced  # the tests' generator, with a range of group counts

RANGES = [(6, 30), (30, 50), (50, 100), (100, 200)]


def grids(seed):
    a = {
        "random_slopes": [["x0", "x1"]],
        "reml": [seed % 2 == 1],
        "covariance_type": ["unstructured", "diagonal"],
    }
    b = {"random_slopes": [None, ["x0"]], "reml": [True, False]}
    return [a, b]


def distance(X, y, g, candidates, cv):
    cold = MixedLMRegressorCV(candidates=candidates, cv=cv).fit(X, y, groups=g)
    warm = MixedLMRegressorCV(candidates=candidates, cv=cv, warm_start=True).fit(X, y, groups=g)
    return max(
        float(np.nanmax(np.abs(cold.cv_results_[k] - warm.cv_results_[k])))
        for k in cold.cv_results_
        if k.startswith("split") and k.endswith("_test_score")
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=60, help="designs per range (60)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    shipped = sklmm._cv.WARM_MIN_LEVELS
    print(f"check_cv_warm.py: {args.seeds} designs per range, 2 grids each")
    print("groups   | warm fits on    | searches | > 1e-6 (largest)    | 1e-8 to 1e-6")
    for lo, hi in RANGES:
        for label, min_levels in (("every set", 1), (f">= {shipped} levels", shipped)):
            sklmm._cv.WARM_MIN_LEVELS = min_levels
            far, near, n, largest = 0, 0, 0, 0.0
            for seed in range(args.seeds):
                X, y, g = unbalanced(seed, lo, hi)
                cv = KFold(3, shuffle=True, random_state=seed)
                for candidates in grids(seed):
                    try:
                        d = distance(X, y, g, candidates, cv)
                    except ValueError:  # every candidate fit failed (too few rows)
                        continue
                    n += 1
                    far += d > 1e-6
                    near += 1e-8 < d <= 1e-6
                    largest = max(largest, d if d > 1e-6 else 0.0)
            print(
                f"{lo:>3}-{hi - 1:<4} | {label:<15} | {n:8d} | {far:6d} ({largest:.1e})"
                f"      | {near:6d}"
            )
    sklmm._cv.WARM_MIN_LEVELS = shipped


if __name__ == "__main__":
    main()
