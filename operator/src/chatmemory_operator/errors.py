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


class NameConflict(ReconcileError):
    """A name the memory asks for belongs to another memory, overlaps it, or names an object the
    operator did not create for this memory; not retried until the spec changes (the timer
    re-checks, so a name freed by the other memory's deletion is picked up)."""

    reason = "NameConflict"
    temporary = False


class NamespaceNotAllowed(ReconcileError):
    """The store's ``spec.allowedNamespaces`` does not admit the memory's namespace."""

    reason = "NamespaceNotAllowed"
    temporary = False


class CustomNamesNotAllowed(ReconcileError):
    """The memory sets a name and its store's ``spec.allowCustomNames`` is not true."""

    reason = "CustomNamesNotAllowed"
    temporary = False


class LimitExceeded(ReconcileError):
    """The memory asks for more than its store's ``spec.limits`` allow."""

    reason = "LimitExceeded"
    temporary = False
