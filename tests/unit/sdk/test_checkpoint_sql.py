"""The SQL checkpointer's DDL (what the operator runs) and its TTL arithmetic; no server."""

from __future__ import annotations

import re

import pytest
from chatmemory.checkpoint import ChatMemorySQLSaver, checkpoint_table_ddl, checkpoint_ttl_event_sql
from chatmemory.checkpoint.sql import (
    checkpoint_table_names,
    checkpoint_ttl_alter_sql,
    ttl_clause,
    ttl_delete_after_seconds,
    ttl_minutes,
    ttl_slack_seconds,
)


def test_tables_are_named_from_the_bindings_prefix() -> None:
    assert checkpoint_table_names("chatmemory_") == (
        "chatmemory_checkpoints",
        "chatmemory_checkpoint_blobs",
        "chatmemory_checkpoint_writes",
    )


@pytest.mark.parametrize("prefix", ["bad-name", "a`b", "x;drop", "p" * 50])
def test_a_prefix_that_is_not_a_short_plain_identifier_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        checkpoint_table_names(prefix)


def test_tidb_ddl_has_clustered_keys_and_a_ttl_on_updated_at() -> None:
    stmts = checkpoint_table_ddl("cm_", tidb=True, ttl_seconds=3600)
    assert len(stmts) == 3
    for s in stmts:
        assert s.startswith("CREATE TABLE IF NOT EXISTS `cm_checkpoint")
        assert ") CLUSTERED" in s
        assert "TTL = `updated_at` + INTERVAL 66 MINUTE TTL_ENABLE = 'ON'" in s


def test_statements_avoid_what_tidb_refuses() -> None:
    for tidb in (True, False):
        for s in checkpoint_table_ddl("cm_", tidb=tidb, ttl_seconds=60):
            assert "JSON" not in s.upper()
            assert not re.search(r"DEFAULT\s*\(", s)
            assert " AS new" not in s


def test_mysql_ddl_has_no_tidb_options_and_indexes_updated_at_for_the_event() -> None:
    for s in checkpoint_table_ddl("cm_", tidb=False, ttl_seconds=3600):
        assert "CLUSTERED" not in s
        assert "TTL" not in s
        assert "KEY `updated_idx` (`updated_at`)" in s


def test_without_a_ttl_tidb_tables_have_no_ttl_clause() -> None:
    assert all("TTL" not in s for s in checkpoint_table_ddl("cm_", tidb=True, ttl_seconds=0))
    assert ttl_clause(None) == ""


def test_a_database_qualifies_the_table_names() -> None:
    assert checkpoint_table_ddl("cm_", tidb=True, ttl_seconds=0, database="mem_db")[0].startswith(
        "CREATE TABLE IF NOT EXISTS `mem_db`.`cm_checkpoints`"
    )


def test_rows_go_a_slack_after_the_ttl_never_before() -> None:
    assert ttl_slack_seconds(60) == 60
    assert ttl_slack_seconds(86400) == 8640
    assert ttl_delete_after_seconds(600) == 660
    assert ttl_minutes(600) == 11
    assert ttl_minutes(61) * 60 >= ttl_delete_after_seconds(61)


def test_the_ttl_event_is_recreated_with_the_slack_and_dropped_without_a_ttl() -> None:
    stmts = checkpoint_ttl_event_sql("mem_db", "cm_", 600)
    assert stmts[0] == "DROP EVENT IF EXISTS `mem_db`.`cm_checkpoint_ttl`"
    assert stmts[1].startswith("CREATE EVENT `mem_db`.`cm_checkpoint_ttl` ON SCHEDULE EVERY 1 MINUTE")
    assert stmts[1].count("INTERVAL 660 SECOND") == 3
    assert checkpoint_ttl_event_sql("mem_db", "cm_", 0) == stmts[:1]


def test_ttl_changes_on_existing_tidb_tables_are_alter_statements() -> None:
    assert checkpoint_ttl_alter_sql("cm_", ttl_seconds=0)[0] == "ALTER TABLE `cm_checkpoints` REMOVE TTL"
    assert "INTERVAL 11 MINUTE" in checkpoint_ttl_alter_sql("cm_", ttl_seconds=600)[2]


def test_building_a_saver_opens_no_connection() -> None:
    saver = ChatMemorySQLSaver({"host": "192.0.2.1", "port": 1}, table_prefix="cm_", ttl_seconds=60)
    assert saver.t_cp == "`cm_checkpoints`"
    saver.close()


def test_the_ddl_and_the_redis_command_list_import_without_langgraph() -> None:
    """The operator image has no ``langgraph`` extra, yet provisions with these."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['langgraph'] = None\n"
        "from chatmemory.checkpoint.sql import checkpoint_table_ddl, checkpoint_ttl_event_sql\n"
        "from chatmemory.checkpoint import EXTRA_REDIS_COMMANDS, REQUIRED_GRANTS\n"
        "assert checkpoint_table_ddl('cm_', tidb=True, ttl_seconds=60) and EXTRA_REDIS_COMMANDS\n"
        "try:\n"
        "    from chatmemory.checkpoint import ChatMemorySQLSaver\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MissingExtra"
