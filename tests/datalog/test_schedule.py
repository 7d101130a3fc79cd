"""The overnight schedule driven on real envs as a robot would be driven: point robot (numpy)
and the MuJoCo twin arm, logging through the real DatasetWriter; restarts, faults, timeouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pearl_robot.datalog.dataset import DatasetPaths, read_manifest
from pearl_robot.datalog.episode import sha256_file
from pearl_robot.datalog.reader import load_datasets
from pearl_robot.datalog.schema import TransitionLayout
from pearl_robot.datalog.writer import (
    DatasetWriter,
    WriterConfig,
    _Stop,  # the writer thread's stop message (a crash is simulated)
)
from pearl_robot.errors import ConfigError
from pearl_robot.runtime.episodes import drive_env
from pearl_robot.runtime.schedule import (
    OvernightSession,
    Phase,
    ScheduleConfig,
    SessionError,
    planned_task,
)
from pearl_robot.tasks.point_robot import PointRobotFamily, oracle_action

WCFG = WriterConfig(robot="sched-test", commit_every=10, commit_interval_s=0.01)


def _point_setup(tmp_path: Path):
    family = PointRobotFamily()
    env = family.make_env(seed=0)
    env.family = family.name  # what the driver records as the task's family
    layout = TransitionLayout(env.obs_dim, env.action_dim, 0)

    def act(obs: np.ndarray, cmd) -> np.ndarray:
        return oracle_action(obs, np.asarray(cmd.task.params["goal"])) * 0.7

    return family, env, layout, act


def test_plan_is_a_pure_function_of_position() -> None:
    cfg = ScheduleConfig(task_indices=(3, 5, 7), episodes_per_task=2)
    assert [planned_task(cfg, k) for k in range(8)] == [3, 3, 5, 5, 7, 7, 3, 3]
    sh = ScheduleConfig(task_indices=tuple(range(6)), order="shuffle", seed=4)
    rounds = [[planned_task(sh, r * 6 + k) for k in range(6)] for r in range(3)]
    assert all(sorted(r) == list(range(6)) for r in rounds)
    assert rounds[0] != rounds[1] or rounds[1] != rounds[2]
    with pytest.raises(ConfigError, match="order"):
        ScheduleConfig(task_indices=(1,), order="random")


def test_session_resumes_after_a_crash_with_continuous_numbering(tmp_path: Path) -> None:
    family, env, layout, act = _point_setup(tmp_path)
    cfg = ScheduleConfig(task_indices=(80, 81, 82), episode_steps=15, max_episodes=7,
                         reset_timeout_s=1.0)
    # night, part 1: crash in the middle of the 4th episode (the process dies: no close)
    writer = DatasetWriter(tmp_path, layout, WCFG)
    session = OvernightSession(cfg, family.tasks, tmp_path)
    res = drive_env(session, env, act, writer, max_ticks=10_000,
                    stop=lambda c: c.episode == 3 and c.step == 9)
    assert [r.episode for r in res.episodes] == [0, 1, 2]
    assert [r.task_index for r in res.episodes] == [80, 81, 82]
    assert writer.flush()
    writer._accepting = False  # noqa: SLF001 - simulate the crash: nothing closes cleanly
    writer._put(_Stop(), force=True)  # noqa: SLF001
    writer._thread.join()  # noqa: SLF001
    writer._lock.release()  # noqa: SLF001
    hashes = {p.name: sha256_file(p) for p in (tmp_path / "episodes").glob("*.mcap")}
    # part 2: the restarted logger recovers episode 3, the session continues with episode 4
    with DatasetWriter(tmp_path, layout, WCFG) as writer2:
        assert [e.episode for e in writer2.recovery.episodes] == [3]
        session2 = OvernightSession(cfg, family.tasks, tmp_path)
        assert session2.restarts == 1 and session2.completed == 4
        assert session2.history[0].end_reason == "crash" and session2.history[0].episode == 3
        res2 = drive_env(session2, env, act, writer2, max_ticks=10_000, start_time=1000.0)
        assert res2.last.phase == Phase.DONE
        assert writer2.flush()
    # the crash interrupted task 80 (episode 3); the schedule moves on to 81, 82, 80
    assert [(r.episode, r.task_index) for r in res2.episodes[1:]] == [(4, 81), (5, 82), (6, 80)]
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert [e["episode"] for e in entries] == list(range(7))
    assert [e["status"] for e in entries] == ["complete"] * 3 + ["recovered"] + ["complete"] * 3
    assert entries[3]["transitions"] == 9 or entries[3]["transitions"] == 10
    assert [e["task"]["index"] for e in entries] == [80, 81, 82, 80, 81, 82, 80]
    # finished files were never touched again
    assert all(sha256_file(tmp_path / "episodes" / n) == h for n, h in hashes.items())
    loaded = load_datasets([tmp_path], verify_sha=True)
    assert not [p for p in loaded.problems if p.severity == "error"]
    assert len(loaded.tasks) == 3
    t80 = [t for t in loaded.tasks.values() if t.task["index"] == 80][0]
    assert t80.task["params"]["goal"] == family.tasks[80].params["goal"]
    # rewards in the log are the env's: the oracle-ish policy gets closer to the goal
    assert t80.reward[:15].mean() < t80.reward[-1]
    # a third start after the schedule finished does nothing
    session3 = OvernightSession(cfg, family.tasks, tmp_path)
    assert session3.tick(0.0).phase == Phase.DONE
    # a different plan on the same dataset is refused, not silently mixed
    with pytest.raises(SessionError, match="plan"):
        OvernightSession(ScheduleConfig(task_indices=(1, 2)), family.tasks, tmp_path)


def test_faults_pause_then_resume_and_too_many_stop(tmp_path: Path) -> None:
    family, env, layout, act = _point_setup(tmp_path)
    cfg = ScheduleConfig(task_indices=(0, 1), episode_steps=20, max_episodes=4,
                         fault_pause_s=0.5, max_consecutive_faults=3, reset_timeout_s=0.2,
                         reset_retries=1)
    with DatasetWriter(tmp_path, layout, WCFG) as writer:
        session = OvernightSession(cfg, family.tasks, tmp_path)
        phases: list[Phase] = []

        def fault(tick: int) -> str | None:
            return "bridge: motor overcurrent" if tick == 8 else None

        res = drive_env(session, env, act, writer, max_ticks=2000, fault_at=fault,
                        stop=lambda c: phases.append(c.phase) and False)
        assert res.last.phase == Phase.DONE
        assert Phase.PAUSED in phases
        reasons = [r.end_reason for r in res.episodes]
        assert reasons.count("fault") == 1 and reasons.count("truncated") == 3
        assert res.episodes[0].steps < 20 and res.episodes[0].end_reason == "fault"
        # reset routine that never finishes: retried, then faults until STOPPED
        # (a longer night on the same dataset: same plan, more episodes)
        session = OvernightSession(ScheduleConfig(**{**cfg.__dict__, "max_episodes": 10}),
                                   family.tasks, tmp_path)
        assert session.completed == 4 and session.next_episode == 4
        res2 = drive_env(session, env, act, writer, max_ticks=5000, start_time=500.0,
                         reset_works=lambda tick: False)
        assert res2.last.phase == Phase.STOPPED and res2.last.hold_safe
        assert "needs an operator" in res2.last.message
        assert "reset did not finish" in session.last_fault
        session.clear_stop()
        assert session.tick(10_000.0).phase == Phase.RESETTING
        assert writer.flush()
    entries = read_manifest(DatasetPaths(tmp_path)).entries
    assert [e["end_reason"] for e in entries] == ["fault", "truncated", "truncated",
                                                  "truncated"]
    assert entries[0]["transitions"] == res.episodes[0].steps


def test_logger_failure_pauses_the_schedule(tmp_path: Path) -> None:
    family, _, _, _ = _point_setup(tmp_path)
    session = OvernightSession(ScheduleConfig(task_indices=(0,), episode_steps=5), family.tasks,
                               tmp_path)
    assert session.tick(0.0).phase == Phase.RESETTING
    cmd = session.tick(0.05, reset_done=True)
    assert cmd.phase == Phase.RUNNING and cmd.episode == 0
    cmd = session.tick(0.1, log_ok=False)
    assert cmd.phase == Phase.PAUSED and cmd.hold_safe and "logger" in cmd.message
    assert session.history[-1].end_reason == "fault"
    assert session.tick(0.15).phase == Phase.RESETTING  # logger back: carry on
    state = json.loads((tmp_path / "session.json").read_text())
    assert state["next_episode"] == 1 and state["completed"] == 1


def test_twin_arm_overnight_session(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    from pearl_robot.tasks.twin_arm import TwinArmFamily

    family = TwinArmFamily(n_tasks=12, n_eval=2, horizon=40)
    env = family.make_env(seed=1)
    env.family = family.name
    layout = TransitionLayout(env.obs_dim, env.action_dim, 2)
    n = env.action_dim

    def pd(obs: np.ndarray, cmd) -> np.ndarray:
        goal = np.asarray(cmd.task.params["goal_qpos"])
        effort = 8.0 * (goal - obs[:n]) - 1.0 * obs[n:]
        return np.clip(effort, env.action_low, env.action_high)

    cfg = ScheduleConfig(task_indices=(10, 11, 3), episode_steps=30, max_episodes=4)
    with DatasetWriter(tmp_path, layout, WCFG) as writer:
        session = OvernightSession(cfg, family.tasks, tmp_path)
        res = drive_env(session, env, pd, writer, max_ticks=1000,
                        belief=lambda: np.array([0.1, -0.2, 0.5, 0.5, 3.0]))
        assert writer.flush()
    env.close()
    assert res.last.phase == Phase.DONE and res.transitions == 4 * 30
    loaded = load_datasets([tmp_path], verify_sha=True)
    assert not [p for p in loaded.problems if p.severity == "error"]
    assert sorted(t.task["index"] for t in loaded.tasks.values()) == [3, 10, 11]
    t10 = [t for t in loaded.tasks.values() if t.task["index"] == 10][0]
    assert t10.obs.shape[1] == env.obs_dim and t10.action.shape[1] == n
    assert np.all(np.abs(t10.action) <= env.action_high + 1e-12)  # physical units as sent
    np.testing.assert_array_equal(t10.belief[0], [0.1, -0.2, 0.5, 0.5, 3.0])
    # the PD controller moves the arm towards the task's goal: distance shrinks
    goal = np.asarray(t10.task["params"]["goal_qpos"])
    d = np.linalg.norm(t10.next_obs[:, :n] - goal, axis=1)
    assert d[29] < d[0]
