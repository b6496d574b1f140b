"""Pure parts of the TiDB backend: identifier rules, TTL clause and its parsing, DDL, EVENT body,
the store's vector rule and table grants, and the retry around TiDB's privilege cache (a
scripted cursor; the race itself is reproduced in tests/integration/operator/test_tidb_backend.py)."""

from __future__ import annotations

import pymysql
import pytest
from chatmemory.contract import BackendKind, Binding
from chatmemory_operator.backends.tidb import (
    PRIVILEGE_RELOADS,
    SQLConnection,
    SQLPlan,
    TiDBBackend,
    event_body,
    execute_with_fresh_privileges,
    parse_ttl,
    qi,
    server_from_version,
    table_ddl,
    ttl_clause,
    ttl_interval,
    update_tables,
    validate_identifier,
    validate_plan,
)
from chatmemory_operator.errors import InvalidSpec


def plan(**overrides: object) -> SQLPlan:
    fields: dict[str, object] = {
        "namespace": "ns",
        "name": "m",
        "uid": "u",
        "ttl_seconds": 60,
        "max_messages": None,
        "username": "cm_user",
        "database": "cm_db",
        "table": "messages",
    }
    fields.update(overrides)
    return SQLPlan(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a", "cm_ns_mem_01", "A" * 64, "0starts_with_digit"])
def test_plain_identifiers_up_to_64_characters_are_accepted(name: str) -> None:
    assert validate_identifier(name, "database") == name


@pytest.mark.parametrize(
    "name", ["", "A" * 65, "has-dash", "has space", "back`tick", "semi;colon", "dot.ted", "é"]
)
def test_identifiers_outside_the_safe_alphabet_or_too_long_are_refused(name: str) -> None:
    with pytest.raises(InvalidSpec, match="database"):
        validate_identifier(name, "database")


def test_user_names_are_limited_to_32_characters() -> None:
    validate_plan(plan(username="u" * 32))
    with pytest.raises(InvalidSpec, match="user name"):
        validate_plan(plan(username="u" * 33))


@pytest.mark.parametrize("db", ["mysql", "INFORMATION_SCHEMA", "performance_schema", "sys"])
def test_system_schemas_can_never_be_a_memory_database(db: str) -> None:
    with pytest.raises(InvalidSpec, match="system schema"):
        validate_plan(plan(database=db))


def test_quoting_doubles_backticks() -> None:
    assert qi("plain") == "`plain`"
    assert qi("we`ird") == "`we``ird`"


@pytest.mark.parametrize(
    ("seconds", "interval"),
    [
        (1, (1, "MINUTE")),
        (60, (1, "MINUTE")),
        (61, (2, "MINUTE")),
        (90, (2, "MINUTE")),
        (5400, (90, "MINUTE")),
        (3600, (1, "HOUR")),
        (7 * 3600, (7, "HOUR")),
        (86400, (1, "DAY")),
        (30 * 86400, (30, "DAY")),
        (86400 + 1, (1441, "MINUTE")),
    ],
)
def test_ttl_rounds_up_to_whole_minutes_in_the_largest_exact_unit(
    seconds: int, interval: tuple[int, str]
) -> None:
    assert ttl_interval(seconds) == interval


def test_no_ttl_means_no_clause() -> None:
    assert ttl_interval(0) is None
    assert ttl_clause(0) == ""


def test_ttl_clause_uses_space_separated_options() -> None:
    assert (
        ttl_clause(7200) == "TTL = `create_time` + INTERVAL 2 HOUR TTL_ENABLE = 'ON' TTL_JOB_INTERVAL = '1m'"
    )


def test_parse_ttl_reads_tidbs_show_create_table() -> None:
    ddl = (
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin /*T![auto_id_cache] AUTO_ID_CACHE=1 */ "
        "/*T![ttl] TTL=`create_time` + INTERVAL 2 HOUR */ /*T![ttl] TTL_ENABLE='ON' */ "
        "/*T![ttl] TTL_JOB_INTERVAL='1m' */"
    )
    assert parse_ttl(ddl) == (120, "ON", "1m")
    assert parse_ttl(") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4") is None


def test_tidb_table_has_langchains_columns_auto_id_cache_and_ttl() -> None:
    ddl = table_ddl("db", "t", tidb=True, ttl_seconds=86400)
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS `db`.`t` (")
    for part in (
        "id BIGINT AUTO_INCREMENT PRIMARY KEY",
        "session_id VARCHAR(255) NOT NULL",
        "message JSON NOT NULL",
        "create_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP",
        "INDEX session_idx (session_id)",
        "AUTO_ID_CACHE 1",
        "INTERVAL 1 DAY",
    ):
        assert part in ddl


def test_mysql_table_has_no_tidb_options() -> None:
    ddl = table_ddl("db", "t", tidb=False, ttl_seconds=86400)
    assert "AUTO_ID_CACHE" not in ddl and "TTL" not in ddl


def test_event_body_deletes_rows_older_than_the_ttl_in_seconds() -> None:
    assert event_body("db", "t", 90) == "DELETE FROM `db`.`t` WHERE create_time < NOW() - INTERVAL 90 SECOND"


@pytest.mark.parametrize(
    ("version", "provider", "short"),
    [
        ("8.0.11-TiDB-v8.5.0-chatmemory-e4e814fdc0af", "tidb", "v8.5.0"),
        ("10.11.19-MariaDB-0+deb12u1", "mariadb", "10.11.19"),
        ("8.4.3", "mysql", "8.4.3"),
    ],
)
def test_server_flavour_comes_from_version(version: str, provider: str, short: str) -> None:
    server = server_from_version(version, "ON")
    assert (server.provider, server.version) == (provider, short)
    assert server.event_scheduler is (provider != "tidb")


@pytest.mark.parametrize(
    ("version", "vector"),
    [
        ("8.0.11-TiDB-v8.5.0-chatmemory-e4e814fdc0af", True),
        ("8.0.11-TiDB-v8.4.0", True),
        ("8.0.11-TiDB-v7.5.2", False),  # no VECTOR type before 8.4: the store ranks in the SDK
        ("10.11.19-MariaDB-0+deb12u1", False),
        ("8.4.3", False),
    ],
)
def test_only_tidb_8_4_and_later_keep_store_embeddings_as_vector(version: str, vector: bool) -> None:
    assert server_from_version(version, "ON").vector is vector


def _tidb_binding(**overrides: object) -> Binding:
    fields: dict[str, object] = {
        "backend": BackendKind.TIDB,
        "provider": "tidb",
        "host": "db",
        "port": 4000,
        "username": "cm_user",
        "password": "pw",
        "database": "cm_db",
        "table": "messages",
        "checkpoint_table_prefix": "chatmemory_",
        "store_table_prefix": "chatmemory_",
    }
    fields.update(overrides)
    return Binding(**fields)  # type: ignore[arg-type]


def test_a_binding_from_before_the_store_is_not_current_so_the_store_tables_get_made() -> None:
    store = SQLConnection(name="s", host="db", port=4000)
    backend = TiDBBackend()
    assert backend.binding_current(_tidb_binding(), store, plan())
    assert not backend.binding_current(_tidb_binding(store_table_prefix=""), store, plan())


def test_the_memory_user_may_update_the_checkpoint_and_store_tables_only() -> None:
    assert update_tables(plan()) == (
        "chatmemory_checkpoints",
        "chatmemory_checkpoint_blobs",
        "chatmemory_checkpoint_writes",
        "chatmemory_store_items",
        "chatmemory_store_vectors",
    )
    assert update_tables(plan(store_table_prefix="cm2_"))[-2:] == ("cm2_store_items", "cm2_store_vectors")


class _Cursor:
    """Answers each execute with the next scripted outcome (an exception or None) and records it."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.statements: list[str] = []

    def execute(self, statement: str, args: object = None) -> None:
        self.statements.append(statement)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


STALE = pymysql.err.OperationalError(1105, "Failed to get user record")


def test_stale_privilege_cache_is_reloaded_and_the_statement_run_again() -> None:
    cur = _Cursor(STALE, None, None)
    execute_with_fresh_privileges(cur, "ALTER USER %s@'%%' IDENTIFIED BY %s", ("u", "p"))
    assert [s.split()[0] for s in cur.statements] == ["ALTER", "FLUSH", "ALTER"]


def test_stale_privilege_cache_gives_up_after_a_few_reloads_with_the_servers_error() -> None:
    cur = _Cursor(*[STALE, None] * (PRIVILEGE_RELOADS + 1))
    with pytest.raises(pymysql.err.OperationalError, match="Failed to get user record"):
        execute_with_fresh_privileges(cur, "ALTER USER x", ())
    assert cur.statements.count("FLUSH PRIVILEGES") == PRIVILEGE_RELOADS


def test_other_errors_of_a_user_statement_are_not_retried() -> None:
    cur = _Cursor(pymysql.err.OperationalError(1396, "Operation ALTER USER failed"))
    with pytest.raises(pymysql.err.OperationalError, match="1396"):
        execute_with_fresh_privileges(cur, "ALTER USER x", ())
    assert cur.statements == ["ALTER USER x"]


def test_rotations_with_a_grace_period_alternate_between_two_users() -> None:
    import hashlib

    from chatmemory.contract import BackendKind, Binding
    from chatmemory_operator.backends.base import Prior, alternate_user, current_user, next_user

    p = plan(username="cm_" + "x" * 29)  # 32 characters: the second user stays within MySQL's limit
    second = alternate_user(p.username)
    assert len(second) == 32 and second != p.username

    def secret(user: str, password: str) -> Binding:
        return Binding(backend=BackendKind.TIDB, provider="tidb", username=user, password=password)

    digest = hashlib.sha256(b"old").hexdigest()
    assert next_user(p, Prior()) == p.username  # a new memory
    assert next_user(p, Prior(binding=secret(p.username, "old"))) == p.username  # no rotation
    starting = Prior(binding=secret(p.username, "old"), previous_password_sha256=digest)
    assert next_user(p, starting) == second  # the Secret still holds the previous password
    running = Prior(binding=secret(second, "new"), previous_password_sha256=digest)
    assert next_user(p, running) == second == current_user(p, running)  # the Secret names the new user
    back = Prior(binding=secret(second, "old"), previous_password_sha256=digest)
    assert next_user(p, back) == p.username
