"""The prompt window: where the prefix starts and the suffix ends, within token budgets.

``prefix = text[start:offset]`` and ``suffix = text[offset:end]``, each within its budget as
counted by the caller's ``count_tokens`` (the model's own tokenizer). Nothing proportional to
the document size is done per request: candidate cuts are the line starts of a bounded slice
around the cursor (``budget * MAX_CHARS_PER_TOKEN`` characters each side, which also caps the
prefix and suffix length in characters), and the cut is found by an interpolation search over
them (typically 2-4 ``count_tokens`` calls per side, at worst O(log lines); a cut within 1/16 of
the target is good enough). Failing a line boundary (a single huge line), the cut is a
character boundary that does not split a combining sequence.

**Stable window edges** (KV-cache reuse: the model re-evaluates everything after the first
changed token, so the start should move rarely and in large steps). ``anchor`` is the start
returned for the previous request on the same document. It is kept exactly when it is still
usable: ``0 <= anchor <= offset``, it is a line start of the current text (or, only when the
cursor line alone overflows the budget, a point inside the cursor line), and the prefix from it
fits the budget -- unless that prefix is very short (< ``SHORT_ANCHOR`` of the budget) while
more text exists before it. Otherwise a new start is chosen so the prefix uses about
``HEADROOM`` of the budget, leaving room to type before it must move again. If the whole text
before the cursor fits, the start is 0. The suffix's end is kept the same way (``choose_end``'s
``anchor``): with both edges in place, a cursor moving N lines changes the prompt by those N
lines only, which cache reuse (``engine/kv_cache.py``) then pays for alone.
"""

from __future__ import annotations

import bisect
import itertools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "HEADROOM",
    "MAX_CHARS_PER_TOKEN",
    "PARSE_MARGIN",
    "SHORT_ANCHOR",
    "Lines",
    "TokenCost",
    "choose_end",
    "choose_start",
    "line_starts",
    "scan_lines",
    "splits_cluster",
]

#: Upper bound on characters per budget token: the character window looked at (parsed and
#: tokenized) is ``budget * MAX_CHARS_PER_TOKEN`` on each side of the cursor, which also caps the
#: prefix/suffix length in characters. Code Llama averages ~3-4 characters per token on code.
MAX_CHARS_PER_TOKEN = 8
#: A freshly chosen window start makes the prefix use about this fraction of the budget.
HEADROOM = 0.75
#: An anchor whose prefix uses less than this fraction of the budget is dropped (if more text
#: exists before it).
SHORT_ANCHOR = 0.25
#: How far before the window the parse may start (see ``region.parse_start``) and how far a
#: line boundary is looked for around the character window; text there is never in the prompt.
PARSE_MARGIN = 4000
#: Prior guess of characters per token, for the first probe of the budget search.
_GUESS_CHARS_PER_TOKEN = 3.5


def _is_joiner(ch: str) -> bool:
    """A character that continues the previous one (combining mark, ZWJ, selector, skin tone)."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or cp in (0x200D, 0xFE0E, 0xFE0F)
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
    )


def splits_cluster(text: str, p: int) -> bool:
    return 0 < p < len(text) and (_is_joiner(text[p]) or text[p - 1] == "\u200d")


def line_starts(text: str, lo: int, hi: int) -> list[int]:
    """``lo`` followed by the absolute index after every ``\\n`` in ``text[lo:hi]``."""
    parts = text[lo:hi].split("\n")
    return list(itertools.accumulate((len(p) + 1 for p in parts[:-1]), initial=lo))


@dataclass
class Lines:
    """Candidate cut points: the line starts of a bounded slice around the cursor."""

    starts: list[int]  # starts[0] is the slice start, a line start iff lo_is_line_start
    lo_is_line_start: bool


def scan_lines(text: str, offset: int, before: int, after: int) -> Lines:
    n = len(text)
    lo_raw = max(0, offset - before)
    j = text.rfind("\n", max(0, lo_raw - PARSE_MARGIN), lo_raw)
    if j >= 0:
        lo, lo_line = j + 1, True
    elif lo_raw - PARSE_MARGIN <= 0:
        lo, lo_line = 0, True
    else:
        lo, lo_line = lo_raw, False  # a single huge line: cut inside it
    hi_raw = min(n, offset + after)
    k = text.find("\n", hi_raw, hi_raw + PARSE_MARGIN)
    hi = k + 1 if k >= 0 else (n if n - hi_raw <= PARSE_MARGIN else hi_raw)
    return Lines(line_starts(text, lo, max(hi, offset)), lo_line)


class TokenCost:
    """Memoised ``count_tokens(text[a:b])``."""

    def __init__(self, text: str, count_tokens: Callable[[str], int]) -> None:
        self.text = text
        self.count_tokens = count_tokens
        self.memo: dict[tuple[int, int], int] = {}

    def __call__(self, a: int, b: int) -> int:
        key = (a, b)
        if key not in self.memo:
            self.memo[key] = self.count_tokens(self.text[a:b]) if b > a else 0
        return self.memo[key]


def _fit(spans: Sequence[int], measure: Callable[[int], int], limit: int, tol: int) -> int:
    """Largest index i with ``measure(i) <= limit``, or -1; any i within ``tol`` of it will do.

    ``spans`` (ascending) are the candidate lengths in characters and ``measure`` (token count,
    assumed non-decreasing in i) is expensive, so this is an interpolation search on tokens per
    character, with a bisection safeguard: typically 2-4 calls, at worst ~2*log2(len).
    """
    lo, lo_cost, lo_span = -1, 0, 0
    hi, hi_cost, hi_span = len(spans), -1, 0
    goal = limit - tol / 2
    stalls = 0
    while hi - lo > 1:
        if stalls >= 2:
            mid = (lo + hi) // 2
        else:
            if hi_cost < 0:  # no upper bound measured yet: extrapolate
                chars_per_token = lo_span / lo_cost if lo_cost > 0 else _GUESS_CHARS_PER_TOKEN
                want = goal * chars_per_token
            else:
                want = lo_span + (goal - lo_cost) * (hi_span - lo_span) / max(hi_cost - lo_cost, 1)
            mid = min(max(bisect.bisect_left(spans, want, lo + 1, hi), lo + 1), hi - 1)
        width = hi - lo
        c = measure(mid)
        if c <= limit:
            lo, lo_cost, lo_span = mid, c, spans[mid]
            if c >= limit - tol:
                break
        else:
            hi, hi_cost, hi_span = mid, c, spans[mid]
        stalls = stalls + 1 if 2 * (hi - lo) > width else 0
    return lo


def choose_start(
    text: str, offset: int, budget: int, cost: TokenCost, lines: Lines, anchor: int | None
) -> tuple[int, bool]:
    """The prefix window start (module docstring) and whether a syntactic nudge may move it."""
    if budget <= 0 or offset == 0:
        return offset, False
    cap = budget * MAX_CHARS_PER_TOKEN
    starts = lines.starts
    cur_i = bisect.bisect_right(starts, offset) - 1
    cur_line = starts[cur_i] if (cur_i > 0 or lines.lo_is_line_start) else None

    def line_fits() -> bool:
        return (
            cur_line is not None and offset - cur_line <= cap and cost(cur_line, offset) <= budget
        )

    if anchor is not None and 0 <= anchor <= offset and offset - anchor <= cap:
        at_line_start = anchor == 0 or text[anchor - 1] == "\n"
        # A mid-line anchor can only come from a char-level cut in an overflowing cursor line.
        in_cursor_line = not at_line_start and text.find("\n", anchor, offset) < 0
        usable = at_line_start or (in_cursor_line and not line_fits())
        if (
            usable
            and cost(anchor, offset) <= budget
            and (anchor == 0 or cost(anchor, offset) >= budget * SHORT_ANCHOR)
        ):
            return anchor, False

    if offset <= cap and cost(0, offset) <= budget:
        return 0, False

    target = max(1, int(budget * HEADROOM))
    tol = budget // 16
    tcap = int(cap * HEADROOM)
    first = bisect.bisect_left(starts, offset - tcap)
    if first == 0 and not lines.lo_is_line_start:
        first = 1
    cands = starts[first : cur_i + 1][::-1]  # nearest first: cost grows with the index
    spans = [offset - s for s in cands]
    i = _fit(spans, lambda i: cost(cands[i], offset), target, tol)
    if i >= 0 and cands[i] < offset:
        return cands[i], True
    if line_fits():
        assert cur_line is not None
        return cur_line, False
    # A single line longer than the budget: cut inside it.
    lo = max(cur_line if cur_line is not None else starts[0], offset - tcap)
    chars = range(offset - lo + 1)
    p = offset - max(0, _fit(chars, lambda i: cost(offset - i, offset), target, tol))
    while splits_cluster(text, p) and p < offset:
        p += 1
    return p, False


def choose_end(
    text: str, offset: int, budget: int, cost: TokenCost, lines: Lines, anchor: int | None = None
) -> tuple[int, bool]:
    """The suffix window end (after a complete line) and whether a syntactic nudge may move it.

    ``anchor`` is the previous request's end (in this text): kept, like the start's anchor,
    while it is a line start after the cursor and the suffix up to it fits the budget without
    being very short, so a cursor moving down or up within the window changes the suffix at
    its start only (what the lines passed over cost), not at both ends."""
    n = len(text)
    if budget <= 0 or offset == n:
        return offset, False
    cap = budget * MAX_CHARS_PER_TOKEN
    if (
        anchor is not None
        and offset < anchor <= n
        and anchor - offset <= cap
        and (anchor == n or text[anchor - 1] == "\n")
        and cost(offset, anchor) <= budget
        and (anchor == n or cost(offset, anchor) >= budget * SHORT_ANCHOR)
    ):
        return anchor, False
    if n - offset <= cap and cost(offset, n) <= budget:
        return n, False
    tol = budget // 16
    starts = lines.starts
    cands = starts[bisect.bisect_right(starts, offset) : bisect.bisect_right(starts, offset + cap)]
    spans = [e - offset for e in cands]
    i = _fit(spans, lambda i: cost(offset, cands[i]), budget, tol)
    if i >= 0:
        return cands[i], True
    # The rest of the cursor line alone overflows: cut inside it.
    nl = text.find("\n", offset, offset + cap)
    top = nl if nl >= 0 else min(n, offset + cap)
    chars = range(top - offset + 1)
    p = offset + max(0, _fit(chars, lambda i: cost(offset, offset + i), budget, tol))
    while splits_cluster(text, p) and p > offset:
        p -= 1
    return p, False
