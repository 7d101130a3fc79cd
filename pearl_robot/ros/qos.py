"""QoS profiles of the adapt graph, defined once (docs/architecture.md, "ROS 2 graph").

Why these and not the defaults:

- Streams (``/joint_states``, ``/pearl/command``) keep only the newest few samples: a control loop
  wants the latest state, never a backlog. Publishers are RELIABLE with a small depth, which a
  ros2_control ``forward_command_controller`` (reliable subscriber) accepts; our subscribers are
  BEST_EFFORT, which matches both reliable and best-effort publishers (a ros2_control
  ``joint_state_broadcaster`` or a driver using ``qos_profile_sensor_data``).
- The deadline is *offered* by our publishers (two control periods). It is not *requested* by our
  subscribers, because DDS refuses a match when a publisher offers no deadline (every ros2_control
  publisher) and the subscriber requests one. Staleness on the receiving side is instead measured
  per tick from the message's arrival time (the policy's stale-observation rule), which is tighter
  than a deadline event anyway.
- Transitions are the training data: RELIABLE with a deep queue (60 s at 20 Hz), so a logger busy
  for a moment loses nothing.
- ``/pearl/task`` and ``/pearl/estop`` are latched (TRANSIENT_LOCAL, depth 1): a node that starts
  late still learns the current task and whether the robot is stopped.
"""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)

STREAM_DEPTH = 5
"""Samples kept per stream endpoint; the newest one is what the control loop uses."""
TRANSITION_DEPTH = 1200
"""Transitions queued per endpoint: 60 s of 20 Hz data."""
DEADLINE_PERIODS = 2.0
"""Offered deadline of a stream publisher, in control periods."""


def stream_publisher(control_period: float) -> QoSProfile:
    """``/joint_states`` and ``/pearl/command`` publishers: reliable, newest few, with deadline."""
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=STREAM_DEPTH,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.VOLATILE,
        deadline=Duration(nanoseconds=int(DEADLINE_PERIODS * control_period * 1e9)),
    )


def stream_subscription() -> QoSProfile:
    """``/joint_states`` and ``/pearl/command`` subscribers: best effort, newest few."""
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=STREAM_DEPTH,
        reliability=QoSReliabilityPolicy.BEST_EFFORT,
        durability=QoSDurabilityPolicy.VOLATILE,
    )


def transitions() -> QoSProfile:
    """``/pearl/transition`` on both ends: reliable, deep."""
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=TRANSITION_DEPTH,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.VOLATILE,
    )


def latched() -> QoSProfile:
    """``/pearl/task`` and ``/pearl/estop`` on both ends: the last value reaches late joiners."""
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )


def status() -> QoSProfile:
    """``/pearl/belief`` and ``/diagnostics``: the ROS default (reliable, depth 10), which is
    what ``rqt_robot_monitor`` and ``ros2 topic echo`` expect."""
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=10,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.VOLATILE,
    )
