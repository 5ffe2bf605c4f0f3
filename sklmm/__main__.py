"""``python -m sklmm``: fit lme4's classic sleepstudy model and print the result."""

import time

from sklmm import MixedLMRegressor
from sklmm.datasets import load_sleepstudy


def main():
    """Fit ``Reaction ~ Days + (Days | Subject)`` by REML and print the estimates."""
    df = load_sleepstudy()
    est = MixedLMRegressor(random_slopes=["Days"])
    start = time.perf_counter()
    est.fit(df[["Days"]], df["Reaction"], groups=df["Subject"])
    elapsed = time.perf_counter() - start
    sd = est.random_effects_cov_.diagonal() ** 0.5
    corr = est.random_effects_cov_[0, 1] / (sd[0] * sd[1])
    print("Linear mixed model fit by REML: Reaction ~ Days + (Days | Subject)  [sklmm]")
    print(f"  REML log-likelihood: {est.log_likelihood_:.4f}   (lme4: -871.8141)")
    print(
        f"  {len(df)} observations, {len(est.groups_)} subjects, "
        f"{est.n_iter_} iterations, {elapsed * 1e3:.1f} ms, converged={est.converged_}"
    )
    print("Random effects:")
    print(f"  Subject (Intercept)  variance {est.random_effects_cov_[0, 0]:9.2f}  sd {sd[0]:7.3f}")
    print(
        f"          Days         variance {est.random_effects_cov_[1, 1]:9.2f}  sd {sd[1]:7.3f}"
        f"  corr {corr:.3f}"
    )
    print(
        f"  Residual             variance {est.residual_variance_:9.2f}  "
        f"sd {est.residual_variance_**0.5:7.3f}"
    )
    print("Fixed effects:")
    print(f"  (Intercept) {est.intercept_:10.4f}   (lme4: 251.4051)")
    print(f"  Days        {est.coef_[0]:10.4f}   (lme4:  10.4673)")
    print("Conditional modes (BLUPs), first five subjects:")
    print(est.random_effects_.head().round(4).to_string())


if __name__ == "__main__":
    main()
