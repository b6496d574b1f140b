"""Growing a Kafka memory's partitions keeps every session's whole history readable.

A session's key maps to ``murmur2(key) % partitions``: after the topic grows, new records of a
session can land in another partition than its older ones. The operator records every partition
count in the Secret (``partition_history``) and the SDK reads each partition the key mapped to.
"""

from __future__ import annotations

from pathlib import Path

import chatmemory
from chatmemory.histories.kafka import partition_for
from langchain_core.messages import AIMessage, HumanMessage

from tests.e2e.conftest import E2E, uid


def mount(e2e: E2E, memory: str, into: Path) -> Path:
    """The memory's Secret as a pod's volume would hold it: one file per key."""
    m = e2e.memory(memory)
    assert m is not None
    into.mkdir(parents=True, exist_ok=True)
    for key, value in e2e.secret_data(m["status"]["binding"]["name"]).items():
        (into / key).write_text(value)
    return into


def test_a_session_keeps_its_history_when_the_topic_grows(e2e: E2E, tmp_path: Path) -> None:
    name = f"grow-{uid()}"
    e2e.create_memory(name, e2e.stores["kafka"].name, deletionPolicy="Delete", kafka={"partitions": 1})
    e2e.wait_memory(name, timeout=90)
    # a session whose key moves to another partition once there are 3
    session = next(s for s in (f"user-{i}" for i in range(100)) if partition_for(s.encode(), 3) != 0)
    with chatmemory.connect(path=str(mount(e2e, name, tmp_path / "before"))) as memory:
        memory.history(session).add_messages([HumanMessage("first question"), AIMessage("first answer")])

    e2e.patch_memory(name, {"spec": {"kafka": {"partitions": 3}}})
    grown = e2e.wait_memory(name, timeout=90, check=lambda m: m["status"]["provisioned"]["partitions"] == 3)
    binding = e2e.binding(name)
    assert binding.partition_counts == (1, 3), grown["status"]

    with chatmemory.connect(path=str(mount(e2e, name, tmp_path / "after"))) as memory:
        history = memory.history(session)
        history.add_messages([HumanMessage("second question"), AIMessage("second answer")])
        assert [m.content for m in history.messages] == [
            "first question",
            "first answer",
            "second question",
            "second answer",
        ]
        history.clear()
        assert history.messages == []  # the clear marker also hides the records in the old partition
    e2e.delete_memory(name)
