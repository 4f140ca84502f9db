"""Errors of the explanation store; each message says what went wrong and what to do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreLocationError(StoreError):
    """The location is not a store (a plain file, a foreign folder, or nothing there when reading)."""


class SchemaVersionError(StoreError):
    """The store was written by a newer or incompatible version of attn-audit."""


class UnknownRunError(StoreError, KeyError):
    """No run with that id (or id prefix) in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SampleNotFoundError(StoreError, KeyError):
    """The sample is not part of the run (or has no maps for the requested method)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class QueryError(StoreError):
    """An SQL query that cannot run: a syntax error, an unknown table or column, a write statement."""
