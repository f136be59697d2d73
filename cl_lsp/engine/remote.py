"""Engines on inference servers: llama.cpp's llama-server, OpenAI-compatible servers (vLLM,
SGLang, TGI, LM Studio) and Ollama, over HTTP.

The completion pipeline is the local engine's: prompts are built token for token with the
model's own vocabulary (a local GGUF read for its vocabulary only, else the server's
``/tokenize``: `server_vocab.py`) and sent as token ids where the server takes them, else as
Code Llama's text template. Tokens are read as they stream (`wire.py` holds the formats), so
the same stop rules end a generation early, and closing the stream is how a superseded request
stops costing the server. Faults become one `EngineUnavailable` with a message for a person
(`endpoint.py`); `health.py` keeps the server's state and the backoff. Code actions go to the
server's chat endpoint (`remote_writer.py`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..config import (
    ActionSettings,
    EngineKind,
    ModelSettings,
    PromptForm,
)
from . import wire
from .endpoint import Endpoint, EngineUnavailable, http_error, transport_error
from .health import Health
from .interface import (
    EngineCounters,
    EngineError,
    EngineState,
    Generation,
    GenerationRequest,
    Writer,
    stop_after_piece,
)
from .remote_writer import RemoteWriter
from .server_vocab import ServerTokenizer
from .tokenizer import ApproximateTokenizer, Vocabulary

log = logging.getLogger(__name__)
T = TypeVar("T")

CANCEL_POLL_SECONDS = 0.005  # a superseded request's stream is closed within this (plus I/O)


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
    warms = False  # the server's own cache (cache_prompt): nothing is evaluated ahead

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
                else ApproximateTokenizer(self.endpoint.model or "")
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
            tokenizer = await asyncio.to_thread(
                ServerTokenizer, self._probe_tokenize, self.endpoint.model or ""
            )
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
            raise (EngineUnavailable(message) if probing else self.failed(message)) from error
        if self.health.state != "ok" and not probing:
            self.worked()
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
            self.failed(str(error))
        except httpx.HTTPError as error:
            self.failed(self._transport_error(error))
        else:
            self.worked()

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

    def failed(self, message: str) -> EngineUnavailable:
        news = self.health.failed(message)
        # The user is told through `on_health` (the server's popup, which logs it too).
        log.info("%s", message)
        if news and self.on_health is not None:
            self.on_health(message, True)
        return EngineUnavailable(message, news=news)

    def worked(self) -> None:
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
            raise self.failed(str(error)) from error
        except BaseException:
            self.health.settle()  # cancelled: the trial request (if it was one) is over
            raise
        if generation.stop_reason == "cancelled":
            self.health.settle()  # no verdict on the server
        else:
            self.worked()
            await self._try_server_tokenizer()  # if the server was down at load
        return generation

    async def warm(self, request: GenerationRequest) -> int:
        """The server keeps its own cache (cachePrompt); nothing is evaluated ahead here."""
        return 0

    def held_tokens(self) -> tuple[int, ...]:
        return ()

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
            cache_reuse=request.reuse_min_run,
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
            stream.pieces,
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
