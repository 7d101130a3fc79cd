"""The robot-side policy: one object the 20 Hz control loop calls once per tick.

API (everything a ROS node or a plain loop needs)::

    rt = PolicyRuntime("models/arm", RuntimeConfig(), rng=np.random.default_rng(0),
                       robot=RobotExpectation.from_robot_spec(load_robot_spec()))
    start = rt.begin_episode(task="goal-3")     # z for this episode; swaps a validated bundle
    while running:
        out = rt.tick(obs, reward, obs_age=age)  # -> TickResult; send out.command, then
        out = rt.finish_tick() or out            # the belief work of this tick (act-first)
    summary = rt.end_episode(final_obs, reward)  # absorbs the last transition
    rt.request_swap("models/arm-new")            # validated on a thread, swapped at the next
    rt.swap_status()                             # begin_episode; the old model stays on failure
                                                 # (or after RuntimeConfig.swap_timeout)
    rt.reset_belief()                            # e.g. on an operator request
    rt.check_observation(obs, age)               # "" or the reason tick would refuse it for
    seen = rt.inspect_observation(obs)           # the same verdict on the values, kept:
    out = rt.tick(seen, reward, obs_age=age)     # tick (or end_episode) does not judge again

Per tick, ``tick(obs, reward, obs_age)``:

1. checks the observation: ``obs_dim`` real numbers, all finite, each inside the range the
   contract declares widened by ``obs_range_margin`` (a sensor glitch such as a joint at 1e6
   rad is not an observation), and, when ``obs_age`` is given, a real number in
   ``[0, max_obs_age]`` (a negative age is a clock fault, never a fresh observation);
2. encodes the newest transition (previous obs, previous command, ``reward``, this obs) with
   ``encoder.onnx`` and multiplies its factor into the :class:`OnlineBelief` (O(latent));
   a ``pooled`` bundle advances its :class:`StepBelief` state by the step graph instead, a
   ``particles`` bundle adds the row's log-likelihood under every particle to the
   :class:`ParticleBelief`'s log-weights (O(particles));
3. picks z by the schedule (``episode``: drawn from the belief at ``begin_episode``, for a
   ``particles`` bundle one particle drawn from the normalized weights;
   ``step_mean``: the belief mean, every tick; ``fixed``: a given vector);
4. runs ``actor.onnx`` on (obs, z [, eps]) and passes the command through
   :class:`ActionSafety` (clip, rate limit; non-finite -> safe command).

Act-first (``RuntimeConfig.act_first``, on by default): when step 2 cannot change this tick's
command (schedules ``episode`` and ``fixed``; not ``step_mean``, whose z is the updated belief
mean, and not ``episode`` with change detection that redraws z on a change), ``tick`` does
steps 1, 3 and 4 and returns with ``deferred=True``; step 2 for the same transition, then the
start of the next transition at this observation, is :meth:`PolicyRuntime.finish_tick`, which
the caller runs after sending the command and which returns the complete
:class:`TickResult`. Nothing else changes: the complete results, the belief, the change
detector, the summaries and the rng draws equal those of the update-first order
(``act_first=False``; ``tests/runtime/test_act_first.py`` runs both side by side). A caller
that skips ``finish_tick`` loses nothing: the next ``tick``, ``end_episode``,
``begin_episode`` (before any swap), ``reset_belief`` or a read of ``belief`` /
``change_monitor`` does the pending work first, once. The deferred result's ``fault`` and
``reason`` cover what was known when the command left (every reason except the encoder's),
and its belief fields are the belief before this tick's transition.

``reward`` is the *context* reward of the transition that ended in ``obs`` (the family's
``context_reward_key`` value when the contract names one, the task reward otherwise); it is
ignored on the first tick of an episode. A transition enters the belief only when both of its
observations were valid and its reward is finite; a bad one is skipped and flagged, never
fed to the encoder. The command that entered the context is the one actually sent.

Faults never raise from ``tick`` (nor from ``finish_tick``), whatever is passed (any type
for ``obs``, ``reward`` and ``obs_age``; objects whose conversion raises anything): the tick
returns the safe command with ``safe=True`` and the reasons in ``reason``, and the loop goes
on (a bug in the deferred work counts ``tick_error`` and breaks the chain; its command has
already left). An unusable observation
leaves exactly the trace of a NaN observation: the safe command, a broken transition chain
(neither the transition ending at it nor the one starting from it enters the belief) and
nothing else, so the next good input is handled as after any other dropped tick; with the
``episode``/``fixed`` schedules and no rate limit its command equals that of a runtime that
never saw the bad input (``tests/runtime/test_tick_fuzz.py``).

Reproducibility: ``rng`` is drawn from only at ``begin_episode`` (``latent_dim`` standard
normals, schedule ``episode`` with the information bottleneck; one ``rng.random()`` for a
``particles`` bundle, uniform weights in the exploration episodes) and per actor call when
``stochastic_actions`` (``action_dim`` standard normals), and, with change detection on,
once per detected change (schedule ``episode``: z is redrawn from the rebuilt belief).

Change detection (``RuntimeConfig.change_detection``, off by default; product-of-Gaussians
bundles) hooks into step 2 only: each new factor is scored against the belief before it is
multiplied in, and a detected change rebuilds the belief from the transitions after the change
point (:mod:`pearl_robot.runtime.change_detection`); ``change_monitor.status()`` says what it
saw.

Arrays in a :class:`TickResult` are fresh copies (safe to keep). The control path allocates
nothing bigger than these small vectors: feeds are preallocated float32 buffers reused every
tick. No torch, no rclpy.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from pearl_robot.core.inference import (
    ContextLayout,
    OnlineBelief,
    ParticleBelief,
    ParticleStepOutput,
    StepBelief,
    StepOutput,
)
from pearl_robot.errors import ConfigError
from pearl_robot.runtime.bundle import (
    ACTOR_OUTPUTS,
    ENCODER_OUTPUTS,
    PARTICLE_STEP_OUTPUTS,
    Bundle,
    BundleError,
    RobotExpectation,
    check_compatible,
    check_robot,
    load_bundle,
)
from pearl_robot.runtime.change_detection import (
    BeliefChangeMonitor,
    ChangeDetectionConfig,
)
from pearl_robot.runtime.safety import ActionSafety
from pearl_robot.runtime.session import BoundGraph

ZSchedule = Literal["episode", "step_mean", "fixed"]
_isfinite = math.isfinite
_le = operator.le


_REAL_TYPES = (int, float, np.integer, np.floating)


def _real(x: Any) -> float | None:
    """``x`` as a float when it is one real number (Python or numpy scalar, 0-d real array),
    else None. Strings, lists, arrays, bools and objects whose conversion raises are not
    numbers here: ``float("0.1")`` working is no reason to accept a string as an age."""
    if type(x) is float:  # the control loop's case, first
        return x
    try:
        if isinstance(x, _REAL_TYPES) and not isinstance(x, bool):
            return float(x)
        if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iuf":
            return float(x)
    except OverflowError:  # an int beyond float range is a real number, just not finite
        return math.inf
    except Exception:  # noqa: BLE001 - a float subclass with a raising __float__, ...
        return None
    return None

# fault reasons (TickResult.reason is a comma-joined list of these)
OBS_SHAPE = "obs_shape"
OBS_NONFINITE = "obs_nonfinite"
OBS_RANGE = "obs_range"
OBS_STALE = "obs_stale"
OBS_CLOCK = "obs_clock"
OBS_AGE_INVALID = "obs_age_invalid"
REWARD_NONFINITE = "reward_nonfinite"
REWARD_INVALID = "reward_invalid"
ENCODER_NONFINITE = "encoder_nonfinite"
ENCODER_ERROR = "encoder_error"
ACTION_NONFINITE = "action_nonfinite"
ACTOR_ERROR = "actor_error"
TICK_ERROR = "tick_error"
MAX_ABANDONED_VALIDATIONS = 4
"""Timed-out validation threads that may still hang before ``request_swap`` refuses to start
another (each holds a thread and maybe an open file; a robot with this many has a mount or
disk problem an operator must see)."""
UNSAFE_REASONS = frozenset({OBS_SHAPE, OBS_NONFINITE, OBS_RANGE, OBS_STALE, OBS_CLOCK,
                            OBS_AGE_INVALID, ACTION_NONFINITE, ACTOR_ERROR, TICK_ERROR})
"""Reasons that replace the command with the safe command (the others only skip a belief
update). What each means is tabled in docs/architecture.md ("What each bad input gets"):
``obs_shape``: not ``obs_dim`` real numbers (wrong size or type, conversion raised);
``obs_nonfinite``: NaN/inf entry; ``obs_range``: an entry outside the contract's declared range
widened by ``obs_range_margin``; ``obs_stale``: age above ``max_obs_age`` (or NaN);
``obs_clock``: negative age (timestamp from the future: a clock fault); ``obs_age_invalid``:
the age is not a number; ``action_nonfinite``/``actor_error``: the actor failed;
``tick_error``: an unexpected internal error (a bug; the tick still answers)."""
OBS_REASONS = frozenset({OBS_SHAPE, OBS_NONFINITE, OBS_RANGE, OBS_STALE, OBS_CLOCK,
                         OBS_AGE_INVALID})
"""The reasons :meth:`PolicyRuntime.check_observation` can return."""


@dataclass(frozen=True)
class RuntimeConfig:
    """How the runtime acts; the bundle's contract fixes everything about the model."""

    z_schedule: ZSchedule = "episode"
    """``episode``: z drawn from the belief at each ``begin_episode`` (the PEARL paper's
    test-time protocol: explore with the prior, then posterior sampling per episode);
    ``step_mean``: z = belief mean, updated every tick; ``fixed``: z = ``fixed_z``."""
    fixed_z: tuple[float, ...] | None = None
    """The latent used by the ``fixed`` schedule (length latent_dim)."""
    exploration_episodes: int = 1
    """Episodes after a belief reset whose z is drawn from the prior N(0, I) even though the
    context accumulates (oyster's ``num_exp_traj_eval``; schedule ``episode`` only)."""
    stochastic_actions: bool = False
    """Sample actions from the tanh-Gaussian policy instead of its mean (evaluation in the
    reference is deterministic; exploration data collection may want samples)."""
    context_window: int | None = None
    """Newest transitions kept in the belief. None: the bundle's recommended window (training
    context size); 0: no window (``forgetting`` must then be < 1)."""
    forgetting: float = 1.0
    """Per-step decay of older transitions' weight in (0, 1]; 1 = none."""
    max_obs_age: float | None = None
    """Observations older than this (seconds) give the safe command. None: two control
    periods of the bundle. Checked only when ``tick`` gets an ``obs_age``."""
    max_rate: float | tuple[float, ...] | None = None
    """Largest change of each command entry per second (physical units/s), or None."""
    safe_action: tuple[float, ...] | None = None
    """Command sent whenever the policy cannot be trusted; None: zeros clipped to limits."""
    reset_belief_on_task_change: bool = True
    """``begin_episode(task=...)`` with a task different from the last one resets the belief."""
    obs_range_margin: float | tuple[float, ...] | None = 1.0
    """How far outside the contract's declared observation range (``observation.low/high``:
    joint limits, velocity limits) an entry may lie before the observation is refused
    (``obs_range``: safe command, never enters the belief or the log), as a multiple of each
    entry's declared span (high - low); one number or one per entry; None: no range check.
    The default 1.0 accepts [low - span, high + span] (a joint limited to +-2.6 rad passes up
    to +-7.8 rad, a +-6 rad/s velocity up to +-18 rad/s): real data overshoots declared
    limits (soft limits, impacts, velocity estimates) and must not trip it, while a glitch
    (1e6 rad, 1e30 rad/s) does. Bundles whose contract declares no range are not checked."""
    swap_timeout: float = 60.0
    """Seconds a hot-swap validation may take (reading files, creating sessions, golden run)
    before it is declared ``failed``; its thread is abandoned (Python threads cannot be
    killed) and a later request starts a fresh validation. A bundle on a hung network mount
    or a file that blocks on read must not block every later swap."""
    change_detection: ChangeDetectionConfig = ChangeDetectionConfig()
    """Online detection of a task change within the stream (``runtime.change_detection``):
    off by default; on a detected change the belief is rebuilt from the transitions after
    the change point (schedule ``episode`` then redraws z from the rebuilt belief)."""
    act_first: bool = True
    """Send the command before the belief work: ``tick`` returns once the command is known
    and the encoder + belief update of its newest transition waits for
    :meth:`PolicyRuntime.finish_tick` (or the next runtime call that needs the belief). Used
    only where the update cannot change this tick's command: schedules ``episode`` and
    ``fixed``, except ``episode`` with change detection that redraws z on a change (there
    the update decides this tick's z); ``step_mean`` always updates first. Results are
    identical either way; False keeps the update on the state -> command path."""

    def __post_init__(self) -> None:
        if self.z_schedule not in ("episode", "step_mean", "fixed"):
            raise ConfigError(f"RuntimeConfig.z_schedule must be 'episode', 'step_mean' or "
                              f"'fixed', got {self.z_schedule!r}")
        if self.z_schedule == "fixed" and self.fixed_z is None:
            raise ConfigError("RuntimeConfig.fixed_z is required with z_schedule='fixed'")
        if self.exploration_episodes < 0:
            raise ConfigError(f"RuntimeConfig.exploration_episodes must be >= 0, got "
                              f"{self.exploration_episodes}")
        if self.context_window is not None and self.context_window < 0:
            raise ConfigError(f"RuntimeConfig.context_window must be >= 0 or None, got "
                              f"{self.context_window}")
        if not 0.0 < self.forgetting <= 1.0:
            raise ConfigError(f"RuntimeConfig.forgetting must be in (0, 1], got "
                              f"{self.forgetting}")
        if self.context_window == 0 and self.forgetting >= 1.0:
            raise ConfigError("RuntimeConfig: context_window=0 with forgetting=1 is an "
                              "unbounded context (the posterior collapses over hours); set a "
                              "window or a forgetting factor < 1")
        if self.max_obs_age is not None and not self.max_obs_age > 0:
            raise ConfigError(f"RuntimeConfig.max_obs_age must be > 0, got {self.max_obs_age}")
        if self.obs_range_margin is not None:
            margin = np.asarray(self.obs_range_margin, dtype=np.float64)
            if margin.ndim > 1 or margin.size == 0 or not np.all(margin >= 0) or \
                    not np.all(np.isfinite(margin)):
                raise ConfigError(f"RuntimeConfig.obs_range_margin must be a finite number "
                                  f">= 0 (or one per observation entry), or None, got "
                                  f"{self.obs_range_margin!r}")
        if not (math.isfinite(self.swap_timeout) and self.swap_timeout > 0):
            raise ConfigError(f"RuntimeConfig.swap_timeout must be > 0 seconds, got "
                              f"{self.swap_timeout}")


class TickTimings(NamedTuple):
    """Where one tick's time went (seconds, perf_counter)."""

    encoder_s: float
    """Building the context row + encoder.onnx + belief update (0 when skipped)."""
    actor_s: float
    """actor.onnx."""
    total_s: float
    """The whole ``tick`` call (state -> command when the belief work was deferred)."""
    deferred_s: float = 0.0
    """The deferred belief work in :meth:`PolicyRuntime.finish_tick` (0 when none was
    deferred); ``encoder_s`` is then the encoder + update part of it."""


class TickResult(NamedTuple):
    """What one control tick decided."""

    command: np.ndarray
    """Command to send, physical units, contract action order [action_dim]."""
    safe: bool
    """True: ``command`` is the safe command (the policy was not trusted this tick)."""
    fault: bool
    """True: something was wrong this tick (see ``reason``); may be True with safe=False when
    only the belief update was skipped."""
    reason: str
    """Comma-separated fault reasons (module constants), "" when all was well."""
    limited: bool
    """The policy's command was changed by the limits or the rate limit."""
    z: np.ndarray
    """The latent the actor used [latent_dim]."""
    belief_mean: np.ndarray
    """Posterior mean after this tick's update [latent_dim]."""
    belief_var: np.ndarray
    """Posterior variance after this tick's update [latent_dim]."""
    context_size: int
    """Transitions currently in the belief."""
    episode: int
    """Episode index (0-based, counts begin_episode calls)."""
    step: int
    """Tick index within the episode (0-based)."""
    timings: TickTimings
    """Time spent in each stage."""
    deferred: bool = False
    """True: the belief work of this tick's transition is still to do (act-first, see
    ``RuntimeConfig.act_first``); ``fault``/``reason`` cover what was known when the command
    left and the belief fields are the belief before this tick's transition.
    :meth:`PolicyRuntime.finish_tick` returns the complete result."""


class ObsCheck(NamedTuple):
    """An observation with the runtime's verdict on its values
    (:meth:`PolicyRuntime.inspect_observation`). Handed to :meth:`PolicyRuntime.tick` or
    :meth:`PolicyRuntime.end_episode` in place of the observation, the verdict is used, not
    made again: a caller that must know before the tick whether the observation is usable
    (the episode controller keeps a refused one out of the logged transition) checks it once
    per tick. The age is no part of it: ``tick`` judges its ``obs_age`` itself."""

    obs: Any
    """The observation as given."""
    reason: str
    """"" or why its values are refused (``obs_shape``, ``obs_nonfinite``, ``obs_range``)."""
    values: list[float] | None
    """A copy of the values taken when judged (None when refused)."""
    model: Any = None
    """The loaded model that judged it; after a hot-swap ``tick`` judges it again."""


class EpisodeStart(NamedTuple):
    """What ``begin_episode`` did."""

    episode: int
    """Index of the episode that starts."""
    task: Any
    """The task id given (None if none)."""
    z: np.ndarray
    """z for the episode (schedule ``episode``/``fixed``) or the current belief mean."""
    belief_reset: bool
    """The belief was reset (task change, new bundle, or first episode)."""
    swapped_to: str | None
    """sha256 of the bundle swapped in at this boundary, else None."""
    bundle_sha256: str
    """The bundle that drives this episode."""


class EpisodeSummary(NamedTuple):
    """Bookkeeping of one finished episode."""

    episode: int
    """Episode index."""
    task: Any
    """Task id given at begin_episode."""
    steps: int
    """Ticks in the episode."""
    context_return: float
    """Sum of the finite rewards passed in (the context reward)."""
    safe_ticks: int
    """Ticks that sent the safe command."""
    faults: dict[str, int]
    """Fault reason -> count."""
    context_size: int
    """Transitions in the belief at the end."""
    belief_mean: np.ndarray
    """Posterior mean at the end."""
    belief_var: np.ndarray
    """Posterior variance at the end."""
    bundle_sha256: str
    """The bundle that drove the episode."""


class SwapStatus(NamedTuple):
    """State of the last hot-swap request."""

    state: str
    """``idle``, ``validating``, ``ready`` (swaps at the next begin_episode), ``swapped``,
    ``unchanged`` (the candidate is the running bundle) or ``failed`` (the running bundle
    stays)."""
    path: str | None
    """Candidate bundle directory."""
    message: str
    """Why it failed, or what happened."""
    bundle_sha256: str | None
    """Candidate's identity once its contract was read."""


class _Model:
    """One bundle plus every buffer the control path touches, built off the control path."""

    def __init__(self, bundle: Bundle, cfg: RuntimeConfig) -> None:
        c = bundle.contract
        self.bundle = bundle
        self.contract = c
        o, a, L = c.obs_dim, c.action_dim, c.latent_dim
        Lz = c.policy_latent_dim  # the actor's z input: a sample, or [mean, std]
        self.belief_input = c.policy_input == "belief"
        self.obs32 = np.zeros((1, o), dtype=np.float32)
        self.z32 = np.zeros((1, Lz), dtype=np.float32)
        self.eps32 = np.zeros((1, a), dtype=np.float32)
        self.row32 = np.zeros((1, c.context_dim), dtype=np.float32)
        self.action_out = np.zeros((1, a), dtype=np.float32)
        self.mu_out = np.zeros((1, L), dtype=np.float32)
        self.var_out = np.ones((1, L), dtype=np.float32)
        self.nat = np.zeros((2, L))  # the newest factor as [1/var, mu/var]
        self.actor = BoundGraph(bundle.actor, {"obs": self.obs32, "z": self.z32,
                                               "eps": self.eps32},
                                {ACTOR_OUTPUTS[1] if cfg.stochastic_actions
                                 else ACTOR_OUTPUTS[0]: self.action_out})
        layout = ContextLayout.from_fields(c.context_fields)
        self.slices = layout.slices
        self.s_obs, self.s_action = self.slices["obs"], self.slices["action"]
        self.i_reward = self.slices["reward"].start
        self.s_next = self.slices.get("next_obs")
        self.latent_dim = L
        self.action_dim = a
        self._bind_encoder(cfg)
        self._bind_change_monitor(cfg)
        self._bind_safety(cfg)
        self.max_obs_age = cfg.max_obs_age if cfg.max_obs_age is not None \
            else 2.0 * c.control_period
        self._bind_obs_range(cfg)
        # per-tick state
        self.z = np.zeros(Lz)
        self.prev_obs = np.zeros(o)
        self.prev_cmd = np.zeros(a)
        self.prev_valid = False
        self.cmd = np.zeros(a)
        self.obs = np.zeros(o)

    def _bind_encoder(self, cfg: RuntimeConfig) -> None:
        """The encoder graph bound to the belief's state (pooled: the step graph's ring and
        count are the belief's arrays; particles: the step graph's log-weight input is the
        belief's feed; pog: one factor per transition into the product)."""
        c = self.contract
        L = c.latent_dim
        self.particles = c.inference_mode == "particles"
        self.pooled = c.inference_mode == "pooled"
        self.stepped = self.pooled or self.particles  # the belief runs a step graph
        if self.particles:
            # bounded like pog: the contract's recommended window (an evaluation's context)
            window = c.recommended_window if cfg.context_window is None else cfg.context_window
            P = c.num_particles
            log_w_out = np.zeros((1, P), dtype=np.float32)
            loglik = np.zeros((1, P), dtype=np.float32)
            p_out = ParticleStepOutput(log_w_out, loglik)
            try:
                pbelief = ParticleBelief(lambda *_: p_out, c.particles, window or None,
                                         cfg.forgetting)
            except ValueError as exc:
                raise ConfigError(f"RuntimeConfig does not fit this particle bundle: {exc}"
                                  ) from exc
            self.encoder = BoundGraph(self.bundle.encoder, {"transition": self.row32,
                                                       "log_w": pbelief.feed},
                                      {PARTICLE_STEP_OUTPUTS[0]: log_w_out,
                                       PARTICLE_STEP_OUTPUTS[1]: loglik})
            self.belief: OnlineBelief | StepBelief | ParticleBelief = pbelief
        elif self.pooled:
            # the step graph's state *is* the belief's state: bind its ring and count arrays
            # as the graph's inputs, and let StepBelief copy the outputs back after each run
            if cfg.context_window not in (None, c.step_window) or cfg.forgetting < 1.0:
                raise ConfigError(f"this bundle's belief ({c.inference_mode}) keeps a fixed "
                                  f"window of {c.step_window} transitions: context_window must "
                                  f"be unset or {c.step_window} and forgetting 1, got "
                                  f"{cfg.context_window} and {cfg.forgetting}")
            ring_out = np.zeros((1, c.step_window, c.step_features), dtype=np.float32)
            count_out = np.zeros((1, 1), dtype=np.float32)
            step_out = StepOutput(ring_out, count_out, self.mu_out, self.var_out)
            belief = StepBelief(lambda *_: step_out, L, c.step_window, c.step_features)
            self.encoder = BoundGraph(self.bundle.encoder, {"transition": self.row32,
                                                       "ring": belief.ring,
                                                       "count": belief.count_arr},
                                      {"ring_out": ring_out, "count_out": count_out,
                                       "mu": self.mu_out, "var": self.var_out})
            self.belief = belief
        else:
            self.encoder = BoundGraph(self.bundle.encoder, {"transition": self.row32},
                                      {ENCODER_OUTPUTS[0]: self.mu_out,
                                       ENCODER_OUTPUTS[1]: self.var_out})
            window = c.recommended_window if cfg.context_window is None else cfg.context_window
            self.belief = OnlineBelief(L, window or None, cfg.forgetting, c.includes_prior)

    def _bind_change_monitor(self, cfg: RuntimeConfig) -> None:
        """The change detector (pog bundles only) and its transition key normalization."""
        c = self.contract
        o, a, L = c.obs_dim, c.action_dim, c.latent_dim
        cd = cfg.change_detection
        self.monitor = None
        if cd.enabled and self.stepped:
            raise ConfigError(f"RuntimeConfig.change_detection works on product-of-Gaussians "
                              f"(pog) bundles; this bundle's belief is "
                              f"'{c.inference_mode}' (its step state has no per-transition "
                              f"Gaussian factors to score)")
        if cd.enabled:  # transitions are compared by their normalized (obs, command)
            self.monitor = BeliefChangeMonitor(cd, L, c.control_period, key_dim=o + a)
            lo = np.concatenate([c.obs_low if c.obs_low is not None else -np.ones(o),
                                 c.action_low])
            hi = np.concatenate([c.obs_high if c.obs_high is not None else np.ones(o),
                                 c.action_high])
            self.key_center = 0.5 * (hi + lo)
            self.key_inv = 2.0 / np.maximum(hi - lo, 1e-12)
            self.key = np.zeros(o + a)

    def _bind_safety(self, cfg: RuntimeConfig) -> None:
        """Command limits, rate limit and the safe command, checked against the bundle."""
        c = self.contract
        Lz = c.policy_latent_dim
        md = None
        if cfg.max_rate is not None:
            md = np.asarray(cfg.max_rate, dtype=np.float64) * c.control_period
        try:
            self.safety = ActionSafety(c.action_low, c.action_high,
                                       None if cfg.safe_action is None
                                       else np.asarray(cfg.safe_action, dtype=np.float64),
                                       md)
        except ValueError as exc:
            raise ConfigError(f"RuntimeConfig (safe_action/max_rate) does not fit the bundle: "
                              f"{exc}") from exc
        if cfg.safe_action is None:  # zeros clipped into the limits
            self.safety.safe_action[:] = np.clip(0.0, c.action_low, c.action_high)
            self.safety.reset()
        self.fixed_z = None
        if cfg.fixed_z is not None:
            fz = np.asarray(cfg.fixed_z, dtype=np.float64)
            if fz.shape != (Lz,) or not np.all(np.isfinite(fz)):
                raise ConfigError(f"RuntimeConfig.fixed_z must be {Lz} finite numbers for this "
                                  f"bundle, got {cfg.fixed_z!r}")
            self.fixed_z = fz

    def _bind_obs_range(self, cfg: RuntimeConfig) -> None:
        """The accepted observation range (contract range widened by the margin)."""
        c = self.contract
        o = c.obs_dim
        # accepted observation range as Python floats (the per-tick check compares lists:
        # fastest for a few entries, no allocation beyond the tolist the finiteness check
        # already makes); None when the contract declares no range or the check is off
        self.obs_lo: list[float] | None = None
        self.obs_hi: list[float] | None = None
        if cfg.obs_range_margin is not None and c.obs_low is not None and \
                c.obs_high is not None:
            margin = np.asarray(cfg.obs_range_margin, dtype=np.float64)
            if margin.ndim == 1 and margin.shape != (o,):
                raise ConfigError(f"RuntimeConfig.obs_range_margin has {margin.size} entries, "
                                  f"the bundle observes {o}")
            span = (c.obs_high - c.obs_low) * margin
            self.obs_lo = (c.obs_low - span).tolist()
            self.obs_hi = (c.obs_high + span).tolist()

    def set_z_from_belief(self) -> None:
        """z = the belief mean, or the belief itself ([mean, std]) for a belief-input actor."""
        b, z, L = self.belief, self.z, self.latent_dim
        z[:L] = b.mean
        if self.belief_input:
            np.sqrt(b.var, out=z[L:])
        self.z32[0] = z


class _Deferred(NamedTuple):
    """An act-first tick's belief work, done by ``PolicyRuntime._absorb``."""

    result: TickResult
    """What ``tick`` returned (``deferred=True``)."""
    reward: float | None
    """Reward of the transition to encode; None: nothing to encode this tick."""
    valid: bool
    """This tick's observation was usable: the next transition starts at it."""
    reasons: list[str]
    """The tick's fault reasons so far."""
    split: int
    """Where a belief-stage reason goes in ``reasons`` (the order the old tick wrote)."""


class PolicyRuntime:
    """Bundle + online belief + z schedule + command safety + episodes + hot-swap.

    Not thread-safe except :meth:`request_swap` and :meth:`swap_status`, which may be called
    from any thread; everything else belongs to the control thread.
    """

    def __init__(self, bundle: Bundle | str | Path, config: RuntimeConfig | None = None, *,
                 rng: np.random.Generator, robot: RobotExpectation | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.robot = robot
        self.rng = rng
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle, robot)
        elif robot is not None:
            check_robot(bundle.contract, robot)
        self._m = _Model(bundle, self.config)
        self._step_mean = self.config.z_schedule == "step_mean"
        cd = self.config.change_detection
        redraws = self.config.z_schedule == "episode" and cd.enabled and \
            cd.on_change != "flag"  # a detected change sets this tick's z
        self._act_first = self.config.act_first and not self._step_mean and not redraws
        self._deferred: _Deferred | None = None  # the last tick's belief work, if still to do
        self._stochastic = self.config.stochastic_actions
        self._episode = -1
        self._step = 0
        self._in_episode = False
        self._task: Any = None
        self._have_task = False
        self._episodes_since_reset = 0
        self._ep_return = 0.0
        self._ep_safe = 0
        self._ep_faults: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pending: _Model | None = None
        self._swap = SwapStatus("idle", None, "", None)
        self._swap_thread: threading.Thread | None = None
        self._swap_gen = 0  # identifies the validation whose result still counts
        self._swap_started = 0.0
        self._abandoned: list[threading.Thread] = []  # timed-out validations, maybe hung
        # set at the end of every tick while a validation runs (see _after_tick)
        self._tick_done = threading.Event()
        self._validating = False

    # ------------------------------------------------------------------ properties
    @property
    def bundle(self) -> Bundle:
        """The bundle driving the robot now."""
        return self._m.bundle

    @property
    def belief(self) -> OnlineBelief | StepBelief | ParticleBelief:
        """The online belief (live; read-only use). Reading it first does a deferred belief
        update (``finish_tick``), so it always includes every transition ticked so far."""
        if self._deferred is not None:
            self._absorb(False)
        return self._m.belief

    @property
    def change_monitor(self) -> BeliefChangeMonitor | None:
        """The running model's change detector (None when off). Read its ``status()`` after a
        tick; count events by ``status().changes`` (``changed`` is about the newest scored
        transition only). Like ``belief``, reading it first does a deferred update."""
        if self._deferred is not None:
            self._absorb(False)
        return self._m.monitor

    @property
    def acts_first(self) -> bool:
        """True: ``tick`` returns the command before the belief work, which
        :meth:`finish_tick` then does (``RuntimeConfig.act_first`` where the schedule
        allows it)."""
        return self._act_first

    @property
    def safe_command(self) -> np.ndarray:
        """The command sent when the policy is not trusted (copy)."""
        return self._m.safety.safe_action.copy()

    @property
    def episode(self) -> int:
        return self._episode

    @property
    def in_episode(self) -> bool:
        return self._in_episode

    # ------------------------------------------------------------------ episodes
    def reset_belief(self) -> None:
        """Forget the context: the belief is the prior again; exploration episodes restart.
        A deferred update is done first (its transition was ticked before the reset)."""
        if self._deferred is not None:
            self._absorb(False)
        self._m.belief.reset()
        if self._m.monitor is not None:
            self._m.monitor.reset()
        self._episodes_since_reset = 0

    def begin_episode(self, task: Any = None) -> EpisodeStart:
        """Start an episode: swap in a validated bundle, reset the belief on a task change,
        draw this episode's z. Ends a running episode first (its summary is dropped)."""
        if self._deferred is not None:  # into the model that ticked it, before any swap
            self._absorb(False)
        if self._in_episode:
            self.end_episode()
        swapped = None
        reset = False
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None:
                self._swap = SwapStatus("swapped", self._swap.path,
                                        f"swapped in at the start of episode "
                                        f"{self._episode + 1}", pending.bundle.sha256)
        if pending is not None:
            self._m = pending
            swapped = pending.bundle.sha256
            reset = True
        if task is not None and self.config.reset_belief_on_task_change and \
                (not self._have_task or task != self._task):
            reset = True
        if self._episode < 0:
            reset = True
        if reset:
            self.reset_belief()
        if task is not None:
            self._task, self._have_task = task, True
        m = self._m
        self._episode += 1
        self._step = 0
        self._in_episode = True
        self._ep_return = 0.0
        self._ep_safe = 0
        self._ep_faults = Counter()
        m.prev_valid = False
        m.safety.reset()
        self._choose_episode_z()
        self._episodes_since_reset += 1
        return EpisodeStart(self._episode, task, m.z.copy(), reset, swapped, m.bundle.sha256)

    def _choose_episode_z(self) -> None:
        m, cfg = self._m, self.config
        if cfg.z_schedule == "fixed":
            m.z[:] = m.fixed_z
        elif cfg.z_schedule == "step_mean":
            m.set_z_from_belief()
        elif m.belief_input:
            m.set_z_from_belief()  # the policy takes the belief itself, frozen per episode
        elif m.particles:  # posterior sampling: one particle, held for the episode
            prior = self._episodes_since_reset < cfg.exploration_episodes
            m.z[:] = m.belief.particles[m.belief.sample_index(self.rng, prior)]
        elif not m.contract.information_bottleneck:
            m.z[:] = m.belief.mean  # point-estimate encoder: z is the context mean
        else:
            eps = self.rng.standard_normal(m.contract.latent_dim)
            if self._episodes_since_reset < cfg.exploration_episodes:
                m.z[:] = eps  # prior N(0, I)
            else:
                m.z[:] = m.belief.mean + np.sqrt(m.belief.var) * eps
        m.z32[0] = m.z

    def end_episode(self, final_obs: np.ndarray | None = None, reward: float | None = None
                    ) -> EpisodeSummary:
        """Close the episode; ``final_obs`` + ``reward`` complete its last transition, which
        then enters the belief (no command is computed). A deferred update of the last
        tick is done first."""
        if self._deferred is not None:
            self._absorb(False)
        m = self._m
        if self._in_episode and final_obs is not None and reward is not None:
            try:
                r = _real(reward)
                why = self._read_obs(final_obs, None)
                if r is None:
                    why = why or REWARD_INVALID
                else:
                    if _isfinite(r):
                        self._ep_return += r
                    if not why:
                        why = self._update_belief(r)
            except Exception:  # noqa: BLE001 - closing an episode must not fail either
                why = TICK_ERROR
            if why:
                self._ep_faults[why] += 1
        self._in_episode = False
        m.prev_valid = False
        return EpisodeSummary(self._episode, self._task if self._have_task else None,
                              self._step, self._ep_return, self._ep_safe,
                              dict(self._ep_faults), m.belief.count, m.belief.mean.copy(),
                              m.belief.var.copy(), m.bundle.sha256)

    # ------------------------------------------------------------------ the tick
    def _obs_fault(self, obs: Any, obs_age: Any) -> tuple[str, Any]:
        """The fault reason of an observation ("" when usable) and its values as a list."""
        why, vals = self._values_fault(obs)
        if why or obs_age is None:
            return why, vals
        why = self._age_fault(obs_age)
        return (why, None) if why else ("", vals)

    def _values_fault(self, obs: Any) -> tuple[str, Any]:
        """The values' fault reason ("" when usable) and the values as a list."""
        m = self._m
        try:
            # real numbers only: no strings (numpy would parse "0.3"), bools, objects, complex
            arr = obs if isinstance(obs, np.ndarray) else np.asarray(obs)
            if arr.size != m.obs.size or arr.dtype.kind not in "iuf":
                return OBS_SHAPE, None
            vals = arr.ravel().tolist()
            if not all(map(_isfinite, vals)):  # fastest check for a few entries
                return OBS_NONFINITE, None
        except Exception:  # noqa: BLE001 - any conversion failure is "not obs_dim numbers"
            return OBS_SHAPE, None  # (a masked entry lists as None, an odd subclass...)
        lo = m.obs_lo
        if lo is not None and not (all(map(_le, lo, vals)) and all(map(_le, vals, m.obs_hi))):
            return OBS_RANGE, None
        return "", vals

    def _age_fault(self, obs_age: Any) -> str:
        """"" or why an observation of this age is not used."""
        age = _real(obs_age)
        if age is None:
            return OBS_AGE_INVALID
        if age < 0.0:
            return OBS_CLOCK
        if not (age <= self._m.max_obs_age):  # NaN age is stale too
            return OBS_STALE
        return ""

    def check_observation(self, obs: Any, obs_age: Any = None) -> str:
        """Would ``tick`` accept this observation? "" or the fault reason (one of
        :data:`OBS_REASONS`); changes nothing. A node uses it to keep a refused observation
        out of everything else it does with it (the logged transition, the episode's step
        count), not only out of the command."""
        try:
            return self._obs_fault(obs, obs_age)[0]
        except Exception:  # noqa: BLE001 - never raises, like tick
            return OBS_SHAPE

    def inspect_observation(self, obs: Any) -> ObsCheck:
        """The verdict of :meth:`check_observation` on the values (not an age), kept with a
        copy of them for ``tick``/``end_episode`` (see :class:`ObsCheck`). Never raises."""
        try:
            why, vals = self._values_fault(obs)
        except Exception:  # noqa: BLE001 - never raises, like tick
            why, vals = OBS_SHAPE, None
        return ObsCheck(obs, why, vals, self._m)

    def _read_obs(self, obs: Any, obs_age: Any) -> str:
        """Copy a usable obs into the model's buffer; "" or the fault reason. An
        :class:`ObsCheck` of the loaded model is not judged again (only its age is)."""
        if type(obs) is ObsCheck:
            if obs.model is self._m:
                why, vals = obs.reason, obs.values
                if not why and obs_age is not None:
                    why = self._age_fault(obs_age)
            else:  # judged by the model before a swap: judge it again
                why, vals = self._obs_fault(obs.obs, obs_age)
        else:
            why, vals = self._obs_fault(obs, obs_age)
        if not why:
            self._m.obs[:] = vals
        return why

    def _update_belief(self, r: float) -> str:
        """Encode (prev obs, prev command, r, obs) into the belief; "" or the fault."""
        m = self._m
        if not m.prev_valid:
            return ""
        if not _isfinite(r):
            return REWARD_NONFINITE
        row = m.row32[0]
        row[m.s_obs] = m.prev_obs
        row[m.s_action] = m.prev_cmd
        row[m.i_reward] = r
        if m.s_next is not None:
            row[m.s_next] = m.obs
        try:
            m.encoder.run()
        except Exception:  # noqa: BLE001 - the control loop must survive any inference error
            return ENCODER_ERROR
        if m.stepped:
            try:  # checks every output is finite before the state advances
                m.belief.add_rows(m.row32)
            except ValueError:
                return ENCODER_NONFINITE
            return ""
        var_l = m.var_out[0].tolist()
        # NaN/inf anywhere or a variance <= 0: never multiplied in (checked before dividing)
        if not (all(map(_isfinite, var_l)) and min(var_l) > 0.0
                and all(map(_isfinite, m.mu_out[0].tolist()))):
            return ENCODER_NONFINITE
        nat = m.nat
        np.reciprocal(m.var_out[0], out=nat[0])
        np.multiply(nat[0], m.mu_out[0], out=nat[1])
        if not all(map(_isfinite, nat[1].tolist())):  # |mu| / var overflowed
            return ENCODER_NONFINITE
        if m.monitor is None:
            m.belief.add_natural(nat)
            return ""
        k = m.key
        k[:m.obs.shape[0]] = m.prev_obs
        k[m.obs.shape[0]:] = m.prev_cmd
        k -= m.key_center
        k *= m.key_inv
        if m.monitor.add(m.belief, nat, k) is not None and self.config.z_schedule == "episode" \
                and m.monitor.config.on_change != "flag":
            m.z[:] = m.belief.mean  # a changed task: z from the rebuilt belief, sampled
            if m.contract.information_bottleneck:  # as at an episode start
                m.z += np.sqrt(m.belief.var) * self.rng.standard_normal(m.contract.latent_dim)
            m.z32[0] = m.z
        return ""

    def tick(self, obs: Any, reward: float | None = None, obs_age: float | None = None
             ) -> TickResult:
        """One control tick (see module doc). Never raises, whatever it is given. When the
        runtime acts first (:attr:`acts_first`) the result has ``deferred=True``: send its
        command, then call :meth:`finish_tick`."""
        t0 = time.perf_counter()
        try:
            return self._tick(obs, reward, obs_age, t0)
        except Exception:  # noqa: BLE001 - a bug must not stop the loop; answer safely
            return self._failed_tick(t0)

    def finish_tick(self) -> TickResult | None:
        """The belief work an act-first ``tick`` left: encode its newest transition, update
        the belief (and the change detector), and return the tick's complete result, the
        one the update-first order returns from ``tick`` itself (same fields, same belief;
        ``timings.deferred_s`` is this call). None when nothing is pending: the tick did the
        work itself (``step_mean``), it was already done, or there was no tick. If the caller
        skips it, the next ``tick``, ``end_episode``, ``begin_episode``, ``reset_belief`` or
        a read of ``belief``/``change_monitor`` does the work first (without building a
        result), so no transition is missed or counted twice. Never raises: an internal
        error is counted as ``tick_error`` and breaks the transition chain."""
        if self._deferred is None:
            return None
        try:
            return self._absorb(True)
        except Exception:  # noqa: BLE001 - like tick; _absorb has already cleared the work
            self._deferred = None
            return None

    def _absorb(self, build: bool) -> TickResult | None:
        """Do the pending belief work of the last act-first tick, then start the next
        transition at its observation, exactly where the update-first tick does both."""
        d = self._deferred
        if d is None:
            return None
        self._deferred = None
        m = self._m
        pc = time.perf_counter
        t0 = pc()
        why = ""
        t_enc = 0.0
        try:
            if d.reward is not None:
                why = self._update_belief(d.reward)
                t_enc = pc() - t0
            m.prev_valid = d.valid
            if d.valid:
                m.prev_obs[:] = m.obs
                m.prev_cmd[:] = m.cmd
        except Exception:  # noqa: BLE001 - a bug: counted, the chain broken, never raised
            why = TICK_ERROR
            m.prev_valid = False
        if why:
            self._ep_faults[why] += 1
        if not build:
            return None
        reasons = d.reasons
        if why:
            reasons = [*reasons[:d.split], why, *reasons[d.split:]]
        belief, r0 = m.belief, d.result
        t = r0.timings
        return r0._replace(fault=bool(reasons), reason=",".join(reasons),
                           command=m.cmd.copy(), z=m.z.copy(), belief_mean=belief.mean.copy(),
                           belief_var=belief.var.copy(), context_size=belief.count,
                           timings=TickTimings(t_enc, t.actor_s, t.total_s, pc() - t0),
                           deferred=False)

    def _tick(self, obs: Any, reward: Any, obs_age: Any, t0: float) -> TickResult:
        pc = time.perf_counter
        if self._deferred is not None:  # the caller did not call finish_tick
            self._absorb(False)
        if not self._in_episode:
            self.begin_episode()
        m = self._m
        reasons: list[str] = []
        why = self._read_obs(obs, obs_age)
        valid = not why
        if why:
            reasons.append(why)
        t_enc = 0.0
        act_first = self._act_first
        todo: float | None = None  # act-first: the reward whose transition is encoded later
        if reward is not None and self._step > 0:
            r = _real(reward)
            if r is None:
                reasons.append(REWARD_INVALID)  # the transition is skipped, like a NaN one
            else:
                if _isfinite(r):
                    self._ep_return += r
                if valid:
                    if act_first:  # _update_belief's own first checks, then its work later
                        if m.prev_valid:
                            if _isfinite(r):
                                todo = r
                            else:
                                reasons.append(REWARD_NONFINITE)
                    else:
                        t1 = pc()
                        why = self._update_belief(r)
                        t_enc = pc() - t1
                        if why:
                            reasons.append(why)
        split = len(reasons)
        if self._step_mean:
            m.set_z_from_belief()
        t_act = 0.0
        limited = False
        safe = True
        if valid:
            t2 = pc()
            m.obs32[0] = m.obs
            if self._stochastic:
                m.eps32[0] = self.rng.standard_normal(m.action_dim)
            try:
                m.actor.run()
                ok = True
            except Exception:  # noqa: BLE001 - the control loop must survive any error
                ok = False
                reasons.append(ACTOR_ERROR)
            t_act = pc() - t2
            if ok:
                action = m.action_out[0]
                if all(map(_isfinite, action.tolist())):
                    limited = m.safety.apply(action, m.cmd)
                    safe = False
                else:
                    reasons.append(ACTION_NONFINITE)
        if safe:
            m.safety.write_safe(m.cmd)
            self._ep_safe += 1
        if reasons:
            for r_ in reasons:
                self._ep_faults[r_] += 1
        step = self._step
        self._step = step + 1
        if self._validating:
            self._tick_done.set()
        belief = m.belief
        if act_first:  # the transition's encoding and the chain's next link: _absorb
            res = TickResult(m.cmd.copy(), safe, bool(reasons), ",".join(reasons), limited,
                             m.z.copy(), belief.mean.copy(), belief.var.copy(), belief.count,
                             self._episode, step, TickTimings(0.0, t_act, pc() - t0), True)
            self._deferred = _Deferred(res, todo, valid, reasons, split)
            return res
        # the transition that starts here: this obs and the command actually sent
        m.prev_valid = valid
        if valid:
            m.prev_obs[:] = m.obs
            m.prev_cmd[:] = m.cmd
        return TickResult(m.cmd.copy(), safe, bool(reasons), ",".join(reasons), limited,
                          m.z.copy(), belief.mean.copy(), belief.var.copy(), belief.count,
                          self._episode, step, TickTimings(t_enc, t_act, pc() - t0))

    def _failed_tick(self, t0: float) -> TickResult:
        """The answer when ``_tick`` itself raised (a bug, not bad data): the safe command,
        the transition chain broken, the fault counted. Reads nothing that may be broken
        without a fallback (the belief reports NaN when it cannot be read)."""
        m = self._m
        m.safety.write_safe(m.cmd)
        m.prev_valid = False
        self._ep_safe += 1
        self._ep_faults[TICK_ERROR] += 1
        if self._validating:
            self._tick_done.set()
        try:
            belief = m.belief
            mean, var, count = belief.mean.copy(), belief.var.copy(), int(belief.count)
        except Exception:  # noqa: BLE001
            mean = np.full(m.latent_dim, np.nan)
            var, count = mean.copy(), 0
        step = self._step
        self._step = step + 1
        return TickResult(m.cmd.copy(), True, True, TICK_ERROR, False, m.z.copy(), mean, var,
                          count, self._episode, step,
                          TickTimings(0.0, 0.0, time.perf_counter() - t0))

    # ------------------------------------------------------------------ hot-swap
    def request_swap(self, path: str | Path) -> bool:
        """Validate the bundle at ``path`` on a background thread; if it passes, it replaces
        the running one at the next ``begin_episode`` (with a fresh belief). False if a
        validation is already running (the request is ignored). A validation running longer
        than ``RuntimeConfig.swap_timeout`` is declared failed and abandoned, so it never
        blocks a later request."""
        with self._lock:
            self._expire_locked()
            if self._swap_thread is not None and self._swap_thread.is_alive() and \
                    self._swap.state == "validating":
                return False
            self._abandoned = [t for t in self._abandoned if t.is_alive()]
            if len(self._abandoned) >= MAX_ABANDONED_VALIDATIONS:
                self._swap = SwapStatus(
                    "failed", str(path), f"{len(self._abandoned)} earlier validations are "
                    f"still hung (reads that never return: a bundle on a dead mount?); not "
                    f"starting another until they end", None)
                return True
            self._swap_gen += 1
            self._swap = SwapStatus("validating", str(path), "", None)
            self._swap_started = time.monotonic()
            self._pending = None
            t = threading.Thread(target=self._validate, args=(Path(path), self._swap_gen),
                                 name="pearl-bundle-validate", daemon=True)
            self._swap_thread = t
            self._validating = True
        t.start()
        return True

    def _expire_locked(self) -> None:
        """Caller holds the lock: a validation past its deadline becomes ``failed``."""
        if self._swap.state != "validating" or \
                time.monotonic() - self._swap_started <= self.config.swap_timeout:
            return
        self._swap = SwapStatus("failed", self._swap.path,
                                f"validation did not finish within "
                                f"{self.config.swap_timeout:g} s (a file that blocks on read, "
                                f"a hung mount?); abandoned, the running bundle stays", None)
        self._swap_gen += 1  # whatever the hung thread finds later is dropped
        self._validating = False
        if self._swap_thread is not None:
            self._abandoned.append(self._swap_thread)
            self._swap_thread = None

    def _after_tick(self) -> None:
        """Validation thread: wait (up to one control period) until a tick has just ended,
        so a GIL-holding step (session creation, ~2 ms) runs in the idle rest of the period
        instead of delaying a tick. Without ticks (robot idle) it just goes on."""
        self._tick_done.clear()
        self._tick_done.wait(self._m.contract.control_period)

    def _validate(self, path: Path, gen: int) -> None:
        def report(status: SwapStatus, model: _Model | None = None) -> None:
            with self._lock:
                if gen != self._swap_gen:
                    return  # expired (or superseded): its result is dropped
                self._swap = status
                self._pending = model
                self._validating = False

        try:
            bundle = load_bundle(path, self.robot, yield_point=self._after_tick)
            check_compatible(self._m.contract, bundle.contract)
            if bundle.sha256 == self._m.bundle.sha256:
                # same model: nothing to swap, keep the belief
                report(SwapStatus("unchanged", str(path), "candidate is the running bundle; "
                                  "nothing to swap", bundle.sha256))
                return
            self._after_tick()
            model = _Model(bundle, self.config)
        except (BundleError, ConfigError) as exc:
            report(SwapStatus("failed", str(path), str(exc), None))
            return
        except Exception as exc:  # noqa: BLE001 - report, never kill the caller
            report(SwapStatus("failed", str(path), f"unexpected {type(exc).__name__}: {exc}",
                              None))
            return
        report(SwapStatus("ready", str(path), "validated; swaps at the next episode",
                          bundle.sha256), model)

    def swap_status(self) -> SwapStatus:
        with self._lock:
            self._expire_locked()
            return self._swap

    def wait_for_validation(self, timeout: float | None = None) -> SwapStatus:
        """Block until a running validation ends or times out (tests, CLI tools; never the
        control loop); never longer than the validation's remaining ``swap_timeout``."""
        with self._lock:
            t = self._swap_thread
            left = self.config.swap_timeout - (time.monotonic() - self._swap_started)
        if t is not None:
            wait = max(left, 0.0) + 0.01
            t.join(wait if timeout is None else min(timeout, wait))
        return self.swap_status()

    def close(self) -> None:
        """Wait for a running validation thread (sessions are released with the object)."""
        self.wait_for_validation()
