"""What a memory's key prefix and TTL mean on the servers, defined once in chatmemory.contract."""

from __future__ import annotations

import pytest
from chatmemory.contract import glob_escape, key_pattern, retention_ms


def test_glob_escape_makes_every_metacharacter_literal() -> None:
    assert glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert glob_escape("cm:ns:mem:") == "cm:ns:mem:"


def test_the_key_pattern_is_the_escaped_prefix_and_a_star() -> None:
    assert key_pattern("cm:ns:mem:") == "cm:ns:mem:*"
    assert key_pattern("cm:a*b:") == "cm:a\\*b:*"  # a '*' in the prefix matches only itself


def test_an_empty_prefix_has_no_pattern() -> None:
    with pytest.raises(ValueError, match="empty"):
        key_pattern("")


def test_retention_is_the_ttl_in_milliseconds() -> None:
    assert retention_ms(604800) == 604_800_000
    assert retention_ms(1) == 1000
