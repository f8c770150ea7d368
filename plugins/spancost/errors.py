"""The spancost exception tree. Every error names what was wrong and where."""

from __future__ import annotations


class SpancostError(Exception):
    """Root of every error spancost raises on purpose."""


class ConfigError(SpancostError, ValueError):
    """A setting is missing or malformed; the message names the setting."""


class BadExport(SpancostError, ValueError):
    """An S3 object could not be decoded as an OTLP trace export.

    The object is quarantined whole; the message names the object and the place.
    ``location`` is that place alone (``line 3, column 7``, a JSON path such as
    ``$.resourceSpans[0].scopeSpans``), and ``error_type`` the name of the error
    underneath (``DecodeError``, ``RecursionError``…); both go on the manifest row.
    """

    def __init__(
        self, message: str, *, location: str | None = None, error_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.location = location
        self.error_type = error_type or type(self).__name__


class InfrastructureError(SpancostError, RuntimeError):
    """Postgres, S3 or another dependency failed; the task should fail and retry."""
