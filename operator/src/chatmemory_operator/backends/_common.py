"""Small helpers shared by the backend modules: a per-store client cache and secret redaction.

Used by :mod:`.redis`, :mod:`.kafka` and :mod:`.tidb` only; nothing here talks to a server. Kept
tiny on purpose so the three backends stay independent of each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from chatmemory_operator import config
from chatmemory_operator.backends.base import StoreConnection

T = TypeVar("T")

#: Seconds to wait for a TCP connect / a TLS handshake: a dead backend must not hang a handler.
CONNECT_TIMEOUT = 4.0
#: Seconds to wait for one admin request (DDL on TiDB can take a second or two); a server that does
#: not answer in time is BackendUnavailable (``CHATMEMORY_BACKEND_TIMEOUT``, default 10).
REQUEST_TIMEOUT = config.load().backend_timeout


def fingerprint(store: StoreConnection) -> str:
    """Everything that decides how to connect, hashed so the admin password is not kept as text."""
    h = hashlib.sha256(type(store).__name__.encode())
    for value in dataclasses.astuple(store):
        h.update(b"\0")
        h.update(repr(value).encode())
    return h.hexdigest()


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` (an error message from a server) with ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


class ClientCache(Generic[T]):
    """One admin client per store name, rebuilt when the store's connection parameters change.

    Thread-safe: kopf runs sync handlers in a thread pool. ``close_fn`` releases a client.
    """

    def __init__(self, close_fn: Callable[[T], None]) -> None:
        self._close_fn = close_fn
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[str, T]] = {}

    def get(self, store: StoreConnection, factory: Callable[[], T]) -> T:
        fp = fingerprint(store)
        stale: T | None = None
        with self._lock:
            cached = self._clients.get(store.name)
            if cached is not None and cached[0] == fp:
                return cached[1]
            if cached is not None:
                stale = cached[1]
                del self._clients[store.name]
        if stale is not None:
            self._safe_close(stale)
        client = factory()  # may raise; built outside the lock so one dead store blocks no other
        with self._lock:
            cached = self._clients.get(store.name)
            if cached is not None and cached[0] == fp:
                # another thread won the race: keep its client
                self._safe_close(client)
                return cached[1]
            self._clients[store.name] = (fp, client)
            return client

    def discard(self, store: StoreConnection) -> None:
        """Forget (and close) a store's client, e.g. after its connection broke."""
        with self._lock:
            cached = self._clients.pop(store.name, None)
        if cached is not None:
            self._safe_close(cached[1])

    def close(self) -> None:
        with self._lock:
            clients = [c for _, c in self._clients.values()]
            self._clients.clear()
        for c in clients:
            self._safe_close(c)

    def _safe_close(self, client: T) -> None:
        # closing is best effort: the client is dropped either way
        with contextlib.suppress(Exception):
            self._close_fn(client)
