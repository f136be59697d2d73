"""Which parts of the KV cache a new prompt can keep: the plan of a cache reuse.

The cache holds the previous prompt's tokens at positions 0, 1, 2... A new prompt keeps its
common prefix in place. With cache reuse it also keeps later runs of at least `min_run` tokens
that the cache holds elsewhere: when the cursor moves, a FIM prompt's suffix and prefix windows
move by the lines passed over, so most of the window is still in the cache, only at other
positions. Each kept run is shifted to its new position (exact for RoPE: llama.cpp rotates the
cached keys) and only the gaps between runs are evaluated.

This is the technique of llama.cpp's server (`--cache-reuse`), with one difference: there a
run can only move towards the start (text was removed before it), here also towards the end
(text was inserted before it, such as the lines a suffix gains when the cursor moves up).

Shifted entries were computed with other text before them, so the model sees an approximation
of the new prompt; BENCHMARKS.md ("Cache reuse") measures how often that changes an answer.
Pure: `llama.py` carries the plan out on a context.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

CANDIDATES = 8  # cache positions tried for one run start (repeated lines have several)
KEY = 16  # tokens that index a cache position (a run is then extended as far as it matches)


@dataclass(frozen=True)
class Run:
    """`length` cached tokens from position `source` kept at position `target` of the prompt."""

    source: int
    target: int
    length: int

    @property
    def shift(self) -> int:
        return self.target - self.source

    @property
    def end(self) -> int:
        """The first prompt position after the run."""
        return self.target + self.length


@dataclass(frozen=True)
class Reuse:
    """How a prompt of `length` tokens is brought into the cache: the first `kept` tokens stay
    where they are, `runs` are moved, every other position is evaluated."""

    kept: int
    runs: tuple[Run, ...]
    length: int

    @property
    def reused(self) -> int:
        return self.kept + sum(run.length for run in self.runs)

    @property
    def to_evaluate(self) -> int:
        return self.length - self.reused

    def segments(self) -> Iterator[Run | tuple[int, int]]:
        """After the kept prefix, in prompt order: runs to put back and (start, end) spans of
        prompt positions to evaluate."""
        position = self.kept
        for run in self.runs:
            if position < run.target:
                yield (position, run.target)
            yield run
            position = run.end
        if position < self.length:
            yield (position, self.length)


def common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    common = 0
    for old, new in zip(cached, prompt):
        if old != new:
            break
        common += 1
    return common


def plan(cached: Sequence[int], prompt: Sequence[int], *, min_run: int) -> Reuse:
    """The reuse of `cached` for `prompt`: its common prefix, then (if `min_run` > 0) runs of
    at least `min_run` tokens found in the cache in the same order as in the prompt.

    Greedy from the start of the prompt: at each position the cache is searched (after the last
    run taken) for the `min_run` tokens starting there; of the first CANDIDATES places, the one
    whose match runs longest is taken; else the position is evaluated.
    """
    kept = common_prefix(cached, prompt)
    if min_run <= 0 or len(prompt) - kept < min_run or len(cached) - kept < min_run:
        return Reuse(kept, (), len(prompt))
    key = min(min_run, KEY)
    starts: dict[tuple[int, ...], list[int]] = {}
    for source in range(kept, len(cached) - min_run + 1):
        starts.setdefault(tuple(cached[source : source + key]), []).append(source)
    runs: list[Run] = []
    cache_head, position = kept, kept
    while position + min_run <= len(prompt):
        found = starts.get(tuple(prompt[position : position + key]))
        best: Run | None = None
        if found:
            first = bisect.bisect_left(found, cache_head)
            for source in found[first : first + CANDIDATES]:
                length = key
                while (
                    source + length < len(cached)
                    and position + length < len(prompt)
                    and cached[source + length] == prompt[position + length]
                ):
                    length += 1
                if length >= min_run and (best is None or length > best.length):
                    best = Run(source, position, length)
        if best is None:
            position += 1
            continue
        runs.append(best)
        cache_head, position = best.source + best.length, best.end
    return Reuse(kept, tuple(runs), len(prompt))
