"""The operator's error taxonomy, mapped onto kopf's retry semantics by the handlers.

Raised by backends and the reconcile layer; :mod:`chatmemory_operator.handlers` turns them into a
Ready condition (reason + message) and a kopf ``TemporaryError`` (retry with backoff) or
``PermanentError`` (no retry until the spec changes).
"""

from __future__ import annotations

from typing import ClassVar


class ReconcileError(Exception):
    """Base: carries the condition ``reason`` shown in status (the class name unless a subclass
    says otherwise) and whether a retry can help (``temporary``)."""

    reason: ClassVar[str] = "ReconcileError"
    temporary: ClassVar[bool] = True

    def __init_subclass__(cls, *, temporary: bool = True, reason: str = "") -> None:
        super().__init_subclass__()
        cls.reason = reason or cls.__name__
        cls.temporary = temporary


class BackendUnavailable(ReconcileError):
    """The server cannot be reached or refused the admin credentials; retried with backoff."""


class StoreNotFound(ReconcileError):
    """The referenced ChatMemoryStore (or the default one) does not exist yet; retried."""


class InvalidSpec(ReconcileError, temporary=False):
    """The spec can never work as written; not retried until it changes."""


class NotSupportedError(ReconcileError, temporary=False, reason="NotSupported"):
    """The server cannot do what the spec asks (decrease partitions, impossible replication)."""


class SecretNotFound(ReconcileError):
    """A store's admin Secret or CA Secret does not exist or lacks a key; retried."""


class NameConflict(ReconcileError, temporary=False):
    """A name the memory asks for belongs to another memory, overlaps it, or names an object the
    operator did not create for this memory; not retried until the spec changes (the timer
    re-checks, so a name freed by the other memory's deletion is picked up)."""


class NamespaceNotAllowed(ReconcileError, temporary=False):
    """The store's ``spec.allowedNamespaces`` does not admit the memory's namespace."""


class CustomNamesNotAllowed(ReconcileError, temporary=False):
    """The memory sets a name and its store's ``spec.allowCustomNames`` is not true."""


class LimitExceeded(ReconcileError, temporary=False):
    """The memory asks for more than its store's ``spec.limits`` allow."""
