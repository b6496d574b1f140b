"""``chatmemory.connect_url`` against a Redis Cluster: the URL's ``cluster=true`` gives a cluster client."""

from __future__ import annotations

import chatmemory
import pytest
import redis
from langchain_core.messages import HumanMessage
from redis.cluster import RedisCluster

from tests.integration.sdk.conftest import uid
from tests.support.platform import Platform


@pytest.mark.parametrize("target", ["REDIS_CLUSTER_NODES"], indirect=True)
def test_connect_url_to_a_cluster(
    platform: Platform, target: str, prefix: str, admin: redis.Redis | RedisCluster
) -> None:
    from urllib.parse import quote

    node = platform[target].split(",")[0]
    user, password = quote(platform["REDIS_ADMIN_USER"]), quote(platform["REDIS_ADMIN_PASSWORD"], safe="")
    with chatmemory.connect_url(
        f"redis://{user}:{password}@{node}?cluster=true", key_prefix=prefix
    ) as memory:
        assert memory.binding.cluster
        history = memory.history(f"c-{uid()}")
        history.add_messages([HumanMessage("on the cluster")])
        assert [m.text for m in history.messages] == ["on the cluster"]
        assert isinstance(memory.connector.client, RedisCluster)  # type: ignore[attr-defined]
