"""PEARL meta-RL as a real-robot control stack.

Subpackages and what they may import (docs/architecture.md):
core (torch+numpy), tasks (numpy; MuJoCo families lazily), twin (mujoco), train, export,
runtime / datalog / hardware (no torch, no mujoco: the robot's computer), ros (the only rclpy).
"""

__version__ = "0.1.0"
