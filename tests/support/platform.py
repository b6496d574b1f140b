"""How tests reach servers: only through the platform env file (``.platform/env`` by default).

Used by ``tests/conftest.py``. Point ``CHATMEMORY_PLATFORM_ENV`` at another file with the same keys
to run the same tests against external servers (a real cluster, a managed Redis).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]


def env_file() -> Path:
    return Path(os.environ.get("CHATMEMORY_PLATFORM_ENV", ROOT / ".platform" / "env"))


def read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


class Platform(Mapping[str, str]):
    """The endpoints of the servers under test; a missing key fails the test, naming the key."""

    def __init__(self, values: dict[str, str], source: Path) -> None:
        self._values = values
        self.source = source

    def __getitem__(self, key: str) -> str:
        if key not in self._values:
            pytest.fail(f"{key} is not set in {self.source}: is the platform up (`make platform-up`)?")
        return self._values[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def mysql_params(self, key: str) -> dict[str, object]:
        """PyMySQL connect() arguments from a ``mysql://user:pw@host:port/`` URL."""
        u = urlsplit(self[key])
        return {
            "host": u.hostname,
            "port": u.port,
            "user": u.username or "root",
            "password": u.password or "",
            "autocommit": True,
        }


def load() -> Platform:
    path = env_file()
    if not path.exists():
        pytest.fail(f"no platform env file at {path}: run `make platform-up` (or `make test`, which does)")
    return Platform(read_env(path), path)
