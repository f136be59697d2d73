"""The one place that calls llama-cpp-python: loading, tokens, evaluation, sampling.

Everything else in cl-lsp speaks through these few classes, so a llama-cpp-python upgrade
(whose `_internals` and private attributes change without notice) is fixed here:

- `Weights`: a loaded model file (`_internals.LlamaModel`): vocabulary and metadata; shared by
  the completion context and the writers' contexts, or vocabulary-only for tokenizing.
- `CompletionModel`: a context of its own as a `ModelSession`: the record of its KV cache,
  runs moved to new positions, evaluation that a flag stops inside a batch, scores, samplers.
- `WriterContext`: a context of its own on shared weights, with its sampler chain.
- `load_llama`: a `Llama` with llama.cpp's weight repacking on or off (see `repack.py`), for
  the repack probe and benches.

`llama_cpp` is imported when first needed: starting the server does not load the library.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .interface import Sampling, Stopped
from .kv_cache import Reuse, Run

native = logging.getLogger("cl_lsp.llama_cpp")
_log_callback: Any = None


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


# -- weights ------------------------------------------------------------------------------------


class Weights:
    """A loaded GGUF: its vocabulary, metadata and (unless vocabulary-only) its weights."""

    def __init__(self, model: Any, *, owned: bool) -> None:
        self._model = model  # llama_cpp._internals.LlamaModel
        self._owned = owned  # False: it belongs to a CompletionModel, which closes it

    @classmethod
    def load(cls, path: Path | str, *, vocab_only: bool = False, repack: bool = False) -> Weights:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        params = llama_cpp.llama_model_default_params()
        if vocab_only:
            params.vocab_only = True
        else:
            params.use_extra_bufts = repack
        route_native_logs()
        # verbose=True: with False, llama-cpp-python points descriptors 1 and 2 at /dev/null
        # while loading, process-wide, which would swallow protocol messages.
        return cls(LlamaModel(path_model=str(path), params=params, verbose=True), owned=True)

    def n_vocab(self) -> int:
        return self._model.n_vocab()

    def n_ctx_train(self) -> int:
        return self._model.n_ctx_train()

    def bos(self) -> int:
        return self._model.token_bos()

    def eos(self) -> int:
        return self._model.token_eos()

    def eot(self) -> int | None:
        return self._model.token_eot()

    def add_bos(self) -> bool:
        return bool(self._model.add_bos_token())

    def fim_ids(self) -> dict[str, int]:
        """The FIM tokens llama.cpp found, by role: from the GGUF's metadata
        (`tokenizer.ggml.fim_pre_token_id`...) or its own list of token texts."""
        import llama_cpp

        vocab = self._model.vocab
        found = {
            "pre": llama_cpp.llama_vocab_fim_pre(vocab),
            "suf": llama_cpp.llama_vocab_fim_suf(vocab),
            "mid": llama_cpp.llama_vocab_fim_mid(vocab),
        }
        return {role: token for role, token in found.items() if token >= 0}

    def chat_template(self) -> str | None:
        return self._model.metadata().get("tokenizer.chat_template") or None

    def is_sentencepiece(self) -> bool:
        import llama_cpp

        return self._model.vocab_type() == llama_cpp.LLAMA_VOCAB_TYPE_SPM

    def token_text(self, token: int) -> str:
        """The vocabulary's spelling of a token (SentencePiece's `▁` included)."""
        return self._model.token_get_text(token)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Ids of `text` with SentencePiece's implicit leading space and no BOS."""
        return self._model.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def detokenize(self, tokens: list[int], *, special: bool = False) -> bytes:
        return self._model.detokenize(tokens, special=special)

    def piece(self, token: int) -> bytes:
        """A token's bytes as it continues a text (no leading space removed)."""
        import llama_cpp

        # LlamaModel.token_to_piece returns its whole buffer, NUL padding included.
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._model.vocab, token, buffer, 64, 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._model.vocab, token, buffer, -size, 0, False)
        return buffer.raw[: max(size, 0)]

    def is_control(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_control(self._model.vocab, token))

    def is_end(self, token: int) -> bool:
        """An end-of-generation token (EOS, EOT...)."""
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, token))

    def close(self) -> None:
        if self._owned:
            self._model.close()


# -- the completion model -----------------------------------------------------------------------

_params_lock = threading.Lock()


@contextlib.contextmanager
def model_params_for(repack: bool) -> Iterator[None]:
    """Make `llama_cpp.Llama` load with `use_extra_bufts` = `repack`.

    `Llama.__init__` takes no such argument: it fills its model params from
    `llama_model_default_params()`, so that function is wrapped while a model loads.
    """
    import llama_cpp.llama as llama_module

    with _params_lock:
        original = llama_module.llama_cpp.llama_model_default_params

        def params() -> Any:
            chosen = original()
            chosen.use_extra_bufts = repack
            return chosen

        llama_module.llama_cpp.llama_model_default_params = params
        try:
            yield
        finally:
            llama_module.llama_cpp.llama_model_default_params = original


def load_llama(path: Path | str, *, repack: bool, **kwargs: Any) -> Any:
    """A `llama_cpp.Llama` for `path`, its weights repacked or not."""
    import llama_cpp

    with model_params_for(repack):
        return llama_cpp.Llama(model_path=str(path), **kwargs)


def context_params(n_ctx: int, n_batch: int, threads: int) -> Any:
    """llama.cpp context parameters for a CPU-first context.

    Flash attention stays off (llama.cpp's default is "auto", which turns it on), as
    llama_cpp.Llama, the engine before this class, had it: on the 7B-shaped Q4_K model
    (8 layers) on 2 cores, a 1,500-token prompt in 32-token chunks took 1.38x as long with it
    (47.3 s against 34.3) and one-token steps after it 1.2x (bench/flash_attention.py).
    """
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = n_batch
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    return params


class CompletionModel:
    """The completion model in this process: one context, and a record of its KV cache.

    The cache holds `held` (tokens at positions 0, 1, 2...), and while a prompt is being
    brought in (`rearrange`, `place`) the runs it reuses from further on, kept aside in a
    second sequence until their turn: llama.cpp appends a batch only right after the last
    position a sequence holds, so tokens evaluated into a gap must come before the runs that
    follow it. The context's abort callback reads the flag of the evaluation in progress, so
    a stopped request ends inside a batch, within milliseconds.
    """

    MAIN, ASIDE = 0, 1  # sequence ids: the prompt, and the runs waiting for their place

    def __init__(self, weights: Weights, *, n_ctx: int, n_batch: int, threads: int) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        params = context_params(n_ctx or weights.n_ctx_train(), n_batch, threads)
        params.n_seq_max = 2
        params.kv_unified = True  # one set of cells: moving between sequences copies nothing
        self.weights = weights
        self._ctx = LlamaContext(model=weights._model, params=params, verbose=True)
        self._memory = self._ctx.memory
        self.n_ctx: int = self._ctx.n_ctx()
        self.n_batch = n_batch
        self._batch = LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=True)
        self._n_vocab = weights.n_vocab()
        self.can_shift = bool(llama_cpp.llama_memory_can_shift(self._memory))
        self._held: list[int] = []
        self._aside: list[Run] = []
        self._aside_tokens: dict[int, list[int]] = {}  # a run's tokens, by its target
        self._shift_pending = False
        self._stop: threading.Event | None = None
        self._abortable = True
        self._on_abort = llama_cpp.ggml_abort_callback(self._should_abort)  # kept alive here
        llama_cpp.llama_set_abort_callback(self._ctx.ctx, self._on_abort, None)

    def _should_abort(self, _data: Any) -> bool:
        stop = self._stop
        return self._abortable and stop is not None and stop.is_set()

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        repack: bool,
        n_ctx: int,
        n_batch: int,
        threads: int,
        gpu_layers: int,
        use_mmap: bool,
    ) -> CompletionModel:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        params = llama_cpp.llama_model_default_params()
        params.use_extra_bufts = repack
        params.n_gpu_layers = gpu_layers
        params.use_mmap = use_mmap
        route_native_logs()
        # verbose=True: see Weights.load.
        model = LlamaModel(path_model=str(path), params=params, verbose=True)
        weights = Weights(model, owned=True)
        try:
            return cls(weights, n_ctx=n_ctx, n_batch=n_batch, threads=threads)
        except BaseException:
            weights.close()
            raise

    @property
    def held(self) -> tuple[int, ...]:
        """The tokens the cache holds, by position (a copy, safe to read from any thread)."""
        return tuple(self._held)

    # -- bringing a prompt in ---------------------------------------------------------------

    def rearrange(self, reuse: Reuse) -> None:
        """Keep the first `reuse.kept` tokens and `reuse.runs` (moved to their new positions,
        set aside until `place`); drop everything else."""
        import llama_cpp

        memory, main = self._memory, self.MAIN
        self.forget_aside()
        position = reuse.kept
        for run in reuse.runs:
            if position < run.source:
                llama_cpp.llama_memory_seq_rm(memory, main, position, run.source)
            position = run.source + run.length
        llama_cpp.llama_memory_seq_rm(memory, main, position, -1)
        # Moved left in order and right in reverse order, no run lands on one not yet moved.
        moves = [run for run in reuse.runs if run.shift < 0]
        moves += [run for run in reversed(reuse.runs) if run.shift > 0]
        for run in moves:
            end = run.source + run.length
            llama_cpp.llama_memory_seq_add(memory, main, run.source, end, run.shift)
            self._shift_pending = True
        if reuse.runs:
            llama_cpp.llama_memory_seq_cp(memory, main, self.ASIDE, reuse.kept, -1)
            llama_cpp.llama_memory_seq_rm(memory, main, reuse.kept, -1)
        tokens = self._held
        self._aside = list(reuse.runs)
        self._aside_tokens = {
            run.target: tokens[run.source : run.source + run.length] for run in reuse.runs
        }
        del self._held[reuse.kept :]

    def place(self, run: Run) -> None:
        """Put a run set aside by `rearrange` back, right after the tokens held."""
        import llama_cpp

        if run.target != len(self._held) or run not in self._aside:
            raise ValueError(f"run {run} cannot be placed after {len(self._held)} tokens")
        end = run.target + run.length
        llama_cpp.llama_memory_seq_cp(self._memory, self.ASIDE, self.MAIN, run.target, end)
        llama_cpp.llama_memory_seq_rm(self._memory, self.ASIDE, run.target, end)
        self._aside.remove(run)
        self._held.extend(self._aside_tokens.pop(run.target))

    def forget_aside(self) -> None:
        """Drop the runs still set aside (a prompt abandoned half way)."""
        import llama_cpp

        if self._aside:
            llama_cpp.llama_memory_seq_rm(self._memory, self.ASIDE, -1, -1)
            self._aside, self._aside_tokens = [], {}

    def keep(self, length: int) -> None:
        """Forget every token held from position `length` on."""
        import llama_cpp

        if length < len(self._held):
            llama_cpp.llama_memory_seq_rm(self._memory, self.MAIN, length, -1)
            del self._held[length:]

    # -- evaluation -------------------------------------------------------------------------

    def evaluate(
        self, tokens: Sequence[int], *, outputs: bool = False, stop: threading.Event | None = None
    ) -> None:
        """Run `tokens` after the tokens held (scores for each if `outputs`, else for the
        last). Raises `Stopped` if `stop` is set meanwhile: nothing of this call is kept."""
        tokens = list(tokens)
        if self._shift_pending and tokens:
            # The next decode first applies the pending position shifts to the cached keys;
            # stopped half way, some layers would be shifted twice. One token, not stoppable.
            self._decode(tokens[:1], outputs=outputs or len(tokens) == 1, stop=None)
            self._shift_pending = False
            tokens = tokens[1:]
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            last = start + len(chunk) == len(tokens)
            self._decode(chunk, outputs=outputs or last, all_outputs=outputs, stop=stop)

    def _decode(
        self,
        tokens: list[int],
        *,
        outputs: bool,
        all_outputs: bool = False,
        stop: threading.Event | None,
    ) -> None:
        batch = self._batch.batch
        position = len(self._held)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = position + i
            batch.seq_id[i][0] = self.MAIN
            batch.n_seq_id[i] = 1
            batch.logits[i] = all_outputs
        batch.logits[len(tokens) - 1] = outputs
        batch.n_tokens = len(tokens)
        self._stop = stop
        try:
            self._ctx.decode(self._batch)
        except RuntimeError as error:
            self._resync()
            if "returned 2" in str(error):
                raise Stopped() from None
            raise
        finally:
            self._stop = None
        self._held.extend(tokens)

    def _resync(self) -> None:
        """After a failed or stopped decode llama.cpp dropped that batch (and every position
        after it); make the record match what the cache really holds."""
        import llama_cpp

        held = llama_cpp.llama_memory_seq_pos_max(self._memory, self.MAIN) + 1
        if held < len(self._held):
            del self._held[held:]
        self.forget_aside()

    def logits(self, index: int = -1) -> Any:
        """The next token's scores after output `index` of the last evaluation."""
        import numpy as np

        pointer = self._ctx.get_logits_ith(index)
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))

    def sampler(self, sampling: Sampling) -> Sampler:
        return Sampler(self, sampling)

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
        self.weights.close()


class Sampler:
    """Picks tokens from a `CompletionModel`'s scores: the argmax at temperature 0, else
    llama.cpp's chain (see `WriterContext`)."""

    def __init__(self, model: CompletionModel, sampling: Sampling) -> None:
        self._model = model
        self.greedy = sampling.temperature <= 0 and sampling.repeat_penalty == 1.0
        self._chain: Any = None
        if not self.greedy:
            self._chain = sampler_chain(model.weights, sampling)

    def pick(self, index: int = -1) -> int:
        if self.greedy:
            return int(self._model.logits(index).argmax())
        return self._chain.sample(self._model._ctx, index)

    def close(self) -> None:
        if self._chain is not None:
            self._chain.close()


def sampler_chain(weights: Weights, sampling: Sampling) -> Any:
    """llama.cpp's samplers for `sampling`: a penalty on recent tokens, then greedy at
    temperature 0, else top-k, top-p, min-p, temperature and a seeded draw."""
    import llama_cpp
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()
    try:
        llama_cpp.llama_sampler_chain_add(
            sampler.sampler,
            llama_cpp.llama_sampler_init_penalties(
                weights.n_vocab(), sampling.penalty_last_n, sampling.repeat_penalty, 0.0, 0.0
            ),
        )
        if sampling.temperature <= 0:
            sampler.add_greedy()
            return sampler
        sampler.add_top_k(sampling.top_k)
        sampler.add_top_p(sampling.top_p, 1)
        sampler.add_min_p(sampling.min_p, 1)
        sampler.add_temp(sampling.temperature)
        seed = sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        sampler.add_dist(seed)
    except BaseException:
        sampler.close()
        raise
    return sampler


# -- a writer's context -------------------------------------------------------------------------


class WriterContext:
    """A llama.cpp context of its own on shared weights (costs only its KV cache), with a
    batch and a sampler chain; closed after one answer."""

    def __init__(
        self, weights: Weights, *, n_ctx: int, n_batch: int, threads: int, sampling: Sampling
    ) -> None:
        from llama_cpp._internals import LlamaBatch, LlamaContext

        params = context_params(n_ctx, n_batch, threads)
        self._ctx = LlamaContext(model=weights._model, params=params, verbose=True)
        self._batch = LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=True)
        try:
            self._sampler = sampler_chain(weights, sampling)
        except BaseException:
            self._batch.close()
            self._ctx.close()
            raise

    def evaluate(self, tokens: Sequence[int], position: int, *, logits: bool = False) -> None:
        """Run `tokens` placed from `position` on (scores for the next token if `logits`)."""
        self._batch.set_batch(list(tokens), position, logits_all=logits)
        self._ctx.decode(self._batch)

    def sample(self) -> int:
        return self._sampler.sample(self._ctx, -1)

    def close(self) -> None:
        self._sampler.close()
        self._batch.close()
        self._ctx.close()


# -- the repack probe's side ----------------------------------------------------------------------


def build_identity() -> list[str]:
    """The llama-cpp-python version and its shared libraries (name, size, mtime)."""
    import llama_cpp

    library = Path(llama_cpp.__file__).parent / "lib"
    build = [llama_cpp.__version__]
    for so in sorted(library.glob("*.so*")) if library.is_dir() else ():
        stat = so.stat()
        build.append(f"{so.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return build


def evaluate_repacked(path: str, batch: int) -> None:
    """Load `path` with repacked weights and evaluate `batch` tokens at once (may crash)."""
    import llama_cpp

    llm = load_llama(path, repack=True, n_ctx=64, n_batch=batch, n_ubatch=batch, verbose=False)
    vocab = llm.n_vocab()
    tokens = [token % vocab for token in range(1, batch + 1)]
    llm.eval(tokens)
    llama_cpp.llama_synchronize(llm.ctx)
