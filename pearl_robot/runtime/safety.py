"""Command safety between the network and the motors: limits, rate limit, safe command.

The network's output never goes to the robot unchecked. Every command is clipped to the
contract's limits (which ``load_bundle`` has already checked against the robot's declared
limits) and, when a rate limit is set, moved at most ``max_delta`` per tick from the previous
command. Whenever the policy cannot be trusted for a tick (non-finite or stale observation,
non-finite output, inference error) the *safe command* is sent instead: zero effort clipped
into the limits unless the caller sets one. The safe command is applied at once, never
rate-limited (a stop must not be delayed); the next policy command ramps away from it.
"""

from __future__ import annotations

import numpy as np


class ActionSafety:
    """Clip + rate limit + safe command, on preallocated arrays (no allocation per tick)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, safe_action: np.ndarray | None = None,
                 max_delta: np.ndarray | float | None = None) -> None:
        self.low = np.asarray(low, dtype=np.float64).copy()
        self.high = np.asarray(high, dtype=np.float64).copy()
        n = self.low.shape[0]
        if self.low.shape != (n,) or self.high.shape != (n,) or not np.all(self.high > self.low):
            raise ValueError("command limits must be two vectors with high > low")
        safe = np.zeros(n) if safe_action is None else np.asarray(safe_action, dtype=np.float64)
        if safe.shape != (n,) or not np.all(np.isfinite(safe)):
            raise ValueError(f"safe_action must be {n} finite numbers, got {safe_action!r}")
        if np.any(safe < self.low) or np.any(safe > self.high):
            raise ValueError(f"safe_action {safe.tolist()} lies outside the command limits "
                             f"[{self.low.tolist()}, {self.high.tolist()}]")
        self.safe_action = safe
        if max_delta is None:
            self.max_delta = None
        else:
            md = np.broadcast_to(np.asarray(max_delta, dtype=np.float64), (n,)).copy()
            if not np.all(md > 0) or not np.all(np.isfinite(md)):
                raise ValueError(f"max_delta must be > 0, got {max_delta!r}")
            self.max_delta = md
        self._last = safe.copy()
        self._lo = np.empty(n)
        self._hi = np.empty(n)

    @property
    def last(self) -> np.ndarray:
        """The last command written (live view)."""
        return self._last

    def reset(self) -> None:
        """Start from the safe command (episode start: the rate limit ramps in from rest)."""
        self._last[:] = self.safe_action

    def write_safe(self, out: np.ndarray) -> None:
        """Write the safe command into ``out`` and remember it as the last command."""
        out[:] = self.safe_action
        self._last[:] = out

    def apply(self, action: np.ndarray, out: np.ndarray) -> bool:
        """Limit a finite ``action`` into ``out``; True when it had to be changed."""
        np.minimum(action, self.high, out=out)
        np.maximum(out, self.low, out=out)
        if self.max_delta is not None:
            np.subtract(self._last, self.max_delta, out=self._lo)
            np.add(self._last, self.max_delta, out=self._hi)
            np.minimum(out, self._hi, out=out)
            np.maximum(out, self._lo, out=out)
        self._last[:] = out
        return out.tolist() != action.tolist()  # list compare: fastest for a few entries
