"""The backend registry: which :class:`~.base.Backend` serves each :class:`BackendKind`.

The operator calls :func:`build_backends` once at startup (one instance per kind, serving every store
of that kind) and :meth:`~.base.Backend.close` on each at cleanup. The backend modules are imported
here only, so the reconcile layer depends on the protocol in :mod:`.base`, never on a client
library. A new backend is one module plus one line here (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from chatmemory.contract import BackendKind

from chatmemory_operator.backends.base import Backend
from chatmemory_operator.backends.kafka import KafkaBackend
from chatmemory_operator.backends.redis import RedisBackend
from chatmemory_operator.backends.tidb import TiDBBackend

#: A factory per backend kind; each call builds a fresh instance with its own client cache.
BACKENDS: Final[dict[BackendKind, Callable[[], Backend[Any, Any]]]] = {
    BackendKind.REDIS: RedisBackend,
    BackendKind.KAFKA: KafkaBackend,
    BackendKind.TIDB: TiDBBackend,
}


def build_backends() -> dict[BackendKind, Backend[Any, Any]]:
    """One backend instance per kind, for the operator's lifetime."""
    return {kind: factory() for kind, factory in BACKENDS.items()}


__all__ = ["BACKENDS", "Backend", "build_backends"]
