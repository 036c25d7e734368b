"""The chat corpus shipped in the package: realistic English conversations, no downloads.

It feeds two things: the byte-level BPE tokenizer of the tiny models (trained offline on it) and
the synthetic ``paper``/``quick`` prompt sets (multi-turn chats built from its exchanges). Files
live in ``src/joulebench/data/corpus/*.txt`` in a small plain-text format::

    ### topic: cooking
    USER: question...
    ASSISTANT: answer...
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from joulebench.errors import ConfigError

_TOPIC = "### topic:"
_USER = "USER:"
_ASSISTANT = "ASSISTANT:"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One user turn and the assistant's answer to it."""

    user: str
    assistant: str


@dataclass(frozen=True, slots=True)
class Conversation:
    topic: str
    exchanges: tuple[Exchange, ...]


def parse_corpus(text: str, source: str = "<corpus>") -> list[Conversation]:
    """Parse the corpus format; errors name the source and line."""
    conversations: list[Conversation] = []
    topic: str | None = None
    exchanges: list[Exchange] = []
    pending_user: str | None = None

    def close(lineno: int) -> None:
        if topic is None:
            return
        if pending_user is not None:
            raise ConfigError(f"{source}:{lineno}: USER turn without an ASSISTANT answer")
        if not exchanges:
            raise ConfigError(f"{source}:{lineno}: topic '{topic}' has no exchanges")
        conversations.append(Conversation(topic, tuple(exchanges)))

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(_TOPIC):
            close(lineno)
            topic, exchanges, pending_user = line[len(_TOPIC) :].strip(), [], None
        elif topic is None:
            raise ConfigError(f"{source}:{lineno}: text before the first '{_TOPIC}' line")
        elif line.startswith(_USER):
            if pending_user is not None:
                raise ConfigError(f"{source}:{lineno}: two USER turns in a row")
            pending_user = line[len(_USER) :].strip()
        elif line.startswith(_ASSISTANT):
            if pending_user is None:
                raise ConfigError(f"{source}:{lineno}: ASSISTANT turn without a USER turn")
            exchanges.append(Exchange(pending_user, line[len(_ASSISTANT) :].strip()))
            pending_user = None
        else:
            raise ConfigError(f"{source}:{lineno}: expected USER:, ASSISTANT: or {_TOPIC}")
    close(len(text.splitlines()))
    return conversations


@lru_cache(maxsize=1)
def load_corpus() -> tuple[Conversation, ...]:
    """Every conversation of the bundled corpus, in a stable order."""
    folder = resources.files("joulebench.data").joinpath("corpus")
    conversations: list[Conversation] = []
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".txt")), key=lambda p: p.name)
    for path in files:
        conversations.extend(parse_corpus(path.read_text(encoding="utf-8"), path.name))
    if not conversations:
        raise ConfigError("the bundled chat corpus is empty; the package is broken")
    return tuple(conversations)


def corpus_texts() -> list[str]:
    """All turns as plain strings (tokenizer training input)."""
    return [
        text for conv in load_corpus() for ex in conv.exchanges for text in (ex.user, ex.assistant)
    ]


#: Polite closing turns, as in the study's prompts (UltraChat conversations ending in thanks).
THANKS: tuple[str, ...] = (
    "Thank you!",
    "Thank you so much, that was really helpful.",
    "Thanks a lot for your help!",
    "That is great, thank you very much.",
    "Thank you, I appreciate it.",
    "Perfect, thanks!",
    "Thank you for the detailed explanation.",
    "Thanks, this is exactly what I needed.",
)
