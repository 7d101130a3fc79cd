"""A checkpoint written by the real trainer exports, and the runtime reproduces it (slow)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_trained_point_robot_round_trip(tmp_path: Path) -> None:
    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.core.config import reference_config
    from pearl_robot.export.exporter import ExportConfig, export_checkpoint
    from pearl_robot.runtime import RuntimeConfig
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.trainer import MetaTrainer

    cfg = reference_config("point-robot", num_iterations=2, num_train_steps_per_itr=40,
                           num_initial_steps=100, num_steps_prior=60,
                           num_extra_rl_steps_posterior=60, save_replay_buffers=True,
                           torch_threads=1)
    cfg = dataclasses.replace(cfg, pearl=dataclasses.replace(
        cfg.pearl, meta_batch=4, batch_size=64, hidden_sizes=(64, 64),
        encoder_hidden_sizes=(64, 64)))
    family = make_family("point-robot")
    trainer = MetaTrainer(cfg, family, tmp_path / "run", tensorboard=False, progress=False)
    trainer.run()
    ckpt = trainer.save(tmp_path / "trained.pt")
    res = export_checkpoint(ckpt, tmp_path / "bundle", ExportConfig(random_rows=128))
    assert res.parity.recorded_source == "checkpoint replay buffers"
    assert res.parity.recorded_rows > 100
    assert res.contract["provenance"]["trainer"]["grad_steps"] == trainer.grad_steps

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
    from test_equivalence import _runtime_rollouts, _torch_rollouts

    nets = networks_from_checkpoint(load_checkpoint(ckpt))
    ref = _torch_rollouts(nets, family, 4, 3, seed=5)
    got = _runtime_rollouts(tmp_path / "bundle", family, 4, 3, 5,
                            RuntimeConfig(context_window=10_000))
    np.testing.assert_allclose(np.array(got.actions), np.array(ref.actions), atol=2e-5)
    np.testing.assert_allclose(got.returns, ref.returns, rtol=1e-4, atol=1e-4)
