"""The episode controller's log events (``runtime.episodes.Event``) onto a node's logger.

rclpy's logger refuses a call site whose severity or throttle changes between calls, so each
kind of event has exactly one call site here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pearl_robot.runtime.episodes import Event, Level


def log_events(logger: Any, events: Iterable[Event]) -> None:
    """Log each event at its level; a throttled one (a failing tick) at most once a second."""
    for ev in events:
        if ev.throttle_s:  # the only throttled kind: a failing tick (an error, 1 s)
            logger.error(ev.message, throttle_duration_sec=1.0)
        elif ev.level is Level.INFO:
            logger.info(ev.message)
        elif ev.level is Level.WARNING:
            logger.warning(ev.message)
        else:
            logger.error(ev.message)
