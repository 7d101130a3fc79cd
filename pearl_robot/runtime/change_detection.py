"""Online detection of a task change from the belief itself, and the belief's rebuild.

PEARL's belief narrows on the task it has seen. When the task changes under the robot (a
payload is picked up, friction drops as a joint warms up, the goal moves) a windowed belief
recovers only as fast as the old transitions leave the window (180 ticks = 9 s for arm3), and
a forgetting factor forgets even when nothing changed. This module watches how *surprising*
each new transition is under the current belief and, when the surprise stays high, says where
the change began, so the runtime can rebuild the belief from the transitions after it.

Two layers:

- :class:`ChangeDetector` — any per-transition surprise value in, change decisions out. It is
  a one-sided CUSUM (Page 1954) on the surprise standardized by a baseline it learns online
  (EWMA mean and variance; optionally the lag-1 autocorrelation, for a long-run standard
  deviation), so it needs no calibrated encoder: an encoder whose variances are off by a
  constant factor shifts the baseline instead of raising alarms. The threshold follows from
  the configured false-alarm rate through Siegmund's approximation of the CUSUM's in-control
  run length (exact enough for i.i.d. Gaussian surprise; the tests hold it to the configured
  rate on i.i.d., log-chi-square and, with the autocorrelation correction, AR(1) streams).
  The change point is estimated at the alarm by the generalized likelihood ratio over the
  CUSUM's run: the suffix with the largest ``S_n^2 / n`` (S_n the sum of the newest n
  standardized surprises), which cuts the pre-change steps a CUSUM that was already above
  zero at the change would otherwise count in. Any inference mode can feed it: PoG factor
  agreement (below), the negative log predictive density of a learned reward/dynamics model,
  or :func:`belief_shift_surprise` of a belief before and after one update (the set-encoder
  mode with a Gaussian belief head).
- :class:`BeliefChangeMonitor` — the product-of-Gaussians adapter the runtime uses today. Its
  statistic is the agreement of the new per-transition factor N(mu_i, var_i) with a belief
  N(m, v) formed *before* it: ``d = mean_j (mu_ij - m_j)^2 / (v_j + var_ij)``, the factor
  mean's normalized squared Mahalanobis distance under the posterior predictive, scored as
  ``log d``. By default (``neighbourhood`` > 0) that belief is the product of the factors of
  the *similar* transitions in the context (normalized (obs, command) within a max-norm
  radius, at least ``neighbour_lag`` old), not the whole window: on the arm3 twin the
  whole-window version raised 20-40 false alarms per hour in stationary running, because the
  robot's own motion (the belief changing its mind with ``step_mean``, the window letting a
  transient go) changes the factors without any task change; the same state and command now
  giving a different factor is what a task change looks like. Transitions without enough
  neighbours are not scored. The monitor keeps the newest ``max_rebuild`` factors, so on a
  change it resets the belief and multiplies back exactly the factors after the change point
  (``on_change="rebuild"``), or resets it to the prior (``"reset"``), or only reports
  (``"flag"``). Any belief with ``reset()``, ``add_natural(nat)``, ``mean``, ``var`` and
  ``count`` works (:class:`pearl_robot.runtime.belief.OnlineBelief` does).

Decisions (written down here, the module owns them):

- The defaults (``drift`` 2.5 plain standard deviations, ``neighbourhood`` 0.03) were chosen
  on recorded arm3 twin streams (docs/performance.md, "Tasks that change under the robot"):
  only large, sustained surprise accumulates, so the slowly wandering surprise of a steady
  robot stays quiet. ``drift`` 0.5 with ``max_autocorrelation`` 0.9 is the sensitive
  alternative for a surprise without such slow wander.
- Detection starts after ``warmup`` scored transitions of the running model (30 s at 20 Hz
  by default) and is paused while the belief holds fewer than ``min_context`` transitions.
  The baseline survives belief resets and episodes (it describes the encoder on this robot)
  but not a bundle swap (a new monitor, a new warm-up).
- The per-step standardized increment is capped (``clip``, at most drift + 0.95 threshold),
  so one corrupt transition cannot raise an alarm alone: an alarm needs two surprising steps
  at least.
- After a change the CUSUM restarts and no alarm is raised for ``holdoff`` scored steps, while
  the rebuilt belief is still thin.
- Cost per tick: a handful of length-latent vector operations plus one [max_rebuild, obs +
  action] distance (bench/bench_runtime.py measures it); small arrays only.

Pure numpy; no torch, no rclpy.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np

from pearl_robot.errors import ConfigError

OnChange = Literal["rebuild", "reset", "flag"]
_SIEGMUND_OFFSET = 1.166
"""Siegmund's overshoot correction for a Gaussian CUSUM (Siegmund 1985, eq. 2.56)."""


@dataclass(frozen=True)
class ChangeDetectionConfig:
    """Online change detection in the runtime (see module doc). Off by default."""

    enabled: bool = False
    """Run the detector at all. Off: the belief is today's windowed/forgetting belief."""
    false_alarms_per_hour: float = 0.5
    """Target in-control alarm rate; sets the CUSUM threshold (Siegmund's approximation in
    long-run standard deviations, at the bundle's control period)."""
    drift: float = 2.5
    """CUSUM reference value k, in (long-run) standard deviations of the surprise: only
    surprise above k accumulates; a shift of s > k is found in about
    (threshold + 1.17) / (s - k) steps. Large by default: on the arm3 twin the surprise of a
    steady robot wanders slowly and a task change that matters moves it far (bench)."""
    clip: float = 4.0
    """Largest standardized surprise one step adds; never more than drift + 0.95 threshold,
    so an alarm always needs at least two surprising transitions (one corrupt transition
    cannot raise it)."""
    warmup: int = 600
    """Scored transitions before the first alarm can be raised (the baseline's start; 30 s
    at 20 Hz)."""
    baseline_horizon: int = 20000
    """EWMA horizon (transitions) of the baseline mean, variance and autocorrelation."""
    min_context: int = 5
    """Transitions the belief must hold before a new one is scored against it."""
    holdoff: int = 20
    """Scored transitions after a change before another can be raised."""
    max_rebuild: int = 200
    """Newest factors kept for the rebuild; a change point further back is cut here."""
    on_change: OnChange = "rebuild"
    """``rebuild``: reset the belief and add back the factors after the change point;
    ``reset``: reset to the prior; ``flag``: report only, the belief is untouched."""
    max_autocorrelation: float = 0.0
    """Cap of the lag-1 autocorrelation used for the long-run standard deviation: 0 scores
    in plain standard deviations (the twin default, with a large ``drift``); up to 0.9 keeps
    the configured false-alarm rate on an autocorrelated surprise with a small ``drift``
    (a slower, more sensitive detector)."""
    neighbourhood: float = 0.03
    """Score a factor against the factors of *similar* transitions only: those whose
    normalized (obs, action) (each entry scaled to [-1, 1] by the contract's limits) is within
    this max-norm distance; 0: against the whole belief. A robot whose state moves (its own
    belief changing its mind, a new phase of the motion) changes its transitions without a
    task change; the same state and command giving a different factor is what a task change
    looks like."""
    neighbour_lag: int = 5
    """Neighbours are at least this many transitions old (the newest ones move with it)."""
    min_neighbours: int = 5
    """Fewer neighbours than this: the transition is not scored."""
    reference: int = 0
    """Transitions in the local reference of the surprise (its mean over them, ``reference_lag``
    steps back, is subtracted before scoring); 0: the global EWMA mean instead."""
    reference_lag: int = 10
    """Newest transitions left out of the local reference (a change does not raise its own
    reference before it is detected)."""
    reference_min: int = 20
    """Reference values needed before a transition is scored (after a start or a change)."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"ChangeDetectionConfig.{name} {why}, got "
                               f"{getattr(self, name)!r}")

        if not (self.false_alarms_per_hour > 0 and math.isfinite(self.false_alarms_per_hour)):
            raise bad("false_alarms_per_hour", "must be a positive number")
        if not self.drift > 0:
            raise bad("drift", "must be > 0")
        if not self.clip > self.drift:
            raise bad("clip", "must be larger than drift")
        for name in ("warmup", "baseline_horizon", "min_context", "max_rebuild",
                     "reference_min", "min_neighbours"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        if self.holdoff < 0:
            raise bad("holdoff", "must be >= 0")
        if self.on_change not in ("rebuild", "reset", "flag"):
            raise bad("on_change", "must be 'rebuild', 'reset' or 'flag'")
        if not self.neighbourhood >= 0 or self.neighbour_lag < 0:
            raise bad("neighbourhood", "and neighbour_lag must be >= 0")
        if self.reference < 0 or self.reference_lag < 0:
            raise bad("reference", "and reference_lag must be >= 0")
        if not 0.0 <= self.max_autocorrelation < 1.0:
            raise bad("max_autocorrelation", "must be in [0, 1)")

    def threshold(self, control_period: float) -> float:
        """CUSUM threshold h (long-run standard deviations) for the configured rate."""
        return cusum_threshold(self.drift, 3600.0 / control_period / self.false_alarms_per_hour)


def cusum_arl0(drift: float, threshold: float) -> float:
    """Siegmund's in-control average run length (steps) of a CUSUM on N(0, 1) increments
    with reference value ``drift`` and threshold ``threshold``."""
    b = 2.0 * drift * (threshold + _SIEGMUND_OFFSET)
    return (math.exp(b) - b - 1.0) / (2.0 * drift * drift)


def cusum_threshold(drift: float, arl0: float) -> float:
    """The threshold whose :func:`cusum_arl0` is ``arl0`` steps (bisection)."""
    lo, hi = 0.0, 1.0
    while cusum_arl0(drift, hi) < arl0:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cusum_arl0(drift, mid) < arl0:
            lo = mid
        else:
            hi = mid
    return hi


class ChangeEvent(NamedTuple):
    """One detected change."""

    step: int
    """Scored-transition index at which it was raised (monotonic over the monitor's life)."""
    age: int
    """Transitions since the estimated change point, the alarming one included: what the
    rebuilt belief holds (capped at ``max_rebuild``)."""
    surprise: float
    """The alarming transition's surprise."""
    cusum: float
    """CUSUM value that crossed the threshold (long-run standard deviations)."""


class ChangeStatus(NamedTuple):
    """The detector's state after the newest transition (for /diagnostics and topics)."""

    enabled: bool
    surprise: float
    """Newest scored surprise (NaN when the transition was not scored)."""
    score: float
    """Standardized surprise, (surprise - baseline mean) / long-run std (NaN when unscored)."""
    cusum: float
    """CUSUM statistic; a change is raised when it exceeds ``threshold``."""
    threshold: float
    changed: bool
    """A change was raised at the newest transition."""
    run: int
    """Scored transitions since the CUSUM was last zero (the change point candidate's age)."""
    changes: int
    """Changes raised since the monitor was built."""
    scored: int
    """Transitions scored since the monitor was built."""
    warm: bool
    """The baseline is warm (alarms can be raised)."""


class ChangeDetector:
    """Self-calibrating one-sided CUSUM over a scalar surprise stream (see module doc).

    ``update(x)`` returns the :class:`ChangeEvent` it raised, or None. Pure Python floats on
    the hot path: about a microsecond per call.
    """

    def __init__(self, config: ChangeDetectionConfig, control_period: float) -> None:
        if not control_period > 0:
            raise ConfigError(f"control_period must be > 0, got {control_period}")
        self.config = config
        self.control_period = float(control_period)
        self.threshold = config.threshold(control_period)
        self._k = float(config.drift)
        self._clip = min(float(config.clip), self._k + 0.95 * self.threshold)
        self._warmup = int(config.warmup)
        self._horizon = int(config.baseline_horizon)
        self._rho_max = float(config.max_autocorrelation)
        self._holdoff = int(config.holdoff)
        # local reference: mean of the surprise over [t - lag - M, t - lag)
        self._M = int(config.reference)
        self._lag = int(config.reference_lag)
        self._ref: deque[float] = deque(maxlen=self._M + self._lag + 1)
        self._ref_sum = 0.0
        self._ref_n = 0
        self._ref_min = min(self._M, int(config.reference_min)) if self._M else 0
        # baseline of the residual (surprise minus its reference)
        self._n = 0
        self._mean = 0.0
        self._var = 0.0
        self._cov1 = 0.0
        self._prev_dev: float | None = None
        # standardized scores of the newest steps, for the change point estimate
        self._R = int(config.max_rebuild)
        self._z = np.zeros(self._R)
        self._zh = 0
        # CUSUM
        self.cusum = 0.0
        self.run = 0
        self._quiet = 0  # holdoff steps left
        self.scored = 0
        self.changes = 0
        self.last_surprise = math.nan
        self.last_score = math.nan
        self.changed = False
        self.last_event: ChangeEvent | None = None

    @property
    def warm(self) -> bool:
        return self._n >= self._warmup

    @property
    def baseline(self) -> tuple[float, float, float]:
        """(mean, standard deviation, lag-1 autocorrelation) of the in-control residual."""
        sd = math.sqrt(self._var) if self._var > 0 else 0.0
        rho = self._cov1 / self._var if self._var > 0 else 0.0
        return self._mean, sd, rho

    def long_run_std(self) -> float:
        """sd * sqrt((1 + rho) / (1 - rho)): the unit of the CUSUM (AR(1) approximation)."""
        if self._var <= 0:
            return 0.0
        rho = min(max(self._cov1 / self._var, 0.0), self._rho_max)
        return math.sqrt(self._var * (1.0 + rho) / (1.0 - rho))

    def restart(self) -> None:
        """Forget the CUSUM and the local reference (a belief reset or a detected change:
        the surprise's level starts over); the residual baseline stays."""
        self.cusum = 0.0
        self.run = 0
        self._prev_dev = None
        self._ref.clear()
        self._ref_sum = 0.0
        self._ref_n = 0
        self.changed = False
        self.last_surprise = math.nan
        self.last_score = math.nan

    def skip(self) -> None:
        """The newest transition was not scored (too little context): nothing accumulates."""
        self.changed = False
        self.last_surprise = math.nan
        self.last_score = math.nan
        self._prev_dev = None

    def _reference(self) -> float | None:
        if self._M == 0:
            return 0.0  # the residual baseline's mean is the whole reference
        return self._ref_sum / self._ref_n if self._ref_n >= self._ref_min else None

    def _push(self, x: float) -> None:
        ref = self._ref
        if self._M == 0:
            return
        ref.append(x)
        n = len(ref)
        if n > self._lag:  # the value `lag` steps old enters the reference
            self._ref_sum += ref[-1 - self._lag]
            self._ref_n += 1
            if self._ref_n > self._M:  # the oldest leaves it
                self._ref_sum -= ref[0]
                self._ref_n -= 1

    def update(self, x: float) -> ChangeEvent | None:
        """Score one surprise value; a non-finite one is skipped (never accumulated)."""
        self.changed = False
        if not math.isfinite(x):
            self.skip()
            return None
        self.last_surprise = x
        self.scored += 1
        event = None
        mu = self._reference()
        if mu is None:  # the reference is still forming
            self.last_score = math.nan
            self._push(x)
            return None
        e = x - mu
        sd = self.long_run_std()
        if self._n >= self._warmup and sd > 0.0:
            z = (e - self._mean) / sd
            self.last_score = z
            zc = z if z < self._clip else self._clip
            self._z[self._zh] = zc
            self._zh = (self._zh + 1) % self._R
            s = self.cusum + zc - self._k
            if s > 0.0:
                self.cusum = s
                self.run += 1
            else:
                self.cusum = 0.0
                self.run = 0
            if self._quiet > 0:
                self._quiet -= 1
            elif self.cusum > self.threshold:
                event = ChangeEvent(self.scored - 1, self.change_age(), x, self.cusum)
                self.changes += 1
                self.last_event = event
                self.restart()
                self.changed = True
                self.last_surprise = x
                self._quiet = self._holdoff
                return event
        else:
            self.last_score = math.nan
        self._learn(e)
        self._push(x)
        return event

    def change_age(self) -> int:
        """Steps since the estimated change point (see module doc), within the CUSUM's run."""
        n = min(self.run, self._R)
        if n <= 1:
            return max(n, 1)
        idx = (self._zh - 1 - np.arange(n)) % self._R  # newest first
        sums = np.cumsum(self._z[idx])
        glr = np.where(sums > 0, sums * sums / np.arange(1, n + 1), -1.0)
        return int(np.argmax(glr)) + 1

    def _learn(self, x: float) -> None:
        """EWMA baseline; a running average until ``baseline_horizon`` samples."""
        self._n += 1
        a = 1.0 / min(self._n, self._horizon)
        dev = x - self._mean
        self._mean += a * dev
        dev_new = x - self._mean
        self._var += a * (dev * dev_new - self._var)
        if self._prev_dev is not None:
            self._cov1 += a * (dev_new * self._prev_dev - self._cov1)
        self._prev_dev = dev_new

    def status(self, enabled: bool = True) -> ChangeStatus:
        return ChangeStatus(enabled, self.last_surprise, self.last_score, self.cusum,
                            self.threshold, self.changed, self.run, self.changes,
                            self.scored, self.warm)


# --------------------------------------------------------------------------- surprises


def factor_surprise(nat: np.ndarray, mean: np.ndarray, var: np.ndarray,
                    out: np.ndarray | None = None) -> float:
    """``log d``, d the normalized squared Mahalanobis distance of the factor mean
    (``nat = [1/var_i, mu_i/var_i]``) under the belief's posterior predictive N(mean,
    var + var_i). ``out``: a [2, latent] scratch array (the control path passes one)."""
    if out is None:
        out = np.empty((2, mean.shape[0]))
    a, b = out[0], out[1]
    np.divide(nat[1], nat[0], out=a)  # mu_i
    a -= mean
    np.reciprocal(nat[0], out=b)  # var_i
    b += var
    a *= a
    a /= b
    d = float(a.sum()) / mean.shape[0]
    return math.log(d) if d > 1e-300 else -690.0


def belief_shift_surprise(mean_before: np.ndarray, var_before: np.ndarray,
                          mean_after: np.ndarray, var_after: np.ndarray) -> float:
    """Surprise of one belief update for inference modes without per-transition factors
    (a recurrent or set encoder with a Gaussian belief head): ``log`` of KL(after || before)
    per latent dimension. A transition the belief expected moves it little."""
    mb, vb = np.asarray(mean_before, float), np.asarray(var_before, float)
    ma, va = np.asarray(mean_after, float), np.asarray(var_after, float)
    kl = 0.5 * float(np.mean(va / vb + (ma - mb) ** 2 / vb - 1.0 + np.log(vb / va)))
    return math.log(kl) if kl > 1e-300 else -690.0


# --------------------------------------------------------------------------- PoG adapter


class NaturalBelief(Protocol):
    """What :class:`BeliefChangeMonitor` needs of a belief."""

    @property
    def mean(self) -> np.ndarray: ...

    @property
    def var(self) -> np.ndarray: ...

    @property
    def count(self) -> int: ...

    def reset(self) -> None: ...

    def add_natural(self, nat: np.ndarray) -> None: ...


class BeliefChangeMonitor:
    """Scores each PoG factor, adds it to the belief, and rebuilds the belief on a change.

    The runtime calls :meth:`add` instead of ``belief.add_natural`` (with the transition's
    normalized (obs, action) as ``key`` when ``neighbourhood`` is on) and :meth:`reset` when it
    resets the belief itself (task change, operator request).
    """

    def __init__(self, config: ChangeDetectionConfig, latent_dim: int,
                 control_period: float, key_dim: int = 0) -> None:
        self.config = config
        self.detector = ChangeDetector(config, control_period)
        self.latent_dim = latent_dim
        self._R = int(config.max_rebuild)
        self._ring = np.zeros((self._R, 2, latent_dim))
        self._head = 0
        self._held = 0  # factors in the ring that belong to the current context
        self._scratch = np.empty((2, latent_dim))
        self._nb_nat = np.empty((2, latent_dim))
        self._min_context = int(config.min_context)
        self._mode = config.on_change
        self._radius = float(config.neighbourhood)
        self._lag = int(config.neighbour_lag)
        self._nmin = int(config.min_neighbours)
        self.key_dim = int(key_dim)
        self._keys = np.zeros((self._R, max(self.key_dim, 1)))
        self._age0 = np.arange(self._R)
        self.neighbours = 0
        """Neighbours the newest transition was scored against (0: scored against the belief
        or not scored)."""
        self.events: deque[ChangeEvent] = deque(maxlen=1000)
        """The newest changes raised (at most 1000 kept)."""

    @property
    def uses_keys(self) -> bool:
        return self._radius > 0 and self.key_dim > 0

    def reset(self) -> None:
        """The belief was reset from outside: the CUSUM and the rebuild ring start over."""
        self.detector.restart()
        self._held = 0

    def _surprise(self, belief: NaturalBelief, nat: np.ndarray,
                  key: np.ndarray | None) -> float:
        """The newest factor's surprise (NaN: not scored)."""
        self.neighbours = 0
        if belief.count < self._min_context:
            return math.nan
        if key is None or not self.uses_keys:
            return factor_surprise(nat, belief.mean, belief.var, self._scratch)
        # neighbours: transitions of this context at least `lag` old whose normalized
        # (obs, action) lies within `radius` (max-norm) of this one's
        ages = (self._head - 1 - self._age0) % self._R  # age of each ring slot
        near = np.abs(self._keys - key).max(axis=1) <= self._radius
        near &= ages >= self._lag
        near &= ages < self._held
        n = int(np.count_nonzero(near))
        if n < self._nmin:
            return math.nan
        self.neighbours = n
        nb = self._nb_nat
        np.sum(self._ring[near], axis=0, out=nb)
        prec = nb[0]
        mean = nb[1] / prec
        return factor_surprise(nat, mean, 1.0 / prec, self._scratch)

    def add(self, belief: NaturalBelief, nat: np.ndarray,
            key: np.ndarray | None = None) -> ChangeEvent | None:
        """Score ``nat`` (against the neighbours of ``key``, or the belief), multiply it in,
        and act on a change."""
        det = self.detector
        x = self._surprise(belief, nat, key)
        if x == x:
            event = det.update(x)
        else:
            det.skip()
            event = None
        belief.add_natural(nat)
        h = self._head
        self._ring[h] = nat
        if key is not None and self.key_dim:
            self._keys[h] = key
        self._head = (h + 1) % self._R
        if self._held < self._R:
            self._held += 1
        if event is not None:
            self.events.append(event)
            if self._mode == "rebuild":
                self._rebuild(belief, min(event.age, self._held))
            elif self._mode == "reset":
                belief.reset()
                self._held = 0
        return event

    def _rebuild(self, belief: NaturalBelief, keep: int) -> None:
        """Reset ``belief`` and multiply back the newest ``keep`` factors, oldest first."""
        belief.reset()
        R, h = self._R, self._head
        for j in range(keep, 0, -1):
            belief.add_natural(self._ring[(h - j) % R])
        self._held = keep

    def status(self) -> ChangeStatus:
        return self.detector.status(True)
