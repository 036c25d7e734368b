"""An O(1) connection pool for the load generator: one keep-alive connection per *lane*.

httpcore's pool scans every connection and every queued request each time a request starts or
ends, so with hundreds of connections (a burst, a fast open-loop schedule) its cost grows with
the square of the load and the generator, not the server, becomes the bottleneck. Here each lane
is an ``httpx.AsyncHTTPTransport`` limited to one connection; a request takes a free lane (or
opens a new one) and gives it back when its response is closed. Lanes are reused LIFO, so a
steady load keeps only as many connections as it has requests in flight.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable

import httpx


class _ReleasingStream(httpx.AsyncByteStream):
    """Response body that hands its lane back exactly once when closed."""

    __slots__ = ("_release", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class LanePool(httpx.AsyncBaseTransport):
    """Transport for ``httpx.AsyncClient(transport=LanePool())``; see the module docstring."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context  # created once, on first use: building one costs milliseconds
        self._free: list[httpx.AsyncHTTPTransport] = []
        self._lanes: list[httpx.AsyncHTTPTransport] = []

    @property
    def lanes(self) -> int:
        """Connections (lanes) opened so far."""
        return len(self._lanes)

    def _new_lane(self) -> httpx.AsyncHTTPTransport:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        lane = httpx.AsyncHTTPTransport(
            verify=self._ssl, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
        )
        self._lanes.append(lane)
        return lane

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        lane = self._free.pop() if self._free else self._new_lane()
        try:
            resp = await lane.handle_async_request(request)
        except BaseException:
            self._free.append(lane)  # its connection pool reconnects next time if needed
            raise
        assert isinstance(resp.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=resp.status_code,
            headers=resp.headers,
            stream=_ReleasingStream(resp.stream, lambda: self._free.append(lane)),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.aclose()
        self._free.clear()
        self._lanes.clear()
