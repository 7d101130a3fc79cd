"""ArmTwin: limits, latency, parameters that change the physics they claim to, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_robot.twin.arm import ArmTwin, TwinError


def _run(twin: ArmTwin, effort: list[float], steps: int, qpos: list[float] | None = None):
    twin.reset(qpos)
    out = []
    for _ in range(steps):
        twin.apply_command(np.asarray(effort))
        out.append(twin.advance(0.05))
    return out


def test_reset_reads_home_at_rest() -> None:
    twin = ArmTwin()
    s = twin.reset()
    np.testing.assert_allclose(s.position, twin.home)
    np.testing.assert_allclose(s.velocity, 0.0)
    assert twin.time == 0.0
    twin.advance(0.05)
    assert twin.time == pytest.approx(0.05)


def test_commands_are_clipped_to_effort_limits() -> None:
    twin = ArmTwin()
    twin.reset([0.0, 0.0, 0.0])
    twin.apply_command(np.array([100.0, -100.0, 100.0]))
    s = twin.advance(0.01)
    np.testing.assert_allclose(s.effort, [3.0, -6.0, 3.0])


def test_bad_command_is_refused_and_holds_zero() -> None:
    twin = ArmTwin()
    twin.reset()
    twin.apply_command(np.array([1.0, 2.0, 1.0]))
    twin.advance(0.01)
    with pytest.raises(TwinError, match="finite"):
        twin.apply_command(np.array([np.nan, 0.0, 0.0]))
    np.testing.assert_allclose(twin.advance(0.01).effort, 0.0)
    with pytest.raises(TwinError, match="3 finite"):
        twin.apply_command(np.zeros(2))


def test_unknown_or_negative_params_raise() -> None:
    with pytest.raises(TwinError, match="unknown twin parameter"):
        ArmTwin({"payload_kg": 1.0})
    with pytest.raises(TwinError, match="payload_mass"):
        ArmTwin({"payload_mass": -1.0})


def test_heavier_payload_accelerates_slower() -> None:
    # base yaw only: no gravity torque, so the difference is inertia alone
    speeds = []
    for mass in (0.0, 0.5):
        twin = ArmTwin({"payload_mass": mass})
        s = _run(twin, [2.0, 0.0, 0.0], 2, qpos=[0.0, 1.2, 0.0])[-1]
        speeds.append(s.velocity[0])
    assert speeds[0] > speeds[1] * 1.3 > 0


def test_heavier_payload_sags_more_under_gravity() -> None:
    pos = [_run(ArmTwin({"payload_mass": m}), [0, 0, 0], 3, qpos=[0, 0.8, 0])[-1].position[1]
           for m in (0.0, 0.5)]
    assert pos[1] > pos[0]  # shoulder falls further forward with the heavier payload


def test_strength_scales_torque() -> None:
    weak = ArmTwin({"strength_scale": [0.7, 1.0, 1.0]})
    weak.reset()
    weak.apply_command(np.array([2.0, 0.0, 0.0]))
    assert weak.advance(0.004).effort[0] == pytest.approx(1.4)


def test_damping_and_friction_slow_the_joint() -> None:
    v = {}
    for name, params in {"nominal": {}, "damped": {"damping_scale": [2.0, 1.0, 1.0]},
                         "sticky": {"friction_scale": [2.0, 1.0, 1.0]}}.items():
        v[name] = _run(ArmTwin(params), [1.0, 0.0, 0.0], 6, qpos=[0, 1.2, 0])[-1].velocity[0]
    assert v["nominal"] > v["damped"] > 0
    assert v["nominal"] > v["sticky"] > 0


def test_params_do_not_compound_when_set_twice() -> None:
    twin = ArmTwin()
    nominal = twin.model.dof_damping.copy()
    twin.set_params({"damping_scale": [2.0, 2.0, 2.0]})
    twin.set_params({"damping_scale": [2.0, 2.0, 2.0]})
    np.testing.assert_allclose(twin.model.dof_damping, 2 * nominal)


def test_latency_delays_the_command_by_whole_steps() -> None:
    twin = ArmTwin({"latency_s": 0.02})
    assert twin.latency_steps == 10
    twin.reset([0.0, 1.2, 0.0])
    twin.apply_command(np.array([2.0, 0.0, 0.0]))
    s = twin.advance(0.018)  # 9 steps: not yet arrived
    assert s.effort[0] == 0.0
    s = twin.advance(0.004)
    assert s.effort[0] == pytest.approx(2.0)


def test_advance_chunking_does_not_change_the_result() -> None:
    a = ArmTwin({"latency_s": 0.014})
    b = ArmTwin({"latency_s": 0.014})
    a.reset(), b.reset()
    for k in range(5):
        cmd = np.array([np.sin(k), np.cos(k), 0.5])
        a.apply_command(cmd)
        b.apply_command(cmd)
        a.advance(0.05)
        for _ in range(25):
            b.advance(0.002)
    np.testing.assert_array_equal(a.true_state().position, b.true_state().position)


def test_sensor_noise_is_seeded_and_sized() -> None:
    params = {"position_noise_std": 0.01, "velocity_noise_std": 0.1}
    a, b, c = ArmTwin(params, seed=3), ArmTwin(params, seed=3), ArmTwin(params, seed=4)
    ra, rb, rc = (_run(t, [0, 0, 0], 40, qpos=[0, 0, 0]) for t in (a, b, c))
    pa = np.array([s.position for s in ra])
    np.testing.assert_array_equal(pa, np.array([s.position for s in rb]))
    assert not np.array_equal(pa, np.array([s.position for s in rc]))
    err = pa - np.array(a.true_state().position)  # arm stays upright: true position ~ 0
    assert 0.005 < err.std() < 0.02
