"""The operator's error taxonomy, mapped onto kopf's retry semantics by the handlers.

Raised by backends and the reconcile layer; :mod:`chatmemory_operator.handlers` turns them into a
Ready condition (reason + message) and a kopf ``TemporaryError`` (retry with backoff) or
``PermanentError`` (no retry until the spec changes).
"""

from __future__ import annotations


class ReconcileError(Exception):
    """Base: carries the condition ``reason`` shown in status."""

    reason = "ReconcileError"
    temporary = True


class BackendUnavailable(ReconcileError):
    """The server cannot be reached or refused the admin credentials; retried with backoff."""

    reason = "BackendUnavailable"


class StoreNotFound(ReconcileError):
    """The referenced ChatMemoryStore (or the default one) does not exist yet; retried."""

    reason = "StoreNotFound"


class InvalidSpec(ReconcileError):
    """The spec can never work as written; not retried until it changes."""

    reason = "InvalidSpec"
    temporary = False


class NotSupportedError(ReconcileError):
    """The server cannot do what the spec asks (decrease partitions, impossible replication)."""

    reason = "NotSupported"
    temporary = False


class SecretNotFound(ReconcileError):
    """A store's admin Secret or CA Secret does not exist or lacks a key; retried."""

    reason = "SecretNotFound"
