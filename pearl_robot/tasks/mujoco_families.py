"""The MuJoCo task families, as registry entries (the registry adds them when it is asked).

Importing this module must not import MuJoCo (the registry imports it to list names, on machines
that may not have MuJoCo): every entry names a module and a factory that are imported only when
a family is made, and the env classes import MuJoCo only inside ``make_env``. It imports
nothing from the registry, so the two modules form no import circle.
"""

from __future__ import annotations

from typing import Any

_LOCO = "pearl_robot.tasks.locomotion"

MUJOCO_FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    # the default robot twin (sim/arm3.xml): goals x physics, and goals only
    "twin-arm": ("pearl_robot.tasks.twin_arm", "TwinArmFamily", {"physics": True}),
    "twin-arm-reach": ("pearl_robot.tasks.twin_arm", "TwinArmFamily", {"physics": False}),
    # the same tasks switching within episodes (goal, payload, friction, damping; issue 16)
    "twin-arm-switching": ("pearl_robot.tasks.switching", "twin_arm_switching", {}),
    # PEARL's benchmarks (oyster rlkit/envs, rand_param_envs) on the mujoco package
    "cheetah-vel": (_LOCO, "CheetahVelFamily", {}),
    "cheetah-dir": (_LOCO, "CheetahDirFamily", {}),
    "ant-dir": (_LOCO, "AntDirFamily", {}),
    "ant-goal": (_LOCO, "AntGoalFamily", {}),
    "humanoid-dir": (_LOCO, "HumanoidDirFamily", {}),
    "walker-rand-params": (_LOCO, "RandParamsFamily", {"robot": "walker"}),
    "hopper-rand-params": (_LOCO, "RandParamsFamily", {"robot": "hopper"}),
}
"""name -> (module, factory attribute, fixed keyword arguments), as ``registry.FAMILIES``."""
