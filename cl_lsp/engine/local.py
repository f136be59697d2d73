"""The llama.cpp engine in this process: one model, owned by one worker thread.

A `llama_cpp.Llama` is not thread-safe, so every call that touches it runs on the engine's
single worker thread; the event loop only awaits futures. Tokenizing for context budgets and
prompts happens on the caller's thread with the vocabulary-only `Vocabulary`. Code actions are
written on a second thread (`writer.py`), with the same weights or actions.model, taking turns
with completions through `Priority`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..config import ActionSettings, ModelSettings, physical_cores
from . import repack
from .generation import PREFILL_MIN_CHUNK, Completion, prefill_chunk
from .interface import (
    EngineCounters,
    EngineError,
    EngineState,
    Generation,
    GenerationRequest,
    ModelFileChanged,
    Priority,
    WarmUpCounters,
    Writer,
)
from .llama import CompletionModel, FileIdentity, Weights
from .tokenizer import Vocabulary
from .writer import ActionWriting

log = logging.getLogger(__name__)
T = TypeVar("T")


class LocalEngine:
    """`Engine` with llama.cpp in this process: loading, completions, code actions, status."""

    heals = True
    warms = True  # evaluates prompts ahead of requests (`warm`)

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cl-lsp-model")
        self._model: CompletionModel | None = None
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
        self.priority = Priority()  # completions before code actions
        self.writing = ActionWriting(self)  # code actions: their own thread and context
        self._warming: threading.Event | None = None  # the cancel flag of the newest warm-up
        self.warming = False  # a warm-up is evaluating
        self.warm_ups = WarmUpCounters()

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
            model = CompletionModel.load(
                path,
                repack=decision.repack,
                n_ctx=settings.n_ctx,
                n_batch=settings.n_batch,
                threads=threads,
                gpu_layers=settings.gpu_layers,
                use_mmap=settings.use_mmap,
            )
        except Exception as error:
            self._fail(
                f"could not load the model {path}: {error}. Is it a complete GGUF file that "
                "this llama.cpp supports? Re-download it or point model.path at another file."
            )
            raise EngineError(self.error) from error
        self._model, self.vocab = model, vocab
        self.model_path, self.n_ctx = path, model.n_ctx
        self.model_file = FileIdentity.of(path)
        self.repack = decision
        self.n_batch, self.prefill_rate = settings.n_batch, None
        self.threads = threads
        self.state, self.error = EngineState.READY, None
        log.info(
            "model %s loaded in %.1f s (n_ctx=%d, threads=%d, FIM tokens from llama.cpp: %s, "
            "repack=%s: %s)",
            path,
            time.perf_counter() - started,
            self.n_ctx,
            threads,
            dict(vocab.fim_ids) or "none",
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
        if self.writing.uses_main_weights and self._model is not None:
            self.writing.stop()
        if self._model is None and self.vocab is None:
            return
        with self.writing.lock:
            self._unload_model()

    def _unload_model(self) -> None:
        if self._model is not None:
            self._model.close()
        if self.vocab is not None:
            self.vocab.close()
        self._model = self.vocab = None
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
        with self.writing.lock:
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

    # -- completions -------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        """Run on the worker; cancelling the awaiting task stops the generation within a token."""
        loop = asyncio.get_running_loop()
        self.preempt_warm_up()
        self.priority.completion_started()  # a code action being written pauses meanwhile
        future = loop.run_in_executor(self._executor, self.generate_blocking, request)
        future.add_done_callback(lambda _: self.priority.completion_finished())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            request.cancel.set()
            raise

    def generate_blocking(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        self._check_model_file()
        return self._completion().run(request, started)

    def _completion(self) -> Completion:
        model, vocab = self._model, self.vocab
        if model is None or vocab is None:
            raise EngineError("no model is loaded")
        return Completion(
            model,
            vocab,
            counters=self.counters,
            busy=self.busy,
            chunk=lambda: self.prefill_chunk,
            measured=self._measure_prefill,
        )

    def held_tokens(self) -> tuple[int, ...]:
        """The tokens the completion model's KV cache holds (a snapshot)."""
        model = self._model
        return model.held if model is not None else ()

    # -- warming up --------------------------------------------------------------------------

    async def warm(self, request: GenerationRequest) -> int:
        """Evaluate `request`'s prompt (but its last token) into the KV cache while nothing
        else wants the model, so a request there later finds it ready. Lowest priority: not
        started while a completion or a code action runs or waits, and stopped within
        milliseconds (inside a llama.cpp call) when one starts. Returns the tokens evaluated."""
        if not self.ready or self.priority.completions or self.writing.wanted:
            return 0
        self.preempt_warm_up()
        self._warming = request.cancel
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._warm_blocking, request)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            request.cancel.set()
            raise

    def preempt_warm_up(self) -> None:
        """Stop the warm-up in progress (or queued) at once: something real wants the model."""
        if self._warming is not None:
            self._warming.set()
            self._warming = None

    def _warm_blocking(self, request: GenerationRequest) -> int:
        counters = self.warm_ups
        if request.cancel.is_set() or self.priority.completions or self.writing.wanted:
            counters.skipped += 1
            return 0
        if self._model is None or self.model_file_changed():
            return 0
        counters.started += 1
        completion = self._completion()
        self.warming = True
        try:
            evaluated, stopped = completion.prefill(
                list(request.tokens[:-1]), request.cancel, request.reuse_min_run
            )
        finally:
            self.warming = False
        counters.tokens += evaluated
        counters.preempted += stopped
        return evaluated

    @property
    def prefill_chunk(self) -> int:
        """Prompt tokens per llama.cpp call (see `completion.prefill_chunk`)."""
        return prefill_chunk(self.prefill_rate, self.n_batch)

    def _measure_prefill(self, tokens: int, seconds: float) -> None:
        # Only chunks of a full minimum size say what a chunk costs (a prompt's short tail
        # pays the per-call overhead on few tokens).
        if tokens < min(PREFILL_MIN_CHUNK, self.n_batch) or seconds <= 0:
            return
        rate = tokens / seconds
        self.prefill_rate = (
            rate if self.prefill_rate is None else (0.7 * self.prefill_rate + 0.3 * rate)
        )

    # -- code actions ----------------------------------------------------------------------

    @property
    def actions_started(self) -> int:
        return self.writing.started

    async def write(
        self, job: Callable[[Writer], T], settings: ActionSettings, cancel: threading.Event
    ) -> T:
        """Run `job` with a writer for the actions model (see `ActionWriting.write`)."""
        return await self.writing.write(job, settings, cancel)

    def main_weights(self) -> Weights:
        """The completion model's weights, for an action written with them."""
        if self._model is None and self.state is EngineState.LOADING:
            raise EngineError("the model is still loading; try again when cl-lsp reports it ready")
        if self._model is None:
            raise EngineError(
                self.error or "no model is loaded: set model.path (or actions.model) to a GGUF file"
            )
        if self.model_file_changed():
            raise ModelFileChanged(
                f"the model file {self.model_path} changed on disk "
                "while loaded; it is being loaded again"
            )
        return self._model.weights

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        self.writing.close()
        self._executor.submit(self._unload)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "engine": "local",
            "model": str(self.model_path) if self.model_path else None,
            "error": self.error,
            "nCtx": self.n_ctx,
            "busy": self.busy.is_set(),
            "warming": self.warming,
            "writing": self.writing.active,
            "repack": self.repack.repack if self.repack else None,
            "prefillChunk": self.prefill_chunk,
            "prefillTokensPerSecond": round(self.prefill_rate or 0.0, 1),
            "counters": self.counters.as_dict(),
            "warmUps": self.warm_ups.as_dict(),
        }
