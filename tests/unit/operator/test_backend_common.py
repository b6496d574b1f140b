"""The backend registry and the shared helpers: client cache per store, secret redaction."""

from __future__ import annotations

import dataclasses

from chatmemory.contract import BackendKind
from chatmemory_operator.backends import BACKENDS, build_backends
from chatmemory_operator.backends._common import ClientCache, redact
from chatmemory_operator.backends.redis import RedisConnection


def test_build_backends_gives_one_backend_per_kind() -> None:
    backends = build_backends()
    assert set(backends) == set(BackendKind) == set(BACKENDS)
    for kind, backend in backends.items():
        assert backend.kind is kind
        for method in ("check", "observe", "ensure", "delete", "close"):
            assert callable(getattr(backend, method))
        backend.close()
        backend.close()  # safe to repeat


def test_redact_hides_every_secret() -> None:
    assert redact("bad pw hunter2 for hunter2", ["hunter2", ""]) == "bad pw *** for ***"


def test_client_cache_reuses_a_client_and_rebuilds_it_when_the_store_changes() -> None:
    closed: list[int] = []
    cache: ClientCache[int] = ClientCache(closed.append)
    store = RedisConnection(name="s", host="h", port=1, admin_password="a")
    built = iter(range(10))
    assert cache.get(store, lambda: next(built)) == 0
    assert cache.get(store, lambda: next(built)) == 0
    rotated = dataclasses.replace(store, admin_password="b")
    assert cache.get(rotated, lambda: next(built)) == 1
    assert closed == [0]
    cache.discard(rotated)
    assert closed == [0, 1]
    assert cache.get(rotated, lambda: next(built)) == 2
    cache.close()
    assert closed == [0, 1, 2]
