"""A bounded, seeded property-based fuzz run over the server's request models (hypothesis):
any body, plausible or hostile (NaN, Infinity, lone surrogates, huge integers, wrong types,
out-of-vocabulary ids, long stop lists), on every generation route, gets a 2xx or a 4xx in the
route's own error shape, never a 5xx; and every request gets exactly one answer.
"""

from __future__ import annotations

import json

import httpx
import pytest

from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import embedded_server

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.integration

FAST = {"update_period_s": 1e-4}
EXAMPLES = 250  # ≈ 25 s on a shared 2-core CPU

# strings with lone surrogates (category Cs) among ordinary text
TEXT = st.text(st.characters(categories=["L", "N", "P", "Zs", "Cs"]), max_size=12)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**63, 2**64, 1e-310, 5e-324, 1e308]),
)
ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


def _field(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(valid, valid, ANY)  # mostly plausible, sometimes anything


SAMPLING = {
    "temperature": _field(st.floats(0, 2)),
    "top_p": _field(st.floats(0, 1)),
    "seed": _field(st.integers(0, 2**64)),
    "stop": _field(st.one_of(TEXT, st.lists(TEXT, max_size=6))),
}
OPENAI = {
    "model": _field(st.sampled_from(["MODEL", "other"])),
    "max_tokens": _field(st.integers(-2, 6)),
    "stream": _field(st.booleans()),
    "stream_options": _field(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "n": _field(st.integers(0, 3)),
    "logprobs": _field(st.booleans()),
    "response_format": _field(st.sampled_from([{"type": "text"}, {"type": "json_object"}])),
    **SAMPLING,
}
COMPLETION = st.fixed_dictionaries(
    {
        "prompt": _field(
            st.one_of(TEXT, st.lists(st.integers(-5, 2000), max_size=6), st.lists(TEXT, max_size=2))
        )
    },
    optional=OPENAI,
)
MESSAGE = st.fixed_dictionaries(
    {"role": _field(st.sampled_from(["user", "system", "assistant", "robot"]))},
    optional={
        "content": _field(
            st.one_of(
                TEXT, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}))
            )
        )
    },
)
CHAT = st.fixed_dictionaries(
    {"messages": _field(st.lists(MESSAGE, max_size=3))},
    optional={**OPENAI, "tools": _field(st.lists(ANY, max_size=1))},
)
TGI = st.fixed_dictionaries(
    {"inputs": _field(TEXT)},
    optional={
        "stream": _field(st.booleans()),
        "parameters": _field(
            st.fixed_dictionaries(
                {},
                optional={
                    "max_new_tokens": _field(st.integers(-2, 6)),
                    "do_sample": _field(st.booleans()),
                    "details": _field(st.booleans()),
                    "return_full_text": _field(st.booleans()),
                    "top_k": _field(st.integers(0, 5)),
                    **{k: v for k, v in SAMPLING.items() if k != "stop"},
                    "stop": _field(st.lists(TEXT, max_size=6)),
                },
            )
        ),
    },
)
CASES = st.one_of(
    st.tuples(st.just("/v1/completions"), COMPLETION),
    st.tuples(st.just("/v1/chat/completions"), CHAT),
    st.tuples(st.sampled_from(["/", "/generate", "/generate_stream"]), TGI),
)


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    from joulebench.workloads.models import load_model

    loaded = load_model(str(tiny_model_dir), "fp32")
    with embedded_server(
        loaded,
        scheduler="dynamic",
        meter=FakeMeter(5.0, **FAST),
        default_max_tokens=3,
        max_tokens_limit=6,
        window_s=0.0,
    ) as url:
        yield url, loaded.name, embedded_server.last  # type: ignore[attr-defined]


def _check_error_shape(path: str, r: httpx.Response) -> None:
    body = r.json()
    if path in ("/", "/generate", "/generate_stream"):
        assert set(body) == {"error", "error_type"}, body
        assert isinstance(body["error"], str) and body["error_type"] == "validation"
    else:
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}, body
        assert err["code"] is None or isinstance(err["code"], str)


def test_fuzzed_requests_never_get_a_server_error(served):
    url, model_name, engine = served
    tally = {"sent": 0, "answered": 0, "admitted": 0}
    with httpx.Client(base_url=url, timeout=60) as client:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(CASES)
        def run(case: tuple[str, dict]) -> None:
            path, body = case
            if body.get("model") == "MODEL":
                body["model"] = model_name
            raw = json.dumps(body, ensure_ascii=True, allow_nan=True).encode()
            tally["sent"] += 1
            r = client.post(path, content=raw, headers={"content-type": "application/json"})
            tally["answered"] += 1
            assert r.status_code < 500, (path, raw, r.text)
            if r.status_code == 200:
                tally["admitted"] += 1
                if r.headers["content-type"].startswith("text/event-stream"):
                    assert "generation failed" not in r.text, r.text
                else:
                    assert "generated_text" in r.json() or "choices" in r.json()
            else:
                assert r.status_code in (400, 404, 422), (path, raw, r.text)
                _check_error_shape(path, r)
                assert raw.decode()[:40] not in r.text or len(raw) < 40  # never echoed

        run()
    assert tally["sent"] == tally["answered"] >= EXAMPLES // 2
    assert tally["admitted"] > 0  # the fuzz reached the engine, not only the validator
    assert engine.outstanding == 0
