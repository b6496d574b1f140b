"""The durability option ``redis_wait_replicas`` on real servers (quick: not in the fault tier).

A turn with ``wait_replicas=N`` returns only once N replicas hold it: with a replica attached, the
replica has the turn the moment ``add_messages`` returns; with none (the platform's Redis 7 and its
Cluster have no replicas), the turn is written on the primary and the caller gets
:class:`NotReplicated` (``applied=True``) naming the option, sync and asyncio alike.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import chatmemory
import pytest
import redis
from chatmemory.histories.redis import NotReplicated
from langchain_core.messages import AIMessage, HumanMessage

from tests.integration.sdk.conftest import redis_binding
from tests.support.platform import Platform
from tests.support.servers import RedisProcess

pytestmark = pytest.mark.integration

TURN = [HumanMessage("q"), AIMessage("a")]


@pytest.mark.parametrize("target", ["REDIS_URL", "REDIS_CLUSTER_NODES"])
async def test_a_turn_no_replica_confirms_is_written_and_raises_not_replicated_naming_the_option(
    platform: Platform, target: str
) -> None:
    binding = redis_binding(
        platform, target, f"cmtest:{uuid.uuid4().hex[:12]}:", redis_wait_replicas=1, redis_wait_timeout_ms=50
    )
    with chatmemory.ChatMemory(binding) as memory:
        history = memory.history("s")
        try:
            with pytest.raises(NotReplicated, match="redis_wait_replicas") as raised:
                history.add_messages(TURN)
            assert raised.value.applied is True and (raised.value.replicas, raised.value.wanted) == (0, 1)
            with pytest.raises(NotReplicated, match="0 of 1 replicas"):
                await history.aadd_messages(TURN)
            assert [m.content for m in history.messages] == ["q", "a", "q", "a"], "both turns were written"
        finally:
            history.clear()
            await memory.aclose()


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    primary, replica = RedisProcess(tmp_path / "p"), RedisProcess(tmp_path / "r")
    for s in (primary, replica):
        s.workdir.mkdir()
        s.start()
    with replica.client() as r:
        r.config_set("masteruser", "admin")
        r.config_set("masterauth", primary.password)
        r.replicaof("127.0.0.1", primary.port)
        deadline = time.monotonic() + 20
        while r.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
    yield primary, replica
    replica.stop()
    primary.stop()


async def test_with_a_replica_a_turn_returns_only_once_the_replica_holds_it(
    primary_and_replica: tuple[RedisProcess, RedisProcess],
) -> None:
    primary, replica = primary_and_replica
    with (
        chatmemory.connect_url(primary.url, key_prefix="app:", redis_wait_replicas=1) as memory,
        replica.client() as r,
    ):
        history = memory.history("s")
        for i in range(50):
            if i % 2:
                await history.aadd_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
            else:
                history.add_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
            assert r.llen("app:{s}") == 2 * (i + 1), f"turn {i} returned before the replica held it"
        await memory.aclose()


def test_a_wait_timeout_not_shorter_than_the_operation_timeout_is_refused_at_connect(
    platform: Platform,
) -> None:
    with pytest.raises(ValueError, match="redis_wait_timeout_ms"):
        chatmemory.connect_url(
            platform["REDIS_URL"], timeout=1, redis_wait_replicas=1, redis_wait_timeout_ms=1000
        )


def test_the_memory_user_of_an_operator_acl_may_run_wait(platform: Platform) -> None:
    """The operator's ACL for a memory includes WAIT (else every durable turn would raise)."""
    from chatmemory_operator.backends.redis import acl_rules

    user, password = f"cmtest-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    prefix = f"cmtest:{uuid.uuid4().hex[:8]}:"
    server = urlsplit(platform["REDIS_URL"])
    with redis.Redis.from_url(platform["REDIS_URL"]) as admin:
        admin.execute_command("ACL", "SETUSER", user, *acl_rules(prefix, password, cluster=False))
        try:
            url = f"redis://{user}:{password}@{server.hostname}:{server.port}"
            with chatmemory.connect_url(
                url, key_prefix=prefix, redis_wait_replicas=1, redis_wait_timeout_ms=20
            ) as m:
                with pytest.raises(NotReplicated, match="0 of 1 replicas"):  # not "may lack WAIT"
                    m.history("s").add_messages(TURN)
                m.history("s").clear()
        finally:
            admin.execute_command("ACL", "DELUSER", user)
