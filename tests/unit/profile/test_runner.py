from __future__ import annotations

import warnings

import pytest

from joulebench.analysis.roofline import given_peak
from joulebench.errors import JoulebenchWarning
from joulebench.meters.base import Method, Reading
from joulebench.meters.fake import FakeMeter
from joulebench.meters.window import IdleBaseline
from joulebench.profile.config import ProfileConfig
from joulebench.profile.runner import profile_cell
from joulebench.results.store import ResultStore

PEAK = given_peak(100.0, 20.0)  # no calibration in unit tests


def _config(**kw):
    base = dict(
        model="test",
        batch_size=2,
        warmup=1,
        min_window_s=0.1,
        min_repeats=2,
        max_repeats=3,
        ci_target=0.5,
    )
    base.update(kw)
    return ProfileConfig(**base)


def test_both_methods_tokens_sections_and_store(tiny_loaded, prompts, forced, tmp_path):
    meter = FakeMeter(80.0, update_period_s=0.02)
    idle = IdleBaseline({"gpu:0": 30.0}, 1.0)
    with ResultStore(tmp_path / "r.duckdb") as store, warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", JoulebenchWarning
        )  # consistency is not what this test checks
        r = profile_cell(
            tiny_loaded,
            prompts,
            _config(method="both"),
            meter,
            store=store,
            idle=idle,
            hardware=PEAK,
            output_length=forced(),
            study="batching",
        )
        repeats = store.query(
            "SELECT phase, method, warmup, count(*) AS n FROM repeats GROUP BY ALL"
        )
        cells = store.query("SELECT status, study FROM cells")
        audits = store.query("SELECT count(*) AS n FROM audits")[0]["n"]
    # prompts of 4, 7, 10, 13 tokens in batches of 2 → padded to 7 and 13
    assert r["tokens"]["input_effective"] == 34 and r["tokens"]["input_computed"] == 40
    assert r["padding_ratio"] == pytest.approx(6 / 40)
    # forced lengths: batch maxima 4 and 6 → 2×4 + 2×6 output tokens, 4 of them from prefill
    assert r["tokens"]["output"] == 20 and r["tokens"]["decode_output"] == 16
    for phase in ("prefill", "decode"):
        s = r[phase]
        for key in (
            "energy_j",
            "net_energy_j",
            "latency_s",
            "energy_per_token_j",
            "ci_halfwidth_rel",
            "repeats",
        ):
            assert key in s
        assert s["energy_j"] > 0 and s["net_energy_j"] == pytest.approx(
            s["energy_j"] * 50 / 80, rel=0.35
        )
    assert r["decode"]["energy_per_token_j"] == pytest.approx(r["decode"]["energy_j"] / 16)
    assert (
        r["prefill"]["energy_per_computed_input_token_j"]
        < r["prefill"]["energy_per_effective_input_token_j"]
    )
    assert r["subtraction"]["decode"]["method"] == "subtraction"
    assert r["consistency_rel_err"] is not None
    assert r["meter_methods"] == {"gpu:0": "fake"}
    assert r["roofline"]["prefill"]["time_floor_s"] > 0
    names = {a["name"] for a in r["audit"]}
    assert {
        "prefill/direct:energy_ge_idle_x_duration",
        "decode/direct:window_ge_update_period",
        "phase_consistency",
    } <= names
    assert len(cells) == 1 and cells[0]["status"] == "done"
    assert cells[0]["study"] == "batching"  # the caller's study, not a fixed "profile"
    by = {(x["phase"], x["method"], x["warmup"]): x["n"] for x in repeats}
    assert by[("prefill", "direct", True)] == 1 and by[("decode", "direct", False)] >= 2
    assert by[("generate", "subtraction", False)] >= 2
    assert audits == len(r["audit"])


class TooLowMeter:
    """Reports 1 W while the idle baseline says 50 W: physically impossible energy."""

    name = "too-low"
    update_period_s = 0.01

    def __init__(self):
        import time

        self._clock = time.monotonic
        self._t0 = self._clock()

    @property
    def domains(self):
        return {"gpu:0": Method.FAKE}

    def read(self):
        t = self._clock()
        return Reading(t, {"gpu:0": 1.0 * (t - self._t0)})

    def close(self):
        pass


class InterruptedMeter(TooLowMeter):
    """Ctrl-C arrives at the first read inside a measurement window."""

    def read(self):
        raise KeyboardInterrupt


def test_interrupted_cell_and_run_are_not_left_running(tiny_loaded, prompts, forced, tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as store:
        with pytest.raises(KeyboardInterrupt):
            profile_cell(
                tiny_loaded,
                prompts[:2],
                _config(method="direct"),
                InterruptedMeter(),
                store=store,
                idle=IdleBaseline({"gpu:0": 50.0}, 1.0),
                hardware=PEAK,
                output_length=forced(),
            )
        cells = store.query("SELECT status, error FROM cells")
        runs = store.query("SELECT status FROM runs")
    assert cells == [{"status": "interrupted", "error": "KeyboardInterrupt: "}]
    assert runs == [{"status": "interrupted"}]


def test_audits_fire_on_impossible_energy(tiny_loaded, prompts, forced):
    r = profile_cell(
        tiny_loaded,
        prompts[:2],
        _config(method="direct"),
        TooLowMeter(),
        idle=IdleBaseline({"gpu:0": 50.0}, 1.0),
        hardware=PEAK,
        output_length=forced(),
    )
    failed = {a["name"] for a in r["audit"] if not a["passed"]}
    assert "prefill/direct:energy_ge_idle_x_duration" in failed
    assert "decode/direct:energy_ge_idle_x_duration" in failed
    assert not r["audit_passed"]
    assert r["prefill"]["net_energy_j"] < 0


def _two_prompts(loaded, prompts, forced, *, method: str) -> dict:
    """One batch-1 cell over two prompts on a 20 W fake meter (5 W idle)."""
    return profile_cell(
        loaded,
        prompts[:2],
        _config(method=method, batch_size=1),
        FakeMeter(20.0, update_period_s=0.02),
        idle=IdleBaseline({"gpu:0": 5.0}, 1.0),
        hardware=PEAK,
        output_length=forced(),
    )


def test_subtraction_only_and_inconsistency_warning(tiny_loaded, prompts, forced):
    with warnings.catch_warnings():
        # on a busy machine the subtracted decode can come out ≤ 0 and warn: real, but not
        # what this part checks (labels and token counts)
        warnings.filterwarnings("ignore", "subtracted decode energy", JoulebenchWarning)
        r = _two_prompts(tiny_loaded, prompts, forced, method="subtraction")
    assert r["prefill"]["method"] == r["decode"]["method"] == "subtraction"
    assert (
        "consistency_rel_err" not in r
        and r["tokens"]["input_computed"] == r["tokens"]["input_effective"]
    )
    # a meter whose power jumps when the full generate runs makes the phases disagree
    state = {"p": 10.0}
    meter = FakeMeter(lambda t: {"gpu:0": state["p"]}, update_period_s=0.01)
    with pytest.warns(JoulebenchWarning, match="phase consistency"):
        import joulebench.profile.runner as runner

        orig = runner.RepeatedMeasurement

        class Spiky(orig):  # type: ignore[misc,valid-type]
            def window(self):
                state["p"] = 1000.0 if str(self.phase) == "generate" else 10.0
                return super().window()

        runner.RepeatedMeasurement = Spiky
        try:
            r = profile_cell(
                tiny_loaded,
                prompts[:2],
                _config(method="both"),
                meter,
                idle=IdleBaseline({"gpu:0": 5.0}, 1.0),
                hardware=PEAK,
                output_length=forced(),
            )
        finally:
            runner.RepeatedMeasurement = orig
    assert r["consistency_rel_err"] > 0.05 and r["warnings"]


def test_natural_lengths_count_only_real_tokens(tiny_loaded, prompts, forced):
    r = profile_cell(
        tiny_loaded,
        prompts,
        _config(method="direct", batch_size=4),
        FakeMeter(10.0, update_period_s=0.02),
        idle=IdleBaseline({"gpu:0": 5.0}, 1.0),
        hardware=PEAK,
        output_length=forced(natural=True, cap=6),
    )
    assert 4 <= r["tokens"]["output"] <= 24
    assert r["tokens"]["decode_output"] == r["tokens"]["output"] - 4


def test_default_window_follows_the_meter_and_warmups_say_why_they_stopped(
    tiny_loaded, prompts, forced, tmp_path
):
    with ResultStore(tmp_path / "r.duckdb") as store:
        r = profile_cell(
            tiny_loaded,
            prompts,
            _config(method="direct", min_window_s=None, warmup=4),
            FakeMeter(80.0, update_period_s=0.04),  # auto: max(0.25 s, 10 × 40 ms) = 0.4 s
            store=store,
            idle=IdleBaseline({"gpu:0": 30.0}, 1.0),
            hardware=PEAK,
            output_length=forced(),
        )
        rows = store.query("SELECT phase, warmup, duration_s FROM repeats")
    assert r["window"]["min_window_s"] == pytest.approx(0.4)
    assert r["window"]["rule"].startswith("auto: max(0.25 s, 10 × the meter's update period")
    for phase in ("prefill", "decode"):
        s = r[phase]
        assert s["min_window_s"] == pytest.approx(0.4)
        w = s["warmups"]
        assert w["rule"] == "settled" and w["cap"] == 4 and 1 <= w["n"] <= 4
        assert w["n"] == len(w["latency_s"]) and w["stopped"] in ("settled", "cap")
        if w["stopped"] == "settled":  # the last two warm-ups agreed within 10 %
            a, b = w["latency_s"][-2:]
            assert abs(a - b) <= 0.1 * min(a, b)
        # every warm-up that ran is stored apart; every window lasted the automatic length
        assert sum(1 for x in rows if x["phase"] == phase and x["warmup"]) == w["n"]
        windows = [x["duration_s"] for x in rows if x["phase"] == phase and not x["warmup"]]
        assert windows and min(windows) >= 0.4


def test_exact_warmup_rule_and_a_given_window_are_the_studys_protocol(tiny_loaded, prompts, forced):
    r = profile_cell(
        tiny_loaded,
        prompts,
        _config(method="direct", min_window_s=0.1, warmup=3, warmup_rule="exact"),
        FakeMeter(80.0, update_period_s=0.02),
        idle=IdleBaseline({"gpu:0": 30.0}, 1.0),
        hardware=PEAK,
        output_length=forced(),
    )
    assert r["window"] == {"min_window_s": 0.1, "rule": "given: --min-window-s 0.1"}
    for phase in ("prefill", "decode"):
        w = r[phase]["warmups"]
        assert (w["n"], w["rule"], w["stopped"]) == (3, "exact", "count")


def test_unknown_warmup_rule_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="warmup_rule"):
        _config(warmup_rule="sometimes")


def test_the_roofline_gets_the_loaded_precision_with_its_knobs(tiny_loaded, prompts, forced):
    """int4-nf4 computing in fp32 (the study's bitsandbytes default): the roofline's peak is the
    fp32 one, which the precision's name alone ("int4-nf4" → bf16 compute) would lose."""
    import types

    from joulebench.workloads.precision import parse_precision

    spec = parse_precision("int4-nf4", compute_dtype="float32")
    loaded = types.SimpleNamespace(**{**vars(tiny_loaded), "precision": spec})
    r = _two_prompts(loaded, prompts, forced, method="direct")
    assert r["roofline"]["compute_dtype"] == "fp32"
    assert r["roofline"]["precision"] == spec.weight_kind
    assert r["precision"]["compute_dtype"] == spec.to_dict()["compute_dtype"]
