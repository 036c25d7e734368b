"""Load generator: arrival processes, protocol clients, latency metrics, energy accountings.

``run_load(url, protocol, arrival, prompts, n=…, output_length=…)`` is the entry point;
``joulebench.load.stub.stub_server()`` is a loopback server for tests and benchmarks.
"""

from __future__ import annotations

from joulebench.load.arrivals import ArrivalProcess, known_arrivals, parse_arrival
from joulebench.load.clients import PROTOCOLS, make_client
from joulebench.load.metrics import RequestRecord
from joulebench.load.runner import LoadResult, run_load, run_load_async

__all__ = [
    "PROTOCOLS",
    "ArrivalProcess",
    "LoadResult",
    "RequestRecord",
    "known_arrivals",
    "make_client",
    "parse_arrival",
    "run_load",
    "run_load_async",
]
