"""Retraining from logs (pearl_robot/train/offline.py): buffers from datasets, PEARL context
from recent same-task episodes, --init, --follow picking up closed episodes, the CLI path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pearl_robot.cli import main  # noqa: E402
from pearl_robot.core.config import merge, reference_config  # noqa: E402
from pearl_robot.datalog.schema import TransitionLayout  # noqa: E402
from pearl_robot.datalog.writer import DatasetWriter, WriterConfig  # noqa: E402
from pearl_robot.errors import ConfigError  # noqa: E402
from pearl_robot.runtime.episodes import drive_env  # noqa: E402
from pearl_robot.runtime.schedule import OvernightSession, ScheduleConfig  # noqa: E402
from pearl_robot.tasks.point_robot import PointRobotFamily, oracle_action  # noqa: E402
from pearl_robot.train.offline import OfflineConfig, follow, make_trainer  # noqa: E402
from pearl_robot.train.trainer import MetaTrainer  # noqa: E402


def _tiny(**train):
    return merge(reference_config("point-robot"), {
        "pearl": {"hidden_sizes": [16, 16], "encoder_hidden_sizes": [16], "meta_batch": 4,
                  "batch_size": 32, "embedding_batch_size": 16},
        "train": {"num_iterations": 2, "num_train_steps_per_itr": 5, "num_tasks_sample": 2,
                  "checkpoint_every": 1, "torch_threads": 1, "num_eval_train_tasks": 0,
                  "num_evals": 1, **train}})


def _collect(root: Path, tasks: tuple[int, ...], episodes: int, noise: float = 0.03) -> None:
    """A night on the point robot: an oracle-ish controller with noise, logged for real."""
    family = PointRobotFamily()
    env = family.make_env(seed=len(tasks))
    env.family = family.name
    rng = np.random.default_rng(episodes)

    def act(obs, cmd):
        a = oracle_action(obs, np.asarray(cmd.task.params["goal"]))
        return np.clip(a + rng.normal(0, noise, 2), -0.1, 0.1)

    with DatasetWriter(root, TransitionLayout(2, 2, 0),
                       WriterConfig(commit_every=50, commit_interval_s=0.05)) as w:
        session = OvernightSession(ScheduleConfig(task_indices=tasks, episode_steps=20,
                                                  max_episodes=episodes), family.tasks, root)
        drive_env(session, env, act, w, max_ticks=100_000)
        assert w.flush()


def test_logged_data_fills_per_task_buffers_with_recent_context(tmp_path: Path) -> None:
    ds = tmp_path / "night1"
    _collect(ds, (80, 81, 82), episodes=12)
    family = PointRobotFamily()
    tr = make_trainer(_tiny(), family, tmp_path / "run", [ds], tensorboard=False,
                      progress=False, offline=OfflineConfig(context_episodes=2))
    assert [t.index for t in tr.train_tasks] == [80, 81, 82]
    assert tr.rl_buffer.sizes.tolist() == [80, 80, 80]  # 4 episodes x 20 steps per task
    assert tr.enc_buffer.sizes.tolist() == [40, 40, 40]  # only the 2 newest episodes
    acts = tr.rl_buffer.arrays["actions"][0, :80]
    assert np.abs(acts).max() <= 1.0 and np.abs(acts).max() > 0.9  # normalized from +-0.1
    # context rows come from the newest episodes: their obs are the last ones logged
    enc_obs = tr.enc_buffer.arrays["obs"][0, :40]
    rl_obs = tr.rl_buffer.arrays["obs"][0, 40:80]
    np.testing.assert_array_equal(enc_obs, rl_obs)
    row = tr.run()
    assert np.isfinite(row["eval/test_final_return"])
    assert np.isfinite(row["eval/logged_final_return"])  # tasks 80-82 are family members
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()


def test_init_warm_starts_and_follow_picks_up_new_episodes(tmp_path: Path) -> None:
    family = PointRobotFamily()
    base = MetaTrainer(_tiny(num_iterations=1), family, tmp_path / "base",
                       tensorboard=False, progress=False)
    ckpt = base.save(tmp_path / "base.pt")
    ds = tmp_path / "night"
    _collect(ds, (90, 91), episodes=2)
    tr = make_trainer(_tiny(num_iterations=50), family, tmp_path / "run", [ds], init=ckpt,
                      tensorboard=False, progress=False)
    for (k, v), w in zip(base.nets.state_dict().items(), tr.nets.state_dict().values()):
        assert torch.equal(v, w), k
    assert len(tr.train_tasks) == 2
    # the logger keeps closing episodes (on a new task too) while the trainer follows
    grown = []

    def stop(t) -> bool:
        if t.iteration == 1 and not grown:
            _collect(ds, (90, 91), episodes=6)  # resumes the schedule: tasks 90, 91, ...
            grown.append(True)
        return t.iteration >= 3

    row = follow(tr, [ds], stop=stop)
    assert tr.iteration == 3 and np.isfinite(row["loss/qf"] if "loss/qf" in row
                                             else next(iter(row.values())))
    assert tr.rl_buffer.sizes.tolist()[:2] == [60, 60]  # 3 episodes x 20 steps each
    with pytest.raises(ConfigError, match="directories"):
        follow(tr, [tmp_path / "other"])


def test_cli_train_from_data(tmp_path: Path, capsys) -> None:
    ds = tmp_path / "night"
    _collect(ds, (80, 85), episodes=2)
    rc = main(["train", "--family", "point-robot", "--data", str(ds), "--iterations", "1",
               "--set", "train.num_train_steps_per_itr=3", "--set", "pearl.meta_batch=2",
               "--set", "pearl.hidden_sizes=[16,16]", "--set", "train.num_evals=1",
               "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "final.pt").is_file()
    empty = tmp_path / "empty"
    with DatasetWriter(empty, TransitionLayout(2, 2, 0)):
        pass
    assert main(["train", "--family", "point-robot", "--data", str(empty), "--iterations",
                 "1", "--out", str(tmp_path / "run2"), "--no-progress",
                 "--no-tensorboard"]) == 1
    assert "no usable episodes" in capsys.readouterr().err


def test_sim_tasks_sets_how_many_twin_tasks_join_the_logs(tmp_path: Path, capsys) -> None:
    ds = tmp_path / "night"
    _collect(ds, (80, 81), episodes=4)
    family = PointRobotFamily()
    tr = make_trainer(_tiny(num_initial_steps=20), family, tmp_path / "run", [ds],
                      sim_tasks=3, tensorboard=False, progress=False)
    assert [t.index for t in tr.train_tasks] == [0, 1, 2, 80, 81]  # 3 twin tasks, then logs
    assert tr.sim_collection
    tr.run()
    assert tr.rl_buffer.sizes[:3].min() >= 20  # the twin tasks were simulated
    everything = make_trainer(_tiny(), family, tmp_path / "all", [ds], sim=True,
                              tensorboard=False, progress=False)
    assert len(everything.train_tasks) == 80 + 2
    with pytest.raises(ConfigError, match="--sim-tasks must be between 1 and 80"):
        make_trainer(_tiny(), family, tmp_path / "bad", [ds], sim_tasks=81,
                     tensorboard=False, progress=False)
    assert main(["train", "--family", "point-robot", "--sim-tasks", "3", "--iterations", "1",
                 "--out", str(tmp_path / "nodata"), "--no-progress"]) == 1
    assert "need --data" in capsys.readouterr().err


def test_readme_retrain_command_on_twin_logs_without_config(tmp_path: Path, capsys,
                                                             log_random_night) -> None:
    """README: `pearl-robot train --data DIR --init CKPT` (no --config) on twin-arm logs:
    family, sizes and hyperparameters come from the checkpoint, and the CLI says so."""
    pytest.importorskip("mujoco")
    from pearl_robot.tasks.registry import make_family

    family = make_family("twin-arm")
    from pearl_robot.core.config import load_experiment

    twin_yaml = Path(__file__).resolve().parents[2] / "config" / "train" / "twin_arm.yaml"
    cfg = merge(load_experiment(twin_yaml), {
        "pearl": {"hidden_sizes": [16, 16], "encoder_hidden_sizes": [16], "meta_batch": 2,
                  "batch_size": 16, "embedding_batch_size": 8},
        "train": {"num_iterations": 1, "num_train_steps_per_itr": 2, "num_tasks_sample": 1,
                  "num_initial_steps": 8, "num_steps_prior": 8, "num_steps_posterior": 0,
                  "num_extra_rl_steps_posterior": 0, "checkpoint_every": 1,
                  "torch_threads": 1, "num_eval_train_tasks": 0, "num_evals": 1,
                  "num_steps_per_eval": 8, "max_path_length": 8}})
    ckpt = MetaTrainer(cfg, family, tmp_path / "base", tensorboard=False,
                       progress=False).save(tmp_path / "twin.pt")
    ds = log_random_night(family, tmp_path / "night")
    rc = main(["train", "--data", str(ds), "--init", str(ckpt), "--iterations", "1",
               "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"config: from --init {ckpt} (family twin-arm" in out.out
    assert (tmp_path / "run" / "checkpoints" / "final.pt").is_file()
    # a family that contradicts the checkpoint is refused up front, in one line
    assert main(["train", "--data", str(ds), "--init", str(ckpt), "--family", "point-robot",
                 "--out", str(tmp_path / "run2"), "--no-progress"]) == 1
    assert "differs from the --init checkpoint's family" in capsys.readouterr().err


def test_train_from_twin_logs_without_config_or_init_takes_the_logs_family(
        tmp_path: Path, capsys, log_random_night) -> None:
    """`pearl-robot train --data DIR` alone on twin-arm logs: the family comes from the
    datasets' task metadata and the settings from config/train/twin_arm.yaml, and the CLI
    says so (before: the point-robot default, refused on the logs' sizes)."""
    pytest.importorskip("mujoco")
    from pearl_robot.tasks.registry import make_family

    family = make_family("twin-arm")
    ds = log_random_night(family, tmp_path / "night")
    env = family.make_env(seed=0)
    tiny = ["--set", "pearl.hidden_sizes=[16, 16]", "--set", "pearl.encoder_hidden_sizes=[16]",
            "--set", "pearl.meta_batch=2", "--set", "pearl.batch_size=16",
            "--set", "pearl.embedding_batch_size=8", "--set", "train.num_train_steps_per_itr=2",
            "--set", "train.num_eval_train_tasks=0", "--set", "train.num_steps_per_eval=10",
            "--set", "train.max_path_length=10"]
    rc = main(["train", "--data", str(ds), "--iterations", "1", "--out", str(tmp_path / "run"),
               "--no-progress", "--no-tensorboard", *tiny])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "config: family twin-arm from the datasets' task metadata, settings from " in out.out
    assert "twin_arm.yaml" in out.out
    assert (tmp_path / "run" / "checkpoints" / "final.pt").is_file()
    # logs of two families: refused in one line, naming both
    other = tmp_path / "other"
    with DatasetWriter(other, TransitionLayout(env.obs_dim, env.action_dim, 0)) as w:
        w.set_task({"family": "point-robot", "index": 0, "episode": 0})
        w.write(TransitionLayout(env.obs_dim, env.action_dim, 0).pack(
            np.zeros(env.obs_dim), np.zeros(env.action_dim), 0.0, np.zeros(env.obs_dim),
            False, True, 0, 0, 0, (0.0, 0.0, 0.0), np.zeros(0)))
    assert main(["train", "--data", str(ds), str(other), "--out", str(tmp_path / "r3"),
                 "--no-progress"]) == 1
    assert "several families (point-robot, twin-arm)" in capsys.readouterr().err
