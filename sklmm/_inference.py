"""Inference on a fitted model: tables, information criteria, tests and the summary.

Everything here works on user-scale numbers handed over by the estimator and only
displays or tests them; nothing is fitted here.

Conventions (those of lme4 and statsmodels):

- Fixed effects: statistics ``estimate / std. error`` referred to the t distribution
  with Satterthwaite's degrees of freedom (lmerTest's table; the df come from
  :mod:`sklmm._ddf`), or to the standard normal (``ddf="normal"``: statsmodels' ``z``,
  lme4's ``confint(method = "Wald")``), with intervals ``estimate +/- crit * se``.
- Information criteria: ``AIC = -2 logLik + 2 df`` and ``BIC = -2 logLik + log(n) df``
  with ``df = p + (number of variance parameters) + 1`` and the REML log-likelihood
  for REML fits, as lme4's ``AIC``/``BIC``.
- Variance parameters: Wald intervals on the scale where they are unbounded
  (``log`` of the standard deviations, ``atanh`` of the correlations), from the
  observed information of the (REML) log-likelihood in those parameters, mapped back.
  They are not symmetric on the standard-deviation scale and never cross 0 or +/-1.
  A term on the boundary (singular) has none (NaN); it is held at its estimate for the
  intervals of the other parameters, the residual's included.
  lme4's default ``confint`` profiles the likelihood instead; the two agree to first
  order and the Wald form costs no refit.
"""

from numbers import Real

import numpy as np
import pandas as pd
from scipy import stats


def fixed_effects_table(names, beta, cov, alpha=0.05, df=None):
    """Estimates, standard errors, test statistics, p-values and intervals.

    Without ``df``: Wald z statistics, normal p-values and intervals. With ``df`` (one per
    coefficient, e.g. Satterthwaite's): t statistics, and p-values and intervals from the
    t distribution with those degrees of freedom (lmerTest's table, with intervals).
    """
    se = np.sqrt(np.diag(cov))
    stat = beta / se
    if df is None:
        crit = stats.norm.ppf(1 - alpha / 2)
        columns = {"z": stat, "p_value": 2 * stats.norm.sf(np.abs(stat))}
    else:
        df = np.asarray(df, dtype=float)
        crit = stats.t.ppf(1 - alpha / 2, df)
        columns = {"df": df, "t": stat, "p_value": 2 * stats.t.sf(np.abs(stat), df)}
    return pd.DataFrame(
        {
            "estimate": beta,
            "std_error": se,
            **columns,
            f"ci_{alpha / 2:g}": beta - crit * se,
            f"ci_{1 - alpha / 2:g}": beta + crit * se,
        },
        index=pd.Index(names, name="term"),
    )


def varcorr_table(group, names, sigma, sigma2, covariances=True):
    """lme4's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor.

    Covariance rows only for an unstructured covariance, as lme4 lists them.
    """
    rows = []
    sd = np.sqrt(np.diag(sigma))
    for i, name in enumerate(names):
        rows.append((group, name, None, sigma[i, i], sd[i]))
    for j in range(len(names) if covariances else 0):
        for i in range(j + 1, len(names)):
            corr = sigma[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
            rows.append((group, names[j], names[i], sigma[i, j], corr))
    if sigma2 is not None:  # a GLMM without a scale parameter has no residual row
        rows.append(("Residual", None, None, sigma2, np.sqrt(sigma2)))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


def variance_parameter_cis(terms, sigma2, deviance, alpha):
    """Wald intervals for standard deviations, correlations and sigma, on unbounded scales.

    Parameters
    ----------
    terms : list of (ndarray, bool, bool)
        Per random-effects term, its covariance ``Sigma_k`` (user scale), whether it
        is unstructured (its correlations are parameters) and whether it is free. A
        term on the boundary (a zero variance or a correlation of +/-1) has no Wald
        interval: it is held at its estimate, and the intervals of the other
        parameters are those given it.
    sigma2 : float
        Residual variance.
    deviance : callable
        ``deviance(sigmas, sigma2)``: ``-2 log L`` (REML or ML, ``beta`` profiled) at the
        covariances ``sigmas`` (one per term) and ``sigma2``; ``inf`` outside the space.
    alpha : float
        One minus the confidence level.

    Returns
    -------
    ndarray of shape (n_parameters, 2)
        Rows in the order of :func:`varcorr_table` per term (standard deviations, then
        correlations by column), then sigma: the interval from the observed information
        of ``phi = (log sd, atanh corr, log sigma)`` of the free parameters by central
        differences, mapped back. NaN for a term held fixed, and everywhere when the
        information is singular.
    """
    blocks, phi0 = [], []
    for sigma, unstructured, free in terms:
        q = len(sigma)
        pairs = [(i, j) for j in range(q) for i in range(j + 1, q)] if unstructured else []
        blocks.append((q, pairs, None if free else sigma))
        if free:
            sd = np.sqrt(np.diag(sigma))
            corr = [sigma[i, j] / (sd[i] * sd[j]) for i, j in pairs]
            phi0 += [*np.log(sd), *np.arctanh(np.clip(corr, -0.999999, 0.999999))]
    phi0 = np.array([*phi0, 0.5 * np.log(sigma2)])

    def at(phi):
        sigmas, k = [], 0
        for q, pairs, fixed in blocks:
            if fixed is not None:
                sigmas.append(fixed)
                continue
            s = np.exp(phi[k : k + q])
            R = np.eye(q)
            for (i, j), r in zip(pairs, np.tanh(phi[k + q : k + q + len(pairs)]), strict=True):
                R[i, j] = R[j, i] = r
            sigmas.append(R * np.outer(s, s))
            k += q + len(pairs)
        return deviance(sigmas, np.exp(2 * phi[-1]))

    n_rows = sum(q + len(pairs) for q, pairs, _ in blocks) + 1
    try:
        H = central_hessian(at, phi0, 1e-3)
        cov_phi = 2.0 * np.linalg.inv(H)  # D = -2 log L: information = H / 2
    except np.linalg.LinAlgError:  # a singular information, or a neighbour that fails
        return np.full((n_rows, 2), np.nan)
    if not np.all(np.isfinite(cov_phi)):
        return np.full((n_rows, 2), np.nan)
    se = np.sqrt(np.clip(np.diag(cov_phi), 0.0, None))
    crit = stats.norm.ppf(1 - alpha / 2)
    free_cis = np.column_stack([phi0 - crit * se, phi0 + crit * se])
    out = np.full((n_rows, 2), np.nan)
    k = row = 0
    for q, pairs, fixed in blocks:
        size = q + len(pairs)
        if fixed is None:
            out[row : row + q] = np.exp(free_cis[k : k + q])
            out[row + q : row + size] = np.tanh(free_cis[k + q : k + size])
            k += size
        row += size
    out[-1] = np.exp(free_cis[-1])
    return out


def central_second(f, x0, h):
    """``{(a, b): d2 f / dx_a dx_b}`` for ``a <= b`` at ``x0``: central differences with
    step ``h`` (``f`` may be array-valued)."""
    n = len(x0)
    E = np.eye(n) * h
    f0 = f(x0)
    out = {}
    for a in range(n):
        for b in range(a, n):
            if a == b:
                out[(a, b)] = (f(x0 + E[a]) - 2 * f0 + f(x0 - E[a])) / h**2
            else:
                out[(a, b)] = (
                    f(x0 + E[a] + E[b])
                    - f(x0 + E[a] - E[b])
                    - f(x0 - E[a] + E[b])
                    + f(x0 - E[a] - E[b])
                ) / (4 * h**2)
    return out


def central_hessian(f, x0, h):
    """The central-difference Hessian of scalar ``f`` at ``x0`` (step ``h``)."""
    H = np.empty((len(x0), len(x0)))
    for (a, b), value in central_second(f, x0, h).items():
        H[a, b] = H[b, a] = value
    return H


def information_criteria(log_likelihood, df, n):
    """``(AIC, BIC)`` with lme4's conventions."""
    return -2 * log_likelihood + 2 * df, -2 * log_likelihood + np.log(n) * df


def r_format(values, digits=4):
    """Format numbers as R's ``format(x, digits = digits)`` does: one common notation.

    Every finite value gets at least ``digits`` significant digits in a fixed notation
    with a common number of decimals, unless the scientific notation is narrower (R's
    ``formatReal`` with ``scipen = 0``): lme4 prints the variances and standard
    deviations of ``VarCorr`` this way (``612.10``, ``35.07``; ``0.000e+00``,
    ``1.879e-18``). Non-finite values print as ``NaN``/``Inf``. Returns strings of one
    width, right-justified.
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if not len(finite):
        out = ["NaN" if np.isnan(v) else ("Inf" if v > 0 else "-Inf") for v in values]
    else:
        neg = int(bool(np.any(finite < 0)))
        rgt, mxsl, mxns, mxe, mnl = 0, 1, 1, 1, 0
        lefts = []
        for v in finite:
            mantissa, exponent = f"{abs(v):.{digits - 1}e}".split("e")
            kpower = int(exponent) if v != 0 else 0
            nsig = len(mantissa.replace(".", "").rstrip("0")) or 1
            left = kpower + 1
            if kpower > 0 and abs(v) < 10.0**kpower:  # R's "roundingwidens": 99999 -> 1e+05
                left -= 1
            lefts.append(left)
            rgt = max(rgt, nsig - left)
            mxsl = max(mxsl, (v < 0) + max(left, 1))
            mxns = max(mxns, nsig)
        mxl, mnl = max(lefts), min(lefts)
        mxe = 2 if mxl > 100 or mnl <= -99 else 1
        width_fixed = mxsl + rgt + (rgt != 0)
        d = mxns - 1
        width_sci = neg + (d > 0) + d + 4 + mxe
        if width_fixed <= width_sci:
            fmt = lambda v: f"{v:.{rgt}f}"  # noqa: E731
        else:

            def fmt(v):
                mantissa, exponent = f"{v:.{d}e}".split("e")
                return f"{mantissa}e{exponent[0]}{abs(int(exponent)):02d}"

        out = [
            fmt(v) if np.isfinite(v) else ("NaN" if np.isnan(v) else ("Inf" if v > 0 else "-Inf"))
            for v in values
        ]
    width = max(len(o) for o in out)
    return [o.rjust(width) for o in out]


def format_pvalues(pvalues, digits=3):
    """R's ``format.pval(p, digits = 3)``: ``<2e-16`` below the double-precision epsilon;
    the p-values from 1e-3 up in one common format, the smaller ones in another."""
    pvalues = np.asarray(pvalues, dtype=float)
    out = np.array(["<2e-16"] * len(pvalues), dtype=object)
    out[np.isnan(pvalues)] = "NaN"
    rest = ~(pvalues < 2.220446e-16) & ~np.isnan(pvalues)
    with np.errstate(divide="ignore"):
        fixed = rest & (
            (np.floor(np.log10(np.where(pvalues > 0, pvalues, 1e-50))) >= -3) | (pvalues == 0)
        )
    for part in (fixed, rest & ~fixed):
        if part.any():
            out[part] = [v.strip() for v in r_format(pvalues[part], digits=digits)]
    return list(out)


def _varcorr_rows(random_terms, sigma2):
    """lme4's printed ``VarCorr`` (``formatVC``): the rows of strings, header first."""
    sds = [np.sqrt(np.diag(sigma)) for _, _, sigma, _ in random_terms]
    sd_all = np.concatenate([*sds, [] if sigma2 is None else [np.sqrt(sigma2)]])
    variances = r_format(sd_all**2)
    std_devs = r_format(sd_all)
    max_q = max((len(names) for _, names, _, _ in random_terms), default=1)
    n_corr = max_q - 1
    rows, k = [], 0
    for (group, names, sigma, _), sd in zip(random_terms, sds, strict=True):
        q = len(names)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.round(sigma / np.outer(sd, sd), 2) + 0.0  # -0.00 prints as 0.00
        cells = [f"{v:.2f}" if np.isfinite(v) else "NaN" for v in corr.ravel()]
        width = max(len(c) for c in cells)
        cells = np.asarray([c.rjust(width) for c in cells]).reshape(q, q)
        for i, name in enumerate(names):
            row = [group if i == 0 else "", name, variances[k], std_devs[k]]
            row += [cells[i, j] if j < i else "" for j in range(n_corr)]
            rows.append(row)
            k += 1
    if sigma2 is not None:  # a GLMM without a scale parameter has no residual row
        rows.append(["Residual", "", variances[k], std_devs[k], *[""] * n_corr])
    header = ["Groups", "Name", "Variance", "Std.Dev."]
    header += ["Corr", *[""] * (n_corr - 1)] if n_corr else []
    return [header, *rows]


def _print_matrix(rows):
    """A character matrix as R prints it with ``quote = FALSE``: left-aligned columns."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [
        " " + " ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


class MixedLMSummary:
    """What ``summary(lmer(...))`` prints, as text and as HTML, with the same content.

    Attributes
    ----------
    fixed_effects : pandas.DataFrame
        Estimates, standard errors, z statistics, p-values and Wald intervals.
    random_effects : pandas.DataFrame
        lme4's ``as.data.frame(VarCorr(fit))`` with confidence intervals of ``sdcor``.
    text : str
        The lme4-shaped printout.
    """

    def __init__(self, blocks, fixed_effects, random_effects):
        self._blocks = blocks
        self.fixed_effects = fixed_effects
        self.random_effects = random_effects
        self.text = "\n".join(text for text, _ in blocks)

    def __str__(self):
        return self.text

    def __repr__(self):
        return self.text

    def _repr_html_(self):
        """Every block of the text; its tables as HTML tables."""
        import html

        parts = ["<div class='sklmm-summary'>"]
        for text, table in self._blocks:
            if table is None:
                if text.strip():
                    parts.append(f"<pre>{html.escape(text)}</pre>")
                continue
            title, frame = table
            parts.append(f"<h4>{html.escape(title)}</h4>")
            parts.append(frame.to_html(na_rep="", float_format=lambda v: f"{v:.4g}"))
        parts.append("</div>")
        return "".join(parts)


def summary_blocks(
    *,
    reml,
    log_likelihood,
    aic,
    bic,
    df,
    n_obs,
    random_terms,
    random_table,
    sigma2,
    fixed,
    fixed_cov,
    scaled_residuals,
    singular,
    converged,
    message,
    formula=None,
    title=None,
):
    """The blocks of :class:`MixedLMSummary`: ``(text, table)`` pairs.

    ``text`` is the block's part of the printout; ``table`` is ``None`` or a
    ``(title, DataFrame)`` shown in its place in HTML. ``random_terms`` lists
    ``(group, names, sigma, n_levels)`` per random-effects term; ``formula`` is the
    model's formula, printed under the title as lme4 does (``None``: no line). ``title``
    replaces the first line(s) (a GLMM's method and family); ``sigma2=None``: no
    residual row.
    """
    blocks = []
    method = "REML" if reml else "maximum likelihood"
    head = [title or f"Linear mixed model fit by {method} [sklmm]"]
    if formula is not None:
        head.append(f"Formula: {formula}")
    if reml:
        head.append(f"REML criterion at convergence: {-2 * log_likelihood:.4f}")
    else:
        head.append(
            pd.DataFrame(
                [[aic, bic, log_likelihood, -2 * log_likelihood, n_obs - df]],
                columns=["AIC", "BIC", "logLik", "deviance", "df.resid"],
            ).to_string(index=False, float_format=lambda v: f"{v:.4f}")
        )
    head.append("")
    if scaled_residuals is not None:
        head.append("Scaled residuals:")
        q = np.quantile(scaled_residuals, [0, 0.25, 0.5, 0.75, 1])
        head.append(
            pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"]).to_string(
                index=False, float_format=lambda v: f"{v:.4f}"
            )
        )
        head.append("")
    blocks.append(("\n".join(head), None))
    varcorr = "\n".join(["Random effects:", *_print_matrix(_varcorr_rows(random_terms, sigma2))])
    blocks.append((varcorr, ("Random effects", random_table)))
    if random_terms:
        counts = "; ".join(f"{group}, {m}" for group, _, _, m in random_terms)
        blocks.append((f"Number of obs: {n_obs}, groups:  {counts}\n", None))
    else:
        blocks.append((f"Number of obs: {n_obs}, no random effects\n", None))
    if "z" in fixed:  # the normal reference
        table = fixed[["estimate", "std_error", "z"]].copy()
        table.columns = ["Estimate", "Std. Error", "z value"]
        head = "Pr(>|z|)"
    else:  # t tests with df (lmerTest's layout)
        table = fixed[["estimate", "std_error", "df", "t"]].copy()
        table.columns = ["Estimate", "Std. Error", "df", "t value"]
        head = "Pr(>|t|)"
    table.index.name = None
    text = table.to_string(float_format=lambda v: f"{v:.4f}")
    pvals = format_pvalues(fixed["p_value"].to_numpy())
    width = max(len(head), *(len(p) for p in pvals))
    lines = text.split("\n")
    lines[0] += " " + head.rjust(width)
    lines[1:] = [line + " " + p.rjust(width) for line, p in zip(lines[1:], pvals, strict=True)]
    blocks.append(("\n".join(["Fixed effects:", *lines]), ("Fixed effects", fixed)))
    if len(fixed) > 1:
        se = np.sqrt(np.diag(fixed_cov))
        corr = fixed_cov / np.outer(se, se)
        short = [str(n)[:6] for n in fixed.index]  # lme4 abbreviates the names too
        corr_rows = [
            [f"{(corr[i, j] if abs(corr[i, j]) >= 5e-4 else 0.0):.3f}" for j in range(i)]
            + [""] * (len(short) - 1 - i)
            for i in range(1, len(short))
        ]
        frame = pd.DataFrame(corr_rows, index=short[1:], columns=short[:-1])
        full = pd.DataFrame(corr, index=fixed.index, columns=fixed.index)
        blocks.append(
            (
                "\nCorrelation of Fixed Effects:\n" + frame.to_string(),
                ("Correlation of Fixed Effects", full.round(3)),
            )
        )
    notes = []
    if singular:
        notes.append("boundary (singular) fit: a variance is zero or a correlation is +/-1")
    if not converged:
        notes.append(f"the solver did not converge: {message}")
    if notes:
        blocks.append(("\n" + "\n".join(notes), None))
    return blocks


def _lr_table(small, large):
    """Chi-squared test of two nested fits (both ML), lme4's ``anova`` table."""
    chi2 = max(2 * (large["log_likelihood"] - small["log_likelihood"]), 0.0)
    ddf = large["df"] - small["df"]
    p = stats.chi2.sf(chi2, ddf)
    rows = []
    for m in (small, large):
        aic, bic = information_criteria(m["log_likelihood"], m["df"], m["n"])
        rows.append([m["df"], aic, bic, m["log_likelihood"], -2 * m["log_likelihood"]])
    table = pd.DataFrame(
        rows, columns=["npar", "AIC", "BIC", "logLik", "deviance"], index=["small", "large"]
    )
    table["Chisq"] = [np.nan, chi2]
    table["Df"] = [np.nan, ddf]
    table["Pr(>Chisq)"] = [np.nan, p]
    return table


def likelihood_ratio_test(model_a, model_b, *, refit=True):
    """Likelihood-ratio test between two nested fits (lme4's ``anova(m1, m2)``).

    REML fits are refitted by ML first (from their stored cross-products, no data
    needed), as lme4 does: REML likelihoods of models with different fixed effects
    are not comparable. ``refit=False`` compares the REML likelihoods themselves
    (lme4's ``anova(m1, m2, refit = FALSE)``, lmerTest's ``ranova``): valid, and
    preferred for tests of random effects, when both models are REML fits with the
    same fixed effects.

    Parameters
    ----------
    model_a, model_b : MixedLMRegressor, MixedGLMClassifier or MixedGLMRegressor
        Fitted on the same rows, the same response and the same groups; one nested
        in the other (its fixed-effect columns and random effects a subset of the
        other's, a random-effects term being identified by its name). Their order
        does not matter. Either may have several terms, for example
        ``(1 | Subject)`` against ``(1 | Subject) + (1 | Item)``.
    refit : bool, default=True
        Refit REML fits by ML (lme4's default), or compare the fits' own (REML)
        likelihoods: then both must be REML fits with the same fixed effects.

    Returns
    -------
    pandas.DataFrame
        Rows ``small`` and ``large`` with npar, AIC, BIC, logLik, deviance (ML, or
        REML with ``refit=False``), and for ``large`` the chi-squared statistic, its
        degrees of freedom and p-value.

    Raises
    ------
    ValueError
        When the models were fitted on different data or are not nested.
    """
    from sklearn.utils.validation import check_is_fitted

    for m in (model_a, model_b):
        check_is_fitted(m)
    fitted_a, fitted_b = model_a._fitted, model_b._fitted
    fa, fb = fitted_a.fingerprint(), fitted_b.fingerprint()
    if fa.get("family") != fb.get("family"):
        raise ValueError(
            "the two models have different families or links (or one is a linear mixed "
            f"model): {fa.get('family', 'gaussian')} against {fb.get('family', 'gaussian')}; "
            "a likelihood-ratio test compares models of one family"
        )
    shared = set(fa["factors"]) & set(fb["factors"])
    same = (
        fa["n"] == fb["n"]
        and fa["weights"][0] == fb["weights"][0]
        and np.isclose(fa["weights"][1], fb["weights"][1], rtol=1e-12, atol=1e-9)
        and np.allclose(fa["y"], fb["y"], rtol=1e-9, atol=0)
        and all(
            fa["factors"][k][0] == fb["factors"][k][0]
            and np.array_equal(fa["factors"][k][1], fb["factors"][k][1])
            for k in shared
        )
    )
    if not same:
        raise ValueError(
            "the two models were not fitted on the same data (rows, response, groups and "
            "sample_weight must be identical for a likelihood-ratio test)"
        )
    (small, f_small), (large, f_large) = sorted(
        ((fitted_a, fa), (fitted_b, fb)), key=lambda pair: pair[0].n_params
    )
    small_cols, large_cols = f_small["columns"], f_large["columns"]
    yy = float(f_small["y"][1])

    def same_column(a, b):
        # mean, centred sum of squares, centred cross-product with y: the last is 0 up to
        # rounding for the intercept, so its tolerance is on the scale of sqrt(xx * yy)
        (mean_a, xx_a, xy_a), (mean_b, xx_b, xy_b) = a, b
        return (
            np.isclose(mean_a, mean_b, rtol=1e-9, atol=1e-12)
            and np.isclose(xx_a, xx_b, rtol=1e-9, atol=1e-12)
            and np.isclose(xy_a, xy_b, rtol=1e-9, atol=1e-9 * np.sqrt(abs(xx_a * yy)) + 1e-12)
        )

    fixed_nested = all(
        name in large_cols and same_column(value, large_cols[name])
        for name, value in small_cols.items()
    )
    small_re, _, small_corr = small.random_structure()
    large_re, large_diag, _ = large.random_structure()
    re_nested = small_re <= large_re
    # A correlated term is not nested in the same term with a diagonal covariance.
    cov_nested = not (small_corr & large_diag)
    if small.n_params == large.n_params or not (fixed_nested and re_nested and cov_nested):
        raise ValueError(
            "the models are not nested: one model's fixed-effect columns (the same columns, "
            "not only the same names) and random effects must be a subset of the other's, "
            "with fewer parameters"
        )
    if not refit:
        same_fixed = small_cols.keys() == large_cols.keys()
        if not (small.model.reml and large.model.reml and same_fixed):
            raise ValueError(
                "refit=False compares REML likelihoods, which is valid only for two REML "
                "fits with the same fixed effects; use refit=True (the default) to refit "
                "them by ML"
            )
    info = [
        {
            "log_likelihood": m.ml_log_likelihood() if refit else m.log_likelihood,
            "df": m.n_params,
            "n": fa["n"],
        }
        for m in (small, large)
    ]
    if info[0]["log_likelihood"] > info[1]["log_likelihood"] + 1e-6:
        raise ValueError(
            "the smaller model has the higher log-likelihood, so the models are not nested"
        )
    return _lr_table(*info)


def check_alpha(alpha):
    """``alpha`` strictly between 0 and 1 (one minus a confidence level)."""
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, Real)
        or not np.isfinite(alpha)
        or not 0 < alpha < 1
    ):
        raise ValueError(
            f"alpha must be a number strictly between 0 and 1 (one minus the confidence "
            f"level, 0.05 for 95% intervals), got {alpha!r}"
        )
    return float(alpha)
