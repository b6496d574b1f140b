"""Proof that TiDB (unistore) and MariaDB are real: versions, TiDB's row TTL clause."""

from __future__ import annotations

import uuid

import pymysql

from tests.support.platform import Platform


def test_tidb_answers_tidb_version(platform: Platform) -> None:
    with pymysql.connect(**platform.mysql_params("TIDB_URL")) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
        cur.execute("SELECT tidb_version()")
        (version,) = cur.fetchone()
    assert "Release Version" in version and "Store: unistore" in version


def test_tidb_accepts_a_table_with_a_ttl_clause(platform: Platform) -> None:
    db = f"platform_{uuid.uuid4().hex[:8]}"
    with pymysql.connect(**platform.mysql_params("TIDB_URL")) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
        cur.execute(f"CREATE DATABASE {db}")
        try:
            cur.execute(
                f"CREATE TABLE {db}.t (id BIGINT PRIMARY KEY AUTO_INCREMENT, created_at TIMESTAMP DEFAULT "
                "CURRENT_TIMESTAMP) AUTO_ID_CACHE 1 TTL = `created_at` + INTERVAL 1 DAY TTL_ENABLE = 'ON' "
                "TTL_JOB_INTERVAL = '1m'"
            )
            cur.execute(f"SHOW CREATE TABLE {db}.t")
            ddl = cur.fetchone()[1]
        finally:
            cur.execute(f"DROP DATABASE {db}")
    assert "TTL=`created_at` + INTERVAL 1 DAY" in ddl and "TTL_ENABLE='ON'" in ddl


def test_tidb_runs_several_ttl_tasks_at_once(platform: Platform) -> None:
    """Unistore counts as one TiKV store, so TiDB's default would run one TTL task at a time."""
    with pymysql.connect(**platform.mysql_params("TIDB_URL")) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
        cur.execute("SELECT @@global.tidb_ttl_running_tasks")
        (tasks,) = cur.fetchone()
    assert int(tasks) >= 8


def test_mariadb_answers_version_over_tcp_with_the_admin_user(platform: Platform) -> None:
    params = platform.mysql_params("MARIADB_URL")
    assert params["password"], "MARIADB_URL must carry an admin password"
    with pymysql.connect(**params) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
        cur.execute("SELECT VERSION(), @@character_set_server")
        version, charset = cur.fetchone()
    assert "MariaDB" in version and charset == "utf8mb4"
