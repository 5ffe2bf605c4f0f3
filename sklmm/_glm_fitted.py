"""User-scale results of a GLMM fit, and prediction of its linear predictor.

:class:`FittedGLMM` is to :mod:`sklmm._glmm` what :class:`~sklmm._fitted.FittedModel`
is to the linear model: it holds what the estimator's attributes, ``predict`` and the
summary need, and none of the rows (the statistics it keeps are per level). It has the
same interface for prediction (``model.terms``, ``blups``, :meth:`FittedGLMM.predict`),
so the label matching of :func:`~sklmm._fitted.predict_labels` and the Dask
prediction serve both kinds of models.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._fitted import FittedModel, _condvar_frame, conditional_mean
from ._inference import information_criteria, varcorr_table
from ._model import MixedModel
from ._optimize import boundary_terms


@dataclass
class GLMMModel:
    """What prediction and the summary need to know of a GLMM's design.

    ``x_mean`` has one zero per fixed-effect feature (no centring: it gives the number of
    leading columns of ``X`` that are fixed effects, as for the linear model).
    """

    terms: list
    fixed_names: list
    fit_intercept: bool
    x_mean: np.ndarray
    label_columns: dict
    n: int
    family: object
    weighted: bool = False
    reml: bool = False  # maximum likelihood always (the likelihood-ratio test reads it)
    x_center: np.ndarray = None
    x_scale: np.ndarray = None

    @property
    def T(self):
        """``beta = T beta_internal``: the fit's fixed-effects columns are the user's,
        centred (with an intercept) and divided by their standard deviations."""
        p = len(self.x_mean)
        m = np.zeros(p) if self.x_center is None else self.x_center
        s = np.ones(p) if self.x_scale is None else self.x_scale
        if not self.fit_intercept:
            return np.diag(1.0 / s)
        T = np.eye(p + 1)
        T[0, 1:] = -m / s
        T[1:, 1:] = np.diag(1.0 / s)
        return T

    def internal_design(self, Xf):
        """The fit's fixed-effects design of the user's columns ``Xf``."""
        p = Xf.shape[1]
        m = np.zeros(p) if self.x_center is None else self.x_center
        s = np.ones(p) if self.x_scale is None else self.x_scale
        Xs = (Xf - m) / s
        return np.column_stack([np.ones(len(Xf)), Xs]) if self.fit_intercept else Xs

    # The linear model's: each term's slice of theta, and with its covariance structure.
    slices = MixedModel.slices
    blocks = MixedModel.blocks


class FittedGLMM:
    """The results of :func:`~sklmm._glmm.fit_glmm` on the user's scale.

    Parameters
    ----------
    model : GLMMModel
    criterion : LaplaceCriterion
        Used once here (the conditional variances, the joint statistics for
        ``return_std``); its rows are not kept.
    fit : GLMMFit
    """

    def __init__(self, model, criterion, fit):
        self.model, self.fit = model, fit
        self.family = model.family
        self.n_agq = criterion.n_agq
        theta, beta, mode = fit.theta, fit.beta, fit.mode
        T = model.T
        self.theta, self.beta_internal, self.beta = theta, beta, T @ beta
        self.log_likelihood = -0.5 * fit.deviance
        n_theta = len(theta)
        self.n_params = len(beta) + n_theta
        self.aic, self.bic = information_criteria(self.log_likelihood, self.n_params, model.n)
        # The joint statistics at the modes: the conditional covariance of beta (lme4's
        # vcov(use.hessian = FALSE)) and of the predictions.
        joint = criterion.data.row_pass(criterion.family, beta, mode.b, joint=True)
        self._joint = criterion._objective(joint.stats)
        try:
            self._cov_internal = self._joint.fixed_effects_cov(theta, sigma2=1.0)
        except np.linalg.LinAlgError:  # separated outcomes: X'WX is numerically singular
            p = len(beta)
            self._cov_internal = np.full((p, p), np.nan)
        self.fixed_cov_conditional = T @ self._cov_internal @ T.T
        self.fixed_cov = T @ self._hessian_cov(fit.hessian, n_theta) @ T.T
        self.covs, self.blups, self._condvar_parts = {}, {}, {}
        lams = criterion.lams(theta)
        cv = None
        if model.terms:
            obj = mode.objective  # u alone, Fisher weights (lme4's condVar)
            _, cv = obj.conditional_modes(theta)
            scale = obj._factor(theta)["r2"] / obj.k  # the working model's sigma2: undone
            for k, t in enumerate(model.terms):
                cols = t.columns
                cov = lams[k] @ lams[k].T
                self.covs[t.name] = pd.DataFrame(cov, index=cols, columns=cols)
                index = t.index()
                self.blups[t.name] = pd.DataFrame(mode.b[k], index=index, columns=cols)
                self._condvar_parts[t.name] = (cv[k] / scale, index, cols)
            obj.release()
        self.singular = [model.terms[k].name for k in boundary_terms(theta, model.blocks)]
        self._condvars = None
        self._data_sums = criterion.data.data_sums()

    def fingerprint(self):
        """What a likelihood-ratio test checks to tell that two fits saw the same data."""
        d, m = self._data_sums, self.model
        k = len(m.fixed_names)
        return {
            "family": (m.family.family, m.family.link),
            "n": d["n"],
            "weights": (m.weighted, d["m"]),
            "y": (d["my"], d["myy"], d["offset"]),
            "factors": {
                t.name: (tuple(t.index()), np.asarray(c))
                for t, c in zip(m.terms, d["counts"], strict=True)
            },
            "columns": {
                name: (d["x"][j] / d["n"], d["xx"][j], d["xy"][j])
                for j, name in zip(range(k), m.fixed_names, strict=True)
            },
        }

    random_structure = FittedModel.random_structure
    variance_components = FittedModel.variance_components
    fixed_effects = FittedModel.fixed_effects

    def ml_log_likelihood(self):
        """The log-likelihood (a GLMM is fitted by maximum likelihood)."""
        return self.log_likelihood

    def _hessian_cov(self, H, n_theta):
        """lme4's default ``vcov``: the ``beta`` block of ``(H / 2)^{-1}``, ``H`` the Hessian
        of the deviance in ``(theta, beta)``; the conditional one when ``H`` is not
        positive definite or was not computed (a ``theta`` on its bound is held fixed)."""
        if H is None:
            return self._cov_internal
        bounds = [t.structure.lower_bounds for t in self.model.terms]
        lower = np.concatenate([*bounds, np.full(len(self.beta), -np.inf)])
        x = np.concatenate([self.theta, self.beta_internal])
        free = ~(x <= lower + 1e-8)
        Hf = H[np.ix_(free, free)] / 2.0
        try:
            L = np.linalg.cholesky(Hf)
        except np.linalg.LinAlgError:
            return self._cov_internal
        inv = np.linalg.inv(L)
        cov = inv.T @ inv
        p = len(self.beta)
        return cov[-p:, -p:]

    @property
    def condvars(self):
        if self._condvars is None:
            self._condvars = {
                name: _condvar_frame(*parts) for name, parts in self._condvar_parts.items()
            }
        return self._condvars

    def for_prediction(self, return_std):
        """A copy for the Dask workers (everything here is per level already)."""
        import copy

        return copy.copy(self)

    def variance_table(self):
        """lme4's ``as.data.frame(VarCorr(fit))`` of a GLMM, and the summary's terms."""
        tables, random_terms = [], []
        for t in self.model.terms:
            cov = self.covs[t.name].to_numpy()
            tables.append(
                varcorr_table(
                    t.name, t.columns, cov, None, covariances=t.covariance == "unstructured"
                )
            )
            random_terms.append((t.name, t.columns, cov, t.n_levels))
        vc = (
            pd.concat(tables, ignore_index=True)
            if tables
            else pd.DataFrame(columns=["grp", "var1", "var2", "vcov", "sdcor"])
        )
        return vc, random_terms

    def predict(self, X, levels, return_std=False, include_residual=False):
        """The linear predictor ``x'beta + z'b`` (no offset) and its standard deviation.

        ``levels``: every term's level of each row (-1: unseen). The standard deviation
        is that of the prediction error of ``eta`` given the data, as for the linear
        model (the conditional covariance of the random effects at the modes and their
        dependence on ``beta``; an unseen level adds ``z' Sigma_k z``), with the
        curvature of the likelihood at the modes in place of ``sigma2``.
        """
        m = self.model
        pred, Xf, zs = conditional_mean(self, X, levels)
        if not return_std:
            return pred
        n = X.shape[0]
        Xe = m.internal_design(Xf)  # the joint statistics' coordinates
        if m.terms:
            try:
                quad, Gw = self._joint.prediction_variance(self.theta, levels, zs)
            finally:
                self._joint.release()
        else:
            quad, Gw = np.zeros(n), np.zeros_like(Xe)
        d = Xe - Gw
        var = np.einsum("ij,jk,ik->i", d, self._cov_internal, d) + quad
        for t, z, idx in zip(m.terms, zs, levels, strict=True):
            unseen = idx < 0
            cov = self.covs[t.name].to_numpy()
            var[unseen] += np.einsum("ij,jk,ik->i", z[unseen], cov, z[unseen])
        return pred, np.sqrt(np.maximum(var, 0.0))
