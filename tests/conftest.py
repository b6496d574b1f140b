"""Shared pytest set-up: markers by folder and the ``platform`` fixture (servers from the env file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import platform as _platform

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if HERE / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)
        elif HERE / "e2e" in path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def platform() -> _platform.Platform:
    """The servers' endpoints; integration and e2e tests reach servers only through this."""
    return _platform.load()
