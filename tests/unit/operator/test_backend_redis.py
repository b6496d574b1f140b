"""Pure parts of the Redis backend: key patterns, the ACL rule list, rule comparison, ACL detection."""

from __future__ import annotations

import hashlib

import pytest
from chatmemory.contract import glob_escape
from chatmemory_operator.backends.redis import (
    SDK_COMMANDS,
    VECTOR_SET_COMMANDS,
    acl_rules,
    command_rules,
    has_commands,
    is_unknown_command,
    key_pattern,
    permissions,
    rules_match,
)
from chatmemory_operator.errors import InvalidSpec


def test_glob_metacharacters_in_a_prefix_are_escaped() -> None:
    assert glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert glob_escape("cm:ns:mem:") == "cm:ns:mem:"


def test_key_pattern_is_the_escaped_prefix_then_star() -> None:
    assert key_pattern("cm:ns:mem:") == "cm:ns:mem:*"
    assert key_pattern("odd*") == "odd\\**"


def test_an_empty_prefix_is_refused_because_it_would_grant_every_key() -> None:
    with pytest.raises(InvalidSpec, match="every key"):
        key_pattern("")


def test_acl_rules_reset_the_user_and_carry_only_a_password_hash() -> None:
    rules = acl_rules("cm:ns:mem:", "s3cret", cluster=False)
    assert rules[:2] == ["reset", "on"]
    assert f"#{hashlib.sha256(b's3cret').hexdigest()}" in rules
    assert not any("s3cret" in r for r in rules)
    assert "~cm:ns:mem:*" in rules and "resetchannels" in rules
    assert rules.index("-@all") < rules.index("+rpush")


def test_acl_rules_allow_exactly_the_sdk_commands() -> None:
    allowed = {r[1:] for r in acl_rules("p:", "pw", cluster=False) if r.startswith("+")}
    assert allowed == set(SDK_COMMANDS)
    for dangerous in ("flushall", "flushdb", "keys", "config", "eval", "set", "@all", "@dangerous", "debug"):
        assert dangerous not in allowed


def test_cluster_adds_the_slot_map_commands_and_nothing_grants_search() -> None:
    assert not [r for r in command_rules(cluster=False) + command_rules(cluster=True) if "ft." in r]
    cluster = command_rules(cluster=True)
    assert {"+cluster|slots", "+command", "+asking", "+readonly"} <= set(cluster)
    assert "+cluster" not in cluster  # not CLUSTER RESET / FAILOVER ...


def test_vector_set_commands_are_granted_only_when_the_server_has_them() -> None:
    without = {r[1:] for r in acl_rules("p:", "pw", cluster=False) if r.startswith("+")}
    with_vs = {r[1:] for r in acl_rules("p:", "pw", cluster=False, vector_sets=True) if r.startswith("+")}
    assert not without & {"vadd", "vrem", "vsim", "vcard"}  # Redis 7 / Valkey refuse unknown commands
    assert with_vs == without | {"vadd", "vrem", "vsim", "vcard"} == without | set(VECTOR_SET_COMMANDS)
    assert {"+vsim", "+cluster|slots"} <= set(command_rules(cluster=True, vector_sets=True))


@pytest.mark.parametrize(
    ("reply", "known"),
    [
        ([[b"VADD", -1], [b"VREM", 3], [b"VSIM", -1], [b"VCARD", 2]], True),
        ({"VADD": {}, "VREM": {}, "VSIM": {}, "VCARD": {}}, True),
        ([None, None, None, None], False),  # Redis 7, Valkey
        ([[b"VADD", -1], None, [b"VSIM", -1], [b"VCARD", 2]], False),  # one missing: none granted
        ([], False),
    ],
)
def test_command_info_replies_say_whether_every_vector_set_command_exists(reply: object, known: bool) -> None:
    assert has_commands(reply) is known


def getuser(**overrides: object) -> dict[str, object]:
    reply: dict[str, object] = {
        "flags": ["on"],
        "enabled": True,
        "commands": ["+rpush", "+lrange"],
        "categories": ["-@all"],
        "keys": ["~p:*"],
        "channels": [],
        "selectors": [],
    }
    reply.update(overrides)
    return reply


def test_rules_match_compares_against_the_servers_rendering() -> None:
    canonical = permissions(getuser())
    assert rules_match(getuser(), "p:", canonical)
    assert not rules_match(None, "p:", canonical)
    assert not rules_match(getuser(enabled=False), "p:", canonical)
    assert not rules_match(getuser(keys=["~*"]), "p:", canonical)
    assert not rules_match(getuser(commands=["+rpush", "+lrange", "+flushall"]), "p:", canonical)
    assert not rules_match(getuser(categories=["+@all"]), "p:", canonical)
    assert not rules_match(getuser(channels=["&*"]), "p:", canonical)


def test_permissions_accept_bytes_and_text_alike() -> None:
    assert permissions(getuser(commands=[b"+RPUSH"], categories=[b"-@all"])) == permissions(
        getuser(commands=["+rpush"], categories=["-@all"])
    )


@pytest.mark.parametrize(
    ("message", "unknown"),
    [
        ("ERR unknown command 'ACL', with args beginning with: 'WHOAMI'", True),
        ("ERR unknown command `ACL`, with args beginning with: `SETUSER`, ", True),
        ("ERR Unknown subcommand or wrong number of arguments for 'WHOAMI'", True),
        ("NOPERM this user has no permissions to run the 'acl|whoami' command", False),
        ("WRONGPASS invalid username-password pair", False),
    ],
)
def test_servers_without_acl_are_recognised_by_the_unknown_command_error(message: str, unknown: bool) -> None:
    assert is_unknown_command(message) is unknown
