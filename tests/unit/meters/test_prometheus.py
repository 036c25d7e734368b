"""Prometheus/DCGM meter against a loopback HTTP stub (real sockets)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from joulebench.errors import ConfigError, JoulebenchWarning, MeterUnavailable
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


def four_gpus_on_two_nodes():
    return [
        series("GPU-n1a", 0, 1000, host="node1"),
        series("GPU-n1b", 1, 2000, host="node1"),
        series("GPU-n2a", 0, 3000, host="node2"),
        series("GPU-n2b", 1, 4000, host="node2"),
    ]


def test_gpus_selects_by_uuid_and_index(stub):
    stub.results[ENERGY_METRIC] = four_gpus_on_two_nodes()
    m = PrometheusMeter(stub.url, clock=Clock(), gpus="GPU-n2b,n1a")
    assert m.parameters()["gpus"] == {"gpu:0": "GPU-n1a", "gpu:1": "GPU-n2b"}
    stub.results[ENERGY_METRIC] = [
        series(u, g, v + 500, host=h)
        for u, g, v, h in (("GPU-n1a", 0, 1000, "node1"), ("GPU-n2b", 1, 4000, "node2"))
    ] + [series("GPU-n1b", 1, 9000, host="node1")]  # an unselected GPU working hard
    assert m.read().energy_j == {"gpu:0": pytest.approx(0.5), "gpu:1": pytest.approx(0.5)}
    m.close()
    m = PrometheusMeter(stub.url, clock=Clock(), gpus=[1], selector='{Hostname="node1"}')
    assert stub.queries[-1] == ENERGY_METRIC + '{Hostname="node1"}'
    m.close()


def test_gpus_index_matches_on_every_node(stub):
    stub.results[ENERGY_METRIC] = four_gpus_on_two_nodes()
    m = PrometheusMeter(stub.url, clock=Clock(), gpus="1")
    assert sorted(m.parameters()["gpus"].values()) == ["GPU-n1b", "GPU-n2b"]
    m.close()


def test_unknown_gpu_lists_what_the_exporter_reports(stub):
    stub.results[ENERGY_METRIC] = four_gpus_on_two_nodes()
    with pytest.raises(ConfigError, match=r"--gpus entry '7'.*GPU-n1a"):
        PrometheusMeter(stub.url, gpus="7")


def test_all_gpus_without_a_choice_are_named_loudly(stub, caplog):
    stub.results[ENERGY_METRIC] = four_gpus_on_two_nodes()
    with caplog.at_level(logging.WARNING, logger="joulebench.meters.prometheus"):
        m = PrometheusMeter(stub.url, clock=Clock())
    assert any("all 4 GPUs" in r.getMessage() for r in caplog.records)
    m.close()


def test_mig_instances_count_their_gpu_once_and_warn(stub):
    def mig(instance, value):
        s = series("GPU-a", 0, value)
        s["metric"].update(GPU_I_ID=str(instance), GPU_I_PROFILE="3g.40gb")
        return s

    stub.results[ENERGY_METRIC] = [mig(1, 1000), mig(2, 1000)]
    with pytest.warns(JoulebenchWarning, match=r"MIG instances 1, 2 of GPU GPU-a.*counted once"):
        m = PrometheusMeter(stub.url, clock=Clock())
    stub.results[ENERGY_METRIC] = [mig(1, 3000), mig(2, 3000)]
    assert m.read().energy_j == {"gpu:0": pytest.approx(2.0)}  # not 4.0
    assert m.parameters()["mig_instances"] == {"GPU-a": ["1", "2"]}
    m.close()
