"""The load generator's HTTP transport: one keep-alive HTTP/1.1 connection per *lane*, O(1).

``httpx.AsyncClient(transport=LanePool())`` keeps the httpx API while replacing httpcore under it.
httpcore's pool scans every connection and queued request whenever a request starts or ends,
and each read goes through anyio cancel scopes and h11 events: at a thousand requests a second
that client CPU, not the server, becomes what a capacity test measures. Here a request takes a
free lane (LIFO, so a steady load keeps only as many connections as it has in flight) or opens
one, writes its request in one ``write`` and parses the response straight from
:meth:`asyncio.Protocol.data_received` (status line, headers, ``content-length``, ``chunked`` or
read-to-close bodies). Body bytes are handed to the reader as they arrive, so streamed tokens
keep their arrival times. ``https://`` URLs go through httpx's own transport, one per lane.

Errors surface as httpx's exceptions (``ConnectError``, ``ReadError``, ``RemoteProtocolError``).
A request whose reused keep-alive connection was closed by the server before any response byte
arrived is retried once on a fresh connection (the usual keep-alive race).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx

_MAX_HEAD_BYTES = 64 * 1024
_PAUSE_BYTES = 1 << 20  # stop reading from the socket while this much body is unread

_HEAD, _FIXED, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _TO_EOF, _DONE = range(8)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a request goes out, its response is parsed as bytes arrive."""

    __slots__ = (
        "body",
        "body_bytes",
        "buf",
        "closed",
        "error",
        "got_bytes",
        "headers",
        "keep_alive",
        "no_body",
        "paused",
        "reason",
        "remaining",
        "reused",
        "state",
        "status",
        "transport",
        "waiter",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.body: list[bytes] = []
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self._reset(no_body=False)

    def _reset(self, *, no_body: bool) -> None:
        self.state = _HEAD
        self.buf = b""
        self.remaining = 0
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.no_body = no_body
        self.got_bytes = False
        self.body.clear()
        self.body_bytes = 0
        self.error = None
        self.paused = False

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf = self.buf + data if self.buf else data
        try:
            self._parse()
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)
            return
        if self.body_bytes > _PAUSE_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        if self.state == _TO_EOF:
            self.state = _DONE
            self.keep_alive = False
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state not in (_DONE,) and self.error is None:
            if self.state == _TO_EOF:
                self.state, self.keep_alive = _DONE, False
            else:
                msg = "server closed the connection before the response was complete"
                self.error = (
                    httpx.ReadError(f"{msg}: {exc}") if exc else httpx.RemoteProtocolError(msg)
                )
        self._wake()

    # -- parsing -------------------------------------------------------------------------------
    def _parse(self) -> None:
        while self.buf or self.state in (_DONE,):
            state = self.state
            if state == _HEAD:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > _MAX_HEAD_BYTES:
                        raise httpx.RemoteProtocolError("response head too large")
                    return
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                self._head(head)
            elif state == _FIXED:
                self._body(then=_DONE)
            elif state == _CHUNK_SIZE:
                line = self._line()
                if line is None:
                    return
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"bad chunk size {line[:40]!r}") from None
                self.remaining = size
                self.state = _CHUNK_DATA if size else _TRAILERS
            elif state == _CHUNK_DATA:
                self._body(then=_CHUNK_CRLF)
            elif state == _CHUNK_CRLF:
                if len(self.buf) < 2:
                    return
                if self.buf[:2] != b"\r\n":
                    raise httpx.RemoteProtocolError("chunk not followed by CRLF")
                self.buf = self.buf[2:]
                self.state = _CHUNK_SIZE
            elif state == _TRAILERS:
                line = self._line()
                if line is None:
                    return
                if not line:
                    self.state = _DONE
            elif state == _TO_EOF:
                self._data(self.buf)
                self.buf = b""
            else:  # _DONE: bytes past the response are a protocol error on HTTP/1.1
                if self.buf:
                    self.keep_alive = False
                    self.buf = b""
                return

    def _line(self) -> bytes | None:
        """The next CRLF-ended line taken off the buffer, or ``None`` until one has arrived."""
        nl = self.buf.find(b"\r\n")
        if nl < 0:
            return None
        line, self.buf = self.buf[:nl], self.buf[nl + 2 :]
        return line

    def _body(self, *, then: int) -> None:
        """Pass on what is buffered of the ``remaining`` body bytes; once they are all in,
        go to state ``then`` (a fixed-length body and a chunk end the same way)."""
        take = self.buf[: self.remaining]
        self.buf = self.buf[len(take) :]
        self._data(take)
        self.remaining -= len(take)
        if self.remaining == 0:
            self.state = then

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise httpx.RemoteProtocolError(f"bad status line {lines[0][:80]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad status line {lines[0][:80]!r}") from None
        if 100 <= status < 200:  # informational (100 Continue): the real response follows
            return
        headers = []
        length = None
        chunked = False
        keep_alive = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError(f"bad header line {line[:80]!r}")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            low = name.lower()
            if low == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"bad content-length {value!r}") from None
            elif low == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
            elif low == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        self.status = status
        self.reason = parts[2] if len(parts) > 2 else b""
        self.headers = headers
        self.keep_alive = keep_alive
        if self.no_body or status in (204, 304):
            self.state = _DONE
        elif chunked:
            self.state = _CHUNK_SIZE
        elif length is not None:
            self.remaining = length
            self.state = _FIXED if length else _DONE
        else:
            self.state, self.keep_alive = _TO_EOF, False

    def _data(self, data: bytes) -> None:
        if data:
            self.body.append(data)
            self.body_bytes += len(data)

    # -- reader side ---------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        self.error = exc
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something new arrives (bytes, end of response, error, close)."""
        if self.closed:
            return
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def take_body(self) -> bytes:
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.body_bytes = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return not self.closed and self.keep_alive and self.state == _DONE and not self.buf


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection; closing it gives the lane back (or drops it)."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, conn: _Connection, pool: LanePool) -> None:
        self._conn = conn
        self._pool: LanePool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take_body()
            elif conn.error is not None:
                raise conn.error
            elif conn.state == _DONE:
                return
            elif conn.closed:
                raise httpx.RemoteProtocolError("connection closed mid-response")
            else:
                await conn.wait()

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._release(self._conn)


class LanePool(httpx.AsyncBaseTransport):
    """Transport for ``httpx.AsyncClient(transport=LanePool())``; see the module docstring."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._free: list[_Connection] = []
        self._opened = 0
        self._tls_free: list[httpx.AsyncHTTPTransport] = []
        self._tls: list[httpx.AsyncHTTPTransport] = []

    @property
    def lanes(self) -> int:
        """Connections (lanes) opened so far."""
        return self._opened + len(self._tls)

    async def _connect(self, url: httpx.URL) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection, url.host, url.port or 80, happy_eyeballs_delay=0.25
            )
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {url.host}:{url.port}: {exc}") from exc
        self._opened += 1
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.reusable:
            conn.reused = True
            self._free.append(conn)
        elif conn.transport is not None and not conn.closed:
            conn.transport.close()  # unread or broken response: the connection cannot be reused

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            return await self._tls_request(request)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
        chunked = False
        for name, value in request.headers.raw:
            if name.lower() == b"transfer-encoding":
                chunked = True
                continue  # the body is sent whole below, with its length
            head.append(b"%s: %s\r\n" % (name, value))
        if chunked:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        wire = b"".join(head) + body
        no_body = request.method == "HEAD"
        for attempt in (0, 1):
            conn = None
            while self._free:
                candidate = self._free.pop()
                if not candidate.closed:
                    conn = candidate
                    break
            if conn is None:
                conn = await self._connect(request.url)
            conn._reset(no_body=no_body)
            transport = conn.transport
            assert transport is not None
            try:
                transport.write(wire)
                while conn.state == _HEAD and conn.error is None and not conn.closed:
                    await conn.wait()
            except BaseException:
                transport.close()
                raise
            if conn.state == _HEAD or conn.error is not None:
                transport.close()
                if attempt == 0 and conn.reused and not conn.got_bytes:
                    continue  # the server had closed this idle keep-alive connection: retry
                raise conn.error or httpx.RemoteProtocolError(
                    "server closed the connection without a response"
                )
            return httpx.Response(
                status_code=conn.status,
                headers=conn.headers,
                stream=_Body(conn, self),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _tls_request(self, request: httpx.Request) -> httpx.Response:
        if self._tls_free:
            lane = self._tls_free.pop()
        else:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            lane = httpx.AsyncHTTPTransport(
                verify=self._ssl,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            self._tls.append(lane)
        try:
            resp = await lane.handle_async_request(request)
        except BaseException:
            self._tls_free.append(lane)
            raise
        assert isinstance(resp.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=resp.status_code,
            headers=resp.headers,
            stream=_TlsBody(resp.stream, self._tls_free, lane),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        for conn in self._free:
            if conn.transport is not None:
                conn.transport.close()
        self._free.clear()
        for lane in self._tls:
            await lane.aclose()
        self._tls_free.clear()
        self._tls.clear()


class _TlsBody(httpx.AsyncByteStream):
    """httpx's response body for an https lane; hands the lane back exactly once when closed."""

    __slots__ = ("_free", "_lane", "_stream")

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        free: list[httpx.AsyncHTTPTransport],
        lane: httpx.AsyncHTTPTransport,
    ) -> None:
        self._stream = stream
        self._free = free
        self._lane: httpx.AsyncHTTPTransport | None = lane

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            lane, self._lane = self._lane, None
            if lane is not None:
                self._free.append(lane)


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, which skips its (costly) parse of responses that set no cookie."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class LoadClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` on a :class:`LanePool`, for the load generator's hot path.

    No per-operation httpx timeouts (the runner bounds each whole request, and httpx's per-read
    timeouts cost more than the rest of a request's client work), no proxies from the
    environment, and a cookie jar that only parses responses carrying ``Set-Cookie``.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url=base_url, timeout=None, transport=LanePool(), trust_env=False)
        self._jar = _Cookies()

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: httpx._types.CookieTypes) -> None:
        jar = _Cookies()
        jar.update(cookies)
        self._jar = jar
