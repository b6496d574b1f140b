"""Duration strings of the API: what ``ttl`` accepts, what it refuses, and the round trip to seconds."""

from __future__ import annotations

import re

import pytest
from chatmemory_operator.api.durations import DURATION_PATTERN, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("36h", 129600),
        ("7d", 604800),
        ("1h30m", 5400),
        ("1d12h", 129600),
        ("2d3h4m5s", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("0h1s", 1),
    ],
)
def test_parse_duration_returns_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "7", "1.5h", "30 m", "5w", "10m1h", "1h1h", "-5m", "7D", "h", "1234567890s", " 7d"],
)
def test_parse_duration_refuses_text_outside_the_grammar_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="for example 90s, 30m, 36h, 7d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "0d0h0m0s", "00m"])
def test_parse_duration_refuses_zero(text: str) -> None:
    with pytest.raises(ValueError, match="zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1s"), (90, "1m30s"), (5400, "1h30m"), (604800, "7d"), (129600, "1d12h"), (90061, "1d1h1m1s")],
)
def test_format_duration_writes_the_shortest_form(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 86399, 86400, 90061, 31536000])
def test_format_then_parse_gives_the_same_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_duration_refuses_zero_and_negative() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        format_duration(0)
    with pytest.raises(ValueError, match="at least 1 second"):
        format_duration(-5)


@pytest.mark.parametrize("text", ["90s", "1h30m", "7d", "", "1.5h", "10m1h", "5w"])
def test_the_schema_pattern_agrees_with_the_parser_on_format(text: str) -> None:
    parser_ok = True
    try:
        parse_duration(text)
    except ValueError:
        parser_ok = False
    pattern_ok = re.match(DURATION_PATTERN, text) is not None and text != ""
    assert parser_ok == pattern_ok
