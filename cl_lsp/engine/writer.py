"""Code actions' long answers, written with the llama.cpp weights in this process.

`ActionWriting` runs the jobs on the engine's writer thread, never on the completion worker;
`LocalWriter` writes one answer in a context of its own; `ActionModels` keeps the model that
`actions.model` names (the completion model's weights serve when it is empty).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from ..config import ActionSettings
from . import repack
from .chat import ChatPiece, render_chat
from .interface import EngineError, Priority, Sampling, Writer, Written
from .llama import FileIdentity, Weights, WriterContext
from .tokenizer import NOSPACE_MARKER, nospace_tokens

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITER_CONTEXT_STEP = 256  # KV cache sizes are rounded up to this
WRITER_SEED = 1234  # sampling is seeded: the same request gives the same answer


class LocalWriter:
    """Writes long answers (code actions) with a llama.cpp context of its own.

    The context shares the loaded weights with the completion model (or uses actions.model),
    so it costs only its KV cache, which is sized to the job and freed after it. It pauses while
    a completion waits (`Priority`): the CPU goes to whoever is typing. Cancellation is checked
    at every token and prompt chunk.
    """

    def __init__(
        self,
        model: Weights,
        *,
        n_ctx: int,
        threads: int,
        n_batch: int,
        priority: Priority,
        prefill_chunk: Callable[[], int],
        on_start: Callable[[], None],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
    ) -> None:
        self._model = model
        self._priority, self._prefill_chunk = priority, prefill_chunk
        self._on_start = on_start  # called as each answer starts (the engine counts them)
        self.threads, self.n_batch = threads, n_batch
        trained = model.n_ctx_train()
        self.n_ctx = min(n_ctx, trained) if trained > 0 else n_ctx
        self.max_tokens, self.temperature, self.cancel = max_tokens, temperature, cancel
        self.template = model.chat_template()
        self.bos, eos = model.bos(), model.eos()
        self.add_bos = model.add_bos() or not self.template
        self.bos_token = model.token_text(self.bos) if self.bos >= 0 else ""
        self.eos_token = model.token_text(eos) if eos >= 0 else ""
        self._spm = model.is_sentencepiece()
        self._marker = self._tokenize(NOSPACE_MARKER, special=False)

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        if not text:
            return []
        return self._model.tokenize(text, special=special)

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
                self._encode_piece(
                    piece, follows_text=bool(ids) and not self._model.is_control(ids[-1])
                )
            )
        if self.add_bos and self.bos >= 0 and ids[:1] != [self.bos]:
            ids.insert(0, self.bos)
        return ids

    def _encode_piece(self, piece: ChatPiece, *, follows_text: bool) -> list[int]:
        # SentencePiece puts a space before text that starts a prompt or follows a control
        # token; text that continues text gets none. Tokenizing the pieces one by one must
        # give what tokenizing the whole prompt would.
        encode = functools.partial(self._tokenize, special=piece.special)
        if not (self._spm and follows_text):
            return encode(piece.text)
        tokens = nospace_tokens(encode, piece.text, self._marker)
        return encode(piece.text) if tokens is None else tokens

    def text_of(self, tokens: list[int]) -> str:
        """The prompt's text, control tokens spelled out (for logs and tests)."""
        return self._model.detokenize(tokens, special=True).decode("utf-8", errors="replace")

    def generate(
        self, tokens: list[int], *, on_text: Callable[[str], None] | None = None
    ) -> Written:
        started = time.perf_counter()
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise EngineError(
                f"the prompt ({len(tokens)} tokens) does not fit the actions "
                f"context window ({self.n_ctx}); raise actions.nCtx"
            )
        max_tokens = min(self.max_tokens, room)
        size = -(-(len(tokens) + max_tokens) // WRITER_CONTEXT_STEP) * WRITER_CONTEXT_STEP
        # Small models loop without a repetition penalty; code repeats a lot, so keep it mild.
        sampling = Sampling(
            temperature=self.temperature, repeat_penalty=1.1, penalty_last_n=64, seed=WRITER_SEED
        )
        self._on_start()
        with contextlib.closing(
            WriterContext(
                self._model,
                n_ctx=min(self.n_ctx, size),
                n_batch=self.n_batch,
                threads=self.threads,
                sampling=sampling,
            )
        ) as context:
            if not self._prefill(context, tokens):
                return Written("", len(tokens), 0, "cancelled", time.perf_counter() - started)
            text, generated, reason = self._sample(context, len(tokens), max_tokens, on_text)
        return Written(text, len(tokens), generated, reason, time.perf_counter() - started)

    def _prefill(self, context: WriterContext, tokens: list[int]) -> bool:
        done = 0
        while done < len(tokens):
            if not self._priority.wait_turn(self.cancel):
                return False
            chunk = tokens[done : done + min(self.n_batch, self._prefill_chunk())]
            context.evaluate(chunk, done)
            done += len(chunk)
        return True

    def _sample(
        self,
        context: WriterContext,
        position: int,
        max_tokens: int,
        on_text: Callable[[str], None] | None,
    ) -> tuple[str, int, str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, generated = "", 0
        while generated < max_tokens:
            if not self._priority.wait_turn(self.cancel):
                return text, generated, "cancelled"
            token = context.sample()
            if self._model.is_end(token):
                return text + decoder.decode(b"", final=True), generated, "eos"
            generated += 1
            text += decoder.decode(self._model.piece(token))
            if on_text is not None:
                on_text(text)
            context.evaluate([token], position, logits=True)
            position += 1
        return text + decoder.decode(b"", final=True), generated, "max_tokens"


class ActionModels:
    """The model `actions.model` names, loaded on first use and again if its file changes."""

    def __init__(self) -> None:
        self._loaded: tuple[str, Weights, FileIdentity | None] | None = None

    def get(self, setting: str, repack_mode: str) -> Weights:
        path = _actions_model_path(setting)
        if self._loaded is not None and (
            self._loaded[0] != path or FileIdentity.of(path) != self._loaded[2]
        ):
            if self._loaded[0] == path:
                log.warning("the actions model %s changed on disk; loading it again", path)
            self.drop()
        if self._loaded is None:
            identity = FileIdentity.of(path)
            self._loaded = (path, self._load(path, repack_mode), identity)
        return self._loaded[1]

    def _load(self, path: str, repack_mode: str) -> Weights:
        from ..models import ModelError, check_model_file

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
        decision = repack.decide(Path(path), repack_mode)
        started = time.perf_counter()
        try:
            model = Weights.load(path, repack=decision.repack)
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

    def drop(self) -> None:
        if self._loaded is not None:
            self._loaded[1].close()
            self._loaded = None


def _actions_model_path(setting: str) -> str:
    """The file `actions.model` names: a path as it is (`_load` checks it), or a model name or
    Hub reference from the Hugging Face cache, downloaded there once (progress in the log)."""
    from ..models import ACTIONS, ModelError, fetch_model, logged_progress, parse_model_ref

    path = str(Path(setting).expanduser())
    try:
        ref = parse_model_ref(path, ACTIONS.label)
        if ref.is_path:
            return path
        return str(fetch_model(ref, logged_progress(f"{ref.text} (actions.model)")))
    except ModelError as error:
        raise EngineError(
            f"actions model unusable: {error}; or leave actions.model empty to use the "
            "completion model"
        ) from error


class WritingHost(Protocol):
    """What `ActionWriting` needs of the engine it writes for."""

    repack_mode: str
    threads: int
    n_batch: int
    priority: Priority

    @property
    def prefill_chunk(self) -> int: ...

    def main_weights(self) -> Weights:
        """The completion model's weights (raises EngineError when there are none)."""
        ...

    def preempt_warm_up(self) -> None:
        """Stop a warm-up of the completion model's cache: the CPU goes to the action."""
        ...


class ActionWriting:
    """Code actions on a thread of their own, one job at a time: a `LocalWriter` with the model
    `actions.model` names, or with the completion model's weights. `lock` is held while a job
    uses weights, so the engine never unloads them under it; `stop` ends the running job within
    a token."""

    def __init__(self, engine: WritingHost) -> None:
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cl-lsp-writer")
        self.lock = threading.Lock()
        self._cancel: threading.Event | None = None  # the running job's cancel flag
        self.uses_main_weights = False  # ... and it writes with the completion model's weights
        self._models = ActionModels()
        self.started = 0  # answers started
        self._queued = 0  # jobs asked for and not finished

    @property
    def active(self) -> bool:
        return self._cancel is not None

    @property
    def wanted(self) -> bool:
        """A job is asked for, waiting or running."""
        return self._queued > 0

    async def write(
        self, job: Callable[[Writer], T], settings: ActionSettings, cancel: threading.Event
    ) -> T:
        """Run `job` on the writer thread with a `LocalWriter`; cancelling the awaiting task
        sets `cancel`, which stops the writing within one token."""
        loop = asyncio.get_running_loop()
        self._engine.preempt_warm_up()
        self._queued += 1
        future = loop.run_in_executor(self._executor, self._write_blocking, job, settings, cancel)
        future.add_done_callback(lambda _: self._finished())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            self._engine.priority.wake()
            raise

    def _finished(self) -> None:
        self._queued -= 1

    def _write_blocking(
        self, job: Callable[[Writer], T], settings: ActionSettings, cancel: threading.Event
    ) -> T:
        engine = self._engine
        with self.lock:
            self._cancel = cancel
            self.uses_main_weights = not settings.model
            try:
                weights = (
                    self._models.get(settings.model, engine.repack_mode)
                    if settings.model
                    else engine.main_weights()
                )
                return job(
                    LocalWriter(
                        weights,
                        n_ctx=settings.n_ctx,
                        threads=engine.threads,
                        n_batch=engine.n_batch,
                        priority=engine.priority,
                        prefill_chunk=lambda: engine.prefill_chunk,
                        on_start=self._count,
                        max_tokens=settings.max_tokens,
                        temperature=settings.temperature,
                        cancel=cancel,
                    )
                )
            finally:
                self._cancel = None

    def _count(self) -> None:
        self.started += 1

    def stop(self) -> None:
        """Stop the running job, if any, within a token."""
        if (cancel := self._cancel) is not None:
            cancel.set()
            self._engine.priority.wake()

    def close(self) -> None:
        self.stop()
        self._executor.submit(self._models.drop)
        self._executor.shutdown(wait=True, cancel_futures=True)
