"""PEARL's MuJoCo benchmark environments (oyster ``rlkit/envs``, ``rand_param_envs``) on the
``mujoco`` package, with the reference's observations, rewards and termination.

- cheetah-vel: obs qpos[1:] (8), qvel (9), torso xpos (3) = 20;
  reward -abs(v_x - v_goal) - 0.05 ||a||^2; never terminates.
- cheetah-dir: same 20-D obs; reward d * v_x - 0.05 ||a||^2 with d in {-1, +1}.
- ant-dir: obs qpos[2:] (13), qvel (14) = 27; reward v_xy . (cos t, sin t) - 0.5 ||a||^2
  - contact + 1; terminated when torso z leaves [0.2, 1] or the state is not finite.
- ant-goal: obs qpos (15), qvel (14), clip(cfrc_ext, -1, 1) (14 bodies x 6 = 84) = 113;
  reward -||xy - g||_1 - 0.1 ||a||^2 - contact; never terminates.
- humanoid-dir: gym v2 Humanoid obs qpos[2:], qvel, cinert, cvel, qfrc_actuator, cfrc_ext = 376;
  reward 0.25 dir . d(com_xy) / timestep - 0.1 ||ctrl||^2 - min(0.5e-6 ||cfrc_ext||^2, 10) + 5;
  terminated when qpos z leaves [1, 2].
- walker-rand-params: obs qpos[1:] (8), clip(qvel, -10, 10) (9) = 17; reward dx/dt + 1
  - 1e-3 ||a||^2; terminated unless 0.8 < height < 2 and abs(angle) < 1.
- hopper-rand-params: obs qpos[1:] (5), clip(qvel, -10, 10) (6) = 11; same reward; gym Hopper
  health (finite, abs(s[2:]) < 100, height > 0.7, abs(angle) < 0.2).

v_x = (x_after - x_before) / dt with x = qpos[0]; contact = 0.5e-3 ||clip(cfrc_ext, -1, 1)||^2
with ``cfrc_ext`` filled by ``mj_rnePostConstraint``. ``dt`` = timestep x frame_skip (0.05 s for
cheetah and ant, 0.015 humanoid, 0.01 walker, 0.008 hopper). Humanoid-dir divides by
``model.opt.timestep`` as the reference does (a 5x scale on its velocity term).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from pearl_robot.tasks.base import Task
from pearl_robot.twin.arm import TwinError
from pearl_robot.twin.mujoco_env import MujocoMetaEnv, state_names

CONTACT_COST = 0.5e-3


def _body(model: mujoco.MjModel, name: str) -> int:
    i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
    if i < 0:
        raise TwinError(f"model has no body named {name!r}")
    return int(i)


def _param(task: Task, key: str) -> Any:
    if key not in task.params:
        raise TwinError(f"task {task.index} has no {key!r} parameter (has {sorted(task.params)})")
    return task.params[key]


# ---------------------------------------------------------------------------------------------
# Half-cheetah


class HalfCheetahMetaEnv(MujocoMetaEnv):
    """Half-cheetah with oyster's 20-D observation; the subclasses set the reward."""

    model_file = "half_cheetah.xml"
    frame_skip = 5

    def _setup(self) -> None:
        self._torso = _body(self.model, "torso")
        qpos, qvel = state_names(self.model)
        self.obs_names = tuple(qpos[1:] + qvel + ["torso.com_x", "torso.com_y", "torso.com_z"])

    def _get_obs(self) -> np.ndarray:
        d = self.data
        return np.concatenate([d.qpos[1:], d.qvel, d.xpos[self._torso]])

    def _before(self) -> float:
        return float(self.data.qpos[0])

    def forward_velocity(self, x_before: float) -> float:
        return (float(self.data.qpos[0]) - x_before) / self.control_period


class HalfCheetahVelEnv(HalfCheetahMetaEnv):
    """Run at a hidden target velocity (m/s)."""

    def _apply_task(self, task: Task) -> None:
        self.goal_velocity = float(_param(task, "velocity"))

    def _reward(self, before: float, action: np.ndarray) -> tuple[float, dict[str, float], bool]:
        v = self.forward_velocity(before)
        parts = {"velocity": -abs(v - self.goal_velocity),
                 "control": -0.05 * float(np.sum(action ** 2))}
        return parts["velocity"] + parts["control"], parts, False


class HalfCheetahDirEnv(HalfCheetahMetaEnv):
    """Run forward (+1) or backward (-1)."""

    def _apply_task(self, task: Task) -> None:
        self.goal_direction = float(_param(task, "direction"))

    def _reward(self, before: float, action: np.ndarray) -> tuple[float, dict[str, float], bool]:
        v = self.forward_velocity(before)
        parts = {"velocity": self.goal_direction * v,
                 "control": -0.05 * float(np.sum(action ** 2))}
        return parts["velocity"] + parts["control"], parts, False


# ---------------------------------------------------------------------------------------------
# Ant


def contact_cost(data: mujoco.MjData) -> float:
    return CONTACT_COST * float(np.sum(np.clip(data.cfrc_ext, -1.0, 1.0) ** 2))


class AntMetaEnv(MujocoMetaEnv):
    """gym's ant (RK4, 0.01 s, gear 150, frame skip 5) with contact forces computed."""

    model_file = "ant.xml"
    frame_skip = 5
    needs_contact_forces = True

    def _setup(self) -> None:
        self._torso = _body(self.model, "torso")

    def _torso_xyz(self) -> np.ndarray:
        return self.data.xpos[self._torso].copy()


class AntDirEnv(AntMetaEnv):
    """Run in a hidden direction (angle in rad)."""

    def _setup(self) -> None:
        super()._setup()
        qpos, qvel = state_names(self.model)
        self.obs_names = tuple(qpos[2:] + qvel)

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[2:], self.data.qvel])

    def _apply_task(self, task: Task) -> None:
        angle = float(_param(task, "direction"))
        self.goal_direction = np.array([np.cos(angle), np.sin(angle)])

    def _before(self) -> np.ndarray:
        return self._torso_xyz()

    def _reward(self, before: np.ndarray, action: np.ndarray
                ) -> tuple[float, dict[str, float], bool]:
        velocity = (self._torso_xyz() - before)[:2] / self.control_period
        parts = {"forward": float(velocity @ self.goal_direction),
                 "control": -0.5 * float(np.sum(action ** 2)),
                 "contact": -contact_cost(self.data), "survive": 1.0}
        z = self.data.qpos[2]
        healthy = bool(np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all()
                       and 0.2 <= z <= 1.0)
        return sum(parts.values()), parts, not healthy


class AntGoalEnv(AntMetaEnv):
    """Walk to a hidden goal on the plane; observation includes clipped contact forces."""

    def _setup(self) -> None:
        super()._setup()
        qpos, qvel = state_names(self.model)
        bodies = [self.model.body(i).name or f"body{i}" for i in range(self.model.nbody)]
        self.obs_names = tuple(qpos + qvel + [f"{b}.cfrc_ext{k}" for b in bodies
                                              for k in range(6)])

    def _get_obs(self) -> np.ndarray:
        d = self.data
        return np.concatenate([d.qpos, d.qvel, np.clip(d.cfrc_ext, -1.0, 1.0).ravel()])

    def _apply_task(self, task: Task) -> None:
        self.goal = np.asarray(_param(task, "goal"), dtype=np.float64)

    def _reward(self, before: Any, action: np.ndarray) -> tuple[float, dict[str, float], bool]:
        xy = self._torso_xyz()[:2]
        parts = {"goal": -float(np.sum(np.abs(xy - self.goal))),
                 "control": -0.1 * float(np.sum(action ** 2)),
                 "contact": -contact_cost(self.data)}
        return sum(parts.values()), parts, False


# ---------------------------------------------------------------------------------------------
# Humanoid


class HumanoidDirEnv(MujocoMetaEnv):
    """Walk in a hidden direction; gym v2 Humanoid observation (376-D)."""

    model_file = "humanoid.xml"
    frame_skip = 5
    needs_contact_forces = True

    def _setup(self) -> None:
        self._mass = self.model.body_mass.copy()[:, None]
        qpos, qvel = state_names(self.model)
        bodies = [self.model.body(i).name or f"body{i}" for i in range(self.model.nbody)]
        self.obs_names = tuple(
            qpos[2:] + qvel + [f"{b}.cinert{k}" for b in bodies for k in range(10)]
            + [f"{b}.cvel{k}" for b in bodies for k in range(6)]
            + [f"{q}.qfrc_actuator" for q in qvel]
            + [f"{b}.cfrc_ext{k}" for b in bodies for k in range(6)])

    def _get_obs(self) -> np.ndarray:
        d = self.data
        return np.concatenate([d.qpos[2:], d.qvel, d.cinert.ravel(), d.cvel.ravel(),
                               d.qfrc_actuator, d.cfrc_ext.ravel()])

    def reset_model(self) -> None:
        c = 0.01
        self.set_state(self.init_qpos + self._rng.uniform(-c, c, self.model.nq),
                       self.init_qvel + self._rng.uniform(-c, c, self.model.nv))

    def _apply_task(self, task: Task) -> None:
        angle = float(_param(task, "direction"))
        self.goal_direction = np.array([np.cos(angle), np.sin(angle)])

    def mass_center(self) -> np.ndarray:
        return (np.sum(self._mass * self.data.xipos, axis=0) / np.sum(self._mass))[:2]

    def _before(self) -> np.ndarray:
        return self.mass_center()

    def _reward(self, before: np.ndarray, action: np.ndarray
                ) -> tuple[float, dict[str, float], bool]:
        # xipos is from the last substep's forward pass, before and after, as in mujoco-py
        after = self.mass_center()
        d = self.data
        parts = {"forward": 0.25 * float(self.goal_direction @ (after - before))
                 / float(self.model.opt.timestep),
                 "control": -0.1 * float(np.sum(d.ctrl ** 2)),
                 "impact": -min(0.5e-6 * float(np.sum(d.cfrc_ext ** 2)), 10.0),
                 "alive": 5.0}
        z = d.qpos[2]
        return sum(parts.values()), parts, bool(z < 1.0 or z > 2.0)


# ---------------------------------------------------------------------------------------------
# Walker / hopper with random physical parameters (rand_param_envs)

RAND_PARAM_FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction")


class RandParamsEnv(MujocoMetaEnv):
    """Physics multipliers per element (task params ``<field>_scale``), from nominal copies."""

    def _setup(self) -> None:
        self.nominal = {f: getattr(self.model, f).copy() for f in RAND_PARAM_FIELDS}
        qpos, qvel = state_names(self.model)
        self.obs_names = tuple(qpos[1:] + qvel)

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[1:], np.clip(self.data.qvel, -10.0, 10.0)])

    def reset_model(self) -> None:
        c = 0.005
        self.set_state(self.init_qpos + self._rng.uniform(-c, c, self.model.nq),
                       self.init_qvel + self._rng.uniform(-c, c, self.model.nv))

    def _apply_task(self, task: Task) -> None:
        for f in RAND_PARAM_FIELDS:
            scale = np.asarray(_param(task, f + "_scale"), dtype=np.float64)
            if scale.shape != self.nominal[f].shape or not np.all(np.isfinite(scale)):
                raise TwinError(f"task {task.index}: {f}_scale must have shape "
                                f"{self.nominal[f].shape}, got {scale.shape}")
            getattr(self.model, f)[:] = self.nominal[f] * scale
        mujoco.mj_setConst(self.model, self.data)

    def _before(self) -> float:
        return float(self.data.qpos[0])

    def _reward(self, before: float, action: np.ndarray) -> tuple[float, dict[str, float], bool]:
        parts = {"forward": (float(self.data.qpos[0]) - before) / self.control_period,
                 "alive": 1.0, "control": -1e-3 * float(np.sum(action ** 2))}
        return sum(parts.values()), parts, not self.healthy()

    def healthy(self) -> bool:
        raise NotImplementedError


class WalkerRandParamsEnv(RandParamsEnv):
    model_file = "walker2d.xml"
    frame_skip = 5

    def healthy(self) -> bool:
        height, ang = self.data.qpos[1], self.data.qpos[2]
        return bool(0.8 < height < 2.0 and -1.0 < ang < 1.0)


class HopperRandParamsEnv(RandParamsEnv):
    model_file = "hopper.xml"
    frame_skip = 4

    def healthy(self) -> bool:
        s = np.concatenate([self.data.qpos, self.data.qvel])
        height, ang = self.data.qpos[1], self.data.qpos[2]
        return bool(np.isfinite(s).all() and (np.abs(s[2:]) < 100).all() and height > 0.7
                    and abs(ang) < 0.2)


def rand_param_shapes(model_file: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the randomized model fields (the task sampler draws one multiplier each)."""
    from pearl_robot.twin.mujoco_env import gymnasium_asset, load_model

    model = load_model(gymnasium_asset(model_file))
    return {f: tuple(getattr(model, f).shape) for f in RAND_PARAM_FIELDS}
