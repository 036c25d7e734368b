"""What the gateway learns from a relayed response for its policy: status, first byte, whether
it was complete, and the energy the upstream reported for it (header or streamed body)."""

from __future__ import annotations

import asyncio

from joulebench.shape.gateway import _Outcome


def relay(*messages: dict) -> tuple[_Outcome, list[dict]]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    t = iter(range(100))
    outcome = _Outcome(send, lambda: float(next(t)))

    async def run() -> None:
        for m in messages:
            await outcome(m)

    asyncio.run(run())
    return outcome, sent


def start(*headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http.response.start", "status": 200, "headers": list(headers)}


def body(data: bytes, more: bool = True) -> dict:
    return {"type": "http.response.body", "body": data, "more_body": more}


def test_header_energy_of_a_plain_response() -> None:
    o, sent = relay(start((b"x-energy-j", b"0.25")), body(b'{"choices": []}', more=False))
    assert o.status == 200 and o.complete and o.energy_j == 0.25 and o.first_byte_s == 0.0
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_streamed_usage_energy_last_one_wins_and_bytes_pass_unchanged() -> None:
    chunks = [
        b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n',
        b'data: {"usage": {"energy": {"energy_j": 0.5, "net_energy_j": 0.4}}}\n\n',
        b"data: [DONE]\n\n",
    ]
    o, sent = relay(start(), *(body(c) for c in chunks), body(b"", more=False))
    assert o.energy_j == 0.5 and o.complete
    assert [m.get("body") for m in sent[1:-1]] == chunks


def test_tgi_energy_mj_in_joules_and_junk_ignored() -> None:
    final = b'data: {"details": {"finish_reason": "length", "energy_mj": 1500}}\n\n'
    o, _ = relay(start(), body(final, more=False))
    assert o.energy_j == 1.5
    o, _ = relay(start((b"x-energy-j", b"nan")), body(b'{"energy_j": -3}', more=False))
    assert o.energy_j is None
    o, _ = relay(start(), body(b"no energy here"))
    assert o.energy_j is None and not o.complete
