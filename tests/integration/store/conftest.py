"""Stores for the store tests, one per backend that serves LangGraph's ``BaseStore``.

``make_store(index=..., ttl=...)`` builds a fresh, empty store on the backend of the test's
``backend`` parameter:

- ``inmemory``: LangGraph's own ``InMemoryStore`` (the reference the conformance tests are checked
  against; where it breaks a rule we chose differently, the test marks that one case);
- ``redis7`` / ``redis8`` / ``valkey`` / ``cluster``: a :class:`ChatMemoryRedisStore` from
  ``store_for(binding)``, logged in as an ACL user confined to a fresh prefix and allowed exactly
  the operator's command list (so a command missing from the ACL fails the test);
- ``tidb`` / ``mariadb``: the SQL store from ``tests/integration/store/sql_backends.py``
  (``make_sql_store(platform, target, **kwargs)``), skipped while that module does not exist.

:class:`WordEmbeddings` is a deterministic embedding: one dimension per word of a small
vocabulary, so that which item is nearest to a query is known in advance.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from chatmemory.store import store_for
from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from tests.integration.checkpoint.conftest import Memory, redis_memory
from tests.support.platform import Platform

#: backend parameter -> platform key of its server
REDIS_BACKENDS = {
    "redis7": "REDIS_URL",
    "redis8": "REDIS_SEARCH_URL",
    "valkey": "VALKEY_URL",
    "cluster": "REDIS_CLUSTER_NODES",
}
SQL_BACKENDS = {"tidb": "TIDB_URL", "mariadb": "MARIADB_URL"}
BACKENDS = ["inmemory", *REDIS_BACKENDS, *SQL_BACKENDS]

VOCABULARY = ("cat", "dog", "fish", "bird", "tree", "car", "rain", "sun")


class WordEmbeddings(Embeddings):
    """One dimension per vocabulary word (its count in the text), plus a constant 0.01 so that no
    vector is all zeros. Deterministic and exact: the nearest item to "cat" is the one about cats."""

    dims = len(VOCABULARY) + 1

    def _vector(self, text: str) -> list[float]:
        words = text.lower().replace('"', " ").replace(",", " ").split()
        return [float(words.count(w)) for w in VOCABULARY] + [0.01]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def word_index(fields: list[str] | None = None) -> dict[str, Any]:
    """An ``IndexConfig`` on :class:`WordEmbeddings` (default field: ``text``)."""
    return {"dims": WordEmbeddings.dims, "embed": WordEmbeddings(), "fields": fields or ["text"]}


StoreFactory = Callable[..., BaseStore]


def _sql_factory(platform: Platform, target: str) -> Callable[..., Any]:
    try:
        module = importlib.import_module("tests.integration.store.sql_backends")
    except ModuleNotFoundError as e:
        if e.name != "tests.integration.store.sql_backends":
            raise
        pytest.skip(
            "tests/integration/store/sql_backends.py (the SQL store's test backends) is not written yet"
        )

    def make(**kwargs: Any) -> Any:
        return module.make_sql_store(platform, target, **kwargs)

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def make_store(platform: Platform, backend: str) -> AsyncIterator[StoreFactory]:
    """``make_store(index=None, ttl=None)``: a fresh, empty store on the test's backend.

    Async so that the teardown closes the stores' asyncio clients on the test's own event loop.
    """
    made: list[tuple[Any, Memory | None]] = []
    stack = contextlib.ExitStack()
    sql = _sql_factory(platform, SQL_BACKENDS[backend]) if backend in SQL_BACKENDS else None

    def make(**kwargs: Any) -> BaseStore:
        if backend == "inmemory":
            kwargs.pop("ttl", None)
            return InMemoryStore(**kwargs)
        if sql is not None:
            built = sql(**kwargs)
            if hasattr(built, "__enter__"):
                built = stack.enter_context(built)
            made.append((built, None))
            return built  # type: ignore[no-any-return]
        mem = redis_memory(platform, REDIS_BACKENDS[backend], None)
        store = store_for(mem.binding, **kwargs)
        made.append((store, mem))
        return store

    try:
        yield make
    finally:
        stack.close()  # the SQL stores (their module's context managers)
        for store, mem in made:
            if mem is not None:
                await store.aclose()
                for fn in mem.cleanups:
                    fn()


@pytest.fixture
def store(make_store: StoreFactory) -> BaseStore:
    """A store without index or TTL configuration."""
    return make_store()
