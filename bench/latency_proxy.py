"""A TCP proxy that delays every chunk by a fixed time each way: a network with a real round trip.

``python -m bench.latency_proxy TARGET_HOST:PORT DELAY_MS`` listens on a free 127.0.0.1 port, prints
it on stdout, and forwards each connection to the target, delivering every chunk ``DELAY_MS`` later
(in order) on the way to the server, so a request/response round trip costs about ``DELAY_MS`` more
than on loopback (asyncio timers sleep in whole milliseconds under epoll, so a small delay rounds up;
the bench measures and reports the resulting RTT). Started and stopped (by pid) by
:mod:`bench.async_turns`, in its own process so the delay costs the measured client no CPU.
"""

from __future__ import annotations

import asyncio
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            if delay:
                loop.call_later(delay, writer.write, chunk)
            else:
                writer.write(chunk)
    except (ConnectionError, OSError):
        pass
    finally:
        await asyncio.sleep(delay)
        writer.close()


async def main(target: str, delay_ms: float) -> None:
    host, _, port = target.rpartition(":")
    delay = delay_ms / 1000

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(host, int(port))
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pump(cr, uw, delay), _pump(ur, cw, 0.0))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
