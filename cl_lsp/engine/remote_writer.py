"""Code actions on an inference server: the server's chat endpoint writes the answer, with
the instruct model's own chat template (`wire.chat_body`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ..config import ActionSettings
from . import wire
from .chat import render_chat
from .endpoint import Endpoint, EngineUnavailable, http_error, transport_error
from .interface import Written
from .tokenizer import ApproximateTokenizer

WRITER_SEED = 1234


class WriterHost(Protocol):
    """What `RemoteWriter` needs of the engine it writes for: its vocabulary (for budgets),
    the count of answers started, and its health bookkeeping."""

    vocab: Any
    actions_started: int

    def failed(self, message: str) -> EngineUnavailable:
        """Note a fault (health, backoff, telling the user once); the error to raise."""
        ...

    def worked(self) -> None: ...


@dataclass(frozen=True)
class ChatPrompt:
    """A code action's prompt for a server's chat endpoint (it applies the model's own chat
    template); `len()` is its approximate size in tokens."""

    system: str
    user: str
    tokens: int

    def __len__(self) -> int:
        return self.tokens


class RemoteWriter:
    """`Writer` on a server's chat endpoint, run on a worker thread (the jobs are blocking):
    a blocking client streams the answer, checking the cancel flag at every piece."""

    def __init__(
        self,
        engine: WriterHost,
        endpoint: Endpoint,
        settings: ActionSettings,
        cancel: threading.Event,
    ) -> None:
        self._engine, self._endpoint = engine, endpoint
        self.n_ctx, self.max_tokens = settings.n_ctx, settings.max_tokens
        self.temperature, self.cancel = settings.temperature, cancel
        self._format = wire.FORMATS[endpoint.kind]

    def count(self, text: str) -> int:
        vocab = self._engine.vocab
        return vocab.count(text) if vocab is not None else ApproximateTokenizer().count(text)

    def prompt(self, system: str, user: str) -> ChatPrompt:  # type: ignore[override]
        return ChatPrompt(system, user, self.count(system) + self.count(user) + 16)

    def text_of(self, tokens: Any) -> str:
        if isinstance(tokens, ChatPrompt):
            return "".join(piece.text for piece in render_chat(tokens.system, tokens.user, None))
        return ""

    def generate(self, tokens: Any, *, on_text: Callable[[str], None] | None = None) -> Written:
        assert isinstance(tokens, ChatPrompt)
        started = time.perf_counter()
        body = wire.chat_body(
            self._endpoint.kind,
            tokens.system,
            tokens.user,
            max_tokens=min(self.max_tokens, max(16, self.n_ctx - len(tokens))),
            temperature=self.temperature,
            model=self._endpoint.model,
            seed=WRITER_SEED,
        )
        self._engine.actions_started += 1
        text, generated, reason = "", 0, "eos"
        engine = self._engine
        try:
            with (
                httpx.Client(
                    timeout=self._endpoint.timeout, verify=self._endpoint.verify_tls
                ) as client,
                client.stream(
                    "POST",
                    self._endpoint.url + self._format.chat_path,
                    json=body,
                    headers=self._endpoint.headers(),
                ) as response,
            ):
                if response.status_code >= 400:
                    raise http_error(self._endpoint, response.status_code, response.read())
                for piece in self._pieces(response):
                    if self.cancel.is_set():
                        return Written(text, len(tokens), generated, "cancelled", _since(started))
                    if piece.error:
                        raise EngineUnavailable(f"{self._endpoint.name} failed: {piece.error}")
                    if piece.text:
                        generated += 1
                        text += piece.text
                        if on_text is not None:
                            on_text(text)
                    if piece.stop_reason:
                        reason = "max_tokens" if piece.stop_reason == "max_tokens" else "eos"
                    if piece.done:
                        break
        except EngineUnavailable as error:
            raise engine.failed(str(error)) from error
        except wire.WireError as error:
            raise engine.failed(f"{self._endpoint.name}: {error}") from error
        except httpx.HTTPError as error:
            raise engine.failed(transport_error(self._endpoint, error)) from error
        engine.worked()
        return Written(text, len(tokens), generated, reason, _since(started))

    def _pieces(self, response: httpx.Response) -> Iterator[wire.Piece]:
        framing, kind = self._format.framing, self._endpoint.kind
        for line in response.iter_lines():
            if self.cancel.is_set():
                return
            if framing == "sse" and wire.is_done_marker(line):
                return
            payload = wire.stream_payload(framing, line)
            if payload is not None:
                yield wire.parse_chat(kind, payload)


def _since(started: float) -> float:
    return time.perf_counter() - started
