from __future__ import annotations

import pytest

from joulebench.errors import ConfigError
from joulebench.workloads.corpus import THANKS, corpus_texts, load_corpus, parse_corpus


def test_bundled_corpus_is_substantial_english_chat() -> None:
    conversations = load_corpus()
    assert len(conversations) >= 15
    texts = corpus_texts()
    assert sum(len(t) for t in texts) > 30_000
    assert len({c.topic for c in conversations}) == len(conversations)
    words = " ".join(texts).lower().split()
    assert words.count("the") > 200  # real prose, not token soup
    assert all("thank" in t.lower() for t in THANKS)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("USER: hi\n", "before the first"),
        ("### topic: a\nUSER: hi\nUSER: again\n", "two USER turns"),
        ("### topic: a\nASSISTANT: hi\n", "without a USER"),
        ("### topic: a\nUSER: hi\n", "without an ASSISTANT"),
        ("### topic: a\n### topic: b\nUSER: q\nASSISTANT: a\n", "no exchanges"),
        ("### topic: a\nBOT: hi\n", "expected USER"),
    ],
)
def test_parse_errors_name_the_line(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_corpus(text, "f.txt")
    assert "f.txt:" in str(info.value)
