"""The TiDB backend against real TiDB (unistore) and MariaDB: database, table, TTL, user, grants.

Every claim is checked on the server: SHOW CREATE TABLE, SHOW GRANTS, information_schema.EVENTS,
the memory's own login from the binding, and MySQL error codes for what it may not do.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest
from chatmemory.checkpoint.sql import DEFAULT_TABLE_PREFIX as CP
from chatmemory.checkpoint.sql import checkpoint_table_names
from chatmemory.contract import Binding
from chatmemory.store.sql import DEFAULT_TABLE_PREFIX as STORE
from chatmemory.store.sql import store_event_name, store_table_names
from chatmemory_operator.backends.base import DeletionPolicy, MemoryPlan, StoreConnection
from chatmemory_operator.backends.tidb import EVENT_NAME, TiDBBackend, grant_pattern
from chatmemory_operator.errors import BackendUnavailable

from tests.integration.operator.conftest import closed_port, sql_store
from tests.integration.operator.conftest import sql_plan as plan
from tests.support.platform import Platform

DENIED = (1142, 1044, 8121, 1143)


@pytest.fixture
def backend() -> Iterator[TiDBBackend]:
    b = TiDBBackend()
    yield b
    b.close()


@pytest.fixture(params=["TIDB_URL", "MARIADB_URL"])
def store(request: pytest.FixtureRequest, platform: Platform) -> StoreConnection:
    return sql_store(platform, request.param)


def tidb(store: StoreConnection) -> bool:
    return "tidb" in rows(store, "SELECT VERSION() AS v")[0]["v"].lower()


def connect(store: StoreConnection, user: str, password: str, database: str | None = None) -> Any:
    return pymysql.connect(
        host=store.host,
        port=store.port,
        user=user,
        password=password,
        database=database,
        autocommit=True,
        connect_timeout=5,
        cursorclass=pymysql.cursors.DictCursor,
    )


def as_memory(b: Binding) -> Any:
    return pymysql.connect(
        host=b.host,
        port=b.port,
        user=b.username,
        password=b.password,
        database=b.database,
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
    )


def rows(store: StoreConnection, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Run one statement as the admin."""
    with connect(store, store.admin_username, store.admin_password) as conn, conn.cursor() as cur:
        cur.execute(sql, args or None)  # no args: a literal % stays as is
        return list(cur.fetchall())


def create_table(store: StoreConnection, p: MemoryPlan) -> str:
    return str(rows(store, f"SHOW CREATE TABLE `{p.database}`.`{p.table}`")[0]["Create Table"])


def grants(store: StoreConnection, p: MemoryPlan) -> list[str]:
    return [next(iter(r.values())) for r in rows(store, f"SHOW GRANTS FOR '{p.username}'@'%'")]


def user_count(store: StoreConnection, p: MemoryPlan) -> int:
    return int(rows(store, "SELECT COUNT(*) AS n FROM mysql.user WHERE User = %s", (p.username,))[0]["n"])


def mysql_code(call: Any) -> int:
    with pytest.raises(pymysql.MySQLError) as exc:
        call()
    return int(exc.value.args[0])


def expected_grants(p: MemoryPlan) -> list[str]:
    """Data rights on the memory's database, plus UPDATE on the checkpointer's and the store's
    tables only."""
    return sorted(
        [
            f"GRANT SELECT,INSERT,DELETE ON '{grant_pattern(p.database)}'.* TO '{p.username}'@'%'",
            f"GRANT USAGE ON *.* TO '{p.username}'@'%'",
            *(
                f"GRANT UPDATE ON '{p.database}'.'{t}' TO '{p.username}'@'%'"
                for t in (*checkpoint_table_names(CP), *store_table_names(STORE))
            ),
        ]
    )


def normalized(grant_lines: list[str]) -> list[str]:
    return sorted(g.replace("`", "'").replace(", ", ",").split(" IDENTIFIED BY")[0] for g in grant_lines)


@pytest.mark.parametrize(("key", "provider"), [("TIDB_URL", "tidb"), ("MARIADB_URL", "mariadb")])
def test_check_reports_provider_and_ttl_mechanism(
    backend: TiDBBackend, platform: Platform, key: str, provider: str
) -> None:
    info = backend.check(sql_store(platform, key))
    assert info.provider == provider
    assert info.version
    assert info.capabilities == {
        "ttl": provider == "tidb",
        "events": provider != "tidb",
        "json": True,
        "vector": provider == "tidb",  # TiDB 8.5 on the platform: VECTOR, ranked in SQL
    }


def test_ensure_twice_converges_to_one_database_table_user_and_grant(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    first = backend.ensure(store, p, "pw-1")
    assert backend.ensure(store, p, "pw-1") == first
    assert rows(
        store, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (p.database,)
    )
    tables = rows(
        store, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (p.database,)
    )
    assert sorted(t["TABLE_NAME"] for t in tables) == sorted(
        [p.table, *checkpoint_table_names(CP), *store_table_names(STORE)]
    )
    ddl = create_table(store, p)
    for column in (
        "`id` bigint",
        "`session_id` varchar(255) NOT NULL",
        "`create_time` timestamp",
        "`session_idx`",
    ):
        assert column in ddl
    assert "AUTO_INCREMENT" in ddl
    if tidb(store):
        assert "AUTO_ID_CACHE=1" in ddl and "TTL=`create_time` + INTERVAL 1 HOUR" in ddl
        assert "TTL_ENABLE='ON'" in ddl and "TTL_JOB_INTERVAL='1m'" in ddl
    else:
        assert "json_valid(`message`)" in ddl
        events = rows(
            store,
            "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s "
            "ORDER BY EVENT_NAME",
            (p.database,),
        )
        assert events == [  # the messages' expiry, the checkpointer's and the store's
            {"EVENT_NAME": f"{CP}checkpoint_ttl", "STATUS": "ENABLED"},
            {"EVENT_NAME": store_event_name(STORE), "STATUS": "ENABLED"},
            {"EVENT_NAME": "chatmemory_ttl", "STATUS": "ENABLED"},
        ]
    assert user_count(store, p) == 1
    assert normalized(grants(store, p)) == expected_grants(p)
    observed = backend.observe(store, p)
    assert observed.exists and observed.user_exists and observed.details["grants"] == "ok"
    assert observed.details["ttl_seconds"] == "3600" and observed.details["ttl_enabled"] == "true"
    assert observed.details["ttl_mechanism"] == ("ttl_clause" if tidb(store) else "event")
    assert first.uri == f"mysql://{p.username}:pw-1@{store.host}:{store.port}/{p.database}"
    assert (first.database, first.table, first.ttl_seconds) == (p.database, p.table, 3600)
    assert first.store_table_prefix == STORE


def test_memory_user_reads_and_writes_its_table_and_is_denied_elsewhere(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    mine, theirs = plan(), plan()
    memories += [mine, theirs]
    binding = backend.ensure(store, mine, "pw-mine")
    backend.ensure(store, theirs, "pw-theirs")
    with as_memory(binding) as conn, conn.cursor() as cur:
        message = json.dumps({"type": "human", "data": {"content": "hi"}})
        cur.execute(
            f"INSERT INTO `{mine.table}` (session_id, message) VALUES (%s, %s), (%s, %s)", ("s", message) * 2
        )
        cur.execute(f"SELECT id, message FROM `{mine.table}` WHERE session_id = %s ORDER BY id", ("s",))
        got = cur.fetchall()
        assert len(got) == 2 and got[0]["id"] < got[1]["id"]
        cur.execute(f"DELETE FROM `{mine.table}` WHERE session_id = %s", ("s",))
        assert cur.rowcount == 2
        other = f"`{theirs.database}`.`{theirs.table}`"
        assert mysql_code(lambda: cur.execute(f"SELECT * FROM {other}")) in DENIED
        assert (
            mysql_code(lambda: cur.execute(f"INSERT INTO {other} (session_id, message) VALUES ('x', '{{}}')"))
            in DENIED
        )
        assert mysql_code(lambda: cur.execute(f"UPDATE `{mine.table}` SET session_id = 'y'")) in DENIED
        assert mysql_code(lambda: cur.execute(f"DROP TABLE `{mine.table}`")) in DENIED
        assert mysql_code(lambda: cur.execute("CREATE TABLE t2 (id INT)")) in DENIED
        assert mysql_code(lambda: cur.execute("SELECT * FROM mysql.user")) in DENIED
    assert mysql_code(lambda: connect(store, mine.username, "pw-mine", theirs.database)) in DENIED


def test_memories_provisioned_concurrently_next_to_other_account_changes_can_all_log_in(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    """TiDB reloads its whole privilege cache after every account statement and the last reload
    wins, so concurrent CREATE USERs used to lose users ("Failed to get user record")."""
    plans = [plan() for _ in range(16)]
    memories += plans
    stop = threading.Event()

    def someone_else_managing_accounts() -> None:
        with connect(store, store.admin_username, store.admin_password) as conn, conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("CREATE USER IF NOT EXISTS 'cm_bystander'@'%' IDENTIFIED BY 'x'")
                cur.execute("DROP USER IF EXISTS 'cm_bystander'@'%'")

    bystander = threading.Thread(target=someone_else_managing_accounts)
    bystander.start()
    try:
        with ThreadPoolExecutor(max_workers=len(plans)) as pool:
            bindings = list(pool.map(lambda p: backend.ensure(store, p, f"pw-{p.username}"), plans))
    finally:
        stop.set()
        bystander.join()
    for b in bindings:
        with as_memory(b) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) AS n FROM `{b.table}`")
            assert cur.fetchone()["n"] == 0


def test_dropped_table_revoked_grant_and_dropped_user_come_back(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    backend.ensure(store, p, "pw")
    rows(store, f"DROP TABLE `{p.database}`.`{p.table}`")
    assert not backend.observe(store, p).exists
    backend.ensure(store, p, "pw")
    assert "`session_idx`" in create_table(store, p)

    rows(store, f"REVOKE INSERT ON `{grant_pattern(p.database)}`.* FROM %s@'%%'", (p.username,))
    assert backend.observe(store, p).details["grants"] == "missing"
    backend.ensure(store, p, "pw")
    assert backend.observe(store, p).details["grants"] == "ok"

    rows(store, "DROP USER %s@'%%'", (p.username,))
    assert not backend.observe(store, p).user_exists
    b = backend.ensure(store, p, "pw")
    with as_memory(b) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO `{p.table}` (session_id, message) VALUES ('s', '{{}}')")
    assert user_count(store, p) == 1


def test_extra_grants_given_by_hand_are_revoked(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p, other = plan(), plan()
    memories += [p, other]
    backend.ensure(store, other, "pw-other")
    backend.ensure(store, p, "pw")
    rows(store, f"GRANT UPDATE, DROP ON `{p.database}`.* TO %s@'%%'", (p.username,))
    rows(store, f"GRANT SELECT ON `{other.database}`.* TO %s@'%%'", (p.username,))
    rows(store, f"GRANT UPDATE ON `{other.database}`.`{other.table}` TO %s@'%%'", (p.username,))
    rows(store, "GRANT PROCESS ON *.* TO %s@'%%'", (p.username,))
    assert backend.observe(store, p).details["grants"] == "extra"
    backend.ensure(store, p, "pw")
    assert normalized(grants(store, p)) == expected_grants(p)


def test_ttl_change_alters_the_ttl_clause_or_the_event(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan(ttl_seconds=3600)
    memories.append(p)
    backend.ensure(store, p, "pw")
    shorter = dataclasses.replace(p, ttl_seconds=90)  # 1.5 minutes: TiDB rounds up to 2 MINUTE
    backend.ensure(store, shorter, "pw")
    if tidb(store):
        assert "TTL=`create_time` + INTERVAL 2 MINUTE" in create_table(store, p)
        backend.ensure(store, dataclasses.replace(p, ttl_seconds=2 * 86400), "pw")
        assert "TTL=`create_time` + INTERVAL 2 DAY" in create_table(store, p)
    else:
        body = rows(
            store,
            "SELECT EVENT_DEFINITION AS b FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
            (p.database,),
        )
        assert "INTERVAL 90 SECOND" in body[0]["b"]
    backend.ensure(store, p, "pw")
    assert backend.observe(store, p).details["ttl_seconds"] == "3600"


def test_expired_rows_are_deleted_by_the_server(
    backend: TiDBBackend, store: StoreConnection, platform: Platform, memories: list[MemoryPlan]
) -> None:
    p = plan(ttl_seconds=3600)
    memories.append(p)
    backend.ensure(store, p, "pw")
    table = f"`{p.database}`.`{p.table}`"
    rows(
        store,
        f"INSERT INTO {table} (session_id, message, create_time) VALUES "
        "('old', '{}', NOW() - INTERVAL 2 HOUR), ('new', '{}', NOW())",
    )
    if tidb(store):
        url = f"{platform['TIDB_STATUS_URL']}/test/ttl/trigger/{p.database}/{p.table}"
        # the endpoint answers once the job has run, which a loaded machine can make slow
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=120).close()
        deadline = time.monotonic() + 60
        while (
            rows(store, f"SELECT session_id FROM {table} WHERE session_id = 'old'")
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
    else:
        # the scheduler runs the event once a minute; run its body now, as the scheduler would
        body = rows(
            store,
            "SELECT EVENT_DEFINITION AS b FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s AND EVENT_NAME = %s",
            (p.database, EVENT_NAME),
        )[0]["b"]
        rows(store, body)
    assert [r["session_id"] for r in rows(store, f"SELECT session_id FROM {table}")] == ["new"]


def test_password_change_rotates_old_password_out(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    backend.ensure(store, p, "old-password")
    backend.ensure(store, p, "new-password")
    connect(store, p.username, "new-password", p.database).close()
    assert mysql_code(lambda: connect(store, p.username, "old-password", p.database)) == 1045


def test_retain_drops_the_user_and_keeps_the_data(backend: TiDBBackend, store: StoreConnection) -> None:
    p = plan()
    b = backend.ensure(store, p, "pw")
    with as_memory(b) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO `{p.table}` (session_id, message) VALUES ('s', '{{}}')")
    backend.delete(store, p, DeletionPolicy.RETAIN)
    backend.delete(store, p, DeletionPolicy.RETAIN)
    try:
        assert user_count(store, p) == 0
        assert rows(store, f"SELECT COUNT(*) AS n FROM `{p.database}`.`{p.table}`")[0]["n"] == 1
        assert mysql_code(lambda: connect(store, p.username, "pw", p.database)) == 1045
    finally:
        backend.delete(store, p, DeletionPolicy.DELETE)


def test_delete_drops_the_database_and_the_user_and_is_repeatable(
    backend: TiDBBackend, store: StoreConnection
) -> None:
    p = plan()
    backend.ensure(store, p, "pw")
    backend.delete(store, p, DeletionPolicy.DELETE)
    backend.delete(store, p, DeletionPolicy.DELETE)
    assert user_count(store, p) == 0
    assert not rows(store, "SELECT * FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (p.database,))
    observed = backend.observe(store, p)
    assert not observed.exists and not observed.user_exists


def test_unreachable_store_raises_backend_unavailable_naming_the_address(
    backend: TiDBBackend, store: StoreConnection
) -> None:
    dead = dataclasses.replace(store, port=closed_port())
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{dead.port}"):
        backend.check(dead)
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{dead.port}"):
        backend.ensure(dead, plan(), "pw")


def test_wrong_admin_password_raises_backend_unavailable_without_the_password(
    backend: TiDBBackend, store: StoreConnection
) -> None:
    bad = dataclasses.replace(store, admin_password="definitely-wrong-pw")
    with pytest.raises(BackendUnavailable, match="credentials were refused") as exc:
        backend.check(bad)
    assert "definitely-wrong-pw" not in str(exc.value)


def test_a_database_named_with_grant_wildcards_grants_that_database_only(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    """``_`` is a wildcard in a database-level grant: ``_____`` would match ``mysql``."""
    p = plan(database="_____")
    memories.append(p)
    b = backend.ensure(store, p, "pw")
    assert backend.observe(store, p).details["grants"] == "ok"
    with as_memory(b) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO `{p.table}` (session_id, message) VALUES ('s', '{{}}')")
        for probe in ("SELECT user FROM mysql.user", "SELECT COUNT(*) FROM mysql.db"):
            with pytest.raises(pymysql.MySQLError) as denied:
                cur.execute(probe)
            assert denied.value.args[0] in (1142, 1044, 1105), denied.value.args


# -- the LangGraph store's tables (issue 17) --------------------------------------------------------


def store_ddl(store: StoreConnection, p: MemoryPlan, table: str) -> str:
    return str(rows(store, f"SHOW CREATE TABLE `{p.database}`.`{table}`")[0]["Create Table"])


def test_store_tables_hold_vectors_of_any_dimension_and_expire_on_the_server(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    """TiDB: a dimension-free VECTOR column and the row TTL on expires_at; MariaDB: float32 bytes
    and the store's EVENT. The memory's user inserts vectors of two dimensions without any DDL."""
    p = plan()
    memories.append(p)
    b = backend.ensure(store, p, "pw")
    items, vectors = store_table_names(b.store_table_prefix)
    for table in (items, vectors):
        ddl = store_ddl(store, p, table)
        assert "`expires_at` timestamp(6) NULL" in ddl
        if tidb(store):
            assert "TTL=`expires_at` + INTERVAL 0 MINUTE" in ddl and "TTL_ENABLE='ON'" in ddl
        else:
            assert "KEY `expires_idx` (`expires_at`)" in ddl
    assert "PRIMARY KEY (`namespace`,`key`)" in store_ddl(store, p, items)
    vector_ddl = store_ddl(store, p, vectors)
    assert ("`embedding` vector NOT NULL" if tidb(store) else "`embedding` mediumblob NOT NULL") in vector_ddl
    if not tidb(store):
        event = rows(
            store,
            "SELECT STATUS, EVENT_DEFINITION FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s AND EVENT_NAME = %s",
            (p.database, store_event_name(STORE)),
        )
        assert event[0]["STATUS"] == "ENABLED"
        assert all(
            f"`{t}` WHERE `expires_at` <= NOW(6)" in event[0]["EVENT_DEFINITION"] for t in (items, vectors)
        )
    with as_memory(b) as conn, conn.cursor() as cur:
        for dims in (3, 5):
            embedding = "[" + ",".join(["0.5"] * dims) + "]" if tidb(store) else b"\0" * (4 * dims)
            cur.execute(
                f"INSERT INTO `{vectors}` (namespace, `key`, field, embedding) VALUES (%s, %s, '$', %s)",
                ("ns", f"k{dims}", embedding),
            )
        cur.execute(f"SELECT COUNT(*) AS n FROM `{vectors}`")
        assert cur.fetchone()["n"] == 2


def test_memory_user_upserts_its_store_tables_and_may_not_alter_them(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    b = backend.ensure(store, p, "pw")
    items, _vectors = store_table_names(b.store_table_prefix)
    upsert = (
        f"INSERT INTO `{items}` (namespace, `key`, value) VALUES ('ns', 'k', %s) "
        "ON DUPLICATE KEY UPDATE value = VALUES(value)"
    )
    with as_memory(b) as conn, conn.cursor() as cur:
        cur.execute(upsert, ('{"v": 1}',))
        cur.execute(upsert, ('{"v": 2}',))
        cur.execute(f"SELECT value FROM `{items}`")
        assert [r["value"] for r in cur.fetchall()] == [b'{"v": 2}']
        assert mysql_code(lambda: cur.execute(f"ALTER TABLE `{items}` ADD COLUMN x INT")) in DENIED
        assert mysql_code(lambda: cur.execute(f"DROP TABLE `{items}`")) in DENIED
        assert mysql_code(lambda: cur.execute(f"CREATE TABLE `{STORE}store_vectors_1536` (id INT)")) in DENIED


def test_a_dropped_store_table_or_its_expiry_is_drift_and_comes_back(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    backend.ensure(store, p, "pw")
    assert backend.observe(store, p).drift == ()
    items, vectors = store_table_names(STORE)
    rows(store, f"DROP TABLE `{p.database}`.`{vectors}`")
    observed = backend.observe(store, p)
    assert observed.details["store_tables"] == f"missing {vectors}"
    assert any("store" in d.what for d in observed.drift)
    backend.ensure(store, p, "pw")
    assert backend.observe(store, p).drift == ()
    assert "`embedding`" in store_ddl(store, p, vectors)

    if tidb(store):
        rows(store, f"ALTER TABLE `{p.database}`.`{items}` REMOVE TTL")
        assert backend.observe(store, p).details["store_tables"] == f"the row TTL of {items} was changed"
    else:
        rows(store, f"DROP EVENT `{p.database}`.`{store_event_name(STORE)}`")
        assert backend.observe(store, p).details["store_tables"] == "the expiry event was changed or dropped"
    backend.ensure(store, p, "pw")
    assert backend.observe(store, p).drift == ()
    if tidb(store):
        assert "TTL=`expires_at` + INTERVAL 0 MINUTE" in store_ddl(store, p, items)


def test_a_binding_without_the_store_table_prefix_is_rewritten(
    backend: TiDBBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    """A Secret written by an operator from before the store: the next reconcile runs ensure."""
    p = plan()
    memories.append(p)
    b = backend.ensure(store, p, "pw")
    assert backend.binding_current(b, store, p)
    assert not backend.binding_current(b.model_copy(update={"store_table_prefix": ""}), store, p)
