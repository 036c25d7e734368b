"""The ``slo`` policy in a real gateway: echo upstream, joulebench serve, ``load --via-shape``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict

import httpx
import pytest

from joulebench.shape.runner import run_gateway, serve_in_thread
from joulebench.shape.slo import SloPolicy
from joulebench.shape.testing import EchoUpstream

pytestmark = pytest.mark.integration


async def _paced(url: str, n: int, gap_s: float, body: dict) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        tasks = []
        for i in range(n):
            req = {**body, "id": f"s{i}"}
            tasks.append(asyncio.create_task(client.post("/v1/chat/completions", json=req)))
            await asyncio.sleep(gap_s)
        return list(await asyncio.gather(*tasks))


def test_slo_gateway_holds_within_budget_keeps_order_and_explains() -> None:
    app = EchoUpstream()
    budget_ms = 300
    with serve_in_thread(app) as up, run_gateway(up, f"slo:{budget_ms}ms") as gw:
        body = {"stream": True, "chunks": 4, "chunk_delay_s": 0.02}
        responses = asyncio.run(_paced(gw.url, 80, 0.03, body))
        metrics = httpx.get(gw.url + "/metrics").text
        policy = gw.gateway.policy
        assert isinstance(policy, SloPolicy)
        info = policy.explain()
    assert [r.status_code for r in responses] == [200] * 80
    assert [r.text.count("data: ") for r in responses] == [5] * 80  # 4 events + [DONE]
    delays = [float(r.headers["x-gateway-delay-ms"]) for r in responses]
    assert max(delays) <= budget_ms  # the hard bound, for every request
    groups: dict[int, list[httpx.Response]] = defaultdict(list)
    for r in responses:
        groups[int(r.headers["x-gateway-group"])].append(r)
    for members in groups.values():  # positions follow arrival order inside each group
        members.sort(key=lambda r: int(r.headers["x-gateway-position"]))
        seqs = [int(r.headers["x-gateway-seq"]) for r in members]
        assert seqs == sorted(seqs) and len(members) == int(
            members[0].headers["x-gateway-group-size"]
        )
    assert sorted(int(r.headers["x-gateway-seq"]) for r in responses) == list(range(80))
    # the policy learnt from the responses and explains each release
    releases = info["releases"]
    assert len(releases) == len(groups) and sum(r["size"] for r in releases) == 80
    assert all(r["answered"] == r["size"] and r["failed"] == 0 for r in releases)
    assert all(r["realised_batch"] is not None for r in releases)
    assert info["model"]["responses"] == 80
    assert any(not r["reason"].startswith("passthrough") for r in releases)  # it shaped
    assert max(r["size"] for r in releases) > 1
    assert "joulebench_gateway_slo_release_predicted_batch{group=" in metrics
    assert "joulebench_gateway_slo_release_realised_batch{group=" in metrics
    assert "joulebench_gateway_slo_budget_seconds 0.3" in metrics


def test_slo_gateway_falls_back_to_passthrough_when_upstream_fails() -> None:
    app = EchoUpstream()
    with serve_in_thread(app) as up, run_gateway(up, "slo:300ms") as gw:
        responses = asyncio.run(_paced(gw.url, 30, 0.02, {"status": 503}))
        info = gw.gateway.policy.explain()
    assert [r.status_code for r in responses] == [503] * 30  # passed on unchanged
    later = info["releases"][5:]
    assert later and all(r["reason"].startswith("passthrough: upstream failing") for r in later)
    assert all(r["delay_max_ms"] < 5.0 for r in later)  # not held (a clock read apart)


def test_load_via_shape_slo_stores_its_decisions(tmp_path) -> None:
    db = tmp_path / "r.duckdb"
    cmd = [sys.executable, "-m", "joulebench", "load", "--via-shape", "slo:400ms",
           "--arrival", "poisson:15", "--n", "24", "--seed", "2", "--prompts", "quick",
           "--output-length", "4", "--meter", "fake", "--idle-s", "0.3",
           "--json", "--store", str(db), "--name", "slo"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["policy"]["spec"] == "slo:400ms" and out["policy"]["kind"] == "slo"
    shaped = out["shaped"]
    assert shaped["ok"] == 24 and shaped["added_delay_ms"]["max"] <= 400
    decisions = shaped["gateway"]["decisions"]
    assert sum(r["size"] for r in decisions["releases"]) == 24
    # joulebench serve exposes /metrics: the policy read the engine's load
    assert decisions["upstream"] is not None and decisions["upstream"]["running"] is not None
    from joulebench.analysis.records import read_store
    from joulebench.results.store import ResultStore

    with ResultStore(db, read_only=True) as store:
        loads = {lr.run.name: lr for lr in read_store(store).load_runs}
    stored = loads["slo/shaped"].run.summary["gateway"]["decisions"]["releases"]
    assert [r["group"] for r in stored] == [r["group"] for r in decisions["releases"]]
    assert {"size", "delay_max_ms", "predicted_batch", "realised_batch"} <= set(stored[0])
