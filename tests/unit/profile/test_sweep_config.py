from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.profile.sweep import check_sources, dry_run, load_sweep, parse_sweep

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_the_example_list_is_not_empty():
    # the parametrized tests below run once per file: an empty glob would test nothing
    assert {p.stem for p in EXAMPLE_FILES} >= {
        "quick_precision_sweep",
        "quick_batch_sweep",
        "precision_sweep",
        "batch_sweep",
    }


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example_names_sources_that_resolve(path):
    """Model sources resolve (tokenizer only, no weights); precisions and prompt sets parse."""
    cfg = load_sweep(path)
    resolved = check_sources(cfg)
    assert set(resolved) == set(cfg.models)
    for model, tokenizer in resolved.items():
        assert tokenizer.pad_token_id is not None, model
        assert tokenizer.padding_side == "left"


def test_a_shape_without_its_suffix_is_rejected_with_the_known_names():
    cfg = parse_sweep({"name": "x", "models": ["shape:Qwen2.5-0.5B"], "device": "cuda"})
    with pytest.raises(UnknownName, match=r"Qwen2\.5-0\.5B-Instruct"):
        check_sources(cfg)
    bad_precision = parse_sweep({"name": "x", "models": ["tiny"], "precisions": ["fp7"]})
    with pytest.raises(ConfigError, match="fp7"):
        check_sources(bad_precision)
    bad_prompts = parse_sweep({"name": "x", "models": ["tiny"], "prompts": ["no-such-set"]})
    with pytest.raises(ConfigError, match="no-such-set"):
        check_sources(bad_prompts)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_examples_validate(path):
    cfg = load_sweep(path)
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
    with pytest.raises(ConfigError, match=r"key 'bucketing\.1': bucketing 'buckets:0': K in"):
        parse_sweep({"name": "x", "models": ["tiny"], "bucketing": ["none", "buckets:0"]})
    with pytest.raises(ConfigError, match=r"key 'bucketing\.0': unknown bucketing 'weird'"):
        parse_sweep({"name": "x", "models": ["tiny"], "bucketing": ["weird"]})
    with pytest.raises(ConfigError, match=r"key 'batch_sizes\.1': .*greater than or equal to 1"):
        parse_sweep({"name": "x", "models": ["tiny"], "batch_sizes": [2, 0]})
    with pytest.raises(ConfigError, match="mapping"):
        parse_sweep([1, 2])


def test_study_defaults_to_profile_and_must_not_be_empty():
    assert parse_sweep({"name": "x", "models": ["tiny"]}).study == "profile"
    assert parse_sweep({"name": "x", "models": ["tiny"], "study": "batching"}).study == "batching"
    with pytest.raises(ConfigError, match="key 'study'"):
        parse_sweep({"name": "x", "models": ["tiny"], "study": ""})


def test_cell_key_is_stable_and_config_sensitive():
    a = parse_sweep({"name": "x", "models": ["tiny"], "batch_sizes": [1, 2]}).cells()
    b = parse_sweep({"name": "y", "models": ["tiny"], "batch_sizes": [1, 2]}).cells()
    assert [c.cell_key() for c in a] == [c.cell_key() for c in b]
    assert a[0].cell_key() != a[1].cell_key()


def test_output_length_takes_what_the_cli_takes_and_keeps_the_cell_key():
    """A YAML ``output_length: 32`` is an int: it was refused ("a valid string")."""
    as_int = parse_sweep({"name": "x", "models": ["tiny"], "output_length": 32}).cells()
    as_text = parse_sweep({"name": "x", "models": ["tiny"], "output_length": "32"}).cells()
    assert as_int[0].output_length == "32"
    assert as_int[0].cell_key() == as_text[0].cell_key()
    capped = parse_sweep({"name": "x", "models": ["tiny"], "output_length": "natural:16"})
    assert capped.cells()[0].output_length == "natural:16"
    for bad, why in ((0, "at least 1 token"), (True, "number of tokens"), ("lots", "128")):
        with pytest.raises(ConfigError, match=rf"key 'output_length'.*{why}"):
            parse_sweep({"name": "x", "models": ["tiny"], "output_length": bad})


def test_every_model_source_is_classified_before_any_tokenizer_loads(monkeypatch):
    from joulebench.workloads import models

    loaded: list[object] = []
    monkeypatch.setattr(models, "load_tokenizer", lambda source: loaded.append(source))
    cfg = parse_sweep({"name": "x", "models": ["tiny", "./no/such/dir"]})
    with pytest.raises(ConfigError, match="does not exist"):
        check_sources(cfg)
    assert loaded == []
    check_sources(parse_sweep({"name": "x", "models": ["tiny"]}))
    assert [getattr(s, "kind", None) for s in loaded] == ["tiny"]  # handed the parsed source
