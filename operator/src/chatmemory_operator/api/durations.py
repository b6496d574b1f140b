"""Duration strings of the API (``90s``, ``30m``, ``36h``, ``7d``, ``1h30m``): parse and format.

Used by :mod:`chatmemory_operator.api.v1alpha1` (the ``ttl`` fields' validation and the pattern the
CRD schema enforces at admission) and by the reconcile layer, which turns a memory's ``ttl`` into
seconds for Redis ``EXPIRE``, Kafka ``retention.ms`` and TiDB's ``TTL`` clause, and writes the
effective TTL back to status with :func:`format_duration`. Pure functions, no I/O.

The grammar is deliberately small: whole numbers followed by a unit, units in the order ``d``,
``h``, ``m``, ``s``, each at most once, no spaces, the total greater than zero. Numbers have at most
nine digits, so the largest value still fits Kafka's ``retention.ms`` (a signed 64-bit long).
"""

from __future__ import annotations

import re
from typing import Final

#: The regular expression the CRD schema and the models enforce (RE2 and Python compatible).
DURATION_PATTERN: Final = r"^([0-9]{1,9}d)?([0-9]{1,9}h)?([0-9]{1,9}m)?([0-9]{1,9}s)?$"
#: The longest duration string accepted (four units of nine digits each).
DURATION_MAX_LENGTH: Final = 40

_UNIT_SECONDS: Final = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE: Final = re.compile(r"^(?:(\d{1,9})d)?(?:(\d{1,9})h)?(?:(\d{1,9})m)?(?:(\d{1,9})s)?$")


def parse_duration(text: str, *, allow_zero: bool = False) -> int:
    """Seconds in ``text``: ``"90s"`` -> 90, ``"1h30m"`` -> 5400, ``"7d"`` -> 604800.

    Raises:
        ValueError: ``text`` is empty, not in the grammar (e.g. ``"1.5h"``, ``"30 m"``, ``"5w"``,
            ``"10m1h"``) or zero; the message quotes the text and shows valid examples.
    """
    match = _DURATION_RE.match(text) if text else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use whole numbers with units d, h, m, s in that order, "
            "for example 90s, 30m, 36h, 7d or 1h30m"
        )
    seconds = sum(
        int(value) * unit for value, unit in zip(match.groups(), _UNIT_SECONDS.values(), strict=True) if value
    )
    if seconds <= 0 and not allow_zero:
        raise ValueError(f"{text!r} is zero: a duration must be at least 1s")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest duration string for ``seconds``: 5400 -> ``"1h30m"``, 604800 -> ``"7d"``.

    ``parse_duration(format_duration(n)) == n`` for every ``n >= 1``.

    Raises:
        ValueError: ``seconds`` is not positive.
    """
    if seconds <= 0:
        raise ValueError(f"a duration must be at least 1 second, got {seconds}")
    parts: list[str] = []
    rest = seconds
    for unit, size in _UNIT_SECONDS.items():
        value, rest = divmod(rest, size)
        if value:
            parts.append(f"{value}{unit}")
    return "".join(parts)


__all__ = ["DURATION_MAX_LENGTH", "DURATION_PATTERN", "format_duration", "parse_duration"]
