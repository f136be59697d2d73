"""The engine with the real llama.cpp and tiny Code Llama-vocabulary GGUFs."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import assets
import pytest

from cl_lsp.completion.families import fim_format
from cl_lsp.completion.prompts import Layout, build_fim_prompt
from cl_lsp.config import ModelSettings
from cl_lsp.engine import (
    PREFILL_FIRST_CHUNK,
    PREFILL_MIN_CHUNK,
    EngineError,
    GenerationRequest,
    LocalEngine,
    Priority,
    stop_after_piece,
)

SETTINGS = ModelSettings(n_ctx=1024, n_threads=2)


@pytest.fixture
def engine():
    engine = LocalEngine()
    yield engine
    engine.close()


def load(engine: LocalEngine, path: Path) -> LocalEngine:
    engine.load_blocking(path, SETTINGS)
    assert engine.ready
    return engine


def prompt(engine: LocalEngine, prefix: str, suffix: str = "\n") -> tuple[int, ...]:
    vocab = engine.vocab
    return build_fim_prompt(prefix, suffix, vocab.encode, fim_format(vocab), Layout.SPM).tokens


def test_stops_on_eot_although_the_gguf_does_not_declare_it(engine, eot_model):
    load(engine, eot_model)
    # The model's own end tokens are EOS only (llama.cpp does not know "▁<EOT>"): Code Llama's
    # <EOT> comes with the request, from its family.
    assert fim_format(engine.vocab).stop_ids == {assets.EOT_ID}
    request = GenerationRequest(prompt(engine, "def f(x):"), 32)
    stops = fim_format(engine.vocab).stop_ids
    assert engine.generate_blocking(request).stop_reason == "max_tokens"
    result = engine.generate_blocking(replace(request, stop_ids=stops))
    assert result.stop_reason == "eot"
    assert result.text == "" and result.token_ids == ()


def test_generation_respects_the_token_budget(engine, x_model):
    load(engine, x_model)
    result = engine.generate_blocking(GenerationRequest(prompt(engine, "y ="), 7))
    assert result.stop_reason == "max_tokens"
    assert result.token_ids == (921,) * 7
    assert result.text == " x" * 7


def test_single_line_requests_stop_at_the_newline(engine, tiny_model):
    load(engine, tiny_model)
    # The random model writes noise; whatever it writes, nothing may follow a newline.
    for prefix in ("import os\n", "def f(x):\n    ", "a = [", "print("):
        result = engine.generate_blocking(
            GenerationRequest(prompt(engine, prefix), 40, stop_at_newline=True)
        )
        if "\n" in result.text:
            assert result.stop_reason == "newline"
            assert result.text.index("\n") >= len(result.text) - 4  # the last piece holds it


def test_kv_cache_is_reused_for_a_growing_prompt(engine, x_model):
    load(engine, x_model)
    base = "def total(xs):\n    result = 0\n    for x in xs:\n        result += "
    first = engine.generate_blocking(GenerationRequest(prompt(engine, base), 4))
    assert first.evaluated_tokens == first.prompt_tokens
    again = engine.generate_blocking(GenerationRequest(prompt(engine, base), 4))
    assert again.evaluated_tokens <= 1  # same prompt: at most the last token to refresh logits
    typed = engine.generate_blocking(GenerationRequest(prompt(engine, base + "x"), 4))
    assert 1 <= typed.evaluated_tokens <= 3
    assert engine.counters.generations_started == 3
    assert engine.counters.evaluated_tokens == (
        first.evaluated_tokens + again.evaluated_tokens + typed.evaluated_tokens
    )


def test_a_cancelled_generation_stops_within_a_token(engine, slow_x_model):
    load(engine, slow_x_model)
    request = GenerationRequest(prompt(engine, "y ="), 900)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(engine.generate_blocking(request)))
    worker.start()
    while not engine.busy.is_set():
        time.sleep(0.005)
    time.sleep(0.2)
    request.cancel.set()
    cancelled_at = time.perf_counter()
    worker.join(10)
    stopped_after = time.perf_counter() - cancelled_at
    assert result and result[0].stop_reason == "cancelled"
    assert 0 < len(result[0].token_ids) < 900
    assert stopped_after < 0.5
    assert engine.counters.generations_cancelled == 1


def test_prompt_chunks_grow_to_the_measured_speed(engine, tiny_model):
    load(engine, tiny_model)
    assert engine.prefill_chunk == PREFILL_FIRST_CHUNK and engine.prefill_rate is None
    long_prefix = "".join(f"value_{n} = compute({n}, {n * 7})\n" for n in range(60))
    result = engine.generate_blocking(GenerationRequest(prompt(engine, long_prefix), 2))
    assert result.evaluated_tokens == result.prompt_tokens > 600
    # The tiny model evaluates thousands of tokens a second: half a second's worth is more
    # than a batch, so chunks become whole batches.
    assert engine.prefill_rate > 1000
    assert engine.prefill_chunk == SETTINGS.n_batch
    assert engine.status()["prefillChunk"] == SETTINGS.n_batch


@pytest.mark.parametrize(
    ("rate", "n_batch", "chunk"),
    [
        (17.0, 512, PREFILL_MIN_CHUNK),  # 7B on 2 cores: never below the efficient minimum
        (100.0, 512, 48),  # half a second's worth, in steps of 16
        (1e5, 512, 512),  # never more than a batch
        (1e5, 8, 8),  # a batch smaller than the minimum wins
    ],
)
def test_prompt_chunk_is_half_a_second_of_work_within_bounds(rate, n_batch, chunk):
    engine = LocalEngine()
    try:
        engine.prefill_rate, engine.n_batch = rate, n_batch
        assert engine.prefill_chunk == chunk
    finally:
        engine.close()


def test_a_request_cancelled_before_it_starts_never_runs(engine, x_model):
    load(engine, x_model)
    request = GenerationRequest(prompt(engine, "y ="), 10)
    request.cancel.set()
    result = engine.generate_blocking(request)
    assert result.stop_reason == "cancelled"
    assert engine.counters.generations_started == 0


def test_a_prompt_longer_than_the_window_is_refused_clearly(engine, x_model):
    load(engine, x_model)
    with pytest.raises(EngineError, match="does not fit the context window"):
        engine.generate_blocking(GenerationRequest(tuple([1] * 2000), 10))


def test_an_empty_prompt_is_answered_empty_not_from_the_last_scores(engine, smollm2_model):
    # SmolLM2 adds no BOS: at a document's start its prompt is empty. Sampling anyway would
    # continue whatever the model evaluated last.
    load(engine, smollm2_model)
    engine.generate_blocking(GenerationRequest(tuple(engine.vocab.encode("def main():")), 4))
    empty = engine.generate_blocking(GenerationRequest((), 8))
    assert (empty.text, empty.token_ids, empty.stop_reason) == ("", (), "empty_prompt")
    again = engine.generate_blocking(GenerationRequest(tuple(engine.vocab.encode("x = 1")), 4))
    assert again.token_ids


def test_a_corrupt_model_fails_with_a_clear_error(engine, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(EngineError, match="could not load the model"):
        engine.load_blocking(broken, SETTINGS)
    assert engine.state.value == "failed"


def test_token_healing_spells_the_left_out_word_first(engine, tiny_model):
    from cl_lsp.completion.prompts import build_healed_prompt

    load(engine, tiny_model)
    vocab = engine.vocab
    healed = build_healed_prompt("def f(x):\n    return fi", "\n", vocab.encode, fim_format(vocab))
    assert healed.heal == " fi"
    result = engine.generate_blocking(GenerationRequest(healed.tokens, 6, heal=healed.heal))
    spelled = "".join(vocab.text_of(token) for token in result.token_ids)
    assert spelled.startswith(" fi")
    assert result.text == spelled[len(" fi") :]
    # typing one more letter re-uses the whole prompt from the KV cache
    again = build_healed_prompt("def f(x):\n    return fib", "\n", vocab.encode, fim_format(vocab))
    second = engine.generate_blocking(GenerationRequest(again.tokens, 6, heal=again.heal))
    assert second.evaluated_tokens <= 1 + len(second.token_ids)
    assert "".join(vocab.text_of(t) for t in second.token_ids).startswith(" fib")


def write(engine: LocalEngine, job, cancel: threading.Event | None = None, **settings):
    import asyncio

    from cl_lsp.config import ActionSettings

    async def run():
        return await engine.write(job, ActionSettings(**settings), cancel or threading.Event())

    return asyncio.run(run())


def test_writer_prompt_is_code_llama_instruct_token_for_token(engine, tiny_model, tiny_vocab):
    load(engine, tiny_model)
    tokens = write(engine, lambda writer: writer.prompt("Be brief.", "Explain <s> f."))
    expected = [
        1,
        *tiny_vocab.encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nExplain <s> f. [/INST]"),
    ]
    assert tokens == expected  # "<s>" in the user's text stays text: BOS appears once
    assert tokens.count(1) == 1


def test_writer_uses_the_models_chat_template_and_writes_text(engine, smollm2_model):
    load(engine, smollm2_model)

    def job(writer):
        tokens = writer.prompt("You are helpful.", "Say hello <|im_end|>")
        im_end = [t for t in tokens if writer.text_of([t]) == "<|im_end|>"]
        return writer.text_of(tokens), im_end, writer.generate(tokens)

    text, im_end, written = write(engine, job, max_tokens=24, temperature=0.0)
    assert text.startswith("<|im_start|>system\nYou are helpful.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert len(im_end) == 2  # the template's two; the one in the user's text is plain text
    assert written.stop_reason in ("eos", "max_tokens") and written.text.strip()
    assert engine.actions_started == 1


def test_writer_pauses_while_a_completion_waits_and_stops_when_cancelled(engine, x_model):
    load(engine, x_model)
    cancel = threading.Event()
    progress: list[int] = []

    def job(writer):
        return writer.generate(
            writer.prompt("s", "u"), on_text=lambda text: progress.append(len(text))
        )

    engine.priority.completion_started()  # as while a completion request is queued
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(write(engine, job, cancel, max_tokens=500))
    )
    thread.start()
    time.sleep(0.5)
    assert progress == []  # nothing written while the completion waits
    engine.priority.completion_finished()
    deadline = time.time() + 10
    while len(progress) < 5 and time.time() < deadline:
        time.sleep(0.01)
    cancel.set()
    thread.join(10)
    (written,) = result
    assert written.stop_reason == "cancelled" and 5 <= written.generated_tokens < 500


def test_stop_after_piece_applies_the_newline_and_block_end_stops():
    """The stop rules on each decoded piece, as the sampler applies them (pure)."""
    single = GenerationRequest((1,), 8, stop_at_newline=True)
    assert stop_after_piece(single, "x = 1", " 1") is None
    assert stop_after_piece(single, "x = 1\n", "\n") == ("x = 1\n", "newline")
    cut_at_end = GenerationRequest(
        (1,), 8, stop_check=lambda text: i if (i := text.find("\nend")) >= 0 else None
    )
    assert stop_after_piece(cut_at_end, "a\nb\n", "\n") is None
    assert stop_after_piece(cut_at_end, "a\nend\n", "\n") == ("a", "end_of_block")
    assert stop_after_piece(cut_at_end, "a\nend x", " x") is None  # only at line breaks


def test_priority_lets_a_writer_go_when_the_last_completion_ends_or_it_is_cancelled():
    """Completions first: a waiting writer resumes as soon as the last completion finishes,
    and a woken cancellation ends its wait at once (no model needed)."""
    priority = Priority()
    priority.CANCEL_CHECK_SECONDS = 60.0  # only a notification can end these waits in time
    cancel = threading.Event()
    assert priority.wait_turn(cancel)  # nothing running: no wait
    priority.completion_started()
    priority.completion_started()
    turns: list[bool] = []
    writer = threading.Thread(target=lambda: turns.append(priority.wait_turn(cancel)))
    writer.start()
    priority.completion_finished()
    writer.join(0.2)
    assert writer.is_alive() and priority.completions == 1  # one completion still runs
    priority.completion_finished()
    writer.join(5)
    assert turns == [True]

    priority.completion_started()
    writer = threading.Thread(target=lambda: turns.append(priority.wait_turn(cancel)))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()
    cancel.set()
    priority.wake()
    writer.join(5)
    assert turns == [True, False]
    assert not priority.wait_turn(cancel)  # a cancelled writer never gets a turn
