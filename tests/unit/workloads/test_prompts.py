from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from joulebench.errors import ConfigError
from joulebench.workloads.corpus import THANKS, corpus_texts
from joulebench.workloads.prompt_set import PromptSet, chat_input_ids
from joulebench.workloads.prompts import load_prompts


@pytest.fixture(scope="module")
def paper(tiny_tokenizer):
    ps = load_prompts("paper", n=400, seed=3, tokenizer=tiny_tokenizer)
    return ps, ps.encode(tiny_tokenizer)


def test_paper_distribution_matches_the_study(paper) -> None:
    _, encoded = paper
    lengths = [e.n_input_tokens for e in encoded]
    refs = [e.reference_output_tokens for e in encoded]
    assert len(encoded) == 400
    assert min(lengths) >= 190 and max(lengths) <= 4000
    assert 1200 * 0.9 <= statistics.fmean(lengths) <= 1200 * 1.1
    assert statistics.median(lengths) < statistics.fmean(lengths)  # right-skewed, like chats
    assert sum(n > 2500 for n in lengths) > 10  # the long tail is there
    assert min(refs) >= 10 and max(refs) <= 300
    assert 80 <= statistics.fmean(refs) <= 140


def test_paper_prompts_are_polite_multi_turn_chats_of_real_text(paper) -> None:
    ps, _ = paper
    corpus = " ".join(corpus_texts())
    turns = [len(p.messages) for p in ps]
    assert statistics.fmean(turns) > 5
    for p in ps.prompts[:50]:
        roles = [m["role"] for m in p.messages]
        assert roles[-1] == "user" and p.messages[-1]["content"] in THANKS
        assert roles[:-1] == ["user", "assistant"] * ((len(roles) - 1) // 2)
        assert p.messages[0]["content"][:30] in corpus  # corpus text, not random ids


def test_lengths_are_exact_chat_template_counts(paper, tiny_tokenizer) -> None:
    ps, encoded = paper
    p, e = ps.prompts[0], encoded[0]
    text = tiny_tokenizer.apply_chat_template(
        p.messages, add_generation_prompt=True, tokenize=False
    )
    assert e.input_ids == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert e.input_ids == chat_input_ids(tiny_tokenizer, p.messages)


def test_deterministic_by_seed(tiny_tokenizer) -> None:
    a = load_prompts("quick", n=20, seed=1, tokenizer=tiny_tokenizer)
    b = load_prompts("quick", n=20, seed=1, tokenizer=tiny_tokenizer)
    c = load_prompts("quick", n=20, seed=2, tokenizer=tiny_tokenizer)
    assert [p.messages for p in a] == [p.messages for p in b]
    assert [p.messages for p in a] != [p.messages for p in c]
    assert [p.id for p in a] == [p.id for p in b]


def test_quick_is_short(tiny_tokenizer) -> None:
    ps = load_prompts("quick", n=150, tokenizer=tiny_tokenizer)
    stats = ps.stats(tiny_tokenizer)
    assert stats["input_tokens"]["min"] >= 36 and stats["input_tokens"]["max"] <= 160
    assert stats["reference_output_tokens"]["min"] >= 4
    assert stats["reference_output_tokens"]["max"] <= 24
    assert stats["n"] == 150 and stats["source"]["profile"] == "quick"
    assert len(load_prompts("quick", tokenizer=tiny_tokenizer)) == 32


def test_without_a_tokenizer_the_bundled_one_is_used_and_recorded(
    tiny_tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        ps = load_prompts("quick", n=5, seed=2)
    assert "bundled tokenizer" in ps.source["tokenizer"]
    assert "target model's tokenizer" in caplog.text
    same = load_prompts("quick", n=5, seed=2, tokenizer=tiny_tokenizer)
    assert [p.messages for p in ps] == [p.messages for p in same]


def test_unknown_spec_and_bad_n() -> None:
    with pytest.raises(ConfigError, match="paper, quick"):
        load_prompts("prompts.txt")
    with pytest.raises(ConfigError, match="at least 1"):
        load_prompts("quick", n=0)


def test_empty_set_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        PromptSet("x", [])


def test_tokenizer_without_chat_template(tiny_tokenizer) -> None:
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        chat_input_ids(tok, [{"role": "user", "content": "hi"}])


# ---- files -------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_jsonl_with_messages_and_reference_answer(tmp_path: Path, tiny_tokenizer) -> None:
    path = _write_jsonl(
        tmp_path / "chats.jsonl",
        [
            {
                "id": "a",
                "messages": [
                    {"role": "user", "content": "How do I boil an egg?"},
                    {"role": "assistant", "content": "Put it in boiling water for nine minutes."},
                ],
            },
            {"id": "b", "prompt": "unused", "messages": [{"role": "user", "content": "Hi"}]},
        ],
    )
    ps = load_prompts(str(path))
    assert [p.id for p in ps] == ["a", "b"]
    assert ps.prompts[0].messages == [{"role": "user", "content": "How do I boil an egg?"}]
    encoded = ps.encode(tiny_tokenizer)
    ref = "Put it in boiling water for nine minutes."
    assert encoded[0].reference_output_tokens == len(
        tiny_tokenizer(ref, add_special_tokens=False)["input_ids"]
    )
    assert encoded[1].reference_output_tokens is None
    assert ps.source["sha256"] and ps.source["kind"] == "file"


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": "broken"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:3: malformed JSON"):
        load_prompts(str(path))


def test_missing_column_lists_available(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "len": 5}])
    with pytest.raises(ConfigError, match="available columns: question, len"):
        load_prompts(str(path))
    with pytest.raises(ConfigError, match=r"column 'text'.*available columns: question, len"):
        load_prompts(str(path), columns={"prompt": "text"})
    with pytest.raises(ConfigError, match="unknown column mapping"):
        load_prompts(str(path), columns={"question": "question"})
    ps = load_prompts(str(path), columns={"prompt": "question", "reference_output_tokens": "len"})
    assert ps.prompts[0].reference_output_tokens == 5
    assert ps.prompts[0].messages == [{"role": "user", "content": "q"}]


def test_bad_values_name_the_line(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "v.jsonl", [{"prompt": "q"}, {"prompt": "q", "reference_output_tokens": -2}]
    )
    with pytest.raises(ConfigError, match=r"v\.jsonl:line 2: reference_output_tokens"):
        load_prompts(str(path))
    path = _write_jsonl(tmp_path / "r.jsonl", [{"messages": [{"role": "robot", "content": "x"}]}])
    with pytest.raises(ConfigError, match="role 'robot'"):
        load_prompts(str(path))


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no rows"):
        load_prompts(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"))


def test_csv_and_parquet(tmp_path: Path) -> None:
    import csv

    path = tmp_path / "p.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["messages", "out"])
        w.writerow([json.dumps([{"role": "user", "content": "hello"}]), "12"])
        w.writerow(["[not json", "3"])
    with pytest.raises(ConfigError, match=r"p\.csv:line 3: messages is not valid JSON"):
        load_prompts(str(path), columns={"reference_output_tokens": "out"})

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"text": ["one", "two", "three"], "n_out": [5, 6, 7]})
    pq.write_table(table, tmp_path / "p.parquet")
    ps = load_prompts(
        str(tmp_path / "p.parquet"), columns={"prompt": "text", "reference_output_tokens": "n_out"}
    )
    assert [p.reference_output_tokens for p in ps] == [5, 6, 7]


def test_sampling_n_is_seeded(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "many.jsonl", [{"prompt": f"q{i}"} for i in range(50)])
    a = [p.id for p in load_prompts(str(path), n=10, seed=4)]
    b = [p.id for p in load_prompts(str(path), n=10, seed=4)]
    c = [p.id for p in load_prompts(str(path), n=10, seed=5)]
    assert a == b != c and len(a) == 10


# ---- Hugging Face datasets -------------------------------------------------------------


def test_hf_dataset_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/chats' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match=r"cannot load dataset 'org/chats' split 'train'.*jsonl"):
        load_prompts("hf:org/chats")


def test_hf_dataset_with_split_and_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_list(
        [
            {"conv": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(8)
        ]
    )
    seen = {}

    def fake_load(name, split):
        seen.update(name=name, split=split)
        return data

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ps = load_prompts("hf:org/chats:test_sft", n=3, seed=0, columns={"messages": "conv"})
    assert seen == {"name": "org/chats", "split": "test_sft"}
    assert len(ps) == 3 and all(p.reference_text == "a" for p in ps)
    with pytest.raises(ConfigError, match="available columns: conv"):
        load_prompts("hf:org/chats")


def test_hf_dataset_for_real_offline() -> None:
    """The real datasets call, with the hub offline (set by tests/conftest.py)."""
    pytest.importorskip("datasets")
    with pytest.raises(ConfigError, match="cannot load dataset 'joulebench-no/such-set'"):
        load_prompts("hf:joulebench-no/such-set")
