"""Errors of the explanation store; each message says what went wrong and what to do."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of an error's message: deltalake's errors go on with a Rust backtrace."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreConflictError(StoreError):
    """Too many concurrent writers committed at the same moment; trying again later can succeed."""


class StoreLocationError(StoreError):
    """The location is not a store (a plain file, a foreign folder, or nothing there when reading)."""


class StoreDamagedError(StoreError):
    """A table's log or data files are damaged (lost, emptied, truncated): `attn-audit store check` says what
    is wrong and what `--repair` can recover."""


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
