"""The leader of a session's partition killed under a writing application: no acknowledged turn lost.

A 3-node KRaft cluster (:func:`kafka_cluster`: replication factor 3, ``min.insync.replicas=2``) holds
the memory's topic. One ``ChatMemory`` writes 2,000 turns to one session (the SDK's producer is
idempotent with ``acks=all``); after 300 turns the leader of the session's partition is killed
(SIGKILL) and, once another replica leads, started again on its data. Meanwhile another thread
reads the session over and over. Every acknowledged turn reads back, in order, none twice, and
every read made while the leader moved completes, its turns in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import chatmemory
import pytest
from chatmemory.errors import BackendError
from langchain_core.chat_history import BaseChatMessageHistory

from tests.integration.failover.conftest import Report
from tests.support.servers import TurnAudit, TurnWriter, audit_turns
from tests.support.topologies import KafkaCluster, kafka_cluster

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TURNS = 2000
KILL_AFTER = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with kafka_cluster(Path(tmp_path_factory.mktemp("failover"))) as c:
        yield c


class Reader(threading.Thread):
    """Reads a session again and again until stopped; records each read's span and outcome."""

    def __init__(self, history: BaseChatMessageHistory) -> None:
        super().__init__(daemon=True)
        self.history = history
        self.reads: list[tuple[float, float, int]] = []  # start, end, messages
        self.errors: list[tuple[float, BackendError]] = []
        self.disordered = 0  # reads whose turns were out of order or doubled
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                texts = [str(m.content) for m in self.history.messages]
            except BackendError as e:
                self.errors.append((start, e))
                time.sleep(0.05)
                continue
            self.reads.append((start, time.monotonic(), len(texts)))
            numbers = [int(t[1:]) for t in texts[::2]]
            if numbers != sorted(set(numbers)):
                self.disordered += 1
            time.sleep(0.05)


@dataclass
class Run:
    writer: TurnWriter
    reader: Reader
    audit: TurnAudit
    killed_at: float
    elected_at: float


@pytest.fixture(scope="module")
def run(cluster: KafkaCluster) -> Run:
    """One failover under a writer and a reader; the tests below check different parts of it."""
    topic = "failover.chat"
    cluster.create_topic(topic)
    with chatmemory.connect_url(cluster.url(topic)) as memory:
        writer = TurnWriter(memory.history("user-1"), TURNS)
        reader = Reader(memory.history("user-1"))
        writer.start()
        writer.wait_for(KILL_AFTER)
        reader.start()
        leader = cluster.leader(topic, 0)
        cluster.kill(leader)
        killed_at = time.monotonic()
        writer.mark()
        while cluster.leader(topic, 0) in (leader, -1):
            time.sleep(0.05)
        elected_at = time.monotonic()
        cluster.restart(leader)
        writer.finish()
        reader.stop.set()
        reader.join(timeout=60)
        audit = audit_turns(memory.history("user-1").messages, writer)
    return Run(writer, reader, audit, killed_at, elected_at)


def test_a_killed_partition_leader_loses_no_acknowledged_turn_and_writes_none_twice(
    run: Run, report: Report
) -> None:
    writer, audit = run.writer, run.audit
    report(
        "kafka_leader_failover_writes",
        audit.figures(writer)
        | {
            "new_leader_after_s": round(run.elected_at - run.killed_at, 2),
            "writes_resumed_after_s": None
            if writer.resumed_after is None
            else round(writer.resumed_after, 2),
        },
    )
    assert audit.lost == [], f"acknowledged turns lost: {audit.lost[:10]}"
    assert audit.duplicates == 0, "a turn was written twice"
    assert audit.split == 0 and audit.in_order, "turns are split or out of order"
    assert audit.unexplained == [], (
        f"turns stored that were neither acknowledged nor raised: {audit.unexplained}"
    )
    assert writer.resumed_after is not None, "no turn was acknowledged after the kill"


def test_reads_made_while_the_partition_leader_moves_complete(run: Run, report: Report) -> None:
    reads = run.reader.reads
    during = [r for r in reads if r[0] < run.elected_at and r[1] > run.killed_at]
    report(
        "kafka_leader_failover_reads",
        {
            "reads": len(reads),
            "reads_during_leader_change": len(during),
            "longest_read_s": round(max(end - start for start, end, _ in reads), 2) if reads else None,
            "read_errors": [str(e) for _, e in run.reader.errors[:3]],
        },
    )
    assert run.reader.disordered == 0, "a read saw turns out of order or twice"
    assert run.reader.errors == [], (
        f"reads failed while the leader moved: {[str(e) for _, e in run.reader.errors[:3]]}"
    )
    assert during, "no read overlapped the leader change"
