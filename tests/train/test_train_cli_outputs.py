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
