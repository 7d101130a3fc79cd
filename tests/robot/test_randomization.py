"""The robot's randomization spec (numpy only): sampled parameters stay inside it, and a
value outside it is named."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_robot.robot.randomization import ARM3_PHYSICS_SPEC, check_params, sample_params


def test_sampled_params_stay_inside_the_spec() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = sample_params(ARM3_PHYSICS_SPEC, rng)
        assert check_params(ARM3_PHYSICS_SPEC, p) == []
        assert p["latency_s"] / 0.002 == pytest.approx(round(p["latency_s"] / 0.002))
    bad = dict(p, payload_mass=0.9)
    assert check_params(ARM3_PHYSICS_SPEC, bad) and "payload_mass" in check_params(
        ARM3_PHYSICS_SPEC, bad)[0]
