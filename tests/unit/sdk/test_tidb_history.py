"""The TiDB history's pure parts: connection strings, names and limits checked before any I/O."""

from __future__ import annotations

import ssl

import pytest
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BindingError
from chatmemory.histories.tidb import TiDBConnector, parse_connection_string


def test_the_seeds_sqlalchemy_url_gives_pymysql_arguments() -> None:
    kwargs, where = parse_connection_string("mysql+pymysql://app:p%40ss@db.example:4000/chat")
    assert kwargs == {
        "host": "db.example",
        "port": 4000,
        "user": "app",
        "password": "p@ss",
        "database": "chat",
    }
    assert where == "mysql db.example:4000/chat"
    assert "p@ss" not in where


def test_plain_mysql_urls_default_to_root_and_port_3306() -> None:
    kwargs, _ = parse_connection_string("mysql://127.0.0.1/")
    assert kwargs == {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def test_the_seeds_tls_query_options_turn_on_verified_tls() -> None:
    kwargs, _ = parse_connection_string(
        "mysql+pymysql://u:p@h:4000/db?ssl_verify_cert=true&ssl_verify_identity=true"
    )
    ctx = kwargs["ssl"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname


def test_other_url_schemes_are_refused_with_the_expected_form() -> None:
    with pytest.raises(ValueError, match=r"mysql\+pymysql://"):
        parse_connection_string("postgresql://u:p@h/db")


def tidb_binding(**overrides: object) -> Binding:
    fields: dict[str, object] = {
        "backend": BackendKind.TIDB,
        "provider": "tidb",
        "host": "127.0.0.1",
        "port": 1,
        "username": "u",
        "password": "p",
        "database": "cm_db",
        "table": "messages",
    }
    fields.update(overrides)
    return Binding.model_validate(fields)


def test_a_session_id_longer_than_the_column_is_refused_clearly() -> None:
    connector = TiDBConnector.from_binding(tidb_binding())
    try:
        connector.history("x" * 255)
        with pytest.raises(ValueError, match=r"300 characters long.*at most 255"):
            connector.history("x" * 300)
    finally:
        connector.close()


def test_a_binding_with_an_unsafe_table_name_is_refused_naming_the_key() -> None:
    with pytest.raises(BindingError, match="table") as info:
        TiDBConnector.from_binding(tidb_binding(table="messages; DROP TABLE x"))
    assert info.value.key == "table"


def test_connector_histories_share_one_pool_and_carry_max_messages() -> None:
    connector = TiDBConnector.from_binding(tidb_binding(max_messages=50))
    try:
        a, b = connector.history("a"), connector.history("b")
        assert a._pool is b._pool
        assert (a.table_name, a.max_messages) == ("messages", 50)
    finally:
        connector.close()
