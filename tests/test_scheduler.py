"""Debounce timing: the fixed wait and the one fitted to the typing pace."""

from __future__ import annotations

import asyncio

import pytest

from cl_lsp.completion.scheduler import PACE_BOUNDS, PACE_FACTOR, Scheduler, TypingPace


def pace_after(gaps: list[float]) -> TypingPace:
    pace, now = TypingPace(), 100.0
    pace.request(now)
    for gap in gaps:
        now += gap
        pace.request(now)
    return pace


def test_the_fixed_debounce_holds_until_a_few_keystrokes_were_seen():
    assert pace_after([]).debounce(0.15) == 0.15
    assert pace_after([0.05, 0.05, 0.05]).debounce(0.15) == 0.15


@pytest.mark.parametrize(
    ("gaps", "expected"),
    [
        # Three of four gaps within 0.2 s: wait 1.5 x 0.2 s.
        ([0.1, 0.2, 0.15, 0.2, 0.12, 0.9, 0.18, 0.16], PACE_FACTOR * 0.2),
        ([0.02] * 10, PACE_BOUNDS[0]),  # very fast typing: the floor
        ([0.9] * 10, PACE_BOUNDS[1]),  # very slow typing: the ceiling
    ],
)
def test_the_adaptive_debounce_outlasts_most_gaps(gaps, expected):
    assert pace_after(gaps).debounce(0.15) == pytest.approx(expected)


def test_pauses_do_not_count_as_typing_pace():
    pace = pace_after([0.08] * 6 + [5.0, 30.0] + [0.08] * 2)
    assert pace.debounce(0.15) == pytest.approx(PACE_FACTOR * 0.08)


async def test_the_scheduler_applies_the_pace_only_when_adaptive():
    scheduler = Scheduler()
    for _ in range(8):
        scheduler.take("file:///a.py")
        await asyncio.sleep(0.01)
    assert scheduler.debounce_seconds("file:///a.py", 0.15, adaptive=False) == 0.15
    assert scheduler.debounce_seconds("file:///a.py", 0.15, adaptive=True) == PACE_BOUNDS[0]
    assert scheduler.debounce_seconds("file:///new.py", 0.15, adaptive=True) == 0.15
    scheduler.forget("file:///a.py")
    assert scheduler.debounce_seconds("file:///a.py", 0.15, adaptive=True) == 0.15
