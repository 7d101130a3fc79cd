"""robot_spec parses the MJCF without MuJoCo and agrees with what MuJoCo compiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pearl_robot.robot.description import (
    RobotSpecError,
    default_mjcf_path,
    load_robot_spec,
)


def test_default_spec_names_and_rate() -> None:
    spec = load_robot_spec()
    assert spec.name == "arm3"
    assert spec.joint_names == ("base_yaw", "shoulder", "elbow")
    assert spec.control_period == pytest.approx(0.05)
    assert spec.command_interface == "effort"
    for j in spec.joints:
        assert j.position_min < 0 < j.position_max
        assert j.velocity_max > 0 and j.effort_max > 0


def test_spec_agrees_with_compiled_model() -> None:
    mujoco = pytest.importorskip("mujoco")
    spec = load_robot_spec()
    m = mujoco.MjModel.from_xml_path(str(default_mjcf_path()))
    assert m.nu == spec.n_joints
    for i, j in enumerate(spec.joints):
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        assert jid >= 0
        assert m.actuator_trnid[i, 0] == jid
        assert m.jnt_limited[jid]
        np.testing.assert_allclose(m.jnt_range[jid], [j.position_min, j.position_max])
        np.testing.assert_allclose(m.actuator_ctrlrange[i] * m.actuator_gear[i, 0],
                                   [-j.effort_max, j.effort_max])
        nid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_NUMERIC, f"pearl/velocity_max/{j.name}")
        assert m.numeric_data[m.numeric_adr[nid]] == pytest.approx(j.velocity_max)
    # 20 Hz on a whole number of physics steps
    ratio = spec.control_period / m.opt.timestep
    assert ratio == pytest.approx(round(ratio))


def test_spec_module_imports_without_mujoco() -> None:
    code = ("import sys; import pearl_robot.robot.description as r; r.load_robot_spec(); "
            "import pearl_robot.twin; assert 'mujoco' not in sys.modules, 'mujoco imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _write(tmp_path: Path, body: str, compiler: str = '<compiler angle="radian"/>') -> Path:
    p = tmp_path / "robot.xml"
    p.write_text(f'<mujoco model="r">{compiler}<custom>'
                 '<numeric name="pearl/velocity_max/j" data="2"/>'
                 '<numeric name="pearl/control_period" data="0.05"/></custom>'
                 f'<worldbody><body><joint name="j" type="hinge" range="-1 1"/>'
                 '<geom size="0.1"/></body></worldbody>' + body + "</mujoco>")
    return p


def test_degree_ranges_are_converted(tmp_path: Path) -> None:
    p = _write(tmp_path, '<actuator><motor joint="j" ctrlrange="-2 2" gear="3"/></actuator>',
               compiler="")
    spec = load_robot_spec(p)
    assert spec.joints[0].position_max == pytest.approx(np.pi / 180)
    assert spec.joints[0].effort_max == pytest.approx(6.0)


@pytest.mark.parametrize("body, needle", [
    ("", "no <actuator>"),
    ('<actuator><motor joint="nope" ctrlrange="-1 1"/></actuator>', "unknown joint"),
    ('<actuator><motor joint="j"/></actuator>', "ctrlrange is missing"),
    ('<actuator><motor joint="j" ctrlrange="-1 2"/></actuator>', "symmetric"),
    ('<actuator><motor joint="j" ctrlrange="-1 x"/></actuator>', "not numeric"),
])
def test_bad_models_name_the_problem(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(RobotSpecError, match=needle):
        load_robot_spec(_write(tmp_path, body))


def test_missing_velocity_limit_and_file(tmp_path: Path) -> None:
    p = tmp_path / "r.xml"
    p.write_text('<mujoco><compiler angle="radian"/><worldbody><body><joint name="k" '
                 'range="-1 1"/><geom size=".1"/></body></worldbody><actuator><motor joint="k" '
                 'ctrlrange="-1 1"/></actuator></mujoco>')
    with pytest.raises(RobotSpecError, match="velocity_max/k"):
        load_robot_spec(p)
    with pytest.raises(RobotSpecError, match="does not exist"):
        load_robot_spec(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<mujoco><worldbody>")
    with pytest.raises(RobotSpecError, match="not valid XML"):
        load_robot_spec(bad)
