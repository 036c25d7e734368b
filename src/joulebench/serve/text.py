"""Incremental detokenization with stop strings, shared by every endpoint.

Text is decoded from all tokens so far (so multi-token characters come out whole) and released
as deltas; when stop strings are set, the last ``len(longest stop) - 1`` characters are held back
until it is clear they do not start a stop string, so a stop string never reaches the client
(OpenAI's behaviour) unless ``keep_stop`` is set (TGI's: the text ends with the stop string).
"""

from __future__ import annotations

from typing import Any


class TextAssembler:
    def __init__(
        self, tokenizer: Any, stop: list[str] | None = None, *, keep_stop: bool = False
    ) -> None:
        self.tokenizer = tokenizer
        self.keep_stop = keep_stop
        self.stop = [s for s in (stop or []) if s]
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self.token_ids: list[int] = []
        self.text = ""  # final text once stopped or finished
        self._sent = 0
        self.stopped = False

    def _decode(self) -> str:
        return self.tokenizer.decode(self.token_ids, skip_special_tokens=True)

    def feed(self, token_ids: list[int] | tuple[int, ...]) -> str:
        """Add tokens; return the text that can be sent now (may be empty)."""
        if self.stopped:
            return ""
        self.token_ids.extend(int(t) for t in token_ids)
        full = self._decode()
        if full.endswith("\ufffd"):  # an incomplete multi-byte character: wait for more
            return ""
        for s in self.stop:
            at = full.find(s, max(0, self._sent - len(s)))
            if at != -1:
                self.stopped = True
                full = full[: at + len(s) if self.keep_stop else at]
                break
        self.text = full
        safe = len(full) if self.stopped else max(self._sent, len(full) - self._hold)
        delta = full[self._sent : safe]
        self._sent = safe
        return delta

    def flush(self) -> str:
        """Everything not sent yet (call once, after the last token)."""
        if not self.stopped:
            full = self._decode()
            self.text = full
        delta = self.text[self._sent :]
        self._sent = len(self.text)
        return delta
