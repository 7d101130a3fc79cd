"""A gymnasium-style MuJoCo environment base on the ``mujoco`` package (no mujoco-py, no gym).

PEARL's benchmark environments (oyster ``rlkit/envs``) subclass old gym's ``MujocoEnv``: load an
XML, ``do_simulation(action, frame_skip)`` = set ctrl and step ``frame_skip`` times, and a
``reset_model`` that perturbs ``init_qpos``/``init_qvel``. This base does the same on the modern
bindings, with the differences written down:

- Actions are clipped to the actuator ``ctrlrange`` before use (MuJoCo clamps them anyway; the
  control cost is computed on the clipped action, which is what the motors received).
- Contact forces: MuJoCo >= 2.0 fills ``cfrc_ext`` only in ``mj_rnePostConstraint``; envs whose
  observation or reward use it set ``needs_contact_forces`` and it is called after each step
  (without it, ant-goal's 84 contact entries would be zero, as under mujoco-py + MuJoCo 2.0).
- The models come from gymnasium's asset folder (the same files old gym shipped) read as files,
  without importing gymnasium's env classes. ``settotalmass`` (deprecated in MuJoCo 4) is applied
  with ``mj_setTotalmass`` after compiling, which gives the same masses without the warning.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from pearl_robot.tasks.base import MetaEnv, StepResult, Task
from pearl_robot.twin.arm import TwinError


def gymnasium_asset(name: str) -> Path:
    """Path of one of gymnasium's MuJoCo model files (TwinError when gymnasium is missing)."""
    spec = importlib.util.find_spec("gymnasium")
    if spec is None or not spec.submodule_search_locations:
        raise TwinError(f"the {name} model ships with gymnasium; install the 'train' extra "
                        "(pip install 'pearl_robot[train]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "envs" / "mujoco" / "assets" / name
    if not path.is_file():
        raise TwinError(f"gymnasium has no MuJoCo asset {name} (looked at {path})")
    return path


_MODEL_CACHE: dict[str, mujoco.MjModel] = {}
_TOTALMASS = re.compile(r'\s+settotalmass="([^"]+)"')


def load_model(path: str | Path) -> mujoco.MjModel:
    """Compile an MJCF file (cached per path; callers get their own copy to modify)."""
    key = str(Path(path).resolve())
    if key not in _MODEL_CACHE:
        text = Path(path).read_text()
        match = _TOTALMASS.search(text)
        try:
            model = mujoco.MjModel.from_xml_string(_TOTALMASS.sub("", text)) if match \
                else mujoco.MjModel.from_xml_path(key)
        except ValueError as exc:
            raise TwinError(f"MuJoCo cannot compile {path}: {exc}") from None
        if match:
            mujoco.mj_setTotalmass(model, float(match.group(1)))
            mujoco.mj_setConst(model, mujoco.MjData(model))
        _MODEL_CACHE[key] = model
    return _copy_model(_MODEL_CACHE[key])


def _copy_model(model: mujoco.MjModel) -> mujoco.MjModel:
    import copy

    return copy.copy(model)


def state_names(model: mujoco.MjModel) -> tuple[list[str], list[str]]:
    """Names for every qpos and qvel entry, from the joint names (for bundle contracts)."""
    qpos: list[str] = []
    qvel: list[str] = []
    for j in range(model.njnt):
        name = model.joint(j).name or f"joint{j}"
        t = model.jnt_type[j]
        if t == mujoco.mjtJoint.mjJNT_FREE:
            qpos += [f"{name}.{s}" for s in ("x", "y", "z", "qw", "qx", "qy", "qz")]
            qvel += [f"{name}.{s}" for s in ("vx", "vy", "vz", "wx", "wy", "wz")]
        elif t == mujoco.mjtJoint.mjJNT_BALL:
            qpos += [f"{name}.{s}" for s in ("qw", "qx", "qy", "qz")]
            qvel += [f"{name}.{s}" for s in ("wx", "wy", "wz")]
        else:
            qpos.append(f"{name}.pos")
            qvel.append(f"{name}.vel")
    return qpos, qvel


class MujocoMetaEnv(MetaEnv):
    """Old-gym ``MujocoEnv`` semantics on the ``mujoco`` package, plus ``set_task``."""

    model_file: str = ""
    """Model file: a gymnasium asset name, or a path."""
    frame_skip: int = 5
    """Physics steps per control step."""
    needs_contact_forces: bool = False
    """Call ``mj_rnePostConstraint`` after stepping (fills ``cfrc_ext``)."""
    default_horizon: int = 200

    def __init__(self, seed: int | None = None, horizon: int | None = None) -> None:
        path = Path(self.model_file)
        self.model = load_model(path if path.is_file() else gymnasium_asset(self.model_file))
        self.data = mujoco.MjData(self.model)
        self.init_qpos = self.model.qpos0.copy()
        self.init_qvel = np.zeros(self.model.nv)
        self.action_low = self.model.actuator_ctrlrange[:, 0].copy()
        self.action_high = self.model.actuator_ctrlrange[:, 1].copy()
        self.action_dim = self.model.nu
        self.action_names = tuple(self.model.actuator(i).name or f"actuator{i}"
                                  for i in range(self.model.nu))
        self.control_period = float(self.model.opt.timestep) * self.frame_skip
        self.max_episode_steps = int(horizon or self.default_horizon)
        self._rng = np.random.default_rng(seed)
        self._t = 0
        self._task: Task | None = None
        self._renderer: Any = None
        self._setup()
        self.obs_dim = int(self._get_obs().shape[0])

    # -- what subclasses define ----------------------------------------------------------------
    def _setup(self) -> None:
        """Look up ids and names once the model is loaded (before the first observation)."""

    def _get_obs(self) -> np.ndarray:
        raise NotImplementedError

    def reset_model(self) -> None:
        """Perturb the initial state (old gym's ``reset_model``); default: U(+-0.1) / 0.1 N."""
        self.set_state(self.init_qpos + self._rng.uniform(-0.1, 0.1, self.model.nq),
                       self.init_qvel + 0.1 * self._rng.standard_normal(self.model.nv))

    def _apply_task(self, task: Task) -> None:
        """Read the task's parameters (goal, direction, physics)."""

    def _before(self) -> Any:
        """What the reward needs from the state before the step (e.g. x position)."""
        return None

    def _reward(self, before: Any, action: np.ndarray) -> tuple[float, dict[str, float], bool]:
        """(reward, parts, terminated) from the state after the step."""
        raise NotImplementedError

    # -- MetaEnv ---------------------------------------------------------------------------------
    def set_task(self, task: Task) -> None:
        self._apply_task(task)
        self._task = task

    @property
    def task(self) -> Task | None:
        return self._task

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)
        if self.needs_contact_forces:
            mujoco.mj_rnePostConstraint(self.model, self.data)

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if self._task is None:
            raise TwinError(f"{type(self).__name__}.reset called before set_task")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        self.reset_model()
        self._t = 0
        return self._get_obs(), {"task": self._task.index}

    def step(self, action: np.ndarray) -> StepResult:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.action_dim,) or not np.all(np.isfinite(a)):
            raise TwinError(f"action must be {self.action_dim} finite values, got {action!r}")
        a = np.clip(a, self.action_low, self.action_high)
        before = self._before()
        self.data.ctrl[:] = a
        mujoco.mj_step(self.model, self.data, self.frame_skip)
        if self.needs_contact_forces:
            mujoco.mj_rnePostConstraint(self.model, self.data)
        self._t += 1
        reward, parts, terminated = self._reward(before, a)
        info = {"reward_parts": parts}
        return StepResult(self._get_obs(), reward, terminated,
                          self._t >= self.max_episode_steps, info)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
