"""Throwaway servers a test may stop and start without disturbing the shared platform.

Used by the restart tests (e2e: a stopped backend in status; integration: the SDK through a server
restart under load). Each runs the platform's own binary on a free loopback port.
:class:`TurnWriter` and :func:`audit_turns` (a writer under faults, and what its session kept) serve
the failover tests (tests/integration/failover).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis
from chatmemory.errors import BackendError
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from tests.support.operator import free_port


class RedisProcess:
    """A redis-server with an ``admin`` user, stoppable and restartable on one port.

    ``durable``: append-only file fsynced on every write (``appendfsync always``), so a write the
    server acknowledged survives a kill; otherwise a restart starts empty (no ACL users, no data).

    The ``default`` user is off (nobody logs in as it) but keeps its permissions: Redis 7.0-7.4 and
    Valkey replay the AOF as ``default`` and re-check ACLs at ``EXEC``, so a ``default`` user without
    permissions silently drops every ``MULTI``/``EXEC`` (every chat turn) at restart
    (redis/redis#14541, valkey-io/valkey#3983). See docs/operations.md.
    """

    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port, self.password, self.workdir = free_port(), uuid.uuid4().hex, workdir
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        self.cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    *aof, "--dir", str(workdir), "--user", "default", "off", "~*", "&*", "+@all",
                    "--user", "admin", "on", f">{self.password}", "~*", "&*", "+@all"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://admin:{self.password}@127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, username="admin", password=self.password, socket_timeout=5)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: the server shuts down in order."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash; only what the server fsynced survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=20)
            self.proc = None


class TurnWriter(threading.Thread):
    """Writes turns 0 .. ``turns - 1`` (a human and an AI message each) to one history, in order.

    Records what the history said of each: ``acked`` (returned), ``failed`` (raised a
    ``BackendError``: the turn number, the error, and its ``applied`` when it has one), and when the
    first acknowledgement after :meth:`mark` came, so a fault test can tell how long writes stalled.
    A failed turn is not written again (the writer moves on, as an application that reports the
    error would), so every turn number appears in the session at most once unless the SDK sent it
    twice. Used by the failover tests (tests/integration/failover).
    """

    def __init__(
        self, history: BaseChatMessageHistory, turns: int, *, pause_after_error: float = 0.05
    ) -> None:
        super().__init__(daemon=True)
        self.history, self.turns, self.pause = history, turns, pause_after_error
        self.acked: list[int] = []
        self.failed: list[tuple[int, BackendError]] = []
        self.marked_at: float | None = None
        self.marked_turn = -1
        self.resumed_after: float | None = None

    def run(self) -> None:
        for n in range(self.turns):
            try:
                self.history.add_messages([HumanMessage(f"q{n}"), AIMessage(f"a{n}")])
            except BackendError as e:
                self.failed.append((n, e))
                time.sleep(self.pause)
                continue
            self.acked.append(n)
            if self.marked_at is not None and self.resumed_after is None and n > self.marked_turn:
                self.resumed_after = time.monotonic() - self.marked_at

    def mark(self) -> None:
        """Now is the fault: :attr:`resumed_after` is the time to the first turn acknowledged after it
        (a turn started after this call)."""
        self.marked_turn = len(self.acked) + len(self.failed)
        self.marked_at = time.monotonic()

    def wait_for(self, acks: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acks:
            assert self.is_alive() or len(self.acked) >= acks, f"writer ended with {len(self.acked)} acks"
            assert time.monotonic() < deadline, (
                f"only {len(self.acked)} acknowledged turns: {self.failed[-3:]}"
            )
            time.sleep(0.01)

    def finish(self, timeout: float = 240) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"the writer did not finish within {timeout} s ({len(self.acked)} acks)"


@dataclass
class TurnAudit:
    """What a session holds against what its writer was told (see :func:`audit_turns`)."""

    numbers: list[int]  # turn numbers in the session, in stored order
    split: int  # turns stored without their other half
    duplicates: int  # turns stored more than once
    in_order: bool
    lost: list[int]  # acknowledged but not in the session
    unexplained: list[int]  # in the session, never acknowledged, and not a turn that raised

    def figures(self, writer: TurnWriter) -> dict[str, object]:
        """The numbers a fault test reports."""
        applied = Counter(str(getattr(e, "applied", "-")) for _, e in writer.failed)
        return {
            "turns": writer.turns,
            "acknowledged": len(writer.acked),
            "raised": len(writer.failed),
            "raised_by_applied": dict(applied),
            "raised_by_type": dict(Counter(type(e).__name__ for _, e in writer.failed)),
            "acknowledged_but_lost": len(self.lost),
            "duplicates": self.duplicates,
            "stored": len(self.numbers),
        }


def audit_turns(messages: list[BaseMessage], writer: TurnWriter) -> TurnAudit:
    """Compare a session's messages with what ``writer`` was told: lost, doubled, split, reordered."""
    texts = [str(m.content) for m in messages]
    numbers: list[int] = []
    split = 0
    i = 0
    while i < len(texts):
        q = texts[i]
        if i + 1 < len(texts) and q.startswith("q") and texts[i + 1] == "a" + q[1:]:
            numbers.append(int(q[1:]))
            i += 2
        else:
            split += 1
            i += 1
    stored = set(numbers)
    raised = {n for n, _ in writer.failed}
    return TurnAudit(
        numbers=numbers,
        split=split,
        duplicates=len(numbers) - len(stored),
        in_order=numbers == sorted(numbers),
        lost=sorted(set(writer.acked) - stored),
        unexplained=sorted(stored - set(writer.acked) - raised),
    )
