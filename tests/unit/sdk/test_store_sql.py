"""The LangGraph store's SQL layout (chatmemory.store.sql) and the SQL store's pure parts: names,
DDL, the vector rule shared with the operator, expiry clauses, key ranges and the binding checks.
The statements themselves run against TiDB and MariaDB in tests/integration/store/."""

from __future__ import annotations

import pytest
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BindingError
from chatmemory.store import store_for
from chatmemory.store._common import encode_value, matches_filter
from chatmemory.store._sql_store import ChatMemorySQLStore, _checked, _literal_prefix, _prefilter, _prefix
from chatmemory.store.sql import (
    MAX_KEY_BYTES,
    MAX_NAMESPACE_BYTES,
    store_event_name,
    store_table_ddl,
    store_table_names,
    store_ttl_current,
    store_ttl_event_sql,
    vector_in_sql,
)
from langgraph.store.base import MatchCondition


def binding(**overrides: object) -> Binding:
    fields: dict[str, object] = {
        "backend": BackendKind.TIDB,
        "provider": "tidb",
        "host": "127.0.0.1",
        "port": 4000,
        "username": "u",
        "password": "p",
        "database": "mem_db",
        "table": "messages",
        "checkpoint_table_prefix": "chatmemory_",
        "store_table_prefix": "chatmemory_",
    }
    fields.update(overrides)
    return Binding(**fields)  # type: ignore[arg-type]


def test_table_names_come_from_the_prefix_and_bad_prefixes_are_refused() -> None:
    assert store_table_names("chatmemory_") == ("chatmemory_store_items", "chatmemory_store_vectors")
    assert store_event_name("cm_") == "cm_store_ttl"
    for bad in ("a-b", "x`; DROP TABLE t; --", "é", "p" * 52):
        with pytest.raises(ValueError, match="store table prefix"):
            store_table_names(bad)


def test_tidb_tables_are_clustered_with_a_row_ttl_on_expires_at_and_a_dimension_free_vector() -> None:
    items, vectors = store_table_ddl("cm_", tidb=True, vector_type=True, database="db")
    assert items.startswith("CREATE TABLE IF NOT EXISTS `db`.`cm_store_items` (")
    assert "PRIMARY KEY (`namespace`, `key`) CLUSTERED" in items
    assert "`value` LONGBLOB NOT NULL" in items  # JSON bytes as written: TiDB's JSON would turn 1.0 into 1
    assert "`embedding` VECTOR NOT NULL" in vectors  # no (dims): any model's vectors fit
    for ddl in (items, vectors):
        assert "TTL = `expires_at` + INTERVAL 0 MINUTE TTL_ENABLE = 'ON'" in ddl
        assert "expires_idx" not in ddl


def test_mariadb_tables_keep_float32_bytes_and_index_expires_at_for_the_event() -> None:
    items, vectors = store_table_ddl("cm_", tidb=False, vector_type=False)
    assert items.startswith("CREATE TABLE IF NOT EXISTS `cm_store_items` (")
    assert "`embedding` MEDIUMBLOB NOT NULL" in vectors
    for ddl in (items, vectors):
        assert "TTL" not in ddl and "CLUSTERED" not in ddl
        assert "KEY `expires_idx` (`expires_at`)" in ddl


@pytest.mark.parametrize(
    ("version", "vector"),
    [
        ("8.0.11-TiDB-v8.5.0-chatmemory-e4e814fdc0af", True),
        ("8.0.11-TiDB-v9.0.0", True),
        ("8.0.11-TiDB-v8.4.0", True),
        ("8.0.11-TiDB-v8.1.1", False),
        ("10.11.19-MariaDB-0+deb12u1", False),
        ("11.8.2-MariaDB", False),
        ("8.0.40", False),
    ],
)
def test_vectors_are_ranked_in_sql_on_tidb_8_4_and_later_only(version: str, vector: bool) -> None:
    assert vector_in_sql(version) is vector


def test_the_ttl_clause_is_recognised_in_tidbs_show_create_table_only_when_enabled() -> None:
    shown = (
        ") ENGINE=InnoDB /*T![ttl] TTL=`expires_at` + INTERVAL 0 MINUTE */ /*T![ttl] TTL_ENABLE='ON' */ "
        "/*T![ttl] TTL_JOB_INTERVAL='1m' */"
    )
    assert store_ttl_current(shown)
    assert not store_ttl_current(shown.replace("'ON'", "'OFF'"))
    assert not store_ttl_current(") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")


def test_the_expiry_event_deletes_expired_rows_of_both_tables_every_minute() -> None:
    drop, create = store_ttl_event_sql("db", "cm_")
    assert drop == "DROP EVENT IF EXISTS `db`.`cm_store_ttl`"
    assert create.startswith("CREATE EVENT `db`.`cm_store_ttl` ON SCHEDULE EVERY 1 MINUTE ENABLE DO BEGIN")
    for table in store_table_names("cm_"):
        assert f"DELETE FROM `db`.`{table}` WHERE `expires_at` <= NOW(6);" in create
    with pytest.raises(ValueError, match="database"):
        store_ttl_event_sql("db`x", "cm_")


def test_a_prefix_is_whole_labels_one_exact_namespace_and_one_key_range() -> None:
    where, args = _prefix("i", ("users", "42"))
    assert where == "(i.`namespace` = %s OR (i.`namespace` >= %s AND i.`namespace` < %s))"
    assert args == (b"users.42", b"users.42.", b"users.42/")  # "/" follows "." : ("users", "420") is out
    assert _prefix("i", ()) == ("1 = 1", ())


def test_the_literal_part_of_a_namespace_listing_narrows_the_scan() -> None:
    assert _literal_prefix([MatchCondition("prefix", ("a", "b", "*", "c"))]) == ("a", "b")
    assert _literal_prefix([MatchCondition("suffix", ("z",))]) == ()
    assert _literal_prefix([]) == ()


def test_namespaces_and_keys_beyond_the_primary_key_limits_are_refused_by_name() -> None:
    assert _checked(("a", "ü"), "k") == ("a.ü".encode(), b"k")
    with pytest.raises(ValueError, match="namespace"):
        _checked(("n" * MAX_NAMESPACE_BYTES, "x"), "k")
    with pytest.raises(ValueError, match="key"):
        _checked(("a",), "é" * (MAX_KEY_BYTES // 2 + 1))


def test_a_tidb_binding_gives_a_sql_store_on_the_operators_tables_without_io() -> None:
    store = store_for(binding(port=1))  # nothing listens on port 1: building does no I/O
    assert isinstance(store, ChatMemorySQLStore)
    assert (store._items, store._vectors) == ("`chatmemory_store_items`", "`chatmemory_store_vectors`")
    assert store.supports_ttl
    store.close()


def test_a_binding_without_store_tables_names_the_missing_key() -> None:
    with pytest.raises(BindingError, match="store_table_prefix") as err:
        store_for(binding(store_table_prefix=""))
    assert err.value.key == "store_table_prefix"


def test_an_old_secret_without_the_key_parses_and_the_key_round_trips() -> None:
    data = binding().to_secret_data()
    assert data["store_table_prefix"] == "chatmemory_"
    del data["store_table_prefix"]
    old = Binding.from_mapping(data, source="test")
    assert old.store_table_prefix == ""


def test_the_server_side_prefilter_keeps_every_value_a_string_filter_matches() -> None:
    """Equality on a plain string needs the value's JSON to hold that string: a cheap INSTR on the
    server, never the final word (the core's evaluator runs on what comes back)."""
    where, needles = _prefilter("i", {"topic": "t5", "n": {"$gt": 3}, "who": {"$eq": "ann"}, "x": {"y": "z"}})
    assert where == " AND INSTR(i.`value`, %s) > 0" * 3
    assert needles == (b'"t5"', b'"ann"', b'"z"')
    for value in (
        {"topic": "t5", "n": 4, "who": "ann", "x": {"y": "z"}},
        {"x": {"y": "z"}, "who": "ann", "topic": "t5"},
    ):
        data = encode_value(value)
        assert all(n in data for n in needles)  # a match is never dropped on the server
        assert matches_filter(value, {"topic": "t5", "who": {"$eq": "ann"}, "x": {"y": "z"}})


@pytest.mark.parametrize(
    "filter",
    [
        {"n": 5},  # numbers: 5 and 5.0 are equal but spelt apart
        {"t": {"$ne": "a"}},
        {"t": {"$gt": "a"}},
        {"t": "ü"},  # not plain ASCII: another JSON writer may escape it
        {"t": 'say "hi"'},
        {"t": "a/b"},
        {"t": None},
        {"t": True},
    ],
)
def test_conditions_a_json_text_search_could_miss_are_left_to_the_evaluator(
    filter: dict[str, object],
) -> None:
    assert _prefilter("i", filter) == ("", ())
