"""Errors streamrl raises for bad input. Each message is one actionable line; the CLI
prints it as ``error: <message>`` and exits with status 2 (1 for a failed run)."""

from __future__ import annotations

__all__ = [
    "StreamRLError",
    "UnknownEnvError",
    "UnsupportedSpaceError",
    "MissingExtraError",
    "NonFiniteError",
    "ConfigError",
    "CheckpointError",
    "WriteError",
]


class StreamRLError(Exception):
    """Base class: a problem the user can fix, with a one-line message."""


class ConfigError(StreamRLError, ValueError):
    """An invalid hyper-parameter or option."""


class UnknownEnvError(StreamRLError, KeyError):
    """The environment id is not registered; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnsupportedSpaceError(StreamRLError, TypeError):
    """The environment's observation or action space is not one streamrl supports."""


class MissingExtraError(StreamRLError, ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""


class NonFiniteError(StreamRLError, FloatingPointError):
    """A non-finite observation or reward reached the agent; the run stops at that step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class CheckpointError(StreamRLError):
    """A checkpoint is missing, unreadable, or belongs to another run."""


class WriteError(StreamRLError):
    """The run directory could not be written during a run (a full disk, a file-size
    limit, a directory made read-only): the run stops, its summary says ``failed`` where it
    can still be written, and the message says how to resume."""
