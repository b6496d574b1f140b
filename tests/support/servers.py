"""Throwaway servers a test may stop and start without disturbing the shared platform.

Used by the restart tests (e2e: a stopped backend in status; integration: the SDK through a server
restart under load). Each runs the platform's own binary on a free loopback port.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import redis

from tests.support.operator import free_port


class RedisProcess:
    """A redis-server with an ``admin`` user, stoppable and restartable on one port.

    ``durable``: append-only file fsynced on every write (``appendfsync always``), so a write the
    server acknowledged survives a kill; otherwise a restart starts empty (no ACL users, no data).

    The ``default`` user is off (nobody logs in as it) but keeps its permissions: Redis 7.0-7.4 and
    Valkey replay the AOF as ``default`` and re-check ACLs at ``EXEC``, so a ``default`` user without
    permissions silently drops every ``MULTI``/``EXEC`` (every chat turn) at restart
    (redis/redis#14541, valkey-io/valkey#3983). See docs/operations.md.
    """

    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port, self.password, self.workdir = free_port(), uuid.uuid4().hex, workdir
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        self.cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    *aof, "--dir", str(workdir), "--user", "default", "off", "~*", "&*", "+@all",
                    "--user", "admin", "on", f">{self.password}", "~*", "&*", "+@all"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://admin:{self.password}@127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, username="admin", password=self.password, socket_timeout=5)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: the server shuts down in order."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash; only what the server fsynced survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=20)
            self.proc = None
