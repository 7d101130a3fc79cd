"""Checkpoints: weights_only loading, clear errors for missing/corrupt/foreign files."""

import numpy as np
import pytest
import torch

from pearl_robot.core.checkpoint import (
    CheckpointError,
    env_spec_to_dict,
    load_checkpoint,
    networks_from_checkpoint,
    save_checkpoint,
)
from pearl_robot.core.config import ExperimentConfig, PearlConfig, to_dict
from pearl_robot.core.networks import EnvSpec
from pearl_robot.core.pearl import build

SPEC = EnvSpec(2, 2, np.full(2, -0.1), np.full(2, 0.1))


def _save(path):
    cfg = ExperimentConfig(pearl=PearlConfig(hidden_sizes=(8,), encoder_hidden_sizes=(8,)))
    nets, _ = build(cfg.pearl, SPEC, seed=0)
    save_checkpoint(path, {"config": {"pearl": to_dict(cfg.pearl), "train": to_dict(cfg.train)},
                           "env_spec": env_spec_to_dict(SPEC), "networks": nets.state_dict()})
    return nets


def test_round_trip(tmp_path):
    nets = _save(tmp_path / "c.pt")
    ck = load_checkpoint(tmp_path / "c.pt")
    again = networks_from_checkpoint(ck)
    for (k, v), (_, w) in zip(nets.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, w), k
    assert not (tmp_path / "c.pt.tmp").exists()


def test_missing_truncated_and_foreign_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    _save(tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        load_checkpoint(tmp_path / "t.pt")
    torch.save({"hello": 1}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="not a pearl_robot checkpoint"):
        load_checkpoint(tmp_path / "f.pt")
