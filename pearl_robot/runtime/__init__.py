"""ROS-free deploy runtime: bundle loader, online belief, z schedules, command safety, episodes.

Imports neither torch nor rclpy nor MuJoCo (a test asserts it); needs numpy and onnxruntime.
The control loop uses :class:`PolicyRuntime` (see ``runtime/policy.py`` for the API).
"""

from pearl_robot.runtime.belief import OnlineBelief, ParticleBelief
from pearl_robot.runtime.bundle import (
    Bundle,
    BundleCompatibilityError,
    BundleContractError,
    BundleError,
    BundleFileMissingError,
    BundleGoldenError,
    BundleGraphError,
    BundleHashError,
    BundleNotFoundError,
    BundleRobotMismatchError,
    BundleShapeError,
    Contract,
    RobotExpectation,
    load_bundle,
    read_contract,
)
from pearl_robot.runtime.policy import (
    EpisodeStart,
    EpisodeSummary,
    ObsCheck,
    PolicyRuntime,
    RuntimeConfig,
    SwapStatus,
    TickResult,
    TickTimings,
)
from pearl_robot.runtime.safety import ActionSafety

__all__ = [
    "ActionSafety", "Bundle", "BundleCompatibilityError", "BundleContractError", "BundleError",
    "BundleFileMissingError", "BundleGoldenError", "BundleGraphError", "BundleHashError",
    "BundleNotFoundError", "BundleRobotMismatchError", "BundleShapeError", "Contract",
    "EpisodeStart", "EpisodeSummary", "ObsCheck", "OnlineBelief", "ParticleBelief",
    "PolicyRuntime", "RobotExpectation", "RuntimeConfig", "SwapStatus", "TickResult",
    "TickTimings", "load_bundle", "read_contract",
]
