"""Engines on inference servers: llama.cpp's llama-server, OpenAI-compatible servers (vLLM,
SGLang, TGI, LM Studio) and Ollama, over HTTP (`wire.py` holds the formats).

The completion pipeline is the same as with the local engine: the prompt is built here, token
for token, with the model's own vocabulary (a local GGUF read for its vocabulary only) and sent
as token ids where the server takes them, else as Code Llama's text template. Tokens are read
as they stream, so the same stop rules end a generation early, and closing the stream is how a
superseded request stops costing the server: at most one generation per document is in flight.

Faults become one `EngineUnavailable` with a message for a person. After a failure to reach or
use the server, requests fail at once (no request storm) until a backoff delay has passed, then
one request tries again; `Health` keeps the state for `cl-lsp.status` and says when the user
should be told (when the server goes down, and when it is back).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..config import (
    ActionEngineSettings,
    ActionSettings,
    EngineKind,
    EngineSettings,
    ModelSettings,
    PromptForm,
)
from . import wire
from .chat import render_chat
from .interface import (
    EngineCounters,
    EngineError,
    EngineState,
    Generation,
    GenerationRequest,
    Writer,
    Written,
    stop_after_piece,
)
from .server_vocab import ServerTokenizer
from .tokenizer import ApproximateTokenizer, Vocabulary

log = logging.getLogger(__name__)
T = TypeVar("T")

CANCEL_POLL_SECONDS = 0.005  # a superseded request's stream is closed within this (plus I/O)
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
WRITER_SEED = 1234
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


@dataclass
class ServerCounters:
    """What the server says it did, summed over the generations."""

    prompt_tokens: int = 0  # prompt tokens the server reported receiving
    evaluated_tokens: int = 0  # of them, evaluated (not taken from its cache)
    streams_closed: int = 0  # generations ended by closing the stream (superseded, stop rules)
    token_prompts: int = 0  # prompts sent as token ids
    text_prompts: int = 0  # prompts sent as text

    def as_dict(self) -> dict[str, int]:
        return {
            "promptTokens": self.prompt_tokens,
            "evaluatedTokens": self.evaluated_tokens,
            "cachedTokens": self.prompt_tokens - self.evaluated_tokens,
            "streamsClosed": self.streams_closed,
            "tokenPrompts": self.token_prompts,
            "textPrompts": self.text_prompts,
        }


@dataclass
class _Stream:
    """One generation's progress while its stream is read."""

    request: GenerationRequest
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    pieces: int = 0
    reason: str | None = None
    prompt_tokens: int | None = None
    evaluated_tokens: int | None = None
    closed_early: bool = False  # a stop rule ended it before the server's last word


class RemoteEngine:
    """`Engine` on an inference server (see the module docstring)."""

    heals = False  # no server constrains the answer's start: the partial word stays in the prompt

    def __init__(self, endpoint: Endpoint, actions: Endpoint | None = None) -> None:
        self.endpoint = endpoint
        self.actions_endpoint = actions or endpoint
        self.format = wire.FORMATS[endpoint.kind]
        self.vocab: Vocabulary | ServerTokenizer | ApproximateTokenizer | None = None
        self.state = EngineState.EMPTY
        self.error: str | None = None
        self.model_path: Path | None = None  # the vocabulary's GGUF, if any
        self.n_ctx = 0
        self.counters = EngineCounters()
        self.server = ServerCounters()
        self.health = Health()
        self.busy = threading.Event()
        self.prefill_rate: float | None = None
        self.actions_started = 0
        self.slot: int | None = None  # llama-server: this session's slot
        self.ids_refused = False  # the server refused a token-id prompt: text from now on
        self.in_flight = 0
        self.max_in_flight = 0  # most generations streaming at once
        self.on_health: Callable[[str, bool], None] | None = None  # (message, is_error)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sync_client: httpx.Client | None = None  # the planner thread's (tokenizing)
        self._tokenizer_wanted = False  # no local vocabulary: try the server's tokenizer

    # -- setting up --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    def _http(self) -> httpx.AsyncClient:
        """One pooled client per event loop (the CLI runs one, the server one)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            timeout = httpx.Timeout(self.endpoint.timeout, connect=min(5.0, self.endpoint.timeout))
            self._client = httpx.AsyncClient(
                timeout=timeout,
                verify=self.endpoint.verify_tls,
                limits=httpx.Limits(max_keepalive_connections=8, max_connections=32),
            )
            self._client_loop = loop
        return self._client

    async def load(self, path: Path | None, settings: ModelSettings) -> None:
        """Read the vocabulary (a local GGUF's, without weights) and ask the server how it
        is; an unreachable server is reported, and tried again at the first request."""
        self.state = EngineState.LOADING
        try:
            self.vocab = (
                await asyncio.to_thread(Vocabulary, path)
                if path is not None
                else ApproximateTokenizer()
            )
        except Exception as error:
            self.state = EngineState.FAILED
            self.error = (
                f"could not read the vocabulary of {path}: {error}. model.path should name the "
                "GGUF file the server runs (only its vocabulary is read)"
            )
            raise EngineError(self.error) from error
        self.model_path, self.n_ctx = path, settings.n_ctx
        await self._probe()
        self._tokenizer_wanted = path is None
        if self.health.state == "ok":
            await self._try_server_tokenizer()
        if self.endpoint.prompt is PromptForm.TOKENS and not self._sends_tokens():
            self.state = EngineState.FAILED
            self.error = (
                'engine.prompt is "tokens" but there is no vocabulary: set model.path to the '
                "GGUF file the server runs (only its vocabulary is read), or use a server "
                "with a /tokenize endpoint (llama-server, vLLM)"
            )
            raise EngineError(self.error)
        self.state, self.error = EngineState.READY, None
        log.info(
            "engine %s: prompts as %s, vocabulary %s",
            self.endpoint.name,
            "token ids" if self._sends_tokens() else "text",  # as far as is known yet
            path or ("the server's" if isinstance(self.vocab, ServerTokenizer) else "none"),
        )

    async def _try_server_tokenizer(self) -> None:
        """Without a local vocabulary, use the server's tokenizer if it has one (once: at
        load, or at the first answer if the server was down then)."""
        if not self._tokenizer_wanted:
            return
        self._tokenizer_wanted = False
        if self.endpoint.prompt is PromptForm.TEXT or not self.format.takes_tokens:
            return
        try:
            tokenizer = await asyncio.to_thread(ServerTokenizer, self._probe_tokenize)
        except EngineError as error:
            log.info(
                "%s: no tokenizer endpoint (%s); prompts go as text", self.endpoint.name, error
            )
            return
        self.vocab = tokenizer
        log.info("%s: prompts as token ids from the server's tokenizer", self.endpoint.name)

    def _probe_tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        """`tokenize_blocking` while finding out whether there is a tokenizer at all: a
        missing endpoint is no fault of the server's."""
        return self.tokenize_blocking(text, add_bos, parse_special, probing=True)

    def tokenize_blocking(
        self, text: str, add_bos: bool, parse_special: bool, *, probing: bool = False
    ) -> list[int]:
        """The server's ids for `text` (llama-server's and vLLM's ``/tokenize``); for the
        planner thread. Faults count towards the server's health like a generation's."""
        if not probing:
            self.health.check()
        endpoint = self.endpoint
        if endpoint.kind is EngineKind.LLAMA_SERVER:
            url = endpoint.url + "/tokenize"
            body: dict[str, Any] = {
                "content": text,
                "add_special": add_bos,
                "parse_special": parse_special,
            }
        else:  # vLLM and SGLang serve it beside /v1, not under it
            url = endpoint.url.removesuffix("/v1") + "/tokenize"
            body = {"prompt": text, "add_special_tokens": add_bos}
            if endpoint.model:
                body["model"] = endpoint.model
        if self._sync_client is None:
            self._sync_client = httpx.Client(timeout=endpoint.timeout, verify=endpoint.verify_tls)
        try:
            response = self._sync_client.post(url, json=body, headers=endpoint.headers())
            if response.status_code >= 400:
                raise http_error(endpoint, response.status_code, response.content)
            tokens = response.json()["tokens"]
            if not all(isinstance(token, int) for token in tokens):
                raise ValueError(tokens)
        except (EngineUnavailable, httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            if isinstance(error, EngineUnavailable):
                message = str(error)
            elif isinstance(error, httpx.HTTPError):
                message = transport_error(endpoint, error)
            else:
                message = f"{endpoint.name}: /tokenize answered something unexpected"
            raise (EngineUnavailable(message) if probing else self._failed(message)) from error
        if self.health.state != "ok" and not probing:
            self._worked()
        return tokens

    async def _probe(self) -> None:
        """Ask the server whether it is up (and, for llama-server, how many slots it has)."""
        try:
            response = await self._http().get(
                self.endpoint.url + self.format.health_path, headers=self.endpoint.headers()
            )
            if response.status_code >= 400:
                raise self._http_error(response.status_code, response.content)
            if self.endpoint.kind is EngineKind.LLAMA_SERVER:
                self.slot = await self._pick_slot()
        except EngineUnavailable as error:
            self._failed(str(error))
        except httpx.HTTPError as error:
            self._failed(self._transport_error(error))
        else:
            self._worked()

    async def _pick_slot(self) -> int | None:
        """A stable slot for this editor session: its own KV cache on a shared server."""
        try:
            response = await self._http().get(
                self.endpoint.url + "/props", headers=self.endpoint.headers()
            )
            slots = response.json().get("total_slots")
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return os.getpid() % slots if isinstance(slots, int) and slots > 0 else None

    def no_model(self, message: str) -> None:
        self.state, self.error = EngineState.EMPTY, message

    def model_file_changed(self) -> bool:
        return False  # only the vocabulary is read, once, into memory

    def _sends_tokens(self) -> bool:
        if self.endpoint.prompt is PromptForm.TEXT or not self.format.takes_tokens:
            return False
        if not isinstance(self.vocab, (Vocabulary, ServerTokenizer)):
            return False
        return self.endpoint.prompt is PromptForm.TOKENS or not self.ids_refused

    # -- health ------------------------------------------------------------------------------

    def _failed(self, message: str) -> EngineUnavailable:
        news = self.health.failed(message)
        # The user is told through `on_health` (the server's popup, which logs it too).
        log.info("%s", message)
        if news and self.on_health is not None:
            self.on_health(message, True)
        return EngineUnavailable(message, news=news)

    def _worked(self) -> None:
        if self.health.worked():
            message = f"{self.endpoint.name} answers again"
            log.info("%s", message)
            if self.on_health is not None:
                self.on_health(message, False)

    def _transport_error(self, error: httpx.HTTPError) -> str:
        return transport_error(self.endpoint, error)

    def _http_error(self, status: int, body: bytes) -> EngineUnavailable:
        return http_error(self.endpoint, status, body)

    # -- completions -------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        """Stream one completion; a set cancel flag (or cancelling the awaiting task) closes
        the stream within CANCEL_POLL_SECONDS."""
        started = time.perf_counter()
        if request.cancel.is_set():
            return self._generation(_Stream(request), "cancelled", started)
        self.health.check()
        sends_tokens = self._sends_tokens()
        try:
            try:
                generation = await self._generate(request, started, sends_tokens)
            except EngineUnavailable as error:
                if not (sends_tokens and self._refused_token_ids(error)):
                    raise
                self.ids_refused = True
                log.warning(
                    "%s does not take prompts as token ids (%s); sending text from now on",
                    self.endpoint.name,
                    error,
                )
                generation = await self._generate(request, started, False)
        except EngineUnavailable as error:
            raise self._failed(str(error)) from error
        except BaseException:
            self.health.settle()  # cancelled: the trial request (if it was one) is over
            raise
        if generation.stop_reason == "cancelled":
            self.health.settle()  # no verdict on the server
        else:
            self._worked()
            await self._try_server_tokenizer()  # if the server was down at load
        return generation

    def _refused_token_ids(self, error: EngineUnavailable) -> bool:
        """An OpenAI-compatible server that validates `prompt` as text only (llama-cpp-python's,
        LM Studio's) answers a token-id prompt with a validation error naming the prompt."""
        if self.endpoint.kind is not EngineKind.OPENAI or self.endpoint.prompt is PromptForm.TOKENS:
            return False
        text = f"{error} {error.detail}".lower()
        return "prompt" in text and ("http 4" in text or "http 500" in text)

    async def _generate(
        self, request: GenerationRequest, started: float, sends_tokens: bool
    ) -> Generation:
        prompt: list[int] | str = list(request.tokens) if sends_tokens else request.text
        if sends_tokens:
            self.server.token_prompts += 1
        else:
            self.server.text_prompts += 1
        body = wire.completion_body(
            self.endpoint.kind,
            prompt,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stop=["\n"] if request.stop_at_newline else [],
            model=self.endpoint.model,
            slot=self.slot,
            cache_prompt=self.endpoint.cache_prompt,
        )
        stream = _Stream(request)
        self.counters.generations_started += 1
        self.counters.prompt_tokens += len(request.tokens)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.busy.set()
        reading = asyncio.ensure_future(self._read(self.format.completion_path, body, stream))
        try:
            cancelled = await _until_cancelled(reading, request.cancel)
        except asyncio.CancelledError:
            request.cancel.set()
            reading.cancel()
            self.server.streams_closed += 1
            raise
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.busy.clear()
        if cancelled:
            self.server.streams_closed += 1
            self.counters.generations_cancelled += 1
            return self._generation(stream, "cancelled", started)
        reason = reading.result()
        if stream.closed_early:
            self.server.streams_closed += 1
        return self._generation(stream, reason, started)

    async def _read(self, path: str, body: dict[str, Any], stream: _Stream) -> str:
        """Send the request and read its stream until a stop rule or the server ends it;
        the stop reason. Faults raise EngineUnavailable."""
        request = stream.request
        deadline = (time.monotonic() + request.max_seconds) if request.max_seconds else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            async with self._http().stream(
                "POST", self.endpoint.url + path, json=body, headers=self.endpoint.headers()
            ) as response:
                if response.status_code >= 400:
                    raise self._http_error(response.status_code, await response.aread())
                async for piece in self._pieces(response, chat=False):
                    if piece.error:
                        if piece.error == "context_full":
                            stream.text += piece.text
                            return "context_full"
                        raise EngineUnavailable(f"{self.endpoint.name} failed: {piece.error}")
                    stream.pieces += 1
                    stream.tokens.extend(piece.tokens)
                    if piece.text:
                        stream.text += piece.text
                        if (stop := stop_after_piece(request, stream.text, piece.text)) is not None:
                            stream.text, stream.reason = stop
                            stream.closed_early = True
                            return stop[1]
                    if piece.prompt_tokens is not None:
                        stream.prompt_tokens = piece.prompt_tokens
                        stream.evaluated_tokens = piece.evaluated_tokens
                    if piece.stop_reason:
                        stream.reason = piece.stop_reason
                    if piece.done:
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        stream.closed_early = True
                        return "timeout"
                else:
                    if stream.reason is None:  # ended without the server's last word
                        raise EngineUnavailable(
                            f"{self.endpoint.name} ended the answer before it was complete "
                            "(truncated stream)"
                        )
        except wire.WireError as error:
            raise EngineUnavailable(f"{self.endpoint.name}: {error}") from error
        except httpx.HTTPError as error:
            raise EngineUnavailable(self._transport_error(error)) from error
        stream.text += decoder.decode(b"", final=True)
        reason = stream.reason or "eot"
        if reason == "stop":  # a stop string: ours is the newline
            reason = "newline" if request.stop_at_newline else "eot"
        return reason

    async def _pieces(self, response: httpx.Response, *, chat: bool) -> AsyncIterator[wire.Piece]:
        framing, kind = self.format.framing, self.endpoint.kind
        parse = wire.parse_chat if chat else wire.parse_completion
        async for line in response.aiter_lines():
            if framing == "sse" and wire.is_done_marker(line):
                return
            payload = wire.stream_payload(framing, line)
            if payload is not None:
                yield parse(kind, payload)

    def _generation(self, stream: _Stream, reason: str, started: float) -> Generation:
        request = stream.request
        evaluated = stream.evaluated_tokens
        if stream.prompt_tokens is not None:
            self.server.prompt_tokens += stream.prompt_tokens
            self.server.evaluated_tokens += evaluated or 0
        generated = tuple(stream.tokens)
        self.counters.generated_tokens += len(generated) or stream.pieces
        self.counters.evaluated_tokens += evaluated or 0
        return Generation(
            stream.text,
            generated,
            len(request.tokens),
            evaluated if evaluated is not None else -1,
            reason,
            time.perf_counter() - started,
            time.monotonic(),
        )

    # -- code actions ------------------------------------------------------------------------

    async def write(
        self, job: Callable[[Writer], T], settings: ActionSettings, cancel: threading.Event
    ) -> T:
        """Run `job` on a thread with a writer that streams from the server's chat endpoint."""
        self.health.check()
        writer = RemoteWriter(self, self.actions_endpoint, settings, cancel)
        try:
            return await asyncio.to_thread(job, writer)
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            self.health.settle()  # a trial that ended without a verdict (cancelled)

    # -- lifetime ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "engine": self.endpoint.kind.value,
            "url": self.endpoint.url,
            "serverModel": self.endpoint.model,
            "model": str(self.model_path) if self.model_path else None,
            "error": self.error or self.health.error,
            "nCtx": self.n_ctx,
            "fim": self.vocab is not None and self.vocab.fim is not None,
            "busy": self.busy.is_set(),
            "inFlight": self.in_flight,
            "maxInFlight": self.max_in_flight,
            "prompt": "tokens" if self._sends_tokens() else "text",
            "slot": self.slot,
            "health": self.health.as_dict(),
            "server": self.server.as_dict(),
            "counters": self.counters.as_dict(),
        }

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                if self._client_loop.is_running():
                    self._client_loop.create_task(client.aclose())
        if self._sync_client is not None:
            self._sync_client.close()
        if isinstance(self.vocab, Vocabulary):
            self.vocab.close()
        self.vocab = None


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


async def _until_cancelled(task: asyncio.Future[Any], cancel: threading.Event) -> bool:
    """Wait for `task`; True (with the task cancelled, its stream closed) if `cancel` is set
    first. The flag is a `threading.Event` set by the scheduler: polled, every few ms."""
    while not task.done():
        if cancel.is_set():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, EngineError):
                await task
            return True
        await asyncio.wait({task}, timeout=CANCEL_POLL_SECONDS)
    return False


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
        engine: RemoteEngine,
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
            raise engine._failed(str(error)) from error
        except wire.WireError as error:
            raise engine._failed(f"{self._endpoint.name}: {error}") from error
        except httpx.HTTPError as error:
            raise engine._failed(transport_error(self._endpoint, error)) from error
        engine._worked()
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
