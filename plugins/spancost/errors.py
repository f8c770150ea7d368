"""The spancost exception tree. Every error names what was wrong and where."""

from __future__ import annotations


class SpancostError(Exception):
    """Root of every error spancost raises on purpose."""


class ConfigError(SpancostError, ValueError):
    """A setting is missing or malformed; the message names the setting."""


class BadExport(SpancostError, ValueError):
    """An S3 object could not be decoded as an OTLP trace export.

    The object is quarantined whole; the message names the object and the place.
    """


class InfrastructureError(SpancostError, RuntimeError):
    """Postgres, S3 or another dependency failed; the task should fail and retry."""
