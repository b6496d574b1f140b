"""A Redis server killed and restarted under a writing application costs no acknowledged write.

The application keeps one ``ChatMemory`` (the way a pod does) and writes a turn (a human and an AI
message) in a loop. The server (a throwaway redis-server with an fsynced append-only file, so what
it acknowledged is on disk) is killed with SIGKILL mid-stream and started again on the same port,
twice: a blip shorter than the client's timeout, which the writes ride out (a turn whose connection
was refused was never sent, so it is retried within the timeout), and an outage longer than it,
where writes raise ``BackendUnavailable``. A turn already sent is never sent again, so: every
acknowledged turn reads back, in order, exactly once, and each turn is whole (one
``MULTI``/``EXEC``: applied entirely or not at all). The same ``ChatMemory`` works again once the
server is back, without being rebuilt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import chatmemory
import pytest
from chatmemory.errors import BackendUnavailable
from langchain_core.messages import AIMessage, HumanMessage

from tests.support.servers import RedisProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    s = RedisProcess(tmp_path, durable=True)
    s.start()
    yield s
    s.stop()


class Writer(threading.Thread):
    """Writes turn 0, 1, 2, ... until stopped; records which were acknowledged and which raised."""

    def __init__(self, memory: chatmemory.ChatMemory, session: str) -> None:
        super().__init__(daemon=True)
        self.history = memory.history(session)
        self.acked: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                self.history.add_messages([HumanMessage(f"q{n}"), AIMessage(f"a{n}")])
                self.acked.append(n)
            except BackendUnavailable as e:
                self.failed.append((n, type(e).__name__))
                time.sleep(0.05)
            n += 1

    def wait_for(self, acks: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acks:
            assert time.monotonic() < deadline, (
                f"only {len(self.acked)} acknowledged turns: {self.failed[-3:]}"
            )
            time.sleep(0.02)


def test_a_killed_and_restarted_server_loses_no_acknowledged_turn_and_duplicates_none(
    server: RedisProcess,
) -> None:
    with chatmemory.connect_url(server.url, key_prefix="app:", ttl=3600, timeout=2) as memory:
        writer = Writer(memory, "user-1")
        writer.start()
        try:
            writer.wait_for(50)
            server.kill()
            time.sleep(0.5)  # a blip: shorter than the 2 s timeout
            server.start()
            writer.wait_for(len(writer.acked) + 50)
            # at most the turn in flight at the kill fails; the ones refused a connection wait it out
            assert len(writer.failed) <= 1, f"a blip within the timeout failed writes: {writer.failed[:3]}"
            blip_failures = len(writer.failed)
            server.kill()
            time.sleep(4)  # an outage: longer than the timeout
            server.start()
            writer.wait_for(len(writer.acked) + 50)
        finally:
            writer.stop.set()
            writer.join(timeout=30)
        assert len(writer.failed) > blip_failures, "an outage longer than the timeout fails the writes in it"
        texts = [str(m.content) for m in memory.history("user-1").messages]
    turns = [(texts[i], texts[i + 1]) for i in range(0, len(texts), 2)]
    assert all(q[1:] == a[1:] and q[0] == "q" and a[0] == "a" for q, a in turns), "a turn was split"
    numbers = [int(q[1:]) for q, _ in turns]
    assert numbers == sorted(set(numbers)), "a turn was written twice or out of order"
    assert set(writer.acked) <= set(numbers), (
        f"acknowledged but lost: {sorted(set(writer.acked) - set(numbers))}"
    )
    unacknowledged = set(numbers) - set(writer.acked)
    assert unacknowledged <= {n for n, _ in writer.failed}, "a turn landed that was never written"
    assert len(unacknowledged) <= 2, "only a turn in flight at a kill may land unacknowledged"
