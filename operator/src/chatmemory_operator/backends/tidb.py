"""The TiDB / MySQL / MariaDB backend: a database, a message table and a user per ChatMemory.

Called by the reconcile layer through :class:`~chatmemory_operator.backends.base.Backend` (built by
:func:`chatmemory_operator.backends.build_backends`). For each memory it keeps, idempotently:

- ``CREATE DATABASE IF NOT EXISTS `<db>```;
- the message table, compatible with LangChain's ``TiDBChatMessageHistory`` (``id`` BIGINT
  AUTO_INCREMENT, ``session_id``, ``message`` JSON, ``create_time``, ``INDEX session_idx``), with
  ``AUTO_ID_CACHE 1`` and TiDB's row ``TTL`` clause on TiDB;
- on MySQL/MariaDB, where there is no TTL clause, an EVENT ``chatmemory_ttl`` in the memory's
  database that deletes expired rows every minute;
- the LangGraph checkpointer's three tables and the LangGraph store's two
  (:mod:`chatmemory.checkpoint.sql`, :mod:`chatmemory.store.sql`), each with its expiry: TiDB's
  row TTL, or on MySQL/MariaDB one EVENT per feature;
- a user ``'<user>'@'%'`` with ``SELECT, INSERT, DELETE`` on ``<db>.*``, ``UPDATE`` on the
  checkpoint and store tables only (upserts), and nothing else (extra grants found on the user
  are revoked).

``Delete`` drops the database and the user; ``Retain`` drops the user only (the table keeps its
TTL clause or event, so retained rows still expire). Identifiers are validated strictly and
quoted; passwords travel as escaped parameters and never appear in errors or logs. The table DDL,
the TTL clause and the identifier rule come from :mod:`chatmemory.sql`, shared with the SDK's history.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import pymysql
from chatmemory import sql
from chatmemory.checkpoint import sql as checkpoint_sql
from chatmemory.contract import BackendKind, Binding
from chatmemory.sql import (  # defined once in the SDK; re-exported here for callers
    MAX_NAME_LEN,
    TTL_JOB_INTERVAL,
    UNIT_MINUTES,
    MySQLPool,
    parse_ttl,
    qi,
    table_ddl,
    ttl_clause,
    ttl_interval,
)
from chatmemory.store import sql as store_sql
from pymysql.cursors import DictCursor

from chatmemory_operator import naming
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.backends import base
from chatmemory_operator.backends._common import CONNECT_TIMEOUT, REQUEST_TIMEOUT, ClientCache, redact
from chatmemory_operator.backends.base import DeletionPolicy, Drift, MemoryPlan, Observed, Prior, StoreInfo
from chatmemory_operator.errors import BackendUnavailable, InvalidSpec

MAX_USER_LEN: Final = base.MAX_USER_LEN  # TiDB and MySQL 5.7+/8 user names
_SYSTEM_SCHEMAS: Final = frozenset(
    {"mysql", "information_schema", "performance_schema", "sys", "metrics_schema", "test"}
)
#: The only privileges a memory's user holds on its own database; the message table stays
#: append-only. The LangGraph checkpointer and store upsert, so the user also gets UPDATE on their
#: own tables (three and two), and only there.
GRANTS: Final[tuple[str, ...]] = ("SELECT", "INSERT", "DELETE")
TABLE_GRANT: Final = "UPDATE"
_GRANT_COLUMNS: Final = frozenset(f"{p.capitalize()}_priv" for p in GRANTS)
EVENT_NAME: Final = "chatmemory_ttl"

_EVENT_RE: Final = re.compile(r"INTERVAL\s+(\d+)\s+SECOND", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class SQLConnection(base.HostPortConnection):
    """A TiDB, MySQL or MariaDB store: the server's address."""


@dataclass(frozen=True, kw_only=True)
class SQLPlan(MemoryPlan):
    """A memory on TiDB/MySQL: its database, message table and checkpoint table prefix."""

    database: str
    table: str = naming.DEFAULT_TABLE
    checkpoint_table_prefix: str = ""
    store_table_prefix: str = ""


def grant_pattern(database: str) -> str:
    """The database as a grant names it: ``_`` and ``%`` escaped, since at database level a grant
    reads them as wildcards (a memory whose database is ``_____`` would otherwise be granted
    ``mysql.*``). ``mysql.db`` stores the escaped form, and ``SHOW GRANTS`` shows it."""
    return database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def wanted_ttl(plan: SQLPlan) -> tuple[int, str, str]:
    """The message table's TTL as :func:`chatmemory.sql.parse_ttl` reads it: (minutes, enable, job)."""
    interval = ttl_interval(plan.ttl_seconds)
    assert interval is not None  # the API guarantees a positive TTL
    return interval[0] * UNIT_MINUTES[interval[1]], "ON", TTL_JOB_INTERVAL


def validate_identifier(value: str, what: str, *, max_len: int = MAX_NAME_LEN) -> str:
    """``[A-Za-z0-9_]``, 1..max_len characters; raises :class:`InvalidSpec` naming ``what``."""
    try:
        return sql.validate_identifier(value, what, max_len=max_len)
    except ValueError as e:
        raise InvalidSpec(str(e)) from None


def validate_plan(plan: SQLPlan) -> None:
    """Refuse names that could not be quoted safely or would touch a system schema."""
    validate_identifier(plan.database, "database")
    validate_identifier(plan.table, "table")
    validate_identifier(plan.username, "user name", max_len=MAX_USER_LEN)
    if plan.database.lower() in _SYSTEM_SCHEMAS:
        raise InvalidSpec(f"database {plan.database!r} is a system schema")


def event_body(database: str, table: str, ttl_seconds: int) -> str:
    """What the MySQL/MariaDB expiry EVENT runs every minute."""
    where = f"WHERE create_time < NOW() - INTERVAL {int(ttl_seconds)} SECOND"
    return f"DELETE FROM {qi(database)}.{qi(table)} {where}"  # noqa: S608 - validated, quoted identifiers


@dataclass(frozen=True)
class _Server:
    provider: str  # tidb, mariadb, mysql
    version: str
    event_scheduler: bool
    vector: bool = False  # embeddings as VECTOR, ranked in SQL (chatmemory.store.sql.vector_in_sql)

    @property
    def tidb(self) -> bool:
        return self.provider == "tidb"


def server_from_version(version: str, event_scheduler: str = "") -> _Server:
    """Provider and a short version from ``SELECT VERSION()`` (TiDB: ``8.0.11-TiDB-v8.5.0-...``)."""
    if "tidb" in version.lower():
        m = re.search(r"TiDB-(v[0-9][^-\s]*)", version)
        return _Server("tidb", m.group(1) if m else version, False, store_sql.vector_in_sql(version))
    provider = "mariadb" if "mariadb" in version.lower() else "mysql"
    return _Server(provider, version.split("-")[0], event_scheduler.upper() in ("ON", "1"))


class _Pool(MySQLPool):
    """A few idle admin connections for one store (opening one costs ~23 ms on TiDB), reused by
    the SDK's rule, and the server's flavour once known."""

    def __init__(self, store: SQLConnection) -> None:
        super().__init__(self._open, 4)
        self._store = store
        self.server: _Server | None = None

    def _open(self) -> pymysql.connections.Connection[Any]:
        s = self._store
        kwargs: dict[str, Any] = {
            "host": s.host,
            "port": s.port,
            "user": s.admin_username or "root",
            "password": s.admin_password,
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": REQUEST_TIMEOUT,
            "write_timeout": REQUEST_TIMEOUT,
            "autocommit": True,
            "charset": "utf8mb4",
            "cursorclass": DictCursor,
        }
        if s.tls.enabled:
            ctx = ssl.create_default_context(cadata=s.tls.ca_cert or None)
            if s.tls.insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            kwargs["ssl"] = ctx
        return pymysql.connect(**kwargs)


class TiDBBackend:
    """Provisions memories on a TiDB, MySQL or MariaDB store. Thread-safe."""

    kind = BackendKind.TIDB

    def __init__(self) -> None:
        self._pools: ClientCache[_Pool] = ClientCache(lambda p: p.close())
        # TiDB reloads its whole privilege cache after each account statement and the last reload
        # to finish wins; serialising our own account statements per server keeps them from
        # undoing each other (see execute_with_fresh_privileges for everyone else's).
        self._account_locks: dict[tuple[str, int], threading.Lock] = {}

    def _accounts(self, store: SQLConnection) -> threading.Lock:
        return self._account_locks.setdefault((store.host, store.port), threading.Lock())

    def close(self) -> None:
        """Close every pooled admin connection (called at operator cleanup)."""
        self._pools.close()

    # -- Backend protocol -------------------------------------------------------------------------

    def connection(self, store: api.ChatMemoryStore, admin: base.AdminAccess) -> SQLConnection:
        spec = store.spec.tidb
        assert spec is not None  # the registry picks this backend for stores with a tidb block
        return SQLConnection(host=spec.host, port=spec.port, **base.connection_fields(store, admin))

    def plan(self, common: MemoryPlan, memory: api.ChatMemory, store: api.ChatMemoryStore) -> SQLPlan:
        spec = memory.spec.tidb or api.TiDBMemorySpec()
        custom = tuple(
            f"spec.tidb.{name}"
            for name, value in (("database", spec.database), ("table", spec.table))
            if value
        )
        return base.extend(
            common,
            SQLPlan,
            database=spec.database or naming.database(common.namespace, common.name),
            table=spec.table or naming.DEFAULT_TABLE,
            custom=custom,
        )

    def claims(self, plan: SQLPlan) -> tuple[base.Claim, ...]:
        second = base.Claim(base.USER_CLAIM, base.alternate_user(plan.username))
        return (*base.claims_of(plan, "database", plan.database, "spec.tidb.database"), second)

    def exists(self, store: SQLConnection, plan: SQLPlan, claim: base.Claim) -> bool:
        validate_plan(plan)
        with self._cursor(store) as (cur, _server):
            cur.execute(
                "SELECT COUNT(*) AS n FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                (plan.database,),
            )
            return bool(cur.fetchone()["n"])

    def binding_current(self, binding: Binding, store: SQLConnection, plan: SQLPlan) -> bool:
        users = (plan.username, base.alternate_user(plan.username))
        return (
            bool(binding.checkpoint_table_prefix)
            and binding.store_table_prefix == _store_prefix(plan)
            and binding.username in users
            and (
                binding.host,
                binding.port,
                binding.database,
                binding.table,
            )
            == (store.host, store.port, plan.database, plan.table)
        )

    def provisioned(self, plan: SQLPlan, binding: Binding) -> api.Provisioned:
        return api.Provisioned(
            database=plan.database,
            table=plan.table,
            username=binding.username,
            isolated=True,
            expiry="tidb-ttl" if binding.provider == "tidb" else "mysql-event",
        )

    def describe(self, plan: SQLPlan) -> str:
        return f"table {plan.database}.{plan.table}"

    def isolation(self, binding: Binding) -> base.Isolation:
        return base.isolation(binding, isolated=True)

    def check(self, store: SQLConnection) -> StoreInfo:
        with self._cursor(store) as (_cur, server):
            pass
        return StoreInfo(
            version=server.version,
            provider=server.provider,
            capabilities={
                "ttl": server.tidb,
                "events": server.event_scheduler,
                "json": True,
                "vector": server.vector,
            },
        )

    def observe(self, store: SQLConnection, plan: SQLPlan, prior: Prior = base.NO_PRIOR) -> Observed:
        plan = dataclasses.replace(plan, username=base.current_user(plan, prior))
        validate_plan(plan)
        with self._cursor(store) as (cur, server):
            cur.execute(
                "SELECT COUNT(*) AS n FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (plan.database, plan.table),
            )
            table_exists = bool(cur.fetchone()["n"])
            cur.execute(
                "SELECT COUNT(*) AS n FROM mysql.user WHERE User = %s AND Host = '%%'", (plan.username,)
            )
            user_exists = bool(cur.fetchone()["n"])
            details: dict[str, str] = {
                "provider": server.provider,
                "database": plan.database,
                "table": plan.table,
            }
            if user_exists:
                ok, extras, missing = self._grant_state(cur, plan, update_tables(plan))
                complete = ok and not missing
                details["grants"] = "ok" if complete and not extras else ("extra" if extras else "missing")
            if server.tidb:
                details["ttl_mechanism"] = "ttl_clause"
                if table_exists:
                    cur.execute(f"SHOW CREATE TABLE {qi(plan.database)}.{qi(plan.table)}")
                    ttl = parse_ttl(_second_column(cur.fetchone()))
                    details["ttl_seconds"] = str(ttl[0] * 60) if ttl else "0"
                    details["ttl_enabled"] = str(bool(ttl and ttl[1] == "ON")).lower()
            else:
                details["ttl_mechanism"] = "event"
                details["event_scheduler"] = "ON" if server.event_scheduler else "OFF"
                event = self._event(cur, plan)
                if event is not None:
                    details["ttl_seconds"] = str(event[0])
                    details["ttl_enabled"] = str(event[1]).lower()
            details["store_tables"] = self._store_state(cur, plan, server)
        return Observed(
            exists=table_exists,
            user_exists=user_exists,
            details=details,
            drift=self._drift(plan, table_exists, user_exists, details),
        )

    @staticmethod
    def _drift(plan: SQLPlan, exists: bool, user_exists: bool, details: dict[str, str]) -> tuple[Drift, ...]:
        found = base.presence_drift(plan, exists=exists, user_exists=user_exists, container="table")
        if details.get("grants") in ("missing", "extra"):
            found.append(Drift(f"grants were {details['grants']}", "grant exactly the memory's privileges"))
        # the expiry TiDB keeps is whole minutes; a MySQL/MariaDB event keeps the seconds
        tidb = details["ttl_mechanism"] == "ttl_clause"
        expiry = wanted_ttl(plan)[0] * 60 if tidb else plan.ttl_seconds
        seen = (details.get("ttl_seconds"), details.get("ttl_enabled"))
        if (exists or not tidb) and seen != (str(expiry), "true"):
            found.append(Drift("the expiry was changed", "reset the expiry"))
        store = details.get("store_tables", "ok")
        if store != "ok":
            found.append(Drift(f"the LangGraph store's tables: {store}", "recreate them and their expiry"))
        return tuple(found)

    def ensure(
        self, store: SQLConnection, plan: SQLPlan, password: str, prior: Prior = base.NO_PRIOR
    ) -> Binding:
        first, second = plan.username, base.alternate_user(plan.username)
        user = base.next_user(plan, prior)
        idle = second if user == first else first  # keeps the previous password during a grace period
        plan = dataclasses.replace(plan, username=user)
        validate_plan(plan)
        validate_identifier(idle, "user name", max_len=MAX_USER_LEN)
        if not password:
            raise InvalidSpec("the memory's user needs a password")
        db, table = plan.database, plan.table
        with self._cursor(store, secrets=(password,)) as (cur, server):
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {qi(db)} CHARACTER SET utf8mb4")
            cur.execute(table_ddl(db, table, tidb=server.tidb, ttl_seconds=plan.ttl_seconds))
            if server.tidb:
                self._ensure_ttl_clause(cur, plan)
            else:
                self._ensure_event(cur, plan)
            checkpoint_prefix = self._ensure_checkpoint_tables(cur, plan, tidb=server.tidb)
            store_prefix = self._ensure_store_tables(cur, plan, server)
            with self._accounts(store):
                self._ensure_user(cur, plan, password, tidb=server.tidb)
                if not prior.previous_password_sha256:  # no grace period (left): one user only
                    self._drop_user_if_any(cur, idle)
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return Binding(
            backend=BackendKind.TIDB,
            provider=server.provider,
            host=store.host,
            port=store.port,
            username=user,
            password=password,
            uri=f"mysql://{auth}@{store.host}:{store.port}/{db}",
            **base.binding_fields(store, plan),
            database=db,
            table=table,
            checkpoint_table_prefix=checkpoint_prefix,
            store_table_prefix=store_prefix,
        )

    def delete(self, store: SQLConnection, plan: SQLPlan, policy: DeletionPolicy) -> None:
        validate_plan(plan)
        with self._cursor(store) as (cur, _server):
            with self._accounts(store):
                for user in (plan.username, base.alternate_user(plan.username)):
                    cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
            if policy is DeletionPolicy.DELETE:
                cur.execute(f"DROP DATABASE IF EXISTS {qi(plan.database)}")

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _drop_user_if_any(cur: Any, user: str) -> None:
        """Drop a user that exists (an account statement reloads TiDB's privilege cache: none
        when there is nothing to drop)."""
        cur.execute("SELECT COUNT(*) AS n FROM mysql.user WHERE User = %s AND Host = '%%'", (user,))
        if cur.fetchone()["n"]:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))

    def _ensure_user(self, cur: Any, plan: SQLPlan, password: str, *, tidb: bool) -> None:
        """The memory's user with this password and exactly its grants (extras revoked)."""
        db, user = plan.database, plan.username
        cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (user, password))
        execute_with_fresh_privileges(cur, "ALTER USER %s@'%%' IDENTIFIED BY %s", (user, password))
        ok, extras, missing = self._grant_state(cur, plan, update_tables(plan))
        for stmt in extras:
            cur.execute(stmt, (user,))
        if not ok or extras:
            on = _pct(qi(grant_pattern(db)))
            cur.execute(f"GRANT {', '.join(GRANTS)} ON {on}.* TO %s@'%%'", (user,))
        for t in missing:
            cur.execute(f"GRANT {TABLE_GRANT} ON {_pct(qi(db))}.{_pct(qi(t))} TO %s@'%%'", (user,))
        if tidb:
            ensure_privileges_loaded(cur, user, db)

    @staticmethod
    def _ensure_ttl_clause(cur: Any, plan: SQLPlan) -> None:
        """ALTER the table's TTL when it differs from the plan (also repairs a disabled TTL)."""
        target = f"{qi(plan.database)}.{qi(plan.table)}"
        cur.execute(f"SHOW CREATE TABLE {target}")
        current = parse_ttl(_second_column(cur.fetchone()))
        if current != wanted_ttl(plan):
            cur.execute(f"ALTER TABLE {target} {ttl_clause(plan.ttl_seconds)}")

    @staticmethod
    def _ensure_checkpoint_tables(cur: Any, plan: SQLPlan, *, tidb: bool) -> str:
        """The LangGraph checkpointer's tables (DDL from the SDK) with their expiry; the prefix used.

        The SDK's saver runs no DDL when built from a binding, so the operator creates the tables
        here. Expiry: TiDB's row TTL on ``updated_at`` (altered only when it differs), or on
        MySQL/MariaDB an EVENT (recreated only when its schedule or cut-off differs).
        """
        prefix = _checkpoint_prefix(plan)
        db, ttl = plan.database, plan.ttl_seconds
        for stmt in checkpoint_sql.checkpoint_table_ddl(prefix, tidb=tidb, ttl_seconds=ttl, database=db):
            cur.execute(stmt)
        if tidb:
            names = checkpoint_sql.checkpoint_table_names(prefix)
            alters = checkpoint_sql.checkpoint_ttl_alter_sql(prefix, ttl_seconds=ttl, database=db)
            for table, alter in zip(names, alters, strict=True):
                cur.execute(f"SHOW CREATE TABLE {qi(db)}.{qi(table)}")
                ddl = _second_column(cur.fetchone()).replace(" ", "")
                current = (
                    f"INTERVAL{checkpoint_sql.ttl_minutes(ttl)}MINUTE" in ddl and "TTL_ENABLE='ON'" in ddl
                )
                if not current:
                    cur.execute(alter)
            return prefix
        event = prefix + checkpoint_sql.EVENT_SUFFIX
        cur.execute(
            "SELECT EVENT_DEFINITION AS body FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s AND EVENT_NAME = %s",
            (db, event),
        )
        row = cur.fetchone()
        cutoff = f"INTERVAL {checkpoint_sql.ttl_delete_after_seconds(ttl)} SECOND"
        if row is None or cutoff not in str(row["body"]):
            for stmt in checkpoint_sql.checkpoint_ttl_event_sql(db, prefix, ttl):
                cur.execute(stmt)
        return prefix

    @staticmethod
    def _ensure_store_tables(cur: Any, plan: SQLPlan, server: _Server) -> str:
        """The LangGraph store's two tables (DDL from the SDK) with their expiry; the prefix used.

        The SDK's store runs no DDL when built from a binding. The embedding column is a
        dimension-free VECTOR where the server has one (:func:`chatmemory.store.sql.vector_in_sql`),
        so the memory's user never needs CREATE whatever dimensions its application embeds with.
        Expiry: TiDB's row TTL on ``expires_at`` (altered only when missing or changed), or the
        store's EVENT on MySQL/MariaDB (recreated only when missing, changed or disabled).
        """
        prefix = _store_prefix(plan)
        db = plan.database
        ddl = store_sql.store_table_ddl(prefix, tidb=server.tidb, vector_type=server.vector, database=db)
        for stmt in ddl:
            cur.execute(stmt)
        if server.tidb:
            names = store_sql.store_table_names(prefix)
            alters = store_sql.store_ttl_alter_sql(prefix, database=db)
            for table, alter in zip(names, alters, strict=True):
                cur.execute(f"SHOW CREATE TABLE {qi(db)}.{qi(table)}")
                if not store_sql.store_ttl_current(_second_column(cur.fetchone())):
                    cur.execute(alter)
        elif not _store_event_current(cur, plan):
            for stmt in store_sql.store_ttl_event_sql(db, prefix):
                cur.execute(stmt)
        return prefix

    @staticmethod
    def _store_state(cur: Any, plan: SQLPlan, server: _Server) -> str:
        """``ok``, or what is wrong with the store's tables: missing, or their expiry changed."""
        names = store_sql.store_table_names(_store_prefix(plan))
        cur.execute(
            "SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME IN (%s, %s)",
            (plan.database, *names),
        )
        found = {str(r["t"]) for r in cur.fetchall()}
        if found != set(names):
            return "missing " + ", ".join(n for n in names if n not in found)
        if server.tidb:
            for table in names:
                cur.execute(f"SHOW CREATE TABLE {qi(plan.database)}.{qi(table)}")
                if not store_sql.store_ttl_current(_second_column(cur.fetchone())):
                    return f"the row TTL of {table} was changed"
            return "ok"
        return "ok" if _store_event_current(cur, plan) else "the expiry event was changed or dropped"

    @staticmethod
    def _event(cur: Any, plan: SQLPlan) -> tuple[int, bool] | None:
        """(ttl seconds, enabled) of the memory's expiry event, or None when there is none."""
        cur.execute(
            "SELECT EVENT_DEFINITION AS body, STATUS AS status FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s AND EVENT_NAME = %s",
            (plan.database, EVENT_NAME),
        )
        row = cur.fetchone()
        if row is None:
            return None
        m = _EVENT_RE.search(str(row["body"]))
        return (int(m.group(1)) if m else -1), str(row["status"]).upper() == "ENABLED"

    def _ensure_event(self, cur: Any, plan: SQLPlan) -> None:
        """Create, re-time or drop the expiry EVENT so it matches ``plan.ttl_seconds``."""
        name = f"{qi(plan.database)}.{qi(EVENT_NAME)}"
        current = self._event(cur, plan)
        body = event_body(plan.database, plan.table, plan.ttl_seconds)
        if current is None:
            cur.execute(f"CREATE EVENT IF NOT EXISTS {name} ON SCHEDULE EVERY 1 MINUTE ENABLE DO {body}")
        elif current != (plan.ttl_seconds, True):
            cur.execute(f"ALTER EVENT {name} ON SCHEDULE EVERY 1 MINUTE ENABLE DO {body}")

    @staticmethod
    def _grant_state(
        cur: Any, plan: SQLPlan, update_tables: Sequence[str]
    ) -> tuple[bool, list[str], list[str]]:
        """(our database grant is complete, REVOKEs for anything beyond, tables missing UPDATE).

        Read from the grant tables. ``update_tables`` may hold UPDATE and nothing else.

        Read from ``mysql.user``, ``mysql.db`` and ``mysql.tables_priv``: the same on TiDB, MySQL
        and MariaDB (TiDB's information_schema.SCHEMA_PRIVILEGES is empty).
        """
        revokes: list[str] = []
        cur.execute("SELECT * FROM mysql.user WHERE User = %s AND Host = '%%'", (plan.username,))
        for row in cur.fetchall():
            held = {k for k, v in row.items() if k.endswith("_priv") and v == "Y"}
            if held - {"Grant_priv"}:
                revokes.append("REVOKE ALL PRIVILEGES ON *.* FROM %s@'%%'")
            if "Grant_priv" in held:
                revokes.append("REVOKE GRANT OPTION ON *.* FROM %s@'%%'")
        ok = False
        cur.execute("SELECT * FROM mysql.db WHERE User = %s AND Host = '%%'", (plan.username,))
        for row in cur.fetchall():
            dbname = str(row.get("DB", row.get("Db", "")))
            held = {k for k, v in row.items() if k.endswith("_priv") and v == "Y"}
            if dbname == grant_pattern(plan.database):
                beyond = held - _GRANT_COLUMNS
                if not beyond:
                    ok = held == _GRANT_COLUMNS  # a subset is only missing something: GRANT adds it
                    continue
            if held - {"Grant_priv"}:
                revokes.append(f"REVOKE ALL PRIVILEGES ON {_pct(qi(dbname))}.* FROM %s@'%%'")
            if "Grant_priv" in held:
                revokes.append(f"REVOKE GRANT OPTION ON {_pct(qi(dbname))}.* FROM %s@'%%'")
        missing = list(update_tables)
        cur.execute("SELECT * FROM mysql.tables_priv WHERE User = %s AND Host = '%%'", (plan.username,))
        for row in cur.fetchall():
            dbname, table = str(row.get("DB", row.get("Db", ""))), str(row["Table_name"])
            privs = {p.strip().upper() for p in str(row.get("Table_priv") or "").split(",") if p.strip()}
            if dbname == plan.database and table in update_tables and privs == {TABLE_GRANT}:
                missing.remove(table)
            elif privs:
                on = f"{qi(dbname)}.{qi(table)}"
                revokes.append(f"REVOKE ALL PRIVILEGES ON {_pct(on)} FROM %s@'%%'")
        return ok, revokes, missing

    def _server(self, pool: _Pool, cur: Any) -> _Server:
        if pool.server is None:
            cur.execute("SELECT VERSION() AS v")
            version = str(cur.fetchone()["v"])
            scheduler = ""
            if "tidb" not in version.lower():
                cur.execute("SELECT @@event_scheduler AS e")
                scheduler = str(cur.fetchone()["e"])
            pool.server = server_from_version(version, scheduler)
        return pool.server

    @contextmanager
    def _cursor(self, store: SQLConnection, secrets: Sequence[str] = ()) -> Iterator[tuple[Any, _Server]]:
        """An admin cursor and the server's flavour; client errors become ``BackendUnavailable``."""
        if not store.host or not store.port:
            raise InvalidSpec(f"store {store.name!r} has no host and port")
        hidden = (store.admin_password, *secrets)
        where = f"{store.host}:{store.port} (store {store.name!r})"
        try:
            pool = self._pools.get(store, lambda: _Pool(store))
            with pool.connection() as conn, conn.cursor() as cur:
                yield cur, self._server(pool, cur)
        except pymysql.MySQLError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else None
            text = redact(str(e.args[1] if len(e.args) > 1 else e), hidden)
            if code in (2003, 2005, 2006, 2013, 1045, 1044, 1227):
                self._pools.discard(store)
                if code == 1045:
                    reason = f"the admin credentials were refused (user {store.admin_username!r})"
                elif code in (1044, 1227):
                    reason = f"the admin user {store.admin_username!r} lacks a privilege: {text}"
                else:
                    reason = f"unreachable: {text}"
                raise BackendUnavailable(f"{where}: {reason}") from None
            raise BackendUnavailable(f"{where}: error {code}: {text}") from None
        except OSError as e:
            self._pools.discard(store)
            raise BackendUnavailable(f"{where}: unreachable: {redact(str(e), hidden)}") from None


#: TiDB's error for a statement about a user its privilege cache does not hold (yet).
STALE_PRIVILEGE_CACHE: Final = (1105, "Failed to get user record")
#: How many times a stale privilege cache is reloaded before giving up (the reconcile retries).
PRIVILEGE_RELOADS: Final = 3
#: MySQL's "There is no such grant defined for user".
NO_SUCH_GRANT: Final = 1141


def _is_stale_cache_error(error: pymysql.MySQLError) -> bool:
    code, message = (*error.args, None, "")[:2]
    return code == STALE_PRIVILEGE_CACHE[0] and STALE_PRIVILEGE_CACHE[1] in str(message)


def execute_with_fresh_privileges(cur: Any, statement: str, args: Sequence[Any]) -> None:
    """Run a user statement; if TiDB's privilege cache lost the user, reload it and run it once more.

    TiDB answers ``ALTER USER`` from an in-memory copy of ``mysql.user``. Every CREATE USER or GRANT
    reloads the whole copy and the last reload to finish wins, so concurrent provisioning can
    leave a just-created user out of it ("Failed to get user record") until the next periodic
    reload, five minutes away. ``FLUSH PRIVILEGES`` reloads it now; another client's reload may
    race that too, so it is tried a few times.
    """
    for attempt in range(PRIVILEGE_RELOADS + 1):
        try:
            cur.execute(statement, args)
            return
        except pymysql.MySQLError as e:
            if not _is_stale_cache_error(e) or attempt == PRIVILEGE_RELOADS:
                raise
            cur.execute("FLUSH PRIVILEGES")


def ensure_privileges_loaded(cur: Any, user: str, database: str) -> None:
    """Make sure TiDB's privilege cache holds the user and its grant on ``database``.

    Logins are checked against the same cache as :func:`execute_with_fresh_privileges` repairs,
    so a user missing from it cannot connect even though ``mysql.user`` has it. Checked with
    ``SHOW GRANTS`` (answered from the cache); ``FLUSH PRIVILEGES`` when it is stale; a
    retryable :class:`BackendUnavailable` if it still is.
    """
    for attempt in range(PRIVILEGE_RELOADS + 1):
        if _grants_cached(cur, user, database):
            return
        if attempt < PRIVILEGE_RELOADS:
            cur.execute("FLUSH PRIVILEGES")
    raise BackendUnavailable(
        f"TiDB has not loaded the grants of user {user!r} on database {database!r} into its "
        "privilege cache yet; retrying"
    )


def _grants_cached(cur: Any, user: str, database: str) -> bool:
    try:
        cur.execute("SHOW GRANTS FOR %s@'%%'", (user,))
    except pymysql.MySQLError as e:
        if e.args and e.args[0] == NO_SUCH_GRANT:
            return False
        raise
    on_database = f" ON {qi(grant_pattern(database))}.* TO "
    # one column per row, named "Grants for <user>@%"
    return any(on_database in str(value) for row in cur.fetchall() for value in row.values())


def _store_event_current(cur: Any, plan: SQLPlan) -> bool:
    """Whether the store's expiry EVENT exists, is enabled and deletes from both tables."""
    prefix = _store_prefix(plan)
    cur.execute(
        "SELECT EVENT_DEFINITION AS body, STATUS AS status FROM information_schema.EVENTS "
        "WHERE EVENT_SCHEMA = %s AND EVENT_NAME = %s",
        (plan.database, store_sql.store_event_name(prefix)),
    )
    row = cur.fetchone()
    if row is None or str(row["status"]).upper() != "ENABLED":
        return False
    body = str(row["body"] or "").replace(" ", "")
    wanted = store_sql.store_ttl_event_sql(plan.database, prefix)[-1].replace(" ", "")
    return bool(body) and wanted.endswith("DO" + body)


def _store_prefix(plan: SQLPlan) -> str:
    return plan.store_table_prefix or store_sql.DEFAULT_TABLE_PREFIX


def update_tables(plan: SQLPlan) -> tuple[str, ...]:
    """The tables the memory's user may UPDATE: the checkpointer's and the store's."""
    return (*_checkpoint_tables(plan), *store_sql.store_table_names(_store_prefix(plan)))


def _checkpoint_prefix(plan: SQLPlan) -> str:
    return plan.checkpoint_table_prefix or checkpoint_sql.DEFAULT_TABLE_PREFIX


def _checkpoint_tables(plan: SQLPlan) -> tuple[str, str, str]:
    """The LangGraph checkpointer's table names in the memory's database."""
    return checkpoint_sql.checkpoint_table_names(_checkpoint_prefix(plan))


def _pct(text: str) -> str:
    """Escape ``%`` in SQL text that is formatted with parameters (names read from grant tables)."""
    return text.replace("%", "%%")


def _second_column(row: dict[str, Any] | None) -> str:
    """SHOW CREATE TABLE's DDL column (named ``Create Table``)."""
    if not row:
        return ""
    return str(row.get("Create Table", list(row.values())[-1]))
