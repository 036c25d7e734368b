"""BodyLimit: an oversized body is read to its end (and dropped) before the 413 when it fits
the drain bound, so the connection stays usable; past the bound it is not read further and the
413 closes the connection. A body within the limit reaches the app whole, once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("fastapi")
from joulebench.serve.errors import BodyLimit


def _run(chunks: list[bytes], *, max_bytes: int = 10, drain_bytes: int = 30) -> dict[str, Any]:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    read = 0
    sent: list[dict[str, Any]] = []
    seen_by_app: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return messages[read - 1] if read <= len(messages) else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen_by_app.append((await receive())["body"])

    limit = BodyLimit(app, max_bytes=max_bytes, drain_bytes=drain_bytes)
    scope = {"type": "http", "path": "/v1/completions", "headers": []}
    asyncio.run(limit(scope, receive, send))
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    headers = dict(start["headers"]) if start else {}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {
        "status": start and start["status"],
        "close": headers.get(b"connection") == b"close",
        "read": read,
        "app": seen_by_app,
        "body": json.loads(body) if body else None,
    }


def test_a_body_within_the_limit_reaches_the_app_whole():
    out = _run([b"12345", b"67890"])
    assert out["app"] == [b"1234567890"] and out["status"] is None


def test_an_oversized_body_within_the_drain_bound_is_read_to_its_end_and_kept_alive():
    out = _run([b"x" * 8] * 3)  # 24 bytes: over 10, within 30
    assert out["status"] == 413 and not out["close"] and out["read"] == 3 and out["app"] == []
    assert out["body"]["error"]["code"] == "request_too_large"


def test_a_body_past_the_drain_bound_is_not_read_further_and_closes():
    out = _run([b"x" * 8] * 10)  # 80 bytes: past 30
    assert out["status"] == 413 and out["close"] and out["read"] < 10


def test_a_declared_length_past_the_drain_bound_is_answered_without_reading():
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/generate", "headers": [(b"content-length", b"100")]}
    asyncio.run(BodyLimit(None, max_bytes=10, drain_bytes=30)(scope, receive, send))
    start = sent[0]
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]
    assert json.loads(sent[1]["body"])["error_type"] == "validation"  # TGI's shape on /generate
