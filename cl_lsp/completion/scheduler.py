"""Per-document debounce and newest-request-wins.

Every completion request for a document takes a `Ticket`. Taking a ticket supersedes the
document's previous one: a request still waiting out its debounce wakes up at once and is
answered empty, and a generation already running sees its cancel flag and stops within one
token (or one prompt chunk). Nothing is left unanswered: a superseded request simply returns.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field

# Adaptive debounce (see `TypingPace`).
PAUSE_SECONDS = 1.0  # a longer gap between requests is a pause, not the typing pace
PACE_SAMPLES = 20  # gaps remembered per document
PACE_MIN_SAMPLES = 4  # fewer than this: the fixed debounce
PACE_FACTOR = 1.5
PACE_BOUNDS = (0.1, 1.0)  # seconds; tabby-agent clamps its adaptive delay to the same range


@dataclass
class Ticket:
    uri: str
    number: int
    cancel: threading.Event = field(default_factory=threading.Event)  # read by the engine
    _woken: asyncio.Event = field(default_factory=asyncio.Event)  # superseded
    _waited: asyncio.Event = field(default_factory=asyncio.Event)  # the debounce may end
    superseded_at: float | None = None

    @property
    def superseded(self) -> bool:
        return self.cancel.is_set()

    async def superseded_wait(self) -> None:
        """Return once a newer request (or a change to the document) supersedes this one."""
        await self._woken.wait()

    def supersede(self, now: float) -> None:
        if not self.cancel.is_set():
            self.superseded_at = now
        self.cancel.set()
        self._woken.set()
        self._waited.set()

    def end_debounce(self) -> None:
        """Let the request go on before its debounce ends (nothing is left to wait for)."""
        self._waited.set()


class TypingPace:
    """How fast requests for one document follow each other while the user types.

    The debounce should outlast the gap to the next keystroke while a burst goes on, and no
    more: the wait is PACE_FACTOR times the gap that 3 of 4 recent keystrokes beat.
    """

    def __init__(self) -> None:
        self._gaps: deque[float] = deque(maxlen=PACE_SAMPLES)
        self._last: float | None = None

    def request(self, now: float) -> None:
        if self._last is not None and 0 <= now - self._last < PAUSE_SECONDS:
            self._gaps.append(now - self._last)
        self._last = now

    def debounce(self, fixed: float) -> float:
        if len(self._gaps) < PACE_MIN_SAMPLES:
            return fixed
        gaps = sorted(self._gaps)
        typical = gaps[(3 * (len(gaps) - 1)) // 4]
        low, high = PACE_BOUNDS
        return min(high, max(low, PACE_FACTOR * typical))


class Scheduler:
    def __init__(self) -> None:
        self._latest: dict[str, Ticket] = {}
        self._numbers = itertools.count(1)
        self._pace: dict[str, TypingPace] = {}

    def take(self, uri: str) -> Ticket:
        """A ticket for a new request; the document's previous request is superseded."""
        ticket = Ticket(uri, next(self._numbers))
        self.cancel(uri)
        self._latest[uri] = ticket
        self._pace.setdefault(uri, TypingPace()).request(asyncio.get_running_loop().time())
        return ticket

    def debounce_seconds(self, uri: str, fixed: float, *, adaptive: bool) -> float:
        """The wait for `uri`'s newest request: `fixed`, or fitted to the typing pace."""
        pace = self._pace.get(uri)
        return pace.debounce(fixed) if adaptive and pace is not None else fixed

    def forget(self, uri: str) -> None:
        self.cancel(uri)
        self._pace.pop(uri, None)

    def cancel(self, uri: str) -> None:
        """Supersede whatever runs or waits for `uri` (the document changed or closed)."""
        if (previous := self._latest.pop(uri, None)) is not None:
            previous.supersede(asyncio.get_running_loop().time())

    def release(self, ticket: Ticket) -> None:
        if self._latest.get(ticket.uri) is ticket:
            del self._latest[ticket.uri]

    async def debounce(self, ticket: Ticket, seconds: float) -> bool:
        """Wait `seconds` unless superseded (or `end_debounce`) first; True if the request
        should go on."""
        if seconds > 0 and not ticket.superseded:
            try:
                await asyncio.wait_for(ticket._waited.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        return not ticket.superseded

    def cancel_all(self) -> None:
        for uri in list(self._latest):
            self.cancel(uri)
