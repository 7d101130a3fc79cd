"""Quality canary for hot-swaps: a bundle that passes its integrity checks can still be worse.

A hot-swap is validated for integrity (hashes, shapes, golden vectors, the robot's interface)
by the runtime. That says nothing about what the model is worth: a barely trained bundle swapped
into a running node passes every check and the returns of the following episodes fall. The
canary guards quality, with the data the robot produces anyway:

- while a model runs, :meth:`QualityCanary.record` keeps its recent returns per
  ``(task, trial)`` — ``trial`` is the episode's position in its block of consecutive episodes
  on one task (0 explores with z from the prior, 1+ adapt), so an exploration episode is never
  compared with an adapted one;
- :meth:`QualityCanary.swapped` (at the episode boundary where the new model takes over)
  freezes those returns as the *baseline* and opens a trial of the new model;
- the new model's first ``episodes`` episodes on tasks that have a baseline are *judged*
  (episodes on tasks the old model never ran are counted, not judged); then
  :meth:`QualityCanary.record` returns a :class:`CanaryVerdict`: ``pass`` or ``rollback``.

The decision: the mean paired difference ``new - old`` over the judged episodes (``old`` is the
old model's mean return on the same ``(task, trial)``, else on the same task) against a margin
``margin * mean(|old|) + margin_abs``. Returns are on the task's own scale (twin-arm: a negative
distance cost), so a relative margin is what carries across families; ``margin_abs`` keeps a
near-zero baseline from making the canary trip on noise. Worse by more than the margin ->
``rollback``: the caller (the policy node) swaps the previous bundle back in and reports it in
its log, on /diagnostics and in the episode manifest (the /pearl/task JSON the logger records).

A second, static guard: :func:`provenance_check` compares the held-out score a bundle's
provenance records (``provenance.held_out["eval/test_final_return"]``, the trainer's last
evaluation as the exporter records it) with the running bundle's; a worse candidate needs an
explicit override. Bundles without a recorded score cannot be compared and pass that check (the
canary still runs).

Decisions written down here (nobody to ask):
- no baseline on any judged task -> no verdict is possible; the trial ends with ``no-baseline``
  (the new model stays, the status says why) once ``episodes`` unjudged episodes ran;
- the canary judges once per swap; a rollback is itself a swap, but it is not judged again
  (the previous model's returns are the evidence it was better);
- ROS-free and I/O-free: plain tests drive it (tests/runtime/test_canary.py).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pearl_robot.errors import ConfigError

PASS = "pass"
ROLLBACK = "rollback"
NO_BASELINE = "no-baseline"
GUARD_REFUSAL = "provenance guard:"
"""How a refusal by :func:`provenance_check` begins, so a caller that only sees the node's
reason (``ros2 param set`` answers with it) can tell it from an integrity failure."""
HELD_OUT_KEY = "eval/test_final_return"
"""The trainer's held-out return after adaptation (pearl_robot.train.metrics), the score the
provenance guard compares."""


@dataclass(frozen=True)
class CanaryConfig:
    """When the canary judges a new model and how much worse it may be."""

    episodes: int = 3
    """Episodes of the new model (on tasks the old model ran) judged before the verdict;
    0 disables the canary."""
    margin: float = 0.2
    """Allowed drop as a fraction of the old model's mean |return| on the same tasks: the new
    model is rolled back when ``mean(new - old) < -(margin * mean|old| + margin_abs)``."""
    margin_abs: float = 0.0
    """Allowed drop in return units on top of the relative margin (for near-zero returns)."""
    history: int = 6
    """Recent returns kept per (task, trial) of the running model (the baseline)."""

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise ConfigError(f"canary episodes must be >= 0, got {self.episodes}")
        if not (self.margin >= 0.0 and math.isfinite(self.margin)):
            raise ConfigError(f"canary margin must be a finite number >= 0, got {self.margin}")
        if not (self.margin_abs >= 0.0 and math.isfinite(self.margin_abs)):
            raise ConfigError(f"canary margin_abs must be a finite number >= 0, got "
                              f"{self.margin_abs}")
        if self.history < 1:
            raise ConfigError(f"canary history must be >= 1, got {self.history}")

    @property
    def enabled(self) -> bool:
        return self.episodes > 0

    def allowed_drop(self, old_abs: float) -> float:
        """The largest drop in return that is not "worse" against a baseline whose mean
        |return| is ``old_abs``: one definition for the canary and the provenance guard."""
        return self.margin * float(old_abs) + self.margin_abs


class JudgedEpisode(NamedTuple):
    """One episode of the new model and what it is compared with."""

    task: int
    trial: int
    new_return: float
    old_return: float
    """Old model's mean return on the same (task, trial), else on the same task."""


class CanaryVerdict(NamedTuple):
    """The canary's decision on one swap."""

    decision: str
    """``pass``, ``rollback`` or ``no-baseline``."""
    new_sha256: str
    """The model that was judged."""
    old_sha256: str
    """The model it was compared with (rolled back to on ``rollback``)."""
    old_path: str
    """The old model's bundle directory (what to swap back in)."""
    new_mean: float
    """Mean return of the judged episodes of the new model (nan without any)."""
    old_mean: float
    """Mean baseline return of the same episodes (nan without any)."""
    delta: float
    """``new_mean - old_mean``."""
    threshold: float
    """The largest drop allowed (>= 0): rollback when ``delta < -threshold``."""
    judged: tuple[JudgedEpisode, ...]
    """The paired episodes behind the decision."""
    unjudged: int
    """Episodes of the new model on tasks without a baseline."""

    @property
    def rolled_back(self) -> bool:
        return self.decision == ROLLBACK

    def message(self) -> str:
        if self.decision == NO_BASELINE:
            return (f"canary: no baseline for bundle {self.new_sha256[:12]} ({self.unjudged} "
                    "episodes on tasks the previous model never ran); kept unjudged")
        verb = "rolled back to" if self.rolled_back else "kept; previous"
        return (f"canary {self.decision}: bundle {self.new_sha256[:12]} mean return "
                f"{self.new_mean:.3f} vs {self.old_mean:.3f} (delta {self.delta:+.3f}, "
                f"allowed drop {self.threshold:.3f}) over {len(self.judged)} episodes; "
                f"{verb} {self.old_sha256[:12]}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for /pearl/task, the manifest and the demo's report)."""
        return {"decision": self.decision, "new_sha256": self.new_sha256,
                "old_sha256": self.old_sha256, "old_path": self.old_path,
                "new_mean": _finite_or_none(self.new_mean),
                "old_mean": _finite_or_none(self.old_mean),
                "delta": _finite_or_none(self.delta), "threshold": self.threshold,
                "judged": [j._asdict() for j in self.judged], "unjudged": self.unjudged}


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean(xs: Any) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


@dataclass
class _Trial:
    new_sha: str
    old_sha: str
    old_path: str
    baseline: dict[tuple[int, int], tuple[float, ...]]
    judged: list[JudgedEpisode] = field(default_factory=list)
    unjudged: int = 0


class CanaryStatus(NamedTuple):
    """What the canary is doing (for /diagnostics)."""

    state: str
    """``idle`` (no trial), ``judging`` or the last verdict's decision."""
    judged: int
    """Episodes judged in the open trial."""
    needed: int
    """Episodes it needs."""
    last: CanaryVerdict | None
    """The last verdict, if any."""


class QualityCanary:
    """Recent returns of the running model and the trial of a freshly swapped one."""

    def __init__(self, config: CanaryConfig | None = None) -> None:
        self.config = config or CanaryConfig()
        self._returns: dict[tuple[str, int, int], deque[float]] = {}
        self._trial: _Trial | None = None
        self._skip_next = False
        self.last: CanaryVerdict | None = None

    # ------------------------------------------------------------------ inputs
    def record(self, model_sha: str, task: int, trial: int, ret: float) -> CanaryVerdict | None:
        """A finished episode of ``model_sha`` on ``task`` (its ``trial``-th consecutive
        episode there). Returns the verdict when this episode completes a trial, else None.
        Non-finite returns (a broken episode) are ignored: they prove nothing either way."""
        if not math.isfinite(ret):
            return None
        key = (model_sha, int(task), int(trial))
        self._returns.setdefault(key, deque(maxlen=self.config.history)).append(float(ret))
        t = self._trial
        if t is None or model_sha != t.new_sha:
            return None
        old = t.baseline.get((int(task), int(trial)))
        if old is None:
            same_task = [r for (tk, _), rs in t.baseline.items() if tk == int(task) for r in rs]
            old = tuple(same_task) if same_task else None
        if old is None:
            t.unjudged += 1
            if t.unjudged >= self.config.episodes and not t.judged:
                return self._close(NO_BASELINE)
            return None
        t.judged.append(JudgedEpisode(int(task), int(trial), float(ret), _mean(old)))
        if len(t.judged) < self.config.episodes:
            return None
        return self._close(None)

    def swapped(self, old_sha: str, old_path: str, new_sha: str) -> bool:
        """The new model drives from the next episode on. Opens a trial (True) unless the
        canary is disabled, or this swap is the canary's own rollback."""
        if self._skip_next:
            self._skip_next = False
            self._trial = None
            return False
        if not self.config.enabled or new_sha == old_sha:
            self._trial = None
            return False
        baseline = {(task, trial): tuple(rs) for (sha, task, trial), rs in self._returns.items()
                    if sha == old_sha and rs}
        self._trial = _Trial(new_sha, old_sha, str(old_path), baseline)
        return True

    def expect_rollback_swap(self) -> None:
        """The next :meth:`swapped` is the rollback the caller did on a verdict: not judged."""
        self._skip_next = True

    # ------------------------------------------------------------------ state
    def status(self) -> CanaryStatus:
        t = self._trial
        if t is not None:
            return CanaryStatus("judging", len(t.judged), self.config.episodes, self.last)
        return CanaryStatus(self.last.decision if self.last else "idle", 0,
                            self.config.episodes, self.last)

    @property
    def judging(self) -> bool:
        return self._trial is not None

    def _close(self, decision: str | None) -> CanaryVerdict:
        t = self._trial
        assert t is not None
        self._trial = None
        new_mean = _mean(j.new_return for j in t.judged)
        old_mean = _mean(j.old_return for j in t.judged)
        delta = new_mean - old_mean
        threshold = self.config.allowed_drop(
            _mean(abs(j.old_return) for j in t.judged) if t.judged else 0.0)
        if decision is None:
            decision = ROLLBACK if delta < -threshold else PASS
        verdict = CanaryVerdict(decision, t.new_sha, t.old_sha, t.old_path, new_mean, old_mean,
                                delta, float(threshold), tuple(t.judged), t.unjudged)
        self.last = verdict
        return verdict


class ProvenanceCheck(NamedTuple):
    """The static guard: held-out scores recorded in the two bundles' provenance."""

    ok: bool
    """False: the candidate's recorded held-out score is worse; swapping needs an override."""
    running_score: float | None
    candidate_score: float | None
    message: str


def held_out_score(provenance: Any) -> float | None:
    """The held-out return recorded in a contract's ``provenance`` (higher is better), or
    None when the bundle records none (older exports, hand-made bundles)."""
    if not isinstance(provenance, dict):
        return None
    ev = provenance.get("held_out")
    if isinstance(ev, dict):
        v = ev.get(HELD_OUT_KEY)
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            return float(v)
    return None


def provenance_check(running: Any, candidate: Any, config: CanaryConfig | None = None
                     ) -> ProvenanceCheck:
    """Compare the recorded held-out scores of two bundles' provenance dicts. A candidate is
    worse when its score is below the running one's by more than the canary's margin
    (``config``: :meth:`CanaryConfig.allowed_drop`; no config: any drop): the two scores come
    from separate evaluations of a few simulated trajectories each, so two equally good
    models differ by noise, and an exact comparison refused one of two equal bundles."""
    a, b = held_out_score(running), held_out_score(candidate)
    if a is None or b is None:
        which = "either bundle" if a is None and b is None else (
            "the running bundle" if a is None else "the candidate")
        return ProvenanceCheck(True, a, b, f"no held-out score recorded in {which}'s "
                               "provenance; not compared (the canary still judges it)")
    allowed = config.allowed_drop(abs(a)) if config is not None else 0.0
    if b < a - allowed:
        return ProvenanceCheck(False, a, b, f"{GUARD_REFUSAL} the candidate's recorded "
                               f"held-out return {b:.3f} "
                               f"is worse than the running bundle's {a:.3f} by more than the "
                               f"allowed {allowed:.3f}; set swap_override to swap anyway")
    return ProvenanceCheck(True, a, b, f"recorded held-out return {b:.3f} vs running {a:.3f} "
                           f"(allowed drop {allowed:.3f})")
