"""The one place that calls llama-cpp-python: loading, tokens, evaluation, sampling.

Everything else in cl-lsp speaks through these few classes, so a llama-cpp-python upgrade
(whose `_internals` and private attributes change without notice) is fixed here:

- `Weights`: a loaded model file (`_internals.LlamaModel`): vocabulary and metadata; shared by
  the completion context and the writers' contexts, or vocabulary-only for tokenizing.
- `CompletionModel`: a `llama_cpp.Llama` as a `ModelSession` (KV-cache reuse, evaluation,
  logits, sampling stream).
- `WriterContext`: a context of its own on shared weights, with its sampler chain.
- `load_llama`: a `Llama` with llama.cpp's weight repacking on or off (see `repack.py`).

`llama_cpp` is imported when first needed: starting the server does not load the library.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .interface import Sampling

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


class CompletionModel:
    """The completion model in this process: one `llama_cpp.Llama` and its KV cache."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.n_ctx: int = llm.n_ctx()
        self.weights = Weights(llm._model, owned=False)
        self._n_vocab = llm.n_vocab()

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
        chatter = io.StringIO()  # llama-cpp-python prints model metadata when verbose
        with contextlib.redirect_stderr(chatter):
            llm = load_llama(
                path,
                repack=repack,
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_ubatch=n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=gpu_layers,
                use_mmap=use_mmap,
                verbose=True,  # see Weights.load: False would silence descriptors 1 and 2
            )
        llm.verbose = False  # no per-request prints from Llama.generate
        native.debug("%s", chatter.getvalue())
        return cls(llm)

    def cached_prefix_length(self, tokens: Sequence[int]) -> int:
        common = 0
        for old, new in zip(self._llm._input_ids, tokens):
            if old != new:
                break
            common += 1
        return common

    def keep(self, length: int) -> None:
        self._llm.n_tokens = length  # `eval` drops the KV cache from here on

    def evaluate(self, tokens: Sequence[int]) -> None:
        self._llm.eval(tokens)

    def logits(self) -> Any:
        import numpy as np

        return np.ctypeslib.as_array(self._llm._ctx.get_logits(), shape=(self._n_vocab,))

    def stream(self, tokens: Sequence[int], sampling: Sampling) -> Iterator[int]:
        # `reset=True` keeps the KV cache up to the first token that differs from what it holds.
        return self._llm.generate(
            tokens,
            repeat_penalty=sampling.repeat_penalty,
            reset=True,
            temp=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
        )

    def close(self) -> None:
        self._llm.close()


# -- a writer's context -------------------------------------------------------------------------


class WriterContext:
    """A llama.cpp context of its own on shared weights (costs only its KV cache), with a
    batch and a sampler chain; closed after one answer."""

    def __init__(
        self, weights: Weights, *, n_ctx: int, n_batch: int, threads: int, sampling: Sampling
    ) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaSampler

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_threads = params.n_threads_batch = threads
        self._ctx = LlamaContext(model=weights._model, params=params, verbose=True)
        self._batch = LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=True)
        self._sampler = LlamaSampler()
        try:
            self._set_up(weights, sampling)
        except BaseException:
            self.close()
            raise

    def _set_up(self, weights: Weights, sampling: Sampling) -> None:
        import llama_cpp

        sampler = self._sampler
        llama_cpp.llama_sampler_chain_add(
            sampler.sampler,
            llama_cpp.llama_sampler_init_penalties(
                weights.n_vocab(), sampling.penalty_last_n, sampling.repeat_penalty, 0.0, 0.0
            ),
        )
        if sampling.temperature <= 0:
            sampler.add_greedy()
            return
        sampler.add_top_k(sampling.top_k)
        sampler.add_top_p(sampling.top_p, 1)
        sampler.add_min_p(sampling.min_p, 1)
        sampler.add_temp(sampling.temperature)
        sampler.add_dist(sampling.seed)

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
