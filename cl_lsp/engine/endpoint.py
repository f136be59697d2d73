"""Where an inference-server engine sends its requests (`Endpoint`, from the settings), and
what its faults read as: `EngineUnavailable`, with one message for a person that names the
server and the setting to change."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import httpx

from ..config import ActionEngineSettings, EngineKind, EngineSettings, PromptForm
from . import wire
from .interface import EngineError

log = logging.getLogger(__name__)
MESSAGE_DETAIL_CHARS = 240  # of a server's error message, in ours (the log has it whole)


class EngineUnavailable(EngineError):
    """The server could not be reached or used; `news` is True for the failure that should be
    shown to the user (the first since it last worked), False for the ones after it."""

    def __init__(self, message: str, *, news: bool = True, detail: str = "") -> None:
        super().__init__(message)
        self.news = news
        self.detail = detail  # the server's whole error message, if it sent one


@dataclass(frozen=True)
class Endpoint:
    """Where a server engine sends its requests."""

    kind: EngineKind
    url: str
    model: str | None = None
    api_key_env: str | None = None
    timeout: float = 10.0
    verify_tls: bool = True
    prompt: PromptForm = PromptForm.AUTO
    cache_prompt: bool = True
    setting: str = "engine"  # where the user sets it: "engine" or "actions.engine"

    @classmethod
    def for_completions(cls, settings: EngineSettings) -> Endpoint:
        return cls(
            kind=settings.kind,
            url=_base_url(settings.kind, settings.url),
            model=settings.model,
            api_key_env=settings.api_key_env,
            timeout=settings.timeout_ms / 1000,
            verify_tls=settings.verify_tls,
            prompt=settings.prompt,
            cache_prompt=settings.cache_prompt,
        )

    @classmethod
    def for_actions(cls, engine: EngineSettings, actions: ActionEngineSettings) -> Endpoint:
        kind = actions.kind or engine.kind
        same_server = actions.kind is None or actions.kind is engine.kind
        url = actions.url or (engine.url if same_server else None)
        return cls(
            kind=kind,
            url=_base_url(kind, url),
            model=actions.model or engine.model,
            api_key_env=actions.api_key_env or engine.api_key_env,
            timeout=engine.timeout_ms / 1000,
            verify_tls=engine.verify_tls,
            setting="engine" if actions == ActionEngineSettings() else "actions.engine",
        )

    @property
    def name(self) -> str:
        return f"{self.kind.value} at {self.url}"

    def headers(self) -> dict[str, str]:
        """The bearer token, read from the environment at each request (never logged)."""
        if not self.api_key_env:
            return {}
        token = os.environ.get(self.api_key_env)
        if not token:
            raise EngineUnavailable(
                f"engine.apiKeyEnv names {self.api_key_env}, which is not set in cl-lsp's "
                "environment: set it to the server's API key and restart the editor"
            )
        return {"Authorization": f"Bearer {token}"}


DEFAULT_URLS = {
    EngineKind.LLAMA_SERVER: "http://127.0.0.1:8080",
    EngineKind.OPENAI: "http://127.0.0.1:8000/v1",
    EngineKind.OLLAMA: "http://127.0.0.1:11434",
}


def _base_url(kind: EngineKind, url: str | None) -> str:
    return (url or DEFAULT_URLS.get(kind, "")).rstrip("/")


def transport_error(endpoint: Endpoint, error: httpx.HTTPError) -> str:
    """A message for a failure to talk to the server at all."""
    name = endpoint.name
    text = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError) and ("SSL" in text or "certificate" in text.lower()):
        return (
            f"TLS with {name} failed ({text}); fix the server's certificate, or set "
            "engine.verifyTls to false for a server you trust"
        )
    if isinstance(error, httpx.ConnectError):
        return f"cannot reach {name} ({text}): is the server running? (engine.url)"
    if isinstance(error, httpx.TimeoutException):
        return (
            f"{name} did not answer within {endpoint.timeout:g} s "
            "(engine.timeoutMs); is it overloaded?"
        )
    if isinstance(error, httpx.RemoteProtocolError):
        return f"{name} closed the connection before the answer ended ({text})"
    return f"talking to {name} failed: {text}"


def http_error(endpoint: Endpoint, status: int, body: bytes) -> EngineUnavailable:
    """A message for an error answer (4xx/5xx)."""
    name = endpoint.name
    try:
        detail = wire.error_text(json.loads(body))
    except ValueError:
        detail = body[:200].decode("utf-8", errors="replace").strip() or "no details"
    log.debug("%s answered HTTP %d: %s", name, status, detail)
    whole = detail
    detail = (detail.strip().splitlines() or ["no details"])[0][:MESSAGE_DETAIL_CHARS]
    lowered = detail.lower()
    if status in (401, 403):
        where = endpoint.api_key_env
        hint = f"check the key in ${where}" if where else "set engine.apiKeyEnv"
        return EngineUnavailable(f"{name} refused the request (HTTP {status}): {hint}")
    if "context" in lowered and ("exceed" in lowered or "length" in lowered):
        return EngineUnavailable(
            f"the prompt is longer than {name}'s context (HTTP {status}: {detail}); lower "
            "completion.prefixTokens/suffixTokens or start the server with a larger context"
        )
    if status == 404 or ("model" in lowered and "not" in lowered and "found" in lowered):
        setting = f"{endpoint.setting}.model"
        if not endpoint.model:
            return EngineUnavailable(
                f"{name} needs a model name (HTTP {status}: {detail}); set {setting} to "
                "one it serves"
            )
        return EngineUnavailable(
            f"{name} has no model named {endpoint.model!r} (HTTP {status}: {detail}); "
            f"set {setting} to one it serves"
        )
    return EngineUnavailable(f"{name} answered HTTP {status}: {detail}", detail=whole)
