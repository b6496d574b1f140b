"""An asyncio client that follows its Secret never reads the Secret on its event loop.

A source's read may be a blocking HTTP call to the Kubernetes API, made under the source's lock:
the async Redis client's credential provider reads in a thread, and marking the source stale after
a refusal (``refresh``, called on the loop) neither reads nor waits for a read under way. The async
SQL pool's opener is proved against real servers (``tests/integration/sdk/test_tidb_async.py``).
"""

from __future__ import annotations

import asyncio
import threading

from chatmemory._connect import redis_kwargs
from chatmemory.contract import BackendKind, Binding
from chatmemory.loaders import BindingSource

#: How long a held read waits to be released: reaching it means the caller waited on the read.
HANG = 5.0

FIRST = Binding(backend=BackendKind.REDIS, provider="redis", host="h", port=6379, username="u", password="p1")
ROTATED = FIRST.model_copy(update={"password": "p2"})


class RecordingLoader:
    """A source's loader that records the thread each read runs on; it may be held mid-read."""

    def __init__(self, answer: Binding) -> None:
        self.answer = answer
        self.threads: list[threading.Thread] = []
        self.release = threading.Event()
        self.release.set()
        self.reading = threading.Event()
        self.held_too_long = False  # a read held until HANG: something waited on it

    def __call__(self) -> Binding:
        self.threads.append(threading.current_thread())
        self.reading.set()
        self.held_too_long = not self.release.wait(HANG)
        return self.answer


async def test_the_async_redis_credential_provider_reads_the_secret_in_a_thread() -> None:
    loader = RecordingLoader(ROTATED)
    source = BindingSource(loader, FIRST, interval=0)  # every ask reads the source
    provider = redis_kwargs(FIRST.with_source(source))["credential_provider"]

    assert await provider.get_credentials_async() == ("u", "p2")
    assert loader.threads, "the provider asked the source"
    assert threading.current_thread() not in loader.threads  # the loop's thread


def test_the_sync_redis_credential_provider_reads_the_secret_in_the_callers_thread() -> None:
    loader = RecordingLoader(ROTATED)
    source = BindingSource(loader, FIRST, interval=0)
    provider = redis_kwargs(FIRST.with_source(source))["credential_provider"]

    assert provider.get_credentials() == ("u", "p2")
    assert loader.threads == [threading.current_thread()]


async def test_marking_the_source_stale_neither_reads_nor_waits_for_a_read_under_way() -> None:
    loader = RecordingLoader(ROTATED)
    source = BindingSource(loader, FIRST, interval=0)
    loader.release.clear()
    reader = asyncio.create_task(asyncio.to_thread(source.credentials))  # holds the lock mid-read
    assert await asyncio.to_thread(loader.reading.wait, HANG)
    try:
        source.refresh()  # on the loop: must not block on the reader's lock
        assert len(loader.threads) == 1  # and did not read
    finally:
        loader.release.set()
    assert await reader == ("u", "p2")
    assert not loader.held_too_long  # refresh returned while the read was held


def test_a_refresh_makes_the_next_ask_read_the_source_again() -> None:
    loader = RecordingLoader(ROTATED)
    source = BindingSource(loader, FIRST, interval=float("inf"))
    assert source.credentials() == ("u", "p1")  # trusted: not read
    source.refresh()
    assert loader.threads == []
    assert source.credentials() == ("u", "p2")
    assert len(loader.threads) == 1
