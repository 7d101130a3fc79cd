"""The physics-only twin of the default robot (sim/arm3.xml): what the firmware emulator and the
ROS twin node run, and what :class:`pearl_robot.twin.twin_arm_env.TwinArmEnv` wraps with a reward.

It behaves like the robot's motor controller seen from the bus: you send an effort command per
joint (N*m, spec joint order, clipped to the limits), time passes (``advance``), you read
joint positions, velocities and efforts back, with the task's sensor noise. The command reaches
the joints ``latency_s`` after it was sent (whole physics steps, so the result does not depend
on how ``advance`` is chunked).

Physical parameters (payload, friction, damping, motor strength, latency, noise) follow
:data:`pearl_robot.robot.randomization.ARM3_PHYSICS_SPEC`; :func:`apply_arm_params` writes them
into the compiled model by name (``mj_name2id``), from nominal values copied once.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import mujoco
import numpy as np

from pearl_robot.errors import PearlRobotError
from pearl_robot.robot.description import RobotSpec, default_mjcf_path, load_robot_spec
from pearl_robot.robot.randomization import ARM3_NOMINAL_PARAMS, ARM3_PHYSICS_SPEC, check_params

PAYLOAD_BODY = "payload"
PAYLOAD_RADIUS = 0.025
"""The payload is a solid sphere of this radius (m) for its inertia."""
EE_SITE = "ee"
HOME_KEY = "home"


class TwinError(PearlRobotError):
    """The twin was given a command or parameter it cannot honour (the message says which)."""


class JointSample(NamedTuple):
    """One reading of the joints, spec joint order, SI units (what /joint_states carries)."""

    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True)
class NominalPhysics:
    """The compiled model's values that randomization scales, copied once at load."""

    joint_ids: np.ndarray
    dof_ids: np.ndarray
    actuator_ids: np.ndarray
    payload_body: int
    frictionloss: np.ndarray
    damping: np.ndarray
    gear: np.ndarray
    payload_mass: float

    @classmethod
    def from_model(cls, model: mujoco.MjModel, spec: RobotSpec) -> NominalPhysics:
        jids, dids, aids = [], [], []
        for j in spec.joint_names:
            jid = _name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)
            aid = _name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, j)
            if model.actuator_trnid[aid, 0] != jid:
                raise TwinError(f"actuator {j!r} does not drive joint {j!r}")
            jids.append(jid)
            dids.append(int(model.jnt_dofadr[jid]))
            aids.append(aid)
        if aids != sorted(aids) or aids != list(range(len(aids))):
            raise TwinError(f"actuators must be declared in joint order {spec.joint_names}")
        body = _name2id(model, mujoco.mjtObj.mjOBJ_BODY, PAYLOAD_BODY)
        d = np.array(dids)
        a = np.array(aids)
        return cls(np.array(jids), d, a, body, model.dof_frictionloss[d].copy(),
                   model.dof_damping[d].copy(), model.actuator_gear[a, 0].copy(),
                   float(model.body_mass[body]))


def _name2id(model: mujoco.MjModel, obj: mujoco.mjtObj, name: str) -> int:
    i = mujoco.mj_name2id(model, obj, name)
    if i < 0:
        raise TwinError(f"the model has no {obj.name.removeprefix('mjOBJ_').lower()} "
                        f"named {name!r}")
    return int(i)


def resolve_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Nominal values overlaid with ``params``; unknown keys or out-of-spec values raise.

    ``payload_mass`` may exceed the task spec (an emulator may carry anything) but must be >= 0.
    """
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in ARM3_NOMINAL_PARAMS.items()}
    if params:
        unknown = sorted(set(params) - set(out))
        if unknown:
            raise TwinError(f"unknown twin parameter(s) {unknown}; known: {sorted(out)}")
        out.update(params)
    for p in ARM3_PHYSICS_SPEC:
        v = np.atleast_1d(np.asarray(out[p.name], dtype=np.float64))
        if v.shape != (p.size,) or not np.all(np.isfinite(v)) or np.any(v < 0):
            raise TwinError(f"twin parameter {p.name}={out[p.name]!r} must be {p.size} finite "
                            "non-negative number(s)")
    return out


def apply_arm_params(model: mujoco.MjModel, data: mujoco.MjData, nominal: NominalPhysics,
                     params: dict[str, Any]) -> None:
    """Write physical parameters into ``model`` in place (from the nominal copy, so repeated
    calls never compound), then recompute the derived constants."""
    d, a = nominal.dof_ids, nominal.actuator_ids
    model.dof_frictionloss[d] = nominal.frictionloss * np.asarray(params["friction_scale"])
    model.dof_damping[d] = nominal.damping * np.asarray(params["damping_scale"])
    model.actuator_gear[a, 0] = nominal.gear * np.asarray(params["strength_scale"])
    mass = float(params["payload_mass"])
    model.body_mass[nominal.payload_body] = mass
    model.body_inertia[nominal.payload_body] = 0.4 * mass * PAYLOAD_RADIUS ** 2
    mujoco.mj_setConst(model, data)


def physics_problems(params: dict[str, Any]) -> list[str]:
    """Where ``params`` leaves the task-family spec (empty: inside it)."""
    return check_params(ARM3_PHYSICS_SPEC, params)


class ArmTwin:
    """The arm's physics behind a motor-controller-like interface (no reward, no task)."""

    def __init__(self, params: dict[str, Any] | None = None, seed: int | None = None,
                 mjcf_path: str | Path | None = None) -> None:
        path = Path(mjcf_path) if mjcf_path is not None else default_mjcf_path()
        self.spec: RobotSpec = load_robot_spec(path)
        try:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        except ValueError as exc:
            raise TwinError(f"MuJoCo cannot compile {path}: {exc}") from None
        self.data = mujoco.MjData(self.model)
        self.nominal = NominalPhysics.from_model(self.model, self.spec)
        self._dt = float(self.model.opt.timestep)
        self._effort_max = np.array(self.spec.effort_limits())
        self._home = self.model.key(HOME_KEY).qpos[self.nominal.joint_ids].copy() \
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_KEY, HOME_KEY) >= 0 \
            else np.zeros(self.spec.n_joints)
        self._ee_site = _name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, EE_SITE)
        self._rng = np.random.default_rng(seed)
        self._pending: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._substep = 0
        self._last = JointSample(np.zeros(3), np.zeros(3), np.zeros(3))
        self.params: dict[str, Any] = {}
        self.set_params(params)
        self.reset()

    # -- parameters ----------------------------------------------------------------------------
    def set_params(self, params: dict[str, Any] | None) -> None:
        """Change the physical parameters now (the state is kept; a task change calls reset)."""
        self.params = resolve_params(params)
        d = self.data
        qpos, qvel, act, t = d.qpos.copy(), d.qvel.copy(), d.act.copy(), d.time
        apply_arm_params(self.model, d, self.nominal, self.params)
        # mj_setConst works on qpos0 in ``data``: put the state back (a mid-episode switch)
        d.qpos[:], d.qvel[:], d.act[:], d.time = qpos, qvel, act, t
        mujoco.mj_forward(self.model, d)
        self.latency_steps = int(round(float(self.params["latency_s"]) / self._dt))
        self._pos_std = float(self.params["position_noise_std"])
        self._vel_std = float(self.params["velocity_noise_std"])

    def seed(self, seed: int | None) -> None:
        """Reseed the sensor-noise generator."""
        self._rng = np.random.default_rng(seed)

    @property
    def home(self) -> np.ndarray:
        """The rest pose (MJCF keyframe "home")."""
        return self._home.copy()

    @property
    def physics_dt(self) -> float:
        return self._dt

    @property
    def time(self) -> float:
        """Simulated seconds since the last reset."""
        return self._substep * self._dt

    # -- motion ----------------------------------------------------------------------------------
    def reset(self, qpos: np.ndarray | None = None,
              qvel: np.ndarray | None = None) -> JointSample:
        """Put the arm at ``qpos`` (default: home) at rest with zero command."""
        mujoco.mj_resetData(self.model, self.data)
        q = self.home if qpos is None else self._vector(qpos, "qpos")
        self.data.qpos[self.nominal.joint_ids] = q
        if qvel is not None:
            self.data.qvel[self.nominal.dof_ids] = self._vector(qvel, "qvel")
        self.data.ctrl[:] = 0.0
        self._pending.clear()
        self._substep = 0
        mujoco.mj_forward(self.model, self.data)
        self._last = self._measure()
        return self._last

    def apply_command(self, effort: np.ndarray) -> None:
        """Send one effort command (N*m per joint, clipped to the limits). A command with the
        wrong shape or a non-finite value is refused: the joints get zero effort (a safe
        command) and :class:`TwinError` says why."""
        e = np.asarray(effort, dtype=np.float64).reshape(-1)
        if e.shape != (self.spec.n_joints,) or not np.all(np.isfinite(e)):
            self._pending.clear()
            self.data.ctrl[:] = 0.0
            raise TwinError(f"effort command must be {self.spec.n_joints} finite values "
                            f"({', '.join(self.spec.joint_names)}), got {effort!r}; "
                            "holding zero effort")
        e = np.clip(e, -self._effort_max, self._effort_max)
        self._pending.append((self._substep + self.latency_steps, e))

    def advance(self, duration_s: float) -> JointSample:
        """Simulate ``duration_s`` seconds (rounded to physics steps) and read the sensors."""
        if not duration_s >= 0:
            raise TwinError(f"advance duration must be >= 0 s, got {duration_s}")
        remaining = int(round(duration_s / self._dt))
        m, d, pending = self.model, self.data, self._pending
        while remaining > 0:
            while pending and pending[0][0] <= self._substep:
                d.ctrl[self.nominal.actuator_ids] = pending.popleft()[1]
            n = remaining if not pending else min(remaining, pending[0][0] - self._substep)
            mujoco.mj_step(m, d, n)
            self._substep += n
            remaining -= n
        self._last = self._measure()
        return self._last

    def state(self) -> JointSample:
        """The latest sensor reading (noise drawn once per reading, so repeated calls agree)."""
        return self._last

    def true_state(self) -> JointSample:
        """Noise-free joint state (for rewards and tests; a real robot has no such thing)."""
        return JointSample(self.data.qpos[self.nominal.joint_ids].copy(),
                           self.data.qvel[self.nominal.dof_ids].copy(),
                           self.data.qfrc_actuator[self.nominal.dof_ids].copy())

    def ee_position(self) -> np.ndarray:
        """World position of the tool flange (site "ee"), m."""
        return self.data.site_xpos[self._ee_site].copy()

    def _measure(self) -> JointSample:
        d, dof = self.data, self.nominal.dof_ids
        n = self.spec.n_joints
        pos = d.qpos[self.nominal.joint_ids]  # fancy indexing copies
        vel = d.qvel[dof]
        if self._pos_std > 0:
            pos += self._rng.normal(0.0, self._pos_std, n)
        if self._vel_std > 0:
            vel += self._rng.normal(0.0, self._vel_std, n)
        return JointSample(pos, vel, d.qfrc_actuator[dof])

    def _vector(self, v: Any, what: str) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
        if a.shape != (self.spec.n_joints,) or not np.all(np.isfinite(a)):
            raise TwinError(f"{what} must be {self.spec.n_joints} finite values, got {v!r}")
        return a
