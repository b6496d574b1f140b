"""The failover tests' shared pieces: every test here is in the fault tier and reports its figures.

Each test starts the failure topology it needs (:mod:`tests.support.topologies`) and prints one
``FIGURES <name> {json}`` line (run with ``-s`` to see them; ``make test-faults`` keeps them in the
JUnit properties too): lost turns, errors surfaced, failover and recovery times.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

Report = Callable[[str, dict[str, object]], None]


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Report:
    """``report(name, figures)``: print the figures as one JSON line and attach them to the test."""

    def emit(name: str, figures: dict[str, object]) -> None:
        print(f"\nFIGURES {name} {json.dumps(figures, sort_keys=True)}")
        record_property(name, json.dumps(figures, sort_keys=True))

    return emit
