"""Drafts for exact speculative decoding, taken from the prompt itself (prompt lookup).

Code repeats itself: names, argument lists, the shape of the line above. When the last few
tokens (prompt and answer so far) occurred earlier, the tokens that followed them there are a
good guess for what comes next. The guesses are checked in one batch with the model (see
`generation.py`): each is kept only if greedy decoding would have chosen it, so the answer is
the same as without drafts, only fewer forward passes are paid for it.

Pure: a table of where each short run of tokens last occurred.
"""

from __future__ import annotations

from collections.abc import Sequence

NGRAMS = (3, 2)  # the longest recent run that occurred before wins


class Drafter:
    """Proposes up to `limit` tokens after `tokens`, learning each token added to them."""

    def __init__(self, tokens: Sequence[int], *, limit: int) -> None:
        self._tokens = list(tokens)
        self._limit = limit
        self._next = limit  # the length of the next draft: shrinks after rejections
        self._seen: dict[tuple[int, ...], int] = {}  # n-gram -> position after its last occurrence
        for end in range(1, len(self._tokens)):
            self._index(end)

    def _index(self, end: int) -> None:
        """Record the n-grams ending just before position `end` (followed by tokens[end])."""
        for n in NGRAMS:
            if end >= n:
                self._seen[tuple(self._tokens[end - n : end])] = end

    def add(self, token: int) -> None:
        self._tokens.append(token)
        self._index(len(self._tokens) - 1)

    def draft(self) -> list[int]:
        """What followed the most recent earlier occurrence of the last n-gram, looked up again
        from the draft's own end while it is short (a repeated line, or "x x x")."""
        draft: list[int] = []
        tokens = self._tokens
        while len(draft) < self._next:
            for n in NGRAMS:
                tail = (tokens[-n:] + draft)[-n:] if draft else tokens[-n:]
                if len(tail) < n or (at := self._seen.get(tuple(tail))) is None:
                    continue
                draft += tokens[at : at + self._next - len(draft)]
                break
            else:
                break
        return draft

    def checked(self, drafted: int, accepted: int) -> None:
        """Feedback after a check: a draft the model agreed with wholly keeps its length or grows
        back to the limit, else the next one is at most twice what was accepted (at least 1)."""
        if accepted == drafted:
            self._next = min(self._limit, max(self._next, 2 * drafted))
        else:
            self._next = max(1, min(self._limit, 2 * accepted))
