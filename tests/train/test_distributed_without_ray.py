"""Ray is the optional `distributed` extra: nothing but ``train --ray`` may load it.

These tests need no Ray cluster (they run whether or not Ray is installed):
- the default command, the single-process trainer and the robot-side packages never import it;
- with Ray unavailable, single-process training still works and ``--ray`` says how to install it;
- the rollout worker's job logic, run in-process: the PEARL phases, seeded and repeatable.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pearl_robot.core.config import merge, reference_config  # noqa: E402
from pearl_robot.tasks.point_robot import PointRobotFamily  # noqa: E402
from pearl_robot.train.distributed import (  # noqa: E402
    PhaseSpec,
    RolloutJob,
    RolloutWorker,
    acting_state,
)
from pearl_robot.train.trainer import MetaTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--family", "point-robot", "--iterations", "1", "--set", "train.num_train_steps_per_itr=3",
        "--set", "train.num_initial_steps=20", "--set", "train.num_evals=1",
        "--set", "pearl.meta_batch=2", "--set", "pearl.hidden_sizes=[16,16]",
        "--no-progress", "--no-tensorboard"]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240, cwd=ROOT)


def test_default_commands_and_robot_side_never_import_ray():
    mods = ["pearl_robot.cli", "pearl_robot.train.cli", "pearl_robot.train.trainer",
            "pearl_robot.train.offline", "pearl_robot.train.evaluation",
            "pearl_robot.runtime.policy", "pearl_robot.runtime.session",
            "pearl_robot.datalog.writer", "pearl_robot.hardware.bridge"]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "from pearl_robot.cli import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('RAY_LOADED' if 'ray' in sys.modules else 'NO_RAY')")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO_RAY")
    assert "--ray" in out.stdout and "--max-staleness" in out.stdout  # the help explains it


def test_without_ray_single_process_training_works_and_ray_flag_explains(tmp_path):
    block = "import sys; sys.modules['ray'] = None  # as if the extra were not installed\n"
    run = (block + "from pearl_robot.cli import main\n"
           f"raise SystemExit(main(['train', *{TINY!r}, '--out', {str(tmp_path / 'a')!r}]))")
    out = _python(run)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a" / "checkpoints" / "final.pt").is_file()
    ask = (block + "from pearl_robot.cli import main\n"
           f"raise SystemExit(main(['train', *{TINY!r}, '--out', {str(tmp_path / 'b')!r}, "
           "'--ray', '--workers', '2']))")
    out = _python(ask)
    assert out.returncode != 0
    assert "pearl_robot[distributed]" in out.stderr and "Traceback" not in out.stderr


def test_staleness_flag_without_ray_is_an_error(tmp_path, capsys):
    from pearl_robot.cli import main

    rc = main(["train", *TINY, "--out", str(tmp_path / "c"), "--max-staleness", "1"])
    assert rc != 0
    assert "--max-staleness applies to distributed training and needs --ray" in \
        capsys.readouterr().err


def _job(trainer: MetaTrainer, seed: int, tasks=(0, 1, 2)) -> RolloutJob:
    tc = trainer.cfg.train
    phases = (PhaseSpec("prior", tc.num_steps_prior, False),
              PhaseSpec("posterior", 40, True),
              PhaseSpec("extra", tc.num_extra_rl_steps_posterior, True))
    return RolloutJob("r3/collect/g0/s0", 3, tuple(tasks), phases, True, seed, 0,
                      [acting_state(trainer)])


def test_worker_runs_the_pearl_phases_repeatably_with_the_learners_weights(tmp_path):
    cfg = merge(reference_config("point-robot"), {
        "pearl": {"hidden_sizes": [16, 16], "encoder_hidden_sizes": [16]},
        "train": {"num_steps_prior": 40, "num_extra_rl_steps_posterior": 60}})
    family = PointRobotFamily()
    learner = MetaTrainer(cfg, family, tmp_path / "l", tensorboard=False, progress=False)
    with torch.no_grad():  # weights the worker could not have by chance
        learner.nets.actor.mean_head.bias.fill_(0.5)
    worker = RolloutWorker(0)
    worker.configure(family, cfg, family.train_tasks)
    res = worker.run(_job(learner, seed=7))
    assert torch.equal(worker.trainer.nets.actor.mean_head.bias,
                       learner.nets.actor.mean_head.bias)
    assert res.pull_s > 0 and res.version == 0 and res.round == 3
    per = {}
    for rec in res.paths:
        assert len(rec.path.obs) == 20  # whole trajectories only
        per[(rec.slot, rec.phase)] = per.get((rec.slot, rec.phase), 0) + len(rec.path.obs)
    assert per == {(t, ph): n for t in (0, 1, 2)
                   for ph, n in (("prior", 40), ("posterior", 40), ("extra", 60))}
    assert res.env_steps == 3 * 140
    # the same job again (a re-run after a worker died) gives the same trajectories, the
    # weight pull is skipped for a version the worker holds, another seed gives other data
    again = worker.run(_job(learner, seed=7))
    assert again.pull_s == 0
    for a, b in zip(res.paths, again.paths):
        assert (a.slot, a.phase) == (b.slot, b.phase)
        for x, y in zip(a.path, b.path):
            np.testing.assert_array_equal(x, y)
    other = worker.run(_job(learner, seed=8))
    assert not np.array_equal(other.paths[0].path.actions, res.paths[0].path.actions)
    worker.close()
