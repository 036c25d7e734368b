"""Prometheus/DCGM meter against a loopback HTTP stub (real sockets)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from joulebench.errors import MeterUnavailable
from joulebench.meters import prometheus
from joulebench.meters.base import Method
from joulebench.meters.prometheus import ENERGY_METRIC, POWER_METRIC, PrometheusMeter


def series(uuid, gpu, value, host="node1"):
    return {
        "metric": {"UUID": uuid, "gpu": str(gpu), "Hostname": host},
        "value": [1.7e9, str(value)],
    }


class Stub:
    def __init__(self) -> None:
        self.results: dict[str, list] = {ENERGY_METRIC: [], POWER_METRIC: []}
        self.status = 200
        self.queries: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                if url.path != "/api/v1/query":
                    self.send_response(404)
                    self.end_headers()
                    return
                query = parse_qs(url.query)["query"][0]
                stub.queries.append(query)
                if stub.status != 200:
                    body = {"status": "error", "error": "bad query"}
                else:
                    metric = query.split("{")[0]
                    body = {
                        "status": "success",
                        "data": {"resultType": "vector", "result": stub.results.get(metric, [])},
                    }
                data = json.dumps(body).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counter_dedupes_by_uuid_orders_stably_and_handles_reset(stub):
    stub.results[ENERGY_METRIC] = [
        series("GPU-b", 1, 5000),
        series("GPU-a", 0, 1000),
        series("GPU-a", 0, 1000),  # scraped twice by two jobs
        {"metric": {"gpu": "2"}, "value": [0, "1"]},  # no UUID: ignored
    ]
    m = PrometheusMeter(stub.url, clock=Clock(), scrape_interval_s=5)
    assert m.domains == {"gpu:0": Method.COUNTER, "gpu:1": Method.COUNTER}
    assert m.parameters()["gpus"] == {"gpu:0": "GPU-a", "gpu:1": "GPU-b"}
    assert m.update_period_s == 5
    stub.results[ENERGY_METRIC] = [series("GPU-a", 0, 3000), series("GPU-b", 1, 5500)]
    assert m.read().energy_j == {"gpu:0": pytest.approx(2.0), "gpu:1": pytest.approx(0.5)}
    stub.results[ENERGY_METRIC] = [
        series("GPU-a", 0, 400),
        series("GPU-b", 1, 5500),
    ]  # exporter restart
    assert m.read().energy_j["gpu:0"] == pytest.approx(2.4)
    m.close()


def test_falls_back_to_power_integration(stub):
    stub.results[POWER_METRIC] = [series("GPU-a", 0, 100.0)]
    clock = Clock()
    m = PrometheusMeter(stub.url, clock=clock, selector='{Hostname="node1"}')
    assert m.domains == {"gpu:0": Method.POLLED}
    assert stub.queries[-1] == POWER_METRIC + '{Hostname="node1"}'
    clock.now = 2.0
    stub.results[POWER_METRIC] = [series("GPU-a", 0, 300.0)]
    assert m.read().energy_j["gpu:0"] == pytest.approx(400.0)
    m.close()


def test_no_series_is_unavailable(stub):
    with pytest.raises(MeterUnavailable, match="DCGM exporter scraped"):
        PrometheusMeter(stub.url)


def test_error_status_is_translated(stub):
    stub.status = 400
    with pytest.raises(MeterUnavailable, match="HTTP 400: bad query"):
        PrometheusMeter(stub.url)


def test_unreachable_server_is_translated():
    with pytest.raises(MeterUnavailable, match=r"cannot reach Prometheus.*--prometheus-url"):
        PrometheusMeter("http://127.0.0.1:9", timeout_s=0.5)
    a = prometheus.probe("http://127.0.0.1:9", timeout_s=0.5)
    assert not a.available and "DCGM" in a.hint
    assert not prometheus.probe(None).available
