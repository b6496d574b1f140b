"""What only the SQL store does, on the platform's TiDB and MariaDB (the shared behaviour is in
test_conformance.py): vectors ranked in SQL on TiDB and by brute force on MariaDB with the core's
answer, expiry hidden at once and removed by the server's TTL job or event, the refresh of an item
and its vectors, tenant isolation between two memories, round trips per call, exact JSON values.

Every store logs in as a memory user the operator's backend provisioned (sql_backends.py)."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from chatmemory import connect
from chatmemory.errors import BackendError
from chatmemory.store import store_for
from chatmemory.store._common import Candidate, select_items
from chatmemory.store.sql import store_event_name, store_table_names
from chatmemory_operator.backends.base import Prior
from langgraph.store.base import BaseStore, Item, SearchOp

from tests.integration.sdk.test_follow_secret import MountedSecret
from tests.integration.store.conftest import WordEmbeddings, word_index
from tests.integration.store.sql_backends import SQLMemory, sql_memory
from tests.support.platform import Platform

DENIED = (1142, 1044, 8121, 1143)


@pytest.fixture(params=["tidb", "mariadb"])
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def memory(platform: Platform, target: str) -> Iterator[SQLMemory]:
    with sql_memory(platform, target) as m:
        yield m


@pytest.fixture
def stores() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for s in made:
        s.close()


def open_store(memory: SQLMemory, stores: list[Any], **kwargs: Any) -> Any:
    store = store_for(memory.binding, **kwargs)
    stores.append(store)
    return store


def admin(memory: SQLMemory, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """One statement as the store's admin, in the memory's database."""
    s = memory.server
    with (
        pymysql.connect(
            host=s.host,
            port=s.port,
            user=s.admin_username,
            password=s.admin_password,
            database=memory.plan.database,
            autocommit=True,
            cursorclass=pymysql.cursors.DictCursor,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(sql, args or None)
        return list(cur.fetchall())


def tidb(memory: SQLMemory) -> bool:
    return memory.binding.provider == "tidb"


TEXTS = {  # distinct cosines with "cat": the order is known exactly
    "cats": "cat cat cat",
    "cat-dog": "cat cat dog",
    "mixed": "cat dog fish",
    "dogs": "dog dog",
    "birds": "bird tree",
}


def reference(
    store: BaseStore, op: SearchOp, keys: list[tuple[tuple[str, ...], str]], unindexed: set[str]
) -> list[Any]:
    """The core's answer (select_items) for items as the store holds them, embedded here."""
    embed = WordEmbeddings()
    candidates = []
    for ns, key in keys:
        item = store.get(ns, key, refresh_ttl=False)
        assert isinstance(item, Item)
        text = item.value.get("text")
        indexed = isinstance(text, str) and key not in unindexed
        candidates.append(Candidate(item, [embed.embed_query(text)] if indexed else []))
    qv = embed.embed_query(op.query) if op.query else None
    return [
        (h.namespace, h.key, None if h.score is None else round(h.score, 5))
        for h in select_items(candidates, op, qv)
    ]


def answer(store: BaseStore, op: SearchOp) -> list[Any]:
    hits = store.search(
        op.namespace_prefix,
        query=op.query,
        filter=op.filter,
        limit=op.limit,
        offset=op.offset,
        refresh_ttl=False,
    )
    return [(h.namespace, h.key, None if h.score is None else round(h.score, 5)) for h in hits]


def test_vector_search_gives_the_cores_ranking_in_sql_on_tidb_and_by_brute_force_on_mariadb(
    memory: SQLMemory, stores: list[Any]
) -> None:
    store = open_store(memory, stores, index=word_index())
    assert store.vector_in_sql is tidb(memory)
    keys: list[tuple[tuple[str, ...], str]] = []
    for i, (key, text) in enumerate(TEXTS.items()):
        ns = ("docs", "a") if i % 2 else ("docs", "b")
        store.put(ns, key, {"text": text, "n": i})
        keys.append((ns, key))
    store.put(("docs", "a"), "plain", {"text": "cat cat cat", "n": 9}, index=False)  # unindexed: last
    store.put(("docsx",), "outside", {"text": "cat cat cat", "n": 9})  # not under ("docs",)
    keys += [(("docs", "a"), "plain"), (("docsx",), "outside")]
    for op in (
        SearchOp(("docs",), None, 10, 0, "cat"),
        SearchOp(("docs",), None, 2, 1, "cat"),
        SearchOp(("docs",), {"n": {"$gte": 2}}, 10, 0, "cat"),
        SearchOp(("docs", "a"), None, 10, 0, "dog"),
        SearchOp((), None, 3, 4, "cat"),
    ):
        assert answer(store, op) == reference(store, op, keys, {"plain"}), op
    first = answer(store, SearchOp(("docs",), None, 10, 0, "cat"))
    assert [k for _, k, _ in first] == ["cats", "cat-dog", "mixed", "birds", "dogs", "plain"]
    assert first[-1][2] is None


def test_tidb_computes_distances_on_the_server_and_sends_back_only_the_page(
    memory: SQLMemory, stores: list[Any]
) -> None:
    if not tidb(memory):
        pytest.skip("MariaDB has no vector type: the store ranks there (previous test)")
    store = open_store(memory, stores, index=word_index())
    padding = "x" * 2000
    for i in range(60):
        store.put(("kb",), f"k{i}", {"text": "cat " * (i % 3 + 1) + "dog " * (i % 5), "pad": padding})
    hits = store.search(("kb",), query="cat", limit=3)
    assert len(hits) == 3 and all(h.score is not None for h in hits)
    summary = admin(
        memory,
        "SELECT MAX_RESULT_ROWS AS n, DIGEST_TEXT AS d FROM information_schema.STATEMENTS_SUMMARY "
        "WHERE SCHEMA_NAME = %s AND DIGEST_TEXT LIKE %s",
        (memory.plan.database, "%vec_cosine_distance%"),
    )
    assert summary, "no statement ranked with VEC_COSINE_DISTANCE"
    assert max(int(r["n"]) for r in summary) == 3  # 60 items under the prefix, 3 rows sent back


def count(memory: SQLMemory, table: str, key: str) -> int:
    return int(admin(memory, f"SELECT COUNT(*) AS n FROM `{table}` WHERE `key` = %s", (key,))[0]["n"])


def trigger_ttl_job(platform: Platform, database: str, table: str) -> None:
    """Ask TiDB to run a table's TTL job now; it answers 400 while its TTL workers are busy
    (other tests trigger jobs too), so this asks again for up to a minute."""
    url = f"{platform['TIDB_STATUS_URL']}/test/ttl/trigger/{database}/{table}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=120).close()
            return
        except urllib.error.HTTPError as e:
            if e.code != 400 or time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_expired_items_are_hidden_at_once_and_removed_by_the_servers_ttl_job_or_event(
    memory: SQLMemory, stores: list[Any], platform: Platform
) -> None:
    store = open_store(memory, stores, index=word_index())
    store.put(("ttl",), "short", {"text": "cat"}, ttl=1 / 60)  # one second
    store.put(("ttl",), "kept", {"text": "cat"})
    store.put(("gone",), "short2", {"text": "dog"}, ttl=1 / 60)
    items, vectors = store_table_names(memory.binding.store_table_prefix)
    assert count(memory, vectors, "short") == 1
    time.sleep(1.2)
    assert store.get(("ttl",), "short") is None
    assert [h.key for h in store.search(("ttl",), query="cat")] == ["kept"]
    assert [h.key for h in store.search(("ttl",))] == ["kept"]
    assert store.list_namespaces() == [("ttl",)]
    if tidb(memory):
        for table in (items, vectors):
            trigger_ttl_job(platform, memory.plan.database, table)
        deadline = time.monotonic() + 120  # the job also runs by itself every minute
        while (
            count(memory, items, "short") or count(memory, vectors, "short")
        ) and time.monotonic() < deadline:
            time.sleep(0.5)
    else:  # the scheduler runs the event every minute; run its statements now, as it would
        body = admin(
            memory,
            "SELECT EVENT_DEFINITION AS b FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s AND EVENT_NAME = %s",
            (memory.plan.database, store_event_name(memory.binding.store_table_prefix)),
        )[0]["b"]
        for statement in str(body).removeprefix("BEGIN").removesuffix("END").split(";"):
            if statement.strip():
                admin(memory, statement)
    for key in ("short", "short2"):
        assert (count(memory, items, key), count(memory, vectors, key)) == (0, 0), key
    assert (count(memory, items, "kept"), count(memory, vectors, "kept")) == (1, 1)


def expiries(memory: SQLMemory, key: str) -> set[Any]:
    items, vectors = store_table_names(memory.binding.store_table_prefix)
    return {
        r["e"]
        for t in (items, vectors)
        for r in admin(memory, f"SELECT expires_at AS e FROM `{t}` WHERE `key` = %s", (key,))
    }


def test_a_read_pushes_back_the_expiry_of_the_item_and_of_its_vectors_together(
    memory: SQLMemory, stores: list[Any]
) -> None:
    """Vectors carry the item's expiry so that the TTL job, which reads one table at a time,
    never deletes the vectors of an item a read kept alive."""
    store = open_store(memory, stores, index=word_index(["text", "more"]))
    store.put(("r",), "k", {"text": "cat", "more": "dog"}, ttl=10)
    (first,) = expiries(memory, "k")
    time.sleep(0.05)
    store.get(("r",), "k", refresh_ttl=False)
    assert expiries(memory, "k") == {first}
    store.get(("r",), "k")
    (second,) = expiries(memory, "k")
    assert second > first
    time.sleep(0.05)
    store.search(("r",), query="cat")
    (third,) = expiries(memory, "k")
    assert third > second


def test_another_memorys_user_cannot_read_or_write_this_memorys_store(
    memory: SQLMemory, stores: list[Any], platform: Platform, target: str
) -> None:
    mine = open_store(memory, stores)
    mine.put(("secrets",), "k", {"v": 1})
    items, _ = store_table_names(memory.binding.store_table_prefix)
    with sql_memory(platform, target) as other:
        theirs = other.binding
        other_items = f"`{memory.plan.database}`.`{items}`"
        with (
            pymysql.connect(
                host=theirs.host,
                port=theirs.port,
                user=theirs.username,
                password=theirs.password,
                autocommit=True,
            ) as conn,
            conn.cursor() as cur,
        ):
            for sql in (
                f"SELECT * FROM {other_items}",
                f"DELETE FROM {other_items}",
                f"INSERT INTO {other_items} (namespace, `key`, value) VALUES ('a', 'b', '{{}}')",
            ):
                with pytest.raises(pymysql.MySQLError) as denied:
                    cur.execute(sql)
                assert denied.value.args[0] in DENIED, sql
        pointed = store_for(theirs.model_copy(update={"database": memory.plan.database}))
        stores.append(pointed)
        with pytest.raises(BackendError, match="denied"):
            pointed.get(("secrets",), "k")
    assert mine.get(("secrets",), "k").value == {"v": 1}


class RoundTrips:
    """Counts the queries PyMySQL sends (one COM_QUERY is one round trip)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        original = pymysql.connections.Connection._execute_command

        def counting(conn: Any, command: int, sql: Any) -> Any:
            if command == pymysql.constants.COMMAND.COM_QUERY:
                self.n += 1
            return original(conn, command, sql)

        monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", counting)

    def __call__(self, fn: Any) -> int:
        before = self.n
        fn()
        return self.n - before


def test_round_trips_a_put_and_a_batch_one_a_get_one_and_its_ttl_refresh_one_more(
    memory: SQLMemory, stores: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langgraph.store.base import PutOp

    store = open_store(memory, stores, index=word_index())
    store.put(("warm",), "up", {"text": "cat"})  # the pool's connection is open
    trips = RoundTrips(monkeypatch)
    assert trips(lambda: store.put(("a",), "k", {"text": "cat dog"})) == 1
    assert trips(lambda: store.put(("a",), "k", {"text": "cat"})) == 1  # overwrite: re-indexed too
    assert trips(lambda: store.put(("a",), "t", {"text": "cat"}, ttl=10)) == 1
    assert trips(lambda: store.get(("a",), "k")) == 1  # no TTL: nothing to refresh
    assert trips(lambda: store.get(("a",), "t", refresh_ttl=False)) == 1
    assert trips(lambda: store.get(("a",), "t")) == 2  # the SELECT, then the refresh
    assert trips(lambda: store.batch([PutOp(("b",), f"k{i}", {"text": "dog"}) for i in range(50)])) == 1
    assert trips(lambda: store.search(("b",), filter={"text": "dog"}, limit=5)) == 1
    # with a query, MariaDB reads vectors first and the page's values second
    ranked = 1 if store.vector_in_sql else 2
    assert trips(lambda: store.search(("b",), query="dog", limit=5)) == ranked
    assert trips(lambda: store.search(("a",), query="dog", limit=5)) == ranked + 1  # + the refresh of "t"
    assert trips(lambda: store.delete(("a",), "k")) == 1
    assert trips(lambda: store.list_namespaces(prefix=("b",))) == 1


def test_values_come_back_byte_exact_json(memory: SQLMemory, stores: list[Any]) -> None:
    """TiDB's JSON type would give 1 for 1.0 and sort the keys: values are stored as the JSON text
    the SDK wrote."""
    store = open_store(memory, stores)
    value = {"zeta": 1.0, "a": 2**63 - 1, "u": "ü\u2028😀", "nested": {"z": [1, {"a": None}], "b": 0.1}}
    store.put(("v",), "k", value)
    got = store.get(("v",), "k").value
    assert got == value and isinstance(got["zeta"], float)
    assert list(got) == ["zeta", "a", "u", "nested"] and list(got["nested"]) == ["z", "b"]


def test_vectors_of_other_dimensions_count_as_unindexed_after_a_model_change(
    memory: SQLMemory, stores: list[Any]
) -> None:
    old = open_store(memory, stores, index=word_index())
    old.put(("m",), "before", {"text": "cat"})

    class Small(WordEmbeddings):
        dims = 2

        def _vector(self, text: str) -> list[float]:
            return [float(text.count("cat")), 1.0]

    new = open_store(memory, stores, index={"dims": 2, "embed": Small(), "fields": ["text"]})
    new.put(("m",), "after", {"text": "cat"})
    assert [(h.key, h.score is None) for h in new.search(("m",), query="cat")] == [
        ("after", False),
        ("before", True),
    ]


def test_a_store_following_its_secret_goes_on_after_the_previous_user_of_a_rotation_is_dropped(
    memory: SQLMemory, tmp_path: Any
) -> None:
    """The pooled connections speak for the previous user; once the grace period ends the server
    refuses their statements, and the store reads the Secret again and sends them as the next user."""
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(memory.binding)
    with connect(path=mounted.root) as mem:
        store = mem.store(index=word_index())
        try:
            store.put(("r",), "before", {"text": "cat"})
            first = memory.binding
            digest = hashlib.sha256(first.password.encode()).hexdigest()
            prior = Prior(binding=first, previous_password_sha256=digest)
            second = memory.backend.ensure(memory.server, memory.plan, "second-password", prior)
            assert second.username != first.username
            mounted.write(second)
            memory.backend.ensure(memory.server, memory.plan, "second-password", Prior(binding=second))
            store.put(("r",), "after", {"text": "cat dog"})  # on a pooled connection of the first user
            assert store.get(("r",), "before") is not None
            assert [h.key for h in store.search(("r",), query="cat")] == ["before", "after"]
        finally:
            store.close()


def test_a_store_built_directly_creates_its_tables_with_setup(platform: Platform, target: str) -> None:
    """Without an operator: connection settings, then setup() (needs CREATE), as LangGraph's own
    stores do."""
    from chatmemory.store._sql_store import ChatMemorySQLStore

    params = dict(platform.mysql_params({"tidb": "TIDB_URL", "mariadb": "MARIADB_URL"}[target]))
    database = f"cm_direct_{int(time.time() * 1000) % 10**9}"
    with pymysql.connect(**{**params, "autocommit": True}) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
        cur.execute(f"CREATE DATABASE `{database}`")
    store = ChatMemorySQLStore({**params, "database": database}, table_prefix="app_", index=word_index())
    try:
        store.setup()
        store.setup()  # idempotent
        store.put(("d",), "k", {"text": "cat"})
        assert [h.key for h in store.search(("d",), query="cat")] == ["k"]
        tables = {r[0] for r in store._run([("SHOW TABLES", ())])[0]}
        assert tables == {"app_store_items", "app_store_vectors"}
    finally:
        store.close()
        with pymysql.connect(**{**params, "autocommit": True}) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")


def test_tidb_tables_made_before_the_vector_type_keep_the_brute_force(
    memory: SQLMemory, stores: list[Any]
) -> None:
    """A TiDB upgraded to 8.4+ under an existing memory: the SDK asks the table, not the version."""
    if not tidb(memory):
        pytest.skip("TiDB only")
    from chatmemory.store.sql import store_table_ddl

    _, vectors = store_table_names(memory.binding.store_table_prefix)
    admin(memory, f"DROP TABLE `{vectors}`")
    admin(memory, store_table_ddl(memory.binding.store_table_prefix, tidb=True, vector_type=False)[1])
    store = open_store(memory, stores, index=word_index())
    store.put(("u",), "cats", {"text": "cat cat"})
    store.put(("u",), "dogs", {"text": "dog"})
    assert not store.vector_in_sql
    assert [h.key for h in store.search(("u",), query="cat")] == ["cats", "dogs"]
