"""A loopback TCP proxy in front of PostgreSQL that a test can cut (the database "goes away") and resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class CuttableProxy:
    """A loopback TCP proxy to Postgres that can be cut (existing connections closed, new ones refused)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.target_port = host, port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):  # the embedded server listens on a unix socket only
            path = f"{self.host}/.s.PGSQL.{self.target_port}"
            up_reader, up_writer = await asyncio.open_unix_connection(path)
        else:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def resume(self) -> None:
        """Listen again on the same port (the database is back)."""
        await self.start()

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()


@asynccontextmanager
async def proxied(db_url: str) -> AsyncIterator[tuple[str, CuttableProxy]]:
    info = conninfo_to_dict(db_url)
    proxy = CuttableProxy(info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
    await proxy.start()
    try:
        yield make_conninfo(db_url, host="127.0.0.1", port=str(proxy.port)), proxy
    finally:
        if proxy.server is not None and proxy.server.is_serving():
            await proxy.cut()
