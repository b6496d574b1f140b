"""SQL stores for the store tests: a fresh ChatMemory on the platform's TiDB or MariaDB, provisioned
by the operator's own backend, and the SDK's store built from the binding it returns.

Called by ``tests/integration/store/conftest.py`` (the conformance module's ``make_store``) and by
``test_sql_store.py``. Each store gets its own database, tables and memory user, made by
``TiDBBackend.ensure`` exactly as the operator makes them, and the store logs in as that user: a
statement that needs a grant the operator does not give fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chatmemory.contract import Binding
from chatmemory.store import store_for
from chatmemory_operator.backends.base import DeletionPolicy
from chatmemory_operator.backends.tidb import SQLConnection, SQLPlan, TiDBBackend

from tests.integration.operator.conftest import sql_plan, sql_store
from tests.support.platform import Platform

#: target name -> the platform key of its server
TARGETS = {"tidb": "TIDB_URL", "mariadb": "MARIADB_URL", "TIDB_URL": "TIDB_URL", "MARIADB_URL": "MARIADB_URL"}


@dataclass
class SQLMemory:
    """A provisioned memory: the admin's view (for checks on the server) and the Secret's binding."""

    backend: TiDBBackend
    server: SQLConnection
    plan: SQLPlan
    binding: Binding

    def delete(self) -> None:
        self.backend.delete(self.server, self.plan, DeletionPolicy.DELETE)


@contextmanager
def sql_memory(platform: Platform, target: str) -> Iterator[SQLMemory]:
    """A ChatMemory on ``target`` (``tidb`` or ``mariadb``), deleted with its data on exit."""
    backend = TiDBBackend()
    server = sql_store(platform, TARGETS[target])
    plan = sql_plan()
    try:
        memory = SQLMemory(backend, server, plan, backend.ensure(server, plan, f"pw-{plan.username}"))
        try:
            yield memory
        finally:
            memory.delete()
    finally:
        backend.close()


@contextmanager
def make_sql_store(platform: Platform, target: str, **kwargs: Any) -> Iterator[Any]:
    """A fresh, empty ``ChatMemorySQLStore`` (``store_for(binding, **kwargs)``: ``index``, ``ttl``)
    on its own memory; closed and deleted on exit."""
    with sql_memory(platform, target) as memory:
        store = store_for(memory.binding, **kwargs)
        try:
            yield store
        finally:
            store.close()  # type: ignore[attr-defined]
