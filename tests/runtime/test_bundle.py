"""Bundle validation: every kind of corruption is refused with an error naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pearl_robot.export.testing import write_test_bundle
from pearl_robot.runtime.bundle import (
    ACTOR_FILE,
    CONTRACT_FILE,
    ENCODER_FILE,
    GOLDEN_FILE,
    BundleContractError,
    BundleFileMissingError,
    BundleGoldenError,
    BundleGraphError,
    BundleHashError,
    BundleNotFoundError,
    BundleRobotMismatchError,
    BundleShapeError,
    RobotExpectation,
    load_bundle,
    read_contract,
    seal_contract,
)


def _raw(bundle: Path) -> dict:
    return json.loads((bundle / CONTRACT_FILE).read_text())


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


class TestPristine:
    def test_loads_and_reports_identity(self, bundle_dir: Path) -> None:
        """A freshly exported bundle loads; its identity is the contract's content hash."""
        b = load_bundle(bundle_dir)
        assert b.sha256 == _raw(bundle_dir)["contract_sha256"]
        assert b.contract.action_names == ("dx", "dy")
        assert b.contract.obs_names == ("x", "y")
        assert b.contract.posterior_convention == "pog-no-prior"
        assert b.golden_max_error < 1e-4

    def test_every_file_is_hashed(self, bundle_dir: Path) -> None:
        files = _raw(bundle_dir)["files"]
        assert set(files) == {ACTOR_FILE, ENCODER_FILE, GOLDEN_FILE}


class TestCorruption:
    @pytest.mark.parametrize("name", [ACTOR_FILE, ENCODER_FILE, GOLDEN_FILE])
    def test_flipped_byte_refused_naming_the_file(self, bundle_copy: Path, name: str) -> None:
        _flip_byte(bundle_copy / name)
        with pytest.raises(BundleHashError, match=name.replace(".", r"\.")):
            load_bundle(bundle_copy)

    @pytest.mark.parametrize("name", [ACTOR_FILE, ENCODER_FILE, GOLDEN_FILE, CONTRACT_FILE])
    def test_missing_file_refused_naming_it(self, bundle_copy: Path, name: str) -> None:
        (bundle_copy / name).unlink()
        with pytest.raises(BundleFileMissingError, match=name.replace(".", r"\.")):
            load_bundle(bundle_copy)

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(BundleNotFoundError, match="not found"):
            load_bundle(tmp_path / "nope")

    def test_edited_contract_value_refused(self, bundle_copy: Path) -> None:
        """Changing a limit in contract.json without re-sealing breaks its content hash."""
        raw = _raw(bundle_copy)
        raw["action"]["high"] = [0.5, 0.5]
        (bundle_copy / CONTRACT_FILE).write_text(json.dumps(raw))
        with pytest.raises(BundleHashError, match="contract.json"):
            load_bundle(bundle_copy)

    def test_flipped_byte_in_contract_refused(self, bundle_copy: Path) -> None:
        text = (bundle_copy / CONTRACT_FILE).read_text()
        i = text.index('"latent_dim": 5') + len('"latent_dim": ')
        (bundle_copy / CONTRACT_FILE).write_text(text[:i] + "4" + text[i + 1:])
        with pytest.raises(BundleHashError, match="contract.json"):
            load_bundle(bundle_copy)

    def test_contract_not_json(self, bundle_copy: Path) -> None:
        (bundle_copy / CONTRACT_FILE).write_text("{not json")
        with pytest.raises(BundleContractError, match="not valid JSON"):
            load_bundle(bundle_copy)

    def test_other_schema_refused(self, bundle_copy: Path) -> None:
        raw = _raw(bundle_copy)
        raw["schema"] = "pearl_robot.bundle/99"
        seal_contract(bundle_copy, raw)
        with pytest.raises(BundleContractError, match="bundle/99"):
            load_bundle(bundle_copy)

    def test_missing_contract_field_named(self, bundle_copy: Path) -> None:
        raw = _raw(bundle_copy)
        del raw["posterior"]["convention"]
        seal_contract(bundle_copy, raw)
        with pytest.raises(BundleContractError, match="posterior.convention"):
            load_bundle(bundle_copy)

    def test_wrong_latent_shape_refused(self, bundle_copy: Path) -> None:
        """A consistently hashed contract whose latent size disagrees with its own graphs
        section is refused before any graph is loaded."""
        raw = _raw(bundle_copy)
        raw["latent_dim"] = 6
        seal_contract(bundle_copy, raw)
        with pytest.raises(BundleContractError, match=r"graphs\.actor\.inputs\.z declares"):
            load_bundle(bundle_copy)

    def test_contract_consistent_but_graphs_differ(self, bundle_copy: Path) -> None:
        """Contract and its graphs section agree on latent 6; the ONNX graphs say 5."""
        raw = _raw(bundle_copy)
        raw["latent_dim"] = 6
        raw["graphs"]["actor"]["inputs"]["z"] = ["batch", 6]
        for t in ("mu", "var"):
            raw["graphs"]["encoder"]["outputs"][t] = ["batch", 6]
        seal_contract(bundle_copy, raw)
        with pytest.raises(BundleShapeError, match=r"actor\.onnx: input 'z' has shape"):
            load_bundle(bundle_copy)

    def test_graph_of_another_model_refused(self, bundle_copy: Path, tmp_path: Path) -> None:
        """actor.onnx replaced by one with another observation size (re-hashed)."""
        other = tmp_path / "next"
        write_test_bundle(other, "point-robot", hidden_sizes=(16,), encoder_hidden_sizes=(16,),
                          use_next_obs_in_context=True)
        shutil.copy(other / ENCODER_FILE, bundle_copy / ENCODER_FILE)
        seal_contract(bundle_copy, _raw(bundle_copy))
        with pytest.raises(BundleShapeError, match=r"encoder\.onnx: input 'transition'"):
            load_bundle(bundle_copy)

    def test_same_shape_other_weights_fail_golden(self, bundle_copy: Path,
                                                  other_bundle_dir: Path) -> None:
        """Right shapes, wrong weights: only the golden vectors can tell, and they do."""
        shutil.copy(other_bundle_dir / ACTOR_FILE, bundle_copy / ACTOR_FILE)
        seal_contract(bundle_copy, _raw(bundle_copy))
        with pytest.raises(BundleGoldenError, match="actor.action_mean"):
            load_bundle(bundle_copy)

    def test_golden_values_edited_refused(self, bundle_copy: Path) -> None:
        with np.load(bundle_copy / GOLDEN_FILE) as z:
            g = {k: z[k].copy() for k in z.files}
        g["encoder_var"][3, 1] *= 1.5
        np.savez(bundle_copy / GOLDEN_FILE, **g)
        seal_contract(bundle_copy, _raw(bundle_copy))
        with pytest.raises(BundleGoldenError, match=r"encoder\.var: row 3 entry 1"):
            load_bundle(bundle_copy)

    def test_golden_array_missing_refused(self, bundle_copy: Path) -> None:
        with np.load(bundle_copy / GOLDEN_FILE) as z:
            g = {k: z[k].copy() for k in z.files if k != "actor_eps"}
        np.savez(bundle_copy / GOLDEN_FILE, **g)
        seal_contract(bundle_copy, _raw(bundle_copy))
        with pytest.raises(BundleGoldenError, match="actor_eps"):
            load_bundle(bundle_copy)

    def test_not_an_onnx_graph_refused(self, bundle_copy: Path) -> None:
        (bundle_copy / ACTOR_FILE).write_bytes(b"definitely not protobuf" * 10)
        seal_contract(bundle_copy, _raw(bundle_copy))
        with pytest.raises(BundleGraphError, match="actor.onnx"):
            load_bundle(bundle_copy)


class TestRobotFit:
    def test_matching_robot_accepted(self, bundle_dir: Path) -> None:
        load_bundle(bundle_dir, RobotExpectation(("dx", "dy"), (-0.1, -0.1), (0.1, 0.1), 0.05,
                                                 ("x", "y")))

    def test_wrong_joint_order(self, bundle_dir: Path) -> None:
        with pytest.raises(BundleRobotMismatchError, match="first difference at index 0"):
            load_bundle(bundle_dir, RobotExpectation(("dy", "dx")))

    def test_unknown_joint_names(self, bundle_dir: Path) -> None:
        with pytest.raises(BundleRobotMismatchError, match="shoulder"):
            load_bundle(bundle_dir, RobotExpectation(("shoulder", "elbow")))

    def test_limits_beyond_robot(self, bundle_dir: Path) -> None:
        with pytest.raises(BundleRobotMismatchError, match=r"action\.high\[dy\]"):
            load_bundle(bundle_dir, RobotExpectation(("dx", "dy"), (-1, -1), (1, 0.05)))

    def test_control_period(self, bundle_dir: Path) -> None:
        with pytest.raises(BundleRobotMismatchError, match="control period"):
            load_bundle(bundle_dir, RobotExpectation(("dx", "dy"), control_period=0.01))

    def test_observation_names(self, bundle_dir: Path) -> None:
        with pytest.raises(BundleRobotMismatchError, match="observes"):
            load_bundle(bundle_dir, RobotExpectation(("dx", "dy"), obs_names=("y", "x")))

    def test_from_robot_spec_duck_typed(self, bundle_copy: Path) -> None:
        """The twin's RobotSpec shape: joints with effort_max, control period, interface."""
        raw = _raw(bundle_copy)
        assert raw["action"]["interface"] == "position_delta"  # what the point env declares
        raw["action"]["interface"] = "unspecified"
        seal_contract(bundle_copy, raw)
        bundle_dir = bundle_copy

        class J:
            def __init__(self, name: str, effort: float) -> None:
                self.name, self.effort_max = name, effort

        class Spec:
            joints = (J("dx", 1.0), J("dy", 1.0))
            control_period = 0.05
            command_interface = "effort"

        exp = RobotExpectation.from_robot_spec(Spec())
        assert exp.action_low == (-1.0, -1.0)
        load_bundle(bundle_dir, exp)  # bundle says "unspecified": not refused on interface
        raw_contract = read_contract(bundle_dir)
        assert raw_contract.command_interface == "unspecified"


class TestTwinRobot:
    """A twin-arm bundle against the robot description parsed from sim/arm3.xml."""

    def test_twin_bundle_fits_the_robot_spec(self, twin_bundle: Path) -> None:
        from pearl_robot.robot.description import load_robot_spec

        spec = load_robot_spec()
        b = load_bundle(twin_bundle, RobotExpectation.from_robot_spec(spec))
        assert b.contract.action_joints == tuple(spec.joint_names)
        # units, observation ranges and the interface come from the robot description
        assert b.contract.action_units == ("N*m",) * spec.n_joints
        assert b.contract.obs_units[0] == "rad" and b.contract.obs_units[-1] == "rad/s"
        assert b.contract.obs_low[0] == spec.joints[0].position_min
        assert b.contract.command_interface == "effort"
        assert b.contract.raw["robot"]["name"] == spec.name
        assert b.contract.action_names == tuple(f"{j}.effort" for j in spec.joint_names)

    def test_reordered_joints_refused(self, twin_bundle: Path) -> None:
        from pearl_robot.robot.description import load_robot_spec

        exp = RobotExpectation.from_robot_spec(load_robot_spec())
        names = exp.action_names
        swapped = RobotExpectation((names[1], names[0], *names[2:]), exp.action_low,
                                   exp.action_high, exp.control_period)
        with pytest.raises(BundleRobotMismatchError, match="first difference at index 0"):
            load_bundle(twin_bundle, swapped)

    def test_weaker_motors_refused(self, twin_bundle: Path) -> None:
        from pearl_robot.robot.description import load_robot_spec

        exp = RobotExpectation.from_robot_spec(load_robot_spec())
        weak = RobotExpectation(exp.action_names, tuple(0.5 * x for x in exp.action_low),
                                tuple(0.5 * x for x in exp.action_high), exp.control_period)
        with pytest.raises(BundleRobotMismatchError, match="outside the robot's limit"):
            load_bundle(twin_bundle, weak)

    def test_position_controlled_robot_refused(self, twin_bundle: Path) -> None:
        with pytest.raises(BundleRobotMismatchError, match="'position'"):
            load_bundle(twin_bundle, RobotExpectation(
                read_contract(twin_bundle).action_joints, command_interface="position"))

    def test_cli_check_against_the_twin(self, twin_bundle: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        from pearl_robot.cli import main

        assert main(["bundle", "check", str(twin_bundle), "--robot", "--ticks", "20"]) == 0
        assert "robot fit (joint names, limits, period)" in capsys.readouterr().out


def test_bundle_replaced_during_validation_is_never_mixed(bundle_copy: Path,
                                                          other_bundle_dir: Path) -> None:
    """An export --force to the same path while the robot validates it: the loader builds
    the sessions from the bytes it hashed, so it ends with the bundle it checked."""
    calls = []
    want = read_contract(bundle_copy).contract_sha256
    with np.load(bundle_copy / GOLDEN_FILE) as z:
        gold = {k: z[k].copy() for k in z.files}

    def replace_after_hashing() -> None:
        calls.append(1)
        if len(calls) == 2:  # hashes checked, sessions not created yet
            for name in (ACTOR_FILE, ENCODER_FILE, GOLDEN_FILE, CONTRACT_FILE):
                shutil.copy(other_bundle_dir / name, bundle_copy / name)

    b = load_bundle(bundle_copy, yield_point=replace_after_hashing)
    assert b.sha256 == want and len(calls) == 4
    # and its graphs are the checked ones, not the files now on disk
    mean = b.actor.run(["action_mean"], {"obs": gold["actor_obs"], "z": gold["actor_z"],
                                         "eps": gold["actor_eps"]})[0]
    np.testing.assert_allclose(mean, gold["actor_action_mean"], atol=1e-5)
    assert load_bundle(bundle_copy).sha256 != want  # the directory now holds the other one
