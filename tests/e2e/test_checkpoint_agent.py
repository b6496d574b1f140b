"""The agent path end to end: a ChatMemory applied with kubectl, ``memory.checkpointer()`` from its
Secret, ``create_agent`` with a fake tool-calling model, two turns on one thread, the state read
back by a new process, and the thread's keys or rows gone after the memory's TTL, on the server.

Kafka memories refuse checkpoints with NotSupported (the message names the alternative).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytest.importorskip("chatmemory_operator.handlers", reason="the operator's handlers are not importable")

import chatmemory
from chatmemory.checkpoint.redis import glob_escape
from chatmemory.checkpoint.sql import checkpoint_table_names
from langchain_core.messages import HumanMessage

from tests.e2e.conftest import E2E, mysql_admin, redis_admin, redis_nodes, uid, wait_until
from tests.integration.checkpoint.agent_support import build_agent, summary
from tests.support.agent import read_in_new_process
from tests.support.operator import kubectl

TTL_SECONDS = 20  # long enough for a new Python process to start and read on a loaded 2-core machine
CHECKPOINT_KEYS = ("redis7", "cluster", "valkey", "tidb", "mariadb")
TURNS = ["where is order A1", "and order B2"]


def apply_memory(e2e: E2E, name: str, store: str, ttl: str) -> None:
    manifest = {
        "apiVersion": "chatmemory.io/v1alpha1",
        "kind": "ChatMemory",
        "metadata": {"name": name, "namespace": e2e.namespace},
        "spec": {"storeRef": {"name": store}, "ttl": ttl, "deletionPolicy": "Delete"},
    }
    kubectl(e2e.platform, "apply", "-f", "-", input=json.dumps(manifest))


def read_back_in_new_process(e2e: E2E, name: str, thread: str) -> list[dict[str, Any]]:
    return read_in_new_process(
        {
            "KUBECONFIG": e2e.platform["KUBECONFIG"],
            "CHATMEMORY_TEST_MEMORY": name,
            "CHATMEMORY_TEST_NAMESPACE": e2e.namespace,
            "CHATMEMORY_TEST_THREAD": thread,
        }
    )


def redis_thread_keys(e2e: E2E, key: str, prefix: str, thread: str) -> list[bytes]:
    admin = redis_admin(e2e.platform, key)
    try:
        pattern = f"{glob_escape(prefix)}{{{thread}}}:*"
        return [k for node in redis_nodes(admin) for k in node.scan_iter(match=pattern, count=1000)]
    finally:
        admin.close()


def sql_thread_rows(e2e: E2E, key: str, database: str, table_prefix: str, thread: str) -> int:
    conn = mysql_admin(e2e.platform, key)
    try:
        with conn.cursor() as cur:
            total = 0
            for table in checkpoint_table_names(table_prefix):
                cur.execute(f"SELECT COUNT(*) FROM `{database}`.`{table}` WHERE thread_id = %s", (thread,))
                total += int(cur.fetchone()[0])
            return total
    finally:
        conn.close()


@pytest.mark.parametrize("key", CHECKPOINT_KEYS)
def test_an_agent_on_a_kubectl_applied_memory_keeps_its_thread_until_the_ttl(
    e2e: E2E, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", e2e.platform["KUBECONFIG"])
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    name = f"agent-{key}-{uid()}"
    apply_memory(e2e, name, e2e.stores[key].name, f"{TTL_SECONDS}s")
    try:
        e2e.wait_memory(name, timeout=90)
        thread = f"user-{uid()}"
        config: Any = {"configurable": {"thread_id": thread}}
        with chatmemory.connect(name, namespace=e2e.namespace) as memory:
            binding = memory.binding
            saver = memory.checkpointer()
            agent = build_agent(saver)
            for text in TURNS:
                result = agent.invoke({"messages": [HumanMessage(text)]}, config)
            saver.close()
        last_write = time.monotonic()
        rows = summary(result["messages"])
        assert [r["type"] for r in rows] == ["human", "ai", "tool", "ai"] * 2
        assert read_back_in_new_process(e2e, name, thread) == rows

        if binding.backend.value == "redis":
            suffixes = {
                k.decode().rsplit(":", 1)[1] for k in redis_thread_keys(e2e, key, binding.key_prefix, thread)
            }
            assert {"cp", "cx", "bl", "wr", "wx"} <= suffixes  # checkpoints, values, pending writes
            wait_until(
                lambda: not redis_thread_keys(e2e, key, binding.key_prefix, thread),
                timeout=TTL_SECONDS + 10,
                what=f"the thread's keys to expire on {key}",
            )
            assert time.monotonic() - last_write >= TTL_SECONDS - 1  # not before the TTL
        else:
            assert binding.checkpoint_table_prefix, "the operator left checkpoint_table_prefix empty"
            db, prefix = binding.database, binding.checkpoint_table_prefix
            assert sql_thread_rows(e2e, key, db, prefix, thread) > 0
            time.sleep(TTL_SECONDS + 1)
            assert read_back_in_new_process(e2e, name, thread) == []  # gone for readers at the TTL
            # On disk the server deletes rows after ttl + slack (TiDB's TTL job / MariaDB's event,
            # at least a minute later): check the mechanism the operator installed instead.
            conn = mysql_admin(e2e.platform, key)
            try:
                with conn.cursor() as cur:
                    if key == "tidb":
                        for table in checkpoint_table_names(prefix):
                            cur.execute(f"SHOW CREATE TABLE `{db}`.`{table}`")
                            ddl = cur.fetchone()[1]
                            assert "TTL=`updated_at` + INTERVAL" in ddl and "TTL_ENABLE='ON'" in ddl
                    else:
                        cur.execute(
                            "SELECT EVENT_DEFINITION FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
                            (db,),
                        )
                        bodies = " ".join(str(r[0]) for r in cur.fetchall())
                        assert all(t in bodies for t in checkpoint_table_names(prefix))
            finally:
                conn.close()
    finally:
        e2e.delete_memory(name, wait=False)


def test_a_kafka_memory_refuses_checkpoints_and_names_the_alternative(
    e2e: E2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", e2e.platform["KUBECONFIG"])
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    name = f"agent-kafka-{uid()}"
    apply_memory(e2e, name, e2e.stores["kafka"].name, "1h")
    try:
        e2e.wait_memory(name, timeout=90)
        with (
            chatmemory.connect(name, namespace=e2e.namespace) as memory,
            pytest.raises(chatmemory.NotSupported, match="Redis or TiDB ChatMemory"),
        ):
            memory.checkpointer()
    finally:
        e2e.delete_memory(name, wait=False)
