"""A Memorystore-like Redis (AUTH with a password, no ACL command): the memory works, not isolated.

The platform's ``REDIS_NOACL_URL`` server has ``requirepass`` and the ACL command removed, as
managed services without ACLs do. The operator cannot create a per-memory user there, so the memory
uses the store's credentials and says so in status (``Isolated=False``) and in its Secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import chatmemory
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from tests.e2e.conftest import E2E, condition, uid


@pytest.fixture(scope="module")
def noacl_store(e2e: E2E) -> Iterator[str]:
    url = urlsplit(e2e.platform["REDIS_NOACL_URL"])
    name = f"e2e-noacl-{uid()}"
    e2e.create_secret(f"admin-{name}", {"password": url.password or ""})
    e2e.create_store(
        name,
        {
            "redis": {
                "host": url.hostname,
                "port": url.port,
                "adminSecretRef": {"name": f"admin-{name}", "namespace": e2e.namespace},
            }
        },
    )
    e2e.wait_store(name, timeout=90)
    yield name
    e2e.delete_store(name, wait=False)


def test_store_without_acls_reports_no_acl_capability(e2e: E2E, noacl_store: str) -> None:
    store = e2e.store(noacl_store)
    assert store is not None
    capabilities = store["status"]["capabilities"]
    assert capabilities.get("aclUsers", capabilities.get("acl")) is False, capabilities


def test_memory_on_redis_without_acls_is_ready_and_says_it_is_not_isolated(
    e2e: E2E, noacl_store: str, tmp_path: Path
) -> None:
    name = f"noacl-{uid()}"
    e2e.create_memory(name, noacl_store, deletionPolicy="Delete")
    memory = e2e.wait_memory(name, timeout=90)

    isolated = condition(memory, "Isolated")
    assert isolated.get("status") == "False", memory["status"]
    assert isolated.get("message"), "the condition must tell the user why"
    assert memory["status"]["provisioned"]["isolated"] is False
    binding = e2e.binding(name)
    assert binding.isolated is False
    assert binding.key_prefix, "memories still get their own key prefix"

    # The SDK reads the Secret as a pod would (files) and round-trips a turn.
    mount = tmp_path / name
    mount.mkdir()
    for key, value in e2e.secret_data(memory["status"]["binding"]["name"]).items():
        (mount / key).write_text(value)
    with chatmemory.connect(path=str(mount)) as mem:
        history = mem.history("user-1")
        history.add_messages([HumanMessage("hi"), AIMessage("hello")])
        assert [m.content for m in history.messages] == ["hi", "hello"]
        history.clear()
    e2e.delete_memory(name)
