"""What one ``add_messages`` sends to TiDB/MySQL, as the README describes it.

Without ``max_messages`` an add is one multi-row INSERT (one round trip). With it, the INSERT is
followed by a separate DELETE that trims the session: two round trips on an autocommit connection,
so the two are not atomic. PyMySQL's ``connect`` is replaced by a recorder: no server is needed.
"""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from chatmemory.contract import Binding
from chatmemory.histories.tidb import TiDBConnector
from langchain_core.messages import AIMessage, HumanMessage

from tests.unit.sdk.test_tidb_history import tidb_binding


class _Cursor:
    def __init__(self, log: list[str]) -> None:
        self._log = log

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, query: str, args: Any = None) -> int:
        self._log.append(" ".join(query.split()))
        return 1


class _Connection:
    def __init__(self, log: list[str], kwargs: dict[str, Any]) -> None:
        self._log = log
        self.kwargs = kwargs

    def cursor(self) -> _Cursor:
        return _Cursor(self._log)

    def close(self) -> None:
        return None


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[dict[str, Any]]]:
    statements: list[str] = []
    connects: list[dict[str, Any]] = []

    def connect(**kwargs: Any) -> _Connection:
        connects.append(kwargs)
        return _Connection(statements, kwargs)

    monkeypatch.setattr(pymysql, "connect", connect)
    return statements, connects


def binding(**overrides: object) -> Binding:
    return tidb_binding(**overrides)


def test_an_add_without_max_messages_is_one_insert(sent: tuple[list[str], list[dict[str, Any]]]) -> None:
    statements, _ = sent
    connector = TiDBConnector.from_binding(binding())
    try:
        connector.history("s1").add_messages([HumanMessage("hi"), AIMessage("hello")])
    finally:
        connector.close()
    assert [s.split()[0] for s in statements] == ["INSERT"]


def test_an_add_with_max_messages_is_an_insert_then_a_separate_autocommitted_delete(
    sent: tuple[list[str], list[dict[str, Any]]],
) -> None:
    statements, connects = sent
    connector = TiDBConnector.from_binding(binding(max_messages=10))
    try:
        connector.history("s1").add_messages([HumanMessage("hi"), AIMessage("hello")])
    finally:
        connector.close()
    assert [s.split()[0] for s in statements] == ["INSERT", "DELETE"]
    # each statement commits on its own: no BEGIN/COMMIT around the pair
    assert all(c["autocommit"] is True for c in connects)
