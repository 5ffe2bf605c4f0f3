r"""Families and links of the generalized linear mixed models.

A row ``i`` with linear predictor ``eta_i`` (offset included), mean ``mu_i = g^{-1}(eta_i)``
and prior weight ``m_i`` contributes ``m_i l(y_i; mu_i)`` to the conditional
log-likelihood (normalizing constants included, as R's ``family()$aic``):

* binomial: ``y_i`` a proportion of ``m_i`` trials (``m_i = 1``: a 0/1 response),
  ``m_i l = log C(m_i, m_i y_i) + m_i y_i log mu_i + m_i (1 - y_i) log(1 - mu_i)``;
* Poisson: ``l = y_i log mu_i - mu_i - log y_i!`` (``m_i``: a prior weight).

For the penalized iteratively reweighted least squares and the Laplace approximation
each row needs, at its ``eta_i``: the score ``s_i = dl/deta`` (times ``m_i``), the
expected (Fisher) weight ``w_i = m_i mu_i'^2 / V(mu_i)`` and the observed one, minus the
second derivative of ``m_i l`` in ``eta_i``::

    w_obs_i = w_i - s_i (mu_i'' / mu_i' - mu_i' V'(mu_i) / V(mu_i)),

which equals ``w_i`` for a canonical link (logit for the binomial, log for the Poisson).
Everything is computed on the scale that does not overflow (log-probabilities for the
probit and the complementary log-log).
"""

from dataclasses import dataclass

import numpy as np
from scipy import special

from ._exceptions import warn_user

#: Links of each family (the first is the default, the canonical one).
LINKS = {"binomial": ("logit", "probit", "cloglog"), "poisson": ("log",)}

#: The smallest weight of a row (a fitted probability of exactly 0 or 1 has weight 0).
_TINY = 1e-300


@dataclass
class RowTerms:
    """The per-row quantities at one linear predictor (see the module docstring)."""

    mu: np.ndarray
    loglik: np.ndarray
    score: np.ndarray
    weight: np.ndarray
    weight_obs: np.ndarray
    dweight: np.ndarray = None


class Family:
    """A family and link: inverse link, log-likelihood and its derivatives per row.

    Parameters
    ----------
    family : {"binomial", "poisson"}
    link : str, default=None
        The family's canonical link when None.
    """

    def __init__(self, family, link=None):
        if family not in LINKS:
            raise ValueError(f"family={family!r}: expected one of {sorted(LINKS)}")
        link = LINKS[family][0] if link is None else link
        if link not in LINKS[family]:
            raise ValueError(
                f"link={link!r} is not available for the {family} family: expected one of "
                f"{list(LINKS[family])}"
            )
        self.family, self.link = family, link

    def __repr__(self):
        return f"Family({self.family!r}, {self.link!r})"

    def __eq__(self, other):
        return isinstance(other, Family) and (self.family, self.link) == (
            other.family,
            other.link,
        )

    def __hash__(self):
        return hash((self.family, self.link))

    @property
    def canonical(self):
        """Whether the link is the family's canonical one (observed = expected curvature)."""
        return self.link == LINKS[self.family][0]

    # -- the inverse link -------------------------------------------------------------
    def linkinv(self, eta):
        """``mu = g^{-1}(eta)``."""
        eta = np.asarray(eta, dtype=float)
        if self.link == "logit":
            return special.expit(eta)
        if self.link == "probit":
            return special.ndtr(eta)
        if self.link == "cloglog":
            return -np.expm1(-np.exp(np.minimum(eta, 700.0)))
        return np.exp(np.minimum(eta, 700.0))

    def link_function(self, mu):
        """``eta = g(mu)``."""
        mu = np.asarray(mu, dtype=float)
        with np.errstate(divide="ignore"):
            if self.link == "logit":
                return special.logit(mu)
            if self.link == "probit":
                return special.ndtri(mu)
            if self.link == "cloglog":
                return np.log(-np.log1p(-mu))
            return np.log(mu)

    # -- the per-row terms ------------------------------------------------------------
    def row_constant(self, y, m):
        """The part of ``m_i l_i`` that does not depend on ``eta`` (computed once)."""
        if self.family == "binomial":
            k = m * y
            return (
                special.gammaln(m + 1.0) - special.gammaln(k + 1.0) - special.gammaln(m - k + 1.0)
            )
        return -m * special.gammaln(y + 1.0)

    def row_terms(self, eta, y, m, derivative=False):
        """:class:`RowTerms` at ``eta`` for responses ``y`` and prior weights ``m``.

        ``loglik`` leaves out :meth:`row_constant`. With ``derivative``, ``dweight`` is the
        derivative of the observed weight in ``eta`` (for the Laplace gradient).
        """
        if self.family == "binomial":
            rt = self._logit(eta, y, m) if self.link == "logit" else self._binomial(eta, y, m)
        else:
            rt = self._poisson(eta, y, m)
        if derivative:
            if self.link == "logit":
                rt.dweight = rt.weight * (1.0 - 2.0 * rt.mu)
            elif self.link == "log":
                rt.dweight = rt.weight
            else:  # central differences of the observed weight (non-canonical links)
                h = 1e-5
                up = self._binomial(eta + h, y, m).weight_obs
                down = self._binomial(eta - h, y, m).weight_obs
                rt.dweight = (up - down) / (2 * h)
        return rt

    def _logit(self, eta, y, m):
        softplus = np.maximum(eta, 0.0) + np.log1p(np.exp(-np.abs(eta)))  # log(1 + e^eta)
        mu = special.expit(eta)
        k = m * y
        ll = k * eta - m * softplus
        weight = np.maximum(m * mu * (1.0 - mu), _TINY)
        return RowTerms(mu, ll, k - m * mu, weight, weight)

    def _binomial(self, eta, y, m):
        # log mu and log(1 - mu), and r = mu' / V(mu), c = mu''/mu' - mu' V'/V.
        if self.link == "probit":
            log_mu, log_1mu = special.log_ndtr(eta), special.log_ndtr(-eta)
            mu = np.exp(log_mu)
            log_phi = -0.5 * eta * eta - 0.5 * np.log(2 * np.pi)
            dmu = np.exp(log_phi)
            r = np.exp(log_phi - log_mu - log_1mu)
            c = -eta - r * (1.0 - 2.0 * mu)
        else:  # cloglog: mu = 1 - exp(-e^eta)
            et = np.minimum(eta, 700.0)
            e = np.exp(et)
            log_1mu = -e
            with np.errstate(divide="ignore"):
                log_mu = np.log(-np.expm1(-e))
            mu = np.exp(log_mu)
            dmu = np.exp(et - e)  # e^eta exp(-e^eta)
            r = np.exp(et - e - log_mu - log_1mu)
            c = (1.0 - e) - r * (1.0 - 2.0 * mu)
        k = m * y
        with np.errstate(invalid="ignore"):
            ll = np.where(k > 0, k * log_mu, 0.0) + np.where(m - k > 0, (m - k) * log_1mu, 0.0)
        score = m * (y - mu) * r
        weight = np.maximum(m * dmu * r, _TINY)
        return RowTerms(mu, ll, score, weight, weight - score * c)

    def _poisson(self, eta, y, m):
        eta = np.minimum(eta, 700.0)
        mu = np.exp(eta)
        ll = m * (y * eta - mu)
        weight = np.maximum(m * mu, _TINY)
        return RowTerms(mu, ll, m * (y - mu), weight, weight)

    def saturated_loglik(self, y, m):
        """The log-likelihood of the saturated model (``mu = y``), per row."""
        if self.family == "binomial":
            k = m * y
            return (
                special.gammaln(m + 1.0)
                - special.gammaln(k + 1.0)
                - special.gammaln(m - k + 1.0)
                + special.xlogy(k, y)
                + special.xlogy(m - k, 1.0 - y)
            )
        return m * (special.xlogy(y, y) - y - special.gammaln(y + 1.0))

    def deviance_residuals(self, y, mu, m):
        """Squared deviance residuals ``2 m (l(y; y) - l(y; mu))`` per row."""
        with np.errstate(over="ignore"):
            eta = self.link_function(np.clip(mu, 1e-300, None))
        ll = self.row_terms(eta, y, m).loglik + self.row_constant(y, m)
        return np.maximum(2.0 * (self.saturated_loglik(y, m) - ll), 0.0)


def check_response(family, y, m):
    """The response's errors for its family (``m``: trials or prior weights)."""
    if family.family == "binomial":
        if np.any((y < 0) | (y > 1)):
            raise ValueError(
                "a binomial response is a proportion in [0, 1] (with the number of trials "
                "as sample_weight) or a 0/1 outcome; got values outside [0, 1] (for "
                "counts of successes divide by the trials)"
            )
        k = m * y
        if not np.allclose(k, np.round(k), rtol=0, atol=1e-7):
            warn_user(
                "non-integer numbers of successes (y * sample_weight) in a binomial "
                "model, as R's glm warns: the likelihood is then not a binomial one",
                UserWarning,
            )
    elif np.any(y < 0):
        raise ValueError("a Poisson response is a count: got negative values")
    elif not np.allclose(y, np.round(y), rtol=0, atol=1e-7):
        warn_user("non-integer counts in a Poisson model (R's glm warns too)", UserWarning)
