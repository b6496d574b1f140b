"""Backend names derived from namespace and name: stable, unique, inside each backend's limits."""

from __future__ import annotations

import re

import pytest
from chatmemory_operator import naming

LONG_NS = "n" * 63
LONG_NAME = "a" * 253


def test_names_are_stable_for_the_same_memory() -> None:
    for fn in (
        naming.key_prefix,
        naming.topic,
        naming.database,
        naming.username,
        naming.consumer_group_prefix,
    ):
        assert fn("team", "chat") == fn("team", "chat")


def test_readable_names_carry_namespace_and_name() -> None:
    assert naming.key_prefix("team", "chat") == "cm:team:chat:"
    assert naming.topic("team", "chat") == "cm.team.chat"
    assert naming.database("team", "chat").startswith("cm_team_chat_")
    assert naming.username("team", "chat").startswith("cm_team_chat_")


@pytest.mark.parametrize("fn", [naming.database, naming.username, naming.consumer_group_prefix])
def test_hyphen_and_dot_variants_do_not_collide(fn: object) -> None:
    assert callable(fn)
    assert fn("a-b", "c") != fn("a", "b-c")
    assert fn("a", "b.c") != fn("a", "b-c")


def test_long_names_fit_every_backend_limit() -> None:
    assert len(naming.topic(LONG_NS, LONG_NAME)) <= 249
    assert len(naming.database(LONG_NS, LONG_NAME)) <= 64
    assert len(naming.username(LONG_NS, LONG_NAME)) <= 32
    assert len(naming.secret_name(LONG_NAME)) <= 253


def test_shortened_names_still_differ() -> None:
    assert naming.topic(LONG_NS, LONG_NAME) != naming.topic(LONG_NS, LONG_NAME[:-1] + "b")
    assert naming.username(LONG_NS, "x" * 40) != naming.username(LONG_NS, "x" * 41)


def test_sql_names_use_only_identifier_characters() -> None:
    for fn in (naming.database, naming.username):
        assert re.fullmatch(r"[a-z0-9_]+", fn("my-team", "chat.v2"))


def test_a_key_prefix_never_matches_another_memorys_keys() -> None:
    a, a2 = naming.key_prefix("ns", "a"), naming.key_prefix("ns", "a2")
    assert not a2.startswith(a)


def test_consumer_group_prefixes_never_contain_each_other() -> None:
    one = naming.consumer_group_prefix("ns", "chat")
    other = naming.consumer_group_prefix("ns", "chat.x")
    assert not other.startswith(one)
    assert not one.startswith(other)
    assert len(one) == len(other)


def test_secret_name_defaults_to_name_with_suffix() -> None:
    assert naming.secret_name("chat") == "chat-chatmemory"
