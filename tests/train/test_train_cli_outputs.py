"""A `pearl-robot train` that fails or is stopped before it wrote anything a user could use
leaves no empty run directory behind (issue 12, item 11); a run that wrote a checkpoint or a
progress row keeps its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from pearl_robot.cli import main  # noqa: E402
from pearl_robot.train.trainer import MetaTrainer  # noqa: E402

BASE = ["train", "--family", "point-robot", "--iterations", "1", "--no-tensorboard",
        "--no-progress"]


def test_a_refused_config_leaves_no_run_directory(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Before: MetaTrainer made the directory, then refused the config (an empty dir)."""
    out = tmp_path / "run"
    rc = main([*BASE, "--out", str(out), "--set", "pearl.inference=pooled",
               "--set", "pearl.latent_dim=1"])
    assert rc == 1
    assert "latent_dim" in capsys.readouterr().err
    assert not out.exists()


def test_ctrl_c_before_the_first_iteration_removes_the_directory(
        tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    def interrupted(self: MetaTrainer) -> None:
        assert self.out_dir.is_dir()  # the metrics writer made it
        raise KeyboardInterrupt

    monkeypatch.setattr(MetaTrainer, "run", interrupted)
    out = tmp_path / "run"
    assert main([*BASE, "--out", str(out)]) == 130
    assert not out.exists()
    assert f"removed {out}" in capsys.readouterr().err


def test_a_run_that_wrote_a_checkpoint_keeps_its_directory(tmp_path: Path,
                                                          monkeypatch) -> None:  # noqa: ANN001
    def interrupted(self: MetaTrainer) -> None:
        self.save(self.out_dir / "checkpoints" / "iter_000001.pt")
        raise KeyboardInterrupt

    monkeypatch.setattr(MetaTrainer, "run", interrupted)
    out = tmp_path / "run"
    assert main([*BASE, "--out", str(out)]) == 130
    assert (out / "checkpoints" / "iter_000001.pt").is_file()


def test_an_existing_directory_is_never_removed(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    def interrupted(self: MetaTrainer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(MetaTrainer, "run", interrupted)
    out = tmp_path / "mine"
    out.mkdir()
    assert main([*BASE, "--out", str(out)]) == 130
    assert out.is_dir()


def test_evaluate_writes_its_plot_and_json_into_new_directories(tmp_path: Path,
                                                                capsys) -> None:  # noqa: ANN001
    """`evaluate CKPT --plot runs/x/eval.png` on a fresh checkout: runs/x/ did not exist
    (before: a FileNotFoundError traceback after the whole evaluation)."""
    out = tmp_path / "run"
    tiny = {"pearl.hidden_sizes": "[16, 16]", "pearl.encoder_hidden_sizes": "[16]",
            "pearl.meta_batch": 2, "pearl.batch_size": 16, "pearl.embedding_batch_size": 8,
            "train.num_train_steps_per_itr": 2, "train.num_tasks_sample": 1,
            "train.num_initial_steps": 20, "train.num_steps_prior": 20,
            "train.num_steps_posterior": 0, "train.num_extra_rl_steps_posterior": 0,
            "train.num_eval_train_tasks": 0, "train.num_evals": 1,
            "train.num_steps_per_eval": 20}
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    assert main([*BASE, "--out", str(out), *sets]) == 0
    png, js = tmp_path / "runs" / "a" / "eval.png", tmp_path / "runs" / "b" / "eval.json"
    assert main(["evaluate", str(out / "checkpoints" / "final.pt"), "--episodes", "2",
                 "--repeats", "1", "--plot", str(png), "--json", str(js)]) == 0
    assert png.stat().st_size > 1000 and js.is_file()
    assert f"plot: {png}" in capsys.readouterr().out
