"""LangGraph's official conformance suite (langgraph-checkpoint-conformance) on every backend.

Each run uses a memory provisioned like the operator does (ACL user / data-only SQL user, see
conftest.py) and the saver ``checkpointer_for(binding)`` returns. The suite detects the optional
capabilities a saver overrides; ours override all of them (delete_for_runs, copy_thread, prune), so
every capability must be detected and pass. The suite drives the async methods; the ``sync`` runs
build the Redis saver without an asyncio client, so the same suite exercises the sync driver.

Counts are printed (``pytest -s``) as ``conformance <backend>: <passed>/<total> tests, <caps>``.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator

import pytest
from chatmemory._connect import redis_client
from chatmemory.checkpoint import ChatMemoryRedisSaver, acheckpointer_for
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from tests.integration.checkpoint.conftest import REDIS_KEYS, SQL_KEYS, MemoryFactory

EVERY_CAPABILITY = {c.value for c in ALL_CAPABILITIES}
_SPEC = "langgraph.checkpoint.conformance.spec"
_SPECS = (
    "put",
    "put_writes",
    "get_tuple",
    "list",
    "delete_thread",
    "delete_for_runs",
    "copy_thread",
    "prune",
)
#: 81 in langgraph-checkpoint-conformance 0.0.2: 58 base tests and 23 for the optional capabilities.
SUITE_SIZE = sum(
    len(getattr(importlib.import_module(f"{_SPEC}.test_{name}"), f"ALL_{name.upper()}_TESTS"))
    for name in _SPECS
)


async def _run_suite(name: str, make_saver: object) -> None:
    @checkpointer_test(name=name)
    async def factory() -> AsyncIterator[BaseCheckpointSaver[str]]:
        saver: BaseCheckpointSaver[str] = await make_saver()  # type: ignore[operator]
        try:
            yield saver
        finally:
            await saver.aclose()  # type: ignore[attr-defined]

    report = await validate(factory)
    passed = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    detected = sorted(n for n, r in report.results.items() if r.detected)
    print(f"\nconformance {name}: {passed}/{passed + failed} tests, {report.conformance_level()}, {detected}")
    assert {n: r.failures for n, r in report.results.items() if r.failures} == {}
    assert set(detected) == EVERY_CAPABILITY
    assert report.passed_all()
    assert passed == SUITE_SIZE


@pytest.mark.parametrize("key", REDIS_KEYS + SQL_KEYS)
async def test_the_binding_checkpointer_passes_the_conformance_suite(key: str, memory: MemoryFactory) -> None:
    mem = memory(key)

    async def make() -> BaseCheckpointSaver[str]:
        return await acheckpointer_for(mem.binding)

    await _run_suite(key, make)


@pytest.mark.parametrize("key", REDIS_KEYS)
async def test_the_redis_sync_driver_passes_the_conformance_suite(key: str, memory: MemoryFactory) -> None:
    mem = memory(key)

    async def make() -> BaseCheckpointSaver[str]:
        b = mem.binding
        return ChatMemoryRedisSaver(
            redis_client(b), prefix=b.key_prefix, ttl_seconds=b.ttl_seconds, owns_clients=True
        )

    await _run_suite(f"{key}(sync)", make)
