"""twin-arm-switching: physics switches mid-episode keep the arm's state."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

from pearl_robot.tasks.registry import make_family  # noqa: E402
from pearl_robot.tasks.switching_spec import ARM3_SWITCHING_SPEC, SwitchingSpec  # noqa: E402


def test_payload_switch_keeps_the_state_and_changes_the_dynamics() -> None:
    spec = SwitchingSpec((ARM3_SWITCHING_SPEC.kind("payload_added"),), first_after_s=1.0,
                         min_interval_s=100.0, mean_interval_s=100.0)
    fam = make_family("twin-arm-switching", horizon=60)
    from pearl_robot.tasks.switching import SwitchingFamily

    fam = SwitchingFamily(fam.base, spec)
    env = fam.make_env(seed=0)
    task = fam.tasks[0]
    env.set_task(type(task)(0, {**task.params, "payload_mass": 0.0,
                                "position_noise_std": 0.0, "velocity_noise_std": 0.0}))
    env.reset(seed=1)
    (sw,) = env.switches
    tw = env.env.twin
    for _ in range(sw.step):
        res = env.step(np.zeros(3))
    q_before = tw.data.qpos.copy()
    res = env.step(np.zeros(3))  # the switch applies before this step
    assert res.info["switch"] == "payload_added" and res.info["segment"] == 1
    assert tw.params["payload_mass"] == pytest.approx(sw.params["payload_mass"])
    # the arm continues from where it was (one 50 ms step away), it is not reset
    assert np.abs(tw.data.qpos - q_before).max() < 0.2
    assert not np.allclose(tw.data.qpos, tw.model.qpos0)
