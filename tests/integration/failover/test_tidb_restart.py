"""A TiDB server killed and restarted under a writing application costs no acknowledged write.

A private tidb-server (:func:`tidb_server`, unistore, restartable on the same port and store) holds
the memory's table. One ``ChatMemory`` writes 2,000 turns to one session; after 300 the server is
killed (SIGKILL) and started again on its store. TiDB is one process here (a TiKV cluster is beyond
the CI machine), so this is its failover: the same ``ChatMemory`` goes on writing without a new
``connect`` (its pool drops the dead connections), every acknowledged turn reads back, in order,
none twice, and a turn that raised says whether it may have been applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import chatmemory
import pytest
from chatmemory.errors import BackendUnavailable

from tests.integration.failover.conftest import Report
from tests.support.servers import TurnWriter, audit_turns
from tests.support.topologies import TiDBServer, tidb_server

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TURNS = 2000
KILL_AFTER = 300


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TiDBServer]:
    with tidb_server(tmp_path) as s:
        with s.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE app")
        yield s


def test_a_killed_and_restarted_tidb_loses_no_acknowledged_turn_and_the_same_memory_recovers(
    server: TiDBServer, report: Report
) -> None:
    with chatmemory.connect_url(f"{server.url}app", table="messages", create=True) as memory:
        writer = TurnWriter(memory.history("user-1"), TURNS)
        writer.start()
        writer.wait_for(KILL_AFTER)
        server.kill()
        writer.mark()
        server.start()
        writer.finish()
        audit = audit_turns(memory.history("user-1").messages, writer)  # the same memory, no new connect
    report(
        "tidb_restart",
        audit.figures(writer)
        | {
            "writes_resumed_after_s": None if writer.resumed_after is None else round(writer.resumed_after, 2)
        },
    )
    assert audit.lost == [], f"acknowledged turns lost: {audit.lost[:10]}"
    assert audit.duplicates == 0, "a turn was written twice"
    assert audit.split == 0 and audit.in_order, "turns are split or out of order"
    assert audit.unexplained == [], (
        f"turns stored that were neither acknowledged nor raised: {audit.unexplained}"
    )
    assert writer.resumed_after is not None, "no turn was acknowledged after the restart"
    assert all(isinstance(e, BackendUnavailable) and e.applied in (None, False) for _, e in writer.failed), [
        str(e) for _, e in writer.failed[:3]
    ]
