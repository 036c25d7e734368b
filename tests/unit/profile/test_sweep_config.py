from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.errors import ConfigError
from joulebench.profile.sweep import dry_run, load_sweep, parse_sweep

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize(
    "name", ["quick_precision_sweep", "quick_batch_sweep", "precision_sweep", "batch_sweep"]
)
def test_examples_validate(name):
    cfg = load_sweep(EXAMPLES / f"{name}.yaml")
    plan = dry_run(cfg)
    assert len(plan.cells) == len(cfg.models) * len(cfg.precisions) * len(cfg.batch_sizes) * len(
        cfg.bucketing
    )
    assert 0 < plan.estimate_min_s < plan.estimate_max_s
    assert len({c.cell_key() for c in plan.cells}) == len(plan.cells)


def test_errors_point_at_the_bad_key():
    with pytest.raises(ConfigError, match=r"key 'batch_sizes\.1'"):
        parse_sweep({"name": "x", "models": ["tiny"], "batch_sizes": [1, "big"]})
    with pytest.raises(ConfigError, match=r"key 'batch_size'.*unknown key"):
        parse_sweep({"name": "x", "models": ["tiny"], "batch_size": [1]})
    with pytest.raises(ConfigError, match="models"):
        parse_sweep({"name": "x"})
    with pytest.raises(ConfigError, match="buckets"):
        parse_sweep({"name": "x", "models": ["tiny"], "bucketing": ["buckets:0"]})
    with pytest.raises(ConfigError, match="mapping"):
        parse_sweep([1, 2])


def test_cell_key_is_stable_and_config_sensitive():
    a = parse_sweep({"name": "x", "models": ["tiny"], "batch_sizes": [1, 2]}).cells()
    b = parse_sweep({"name": "y", "models": ["tiny"], "batch_sizes": [1, 2]}).cells()
    assert [c.cell_key() for c in a] == [c.cell_key() for c in b]
    assert a[0].cell_key() != a[1].cell_key()
