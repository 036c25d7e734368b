"""Bounded, seeded property-based fuzz runs (hypothesis) of the server, two ways:

- hand-made strategies over the request models: any body, plausible or hostile (NaN, Infinity,
  lone surrogates, huge integers, wrong types, out-of-vocabulary ids, long stop lists), on every
  generation route, gets a 2xx or a 4xx in the route's own error shape, never a 5xx, and every
  request gets exactly one answer;
- schema-driven: every operation of the server's ``/openapi.json``, bodies drawn from its own
  request schema; every answer is one the schema declares (status, content type, SSE included,
  and the error body's shape), never a 5xx.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
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


# -- schema-driven: bodies drawn from the server's own OpenAPI schema ---------------------------

UTF8 = st.characters(codec="utf-8")
JSON_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(UTF8, max_size=12),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(UTF8, max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
URL_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:"


def _from_schema(schema: dict, components: dict) -> st.SearchStrategy:
    """A strategy for JSON values valid under ``schema`` (the subset pydantic emits: $ref,
    anyOf, enum, type with its bounds, properties/required, items)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: _from_schema(components[name], components))
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, components) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind is None:  # {}: any JSON value
        return JSON_VALUE
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.integers(
            None if low is None else int(low) + ("exclusiveMinimum" in schema),
            None if high is None else int(high),
        )
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return st.floats(
            low,
            schema.get("maximum"),
            exclude_min="exclusiveMinimum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        return st.text(
            UTF8, min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 24)
        )
    if kind == "array":
        return st.lists(
            _from_schema(schema.get("items", {}), components),
            min_size=schema.get("minItems", 0),
            max_size=max(schema.get("minItems", 0), 4),
        )
    if kind == "object":
        props = {k: _from_schema(v, components) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    raise AssertionError(f"schema keyword type={kind!r} not handled by the fuzz")


def _operations(schema: dict) -> st.SearchStrategy:
    """(method, path template, path, body, use the served model) for every operation of the
    schema, bodies from its requestBody."""
    components = schema["components"]["schemas"]
    cases = []
    for template, ops in schema["paths"].items():
        for method, op in ops.items():
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            path: st.SearchStrategy = st.just(template)
            for name in params:
                value = st.text(URL_SAFE, min_size=1, max_size=12)
                path = st.tuples(path, st.one_of(value, st.just("MODEL"))).map(
                    lambda pv, name=name: pv[0].replace("{" + name + "}", pv[1])
                )
            content = op.get("requestBody", {}).get("content", {})
            body = (
                _from_schema(content["application/json"]["schema"], components)
                if "application/json" in content
                else st.none()
            )
            cases.append(
                st.tuples(st.just(method.upper()), st.just(template), path, body, st.booleans())
            )
    return st.one_of(cases)


def _declared(schema: dict, template: str, method: str, r: httpx.Response) -> None:
    """The answer is one the schema declares: its status, its content type and, where the
    schema gives one, its body's shape."""
    responses = schema["paths"][template][method.lower()]["responses"]
    status = str(r.status_code)
    assert status in responses, (template, method, status, r.text[:300])
    kind = r.headers.get("content-type", "").split(";")[0]
    declared = responses[status].get("content", {})
    assert kind in declared, (template, method, status, kind, list(declared))
    ref = declared[kind].get("schema", {}).get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[1]
        jsonschema.validate(
            r.json(), {**schema["components"]["schemas"][name], "components": schema["components"]}
        )


def test_schema_driven_fuzz_gets_only_declared_answers(served):
    """Every operation of ``/openapi.json``, bodies drawn from its own request schema: no 5xx,
    and each status, content type (SSE included) and error body is the one the schema says."""
    url, model_name, engine = served
    with httpx.Client(base_url=url, timeout=60) as client:
        schema = client.get("/openapi.json").json()
        operations = {(m.upper(), t) for t, ops in schema["paths"].items() for m in ops}
        seen: set[tuple[str, str]] = set()
        generated: list[str] = []  # generation routes that answered 200

        @settings(
            max_examples=EXAMPLES // 2,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(_operations(schema))
        def run(case: tuple[str, str, str, object, bool]) -> None:
            method, template, path, body, served_model = case
            path = path.replace("MODEL", model_name)
            if isinstance(body, dict) and "model" in body and served_model:
                body["model"] = model_name
            seen.add((method, template))
            content = None if body is None else json.dumps(body, allow_nan=False).encode()
            r = client.request(
                method, path, content=content, headers={"content-type": "application/json"}
            )
            assert r.status_code < 500, (method, path, content, r.text)
            _declared(schema, template, method, r)
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                assert "generation failed" not in r.text, r.text
            if method == "POST" and r.status_code == 200:
                generated.append(template)

        run()
    assert seen == operations, operations - seen  # every operation was exercised
    assert len(set(generated)) >= 3, generated  # bodies reached the engine, not only validation
    assert engine.outstanding == 0
