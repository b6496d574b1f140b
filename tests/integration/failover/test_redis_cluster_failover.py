"""A Redis Cluster primary killed under a writing application: what the SDK acknowledged survives.

The cluster (3 primaries, 3 replicas, ``cluster-node-timeout`` 1500 ms; :func:`redis_cluster`) serves
one ``ChatMemory`` that writes 2,000 turns to one session. After 300 turns the primary of the
session's slot is killed (SIGKILL); its replica takes over, and the killed node is started again
(it rejoins as a replica). Every turn is acknowledged or raised to the caller, never applied twice;
the history stays in order and whole. Redis replicates asynchronously, so without the durability
option a turn the primary acknowledged just before dying may be missing on the new primary (the
figure is reported, not asserted); with ``redis_wait_replicas=1`` no acknowledged turn is lost.
How long writes stalled against how long the failover took is reported, not asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import chatmemory
import pytest
from chatmemory.errors import BackendUnavailable
from chatmemory.histories.redis import NotReplicated

from tests.integration.failover.conftest import Report
from tests.support.servers import TurnWriter, audit_turns
from tests.support.topologies import NODE_TIMEOUT_MS, RedisClusterTopology, redis_cluster

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TURNS = 2000
KILL_AFTER = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterTopology]:
    with redis_cluster(Path(tmp_path_factory.mktemp("failover"))) as c:
        yield c


def run_failover(
    cluster: RedisClusterTopology, session: str, **options: object
) -> tuple[TurnWriter, dict[str, object]]:
    """Write :data:`TURNS` turns, killing the session's primary after :data:`KILL_AFTER`; returns the
    writer and the figures (the failover and the writers' stall measured from the kill)."""
    cluster.wait_healthy()
    # 5 s per reply: a turn waiting out the failover (about 3 s) is retried within it
    with chatmemory.connect_url(cluster.url(), key_prefix="app:", timeout=5, **options) as memory:
        history = memory.history(session)
        slot = cluster.slot_of(f"app:{{{session}}}")
        primary = cluster.primary_of(slot)
        writer = TurnWriter(history, TURNS)
        writer.start()
        writer.wait_for(KILL_AFTER)
        cluster.kill(primary)
        writer.mark()
        failover = cluster.wait_primary_change(slot, primary)
        cluster.restart(primary)
        writer.finish()
        audit = audit_turns(memory.history(session).messages, writer)
    cluster.wait_healthy()
    figures = audit.figures(writer) | {
        "failover_s": round(failover, 2),
        "writes_resumed_after_s": None if writer.resumed_after is None else round(writer.resumed_after, 2),
        "cluster_node_timeout_ms": NODE_TIMEOUT_MS,
    }
    assert audit.split == 0, "a turn was stored in part"
    assert audit.duplicates == 0, "a turn was applied twice"
    assert audit.in_order, "turns are out of order"
    assert audit.unexplained == [], (
        f"turns stored that were neither acknowledged nor raised: {audit.unexplained}"
    )
    assert writer.resumed_after is not None, f"no write succeeded after the kill: {writer.failed[-3:]}"
    figures["lost_turns"] = audit.lost
    return writer, figures


def test_without_the_durability_option_every_turn_is_acknowledged_or_raised_and_writes_resume_after_failover(
    cluster: RedisClusterTopology, report: Report
) -> None:
    writer, figures = run_failover(cluster, "plain")
    report("redis_cluster_failover_plain", figures)
    # a turn raised only because the server may have it (in flight at the kill) or never got it; a
    # redirect (MOVED from the restarted node, now a replica) is followed, not raised
    assert all(isinstance(e, BackendUnavailable) and e.applied in (None, False) for _, e in writer.failed), [
        str(e) for _, e in writer.failed[:3]
    ]


def test_with_redis_wait_replicas_no_acknowledged_turn_is_lost_in_a_failover(
    cluster: RedisClusterTopology, report: Report
) -> None:
    writer, figures = run_failover(cluster, "durable", redis_wait_replicas=1, redis_wait_timeout_ms=500)
    report("redis_cluster_failover_wait_replicas_1", figures)
    assert figures["lost_turns"] == [], "a turn a replica had confirmed was lost"
    # while the new primary had no replica, turns were written but not confirmed: raised, applied
    assert any(isinstance(e, NotReplicated) and e.applied is True for _, e in writer.failed), writer.failed[
        :3
    ]
