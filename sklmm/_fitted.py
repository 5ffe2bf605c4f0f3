"""From an optimum to user-scale results, and everything a fitted model answers.

:class:`FittedModel` is built once per fit from the :class:`~sklmm._model.MixedModel`,
its criterion and the :class:`~sklmm._optimize.OptSummary`. It undoes every
reparameterization of :mod:`sklmm._model` and holds the user-scale results, one shape
for every model: per term (keyed by term name) the covariance, the BLUPs and their
conditional covariances as labelled pandas objects. It also answers what needs the
criterion again: predictions with their standard deviations (one function over terms,
which Dask maps over partitions), the variance-parameter intervals of the summary, the
ML refit of the likelihood-ratio test.
"""

import functools

import numpy as np
import pandas as pd

from ._inference import information_criteria, varcorr_table, variance_parameter_cis
from ._optimize import boundary_terms, optimize
from ._terms import align_labels, label_sources, match_terms

#: A diagonal entry of Lambda below this marks a singular (boundary) fit: lme4's isSingular
#: threshold, applied here to the Lambda of the centred random-effect columns rescaled to unit
#: root mean square (so the flag does not depend on the units or offsets of the columns).


def _psd_cholesky(psi, tol=1e-12):
    """A lower-triangular ``L`` with ``L L' = psi`` for positive semi-definite ``psi``.

    Zero pivots (a zero variance, a correlation of +/-1) give zero columns; ``None`` if
    ``psi`` is not positive semi-definite.
    """
    q = len(psi)
    L = np.zeros((q, q))
    scale = max(float(np.max(np.abs(np.diag(psi)))), 1e-300)
    for j in range(q):
        d = psi[j, j] - L[j, :j] @ L[j, :j]
        if d < -tol * scale:
            return None
        if d <= tol * scale:
            rest = psi[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]
            if np.any(np.abs(rest) > 1e-7 * np.sqrt(scale * scale)):
                return None
            continue
        L[j, j] = np.sqrt(d)
        L[j + 1 :, j] = (psi[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L


def user_beta(model, beta_c):
    """The fixed effects on the user's scale from those of the centred design."""
    beta = model.T @ beta_c
    if model.fit_intercept:
        beta[0] += model.y_mean
    return beta


def term_theta(model, k, sigma, sigma2, psd=False):
    """The slice of ``theta`` of term ``k`` for its user-scale covariance ``sigma`` and
    ``sigma2``: the inverse of :meth:`FittedModel._user_covs`. None outside the space;
    ``psd`` admits singular covariances (a zero variance, a correlation of +/-1)."""
    t, s = model.terms[k], model.scales[k]
    A_inv = np.linalg.inv(model.shifts[k])  # b = A b_centred
    psi = A_inv @ sigma @ A_inv.T * np.outer(s, s) / sigma2
    if t.covariance == "unstructured" and psd:
        lam = _psd_cholesky(psi)
        return None if lam is None else lam[t.structure.rows, t.structure.cols]
    if t.covariance != "unstructured" and psd:
        d = np.diag(psi)
        if np.any(d < -1e-12 * max(float(np.max(np.abs(d))), 1e-300)):
            return None
        return np.sqrt(np.clip(d, 0.0, None))
    return _theta_from_psi(psi, t.structure)


def _theta_from_psi(psi, structure):
    """``theta`` of a relative covariance ``psi`` for a structure, None if not PD."""
    try:
        lam = (
            np.linalg.cholesky(psi)
            if structure.kind == "unstructured"
            else np.diag(np.sqrt(np.diag(psi)))
        )
    except np.linalg.LinAlgError:
        return None
    return lam[structure.rows, structure.cols]


def _condvar_frame(condvar, index, columns):
    """Conditional covariances (m, q, q) as a DataFrame indexed by (level..., effect)."""
    m, q = len(index), len(columns)
    if isinstance(index, pd.MultiIndex):
        arrays = [index.get_level_values(j).repeat(q) for j in range(index.nlevels)]
        names = list(index.names)
    else:
        arrays, names = [index.repeat(q)], [index.name]
    arrays.append(np.tile(np.asarray(columns, dtype=object), m))
    rows = pd.MultiIndex.from_arrays(arrays, names=[*names, "effect"])
    return pd.DataFrame(np.asarray(condvar).reshape(m * q, q), index=rows, columns=columns)


class FittedModel:
    """User-scale results of a fit (see the module docstring).

    Parameters
    ----------
    model : MixedModel
        The fitted model.
    objective : object
        Its criterion (the factorization is released after use).
    opt : OptSummary
        The optimization's result.
    tol, max_iter, em_max_iter : float, int, int
        The fit's settings (an ML refit uses them).
    """

    def __init__(self, model, objective, opt, *, tol, max_iter, em_max_iter):
        self.model, self.objective, self.opt = model, objective, opt
        self.tol, self.max_iter, self.em_max_iter = tol, max_iter, em_max_iter
        ev, theta = opt.evaluation, opt.theta
        T = model.T
        self.beta = beta = user_beta(model, ev.beta)
        self.sigma2 = float(ev.sigma2)
        self.log_likelihood = -0.5 * float(ev.deviance)
        self.fixed_cov = T @ objective.fixed_effects_cov(theta) @ T.T
        n_theta = sum(t.structure.n_theta for t in model.terms)
        self.n_params = len(beta) + n_theta + 1
        self.aic, self.bic = information_criteria(self.log_likelihood, self.n_params, model.n)
        self.singular = []
        # The per-term arrays on the user scale; their labelled DataFrames are built on
        # first use (a cross-validation's candidate fits never need them).
        self._terms_raw, self._covs, self._blups, self._condvars = {}, None, None, None
        self._fit_log_frame = None
        if model.terms:
            b, condvar = objective.conditional_modes(theta)
            if not isinstance(b, list):  # the one-factor criterion: one term
                b, condvar = [b], [condvar]
            covs = self._user_covs(theta, self.sigma2)
            for k, t in enumerate(model.terms):
                s, A = model.scales[k], model.shifts[k]
                self._terms_raw[t.name] = (t, covs[k], (b[k] / s) @ A.T, condvar[k], s, A)
            self.singular = [model.terms[k].name for k in boundary_terms(theta, model.blocks)]
        objective.release()

    def theta_for(self, model):
        """These relative covariance factors on another model's scale (a warm start).

        ``theta`` lives on the scale of each term's centred and rescaled columns; the
        user's covariances, divided by the residual variance, are the same on any data,
        so they are carried over (exactly this ``theta`` when the data are the same).
        """
        parts = []
        for k, t in enumerate(model.terms):
            psi = self._terms_raw[t.name][1] / self.sigma2
            s, A = model.scales[k], model.shifts[k]
            Ainv = np.linalg.inv(A)
            psi_c = (Ainv @ psi @ Ainv.T) * np.outer(s, s)
            parts.append(t.structure.theta_from_psi(psi_c))
        return np.concatenate(parts) if parts else None

    def blup_array(self, name):
        """The BLUPs of one term as an array (levels, effects), without the DataFrame."""
        return self._terms_raw[name][2]

    @functools.cached_property
    def fixed_effects(self):
        """``beta`` as a Series named by the fixed effects (built on first use)."""
        return pd.Series(self.beta.copy(), index=self.model.fixed_names, name="beta")

    @property
    def covs(self):
        """The random-effects covariance of every term, a labelled DataFrame per term."""
        if self._covs is None:
            self._covs = {
                name: pd.DataFrame(cov, index=t.columns, columns=t.columns)
                for name, (t, cov, *_) in self._terms_raw.items()
            }
        return self._covs

    @property
    def blups(self):
        """The BLUPs of every term, a DataFrame per term indexed by its levels."""
        if self._blups is None:
            self._blups = {
                name: pd.DataFrame(b, index=t.index(), columns=t.columns)
                for name, (t, _, b, *_) in self._terms_raw.items()
            }
        return self._blups

    @property
    def condvars(self):
        """The conditional covariances of the BLUPs per term, as DataFrames (built on
        first use: a fit that never reads them does not pay for their indexes)."""
        if self._condvars is None:
            frames = {}
            for name, (t, _, _, condvar, s, A) in self._terms_raw.items():
                cv = A @ (condvar / np.outer(s, s)) @ A.T
                frames[name] = _condvar_frame(cv, self.blups[name].index, t.columns)
            self._condvars = frames
        return self._condvars

    @property
    def fit_log(self):
        """The optimizer's log as a DataFrame (built on first use)."""
        if self._fit_log_frame is None:
            self._fit_log_frame = self._fit_log(self.opt.log)
        return self._fit_log_frame

    def for_prediction(self, return_std):
        """A copy with only what prediction needs (the statistics too for ``return_std``).

        Sent once to every Dask worker: without the statistics and the log it stays small.
        """
        import copy

        light = copy.copy(self)
        light._fit_log_frame = None
        light.opt = copy.copy(self.opt)
        light.opt.log = []
        if not return_std:
            light.model = copy.copy(self.model)
            light.model.stats = None
            light.objective = None
        return light

    # -- fitted attributes ----------------------------------------------------------
    @property
    def variance_components(self):
        """The variance of every intercept-only term, by term name."""
        out = {
            name: float(cov.iloc[0, 0])
            for name, cov in self.covs.items()
            if list(cov.columns) == ["(Intercept)"]
        }
        return pd.Series(out, name="variance", dtype=float)

    def _user_covs(self, theta, sigma2):
        """Per term: the user-scale covariance at ``theta`` and ``sigma2``."""
        out = []
        for k, (t, sl) in enumerate(zip(self.model.terms, self.model.slices, strict=True)):
            s, A = self.model.scales[k], self.model.shifts[k]
            lam = A @ (t.structure.lam(theta[sl]) / s[:, None])
            out.append(sigma2 * lam @ lam.T)
        return out

    def _fit_log(self, log):
        """One row per record of the optimizer's log, the same columns for every model."""
        records = []
        for rec in log:
            row = {
                "phase": rec["phase"],
                "iteration": rec["iteration"],
                "objective": rec["deviance"],
                "log_likelihood": -0.5 * rec["deviance"],
                "gradient_norm": rec["gradient_norm"],
                "step_size": rec["step_size"],
                "residual_variance": rec["sigma2"],
            }
            for t, cov in zip(
                self.model.terms, self._user_covs(rec["theta"], rec["sigma2"]), strict=True
            ):
                cols = t.columns
                for j in range(t.q):
                    for i in range(j, t.q):
                        if i == j:
                            row[f"{t.name}: Var[{cols[i]}]"] = cov[i, i]
                        elif t.covariance == "unstructured":
                            row[f"{t.name}: Cov[{cols[j]},{cols[i]}]"] = cov[i, j]
            records.append(row)
        return pd.DataFrame.from_records(records)

    def fingerprint(self):
        """What a likelihood-ratio test checks to tell that two fits saw the same data."""
        m = self.model
        cp, p = m.stats.XytXy, m.stats.p
        means = np.r_[[1.0] if m.fit_intercept else [], m.x_mean]
        return {
            "n": m.n,
            "weights": (m.weighted, m.stats.log_weights),
            "y": (m.y_mean, cp[p, p]),
            "factors": {
                t.name: (tuple(t.index()), np.asarray(c))
                for t, c in zip(m.terms, m.counts, strict=True)
            },
            "columns": {
                name: (means[j], cp[j, j], cp[j, p]) for j, name in enumerate(m.fixed_names)
            },
        }

    def fixed_crossprod(self):
        """``X'X`` of the fixed-effects design in the user's coordinates (weighted if fitted so).

        From the centred cross-products: ``X = X_c T^{-1}`` (``beta = T beta_c``).
        """
        m = self.model
        p = m.stats.p
        T_inv = np.linalg.inv(m.T)
        return T_inv.T @ m.stats.XytXy[:p, :p] @ T_inv

    def random_structure(self):
        """``{(term, column)}`` of the random effects; terms with diagonal / correlated effects."""
        pairs, diagonal, correlated = set(), set(), set()
        for t in self.model.terms:
            pairs |= {(t.name, c) for c in t.columns}
            if t.q > 1:
                (diagonal if t.covariance == "diagonal" else correlated).add(t.name)
        return pairs, diagonal, correlated

    # -- prediction -----------------------------------------------------------------
    def predict(self, X, levels, return_std=False, include_residual=False):
        """Predictions (and their standard deviations) for validated ``X``.

        ``levels`` holds every term's level of each row (-1: unseen or not given). With
        ``return_std``, the standard deviation of the prediction error of each row
        (variance parameters treated as known)::

            d' Cov(beta) d + sigma2 w'Pw + sum over unseen terms z_k' Sigma_k z_k,

        with ``w`` the row's columns at its seen levels, ``P = Lambda M^{-1} Lambda'`` (the
        BLUPs' relative conditional covariance, across terms) and ``d = x - G'w``,
        ``G = P Z'X`` (how the BLUPs move with ``beta``), all in the coordinates of the
        fit (centred and rescaled columns).
        """
        m = self.model
        n = X.shape[0]
        pred, Xf, zs_user = conditional_mean(self, X, levels)
        if not return_std:
            return pred
        Xe = Xf - m.x_mean
        if m.fit_intercept:
            Xe = np.column_stack([np.ones(n), Xe])
        theta = self.opt.theta
        if m.terms:
            zs = [z @ A / s for z, s, A in zip(zs_user, m.scales, m.shifts, strict=True)]
            try:
                quad, Gw = self.objective.prediction_variance(theta, levels, zs)
                cov_beta = self.objective.fixed_effects_cov(theta)
            finally:
                self.objective.release()  # the factorization is rebuilt on demand, not kept
        else:
            quad, Gw = np.zeros(n), np.zeros_like(Xe)
            cov_beta = self.objective.fixed_effects_cov(theta)
            self.objective.release()
        d = Xe - Gw
        var = np.einsum("ij,jk,ik->i", d, cov_beta, d) + self.sigma2 * quad
        for t, z, idx in zip(m.terms, zs_user, levels, strict=True):
            unseen = idx < 0
            cov = self.covs[t.name].to_numpy()
            var[unseen] += np.einsum("ij,jk,ik->i", z[unseen], cov, z[unseen])
        if include_residual:
            var += self.sigma2
        return pred, np.sqrt(np.maximum(var, 0.0))

    # -- inference ------------------------------------------------------------------
    def variance_table(self, alpha):
        """lme4's ``as.data.frame(VarCorr(fit))`` with Wald intervals, and the summary's terms."""
        m = self.model
        tables, random_terms, table = [], [], None
        for t in m.terms:
            cov = self.covs[t.name].to_numpy()
            table = varcorr_table(
                t.name, t.columns, cov, self.sigma2, covariances=t.covariance == "unstructured"
            )
            tables.append(table.iloc[:-1])
            random_terms.append((t.name, t.columns, cov, t.n_levels))
        if table is None:
            table = varcorr_table("", [], np.zeros((0, 0)), self.sigma2)
        tables.append(table.iloc[-1:])
        vc = pd.concat(tables, ignore_index=True)
        cis = self._variance_cis(alpha, len(vc))
        vc[f"ci_{alpha / 2:g}"], vc[f"ci_{1 - alpha / 2:g}"] = cis[:, 0], cis[:, 1]
        return vc, random_terms

    def _variance_cis(self, alpha, n_par):
        """Wald intervals of every term's sd's and correlations and of sigma."""
        m, objective = self.model, self.objective
        if not m.terms:
            return np.full((n_par, 2), np.nan)
        theta_hat, singular = self.opt.theta, set(self.singular)

        def deviance(sigmas, s2):
            theta = np.empty_like(theta_hat)
            for k, (t, sl) in enumerate(zip(m.terms, m.slices, strict=True)):
                if t.name in self.singular:  # held at its user-scale covariance
                    theta[sl] = theta_hat[sl] * np.sqrt(self.sigma2 / s2)
                    continue
                th = term_theta(m, k, sigmas[k], s2)
                if th is None:
                    return np.inf
                theta[sl] = th
            return objective.unprofiled_deviance(theta, s2)

        terms = [
            (self.covs[t.name].to_numpy(), t.covariance == "unstructured", t.name not in singular)
            for t in m.terms
        ]
        try:
            with objective.blas_limit():
                return variance_parameter_cis(terms, self.sigma2, deviance, alpha)
        finally:
            objective.release()

    def ml_log_likelihood(self):
        """The ML log-likelihood, refitting by ML from the stored statistics for REML."""
        if not self.model.reml:
            return self.log_likelihood
        objective = self.model.criterion(self.opt.solver, reml=False)
        opt = optimize(
            objective,
            self.opt.solver,
            max_iter=self.max_iter,
            em_max_iter=self.em_max_iter,
            tol=self.tol,
            blocks=self.model.blocks,
        )
        objective.release()
        return -0.5 * opt.objective


def conditional_mean(fitted, X, levels):
    """``x'beta + z'b`` of every row: each term adds the BLUP (conditional mode) of the
    row's level where that level was seen in ``fit`` (``levels[k] >= 0``), nothing else.

    ``fitted`` is a :class:`FittedModel` or a GLMM's; ``X`` holds the fixed-effects
    columns first (``len(fitted.model.x_mean)`` of them), then any random-only columns.

    Returns
    -------
    pred : ndarray of shape (n,)
    Xf : ndarray
        The fixed-effects columns of ``X``.
    zs : list of ndarray
        Every term's columns for the rows of ``X``.
    """
    m, beta = fitted.model, fitted.beta
    Xf = X[:, : len(m.x_mean)]  # any later columns are random-effects columns only
    pred = Xf @ (beta[1:] if m.fit_intercept else beta) + (beta[0] if m.fit_intercept else 0)
    zs = [t.z(X) for t in m.terms]
    for t, z, idx in zip(m.terms, zs, levels, strict=True):
        seen = idx >= 0
        if seen.any():
            b = fitted.blups[t.name].to_numpy()[idx[seen]]
            pred[seen] += np.einsum("ij,ij->i", z[seen], b)
    return pred, Xf, zs


def predict_labels(fitted, X, groups_cols, vc_cols, *, return_std=False, include_residual=False):
    """Predictions for validated ``X`` and the label columns given at prediction.

    The label columns are matched to the terms' factors by name, else by position
    (:func:`~sklmm._terms.align_labels`); both kinds ``{}``: population predictions.
    """
    given = {"groups": groups_cols, "variance_components": vc_cols}
    model = fitted.model
    if any(given.values()):
        for kind in given:
            given[kind] = align_labels(given[kind], model.terms, kind, model.label_columns[kind])
    columns = label_sources(given["groups"], given["variance_components"])
    levels = match_terms(model.terms, columns, X.shape[0])
    return fitted.predict(X, levels, return_std=return_std, include_residual=include_residual)
