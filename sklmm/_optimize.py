"""All optimizer policy in one place: which solver minimises which criterion, and one result.

Two criteria implement one protocol (``objective(theta, order)`` returning an
:class:`~sklmm._profile.Evaluation`; ``lower_bounds``; ``conditional_modes``,
``prediction_variance``, ``fixed_effects_cov``, ``unprofiled_deviance``,
``release``): the one-factor criterion of :mod:`sklmm._profile` (analytic Hessian and
EM step) and the blocked criterion of :mod:`sklmm._blocked` (analytic gradient). The
solvers:

=============  =========================================  =============================
solver         what it does                               criteria
=============  =========================================  =============================
``"auto"``     ``"em-newton"`` where the model allows it,  every model
               else ``"lbfgs"``
``"em-newton"``  EM, then Newton; also Newton from the     one term with an intercept
               start; the better optimum kept             (or no term)
``"em"``       EM alone                                   likewise
``"newton"``   Newton alone                               likewise
``"lbfgs"``    L-BFGS-B on the analytic gradient,         every model
               Newton polish, boundary saddle escape
=============  =========================================  =============================

Every solver stops on the same rule: every entry of the projected gradient of
``D = -2 log L`` in ``theta``, times ``max(1, |theta_i|)``, at most ``tol * n`` (``n``
rows), L-BFGS-B accepting
up to ten times that when it stops on a negligible decrease; or, where the gradient's
rounding stays above that, a Newton step that lowers ``D`` no more and predicts less than
its rounding (the optimum to the precision of the criterion: the one-factor Newton phases,
and the Newton polish after L-BFGS-B). ``max_iter`` caps the
iterations of the main phase (each Newton pass; EM for ``"em"``; L-BFGS-B over its
restarts); ``em_max_iter`` the EM iterations of ``"em-newton"``.
"""

from dataclasses import dataclass, field

import numpy as np

from ._blocked import minimize_blocked
from ._solvers import SOLVERS, SolverResult, minimize_deviance

#: Every solver name; ``"auto"`` resolves per model.
ALL_SOLVERS = ("auto", *SOLVERS, "lbfgs")

#: EM iterations of "em-newton" when ``em_max_iter`` is left at None.
DEFAULT_EM_MAX_ITER = 25


@dataclass
class OptSummary:
    """What a fit's optimization did (MixedModels.jl's ``OptSummary``).

    Attributes
    ----------
    solver : str
        The solver that ran (``"auto"`` resolved).
    theta0, theta : ndarray
        Start and optimum on the square-root scale (rescaled columns).
    objective0, objective : float
        ``D = -2 log L`` at the start and at the optimum.
    n_iter : int
        Iterations: EM and Newton iterations, or L-BFGS-B iterations and Newton
        polish steps.
    n_evaluations : int
        Evaluations of the criterion (any order of derivatives).
    converged : bool
        Whether the convergence rule held at ``theta`` (or the optimum was reached to
        the precision of the criterion; see the module docstring).
    message : str
        Why the solver stopped.
    log : list of dict
        One record per iteration (or evaluation, for L-BFGS-B): ``phase``,
        ``iteration``, ``theta``, ``sigma2``, ``deviance``, ``gradient_norm``,
        ``step_size``.
    evaluation : Evaluation
        ``D``, ``beta``, ``sigma2`` and the gradient at ``theta``.
    """

    solver: str
    theta0: np.ndarray
    theta: np.ndarray
    objective0: float
    objective: float
    n_iter: int
    n_evaluations: int
    converged: bool
    message: str
    evaluation: object
    log: list = field(default_factory=list)


class _Counted:
    """The criterion with a count of its evaluations (every other attribute passed on)."""

    def __init__(self, objective):
        self._objective = objective
        self.count = 0

    def __call__(self, theta, order=0):
        self.count += 1
        return self._objective(theta, order)

    def __getattr__(self, name):
        return getattr(self._objective, name)


def resolve_solver(solver, em_max_iter, one_factor):
    """The solver to run on a model, and the EM cap; a clear error for a mismatch.

    Parameters
    ----------
    solver : str
        One of :data:`ALL_SOLVERS`.
    em_max_iter : int or None
        ``None``: :data:`DEFAULT_EM_MAX_ITER` where EM runs.
    one_factor : bool
        Whether the model has the one-factor criterion (one term with an intercept,
        or no term).
    """
    if solver not in ALL_SOLVERS:
        raise ValueError(f"solver must be one of {ALL_SOLVERS}, got {solver!r}")
    if solver == "auto":
        solver = "em-newton" if one_factor else "lbfgs"
    elif solver in SOLVERS and not one_factor:
        raise ValueError(
            f"solver={solver!r} needs the one-factor criterion (a single random-effects term "
            "with an intercept); this model has several terms or a term without an "
            "intercept: use solver='auto' or solver='lbfgs'"
        )
    if em_max_iter is not None and solver != "em-newton":
        raise ValueError(
            f"em_max_iter={em_max_iter} caps the EM phase of solver='em-newton', but this fit "
            f"runs solver={solver!r}, which has none: leave em_max_iter=None (or use max_iter)"
        )
    return solver, DEFAULT_EM_MAX_ITER if em_max_iter is None else em_max_iter


#: A fit with a term of several random effects on the boundary is also started from
#: ``Lambda = c I`` for each of these ``c`` (and from lower-rank and random points, see
#: :func:`_starts`).
OTHER_STARTS = (0.1, 3.0, 10.0)

#: The smallest diagonal entry of a term's ``Lambda`` below which it is on the boundary
#: (lme4's ``isSingular`` tolerance).
BOUNDARY_TOL = 1e-4


def boundary_terms(theta, blocks):
    """Positions of the terms whose ``Lambda`` has a diagonal entry below
    :data:`BOUNDARY_TOL` (lme4's ``isSingular`` rule)."""
    return [
        k
        for k, (sl, structure) in enumerate(blocks)
        if np.min(np.diag(structure.lam(theta[sl])), initial=np.inf) < BOUNDARY_TOL
    ]


def on_boundary(theta, blocks, min_q=1):
    """Whether some term of at least ``min_q`` random effects is on the boundary."""
    return any(blocks[k][1].q >= min_q for k in boundary_terms(theta, blocks))


def _starts(theta, blocks, full, identity_done=False):
    """The other starts of a fit on the boundary.

    ``full`` (a term of several random effects on the boundary): ``Lambda = c I``; the
    first optimum with its trailing rows of ``Lambda`` zeroed (a lower rank); two random
    points (a fixed seed). Otherwise (only zero variances of intercept-only terms, the
    common case of variance components): lme4's start, ``Lambda = I`` (unless
    ``identity_done``: the EM-then-Newton solver's restart already ran Newton from it),
    and the two random points.
    """
    lower = np.concatenate([structure.lower_bounds for _, structure in blocks])
    identity = np.concatenate([structure.initial_theta() for _, structure in blocks])
    rng = np.random.default_rng(0)
    random = [np.maximum(rng.uniform(-1.0, 3.0, len(theta)), lower) for _ in range(2)]
    if not full:  # lme4's start, unless the solver already followed Newton from it
        return random if identity_done else [identity, *random]
    starts = [c * identity for c in OTHER_STARTS]
    for r in range(1, max(structure.q for _, structure in blocks)):
        reduced = theta.copy()
        for sl, structure in blocks:
            part = reduced[sl]
            part[structure.rows >= r] = 0.0
            reduced[sl] = part
        # a zero diagonal entry is a stationary point of D in it: start just inside
        starts.append(np.where((lower == 0) & (reduced <= 0), 1e-3, reduced))
    return [*starts, *random]


def _other_starts(objective, res, starts, blocked, max_iter, tol, verbose):
    """The best converged optimum from the main run and from other starts (:func:`_starts`).

    An optimum on the boundary (a zero variance, a rank-deficient covariance) can be a
    local one that EM, Newton and L-BFGS-B all end in from their usual starts. Random
    designs with two large groups and many singletons found such optima 2.5 to 7 units
    of ``-2 log L`` short, reported converged: one with a zero variance of an
    intercept-only term (lme4's start finds the better one), others of a lower rank than
    the optimum. Each start costs a fit, only for fits on the boundary.
    """
    best, extra_iter, log = res, 0, list(res.log)
    for start in starts:
        try:
            if blocked:
                alt = minimize_blocked(objective, start, tol=tol, max_iter=max_iter)
            else:
                alt = minimize_deviance(objective, "newton", start, max_iter=max_iter, tol=tol)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            continue
        extra_iter += alt.n_iter
        for rec in alt.log:
            log.append({**rec, "phase": "multistart", "iteration": len(log)})
            if verbose:
                print(f"multistart {len(log) - 1:4d}  D={rec['deviance']:.10g}")
        gap = best.evaluation.deviance - alt.evaluation.deviance
        if alt.converged and gap > 1e-10 * max(1.0, abs(best.evaluation.deviance)):
            best = alt
    message = best.message
    if best is not res:
        gain = res.evaluation.deviance - best.evaluation.deviance
        message += f" (from another start, {gain:.4g} lower in -2 log L than the first)"
    return SolverResult(
        best.theta, best.evaluation, best.converged, res.n_iter + extra_iter, message, log
    )


BOUNDARY_SNAP = 1e-6
"""Rows of a term's ``Lambda`` with every entry below this are tried at exactly zero."""


def snap_to_boundary(objective, theta, evaluation, blocks):
    """Put negligible rows of every ``Lambda`` exactly on the boundary.

    A solver that approaches a zero variance stops at a ``theta`` of, say, 1e-16 rather
    than 0, which prints as a variance of 1e-32 and a meaningless correlation between two
    such standard deviations. (lme4's bounded optimizer lands on the bound for the
    diagonal of ``Lambda`` but can leave 1e-9 in the entries below it, which it prints as
    a variance of 1e-18; sklmm prints the exact zero.) Every row of a term's ``Lambda``
    whose entries are all below :data:`BOUNDARY_SNAP` (relative standard deviations of
    the rescaled columns) is set to zero, and the result kept if ``D`` does not rise by
    more than its rounding.

    Parameters
    ----------
    blocks : list of (slice, CovarianceStructure)
        Each term's slice of ``theta`` and its structure.

    Returns
    -------
    theta, evaluation
        The snapped point and its evaluation (with the gradient), or the inputs.
    """
    snapped = np.array(theta, dtype=float)
    for sl, structure in blocks:
        part = snapped[sl]
        for r in range(structure.q):
            row = structure.rows == r
            if 0 < np.max(np.abs(part[row])) < BOUNDARY_SNAP:
                part[row] = 0.0
        snapped[sl] = part
    if np.array_equal(snapped, theta):
        return theta, evaluation
    try:
        ev = objective(snapped, 1)
    except np.linalg.LinAlgError:
        return theta, evaluation
    if ev.deviance <= evaluation.deviance + 1e-10 * max(1.0, abs(evaluation.deviance)):
        return snapped, ev
    return theta, evaluation


def optimize(
    objective, solver, *, max_iter, em_max_iter, tol, verbose=0, blocks=(), theta0=None, warm=False
):
    """Minimise a criterion with a resolved solver; returns an :class:`OptSummary`.

    ``theta0`` is the start (default: each solver's own, ``Lambda`` = identity); a
    bootstrap refit starts from the estimates. ``warm``: ``theta0`` is a warm start (the
    estimates of a fit of the same model to other or the same rows), from which the
    EM-then-Newton solver runs Newton alone, without its EM phase and its restart from
    the default start.

    ``blocks`` (each term's slice of ``theta`` and structure) lets the optimum be put
    exactly on the boundary where it is within rounding of it (:func:`snap_to_boundary`).
    """
    counted = _Counted(objective)
    blocked = solver == "lbfgs" and hasattr(objective, "structures")
    if blocked:
        res = minimize_blocked(counted, theta0, tol=tol, max_iter=max_iter, verbose=verbose)
    elif solver == "lbfgs":  # a model without random effects: nothing to iterate on
        res = minimize_deviance(
            counted, "newton", theta0, max_iter=max_iter, tol=tol, verbose=verbose
        )
    else:
        res = minimize_deviance(
            counted,
            "newton" if warm and theta0 is not None and solver == "em-newton" else solver,
            theta0,
            max_iter=max_iter,
            em_max_iter=em_max_iter,
            tol=tol,
            verbose=verbose,
        )
    first = res.log[0] if res.log else {"theta": res.theta, "deviance": res.evaluation.deviance}
    # A warm start comes from a fit that has had its other starts already.
    warm = warm and theta0 is not None
    if not warm and blocks and max_iter > 0 and res.converged and on_boundary(res.theta, blocks):
        starts = _starts(
            res.theta,
            blocks,
            full=on_boundary(res.theta, blocks, min_q=2),
            identity_done=solver == "em-newton" and theta0 is None,
        )
        res = _other_starts(counted, res, starts, blocked, max_iter, tol, verbose)
    theta, evaluation = snap_to_boundary(counted, res.theta, res.evaluation, blocks)
    return OptSummary(
        solver=solver,
        theta0=np.asarray(first["theta"]),
        theta=theta,
        objective0=float(first["deviance"]),
        objective=float(evaluation.deviance),
        n_iter=int(res.n_iter),
        n_evaluations=counted.count,
        converged=bool(res.converged),
        message=res.message,
        evaluation=evaluation,
        log=res.log,
    )
