"""The model: loaded once, owned by one worker thread, generating with KV-cache reuse.

A `llama_cpp.Llama` is not thread-safe, so every call that touches it runs on the engine's
single worker thread; the event loop only awaits futures. Tokenizing for context budgets and
prompts happens on the caller's thread with a separate vocabulary-only copy of the model
(`Vocabulary`), which shares nothing with the worker.

Generation drives `Llama.generate` token by token: it re-uses the KV cache up to the first
token that differs from the previous prompt, and between tokens we check the request's cancel
flag, the stop tokens (Code Llama's `<EOT>` and EOS, found by id even when the GGUF lacks
`eot_token_id`), the token budget and, for single-line requests, the first newline.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import enum
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import repack
from .config import ActionSettings, ModelSettings, camel, physical_cores
from .prompts import ChatPiece, FimTokens, find_fim_tokens, render_chat

log = logging.getLogger(__name__)
T = TypeVar("T")
# Prompt evaluation cannot be interrupted inside a llama.cpp call, so the prompt goes in chunks
# and the cancel flag is checked between them. The chunk adapts to the measured speed so one
# takes about PREFILL_CHUNK_SECONDS (a cancellation waits at most that long), but never drops
# below PREFILL_MIN_CHUNK: on the 7B-shaped Q4_K model on 2 cores, chunks of 4 or 8 tokens ran
# at 8.5-9.4 tokens/s against 16.8 for 16 and 17.1 for 32 (BENCHMARKS.md).
PREFILL_MIN_CHUNK = 16
PREFILL_FIRST_CHUNK = 32  # before anything is measured
PREFILL_CHUNK_SECONDS = 0.5
native = logging.getLogger("cl_lsp.llama_cpp")


def route_native_logs() -> None:
    """Send llama.cpp's own log lines to Python logging (debug level) instead of stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: Any) -> None:
        native.debug("%s", text.decode("utf-8", errors="replace").rstrip())

    _log_callback = forward  # keep the ctypes callback alive
    llama_cpp.llama_log_set(forward, None)


_log_callback: Any = None


class EngineError(Exception):
    """The model could not be loaded or run; the message is for a person."""


@dataclass(frozen=True)
class FileIdentity:
    """Which file a loaded model maps: if any of this changes on disk, the mapping is stale.

    A model file rewritten in place (a re-download, a truncation) while mapped kills the
    process with SIGBUS on the next page it touches, so the engine compares before every use.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path | str) -> FileIdentity | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ModelFileChanged(EngineError):
    """The model file changed on disk since it was loaded; it was not touched."""


class EngineState(str, enum.Enum):
    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class Vocabulary:
    """The model's tokenizer, usable from any one thread other than the worker."""

    def __init__(self, path: Path) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        route_native_logs()
        # verbose=True: with False, llama-cpp-python points descriptors 1 and 2 at /dev/null
        # while loading, process-wide, which would swallow protocol messages.
        self._model = LlamaModel(path_model=str(path), params=params, verbose=True)
        self.n_vocab = self._model.n_vocab()
        self.bos = self._model.token_bos()
        self.eos = self._model.token_eos()
        self.add_bos = bool(self._model.add_bos_token())
        self.fim: FimTokens | None = find_fim_tokens(
            self.n_vocab, self._model.token_get_text, self.bos if self.bos >= 0 else None
        )
        eot = self._model.token_eot()
        stops = {token for token in (self.eos, eot) if token is not None and token >= 0}
        if self.fim and self.fim.eot is not None:
            stops.add(self.fim.eot)
        self.stop_ids = frozenset(stops)

        self._lines = LineCache(self._tokenize) if self._tokenizes_line_by_line() else None
        self._by_first_char: dict[str, list[tuple[int, str]]] | None = None

    def _tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def encode(self, text: str) -> list[int]:
        """User text to ids: implicit leading space (SentencePiece), no BOS, special=False.

        Exactly what the tokenizer gives for the whole text; computed line by line from a
        cache where that is provably the same (see `LineCache`), so a keystroke costs the
        tokenization of one line, not of the whole context window.
        """
        if self._lines is None:
            return self._tokenize(text)
        return self._lines.encode(text)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def _tokenizes_line_by_line(self) -> bool:
        """True if no token but the newline byte contains a newline, so tokenization never
        crosses one (SentencePiece vocabularies like Llama's), and the line-wise encoding
        matches the whole-text one on a sample with the awkward cases."""
        newline = self._tokenize("\n")
        if newline[-1:] != self._tokenize("☺\n")[-1:]:
            return False
        for token in range(self.n_vocab):
            text = self._model.token_get_text(token)
            if "\n" in text or "\u010a" in text:  # GPT-2 style byte-level BPE spells \n as Ċ
                return False
        cache = LineCache(self._tokenize)
        sample = (
            "\nimport os\n\n\ndef f(x):\n    return x  # é 😀\n\t\tif a:\r\n  b = '\\n'\n"
            "  \n<PRE> ☺ x\n"
        )
        return all(
            cache.encode(part) == self._tokenize(part)
            for part in (sample, sample[1:], sample[5:], "a\n", "\n", "  x\n\n")
        )

    def piece(self, token: int) -> bytes:
        return self._model.detokenize([token])

    def text_of(self, token: int) -> str:
        return self._model.detokenize([token]).decode("utf-8", errors="replace")

    def heal_candidates(self, remaining: str) -> list[int]:
        """Tokens whose text agrees with the start of `remaining`: a prefix of it, or
        `remaining` followed by more."""
        if self._by_first_char is None:
            index: dict[str, list[tuple[int, str]]] = {}
            for token in range(self.n_vocab):
                try:
                    text = self._model.detokenize([token]).decode("utf-8")
                except UnicodeDecodeError:  # a lone byte of a multi-byte character
                    continue
                if text:
                    index.setdefault(text[0], []).append((token, text))
            self._by_first_char = index
        return [
            token
            for token, text in self._by_first_char.get(remaining[:1], ())
            if text.startswith(remaining) or remaining.startswith(text)
        ]

    def close(self) -> None:
        self._model.close()


class _MarkerMerged(Exception):
    pass


class LineCache:
    """Whole-text encoding assembled from cached per-line encodings.

    Valid when no token spans a newline: then `enc(a + "\\n" + b)` is `enc(a + "\\n")`
    followed by the encoding of `b` without SentencePiece's implicit leading space. The first
    line keeps the implicit space; every later line is encoded as `"☺" + line` minus the
    tokens of `"☺"` (Code Llama's own trick for encoding without the leading space).
    """

    LIMIT = 50_000
    BULK = 8  # from this many unseen lines on, one whole-text call beats a call per line

    def __init__(self, tokenize: Callable[[str], list[int]]) -> None:
        self._tokenize = tokenize
        self._marker = tokenize("☺")
        self._newline = tokenize("☺\n")[-1]  # no token but this one holds a newline
        self._first: dict[str, list[int]] = {}
        self._later: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        try:
            return self._encode(text)
        except _MarkerMerged:  # a line whose start merged with "☺": no shortcut for it
            return self._tokenize(text)

    def _encode(self, text: str) -> list[int]:
        lines = text.split("\n")
        last = len(lines) - 1
        if last >= self.BULK and self._mostly_unseen(lines):
            return self._encode_whole(text, lines)
        tokens = self._line(self._first, lines[0] + ("\n" if last else ""), first=True)
        for number, line in enumerate(lines[1:], start=1):
            tokens.extend(
                self._line(self._later, line + ("\n" if number < last else ""), first=False)
            )
        return tokens

    def _mostly_unseen(self, lines: list[str]) -> bool:
        unseen = sum(1 for line in lines[1:-1] if line + "\n" not in self._later)
        return unseen >= self.BULK

    def _encode_whole(self, text: str, lines: list[str]) -> list[int]:
        """Tokenize once and file each line's share in the cache (a window the cache has not
        seen, e.g. the first request at a new spot, costs one call instead of hundreds)."""
        tokens = self._tokenize(text)
        ends = [index + 1 for index, token in enumerate(tokens) if token == self._newline]
        if len(ends) != len(lines) - 1:  # cannot happen if the vocabulary check held
            return tokens
        if len(self._later) > self.LIMIT:
            self._later.clear()
        start = 0
        for number, end in enumerate(ends):
            self._cache_for(number)[lines[number] + "\n"] = tokens[start:end]
            start = end
        return tokens

    def _cache_for(self, number: int) -> dict[str, list[int]]:
        return self._first if number == 0 else self._later

    def _line(self, cache: dict[str, list[int]], line: str, *, first: bool) -> list[int]:
        tokens = cache.get(line)
        if tokens is None:
            if len(cache) > self.LIMIT:
                cache.clear()
            if first:
                tokens = self._tokenize(line)
            elif line:
                marked = self._tokenize("☺" + line)
                if marked[: len(self._marker)] != self._marker:
                    raise _MarkerMerged(line)
                tokens = marked[len(self._marker) :]
            else:
                tokens = []
            cache[line] = tokens
        return list(tokens)


@dataclass(frozen=True)
class GenerationRequest:
    tokens: tuple[int, ...]
    max_tokens: int
    temperature: float = 0.0
    stop_at_newline: bool = False
    heal: str = ""  # the answer must start with this text (token healing); it is stripped
    max_seconds: float | None = None  # wall-clock cap on sampling, after the prompt
    # Called with the text so far at each newline; an index there ends the generation.
    stop_check: Callable[[str], int | None] | None = field(default=None, compare=False)
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


def stop_after_piece(request: GenerationRequest, text: str, piece: str) -> tuple[str, str] | None:
    """The text kept and the stop reason if the generation ends with ``piece`` (the text so
    far ends with it), else None: the newline stop (single-line) and the block-end stop
    (``request.stop_check``) look at each piece that holds a newline. The token cap, the
    deadline and the model's own end tokens are the sampler's. Pure, so a benchmark can feed
    scripted output through the very rules the model's output meets."""
    if "\n" not in piece:
        return None
    if request.stop_at_newline:
        return text, "newline"
    if request.stop_check is not None and (cut := request.stop_check(text)) is not None:
        return text[:cut], "end_of_block"
    return None


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    evaluated_tokens: int  # prompt tokens actually run through the model (not in the KV cache)
    # "eot", "max_tokens", "newline", "end_of_block", "timeout", "cancelled", "context_full"
    stop_reason: str
    seconds: float
    stopped_at: float = 0.0  # time.monotonic() when generation ended


@dataclass
class EngineCounters:
    generations_started: int = 0
    generations_cancelled: int = 0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {camel(name): value for name, value in self.__dict__.items()}


class Engine:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cl-lsp-model")
        self._llm: Any = None
        self.vocab: Vocabulary | None = None
        self.state = EngineState.EMPTY
        self.error: str | None = None
        self.model_path: Path | None = None
        self.model_file: FileIdentity | None = None  # the file as it was when loaded
        self.repack: repack.RepackDecision | None = None
        self.repack_mode = "auto"  # model.repack, for actions.model too
        self.n_ctx = 0
        self.counters = EngineCounters()
        self.busy = threading.Event()  # set while the worker runs a generation
        self.n_batch = 512
        self.prefill_rate: float | None = None  # prompt tokens/s, moving average of chunks
        self.threads = physical_cores()
        # Code actions: their own thread and llama.cpp context (see `Writer`).
        self._writer_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="cl-lsp-writer"
        )
        self._writer_lock = threading.Lock()  # held while a Writer uses a model
        self._writing: threading.Event | None = None  # the running action's cancel flag
        self._writing_main = False  # ... and it writes with the completion model's weights
        # actions.model: (path, LlamaModel, the file as loaded)
        self._action_model: tuple[str, Any, FileIdentity | None] | None = None
        self._completions_waiting = 0  # completion requests queued or running
        self.actions_started = 0

    # -- loading -----------------------------------------------------------------------------

    async def load(self, path: Path, settings: ModelSettings) -> None:
        self.state = EngineState.LOADING
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.load_blocking, path, settings)
        except EngineError:
            raise
        except Exception as error:  # pragma: no cover - load_blocking wraps everything
            self._fail(f"could not load the model {path}: {error}")
            raise EngineError(self.error) from error

    def load_blocking(self, path: Path, settings: ModelSettings) -> None:
        """Load on the calling thread (the worker, or the CLI's only thread)."""

        self.state = EngineState.LOADING
        self._unload()
        self.repack_mode = settings.repack.value
        threads = settings.n_threads or physical_cores()
        started = time.perf_counter()
        decision = repack.decide(path, settings.repack.value)
        try:
            vocab = Vocabulary(path)
            chatter = io.StringIO()  # llama-cpp-python prints model metadata when verbose
            with contextlib.redirect_stderr(chatter):
                llm = repack.load_llama(
                    path,
                    repack=decision.repack,
                    n_ctx=settings.n_ctx,
                    n_batch=settings.n_batch,
                    n_ubatch=settings.n_batch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=settings.gpu_layers,
                    use_mmap=settings.use_mmap,
                    verbose=True,  # see Vocabulary: False would silence descriptors 1 and 2
                )
            llm.verbose = False  # no per-request prints from Llama.generate
            native.debug("%s", chatter.getvalue())
        except Exception as error:
            self._fail(
                f"could not load the model {path}: {error}. Is it a complete GGUF file that "
                "this llama.cpp supports? Re-download it or point model.path at another file."
            )
            raise EngineError(self.error) from error
        self._llm, self.vocab = llm, vocab
        self.model_path, self.n_ctx = path, llm.n_ctx()
        self.model_file = FileIdentity.of(path)
        self.repack = decision
        self.n_batch, self.prefill_rate = settings.n_batch, None
        self.threads = threads
        self.state, self.error = EngineState.READY, None
        log.info(
            "model %s loaded in %.1f s (n_ctx=%d, threads=%d, fim=%s, repack=%s: %s)",
            path,
            time.perf_counter() - started,
            self.n_ctx,
            threads,
            vocab.fim is not None,
            decision.repack,
            decision.reason,
        )

    def no_model(self, message: str) -> None:
        """There is no model to load (the message says why); the state stays empty."""
        self.state, self.error = EngineState.EMPTY, message

    def _fail(self, message: str) -> None:
        self.state, self.error = EngineState.FAILED, message
        log.error("%s", message)

    def _unload(self) -> None:
        # An action writing with the weights about to go stops within a token; one writing
        # with actions.model (or waiting for the first load) is not disturbed.
        if self._writing is not None and self._writing_main and self._llm is not None:
            self._writing.set()
        if self._llm is None and self.vocab is None:
            return
        with self._writer_lock:
            self._unload_model()

    def _unload_model(self) -> None:
        if self._llm is not None:
            self._llm.close()
        if self.vocab is not None:
            self.vocab.close()
        self._llm = self.vocab = None
        self.model_file = None

    def model_file_changed(self) -> bool:
        """True if the loaded model's file is no longer the file that was loaded."""
        if self.model_path is None or self.model_file is None:
            return False
        return FileIdentity.of(self.model_path) != self.model_file

    def _check_model_file(self) -> None:
        """Refuse to touch a mapping whose file changed (see `FileIdentity`): drop the model
        (unmapping touches no page) and say so."""
        if not self.model_file_changed():
            return
        path = self.model_path
        with self._writer_lock:
            self._unload_model()
        message = (
            f"the model file {path} changed on disk while loaded (re-downloaded or "
            "truncated?); it was unloaded and must be loaded again"
        )
        self._fail(message)
        raise ModelFileChanged(message)

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    # -- generation --------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        """Run on the worker; cancelling the awaiting task stops the generation within a token."""
        loop = asyncio.get_running_loop()
        self._completions_waiting += 1  # a code action being written pauses meanwhile
        future = loop.run_in_executor(self._executor, self.generate_blocking, request)
        future.add_done_callback(self._completion_done)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            request.cancel.set()
            raise

    def _completion_done(self, _: object) -> None:
        self._completions_waiting -= 1

    def generate_blocking(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        self._check_model_file()
        llm, vocab = self._llm, self.vocab
        if llm is None or vocab is None:
            raise EngineError("no model is loaded")
        tokens = list(request.tokens)
        if request.cancel.is_set():
            return Generation("", (), len(tokens), 0, "cancelled", 0.0, time.monotonic())
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise EngineError(
                f"the prompt ({len(tokens)} tokens) does not fit the context window "
                f"({self.n_ctx}); lower completion.prefixTokens/suffixTokens or raise model.nCtx"
            )
        max_tokens = min(request.max_tokens, room)
        self.counters.generations_started += 1
        self.counters.prompt_tokens += len(tokens)
        self.busy.set()
        evaluated = 0
        try:
            evaluated, cancelled = self._prefill(tokens, request.cancel)
            if cancelled:
                return self._cancelled(tokens, evaluated, (), "", started)
            healed: list[int] = []
            healed_text = ""
            if request.heal:
                healing = self._heal(tokens, request.heal, request.cancel)
                evaluated += 1 + (len(healing[0]) if healing else 0)
                if healing is None:
                    if request.cancel.is_set():
                        return self._cancelled(tokens, evaluated, (), "", started)
                    return Generation(
                        "",
                        (),
                        len(tokens),
                        evaluated,
                        "eot",
                        time.perf_counter() - started,
                        time.monotonic(),
                    )
                healed, healed_text = healing
            else:
                evaluated += 1  # `generate` evaluates the prompt's last token itself
            # The healed tokens re-spell what the user typed: they do not use up the budget.
            budget = min(max_tokens, room - len(healed))
            text, generated, reason = self._sample(tokens + healed, request, budget, healed_text)
            generated = healed + generated
            text = text[len(request.heal) :]
        except Exception as error:
            raise EngineError(f"the model failed while generating: {error}") from error
        finally:
            self.busy.clear()
            self.counters.evaluated_tokens += evaluated
        if reason == "cancelled":
            return self._cancelled(tokens, evaluated, tuple(generated), text, started)
        self.counters.generated_tokens += len(generated)
        seconds = time.perf_counter() - started
        log.debug(
            "generated %d tokens (%s) after evaluating %d/%d prompt tokens in %.2f s",
            len(generated),
            reason,
            evaluated,
            len(tokens),
            seconds,
        )
        return Generation(
            text, tuple(generated), len(tokens), evaluated, reason, seconds, time.monotonic()
        )

    def _heal(
        self, tokens: list[int], heal: str, cancel: threading.Event
    ) -> tuple[list[int], str] | None:
        """Greedy decoding constrained to spell `heal` (the last token may run past it).

        Returns the chosen ids and their text, or None when cancelled or nothing fits.
        """
        import numpy as np

        llm, vocab = self._llm, self.vocab
        llm.eval(tokens[-1:])  # `_prefill` left the prompt's last token
        chosen: list[int] = []
        text = ""
        while len(text) < len(heal) or not text.startswith(heal):
            remaining = heal[len(text) :]
            if cancel.is_set() or not text.startswith(heal[: len(text)]):
                return None
            candidates = vocab.heal_candidates(remaining)
            if not candidates:
                return None
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab.n_vocab,))
            best = max(candidates, key=lambda token: logits[token])
            chosen.append(best)
            text += vocab.text_of(best)
            llm.eval([best])
        return chosen, text

    def _cancelled(
        self,
        tokens: list[int],
        evaluated: int,
        generated: tuple[int, ...],
        text: str,
        started: float,
    ) -> Generation:
        self.counters.generations_cancelled += 1
        self.counters.generated_tokens += len(generated)
        return Generation(
            text,
            generated,
            len(tokens),
            evaluated,
            "cancelled",
            time.perf_counter() - started,
            time.monotonic(),
        )

    def _prefill(self, tokens: list[int], cancel: threading.Event) -> tuple[int, bool]:
        """Evaluate all but the prompt's last token, re-using the KV cache up to the first
        changed token, in small chunks so a cancellation is noticed between them."""
        llm = self._llm
        target = len(tokens) - 1
        common = 0
        for old, new in zip(llm._input_ids, tokens[:target]):
            if old != new:
                break
            common += 1
        llm.n_tokens = common  # `eval` drops the KV cache from here on
        evaluated = 0
        while common + evaluated < target:
            if cancel.is_set():
                return evaluated, True
            start = common + evaluated
            chunk = tokens[start : min(target, start + self.prefill_chunk)]
            began = time.perf_counter()
            llm.eval(chunk)
            self._measure_prefill(len(chunk), time.perf_counter() - began)
            evaluated += len(chunk)
        return evaluated, False

    @property
    def prefill_chunk(self) -> int:
        """Prompt tokens per llama.cpp call: about PREFILL_CHUNK_SECONDS of work."""
        if self.prefill_rate is None:
            return min(PREFILL_FIRST_CHUNK, self.n_batch)
        size = int(self.prefill_rate * PREFILL_CHUNK_SECONDS) // 16 * 16
        return max(min(PREFILL_MIN_CHUNK, self.n_batch), min(self.n_batch, size))

    def _measure_prefill(self, tokens: int, seconds: float) -> None:
        # Only chunks of a full minimum size say what a chunk costs (a prompt's short tail
        # pays the per-call overhead on few tokens).
        if tokens < min(PREFILL_MIN_CHUNK, self.n_batch) or seconds <= 0:
            return
        rate = tokens / seconds
        self.prefill_rate = (
            rate if self.prefill_rate is None else (0.7 * self.prefill_rate + 0.3 * rate)
        )

    def _sample(
        self, tokens: list[int], request: GenerationRequest, max_tokens: int, text: str = ""
    ) -> tuple[str, list[int], str]:
        llm, vocab = self._llm, self.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        reason = "context_full" if max_tokens < request.max_tokens else "max_tokens"
        sampling = {"temp": request.temperature, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
        if request.temperature <= 0:
            sampling = {"temp": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0}
        deadline = (time.monotonic() + request.max_seconds) if request.max_seconds else None
        for token in llm.generate(tokens, repeat_penalty=1.0, reset=True, **sampling):
            if request.cancel.is_set():
                return text, generated, "cancelled"
            if token in vocab.stop_ids:
                return text, generated, "eot"
            generated.append(token)
            piece = decoder.decode(vocab.piece(token))
            text += piece
            if (stop := stop_after_piece(request, text, piece)) is not None:
                return stop[0], generated, stop[1]
            if len(generated) >= max_tokens:
                break
            if deadline is not None and time.monotonic() > deadline:
                return text, generated, "timeout"
        return text + decoder.decode(b"", final=True), generated, reason

    # -- code actions ----------------------------------------------------------------------

    async def write(
        self, job: Callable[[Writer], T], settings: ActionSettings, cancel: threading.Event
    ) -> T:
        """Run `job` on the writer thread with a `Writer` for the actions model; cancelling the
        awaiting task sets `cancel`, which stops the writing within one token."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._writer_executor, self._write_blocking, job, settings, cancel
        )
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _write_blocking(
        self, job: Callable[[Writer], T], settings: ActionSettings, cancel: threading.Event
    ) -> T:
        with self._writer_lock:
            self._writing = cancel
            self._writing_main = not settings.model
            try:
                return job(
                    Writer(
                        self._writer_model(settings),
                        n_ctx=settings.n_ctx,
                        threads=self.threads,
                        n_batch=self.n_batch,
                        engine=self,
                        max_tokens=settings.max_tokens,
                        temperature=settings.temperature,
                        cancel=cancel,
                    )
                )
            finally:
                self._writing = None

    def _writer_model(self, settings: ActionSettings) -> Any:
        """The LlamaModel that writes actions: actions.model, or the completion model's."""
        if not settings.model:
            if self._llm is None and self.state is EngineState.LOADING:
                raise EngineError(
                    "the model is still loading; try again when cl-lsp reports it ready"
                )
            if self._llm is None:
                raise EngineError(
                    self.error
                    or "no model is loaded: set model.path (or actions.model) to a GGUF file"
                )
            if self.model_file_changed():
                raise ModelFileChanged(
                    f"the model file {self.model_path} changed on disk "
                    "while loaded; it is being loaded again"
                )
            return self._llm._model
        path = str(Path(settings.model).expanduser())
        if self._action_model is not None and (
            self._action_model[0] != path or FileIdentity.of(path) != self._action_model[2]
        ):
            if self._action_model[0] == path:
                log.warning("the actions model %s changed on disk; loading it again", path)
            self._drop_action_model()
        if self._action_model is None:
            identity = FileIdentity.of(path)
            self._action_model = (path, self._load_action_model(path), identity)
        return self._action_model[1]

    def _load_action_model(self, path: str) -> Any:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        from .models import ModelError, check_model_file

        if not os.path.lexists(path):
            raise EngineError(
                f"actions model not found: {path} (set actions.model to a GGUF "
                "file, or leave it empty to use the completion model)"
            )
        try:
            check_model_file(path, "actions.model")
        except ModelError as error:
            raise EngineError(
                f"actions model unusable: {error}; or leave actions.model empty "
                "to use the completion model"
            ) from error
        decision = repack.decide(Path(path), self.repack_mode)
        params = llama_cpp.llama_model_default_params()
        params.use_extra_bufts = decision.repack
        route_native_logs()
        started = time.perf_counter()
        try:
            model = LlamaModel(path_model=path, params=params, verbose=True)  # see Vocabulary
        except Exception as error:
            raise EngineError(
                f"could not load the actions model {path}: {error}. Is it a "
                "complete GGUF file that this llama.cpp supports?"
            ) from error
        log.info(
            "actions model %s loaded in %.1f s (repack=%s: %s)",
            path,
            time.perf_counter() - started,
            decision.repack,
            decision.reason,
        )
        return model

    def _drop_action_model(self) -> None:
        if self._action_model is not None:
            self._action_model[1].close()
            self._action_model = None

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._writing is not None:
            self._writing.set()
        self._writer_executor.submit(self._drop_action_model)
        self._writer_executor.shutdown(wait=True, cancel_futures=True)
        self._executor.submit(self._unload)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "model": str(self.model_path) if self.model_path else None,
            "error": self.error,
            "nCtx": self.n_ctx,
            "fim": self.vocab is not None and self.vocab.fim is not None,
            "busy": self.busy.is_set(),
            "writing": self._writing is not None,
            "repack": self.repack.repack if self.repack else None,
            "prefillChunk": self.prefill_chunk,
            "prefillTokensPerSecond": round(self.prefill_rate or 0.0, 1),
            "counters": self.counters.as_dict(),
        }


@dataclass(frozen=True)
class Written:
    text: str
    prompt_tokens: int
    generated_tokens: int
    stop_reason: str  # "eos", "max_tokens", "cancelled"
    seconds: float


WRITER_CONTEXT_STEP = 256  # KV cache sizes are rounded up to this
WRITER_SEED = 1234  # sampling is seeded: the same request gives the same answer


class Writer:
    """Writes long answers (code actions) with a llama.cpp context of its own.

    The context shares the loaded weights with the completion model (or uses actions.model),
    so it costs only its KV cache, which is sized to the job and freed after it. It runs on the
    writer thread, never on the completion worker, and pauses while a completion waits: the
    CPU goes to whoever is typing. Cancellation is checked at every token and prompt chunk.
    """

    def __init__(
        self,
        model: Any,
        *,
        n_ctx: int,
        threads: int,
        n_batch: int,
        engine: Engine,
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
    ) -> None:
        import llama_cpp

        self._model = model
        self._engine = engine
        self.threads, self.n_batch = threads, n_batch
        trained = model.n_ctx_train()
        self.n_ctx = min(n_ctx, trained) if trained > 0 else n_ctx
        self.max_tokens, self.temperature, self.cancel = max_tokens, temperature, cancel
        self.template = model.metadata().get("tokenizer.chat_template") or None
        self.bos, eos = model.token_bos(), model.token_eos()
        self.add_bos = bool(model.add_bos_token()) or not self.template
        self.bos_token = model.token_get_text(self.bos) if self.bos >= 0 else ""
        self.eos_token = model.token_get_text(eos) if eos >= 0 else ""
        self._spm = model.vocab_type() == llama_cpp.LLAMA_VOCAB_TYPE_SPM
        self._marker = self._tokenize("☺", special=False)

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        if not text:
            return []
        return self._model.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def count(self, text: str) -> int:
        """Tokens of user text (for budgets)."""
        return len(self._tokenize(text, special=False))

    def prompt(self, system: str, user: str) -> list[int]:
        """The chat prompt as ids: template text with its control tokens, messages as text."""
        pieces = render_chat(
            system, user, self.template, bos_token=self.bos_token, eos_token=self.eos_token
        )
        ids: list[int] = []
        for piece in pieces:
            ids.extend(
                self._encode_piece(piece, follows_text=bool(ids) and not self._is_control(ids[-1]))
            )
        if self.add_bos and self.bos >= 0 and ids[:1] != [self.bos]:
            ids.insert(0, self.bos)
        return ids

    def _encode_piece(self, piece: ChatPiece, *, follows_text: bool) -> list[int]:
        # SentencePiece puts a space before text that starts a prompt or follows a control
        # token; text that continues text gets none. Tokenizing the pieces one by one must
        # give what tokenizing the whole prompt would.
        if not (self._spm and follows_text):
            return self._tokenize(piece.text, special=piece.special)
        marked = self._tokenize("☺" + piece.text, special=piece.special)
        if marked[: len(self._marker)] != self._marker:
            return self._tokenize(piece.text, special=piece.special)
        return marked[len(self._marker) :]

    def _is_control(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_control(self._model.vocab, token))

    def text_of(self, tokens: list[int]) -> str:
        """The prompt's text, control tokens spelled out (for logs and tests)."""
        return self._model.detokenize(tokens, special=True).decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        # LlamaModel.token_to_piece returns its whole buffer, NUL padding included.
        import ctypes

        import llama_cpp

        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._model.vocab, token, buffer, 64, 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._model.vocab, token, buffer, -size, 0, False)
        return buffer.raw[: max(size, 0)]

    def generate(
        self, tokens: list[int], *, on_text: Callable[[str], None] | None = None
    ) -> Written:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaSampler

        started = time.perf_counter()
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise EngineError(
                f"the prompt ({len(tokens)} tokens) does not fit the actions "
                f"context window ({self.n_ctx}); raise actions.nCtx"
            )
        max_tokens = min(self.max_tokens, room)
        params = llama_cpp.llama_context_default_params()
        size = -(-(len(tokens) + max_tokens) // WRITER_CONTEXT_STEP) * WRITER_CONTEXT_STEP
        params.n_ctx = min(self.n_ctx, size)
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads = params.n_threads_batch = self.threads
        self._engine.actions_started += 1
        ctx = LlamaContext(model=self._model, params=params, verbose=True)
        batch = LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=True)
        sampler = LlamaSampler()
        try:
            self._set_up(sampler)
            if not self._prefill(ctx, batch, tokens):
                return Written("", len(tokens), 0, "cancelled", time.perf_counter() - started)
            text, generated, reason = self._sample(
                ctx, batch, sampler, len(tokens), max_tokens, on_text
            )
        finally:
            sampler.close()
            batch.close()
            ctx.close()
        return Written(text, len(tokens), generated, reason, time.perf_counter() - started)

    def _set_up(self, sampler: Any) -> None:
        import llama_cpp

        # Small models loop without a repetition penalty; code repeats a lot, so keep it mild.
        llama_cpp.llama_sampler_chain_add(
            sampler.sampler,
            llama_cpp.llama_sampler_init_penalties(self._model.n_vocab(), 64, 1.1, 0.0, 0.0),
        )
        if self.temperature <= 0:
            sampler.add_greedy()
            return
        sampler.add_top_k(40)
        sampler.add_top_p(0.95, 1)
        sampler.add_min_p(0.05, 1)
        sampler.add_temp(self.temperature)
        sampler.add_dist(WRITER_SEED)

    def _wait_turn(self) -> bool:
        """Wait while a completion is queued or running; False once cancelled."""
        while self._engine._completions_waiting > 0 and not self.cancel.is_set():
            time.sleep(0.01)
        return not self.cancel.is_set()

    def _prefill(self, ctx: Any, batch: Any, tokens: list[int]) -> bool:
        done = 0
        while done < len(tokens):
            if not self._wait_turn():
                return False
            chunk = tokens[done : done + min(self.n_batch, self._engine.prefill_chunk)]
            batch.set_batch(chunk, done, logits_all=False)
            ctx.decode(batch)
            done += len(chunk)
        return True

    def _sample(
        self,
        ctx: Any,
        batch: Any,
        sampler: Any,
        position: int,
        max_tokens: int,
        on_text: Callable[[str], None] | None,
    ) -> tuple[str, int, str]:
        import llama_cpp

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, generated = "", 0
        while generated < max_tokens:
            if not self._wait_turn():
                return text, generated, "cancelled"
            token = sampler.sample(ctx, -1)
            if llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                return text + decoder.decode(b"", final=True), generated, "eos"
            generated += 1
            text += decoder.decode(self._piece(token))
            if on_text is not None:
                on_text(text)
            batch.set_batch([token], position, logits_all=True)
            ctx.decode(batch)
            position += 1
        return text + decoder.decode(b"", final=True), generated, "max_tokens"
