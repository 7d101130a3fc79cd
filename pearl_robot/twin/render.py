"""Pictures of what a policy does: offscreen episode rendering (image strip PNG, animated GIF)
and trajectory plots. Renders with MuJoCo's offscreen context (``MUJOCO_GL=egl``, or
``osmesa`` for pure software rendering); plots with matplotlib's Agg backend, so neither needs a
display.

    python -m pearl_robot.twin.render --family twin-arm --task 100 --policy oracle \\
        --strip arm.png --gif arm.gif --plot arm_traj.png
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pearl_robot.errors import PearlRobotError

# MUJOCO_GL: the egl default is set in pearl_robot/twin/__init__.py (before mujoco loads).

Policy = Callable[[np.ndarray], np.ndarray]
"""obs -> action (physical units)."""


class RenderError(PearlRobotError):
    """Offscreen rendering is unavailable or was asked for something impossible."""


class Episode(NamedTuple):
    """One recorded episode: per-step arrays plus the frames taken along the way."""

    obs: np.ndarray
    """(T + 1, obs_dim), starting with the reset observation."""
    actions: np.ndarray
    """(T, action_dim), physical units."""
    rewards: np.ndarray
    """(T,)."""
    reward_parts: dict[str, np.ndarray]
    """Each part of ``info["reward_parts"]`` over time, (T,)."""
    frames: list[np.ndarray]
    """RGB frames (H, W, 3) uint8, one every ``frame_every`` steps (plus the first)."""
    frame_steps: list[int]
    """The step index of each frame."""


class _Camera:
    """Offscreen renderer for an env with ``model``/``data``: a named camera, or a free camera
    that follows the body "torso" (locomotion) or looks at the arm."""

    def __init__(self, env: Any, width: int, height: int, camera: str | None) -> None:
        import mujoco

        self.mujoco = mujoco
        self.env = env
        model = env.model
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        try:
            self.renderer = mujoco.Renderer(model, height, width)
        except Exception as exc:  # noqa: BLE001 - GL setup errors come in many types
            raise RenderError(f"offscreen rendering unavailable ({exc}); set MUJOCO_GL=egl "
                              "or MUJOCO_GL=osmesa") from None
        self.camera: Any = camera
        self._track = -1
        if camera is None:
            cam = mujoco.MjvCamera()
            mujoco.mjv_defaultFreeCamera(model, cam)
            torso = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "torso")
            if torso >= 0:
                cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
                cam.trackbodyid = torso
                cam.distance = 4.0 if model.nq > 12 else 3.5
                cam.elevation = -15.0
                cam.azimuth = 90.0
            self.camera = cam
        elif mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise RenderError(f"model has no camera {camera!r}; cameras: {names}")

    def frame(self) -> np.ndarray:
        self.renderer.update_scene(self.env.data, camera=self.camera)
        return self.renderer.render().copy()

    def close(self) -> None:
        self.renderer.close()


def _place_goal_marker(env: Any) -> None:
    """Show the twin's goal (the flange position at the goal joints) as a green ball."""
    marker = getattr(env, "goal_marker_position", None)
    if marker is None:
        return
    import mujoco

    site = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "goal_marker")
    if site >= 0:
        env.model.site_pos[site] = marker()
        mujoco.mj_kinematics(env.model, env.data)  # the first frame shows it too


def record_episode(env: Any, policy: Policy, seed: int | None = None,
                   steps: int | None = None, frame_every: int = 0, width: int = 320,
                   height: int = 240, camera: str | None = None) -> Episode:
    """Run one episode of the env's current task (``set_task`` first); with ``frame_every``
    > 0, render a frame every that many steps."""
    obs, _ = env.reset(seed=seed)
    steps = env.max_episode_steps if steps is None else steps
    cam = None
    if frame_every > 0:
        if not hasattr(env, "model"):
            raise RenderError(f"{type(env).__name__} has no MuJoCo model to render")
        _place_goal_marker(env)
        cam = _Camera(env, width, height, camera)
    frames, frame_steps = [], []
    all_obs, actions, rewards, parts = [obs], [], [], []
    try:
        if cam is not None:
            frames.append(cam.frame())
            frame_steps.append(0)
        for t in range(steps):
            a = np.asarray(policy(obs), dtype=np.float64)
            res = env.step(a)
            obs = res.obs
            all_obs.append(obs)
            actions.append(np.clip(a, env.action_low, env.action_high))
            rewards.append(res.reward)
            parts.append(res.info.get("reward_parts", {}))
            if cam is not None and (t + 1) % frame_every == 0:
                frames.append(cam.frame())
                frame_steps.append(t + 1)
            if res.terminated or res.truncated:
                break
    finally:
        if cam is not None:
            cam.close()
    keys = list(parts[0]) if parts else []
    return Episode(np.array(all_obs), np.array(actions), np.array(rewards),
                   {k: np.array([p[k] for p in parts]) for k in keys}, frames, frame_steps)


def save_image_strip(frames: Sequence[np.ndarray], path: str | Path, columns: int = 6,
                     labels: Sequence[str] | None = None) -> Path:
    """Tile frames into one PNG (rows of ``columns``), optionally labelled."""
    if not frames:
        raise RenderError("no frames to save (record with frame_every > 0)")
    from PIL import Image, ImageDraw

    h, w = frames[0].shape[:2]
    cols = min(columns, len(frames))
    rows = -(-len(frames) // cols)
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, f in enumerate(frames):
        x, y = (i % cols) * w, (i // cols) * h
        sheet.paste(Image.fromarray(np.asarray(f, dtype=np.uint8)), (x, y))
        if labels is not None:
            box = draw.textbbox((x + 4, y + 4), labels[i])
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill="white")
            draw.text((x + 4, y + 4), labels[i], fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 20.0) -> Path:
    """Animated GIF (no ffmpeg needed; Pillow only)."""
    if not frames:
        raise RenderError("no frames to save (record with frame_every > 0)")
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:],
                   duration=int(round(1000 / fps)), loop=0)
    return path


def plot_episode(episode: Episode, path: str | Path, dt: float,
                 obs_names: Sequence[str] = (), action_names: Sequence[str] = (),
                 goal: Sequence[float] | None = None, max_obs: int = 6,
                 title: str = "") -> Path:
    """Observations (the first ``max_obs``), actions and reward parts against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_obs = np.arange(len(episode.obs)) * dt
    t_act = np.arange(1, len(episode.actions) + 1) * dt
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    n = min(max_obs, episode.obs.shape[1])
    for i in range(n):
        label = obs_names[i] if i < len(obs_names) else f"obs[{i}]"
        line, = axes[0].plot(t_obs, episode.obs[:, i], label=label)
        if goal is not None and i < len(goal):
            axes[0].axhline(goal[i], color=line.get_color(), ls="--", lw=0.8)
    axes[0].set_ylabel("observation")
    axes[0].legend(fontsize=7, ncol=2)
    for i in range(episode.actions.shape[1] if episode.actions.size else 0):
        label = action_names[i] if i < len(action_names) else f"action[{i}]"
        axes[1].plot(t_act, episode.actions[:, i], label=label)
    axes[1].set_ylabel("action")
    axes[1].legend(fontsize=7, ncol=2)
    for k, v in episode.reward_parts.items():
        axes[2].plot(t_act, v, label=k)
    axes[2].plot(t_act, episode.rewards, "k", lw=1.5, label="reward")
    axes[2].set_ylabel("reward")
    axes[2].set_xlabel("time (s)")
    axes[2].legend(fontsize=7)
    fig.suptitle(title or f"return {episode.rewards.sum():.2f}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_returns_by_episode(returns: np.ndarray, path: str | Path,
                            title: str = "adaptation on held-out tasks",
                            baselines: dict[str, float] | None = None) -> Path:
    """Return of the k-th episode on a task (rows: tasks, columns: episodes): mean and spread,
    so a person sees whether later episodes beat the first (PEARL's adaptation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.atleast_2d(np.asarray(returns, dtype=np.float64))
    k = np.arange(1, r.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in r:
        ax.plot(k, row, color="0.8", lw=0.8)
    ax.errorbar(k, r.mean(0), yerr=r.std(0), color="C0", marker="o", capsize=3,
                label=f"mean over {r.shape[0]} tasks")
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, ls="--", color=f"C{i + 1}", label=name)
    ax.set_xlabel("episode on the task (posterior updated after each)")
    ax.set_ylabel("return")
    ax.set_xticks(k)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _builtin_policy(name: str, env: Any, rng: np.random.Generator) -> Policy:
    if name == "zero":
        return lambda obs: np.zeros(env.action_dim)
    if name == "random":
        return lambda obs: rng.uniform(env.action_low, env.action_high)
    if name == "oracle":
        if not hasattr(env, "twin"):
            raise RenderError("the oracle policy (PD + gravity with the goal known) is for "
                              "twin-arm only")
        return env.oracle_action
    raise RenderError(f"unknown policy {name!r}; use zero, random or oracle")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pearl_robot.twin.render",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="twin-arm", help="task family name")
    parser.add_argument("--task", type=int, default=0, help="task index in the family's list")
    parser.add_argument("--policy", default="oracle", help="zero, random or oracle (twin-arm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the horizon")
    parser.add_argument("--every", type=int, default=5, help="a frame every N steps")
    parser.add_argument("--camera", default=None, help="named MJCF camera (default: free)")
    parser.add_argument("--strip", default=None, help="write an image strip PNG here")
    parser.add_argument("--gif", default=None, help="write an animated GIF here")
    parser.add_argument("--plot", default=None, help="write a trajectory plot PNG here")
    args = parser.parse_args(argv)
    from pearl_robot.tasks.registry import make_family

    family = make_family(args.family)
    env = family.make_env(seed=args.seed)
    env.set_task(family.tasks[args.task])
    policy = _builtin_policy(args.policy, env, np.random.default_rng(args.seed))
    every = args.every if (args.strip or args.gif) else 0
    camera = args.camera or ("side" if args.family.startswith("twin") else None)
    ep = record_episode(env, policy, seed=args.seed, steps=args.steps, frame_every=every,
                        camera=camera)
    if args.strip:
        labels = [f"t={s * env.control_period:.2f}s" for s in ep.frame_steps]
        print(save_image_strip(ep.frames, args.strip, labels=labels))
    if args.gif:
        print(save_gif(ep.frames, args.gif, fps=1.0 / (env.control_period * max(every, 1))))
    if args.plot:
        print(plot_episode(ep, args.plot, env.control_period, env.obs_names, env.action_names,
                           goal=getattr(env, "goal", None)))
    print(f"return {ep.rewards.sum():.3f} over {len(ep.rewards)} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
