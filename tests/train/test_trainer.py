"""The meta-training loop: exact resume, outputs, and a seeded learning smoke test."""

import math

import numpy as np
import torch

from pearl_robot.core.config import merge, reference_config
from pearl_robot.tasks.registry import make_family
from pearl_robot.train.trainer import MetaTrainer, _distinct_groups


def _tiny(**train):
    return merge(reference_config("point-robot"), {
        "pearl": {"hidden_sizes": [16, 16], "encoder_hidden_sizes": [16], "meta_batch": 4,
                  "batch_size": 32, "embedding_batch_size": 16},
        "train": {"num_iterations": 3, "num_train_steps_per_itr": 10, "num_tasks_sample": 3,
                  "checkpoint_every": 1, "save_replay_buffers": True, "torch_threads": 1,
                  "num_eval_train_tasks": 2, **train}})


def _trainer(tmp_path, name, **train):
    return MetaTrainer(_tiny(**train), make_family("point-robot"), tmp_path / name,
                       tensorboard=False, progress=False)


def test_resume_equals_uninterrupted_run(tmp_path):
    straight = _trainer(tmp_path, "a")
    straight.run()
    first = _trainer(tmp_path, "b")
    first.run(until_iteration=2)
    resumed = _trainer(tmp_path, "c")
    resumed.load_state(tmp_path / "b" / "checkpoints" / "latest.pt")
    assert resumed.iteration == 2
    resumed.run()
    for (k, v), (_, w) in zip(straight.nets.state_dict().items(),
                              resumed.nets.state_dict().items()):
        assert torch.equal(v, w), f"{k} differs after resume"
    assert straight.env_steps == resumed.env_steps
    assert straight.last_eval == resumed.last_eval


def test_run_writes_progress_plot_and_checkpoint(tmp_path):
    tr = _trainer(tmp_path, "r", num_iterations=2)
    row = tr.run()
    out = tmp_path / "r"
    lines = (out / "progress.csv").read_text().splitlines()
    assert len(lines) == 3 and "eval/test_final_return" in lines[0]
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert (out / "checkpoints" / "latest.pt").is_file()
    assert math.isfinite(row["eval/test_final_return"])
    # initial collection: 200 steps for each of 80 tasks, then 3 tasks x (200 + 200) per iter
    assert tr.env_steps == 80 * 200 + 2 * 3 * 400


def test_encoder_buffer_holds_only_recent_prior_data(tmp_path):
    tr = _trainer(tmp_path, "e", num_iterations=1, num_tasks_sample=1)
    tr.run()
    sizes = tr.enc_buffer.sizes
    # every task got its initial 200 prior steps; the one chosen task was cleared and refilled
    # with its 200 prior steps only (the extra-RL steps go to the RL buffer only)
    assert np.all(sizes == 200)
    assert tr.rl_buffer.sizes.sum() == 80 * 200 + 400


def test_trajectory_context_sampling_feeds_whole_trajectories_to_the_update(tmp_path):
    cfg = merge(_tiny(num_iterations=1), {"pearl": {"context_sampling": "trajectories",
                                                     "embedding_batch_size": 40}})
    tr = MetaTrainer(cfg, make_family("point-robot"), tmp_path / "w", tensorboard=False,
                     progress=False)
    seen = []
    update = tr.learner.update
    tr.learner.update = lambda batch, ctx: (seen.append(ctx.numpy().copy()), update(batch, ctx))[1]
    tr.run()
    assert len(seen) == 10
    for ctx in seen:  # [tasks, 40, obs 2 + action 2 + reward 1]
        obs, act = ctx[..., :2], ctx[..., 2:4]
        moved = obs[:, :-1] + 0.1 * act[:, :-1]  # normalized actions; the step limit is 0.1
        chained = np.all(np.isclose(moved, obs[:, 1:], atol=1e-5), axis=-1)
        # consecutive rows are consecutive steps, except where the second trajectory begins
        assert chained[:, :19].all() and chained[:, 20:].all()
        assert not chained[:, 19].all()


def test_distinct_groups_keep_order():
    assert _distinct_groups([1, 2, 1, 3, 3]) == [[1, 2], [1, 3], [3]]


def test_learning_smoke(tmp_path):
    """A short seeded run must clearly beat the untrained agent on held-out tasks: fails when
    the update, the encoder or the data path is broken (an untrained agent scores ~0)."""
    cfg = merge(reference_config("point-robot"), {
        "pearl": {"hidden_sizes": [64, 64], "encoder_hidden_sizes": [64, 64],
                  "policy_lr": 1e-3, "qf_lr": 1e-3, "vf_lr": 1e-3, "context_lr": 1e-3},
        "train": {"num_iterations": 6, "num_train_steps_per_itr": 250, "torch_threads": 1,
                  "eval_every": 6, "checkpoint_every": 100, "num_evals": 1,
                  "num_eval_train_tasks": 0}})
    tr = MetaTrainer(cfg, make_family("point-robot"), tmp_path / "s", tensorboard=False,
                     progress=False)
    before = tr.evaluate()["eval/test_normalized"]
    row = tr.run()
    assert row["eval/test_normalized"] > before + 0.15, (before, row["eval/test_normalized"])


def test_progress_csv_gains_columns_that_appear_later(tmp_path):
    from pearl_robot.train.metrics import MetricsWriter, read_progress

    w = MetricsWriter(tmp_path, tensorboard=False)
    w.write(0, {"a": 1.0})
    w.write(1, {"a": 2.0, "eval/x": 5.0})
    w.write(2, {"a": 3.0})
    cols = read_progress(tmp_path / "progress.csv")
    assert cols["a"] == [1.0, 2.0, 3.0]
    assert cols["eval/x"][1] == 5.0 and math.isnan(cols["eval/x"][0])


def test_validation_tasks_are_never_trained_on_and_pick_best_pt(tmp_path):
    """``train.validation_tasks``: the last N training tasks get no data and no labels, every
    evaluation scores them, and checkpoints/best.pt holds the best-scoring iteration."""
    from pearl_robot.core.checkpoint import load_checkpoint

    fam = make_family("point-robot")
    tr = MetaTrainer(_tiny(validation_tasks=5), fam, tmp_path / "v", tensorboard=False,
                     progress=False)
    held = {t.index for t in fam.train_tasks[-5:]}
    assert {t.index for t in tr.val_tasks} == held
    assert held.isdisjoint(t.index for t in tr.train_tasks)
    assert tr.rl_buffer.n_tasks == len(fam.train_tasks) - 5
    assert len(tr.train_labels) == len(fam.train_tasks) - 5
    rows = [tr.run_iteration().metrics for _ in range(3)]
    scores = [r["eval/val_score"] for r in rows]
    assert all(math.isfinite(s) for s in scores)
    assert rows[-1]["eval/val_best"] == max(scores)
    best = load_checkpoint(tmp_path / "v" / "checkpoints" / "best.pt")
    assert best.trainer["best_val"] == max(scores)
    assert best.trainer["iteration"] == 1 + scores.index(max(scores))
    assert {t["index"] for t in best.family["validation_tasks"]} == held


def test_validation_cannot_take_every_training_task(tmp_path):
    import pytest

    from pearl_robot.errors import ConfigError

    with pytest.raises(ConfigError, match="validation_tasks"):
        MetaTrainer(_tiny(validation_tasks=80), make_family("point-robot"), tmp_path / "x",
                    tensorboard=False, progress=False)


def test_validation_is_refused_for_logged_tasks(tmp_path):
    """Evaluation runs the family's own tasks by index; logged tasks are not those."""
    import pytest

    from pearl_robot.errors import ConfigError

    fam = make_family("point-robot")
    with pytest.raises(ConfigError, match="simulation"):
        MetaTrainer(_tiny(validation_tasks=2), fam, tmp_path / "x",
                    train_tasks=fam.train_tasks[:6], tensorboard=False, progress=False)
