"""chatmemory.sql: the message table defined once (identifier rule, DDL, TTL clause, statements)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chatmemory import sql


@pytest.mark.parametrize("name", ["a", "langchain_message_store", "A" * 64, "0starts_with_digit"])
def test_plain_identifiers_up_to_64_characters_are_accepted(name: str) -> None:
    assert sql.validate_identifier(name, "table") == name


@pytest.mark.parametrize(
    "name", ["", "A" * 65, "has-dash", "has space", "back`tick", "x; DROP TABLE y", "dot.ted", "é"]
)
def test_identifiers_outside_the_safe_alphabet_are_refused_naming_what_they_are(name: str) -> None:
    with pytest.raises(ValueError, match=r"^table .* is not a valid name"):
        sql.validate_identifier(name, "table")


def test_ddl_without_a_database_targets_the_connections_default_database() -> None:
    ddl = sql.table_ddl(None, "msgs", tidb=False, ttl_seconds=0)
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS `msgs` (")


def test_ddl_keeps_langchains_tidb_columns_so_either_class_reads_the_other() -> None:
    ddl = sql.table_ddl("db", "t", tidb=False, ttl_seconds=0)
    for part in (
        "id BIGINT AUTO_INCREMENT PRIMARY KEY",
        "session_id VARCHAR(255) NOT NULL",
        "message JSON NOT NULL",
        "create_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP",
        "INDEX session_idx (session_id)",
    ):
        assert part in ddl
    assert "AUTO_ID_CACHE" not in ddl and "TTL" not in ddl


def test_tidb_ddl_orders_ids_across_servers_and_carries_the_row_ttl() -> None:
    ddl = sql.table_ddl(None, "t", tidb=True, ttl_seconds=3600)
    assert ddl.endswith(
        ") AUTO_ID_CACHE 1 TTL = `create_time` + INTERVAL 1 HOUR TTL_ENABLE = 'ON' TTL_JOB_INTERVAL = '1m'"
    )
    assert sql.table_ddl(None, "t", tidb=True, ttl_seconds=0).endswith(") AUTO_ID_CACHE 1")


def test_ddl_refuses_an_unsafe_table_name() -> None:
    with pytest.raises(ValueError, match="table"):
        sql.table_ddl(None, "t`; DROP DATABASE x; --", tidb=True, ttl_seconds=0)


def test_insert_is_one_statement_with_one_placeholder_pair_per_row() -> None:
    stmt = sql.insert_sql("t", 3)
    assert stmt == "INSERT INTO `t` (session_id, message) VALUES (%s, %s), (%s, %s), (%s, %s)"
    with pytest.raises(ValueError, match="at least one row"):
        sql.insert_sql("t", 0)


def test_earliest_time_is_a_parameter_never_spelled_into_the_statement() -> None:
    assert sql.select_sql("t", since=False) == "SELECT message FROM `t` WHERE session_id = %s ORDER BY id"
    assert (
        sql.select_sql("t", since=True)
        == "SELECT message FROM `t` WHERE session_id = %s AND create_time >= %s ORDER BY id"
    )


def test_clear_and_trim_touch_only_one_session() -> None:
    assert sql.delete_sql("t") == "DELETE FROM `t` WHERE session_id = %s"
    trim = sql.trim_sql("t")
    assert trim.startswith("DELETE FROM `t` WHERE session_id = %s AND id < (")
    assert trim.count("%s") == 3


@pytest.mark.parametrize(
    "build",
    [lambda t: sql.select_sql(t, since=False), sql.delete_sql, sql.trim_sql, lambda t: sql.insert_sql(t, 1)],
    ids=["select", "delete", "trim", "insert"],
)
def test_every_statement_builder_validates_the_table_name(build: Callable[[str], str]) -> None:
    with pytest.raises(ValueError, match="table"):
        build("bad name")


def test_parse_ttl_reads_back_what_ttl_clause_writes() -> None:
    shown = (
        ") ENGINE=InnoDB /*T![auto_id_cache] AUTO_ID_CACHE=1 */"
        " /*T![ttl] TTL=`create_time` + INTERVAL 90 MINUTE */"
        " /*T![ttl] TTL_ENABLE='ON' */ /*T![ttl] TTL_JOB_INTERVAL='1m' */"
    )
    assert sql.ttl_interval(5400) == (90, "MINUTE")
    assert sql.parse_ttl(shown) == (90, "ON", "1m")
