"""The morning's retrain warm-starts from a bundle's weights-only checkpoint.pt: ``train --data
--init BUNDLE/checkpoint.pt`` (no --config: the checkpoint's recipe) trains on from its
weights, and ``--resume`` of such a checkpoint is refused with the way to use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pearl_robot.cli import main
from pearl_robot.core.checkpoint import load_checkpoint
from pearl_robot.core.config import merge, reference_config
from pearl_robot.core.networks import EnvSpec
from pearl_robot.core.pearl import build
from pearl_robot.export.exporter import ExportConfig, export_checkpoint
from pearl_robot.runtime.bundle import CHECKPOINT_FILE, read_contract
from pearl_robot.tasks.point_robot import PointRobotFamily
from pearl_robot.train.trainer import MetaTrainer

BASE_SEED = 5
"""Seed of the shipped model's networks; the retrain runs with seed 0, so a retrain that
ignored --init would start from other weights."""


def _tiny():  # noqa: ANN202 - an ExperimentConfig
    return merge(reference_config("point-robot"), {
        "pearl": {"hidden_sizes": [16, 16], "encoder_hidden_sizes": [16], "meta_batch": 2,
                  "batch_size": 16, "embedding_batch_size": 8},
        "train": {"seed": BASE_SEED, "num_iterations": 1, "num_train_steps_per_itr": 3,
                  "num_tasks_sample": 1, "num_initial_steps": 10, "num_steps_prior": 10,
                  "num_steps_posterior": 0, "num_extra_rl_steps_posterior": 0,
                  "checkpoint_every": 1, "torch_threads": 1, "num_eval_train_tasks": 0,
                  "num_evals": 1, "num_steps_per_eval": 10, "max_path_length": 10,
                  "save_replay_buffers": True}})


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle exported with --with-checkpoint from a trainer checkpoint (replay included)."""
    root = tmp_path_factory.mktemp("shipped")
    family = PointRobotFamily()
    ckpt = MetaTrainer(_tiny(), family, root / "run", tensorboard=False,
                       progress=False).save(root / "full.pt")
    assert load_checkpoint(ckpt).replay is not None
    export_checkpoint(ckpt, root / "bundle", ExportConfig(random_rows=32, record_steps=10,
                                                          embed_checkpoint=True))
    return root / "bundle"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory, log_random_night) -> Path:  # noqa: ANN001
    """Two 10-step episodes of random actions on point-robot tasks 3 and 4, logged."""
    return log_random_night(PointRobotFamily(), tmp_path_factory.mktemp("night") / "log")


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if a[k].is_floating_point())


def test_the_morning_command_warm_starts_from_the_bundles_checkpoint(
        shipped: Path, night: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    init = shipped / CHECKPOINT_FILE
    rc = main(["train", "--data", str(night), "--sim-tasks", "2", "--init", str(init),
               "--iterations", "1", "--seed", "0", "--out", str(tmp_path / "run"),
               "--export-bundle", str(tmp_path / "new"), "--with-checkpoint",
               "--no-progress", "--no-tensorboard"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"config: from --init {init} (family point-robot" in out.out
    start = load_checkpoint(init).networks
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt").networks
    spec = EnvSpec.from_env(PointRobotFamily().make_env(seed=0))
    scratch = build(load_checkpoint(init).config.pearl, spec, seed=0)[0].state_dict()
    # 3 Adam steps at lr 3e-4 move a weight by ~1e-3; another initialization by ~0.1 or more
    assert _max_diff(final, start) < 0.02 < _max_diff(scratch, start)
    # the new bundle carries its own checkpoint, so the next morning warm-starts from it
    assert CHECKPOINT_FILE in read_contract(tmp_path / "new").files
    again = load_checkpoint(tmp_path / "new" / CHECKPOINT_FILE).networks
    assert _max_diff(again, final) == 0.0


def test_resuming_a_weights_only_checkpoint_says_to_init_from_it(
        shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["train", "--resume", str(shipped / CHECKPOINT_FILE), "--out",
               str(tmp_path / "run"), "--no-progress", "--no-tensorboard"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "weights-only checkpoint" in err and "--init" in err
    assert not (tmp_path / "run").exists()


def test_with_checkpoint_needs_export_bundle(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--family", "point-robot", "--with-checkpoint", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 1
    assert "--export-bundle" in capsys.readouterr().err
