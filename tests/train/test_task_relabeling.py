"""Task relabelling of the "pooled" belief's own steps (``PearlConfig.task_relabeling``): the
rewards of moved tasks are exactly what the family's env would have paid under the new task,
the rest of the data is untouched, and configurations that cannot relabel are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pearl_robot.core.config import load_experiment, merge
from pearl_robot.errors import ConfigError
from pearl_robot.tasks.base import Task, TaskFamily
from pearl_robot.tasks.point_robot import PointRobotFamily
from pearl_robot.train.trainer import MetaTrainer

ROOT = Path(__file__).resolve().parents[2]


def _small(overrides: dict) -> object:
    cfg = load_experiment(ROOT / "config/train/point_robot_pooled.yaml")
    base = {"pearl": {"hidden_sizes": [16], "encoder_hidden_sizes": [16], "meta_batch": 6,
                      "batch_size": 8, "embedding_batch_size": 10, "feature_dim": 8,
                      "head_hidden_sizes": [8], "decoder_hidden_sizes": [8]},
            "train": {"num_iterations": 1, "num_train_steps_per_itr": 2, "num_tasks_sample": 2,
                      "num_initial_steps": 40, "num_steps_prior": 20,
                      "num_steps_posterior": 0, "num_extra_rl_steps_posterior": 20,
                      "eval_every": 100, "seed": 4}}
    for k, v in overrides.items():
        base[k] = {**base.get(k, {}), **v}
    return merge(cfg, base)


@pytest.mark.parametrize("sparse", [False, True])
def test_relabelled_rewards_are_what_the_env_pays(sparse: bool) -> None:
    fam = PointRobotFamily(sparse=sparse)
    rng = np.random.default_rng(0)
    tasks = fam.sample_tasks(3, rng)
    labels, _ = fam.task_labels(tasks)
    next_obs = rng.uniform(-1.2, 1.2, size=(3, 7, 2))
    if sparse:  # put some rows inside the goal radius so the sparse reward is not all zero
        next_obs[:, :3] = np.array([t.params["goal"] for t in tasks])[:, None] + 0.05
    got = fam.relabel_rewards(labels, next_obs)
    for i, t in enumerate(tasks):
        for j in range(7):
            r, c = fam.transition_reward(t, np.zeros(2), np.zeros(2), next_obs[i, j])
            assert got.reward[i, j] == pytest.approx(r, abs=1e-9)
            assert got.context_reward[i, j] == pytest.approx(c, abs=1e-9)
    if sparse:
        assert (got.context_reward > 0).sum() >= 9


@pytest.mark.parametrize("mode", ["family", "mix", "hindsight"])
def test_relabel_moves_only_the_picked_tasks(tmp_path: Path, mode: str) -> None:
    cfg = _small({"pearl": {"task_relabeling": mode, "relabel_fraction": 0.5}})
    fam = PointRobotFamily()
    tr = MetaTrainer(cfg, fam, tmp_path, tensorboard=False, progress=False)
    tr.run_iteration()  # fills the buffers (and runs relabelled belief steps)
    pool = tr.trainable_tasks()
    tasks = pool[tr.rng.integers(pool.size, size=12)]
    batch = tr.rl_buffer.sample_rl(tasks, 8, tr.rng)
    draw = tr.enc_buffer.sample_context_draw(tasks, 10, tr.rng, False, True)
    rel = tr.relabel(tasks, draw, batch, pool)
    moved = rel.moved
    assert 0 < moved.sum() < len(tasks)
    ri = draw.layout.slices["reward"].start
    labels = rel.labels.values.numpy()
    # untouched where not moved
    np.testing.assert_array_equal(rel.rows[~moved], draw.rows[~moved])
    np.testing.assert_array_equal(rel.batch.rewards[~moved], batch.rewards[~moved])
    np.testing.assert_array_equal(labels[~moved], tr.train_labels[tasks[~moved]])
    # moved: new labels, and rewards that the env pays at those goals; obs/actions unchanged
    assert not np.allclose(labels[moved], tr.train_labels[tasks[moved]])
    keep = [i for i in range(draw.rows.shape[-1]) if i != ri]
    np.testing.assert_array_equal(rel.rows[moved][..., keep], draw.rows[moved][..., keep])
    for i in np.flatnonzero(moved):
        goal = fam.label_spec.decode(labels[i])
        task = Task(-1, {"goal": goal.tolist()})
        for j in range(10):
            want = fam.transition_reward(task, np.zeros(2), np.zeros(2), draw.next_obs[i, j])[1]
            assert rel.rows[i, j, ri] == pytest.approx(want, abs=1e-5)
        want_b = -np.linalg.norm(batch.next_obs[i] - goal, axis=-1)
        np.testing.assert_allclose(rel.batch.rewards[i, :, 0], want_b, atol=1e-5)
    if mode == "hindsight":  # each new goal is where one of the task's own rows ended
        for i in np.flatnonzero(moved):
            d = np.linalg.norm(draw.next_obs[i] - fam.label_spec.decode(labels[i]), axis=-1)
            assert d.min() < 1e-5
    if mode == "mix":  # convex combinations stay inside the training goals' box
        assert np.all(np.abs(labels[moved]) <= np.abs(tr.train_labels).max() + 1e-6)
    # the real batch/context the caller holds is never modified in place
    assert rel.rows is not draw.rows and rel.batch.rewards is not batch.rewards


def test_sample_context_draw_matches_sample_context(tmp_path: Path) -> None:
    tr = MetaTrainer(_small({}), PointRobotFamily(), tmp_path, tensorboard=False,
                     progress=False)
    tr.run_iteration()
    tasks = np.array([0, 3, 5])
    for traj in (False, True):
        a = tr.enc_buffer.sample_context(tasks, 10, np.random.default_rng(1), False, traj)
        d = tr.enc_buffer.sample_context_draw(tasks, 10, np.random.default_rng(1), False, traj)
        np.testing.assert_array_equal(a, d.rows)
        # the next observation of a point-robot row is its position plus its move
        np.testing.assert_allclose(d.next_obs, d.rows[..., :2] + 0.1 * d.rows[..., 2:4],
                                   atol=1e-5)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"pearl": {"inference": "pog", "task_relabeling": "family"}}, "needs inference 'pooled'"),
    ({"pearl": {"inference_updates": 1, "task_relabeling": "mix"}}, "inference_updates >= 2"),
    ({"pearl": {"task_relabeling": "family", "relabel_fraction": 0.0}}, "relabel_fraction"),
    ({"pearl": {"task_relabeling": "sideways"}}, "task_relabeling"),
])
def test_bad_relabel_configs_are_refused(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _small(overrides)


def test_a_family_that_cannot_relabel_is_refused(tmp_path: Path) -> None:
    # a point-robot family whose reward is declared unknown stands for a dynamics family
    fam = PointRobotFamily()
    fam.supports_relabeling = False
    with pytest.raises(ConfigError, match="cannot recompute rewards"):
        MetaTrainer(_small({"pearl": {"task_relabeling": "family"}}), fam, tmp_path / "r",
                    tensorboard=False, progress=False)
    assert not (tmp_path / "r").exists()


def test_a_family_without_hindsight_goals_is_refused(tmp_path: Path) -> None:
    class NoGoals(PointRobotFamily):  # stands for a family whose labels are not a goal
        hindsight_labels = TaskFamily.hindsight_labels

    with pytest.raises(ConfigError, match="no hindsight goals"):
        MetaTrainer(_small({"pearl": {"task_relabeling": "hindsight"}}), NoGoals(),
                    tmp_path / "r", tensorboard=False, progress=False)
