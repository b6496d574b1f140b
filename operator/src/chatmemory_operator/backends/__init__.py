"""The backend registry: which :class:`~.base.Backend` serves each :class:`BackendKind`.

The operator calls :func:`build_backends` once at startup and :meth:`~.base.Backend.close` on each
at cleanup. The backend modules are imported here only, so the reconcile layer depends on the
protocol in :mod:`.base`, never on a client library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from chatmemory.contract import BackendKind

from chatmemory_operator.backends.base import Backend
from chatmemory_operator.backends.kafka import KafkaBackend
from chatmemory_operator.backends.redis import RedisBackend
from chatmemory_operator.backends.tidb import TiDBBackend

#: A factory per backend kind; each call builds a fresh instance with its own client cache.
BACKENDS: Final[dict[BackendKind, Callable[[], Backend]]] = {
    BackendKind.REDIS: RedisBackend,
    BackendKind.KAFKA: KafkaBackend,
    BackendKind.TIDB: TiDBBackend,
}


def build_backends() -> dict[BackendKind, Backend]:
    """One backend instance per kind, for the operator's lifetime."""
    return {kind: factory() for kind, factory in BACKENDS.items()}


__all__ = ["BACKENDS", "Backend", "build_backends"]
