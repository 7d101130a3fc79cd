"""Distributed meta-training on a real local Ray cluster (pearl_robot/train/distributed.py).

One cluster (2 CPUs, no dashboard) and one pool of two rollout workers serve the whole module;
every trainer configures the workers again, as a learner restarted from its checkpoint would.
Runs use the first 8 point-robot training tasks and tiny networks so the module stays within
tens of seconds on 2 cores.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is the `distributed` install extra")
torch = pytest.importorskip("torch")

from pearl_robot.core.config import merge, reference_config  # noqa: E402
from pearl_robot.datalog.schema import TransitionLayout  # noqa: E402
from pearl_robot.datalog.writer import DatasetWriter, WriterConfig  # noqa: E402
from pearl_robot.runtime.episodes import drive_env  # noqa: E402
from pearl_robot.runtime.schedule import OvernightSession, ScheduleConfig  # noqa: E402
from pearl_robot.tasks.point_robot import PointEnv, PointRobotFamily, oracle_action  # noqa: E402
from pearl_robot.train.distributed import (  # noqa: E402
    DistributedConfig,
    DistributedTrainer,
    DistributedTrainingError,
    WorkerPool,
    make_follower,
    make_offline_trainer,
)
from pearl_robot.train.offline import OfflineConfig  # noqa: E402
from pearl_robot.train.trainer import MetaTrainer  # noqa: E402

pytestmark = pytest.mark.timeout(300)

N_TASKS = 8
INITIAL, PRIOR, EXTRA = 100, 40, 40  # multiples of the 20-step horizon: exact step counts


@pytest.fixture(scope="module")
def pool():
    # workers at the test's own niceness (Ray's default 15 starves them on a busy machine)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             logging_level=logging.WARNING, object_store_memory=256 * 2**20,
             _system_config={"worker_niceness": os.nice(0)})
    p = WorkerPool(DistributedConfig(workers=2, worker_cpus=0.5))  # CPUs left for the CLI test
    yield p
    p.shutdown()
    ray.shutdown()


def _cfg(**train):
    return merge(reference_config("point-robot"), {
        "pearl": {"hidden_sizes": [16, 16], "encoder_hidden_sizes": [16], "meta_batch": 4,
                  "batch_size": 32, "embedding_batch_size": 16},
        "train": {"num_iterations": 2, "num_train_steps_per_itr": 10, "num_tasks_sample": 3,
                  "num_initial_steps": INITIAL, "num_steps_prior": PRIOR,
                  "num_extra_rl_steps_posterior": EXTRA, "checkpoint_every": 1,
                  "save_replay_buffers": True, "num_eval_train_tasks": 0, "num_evals": 1,
                  "num_steps_per_eval": 40, **train}})


def _loop(tmp_path: Path, name: str, pool: WorkerPool, family=None, staleness: int = 0,
          **train) -> DistributedTrainer:
    family = family or PointRobotFamily()
    tr = MetaTrainer(_cfg(**train), family, tmp_path / name,
                     train_tasks=family.train_tasks[:N_TASKS], tensorboard=False,
                     progress=False)
    return DistributedTrainer(tr, DistributedConfig(workers=2, max_staleness=staleness),
                              pool=pool)


def _expected_steps(iterations: int) -> int:
    return N_TASKS * INITIAL + iterations * 3 * (PRIOR + EXTRA)


def _assert_same_learner(a: MetaTrainer, b: MetaTrainer) -> None:
    for (k, v), w in zip(a.nets.state_dict().items(), b.nets.state_dict().values()):
        assert torch.equal(v, w), f"{k} differs"
    for name in ("rl_buffer", "enc_buffer"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_array_equal(x.sizes, y.sizes, err_msg=name)
        for f in x.arrays:
            np.testing.assert_array_equal(x.arrays[f], y.arrays[f], err_msg=f"{name}.{f}")


@pytest.fixture(scope="module")
def reference_run(pool, tmp_path_factory):
    """Two synchronous iterations with two workers and no faults."""
    loop = _loop(tmp_path_factory.mktemp("ref"), "a", pool)
    loop.run()
    return loop


def test_sync_run_counts_every_transition_once_and_reports_workers(reference_run):
    tr = reference_run.trainer
    assert tr.iteration == 2 and tr.initial_done
    assert tr.env_steps == _expected_steps(2) == tr.rl_buffer.num_steps()
    assert tr.env_steps == int(reference_run.steps_by_worker.sum())
    assert (reference_run.steps_by_worker > 0).all()  # both workers collected
    # encoder buffers: chosen tasks hold only this collection's prior data, others the initial
    assert set(tr.enc_buffer.sizes.tolist()) <= {INITIAL, PRIOR}
    lines = (tr.out_dir / "progress.csv").read_text().splitlines()
    header = lines[0].split(",")
    for col in ("dist/staleness", "dist/env_steps_per_s", "dist/worker0/env_steps_per_s",
                "dist/worker1/env_steps_per_s", "eval/test_final_return"):
        assert col in header, col
    rows = [dict(zip(header, r.split(","))) for r in lines[1:]]
    assert [float(r["dist/staleness"]) for r in rows] == [0.0, 0.0]
    assert [float(r["charts/env_steps"]) for r in rows] == [_expected_steps(1),
                                                            _expected_steps(2)]


def test_killed_worker_is_replaced_and_the_data_is_exactly_the_faultless_runs(
        pool, tmp_path, reference_run):
    loop = _loop(tmp_path, "b", pool)
    replaced = pool.replaced

    def crash(r: int) -> None:  # kill a worker while the jobs of the round are in flight
        pool.kill(r % 2)

    loop.on_dispatch = crash
    loop.run()
    assert pool.replaced == replaced + 2
    assert loop.jobs_resubmitted >= 2
    # the dead workers' partial trajectories never reached a buffer, and re-run jobs were
    # counted once: the learner is bit-identical to the run without faults
    assert loop.trainer.env_steps == _expected_steps(2)
    _assert_same_learner(reference_run.trainer, loop.trainer)


def test_learner_resumes_from_its_checkpoint_with_the_cluster_running(
        pool, tmp_path, reference_run):
    first = _loop(tmp_path, "c", pool)
    first.run(until_iteration=1)
    first.close()  # the learner goes away; the cluster and its workers stay
    ckpt = tmp_path / "c" / "checkpoints" / "latest.pt"
    second = _loop(tmp_path, "c", pool)
    second.trainer.load_state(ckpt)
    assert second.trainer.iteration == 1 and second.trainer.initial_done
    second.run()
    assert second.trainer.env_steps == _expected_steps(2)
    _assert_same_learner(reference_run.trainer, second.trainer)
    assert second.trainer.last_eval == reference_run.trainer.last_eval


def test_async_collection_is_bounded_and_tags_stale_rounds(pool, tmp_path):
    loop = _loop(tmp_path, "d", pool, staleness=1, num_iterations=3)
    rows = [loop.run_iteration().metrics for _ in range(3)]
    assert [r["dist/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    tr = loop.trainer
    assert tr.env_steps == _expected_steps(3) == tr.rl_buffer.num_steps()
    assert loop.stale_transitions == 2 * 3 * (PRIOR + EXTRA)
    assert not loop._rounds  # nothing is collected past the last iteration  # noqa: SLF001
    loop.close()


class ExplodingPointEnv(PointEnv):
    def step(self, action):  # noqa: ANN001, ANN201
        raise FloatingPointError("simulated physics blow-up in the twin")


class ExplodingFamily(PointRobotFamily):
    def make_env(self, seed=None):  # noqa: ANN001, ANN201
        return ExplodingPointEnv(seed=seed)


def test_a_worker_that_raises_is_reported_to_the_learner_log_not_hung(pool, tmp_path, caplog):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    loop = _loop(tmp_path, "e", pool, family=ExplodingFamily())
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="pearl_robot.train.distributed"), \
            pytest.raises(DistributedTrainingError, match="FloatingPointError"):
        loop.run_iteration()
    assert time.monotonic() - t0 < 60
    assert "simulated physics blow-up" in caplog.text and "raised in job" in caplog.text
    loop.close()


def _log_night(root: Path, tasks: tuple[int, ...], episodes: int) -> None:
    """The point robot under a noisy oracle, logged by the real dataset writer."""
    family = PointRobotFamily()
    env = family.make_env(seed=len(tasks))
    env.family = family.name
    rng = np.random.default_rng(episodes)

    def act(obs, cmd):  # noqa: ANN001, ANN202
        a = oracle_action(obs, np.asarray(cmd.task.params["goal"]))
        return np.clip(a + rng.normal(0, 0.03, 2), -0.1, 0.1)

    with DatasetWriter(root, TransitionLayout(2, 2, 0),
                       WriterConfig(commit_every=50, commit_interval_s=0.05)) as w:
        session = OvernightSession(ScheduleConfig(task_indices=tasks, episode_steps=20,
                                                  max_episodes=episodes), family.tasks, root)
        drive_env(session, env, act, w, max_ticks=100_000)
        assert w.flush()


def test_follow_worker_feeds_newly_closed_episodes_next_to_simulation(pool, tmp_path):
    ds = tmp_path / "robot1"
    _log_night(ds, (90, 91), episodes=2)
    dcfg = DistributedConfig(workers=2)
    follower = make_follower(dcfg, [ds], poll_s=0.1)
    tr = make_offline_trainer(_cfg(num_iterations=50, eval_every=50), PointRobotFamily(),
                              tmp_path / "f", [ds], follower, sim_tasks=2,
                              tensorboard=False, progress=False,
                              offline=OfflineConfig(poll_s=0.1))
    assert tr.rl_buffer.sizes[2:].tolist() == [20, 20]  # one episode per logged task so far
    loop = DistributedTrainer(tr, dcfg, pool=pool, following=True)
    loop.run_iteration()
    sim_steps = 2 * INITIAL + 3 * (PRIOR + EXTRA)
    assert tr.env_steps == sim_steps  # twin data from the workers, logs are not env steps
    _log_night(ds, (90, 91), episodes=6)  # the robot closes four more episodes
    deadline = time.monotonic() + 30
    while tr.rl_buffer.sizes[2:].sum() < 120 and time.monotonic() < deadline:
        loop.run_iteration()
    assert tr.rl_buffer.sizes[2:].tolist() == [60, 60]
    assert tr.iteration >= 2
    loop.close()
    ray.kill(follower)


def test_cli_train_with_ray_runs_and_records_the_cluster(pool, tmp_path, capsys):
    from pearl_robot.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "--family", "point-robot", "--iterations", "1",
               "--set", "train.num_train_steps_per_itr=3", "--set", "train.num_initial_steps=20",
               "--set", "train.num_evals=1", "--set", "pearl.meta_batch=2",
               "--set", "pearl.hidden_sizes=[16,16]", "--out", str(out), "--no-progress",
               "--no-tensorboard", "--ray", "--workers", "1", "--worker-cpus", "0.1"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "checkpoints" / "final.pt").is_file()
    info = (out / "distributed.yaml").read_text()
    assert "workers: 1" in info and "worker_pids" in info
    header = (out / "progress.csv").read_text().splitlines()[0]
    assert "dist/worker0/env_steps_per_s" in header
