"""``--prompts`` / ``--output-length``: one reading for load, shape-compare and shape-sweep."""

from __future__ import annotations

import pytest

from joulebench.cli.workload_options import describe_output_length, output_lengths, read_prompts
from joulebench.errors import ConfigError


def test_txt_file_one_prompt_per_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("first prompt\n\n  \nsecond prompt\n")
    items, refs = read_prompts(str(f), n=5)
    assert items == ["first prompt", "second prompt"] and refs is None
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompts(str(tmp_path / "missing.txt"), n=5)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="empty"):
        read_prompts(str(tmp_path / "empty.txt"), n=5)


def test_quick_set_has_reference_lengths_and_reference_uses_them():
    items, refs = read_prompts("quick", n=3, seed=1)
    assert len(items) == 3 and refs is not None and all(r >= 1 for r in refs)
    assert output_lengths("reference", refs) == refs


def test_jsonl_goes_through_the_shared_loader(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "hello there"}\n{"prompt": "what is a watt?"}\n')
    items, refs = read_prompts(str(f), n=2)
    assert len(items) == 2 and refs is None
    with pytest.raises(ConfigError, match="no reference answer lengths"):
        output_lengths("reference", refs)


def test_output_length_semantics():
    assert output_lengths("32", None) == 32
    assert output_lengths("natural", None) == 1024
    assert output_lengths("natural:48", None) == 48
    assert describe_output_length("natural:48") == "natural:48"
    for bad in ("0", "-3", "lots", "natural:0"):
        with pytest.raises(ConfigError):
            output_lengths(bad, None)


def test_unknown_prompt_set_says_what_is_understood():
    with pytest.raises(ConfigError, match="paper, quick"):
        read_prompts("nonsense", n=2)
