"""Offscreen episode pictures and trajectory plots (real MuJoCo rendering, EGL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pearl_robot.tasks.registry import make_family
from pearl_robot.twin.render import (
    RenderError,
    main,
    plot_episode,
    plot_returns_by_episode,
    record_episode,
    save_gif,
    save_image_strip,
)


def test_twin_episode_to_strip_gif_and_plot(tmp_path: Path) -> None:
    family = make_family("twin-arm")
    env = family.make_env(seed=0)
    env.set_task(family.tasks[5])
    ep = record_episode(env, lambda obs: np.array([1.0, 0.0, -1.0]), seed=0, steps=12,
                        frame_every=4, width=96, height=72, camera="side")
    assert ep.frame_steps == [0, 4, 8, 12]
    assert ep.frames[0].shape == (72, 96, 3) and ep.frames[0].dtype == np.uint8
    assert ep.frames[0].std() > 5  # a picture, not a blank buffer
    assert not np.array_equal(ep.frames[0], ep.frames[-1])  # the arm moved
    assert ep.obs.shape == (13, 6) and ep.actions.shape == (12, 3)
    assert set(ep.reward_parts) == {"distance", "precision", "effort", "overspeed"}
    np.testing.assert_allclose(sum(ep.reward_parts.values()), ep.rewards)

    strip = save_image_strip(ep.frames, tmp_path / "strip.png", columns=2,
                             labels=[str(s) for s in ep.frame_steps])
    assert Image.open(strip).size == (2 * 96, 2 * 72)
    gif = save_gif(ep.frames, tmp_path / "ep.gif")
    assert Image.open(gif).n_frames == 4
    png = plot_episode(ep, tmp_path / "traj.png", env.control_period, env.obs_names,
                       env.action_names, goal=env.goal)
    assert Image.open(png).size[0] > 300
    ret = plot_returns_by_episode(np.array([[-50, -20, -15], [-60, -30, -25]]),
                                  tmp_path / "adapt.png", baselines={"oracle": -10})
    assert ret.stat().st_size > 1000


def test_locomotion_tracking_camera_and_errors(tmp_path: Path) -> None:
    family = make_family("cheetah-vel")
    env = family.make_env(seed=0)
    env.set_task(family.tasks[0])
    ep = record_episode(env, lambda obs: np.zeros(6), seed=0, steps=2, frame_every=2,
                        width=64, height=48)
    assert len(ep.frames) == 2 and ep.frames[1].std() > 5
    with pytest.raises(RenderError, match="no camera 'nope'"):
        record_episode(env, lambda obs: np.zeros(6), steps=1, frame_every=1, camera="nope")
    with pytest.raises(RenderError, match="no frames"):
        save_image_strip([], tmp_path / "x.png")


def test_cli_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--family", "twin-arm", "--task", "100", "--steps", "6", "--every", "3",
                 "--strip", str(tmp_path / "s.png"), "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "s.png").exists() and (tmp_path / "p.png").exists()
    assert "return" in capsys.readouterr().out
