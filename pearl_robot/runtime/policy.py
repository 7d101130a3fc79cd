"""The robot-side policy: one object the 20 Hz control loop calls once per tick.

API (everything a ROS node or a plain loop needs)::

    rt = PolicyRuntime("models/arm", RuntimeConfig(), rng=np.random.default_rng(0),
                       robot=RobotExpectation.from_robot_spec(load_robot_spec()))
    start = rt.begin_episode(task="goal-3")     # z for this episode; swaps a validated bundle
    while running:
        out = rt.tick(obs, reward, obs_age=age)  # -> TickResult; send out.command
    summary = rt.end_episode(final_obs, reward)  # absorbs the last transition
    rt.request_swap("models/arm-new")            # validated on a thread, swapped at the next
    rt.swap_status()                             # begin_episode; the old model stays on failure
    rt.reset_belief()                            # e.g. on an operator request

Per tick, ``tick(obs, reward, obs_age)``:

1. checks the observation (shape, finite, age <= ``max_obs_age``);
2. encodes the newest transition (previous obs, previous command, ``reward``, this obs) with
   ``encoder.onnx`` and multiplies its factor into the :class:`OnlineBelief` (O(latent));
3. picks z by the schedule (``episode``: drawn from the belief at ``begin_episode``;
   ``step_mean``: the belief mean, every tick; ``fixed``: a given vector);
4. runs ``actor.onnx`` on (obs, z [, eps]) and passes the command through
   :class:`ActionSafety` (clip, rate limit; non-finite -> safe command).

``reward`` is the *context* reward of the transition that ended in ``obs`` (the family's
``context_reward_key`` value when the contract names one, the task reward otherwise); it is
ignored on the first tick of an episode. A transition enters the belief only when both of its
observations were valid and its reward is finite; a bad one is skipped and flagged, never
fed to the encoder. The command that entered the context is the one actually sent.

Faults never raise from ``tick``: the tick returns the safe command with ``safe=True`` and the
reasons in ``reason``, and the loop goes on. Reproducibility: ``rng`` is drawn from only at
``begin_episode`` (``latent_dim`` standard normals, schedule ``episode`` with the information
bottleneck) and per actor call when ``stochastic_actions`` (``action_dim`` standard normals),
and, with change detection on, once per detected change (schedule ``episode``: z is redrawn
from the rebuilt belief).

Change detection (``RuntimeConfig.change_detection``, off by default) hooks into step 2 only:
each new factor is scored against the belief before it is multiplied in, and a detected change
rebuilds the belief from the transitions after the change point
(:mod:`pearl_robot.runtime.change_detection`); ``change_monitor.status()`` says what it saw.

Arrays in a :class:`TickResult` are fresh copies (safe to keep). The control path allocates
nothing bigger than these small vectors: feeds are preallocated float32 buffers reused every
tick. No torch, no rclpy.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from pearl_robot.errors import ConfigError
from pearl_robot.runtime.belief import OnlineBelief
from pearl_robot.runtime.bundle import (
    ACTOR_OUTPUTS,
    ENCODER_OUTPUTS,
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


def _to_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan

# fault reasons (TickResult.reason is a comma-joined list of these)
OBS_SHAPE = "obs_shape"
OBS_NONFINITE = "obs_nonfinite"
OBS_STALE = "obs_stale"
REWARD_NONFINITE = "reward_nonfinite"
ENCODER_NONFINITE = "encoder_nonfinite"
ENCODER_ERROR = "encoder_error"
ACTION_NONFINITE = "action_nonfinite"
ACTOR_ERROR = "actor_error"
UNSAFE_REASONS = frozenset({OBS_SHAPE, OBS_NONFINITE, OBS_STALE, ACTION_NONFINITE, ACTOR_ERROR})
"""Reasons that replace the command with the safe command (the others only skip a belief
update)."""


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
    change_detection: ChangeDetectionConfig = ChangeDetectionConfig()
    """Online detection of a task change within the stream (``runtime.change_detection``):
    off by default; on a detected change the belief is rebuilt from the transitions after
    the change point (schedule ``episode`` then redraws z from the rebuilt belief)."""

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


class TickTimings(NamedTuple):
    """Where one tick's time went (seconds, perf_counter)."""

    encoder_s: float
    """Building the context row + encoder.onnx + belief update (0 when skipped)."""
    actor_s: float
    """actor.onnx."""
    total_s: float
    """The whole ``tick`` call."""


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
        self.obs32 = np.zeros((1, o), dtype=np.float32)
        self.z32 = np.zeros((1, L), dtype=np.float32)
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
        self.encoder = BoundGraph(bundle.encoder, {"transition": self.row32},
                                  {ENCODER_OUTPUTS[0]: self.mu_out,
                                   ENCODER_OUTPUTS[1]: self.var_out})
        self.slices: dict[str, slice] = {}
        start = 0
        for f in c.context_fields:
            self.slices[f.name] = slice(start, start + f.size)
            start += f.size
        self.s_obs, self.s_action = self.slices["obs"], self.slices["action"]
        self.i_reward = self.slices["reward"].start
        self.s_next = self.slices.get("next_obs")
        self.latent_dim = L
        self.action_dim = a
        window = c.recommended_window if cfg.context_window is None else cfg.context_window
        self.belief = OnlineBelief(L, window or None, cfg.forgetting, c.includes_prior)
        cd = cfg.change_detection
        self.monitor = None
        if cd.enabled:  # transitions are compared by their normalized (obs, command)
            self.monitor = BeliefChangeMonitor(cd, L, c.control_period, key_dim=o + a)
            lo = np.concatenate([c.obs_low if c.obs_low is not None else -np.ones(o),
                                 c.action_low])
            hi = np.concatenate([c.obs_high if c.obs_high is not None else np.ones(o),
                                 c.action_high])
            self.key_center = 0.5 * (hi + lo)
            self.key_inv = 2.0 / np.maximum(hi - lo, 1e-12)
            self.key = np.zeros(o + a)
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
            if fz.shape != (L,) or not np.all(np.isfinite(fz)):
                raise ConfigError(f"RuntimeConfig.fixed_z must be {L} finite numbers for this "
                                  f"bundle, got {cfg.fixed_z!r}")
            self.fixed_z = fz
        self.max_obs_age = cfg.max_obs_age if cfg.max_obs_age is not None \
            else 2.0 * c.control_period
        # per-tick state
        self.z = np.zeros(L)
        self.prev_obs = np.zeros(o)
        self.prev_cmd = np.zeros(a)
        self.prev_valid = False
        self.cmd = np.zeros(a)
        self.obs = np.zeros(o)


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
        # set at the end of every tick while a validation runs (see _after_tick)
        self._tick_done = threading.Event()
        self._validating = False

    # ------------------------------------------------------------------ properties
    @property
    def bundle(self) -> Bundle:
        """The bundle driving the robot now."""
        return self._m.bundle

    @property
    def belief(self) -> OnlineBelief:
        """The online belief (live; read-only use)."""
        return self._m.belief

    @property
    def change_monitor(self) -> BeliefChangeMonitor | None:
        """The running model's change detector (None when off). Read its ``status()`` after a
        tick; count events by ``status().changes`` (``changed`` is about the newest scored
        transition only)."""
        return self._m.monitor

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
        """Forget the context: the belief is the prior again; exploration episodes restart."""
        self._m.belief.reset()
        if self._m.monitor is not None:
            self._m.monitor.reset()
        self._episodes_since_reset = 0

    def begin_episode(self, task: Any = None) -> EpisodeStart:
        """Start an episode: swap in a validated bundle, reset the belief on a task change,
        draw this episode's z. Ends a running episode first (its summary is dropped)."""
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
            m.z[:] = m.belief.mean
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
        then enters the belief (no command is computed)."""
        m = self._m
        if self._in_episode and final_obs is not None and reward is not None:
            r = _to_float(reward)
            if _isfinite(r):
                self._ep_return += r
            if not self._read_obs(final_obs, None):
                self._update_belief(r)
        self._in_episode = False
        m.prev_valid = False
        return EpisodeSummary(self._episode, self._task if self._have_task else None,
                              self._step, self._ep_return, self._ep_safe,
                              dict(self._ep_faults), m.belief.count, m.belief.mean.copy(),
                              m.belief.var.copy(), m.bundle.sha256)

    # ------------------------------------------------------------------ the tick
    def _read_obs(self, obs: Any, obs_age: float | None) -> str:
        """Copy a valid obs into the model's buffer; "" or the fault reason."""
        m = self._m
        try:
            arr = np.asarray(obs, dtype=np.float64)
        except (TypeError, ValueError):
            return OBS_SHAPE
        if arr.shape != m.obs.shape:
            if arr.size != m.obs.size:
                return OBS_SHAPE
            arr = arr.reshape(m.obs.shape)
        if not all(map(_isfinite, arr.tolist())):  # fastest check for a few entries
            return OBS_NONFINITE
        if obs_age is not None and not (obs_age <= m.max_obs_age):  # NaN age is stale too
            return OBS_STALE
        m.obs[:] = arr
        return ""

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
        """One control tick (see module doc). Never raises for bad data."""
        pc = time.perf_counter
        t0 = pc()
        if not self._in_episode:
            self.begin_episode()
        m = self._m
        reasons: list[str] = []
        why = self._read_obs(obs, obs_age)
        valid = not why
        if why:
            reasons.append(why)
        t_enc = 0.0
        if reward is not None and self._step > 0:
            r = _to_float(reward)
            if _isfinite(r):
                self._ep_return += r
            if valid:
                t1 = pc()
                why = self._update_belief(r)
                t_enc = pc() - t1
                if why:
                    reasons.append(why)
        if self._step_mean:
            m.z[:] = m.belief.mean
            m.z32[0] = m.z
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
        # the transition that starts here: this obs and the command actually sent
        m.prev_valid = valid
        if valid:
            m.prev_obs[:] = m.obs
            m.prev_cmd[:] = m.cmd
        step = self._step
        self._step = step + 1
        if self._validating:
            self._tick_done.set()
        belief = m.belief
        return TickResult(m.cmd.copy(), safe, bool(reasons), ",".join(reasons), limited,
                          m.z.copy(), belief.mean.copy(), belief.var.copy(), belief.count,
                          self._episode, step, TickTimings(t_enc, t_act, pc() - t0))

    # ------------------------------------------------------------------ hot-swap
    def request_swap(self, path: str | Path) -> bool:
        """Validate the bundle at ``path`` on a background thread; if it passes, it replaces
        the running one at the next ``begin_episode`` (with a fresh belief). False if a
        validation is already running (the request is ignored)."""
        with self._lock:
            if self._swap_thread is not None and self._swap_thread.is_alive():
                return False
            self._swap = SwapStatus("validating", str(path), "", None)
            self._pending = None
            t = threading.Thread(target=self._validate, args=(Path(path),),
                                 name="pearl-bundle-validate", daemon=True)
            self._swap_thread = t
        t.start()
        return True

    def _after_tick(self) -> None:
        """Validation thread: wait (up to one control period) until a tick has just ended,
        so a GIL-holding step (session creation, ~2 ms) runs in the idle rest of the period
        instead of delaying a tick. Without ticks (robot idle) it just goes on."""
        self._tick_done.clear()
        self._tick_done.wait(self._m.contract.control_period)

    def _validate(self, path: Path) -> None:
        self._validating = True
        try:
            bundle = load_bundle(path, self.robot, yield_point=self._after_tick)
            check_compatible(self._m.contract, bundle.contract)
            if bundle.sha256 == self._m.bundle.sha256:
                with self._lock:  # same model: nothing to swap, keep the belief
                    self._swap = SwapStatus("unchanged", str(path), "candidate is the running "
                                            "bundle; nothing to swap", bundle.sha256)
                return
            self._after_tick()
            model = _Model(bundle, self.config)
        except (BundleError, ConfigError) as exc:
            with self._lock:
                self._swap = SwapStatus("failed", str(path), str(exc), None)
            return
        except Exception as exc:  # noqa: BLE001 - report, never kill the caller
            with self._lock:
                self._swap = SwapStatus("failed", str(path),
                                        f"unexpected {type(exc).__name__}: {exc}", None)
            return
        finally:
            self._validating = False
        with self._lock:
            self._pending = model
            self._swap = SwapStatus("ready", str(path), "validated; swaps at the next episode",
                                    bundle.sha256)

    def swap_status(self) -> SwapStatus:
        with self._lock:
            return self._swap

    def wait_for_validation(self, timeout: float | None = None) -> SwapStatus:
        """Block until a running validation ends (tests, CLI tools; never the control loop)."""
        t = self._swap_thread
        if t is not None:
            t.join(timeout)
        return self.swap_status()

    def close(self) -> None:
        """Wait for a running validation thread (sessions are released with the object)."""
        self.wait_for_validation()
