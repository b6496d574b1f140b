"""The SDK's exceptions, raised to applications; never swallowed.

Everything the SDK raises on purpose derives from :class:`ChatMemoryError`, so callers can catch one
family. Backend client errors (redis-py, confluent-kafka, PyMySQL) are re-raised as
:class:`BackendError` with the original as ``__cause__``.
"""

from __future__ import annotations


class ChatMemoryError(Exception):
    """Base class of every error the SDK raises on purpose."""


class BindingError(ChatMemoryError):
    """A binding is missing, malformed or of an unknown contract version.

    ``key`` names the offending Secret key and ``source`` where the binding was read from (a
    directory, ``env:CHATMEMORY_...`` or ``secret ns/name``).
    """

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        self.key = key
        self.source = source
        super().__init__(f"{message} (binding source: {source})" if source else message)


class BindingNotFound(BindingError):
    """No binding exists in any of the sources that were searched."""


class MissingExtra(ChatMemoryError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"the {extra!r} backend needs the {module!r} package: pip install 'chatmemory[{extra}]'"
        )
        self.extra = extra


class BackendError(ChatMemoryError):
    """The backend refused or failed an operation (connection, auth, permission, delivery)."""


class BackendUnavailable(BackendError):
    """The server did not answer in time or could not be reached (a connect or operation timeout,
    a refused or broken connection); the message names ``host:port`` and the cause.

    ``applied`` says what a failed write did: ``False`` when it was never sent (the connection could
    not be opened), ``None`` when it may or may not have been applied (the connection failed after
    it was sent: read the session before writing it again). Reads leave it ``None``.
    """

    def __init__(self, message: str, *, applied: bool | None = None) -> None:
        super().__init__(message)
        self.applied = applied


class NotSupported(ChatMemoryError):
    """The operation does not exist on this backend; the message names the alternative."""
