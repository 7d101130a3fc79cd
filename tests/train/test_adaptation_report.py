"""The twin family through the real trainer (one tiny iteration) and the adaptation report:
checks the pieces fit (obs/action sizes, context with s', rewards, baselines), not learning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pearl_robot.core.config import ExperimentConfig, merge
from pearl_robot.tasks.registry import make_family
from pearl_robot.train.adaptation_report import main as report_main
from pearl_robot.train.trainer import MetaTrainer


def test_one_iteration_then_adaptation_report(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = merge(ExperimentConfig(), {
        "pearl": {"hidden_sizes": [16, 16], "encoder_hidden_sizes": [16], "meta_batch": 4,
                  "batch_size": 32, "embedding_batch_size": 16,
                  "use_next_obs_in_context": True},
        "train": {"task_family": "twin-arm", "num_iterations": 1, "num_initial_steps": 60,
                  "num_tasks_sample": 2, "num_steps_prior": 60,
                  "num_extra_rl_steps_posterior": 60, "num_train_steps_per_itr": 5,
                  "max_path_length": 60, "num_steps_per_eval": 120, "num_evals": 1,
                  "num_eval_train_tasks": 1, "torch_threads": 1, "replay_capacity": 2000}})
    family = make_family("twin-arm")
    trainer = MetaTrainer(cfg, family, tmp_path / "run", tensorboard=False, progress=False)
    row = trainer.run()
    assert row["charts/grad_steps"] == 5
    ckpt = trainer.save(tmp_path / "run" / "final.pt")

    out = tmp_path / "report"
    assert report_main([str(ckpt), "--episodes", "2", "--out", str(out)]) == 0
    report = json.loads((out / "adaptation.json").read_text())
    assert report["family"] == "twin-arm" and report["tasks"] == family.eval_indices
    assert len(report["returns"]) == 20 and len(report["returns"][0]) == 2
    assert report["oracle_return_mean"] > report["still_return_mean"]
    assert len(report["normalized_per_episode"]) == 2
    assert (out / "adaptation.png").stat().st_size > 1000
    assert "episode 2: mean return" in capsys.readouterr().out
