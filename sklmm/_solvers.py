"""EM-then-Newton minimisation of the profiled criterion (Lindstrom and Bates, 1988).

Order of calls, for every solver:

1. setup: ``theta`` at its starting value, projected onto the bounds;
2. EM phase (``"em"`` and ``"em-newton"``): per iteration, evaluate ``D`` and
   its gradient, log, check convergence, then one EM update
   (:meth:`ProfiledDeviance.em_update`). In ``"em-newton"`` the phase ends
   when one step lowers ``D`` by less than :data:`EM_SWITCH_DECREASE`, or
   after ``em_max_iter`` steps; with a single variance parameter also once a
   step lowers ``D`` by more than :data:`EM_SWITCH_RATE` times the step before;
3. Newton phase (``"newton"`` and ``"em-newton"``): per iteration, evaluate
   ``D``, gradient and Hessian, log, check convergence; solve for the step
   on the free parameters (Hessian eigenvalues floored to make it a descent
   direction); backtracking line search projected onto the bounds;
4. ``"em-newton"`` only: a second Newton phase (logged as ``"restart"``) from
   the starting point itself; of the two optima the lower ``D`` is kept. The
   criterion can have several local optima (seen with very unbalanced group
   sizes), and the two paths often end in different basins. When the first
   optimum is interior and the restart reaches a point where ``D`` and its
   gradient are those of the quadratic model at that optimum (to 10%, less than
   1 above it), the restart stops there: it is in the same basin
   (:func:`_in_basin`), and its last record is the first optimum;
5. finalize: a :class:`SolverResult` with the chosen evaluation.

The convergence rule is the same in both phases: the projected gradient of
``D`` in ``theta`` (components at a lower bound that point outwards set to
zero), each entry times ``max(1, |theta_i|)`` (:func:`scaled_gradient`), is at
most ``tol * n`` in absolute value (``n`` rows: the rule of every criterion of
sklmm, unit-free), or Newton stalls at a decrement below the rounding of ``D``
with that gradient within :data:`PRECISION_GRADIENT` times the rule, and
the Hessian on the free parameters has no negative eigenvalue (so a saddle
point, such as a zero diagonal of ``Lambda`` where ``D`` still decreases
away from zero, is not taken for the optimum).

Bounds: the diagonal of ``Lambda`` is at least 0. A Newton step that would
cross the bound moves that coordinate a fraction :data:`TO_BOUNDARY` of its
way to the bound instead, so a zero variance is approached geometrically
and a negative-curvature direction can always leave it. An EM step whose
diagonal entry falls below :data:`EM_SNAP` is tried at exactly zero, and that
point kept when it does not raise ``D`` (EM alone only creeps towards a zero
variance).
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import lapack

from ._profile import Evaluation

SOLVERS = ("em-newton", "em", "newton")

#: In "em-newton", EM hands over to Newton once a step lowers D by less than this.
EM_SWITCH_DECREASE = 1e-2

#: With a single variance parameter, EM also hands over once a step lowers D by more
#: than this fraction of the step before (its linear rate has become slow).
EM_SWITCH_RATE = 0.75

#: Fraction of the distance to the bound kept by a Newton step that would cross it.
TO_BOUNDARY = 0.9

#: EM tries a diagonal entry of Lambda at exactly zero once it falls below this.
EM_SNAP = 1e-2

_ARMIJO = 1e-4
_NEG_CURVATURE = 1e-8
_MAX_HALVINGS = 40


@dataclass
class SolverResult:
    """What every solver returns.

    Attributes
    ----------
    theta : ndarray
        Optimum on the square-root scale.
    evaluation : Evaluation
        ``D``, ``beta``, ``sigma2`` and the gradient at ``theta``.
    converged : bool
        Whether the convergence rule held at ``theta``.
    n_iter : int
        Iterations over both phases.
    message : str
        Why the solver stopped.
    log : list of dict
        One record per iteration: ``phase``, ``iteration``, ``theta``,
        ``sigma2``, ``deviance``, ``gradient_norm``, ``step_size``.
    """

    theta: np.ndarray
    evaluation: Evaluation
    converged: bool
    n_iter: int
    message: str
    log: list = field(default_factory=list)


#: A Newton step that would lower ``D`` by less than this times ``max(1, |D|)`` is below
#: the rounding of ``D``: the optimum is reached to float64 precision.
DECREMENT_TOL = 1e-9

#: ... but only where the gradient is at most this many times the convergence rule (or the
#: rule of the default ``tol``, :data:`DEFAULT_TOL`, where that is larger: the gradient's
#: rounding does not shrink with ``tol``). Further above it, the criterion is too imprecise
#: to place the optimum at the requested tolerance, and the fit says so (not converged).
PRECISION_GRADIENT = 100.0

#: The estimators' default ``tol``.
DEFAULT_TOL = 1e-7


def projected_gradient(theta, gradient, lower):
    """Gradient with the components blocked by an active lower bound zeroed."""
    blocked = (theta <= lower) & (gradient > 0)
    return np.where(blocked, 0.0, gradient)


def scaled_gradient(theta, gradient, lower):
    """The projected gradient, each entry times ``max(1, |theta_i|)``: the convergence rule.

    Where ``|theta_i| > 1`` this is the derivative with respect to ``log theta_i``, a
    relative change: the criterion depends on the ratio of a random-effect standard
    deviation to the residual one through ``log theta`` once that ratio is large (``D``
    goes like ``2 m log theta``), so an absolute gradient becomes tiny long before the
    optimum (a ratio of 1e5 stopped 2.4 log-likelihood units short). Where ``|theta_i|
    <= 1`` it is the plain gradient, which stays informative down to the boundary.
    """
    return projected_gradient(theta, gradient, lower) * np.maximum(1.0, np.abs(theta))


def _block(H, free):
    """The rows and columns ``free`` of ``H`` (``H`` itself when all are)."""
    return H if free.all() else H[np.ix_(free, free)]


def _eigh(H, vectors=True):
    """Eigenvalues (ascending) and, with ``vectors``, eigenvectors of a small symmetric
    matrix: LAPACK's ``dsyevd`` directly, as ``numpy.linalg.eigh`` calls it, without
    numpy's wrapper (which costs several times the work on the few parameters here)."""
    w, V, info = lapack.dsyevd(H, compute_v=int(vectors), lower=1)
    if info != 0:  # pragma: no cover - dsyevd fails only on non-finite input
        raise np.linalg.LinAlgError("Eigenvalues did not converge")
    return (w, V) if vectors else w


class _Run:
    """State shared by the phases of one solver run."""

    def __init__(self, objective, tol, verbose):
        self.objective = objective
        self.lower = objective.cov.lower_bounds
        self.bounded = np.isfinite(self.lower)
        # Line-search trial points with their derivatives where those cost little more
        # than D (the compiled kernels): the accepted point then needs no second call.
        self.trial_order = getattr(objective, "trial_order", 0)
        self._lower = self.lower.tolist()
        self.tol = tol
        # Unit-free: D shifts by 2 k log(a) when y is multiplied by a, its gradient in
        # theta does not change; the scale is the number of rows for every criterion.
        self.gtol = tol * max(1.0, float(objective.stats.n))
        self.precision_band = PRECISION_GRADIENT * max(
            self.gtol, DEFAULT_TOL * max(1.0, float(objective.stats.n))
        )
        self.verbose = verbose
        self.log = []
        self._gnorm = (None, 0.0)

    def gnorm(self, ev):
        """``max |scaled_gradient|``, on Python floats (a few parameters: numpy's calls
        would cost more than the arithmetic)."""
        if self._gnorm[0] is not ev:  # asked again for the same evaluation: kept
            g = 0.0
            for t, d, low in zip(ev.theta.tolist(), ev.gradient.tolist(), self._lower, strict=True):
                if not (t <= low and d > 0.0):
                    g = max(g, abs(d) * max(1.0, abs(t)))
                if d != d or t != t:  # NaN propagates, as numpy's max
                    g = float("nan")
                    break
            self._gnorm = (ev, g)
        return self._gnorm[1]

    def free(self, ev):
        return ~((ev.theta <= self.lower) & (ev.gradient > 0))

    def converged(self, ev):
        """Gradient rule, then the second-order check on the free parameters."""
        if self.gnorm(ev) > self.gtol:
            return False
        if ev.hessian is None:
            ev.hessian = self.objective(ev.theta, 2).hessian
        free = self.free(ev)
        if not free.any():
            return True
        w = _eigh(_block(ev.hessian, free), vectors=False)
        return bool(w[0] >= -_NEG_CURVATURE * max(1.0, float(np.max(np.abs(w)))))

    def at_precision(self, ev):
        """Whether a Newton step would lower ``D`` by less than its rounding.

        Asked when Newton stalls (no decrease found, or steps below the precision of
        ``theta``), with the Hessian at hand: the Newton decrement
        ``g' |H|^{-1} g`` on the free parameters, the decrease a full step predicts, is
        below ``DECREMENT_TOL * max(1, |D|)`` and the Hessian there has no negative
        eigenvalue. Where ``theta`` is large the criterion is formed with a loss of
        digits (cross-products of ``y`` at very different scales), and its scaled
        gradient can stall above the rule at the optimum to float64 precision. Accepted
        only with the scaled gradient within :data:`PRECISION_GRADIENT` times the rule
        (the blocked solver's polish has the same band): further above it the criterion
        is too imprecise to place the optimum, and the fit warns instead.
        """
        if ev.hessian is None or not self.gnorm(ev) <= self.precision_band:
            return False
        free = self.free(ev)
        if not free.any():
            return True
        w, V = _eigh(_block(ev.hessian, free))
        if w[0] <= 0:
            return False
        g = V.T @ ev.gradient[free]
        return float(g @ (g / w)) <= DECREMENT_TOL * max(1.0, abs(ev.deviance))

    def record(self, phase, it, ev, step):
        rec = {
            "phase": phase,
            "iteration": it,
            "theta": ev.theta.copy(),
            "sigma2": ev.sigma2,
            "deviance": ev.deviance,
            "gradient_norm": self.gnorm(ev),
            "step_size": step,
        }
        self.log.append(rec)
        if self.verbose:
            print(
                f"{phase:>6} {it:4d}  D={ev.deviance:.10g}  |grad|={rec['gradient_norm']:.3e}"
                f"  step={step:.3g}"
            )

    def safe_eval(self, theta, order):
        try:
            ev = self.objective(theta, order)
        except np.linalg.LinAlgError:
            return None
        return ev if np.isfinite(ev.deviance) else None


def _em_phase(run, theta, max_iter, switch):
    ev = run.objective(theta, 1)
    previous = last_decrease = np.inf
    # One variance parameter: Newton on a line is safe, so EM also hands over once it
    # slows down (as it does when the variance creeps towards zero).
    on_rate = switch and run.objective.cov.n_theta == 1
    for it in range(max_iter + 1):
        run.record("em", it, ev, 1.0 if it else 0.0)
        if run.converged(ev):
            return ev, it, True, "projected gradient below tolerance"
        decrease = previous - ev.deviance
        if switch and decrease < EM_SWITCH_DECREASE:
            return ev, it, False, "EM handed over to Newton"
        if on_rate and decrease > EM_SWITCH_RATE * last_decrease:
            return ev, it, False, "EM slowed down and handed over to Newton"
        if it == max_iter:
            break
        nxt = run.safe_eval(run.objective.em_update(ev.theta), 1)
        if nxt is None:
            return ev, it, False, "EM update left the domain"
        last_decrease = decrease
        previous, ev = ev.deviance, _em_snap(run, nxt)
    return ev, max_iter, False, f"EM reached max_iter={max_iter}"


def _em_snap(run, ev):
    """Try a random effect whose variance EM drives towards zero at exactly zero.

    For each diagonal entry of ``Lambda`` below :data:`EM_SNAP`, its whole row
    (the variance and covariances of that random effect) is set to zero. EM
    keeps a zero row forever (each update keeps the range of ``Psi``), so the
    snapped point is kept only when ``D`` does not rise and the zero row is
    locally optimal: its gradient entries meet the convergence rule and its
    Hessian block has no negative eigenvalue.
    """
    cov = run.objective.cov
    diag = cov.rows == cov.cols
    tiny = diag & (ev.theta < EM_SNAP) & (ev.theta > run.lower)
    if not tiny.any():
        return ev
    zeroed = np.isin(cov.rows, cov.rows[tiny])
    trial = run.safe_eval(np.where(zeroed, 0.0, ev.theta), 2)
    if trial is None or trial.deviance > ev.deviance:
        return ev
    g = np.abs(trial.gradient[zeroed])
    if g.max() > run.gtol:
        return ev
    w = _eigh(trial.hessian[np.ix_(zeroed, zeroed)], vectors=False)
    if w[0] < -_NEG_CURVATURE * max(1.0, float(np.max(np.abs(w)))):
        return ev
    return trial


def _positive_definite(H):
    """Whether a symmetric matrix is positive definite (a Cholesky factorization exists)."""
    if H is None:
        return False
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return False
    return True


def _newton_direction(gradient, hessian, free, at_bound):
    """Newton step with |eigenvalues|, plus a unit step along negative curvature."""
    d = np.zeros_like(gradient)
    if not free.any():
        return d
    g = gradient[free]
    w, V = _eigh(_block(hessian, free))
    floor = _NEG_CURVATURE * max(1.0, abs(float(w[0])), abs(float(w[-1])))  # w ascending
    d[free] = -V @ ((V.T @ g) / np.maximum(np.abs(w), floor))
    if w[0] < -floor:
        v = V[:, 0]
        slope = g @ v
        if slope == 0.0:  # a saddle on the bound: leave it inwards
            slope = -np.sum(v[at_bound[free]])
        d[free] += -np.sign(slope or 1.0) * v
    return d


#: The restart stops once the criterion and its gradient at its iterate agree with the
#: quadratic model at the first optimum to this relative error (see :func:`_in_basin`).
BASIN_RTOL = 0.1

#: ... and the iterate is at most this far above the first optimum in ``D``.
BASIN_MAX_DECREASE = 1.0


def _in_basin(ev, optimum):
    """Whether ``ev`` lies in the quadratic basin of an interior ``optimum``.

    The quadratic model at the optimum (its Hessian ``H``, positive definite) predicts
    ``D(theta) - D* = d'Hd / 2`` and ``grad D(theta) = H d`` for ``d = theta - theta*``.
    When both hold at ``theta`` to :data:`BASIN_RTOL`, a short way above the optimum, the
    criterion is that convex quadratic between the two points and Newton from ``theta``
    ends at ``theta*``: the restart need not be followed to the end.
    """
    H = optimum.hessian
    if H is None or ev.hessian is None:
        return False
    d = ev.theta - optimum.theta
    Hd = H @ d
    model, actual = 0.5 * float(d @ Hd), ev.deviance - optimum.deviance
    if not 0.0 < actual <= BASIN_MAX_DECREASE or model <= 0.0:
        return False
    if abs(actual - model) > BASIN_RTOL * model:
        return False
    return bool(np.linalg.norm(ev.gradient - Hd) <= BASIN_RTOL * np.linalg.norm(Hd))


def _newton_phase(run, theta, max_iter, phase="newton", optimum=None):
    """Newton from ``theta``; with ``optimum`` (an interior optimum found already, its
    Hessian positive definite), stop at the first iterate in its basin and return it."""
    lower = run.lower
    ev = run.objective(theta, 2)
    step = 0.0
    for it in range(max_iter + 1):
        run.record(phase, it, ev, step)
        if run.converged(ev):
            return ev, it, True, "projected gradient below tolerance"
        if optimum is not None and _in_basin(ev, optimum):
            run.record(phase, it + 1, optimum, 0.0)  # where its path would end
            return optimum, it, True, "in the basin of the optimum found first"
        if it == max_iter:
            break
        g, bounded = ev.gradient, run.bounded
        d = _newton_direction(g, ev.hessian, run.free(ev), bounded & (ev.theta <= lower))
        step = 1.0
        for _ in range(_MAX_HALVINGS):
            cand = ev.theta + step * d
            cross = bounded & (cand < lower)
            if cross.any():
                cand[cross] = lower[cross] + (1.0 - TO_BOUNDARY) * (ev.theta - lower)[cross]
            trial = run.safe_eval(cand, run.trial_order)
            if trial is not None and trial.deviance <= ev.deviance + _ARMIJO * g @ (
                cand - ev.theta
            ):
                break
            step *= 0.5
        else:
            if run.at_precision(ev):
                return ev, it, True, "at the optimum to the precision of the criterion"
            return ev, it, False, "line search found no decrease; the gradient is above tolerance"
        stalled = float(np.max(np.abs(cand - ev.theta))) <= 1e-9 * max(
            1.0, float(np.max(np.abs(ev.theta)))
        )
        ev = trial if trial.hessian is not None else run.objective(cand, 2)
        if stalled and run.at_precision(ev):
            run.record(phase, it + 1, ev, step)
            return ev, it + 1, True, "at the optimum to the precision of the criterion"
    return ev, max_iter, False, f"Newton reached max_iter={max_iter}"


def minimize_deviance(
    objective,
    solver="em-newton",
    theta0=None,
    *,
    max_iter=100,
    em_max_iter=25,
    tol=DEFAULT_TOL,
    verbose=0,
):
    """Minimise the profiled criterion ``D(theta)``.

    Parameters
    ----------
    objective : ProfiledDeviance
        The criterion.
    solver : {"em-newton", "em", "newton"}
        EM iterations then Newton; EM alone; Newton alone.
    theta0 : ndarray, optional
        Start on the square-root scale (default: ``Lambda`` = identity).
    max_iter : int
        Cap on the iterations of the final phase (Newton, or EM for ``"em"``).
    em_max_iter : int
        Cap on the EM iterations before Newton takes over (``"em-newton"``).
    tol : float
        Convergence rule: ``max |scaled projected gradient| <= tol * n`` (``n`` rows;
        see :func:`scaled_gradient`).
    verbose : int
        Print one line per iteration when positive.

    Returns
    -------
    SolverResult
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    cov = objective.cov
    theta = cov.initial_theta() if theta0 is None else np.asarray(theta0, dtype=float)
    theta = np.maximum(theta, cov.lower_bounds)
    run = _Run(objective, tol, verbose)
    if cov.n_theta == 0:
        ev = objective(theta, 1)
        run.record("none", 0, ev, 0.0)
        return SolverResult(theta, ev, True, 0, "no variance parameters", run.log)
    n_em = 0
    if solver == "em":
        ev, n_em, ok, msg = _em_phase(run, theta, max_iter, switch=False)
        return SolverResult(ev.theta, ev, ok, n_em, msg, run.log)
    if solver == "newton":
        ev, n_newton, ok, msg = _newton_phase(run, theta, max_iter)
        return SolverResult(ev.theta, ev, ok, n_newton, msg, run.log)
    ev, n_em, ok, msg = _em_phase(run, theta, em_max_iter, switch=True)
    if not ok:
        ev, n_newton, ok, msg = _newton_phase(run, ev.theta, max_iter)
        n_em += n_newton
    # The likelihood can have several local optima (very unbalanced groups, say): also
    # follow Newton from the start itself and keep the better of the two optima. Once
    # Newton's path enters the basin of an interior optimum already found, it is that one.
    interior = ok and bool(np.all(ev.theta > run.lower)) and _positive_definite(ev.hessian)
    alt, n_alt, alt_ok, alt_msg = _newton_phase(
        run, theta, max_iter, phase="restart", optimum=ev if interior else None
    )
    if alt is ev:
        return SolverResult(ev.theta, ev, ok, n_em + n_alt, msg, run.log)
    # Two optima within rounding of each other are the same optimum reached to different
    # precision: keep the one with the smaller gradient, so the choice does not flip with
    # the rounding of the statistics (a sum over partitions, say).
    tie = abs(alt.deviance - ev.deviance) <= 1e-10 * max(1.0, abs(ev.deviance))
    better = run.gnorm(alt) < run.gnorm(ev) if tie else alt.deviance < ev.deviance
    if alt_ok and (not ok or better):
        ev, ok, msg = alt, alt_ok, alt_msg + " (Newton from the start found the better optimum)"
    return SolverResult(ev.theta, ev, ok, n_em + n_alt, msg, run.log)
