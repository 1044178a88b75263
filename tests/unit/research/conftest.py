from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from mana_ai.testing.fake_research import FakeResearchServer


@pytest.fixture
async def server() -> AsyncIterator[FakeResearchServer]:
    async with FakeResearchServer() as fake:
        yield fake


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nobody listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
