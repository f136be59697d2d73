"""Answers that need no model: typed-ahead reuse and a small LRU of recent results.

Typed-ahead: while the user types the characters the shown suggestion starts with, the rest of
that suggestion is still the answer. The check compares the document with the one the
suggestion was computed for, around the cursor (as far as the model's context reaches): the
new text must be the old text with the typed characters inserted at the old cursor.

LRU: results keyed on the text around the cursor (the model's whole context), so undo, redo and
moving back to an earlier spot are answered at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

#: (window starts at the document start, text before the cursor, text after, settings)
CacheKey = tuple[bool, str, str, object]


@dataclass(frozen=True)
class Shown:
    """The suggestion last returned for a document, and the text it was computed for."""

    text: str
    offset: int
    suggestion: str


def typed_ahead(shown: Shown, text: str, offset: int, before: int, after: int) -> str | None:
    """The rest of `shown.suggestion` if the user typed its start, else None.

    `before`/`after` are how many characters around the cursor the model could have seen.
    """
    typed = offset - shown.offset
    if typed <= 0 or typed >= len(shown.suggestion):
        return None
    if len(text) != len(shown.text) + typed:
        return None
    if text[shown.offset : offset] != shown.suggestion[:typed]:
        return None
    start = max(0, shown.offset - before)
    if text[start : shown.offset] != shown.text[start : shown.offset]:
        return None
    if text[offset : offset + after] != shown.text[shown.offset : shown.offset + after]:
        return None
    rest = shown.suggestion[typed:]
    return rest if rest.strip() else None


class ResultCache:
    """Least-recently-used map from (context around the cursor, settings) to a suggestion."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[CacheKey, str] = OrderedDict()

    @staticmethod
    def key(text: str, offset: int, before: int, after: int, settings: object) -> CacheKey:
        start = max(0, offset - before)
        # The full strings are kept (not just hashes) so a collision can never answer wrongly;
        # each entry holds at most the model's context, a few kilobytes.
        return (start == 0, text[start:offset], text[offset : offset + after], settings)

    def get(self, key: CacheKey) -> str | None:
        suggestion = self._entries.get(key)
        if suggestion is not None:
            self._entries.move_to_end(key)
        return suggestion

    def put(self, key: CacheKey, suggestion: str) -> None:
        self._entries[key] = suggestion
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
