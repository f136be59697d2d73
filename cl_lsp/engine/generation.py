"""One completion on a `ModelSession`: prompt in chunks, token healing, the sampling loop.

The session keeps what its KV cache holds of the prompt: the common prefix, and with cache
reuse runs found at other positions (`kv_cache.py`). The answer may be drafted from the prompt
and checked in batches (`drafting.py`). The request's cancel flag stops an evaluation inside
llama.cpp, within milliseconds (`Stopped`). Between tokens we check it, the stop tokens (the model's EOS
and EOT, and the FIM family's end tokens the request carries, such as Code Llama's `<EOT>`,
found by id even when the GGUF lacks `eot_token_id`), the token budget, the
deadline and the stop rules of `stop_after_piece` (the first newline for single-line requests,
the end of the block).
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable, Iterator

from . import kv_cache
from .drafting import Drafter
from .interface import (
    EngineCounters,
    EngineError,
    Generation,
    GenerationRequest,
    ModelSession,
    Sampling,
    Stopped,
    Tokenizer,
    stop_after_piece,
)

log = logging.getLogger(__name__)
# A stopped evaluation loses its whole call (llama.cpp drops the batch), so the prompt goes in
# chunks: what was evaluated before the stop stays in the cache for the next request. The chunk
# adapts to the measured speed so one takes about PREFILL_CHUNK_SECONDS (the most work a stop
# throws away), but never drops below PREFILL_MIN_CHUNK: on the 7B-shaped Q4_K model on 2
# cores, chunks of 4 or 8 tokens ran at 8.5-9.4 tokens/s against 16.8 for 16 and 17.1 for 32
# (BENCHMARKS.md). Code actions' writers, which have no stop inside a call, check between chunks.
PREFILL_MIN_CHUNK = 16
PREFILL_FIRST_CHUNK = 32  # before anything is measured
PREFILL_CHUNK_SECONDS = 0.5


def prefill_chunk(rate: float | None, n_batch: int) -> int:
    """Prompt tokens per model call at `rate` tokens/s: about PREFILL_CHUNK_SECONDS of work."""
    if rate is None:
        return min(PREFILL_FIRST_CHUNK, n_batch)
    size = int(rate * PREFILL_CHUNK_SECONDS) // 16 * 16
    return max(min(PREFILL_MIN_CHUNK, n_batch), min(n_batch, size))


def sampling_for(temperature: float) -> Sampling:
    """Completions: greedy at temperature 0, else top-k 40, top-p 0.95, min-p 0.05."""
    if temperature <= 0:
        return Sampling(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0)
    return Sampling(temperature=temperature)


class Completion:
    """Runs requests on one session, counting into the engine's counters."""

    def __init__(
        self,
        session: ModelSession,
        vocab: Tokenizer,
        *,
        counters: EngineCounters,
        busy: threading.Event,
        chunk: Callable[[], int],
        measured: Callable[[int, float], None],
    ) -> None:
        self._session, self._vocab = session, vocab
        self._counters, self._busy = counters, busy
        self._chunk, self._measured = chunk, measured  # prefill pace: size, and its feedback

    def run(self, request: GenerationRequest, started: float | None = None) -> Generation:
        started = time.perf_counter() if started is None else started
        tokens = list(request.tokens)
        if request.cancel.is_set():
            return Generation("", (), len(tokens), 0, "cancelled", 0.0, time.monotonic())
        if not tokens:  # nothing to continue (a model without BOS, at a document's start)
            return Generation("", (), 0, 0, "empty_prompt", 0.0, time.monotonic())
        n_ctx = self._session.n_ctx
        room = n_ctx - len(tokens)
        if room <= 0:
            raise EngineError(
                f"the prompt ({len(tokens)} tokens) does not fit the context window "
                f"({n_ctx}); lower completion.prefixTokens/suffixTokens or raise model.nCtx"
            )
        max_tokens = min(request.max_tokens, room)
        self._counters.generations_started += 1
        self._counters.prompt_tokens += len(tokens)
        self._busy.set()
        evaluated = 0
        try:
            evaluated, cancelled = self.prefill(tokens[:-1], request.cancel, request.reuse_min_run)
            if cancelled:
                return self._cancelled(tokens, evaluated, (), "", started)
            healed: list[int] = []
            healed_text = ""
            evaluated += 1  # the prompt's last token, for the first scores
            self._session.evaluate(tokens[-1:], stop=request.cancel)
            if request.heal:
                healing = self._heal(request.heal, request.cancel)
                evaluated += len(healing[0]) if healing else 0
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
            # The healed tokens re-spell what the user typed: they do not use up the budget.
            budget = min(max_tokens, room - len(healed))
            text, generated, reason = self._sample(tokens + healed, request, budget, healed_text)
            generated = healed + generated
            text = text[len(request.heal) :]
        except Stopped:
            return self._cancelled(tokens, evaluated, (), "", started)
        except Exception as error:
            raise EngineError(f"the model failed while generating: {error}") from error
        finally:
            self._busy.clear()
            self._counters.evaluated_tokens += evaluated
        if reason == "cancelled":
            return self._cancelled(tokens, evaluated, tuple(generated), text, started)
        self._counters.generated_tokens += len(generated)
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

    def prefill(self, tokens: list[int], cancel: threading.Event, min_run: int) -> tuple[int, bool]:
        """Bring `tokens` into the KV cache: keep what it holds of them (the common prefix, and
        with `min_run` > 0 runs found elsewhere, moved: see `kv_cache.py`), evaluate the rest in
        chunks. A set `cancel` stops the evaluation inside a chunk (llama.cpp's abort callback);
        the tokens evaluated and whether it was stopped are returned."""
        session = self._session
        reuse = kv_cache.plan(session.held, tokens, min_run=min_run if session.can_shift else 0)
        session.rearrange(reuse)
        self._counters.reused_tokens += reuse.reused - reuse.kept
        evaluated = 0
        try:
            for segment in reuse.segments():
                if isinstance(segment, kv_cache.Run):
                    session.place(segment)
                    continue
                start, end = segment
                while start < end:
                    if cancel.is_set():
                        return evaluated, True
                    chunk = tokens[start : min(end, start + self._chunk())]
                    began = time.perf_counter()
                    session.evaluate(chunk, stop=cancel)
                    self._measured(len(chunk), time.perf_counter() - began)
                    evaluated += len(chunk)
                    start += len(chunk)
        except Stopped:
            return evaluated, True
        finally:
            session.forget_aside()
        return evaluated, False

    def _heal(self, heal: str, cancel: threading.Event) -> tuple[list[int], str] | None:
        """Greedy decoding constrained to spell `heal` (the last token may run past it), after
        the prompt was evaluated.

        Returns the chosen ids and their text, or None when cancelled or nothing fits.
        """
        session, vocab = self._session, self._vocab
        chosen: list[int] = []
        text = ""
        while len(text) < len(heal) or not text.startswith(heal):
            remaining = heal[len(text) :]
            if cancel.is_set() or not text.startswith(heal[: len(text)]):
                return None
            candidates = vocab.heal_candidates(remaining)
            if not candidates:
                return None
            logits = session.logits()
            best = max(candidates, key=lambda token: logits[token])
            chosen.append(best)
            text += vocab.text_of(best)
            session.evaluate([best], stop=cancel)
        return chosen, text

    def _tokens(self, context: list[int], request: GenerationRequest) -> Iterator[int]:
        """The answer's tokens, one at a time, after `context` (whose scores are ready).

        Greedy with `request.draft` > 0: tokens drafted from the context (`drafting.py`) are
        checked in one batch after each chosen token and kept as long as each is the one the
        model chooses, so the tokens are the same as one at a time.
        """
        session = self._session
        sampler = session.sampler(sampling_for(request.temperature))
        try:
            drafts = sampler.greedy and request.draft > 0
            drafter = Drafter(context, limit=request.draft) if drafts else None
            index = -1  # the output row whose scores choose the next token
            while True:
                token = sampler.pick(index)
                index = -1
                yield token
                if drafter is None:
                    session.evaluate([token], stop=request.cancel)
                    continue
                drafter.add(token)
                draft = drafter.draft()
                session.evaluate([token, *draft], outputs=bool(draft), stop=request.cancel)
                accepted = 0
                for i, drafted in enumerate(draft):
                    if sampler.pick(i) != drafted:
                        break
                    accepted += 1
                    yield drafted
                    drafter.add(drafted)
                if draft:
                    self._counters.drafted_tokens += len(draft)
                    self._counters.accepted_tokens += accepted
                    drafter.checked(len(draft), accepted)
                    # The scores after the last accepted token choose the next one.
                    session.keep(len(session.held) - (len(draft) - accepted))
                    index = accepted
        finally:
            sampler.close()

    def _sample(
        self, tokens: list[int], request: GenerationRequest, max_tokens: int, text: str = ""
    ) -> tuple[str, list[int], str]:
        vocab = self._vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        reason = "context_full" if max_tokens < request.max_tokens else "max_tokens"
        deadline = (time.monotonic() + request.max_seconds) if request.max_seconds else None
        tokens_out = self._tokens(tokens, request)
        try:
            for token in tokens_out:
                if request.cancel.is_set():
                    return text, generated, "cancelled"
                if token in vocab.stop_ids or token in request.stop_ids:
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
        except Stopped:
            return text, generated, "cancelled"
        finally:
            tokens_out.close()
        return text + decoder.decode(b"", final=True), generated, reason

    def _cancelled(
        self,
        tokens: list[int],
        evaluated: int,
        generated: tuple[int, ...],
        text: str,
        started: float,
    ) -> Generation:
        self._counters.generations_cancelled += 1
        self._counters.generated_tokens += len(generated)
        return Generation(
            text,
            generated,
            len(tokens),
            evaluated,
            "cancelled",
            time.perf_counter() - started,
            time.monotonic(),
        )
