"""A small thread-safe pool of idle PyMySQL connections, checked before reuse without a round trip.

Who calls it: the TiDB history (:mod:`chatmemory.histories.tidb`), the SQL checkpointer
(:mod:`chatmemory.checkpoint._sql_saver`) and the operator's TiDB backend, so the reuse rule lives
in one place.

The rule, after go-sql-driver/mysql's connection check: a connection idle for less than
``ping_after`` seconds is reused if its socket has nothing to read (a server that restarted, hit
``wait_timeout`` or ran ``KILL`` has closed it or sent an error packet, and either makes the socket
readable); one idle for longer is pinged, which also catches a peer that vanished without closing.
Pinging on every checkout, as before, cost a round trip per statement: half of a TiDB agent turn.
A connection that saw an error is closed, never reused.
"""

from __future__ import annotations

import contextlib
import queue
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:
    import pymysql.connections

Connection: TypeAlias = "pymysql.connections.Connection[Any]"

#: Idle seconds after which a connection is pinged rather than only checked locally.
PING_AFTER: Final = 30.0


def socket_is_quiet(conn: Any) -> bool:
    """True when the connection's socket has nothing to read: not closed, no stray packet.

    A readable idle connection is never reusable (EOF, a KILL's error packet, or on TLS a record we
    did not ask for); treating a healthy TLS connection as unusable only costs a reconnect.
    """
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted and buffered
    if pending is not None and pending():
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return False
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class MySQLPool:
    """Up to ``size`` idle connections opened by ``connect``; more may be open while busy."""

    def __init__(
        self, connect: Callable[[], Connection], size: int, *, ping_after: float = PING_AFTER
    ) -> None:
        self._connect = connect
        self._ping_after = ping_after
        self._idle: queue.LifoQueue[tuple[Connection, float]] = queue.LifoQueue(maxsize=size)

    def take(self) -> Connection:
        """A reusable idle connection, or a new one."""
        while True:
            try:
                conn, last = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            if self._reusable(conn, time.monotonic() - last):
                return conn
            with contextlib.suppress(Exception):  # closing a dead connection
                conn.close()

    def give_back(self, conn: Connection) -> None:
        """Return a healthy connection (closed instead when the pool is full)."""
        try:
            self._idle.put_nowait((conn, time.monotonic()))
        except queue.Full:
            with contextlib.suppress(Exception):
                conn.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for one unit of work; closed, not pooled, if the work raised."""
        conn = self.take()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()  # state unknown after an error: never hand it out again
            raise
        self.give_back(conn)

    def close(self) -> None:
        """Close every idle connection (busy ones are closed by their users)."""
        while True:
            try:
                conn, _ = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()

    def _reusable(self, conn: Connection, idle_for: float) -> bool:
        if not socket_is_quiet(conn):
            return False
        if idle_for < self._ping_after:
            return True
        try:
            conn.ping(reconnect=False)
        except Exception:  # noqa: BLE001 - any failure means: open a new one
            return False
        return True
