"""The robot's online belief: the belief steps live in ``core.inference`` (one owner for the
trainer's evaluation and the runtime); re-exported here for the runtime's public API."""

from pearl_robot.core.inference import OnlineBelief, ParticleBelief, StepBelief

__all__ = ["OnlineBelief", "ParticleBelief", "StepBelief"]
