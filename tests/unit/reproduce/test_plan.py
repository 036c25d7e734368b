"""Reproduce plans: the bundled ones are valid; a bad plan fails naming the key to fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from joulebench.errors import ConfigError, UnknownName
from joulebench.reproduce.plan import bundled_plan, load_plan, parse_plan
from joulebench.reproduce.run import check_device

BASE: dict[str, Any] = {
    "name": "t",
    "device": "cpu",
    "precision": {"models": ["tiny"], "precisions": ["fp32", "bf16"]},
    "batch": {"models": ["tiny"], "batch_sizes": [1, 2], "bucketing": ["none", "sorted"]},
    "serving": {
        "model": "tiny",
        "schedulers": ["sequential", "continuous"],
        "arrivals": ["sequential", "burst", "fixed:500ms", "uniform:50ms,300ms"],
        "n": 4,
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    node[last] = value
    return data


def test_bundled_plans_are_valid_and_cover_the_three_studies() -> None:
    quick, full = bundled_plan("quick"), bundled_plan("full")
    assert not quick.needs_gpu and full.needs_gpu
    for plan in (quick, full):
        sweeps = plan.sweeps()
        assert sweeps["precision"].study == "precision" and sweeps["batch"].study == "batch"
        assert sweeps["precision"].name == f"reproduce-{plan.name}-precision"
        assert plan.serving is not None
        assert {"sequential", "continuous"} <= set(plan.serving.schedulers)
        kinds = {a.partition(":")[0] for a in plan.serving.arrivals}
        assert kinds == {"sequential", "burst", "fixed", "uniform"}
    # quick: CPU precisions and batches 1–8; full: the study's grid
    assert set(quick.sweeps()["precision"].precisions) <= {"fp32", "bf16", "int8-bnb"}
    assert quick.sweeps()["batch"].batch_sizes == [1, 2, 4, 8]
    assert len(full.sweeps()["precision"].cells()) == 7 * 5
    assert max(full.sweeps()["batch"].batch_sizes) == 64


def test_unknown_mode_lists_the_known_ones() -> None:
    with pytest.raises(UnknownName, match="known: full, quick"):
        bundled_plan("medium")


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("serving.nn", 3, "key 'serving.nn': unknown key; known keys: model"),
        ("precision.precison", ["fp32"], "key 'precision.precison': unknown key"),
        ("batch.batch_sizes", [2, 0], "key 'batch.batch_sizes.1': Input should be greater"),
        ("batch.bucketing", ["none", "weird"], "key 'batch.bucketing.1': unknown bucketing"),
        (
            "serving.schedulers",
            ["continuous", "fifo"],
            "key 'serving.schedulers.1': unknown scheduler 'fifo'; known: continuous",
        ),
        ("serving.arrivals", ["poisson:-1"], "key 'serving.arrivals.0': arrival 'poisson:-1'"),
        ("serving.arrivals", ["zigzag"], "unknown arrival process 'zigzag'"),
        ("serving.arrivals", ["burst", "burst"], "key 'serving.arrivals': an arrival pattern"),
        ("serving.n", 0, "key 'serving.n'"),
        ("device", "tpu", "key 'device'"),
        ("precision.models", ["shape:Nope-1B"], "key 'precision.models': unknown model shape"),
        ("serving.model", "tiny:gpt9", "key 'serving.model'"),
        ("precision.name", "x", "key 'precision.name' is set by the plan"),
    ],
)
def test_bad_plan_names_the_key(path: str, value: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_plan(_with(path, value), "plan.yaml")
    assert "plan.yaml" in str(exc.value)
    assert needle in str(exc.value)


def test_every_bad_entry_is_reported_with_its_index() -> None:
    shaping = {
        "scheduler": "fifo",
        "arrival": "zigzag",
        "policies": ["cadence:1ms", "nope"],
        "n": 2,
    }
    with pytest.raises(ConfigError) as exc:
        parse_plan({**_with("serving.schedulers", ["fifo", "x"]), "shaping": shaping}, "p.yaml")
    lines = str(exc.value).splitlines()[1:]
    assert [line.strip().partition(":")[0] for line in lines] == [
        "key 'serving.schedulers.0'",
        "key 'serving.schedulers.1'",
        "key 'shaping.scheduler'",
        "key 'shaping.arrival'",
        "key 'shaping.policies.1'",
    ]
    assert "arrival 'zigzag': unknown arrival process 'zigzag'" in lines[3]
    assert "policy 'nope': unknown shaping policy 'nope'" in lines[4]


def test_top_level_errors() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_plan(["precision"], "p.yaml")
    with pytest.raises(ConfigError, match="no study"):
        parse_plan({"name": "empty"}, "p.yaml")
    with pytest.raises(ConfigError, match="key 'colour': unknown key; known keys: name"):
        parse_plan({**BASE, "colour": "red"}, "p.yaml")


def test_load_plan_reads_yaml_and_reports_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text(yaml.safe_dump(BASE))
    assert load_plan(good).serving.n == 4  # type: ignore[union-attr]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_plan(bad)
    with pytest.raises(ConfigError, match="cannot read plan file"):
        load_plan(tmp_path / "missing.yaml")


def test_models_override_and_skip() -> None:
    plan = parse_plan(BASE).with_models(["tiny:qwen2:tiny", "tiny:llama:tiny"])
    assert plan.precision.models == ["tiny:qwen2:tiny", "tiny:llama:tiny"]  # type: ignore[union-attr]
    assert plan.batch.models == ["tiny:qwen2:tiny"]  # type: ignore[union-attr]
    assert plan.serving.model == "tiny:qwen2:tiny"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"--models: key .precision\.models."):
        parse_plan(BASE).with_models(["shape:Nope"])
    with pytest.raises(ConfigError, match="empty"):
        parse_plan(BASE).with_models([" "])
    skipped = parse_plan(BASE).without(["batch", "serving"])
    assert list(skipped.sweeps()) == ["precision"] and skipped.serving is None
    with pytest.raises(UnknownName, match="unknown study 'serve'; known: batch, precision"):
        parse_plan(BASE).without(["serve"])


def test_gpu_plan_refused_without_gpu_unless_forced() -> None:
    full = bundled_plan("full")
    with pytest.raises(ConfigError, match="--force"):
        check_device(full, gpu=lambda: False)
    forced = check_device(full, force=True, gpu=lambda: False)
    assert forced.device == "cpu" and forced.sweeps()["batch"].device == "cpu"
    assert check_device(full, gpu=lambda: True).device == "cuda"
    quick = bundled_plan("quick")
    assert check_device(quick, gpu=lambda: False) is quick
