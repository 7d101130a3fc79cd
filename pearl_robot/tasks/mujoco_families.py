"""Registers the MuJoCo task families with the registry.

Importing this module must not import MuJoCo (the registry imports it to list names, on machines
that may not have MuJoCo): every entry names a module and a factory that are imported only when
a family is made, and the env classes import MuJoCo only inside ``make_env``.
"""

from __future__ import annotations

from pearl_robot.tasks.registry import register

# the default robot twin (sim/arm3.xml): goals x physics, and goals only
register("twin-arm", "pearl_robot.tasks.twin_arm", "TwinArmFamily", physics=True)
register("twin-arm-reach", "pearl_robot.tasks.twin_arm", "TwinArmFamily", physics=False)
# the same tasks switching within episodes (goal, payload, friction, damping; issue 16)
register("twin-arm-switching", "pearl_robot.tasks.switching", "twin_arm_switching")

# PEARL's benchmarks (oyster rlkit/envs, rand_param_envs) on the mujoco package
_LOCO = "pearl_robot.tasks.locomotion"
register("cheetah-vel", _LOCO, "CheetahVelFamily")
register("cheetah-dir", _LOCO, "CheetahDirFamily")
register("ant-dir", _LOCO, "AntDirFamily")
register("ant-goal", _LOCO, "AntGoalFamily")
register("humanoid-dir", _LOCO, "HumanoidDirFamily")
register("walker-rand-params", _LOCO, "RandParamsFamily", robot="walker")
register("hopper-rand-params", _LOCO, "RandParamsFamily", robot="hopper")
