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
from dataclasses import dataclass, field


@dataclass
class Ticket:
    uri: str
    number: int
    cancel: threading.Event = field(default_factory=threading.Event)  # read by the engine
    _woken: asyncio.Event = field(default_factory=asyncio.Event)
    superseded_at: float | None = None

    @property
    def superseded(self) -> bool:
        return self.cancel.is_set()

    def supersede(self, now: float) -> None:
        if not self.cancel.is_set():
            self.superseded_at = now
        self.cancel.set()
        self._woken.set()


class Scheduler:
    def __init__(self) -> None:
        self._latest: dict[str, Ticket] = {}
        self._numbers = itertools.count(1)

    def take(self, uri: str) -> Ticket:
        """A ticket for a new request; the document's previous request is superseded."""
        ticket = Ticket(uri, next(self._numbers))
        self.cancel(uri)
        self._latest[uri] = ticket
        return ticket

    def cancel(self, uri: str) -> None:
        """Supersede whatever runs or waits for `uri` (the document changed or closed)."""
        if (previous := self._latest.pop(uri, None)) is not None:
            previous.supersede(asyncio.get_running_loop().time())

    def release(self, ticket: Ticket) -> None:
        if self._latest.get(ticket.uri) is ticket:
            del self._latest[ticket.uri]

    async def debounce(self, ticket: Ticket, seconds: float) -> bool:
        """Wait `seconds` unless superseded first; True if the request should go on."""
        if seconds > 0 and not ticket.superseded:
            try:
                await asyncio.wait_for(ticket._woken.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        return not ticket.superseded

    def cancel_all(self) -> None:
        for uri in list(self._latest):
            self.cancel(uri)
