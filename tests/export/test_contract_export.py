"""The exporter fills the typed contract from typed inputs: a value the checkpoint lacks is an
error before anything is written, an older trainer's checkpoint exports to the same contract
as a new one, and the control period has one name from the MJCF to the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pearl_robot.core.checkpoint import load_checkpoint, save_checkpoint
from pearl_robot.core.config import PearlConfig
from pearl_robot.core.networks import EnvSpec, PearlNetworks
from pearl_robot.export.exporter import (
    ExportConfig,
    ExportContractError,
    export_checkpoint,
    export_networks,
)
from pearl_robot.export.testing import write_test_checkpoint
from pearl_robot.robot.description import load_robot_spec
from pearl_robot.runtime import PolicyRuntime, RuntimeConfig
from pearl_robot.runtime.bundle import (
    CONTRACT_FILE,
    BundleRobotMismatchError,
    RobotExpectation,
    load_bundle,
    read_contract,
)
from pearl_robot.runtime.contract import Contract
from pearl_robot.tasks.interface import EnvInterface
from pearl_robot.tasks.registry import make_family

SMALL = {"hidden_sizes": (16,), "encoder_hidden_sizes": (16,)}
FAST = ExportConfig(random_rows=32, record_steps=20)
ARM3 = Path(__file__).resolve().parents[2] / "sim" / "arm3.xml"


def _rewrite_env_spec(ckpt: Path, edit) -> None:  # noqa: ANN001
    payload = torch.load(ckpt, weights_only=True)
    payload.pop("format")
    payload["env_spec"] = edit(dict(payload["env_spec"]))
    save_checkpoint(ckpt, payload)


def _content(bundle: Path) -> dict:
    """The contract without what differs between two exports of one model (time, paths)."""
    raw = json.loads((bundle / CONTRACT_FILE).read_text())
    return {k: v for k, v in raw.items() if k not in ("provenance", "contract_sha256")}


@pytest.mark.parametrize("key", ["control_period", "obs_names", "action_units",
                                 "command_interface"])
def test_a_missing_value_is_an_error_at_export(tmp_path: Path, key: str) -> None:
    ckpt = write_test_checkpoint(tmp_path / "c.pt", "point-robot", **SMALL)
    _rewrite_env_spec(ckpt, lambda d: {k: v for k, v in d.items() if k != key})
    with pytest.raises(ExportContractError, match=rf"lacks \['{key}'\]"):
        export_checkpoint(ckpt, tmp_path / "b", FAST)
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left either


def test_an_interface_that_does_not_fit_the_networks_is_refused(tmp_path: Path) -> None:
    ckpt = write_test_checkpoint(tmp_path / "c.pt", "point-robot", **SMALL)
    _rewrite_env_spec(ckpt, lambda d: {**d, "obs_names": ["x", "y", "z"],
                                       "obs_units": ["m"] * 3})
    with pytest.raises(ExportContractError, match="names 3 observation .* take 2"):
        export_checkpoint(ckpt, tmp_path / "b", FAST)


@pytest.mark.parametrize("family", ["point-robot", "twin-arm"])
def test_an_older_trainers_checkpoint_exports_the_same_contract(tmp_path: Path, family: str
                                                                ) -> None:
    """``env_spec`` as written before the typed record (names, ``dt``, no units, no robot):
    the family's env supplies the rest, as the exporter's ``robot_meta`` did."""
    new = write_test_checkpoint(tmp_path / "new.pt", family, **SMALL)
    old = tmp_path / "old.pt"
    shutil.copy(new, old)

    def legacy(d: dict) -> dict:
        out = {k: d[k] for k in ("obs_dim", "action_dim", "action_low", "action_high",
                                 "obs_names", "action_names")}
        return {**out, "dt": d["control_period"]}

    _rewrite_env_spec(old, legacy)
    assert "dt" in load_checkpoint(old).env_meta
    export_checkpoint(new, tmp_path / "b-new", FAST)
    export_checkpoint(old, tmp_path / "b-old", FAST)
    assert _content(tmp_path / "b-old") == _content(tmp_path / "b-new")


def test_a_checkpoint_record_round_trips_into_the_contract(tmp_path: Path) -> None:
    ckpt = write_test_checkpoint(tmp_path / "c.pt", "twin-arm", **SMALL)
    rec = EnvInterface.from_json(load_checkpoint(ckpt).env_meta)
    res = export_checkpoint(ckpt, tmp_path / "b", FAST)
    c = Contract.from_json(res.contract)
    assert c.to_json() == res.contract == json.loads((tmp_path / "b" / CONTRACT_FILE)
                                                     .read_text())
    assert (c.obs_names, c.obs_units, c.action_names, c.action_joints, c.action_units) == (
        rec.obs_names, rec.obs_units, rec.action_names, rec.action_joints, rec.action_units)
    assert (c.control_period, c.command_interface, c.robot) == (
        rec.control_period, rec.command_interface, rec.robot)
    assert c.observation.low == rec.obs_low and c.observation.high == rec.obs_high


def test_one_control_period_from_the_mjcf_to_the_runtime(tmp_path: Path) -> None:
    """Change ``pearl/control_period`` in the MJCF: the twin steps by it, the record carries
    it, the contract and the runtime read it under the same name."""
    from pearl_robot.twin.twin_arm_env import TwinArmEnv

    xml = tmp_path / "arm3_25hz.xml"
    text = ARM3.read_text()
    old = '<numeric name="pearl/control_period" data="0.05"/>'
    assert old in text
    xml.write_text(text.replace(old, '<numeric name="pearl/control_period" data="0.04"/>'))
    env = TwinArmEnv(seed=0, mjcf_path=xml)
    try:
        assert env.control_period == env.robot_spec.control_period == 0.04
        rec = EnvInterface.from_env(env)
        torch.manual_seed(0)
        nets = PearlNetworks(PearlConfig(latent_dim=3, **SMALL), EnvSpec.from_env(env))
    finally:
        env.close()
    assert rec.to_json()["control_period"] == 0.04
    export_networks(nets, tmp_path / "b", interface=rec,
                    family=make_family("twin-arm").describe(), config=FAST)
    assert json.loads((tmp_path / "b" / CONTRACT_FILE).read_text())["control_period"] == 0.04
    c = read_contract(tmp_path / "b")
    assert c.control_period == c.robot["control_period"] == 0.04
    rt = PolicyRuntime(tmp_path / "b", RuntimeConfig(), rng=np.random.default_rng(0),
                       robot=RobotExpectation.from_robot_spec(load_robot_spec(xml)))
    try:
        assert rt.bundle.contract.control_period == 0.04
    finally:
        rt.close()
    # the robot fit compares the same field: the shipped 20 Hz robot refuses this bundle
    with pytest.raises(BundleRobotMismatchError, match="control period of 0.04 s but the "
                                                       "robot runs at 0.05 s"):
        load_bundle(tmp_path / "b", RobotExpectation.from_robot_spec(load_robot_spec()))
