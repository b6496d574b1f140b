"""TiDBChatMessageHistory against real TiDB (unistore) and MariaDB, built directly and from a binding.

Every claim is checked on the server: rows in the table, SHOW CREATE TABLE, MySQL error codes.
Each test works in its own database (``cm_sdk_<uuid>``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pymysql
import pytest
from chatmemory.contract import Binding
from chatmemory.errors import BackendError
from chatmemory.histories.tidb import TiDBChatMessageHistory, TiDBConnector
from chatmemory_operator.backends.base import DeletionPolicy, MemoryPlan, StoreConnection
from chatmemory_operator.backends.tidb import TiDBBackend
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from tests.integration.operator.conftest import sql_plan, sql_store
from tests.integration.sdk.conftest import check_runnable_keeps_two_turns, run_threads
from tests.support.platform import Platform

SERVERS = ["TIDB_URL", "MARIADB_URL"]


def uid() -> str:
    return uuid.uuid4().hex[:10]


def admin(platform: Platform, key: str, database: str | None = None) -> Any:
    return pymysql.connect(**platform.mysql_params(key), database=database)  # type: ignore[arg-type]


def run(platform: Platform, key: str, sql: str, args: Any = None, *, database: str | None = None) -> Any:
    """One statement as the admin; returns its rows."""
    with admin(platform, key, database) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def is_tidb(platform: Platform, key: str) -> bool:
    return "tidb" in str(run(platform, key, "SELECT VERSION()")[0][0]).lower()


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(platform: Platform, server: str) -> Iterator[str]:
    name = f"cm_sdk_{uid()}"
    run(platform, server, f"CREATE DATABASE `{name}`")
    yield name
    run(platform, server, f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def url(platform: Platform, server: str, database: str) -> str:
    """The seed's connection string form: mysql+pymysql://user:password@host:port/database."""
    p = platform.mysql_params(server)
    auth = quote(str(p["user"]), safe="")
    if p["password"]:
        auth += ":" + quote(str(p["password"]), safe="")
    return f"mysql+pymysql://{auth}@{p['host']}:{p['port']}/{database}"


@pytest.fixture
def histories() -> Iterator[list[TiDBChatMessageHistory]]:
    made: list[TiDBChatMessageHistory] = []
    yield made
    for h in made:
        h.close()


@pytest.fixture
def make(url: str, histories: list[TiDBChatMessageHistory]) -> Callable[..., TiDBChatMessageHistory]:
    def build(session_id: str | None = None, **kwargs: Any) -> TiDBChatMessageHistory:
        h = TiDBChatMessageHistory(session_id or f"s-{uid()}", url, **kwargs)
        histories.append(h)
        return h

    return build


def rich_turn() -> list[BaseMessage]:
    """A tool-calling exchange with ids, names and metadata: everything must come back."""
    return [
        HumanMessage("What's the weather in Paris?", id="h1", name="alice"),
        AIMessage(
            "",
            id="a1",
            tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}],
            response_metadata={"model_name": "fake", "finish_reason": "tool_calls"},
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        ),
        ToolMessage("18°C, sunny", tool_call_id="call_1", name="weather", id="t1", status="success"),
        AIMessage("It is 18°C and sunny in Paris. ☀", id="a2", additional_kwargs={"refusal": None}),
    ]


# -- the seed's documented flows --------------------------------------------------------------------


def test_seed_flow_add_read_and_clear(make: Callable[..., TiDBChatMessageHistory]) -> None:
    history = make()
    history.add_user_message("hi")
    history.add_ai_message("hello")
    assert [(m.type, m.content) for m in history.messages] == [("human", "hi"), ("ai", "hello")]
    history.clear()
    assert history.messages == []


def test_earliest_time_hides_older_messages_and_is_compared_in_utc(
    platform: Platform, server: str, database: str, make: Callable[..., TiDBChatMessageHistory]
) -> None:
    history = make(table_name="older")
    history.add_messages([HumanMessage("old question"), AIMessage("old answer")])
    run(
        platform,
        server,
        "UPDATE older SET create_time = %s WHERE session_id = %s",
        (datetime(2001, 1, 1), history.session_id),
        database=database,
    )
    history.add_messages([HumanMessage("new question")])
    since = make(history.session_id, table_name="older", earliest_time=datetime(2020, 1, 1))
    assert [m.content for m in since.messages] == ["new question"]
    # an aware datetime is converted to UTC; an hour ahead of now excludes everything
    ahead = make(history.session_id, table_name="older", earliest_time=datetime.now(UTC) + timedelta(hours=1))
    assert ahead.messages == []
    assert len(history.messages) == 3


def test_reload_cache_and_messages_always_reflect_the_table(
    make: Callable[..., TiDBChatMessageHistory],
) -> None:
    reader = make()
    writer = make(reader.session_id)
    writer.add_messages([HumanMessage("one")])
    reader.reload_cache()
    assert [m.content for m in reader.cache] == ["one"]
    writer.add_messages([AIMessage("two")])
    # the seed served its stale cache here; we re-read on every access
    assert [m.content for m in reader.messages] == ["one", "two"]


# -- layout, DDL and TTL ----------------------------------------------------------------------------


def test_direct_construction_creates_the_shared_table_layout_with_ttl_on_tidb(
    platform: Platform, server: str, database: str, make: Callable[..., TiDBChatMessageHistory]
) -> None:
    make(table_name="with_ttl", ttl_seconds=3600).add_user_message("x")
    shown = str(run(platform, server, "SHOW CREATE TABLE with_ttl", database=database)[0][1])
    assert "`session_id` varchar(255) NOT NULL" in shown
    assert "KEY `session_idx` (`session_id`)" in shown
    if is_tidb(platform, server):
        assert "`message` json NOT NULL" in shown
        assert "AUTO_ID_CACHE=1" in shown
        assert "TTL=`create_time` + INTERVAL 1 HOUR" in shown
        assert "TTL_ENABLE='ON'" in shown and "TTL_JOB_INTERVAL='1m'" in shown
        # TiDB's TTL jobs are switched on cluster-wide, so the clause is acted upon
        assert str(run(platform, server, "SELECT @@global.tidb_ttl_job_enable")[0][0]) in ("1", "ON")
    else:
        assert "json_valid(`message`)" in shown  # MariaDB's JSON: longtext with a validity check
        assert "AUTO_ID_CACHE" not in shown and "TTL=" not in shown


#: LangChain's TiDBChatMessageHistory (langchain-community 0.4), its statements verbatim: the table
#: it creates, how it writes a message and how it reads a session.
SEED_DDL = """CREATE TABLE IF NOT EXISTS seed_made (
    id INT AUTO_INCREMENT PRIMARY KEY,
    session_id VARCHAR(255) NOT NULL,
    message JSON NOT NULL,
    create_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    INDEX session_idx (session_id)
);"""
SEED_INSERT = "INSERT INTO seed_made (session_id, message) VALUES (%s, %s)"
SEED_SELECT = "SELECT message FROM seed_made WHERE session_id = %s ORDER BY id"


def test_a_seed_written_table_and_ours_read_each_other(
    platform: Platform, server: str, database: str, make: Callable[..., TiDBChatMessageHistory]
) -> None:
    session = f"s-{uid()}"
    run(platform, server, SEED_DDL, database=database)
    seed_row = json.dumps(message_to_dict(HumanMessage("written by the seed")))
    run(platform, server, SEED_INSERT, (session, seed_row), database=database)
    ours = make(session, table_name="seed_made")
    assert [m.content for m in ours.messages] == ["written by the seed"]
    ours.add_messages([AIMessage("written by chatmemory")])
    rows = run(platform, server, SEED_SELECT, (session,), database=database)
    seed_view = messages_from_dict([json.loads(r[0]) for r in rows])  # the seed's decode
    assert [m.content for m in seed_view] == ["written by the seed", "written by chatmemory"]


def test_tool_calls_ids_names_and_metadata_round_trip(make: Callable[..., TiDBChatMessageHistory]) -> None:
    history = make()
    turn = rich_turn()
    history.add_messages(turn)
    assert history.messages == turn


def test_chunks_are_stored_as_the_messages_they_stand_for(
    make: Callable[..., TiDBChatMessageHistory],
) -> None:
    history = make()
    history.add_message(AIMessageChunk("streamed ", id="c1") + AIMessageChunk("reply"))
    [m] = history.messages
    assert type(m) is AIMessage and m.content == "streamed reply" and m.id == "c1"


def test_add_messages_is_one_insert_statement(
    platform: Platform, server: str, database: str, make: Callable[..., TiDBChatMessageHistory]
) -> None:
    history = make(table_name="batched")
    history.add_messages([HumanMessage(f"m{i}") for i in range(5)])
    rows = run(
        platform,
        server,
        "SELECT id FROM batched WHERE session_id = %s ORDER BY id",
        (history.session_id,),
        database=database,
    )
    ids = [r[0] for r in rows]
    # one multi-row INSERT takes consecutive ids (AUTO_ID_CACHE 1 on TiDB, one statement on MariaDB)
    assert ids == list(range(ids[0], ids[0] + 5))


def test_ten_thousand_messages_come_back_complete_and_in_order(
    make: Callable[..., TiDBChatMessageHistory],
) -> None:
    history = make()
    for start in range(0, 10_000, 1_000):
        history.add_messages(
            [HumanMessage(f"m{i}") if i % 2 == 0 else AIMessage(f"m{i}") for i in range(start, start + 1_000)]
        )
    assert [m.content for m in history.messages] == [f"m{i}" for i in range(10_000)]


def test_eight_concurrent_writers_lose_nothing_and_keep_their_order(
    make: Callable[..., TiDBChatMessageHistory],
) -> None:
    session = f"s-{uid()}"
    writers = [make(session) for _ in range(8)]
    start = threading.Barrier(8)

    def write(w: int) -> None:
        start.wait()
        for j in range(25):
            writers[w].add_messages([HumanMessage(f"w{w}-{j}-q"), AIMessage(f"w{w}-{j}-a")])

    run_threads(8, write)
    got = [str(m.content) for m in writers[0].messages]
    assert len(got) == 8 * 25 * 2
    for w in range(8):
        mine = [c for c in got if c.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{j}-{s}" for j in range(25) for s in ("q", "a")]
    # a turn (one add_messages call) is never split by another writer
    for i in range(0, len(got), 2):
        assert got[i].endswith("-q") and got[i + 1] == got[i][:-1] + "a"


def test_one_history_object_is_safe_to_share_between_threads(
    make: Callable[..., TiDBChatMessageHistory],
) -> None:
    history = make()
    run_threads(8, lambda w: [history.add_message(HumanMessage(f"{w}-{j}")) for j in range(20)])
    assert sorted(str(m.content) for m in history.messages) == sorted(
        f"{w}-{j}" for w in range(8) for j in range(20)
    )


# -- errors are raised, never swallowed ----------------------------------------------------------------


def test_a_dropped_table_raises_on_read_write_and_clear(
    platform: Platform, server: str, database: str, make: Callable[..., TiDBChatMessageHistory]
) -> None:
    history = make(table_name="doomed")
    history.add_user_message("before")
    run(platform, server, "DROP TABLE doomed", database=database)
    with pytest.raises(BackendError, match=r"\(1146\)"):
        _ = history.messages
    with pytest.raises(BackendError, match=r"\(1146\)"):
        history.add_user_message("after")
    with pytest.raises(BackendError, match=r"\(1146\)"):
        history.clear()


def test_a_table_with_another_schema_raises_instead_of_reading_as_empty(
    platform: Platform, server: str, database: str, url: str
) -> None:
    run(platform, server, "CREATE TABLE wrong (id INT PRIMARY KEY, body TEXT)", database=database)
    history = TiDBChatMessageHistory("s", url, table_name="wrong")
    try:
        with pytest.raises(BackendError, match=r"\(1054\)"):
            _ = history.messages
    finally:
        history.close()


def test_a_wrong_password_is_a_clear_backend_error(platform: Platform, server: str, database: str) -> None:
    p = platform.mysql_params(server)
    bad = f"mysql://{p['user']}:not-the-password@{p['host']}:{p['port']}/{database}"
    with pytest.raises(BackendError, match=r"\(1045\) Access denied") as info:
        TiDBChatMessageHistory("s", bad)
    assert "not-the-password" not in str(info.value)


def test_a_session_id_longer_than_the_column_raises_before_any_write(url: str) -> None:
    with pytest.raises(ValueError, match="at most 255"):
        TiDBChatMessageHistory("x" * 300, url)


def test_a_connection_closed_by_the_server_is_reopened(
    platform: Platform, server: str, make: Callable[..., TiDBChatMessageHistory]
) -> None:
    history = make()
    history.add_user_message("before")
    with history._pool.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        conn_id = int(cur.fetchone()[0])
    kill = "KILL TIDB %s" if is_tidb(platform, server) else "KILL %s"
    run(platform, server, kill, (conn_id,))
    deadline = time.monotonic() + 30  # TiDB kills asynchronously: wait until the server dropped it
    while run(platform, server, "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,)):
        assert time.monotonic() < deadline, "the server never closed the killed connection"
        time.sleep(0.1)
    history.add_user_message("after")  # the pooled connection is dead: the pool opens another
    assert [m.content for m in history.messages] == ["before", "after"]
    with history._pool.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        assert int(cur.fetchone()[0]) != conn_id


# -- from a binding (the operator's table and least-privilege user) ---------------------------------


@pytest.fixture
def provisioned(platform: Platform, server: str) -> Iterator[tuple[StoreConnection, MemoryPlan, Binding]]:
    backend = TiDBBackend()
    store = sql_store(platform, server)
    p = sql_plan(max_messages=6)
    binding = backend.ensure(store, p, f"pw-{uid()}")
    yield store, p, binding
    backend.delete(store, p, DeletionPolicy.DELETE)
    backend.close()


def test_a_binding_history_uses_the_operators_table_and_runs_no_ddl(
    provisioned: tuple[StoreConnection, MemoryPlan, Binding],
) -> None:
    _store, _plan, binding = provisioned
    connector = TiDBConnector.from_binding(binding)
    try:
        h = connector.history("alice")
        h.add_messages(rich_turn())
        assert h.messages == rich_turn()
        other = connector.history("bob")
        assert other.messages == []
        h.clear()
        assert h.messages == []
        # a binding naming a table that does not exist is an error, not a CREATE (the user may not)
        missing = TiDBConnector.from_binding(binding.model_copy(update={"table": "not_there"}))
        try:
            with pytest.raises(BackendError, match=r"\(1146\)"):
                missing.history("alice").add_user_message("x")
        finally:
            missing.close()
    finally:
        connector.close()


def test_max_messages_from_the_binding_trims_the_session_on_write(
    platform: Platform, server: str, provisioned: tuple[StoreConnection, MemoryPlan, Binding]
) -> None:
    _store, p, binding = provisioned
    connector = TiDBConnector.from_binding(binding)
    try:
        h = connector.history("alice")
        keep = connector.history("bob")
        keep.add_messages([HumanMessage(f"b{i}") for i in range(3)])
        for i in range(5):
            h.add_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
        assert [m.content for m in h.messages] == ["q2", "a2", "q3", "a3", "q4", "a4"]
        count = run(
            platform,
            server,
            f"SELECT COUNT(*) FROM `{p.database}`.`{p.table}` WHERE session_id = %s",
            ("alice",),
        )[0][0]
        assert count == 6
        assert [m.content for m in keep.messages] == ["b0", "b1", "b2"]
    finally:
        connector.close()


def test_a_wrong_password_in_the_binding_is_a_clear_backend_error(
    provisioned: tuple[StoreConnection, MemoryPlan, Binding],
) -> None:
    _store, _plan, binding = provisioned
    connector = TiDBConnector.from_binding(binding.model_copy(update={"password": "wrong"}))
    try:
        with pytest.raises(BackendError, match=r"\(1045\) Access denied"):
            _ = connector.history("alice").messages
    finally:
        connector.close()


# -- LangChain integration and async --------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_keeps_two_turns(make: Callable[..., TiDBChatMessageHistory]) -> None:
    check_runnable_keeps_two_turns(make)


async def test_async_methods_add_read_and_clear(make: Callable[..., TiDBChatMessageHistory]) -> None:
    history = make()
    await history.aadd_messages(rich_turn())
    other = make(history.session_id)
    results = await asyncio.gather(history.aget_messages(), other.aget_messages())
    assert results[0] == results[1] == rich_turn()
    await history.aclear()
    assert await history.aget_messages() == []


def test_a_url_binding_connector_with_create_makes_the_table_with_the_bindings_ttl(
    platform: Platform, server: str, database: str
) -> None:
    p = platform.mysql_params(server)
    binding = Binding.model_validate(
        {
            "backend": "tidb",
            "provider": "tidb",
            "host": p["host"],
            "port": p["port"],
            "username": p["user"],
            "password": p["password"],
            "database": database,
            "table": "from_url",
            "ttl_seconds": 7200,
        }
    )
    connector = TiDBConnector.from_binding(binding, create=True)
    try:
        connector.history("alice").add_user_message("hi")
        assert [m.content for m in connector.history("alice").messages] == ["hi"]
    finally:
        connector.close()
    shown = str(run(platform, server, "SHOW CREATE TABLE from_url", database=database)[0][1])
    assert ("TTL=`create_time` + INTERVAL 2 HOUR" in shown) is is_tidb(platform, server)


@pytest.mark.parametrize("server", ["TIDB_URL"])
def test_tidbs_ttl_job_removes_expired_messages_of_a_directly_built_table(
    platform: Platform, server: str, database: str, make: Callable[..., TiDBChatMessageHistory]
) -> None:
    history = make(table_name="expiring", ttl_seconds=3600)
    history.add_messages([HumanMessage("old question"), AIMessage("old answer")])
    run(
        platform,
        server,
        "UPDATE expiring SET create_time = NOW() - INTERVAL 2 HOUR WHERE session_id = %s",
        (history.session_id,),
        database=database,
    )
    history.add_messages([HumanMessage("new question")])
    # run the table's TTL job now (TiDB's test endpoint; it answers when the job has run, which a
    # loaded machine can make slow) instead of waiting for its schedule
    trigger = f"{platform['TIDB_STATUS_URL']}/test/ttl/trigger/{database}/expiring"
    urllib.request.urlopen(urllib.request.Request(trigger, method="POST"), timeout=120).close()
    deadline = time.monotonic() + 60
    while len(history.messages) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [m.content for m in history.messages] == ["new question"]
