"""The project's error base class.

Every expected, user-facing failure (a config field out of range, a corrupt checkpoint or
bundle, a truncated log, a wrong protocol version) raises a subclass of :class:`PearlRobotError`
with a message that names the problem. The CLI prints these as one line without a traceback;
anything else escaping is a bug.
"""


class PearlRobotError(Exception):
    """Base of the project's expected errors."""


class ConfigError(PearlRobotError, ValueError):
    """A configuration value is missing, unknown or out of range; the message names the field."""
