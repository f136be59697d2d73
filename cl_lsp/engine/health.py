"""An inference server's health as the engine sees it: up, or down since a failure, and
when to try it again. Requests fail at once while it is down (no request storm); after a
delay that doubles from BACKOFF_FIRST_SECONDS to BACKOFF_MAX_SECONDS, one request tries again.
The user hears of it once when it goes down and once when it is back."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .endpoint import EngineUnavailable

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


@dataclass
class Health:
    """Whether the server answers, and when to try it again after a failure."""

    state: str = "unknown"  # "unknown", "ok", "down"
    error: str | None = None
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which requests fail at once
    told: bool = False  # the user was told it is down
    last_ok: float | None = None
    trying: bool = False  # while down: one request is trying the server again

    def check(self) -> None:
        """Raise at once while backing off after a failure; once the delay has passed, let
        one request through to try again (the others still fail at once until it is done)."""
        if self.state != "down":
            return
        now = time.monotonic()
        if now < self.retry_at or self.trying:
            wait = max(0.0, self.retry_at - now)
            raise EngineUnavailable(f"{self.error} (trying again in {wait:.1f} s)", news=False)
        self.trying = True

    def settle(self) -> None:
        """The trying request ended without a verdict (cancelled)."""
        self.trying = False

    def failed(self, message: str) -> bool:
        """Note a failure; True if the user should hear of it (the first since it worked)."""
        self.failures += 1
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (self.failures - 1))
        self.state, self.error, self.trying = "down", message, False
        self.retry_at = time.monotonic() + delay
        news = not self.told
        self.told = True
        return news

    def worked(self) -> bool:
        """Note a success; True if the server is back after the user was told it was down."""
        back = self.told
        self.state, self.error, self.failures, self.told = "ok", None, 0, False
        self.trying = False
        self.retry_at, self.last_ok = 0.0, time.monotonic()
        return back

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "error": self.error,
            "failures": self.failures,
            "retryInSeconds": round(max(0.0, self.retry_at - time.monotonic()), 1)
            if self.state == "down"
            else 0.0,
        }
