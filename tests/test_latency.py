"""Latency on a CPU: cache reuse across cursor moves, drafting from the prompt, stopping an
evaluation inside a batch. Real llama.cpp, real GGUF files."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import assets
import llama_cpp
import numpy as np
import pytest
from conftest import status
from test_server import inline, open_doc

from cl_lsp.completion.pipeline import plan_within
from cl_lsp.config import CompletionSettings, ModelSettings
from cl_lsp.engine import GenerationRequest, LocalEngine
from cl_lsp.engine.drafting import Drafter
from cl_lsp.engine.interface import Stopped
from cl_lsp.engine.kv_cache import Run, plan

SETTINGS = ModelSettings(n_ctx=2048, n_threads=2)
SOURCE = Path(__file__).resolve().parents[1] / "cl_lsp" / "engine" / "remote.py"


@pytest.fixture
def engine():
    engine = LocalEngine()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def one_layer_model(tmp_path_factory) -> Path:
    """One layer, F32: a cached key/value depends only on its token and position, so keeping
    runs at new positions must give exactly what a full evaluation gives."""
    vocab = assets.vocab_path()
    out = tmp_path_factory.mktemp("models") / "one-layer.gguf"
    return assets.build_codellama_gguf(out, vocab=vocab, n_layer=1, n_embd=128, seed=3)


def memory_span(engine: LocalEngine, seq: int) -> tuple[int, int]:
    memory = engine._model._memory
    return (
        llama_cpp.llama_memory_seq_pos_min(memory, seq),
        llama_cpp.llama_memory_seq_pos_max(memory, seq),
    )


# -- the plan -----------------------------------------------------------------------------------


def test_plan_keeps_the_common_prefix_and_nothing_else_without_reuse():
    reuse = plan([1, 2, 3, 4, 5], [1, 2, 9, 4, 5], min_run=0)
    assert (reuse.kept, reuse.runs, reuse.to_evaluate) == (2, (), 3)
    assert list(reuse.segments()) == [(2, 5)]


def test_plan_moves_runs_left_after_a_deletion_and_right_after_an_insertion():
    a, b, c = list(range(100, 120)), list(range(200, 220)), list(range(300, 320))
    cached = [1] + a + b + c
    deleted = [1] + a + c  # b removed: c moves 20 left
    reuse = plan(cached, deleted, min_run=8)
    assert reuse.kept == 21 and reuse.runs == (Run(41, 21, 20),) and reuse.to_evaluate == 0
    inserted = [1] + a + [7] * 5 + b + c  # 5 new tokens: b and c move 5 right
    reuse = plan(cached, inserted, min_run=8)
    assert reuse.kept == 21 and reuse.runs == (Run(21, 26, 40),)
    assert list(reuse.segments()) == [(21, 26), Run(21, 26, 40)]
    assert reuse.to_evaluate == 5


def test_plan_takes_runs_in_order_and_ignores_short_ones():
    a, b = list(range(100, 130)), list(range(200, 230))
    cached = a + b
    # b then a: once b is taken, a (earlier in the cache) cannot follow it.
    reuse = plan(cached, [5] + b + a, min_run=8)
    assert reuse.runs == (Run(30, 1, 30),) and reuse.to_evaluate == 31
    short = plan(cached, [5] + b[:6] + [9] * 10, min_run=8)
    assert short.runs == () and short.to_evaluate == 17


def test_plan_prefers_the_place_where_the_match_runs_longest():
    line = [11, 12, 13, 14, 15, 16, 17, 18]
    cached = [1] + line + [50] + line + [60, 61, 62, 63]
    prompt = [2] + line + [60, 61, 62, 63]
    reuse = plan(cached, prompt, min_run=8)
    assert reuse.runs == (Run(10, 1, 12),)


def test_plan_never_runs_past_either_sequence():
    rng = random.Random(5)
    for _ in range(200):
        cached = [rng.randrange(6) for _ in range(rng.randrange(0, 80))]
        prompt = [rng.randrange(6) for _ in range(rng.randrange(0, 80))]
        reuse = plan(cached, prompt, min_run=3)
        position = reuse.kept
        for run in reuse.runs:
            assert run.target >= position and run.length >= 3
            assert cached[run.source : run.source + run.length] == prompt[run.target : run.end]
            position = run.end
        assert reuse.reused + reuse.to_evaluate == len(prompt)


# -- cache reuse on a real model ----------------------------------------------------------------


def cursor_move_prompts(engine: LocalEngine) -> tuple[list[int], list[int]]:
    """Two SPM-shaped prompts of real code: the second's suffix lost its first lines and gained
    others at its end, its prefix gained lines (a cursor moved down)."""
    vocab = engine.vocab
    lines = SOURCE.read_text().splitlines(keepends=True)

    def spm(line: int) -> list[int]:
        suffix = vocab.encode("".join(lines[line : line + 40]))
        prefix = vocab.encode("".join(lines[20:line]))
        return [
            vocab.bos,
            assets.FIM_PRE_ID,
            assets.FIM_SUF_ID,
            *suffix,
            assets.FIM_MID_ID,
            *prefix,
        ]

    return spm(60), spm(66)


def test_moved_runs_give_what_a_full_evaluation_gives(engine, one_layer_model):
    engine.load_blocking(one_layer_model, SETTINGS)
    before, after = cursor_move_prompts(engine)
    reuse = plan(before, after[:-1], min_run=16)  # the cache holds all of `before`
    assert len(reuse.runs) >= 2 and any(run.shift < 0 for run in reuse.runs)
    assert any(run.shift > 0 for run in reuse.runs) or reuse.to_evaluate > 0
    engine.generate_blocking(GenerationRequest(tuple(before), 1))
    reused = engine.generate_blocking(GenerationRequest(tuple(after), 8, reuse_min_run=16))
    # Only the gaps and the last token were evaluated; the cache holds the prompt in order.
    assert reused.evaluated_tokens == reuse.to_evaluate + 1
    model = engine._model
    assert model.held[: len(after)] == tuple(after)
    assert memory_span(engine, 0) == (0, len(model.held) - 1)
    assert memory_span(engine, 1) == (-1, -1)  # nothing left aside
    # The same prompt from an empty cache: the same answer.
    engine.generate_blocking(GenerationRequest((1, 5, 6), 1))
    full = engine.generate_blocking(GenerationRequest(tuple(after), 8))
    assert full.evaluated_tokens == len(after) - 1  # BOS stays
    assert full.token_ids == reused.token_ids


def engine_logits_after(engine: LocalEngine, tokens: list[int]) -> np.ndarray:
    model = engine._model
    model.keep(0)
    model.evaluate(tokens)
    return model.logits(-1).copy()


def test_reused_runs_keep_their_scores_after_a_cursor_move(engine, one_layer_model):
    engine.load_blocking(one_layer_model, SETTINGS)
    before, after = cursor_move_prompts(engine)
    full = engine_logits_after(engine, after)
    model = engine._model
    model.keep(0)
    model.evaluate(before[:-1])
    engine._completion().prefill(after[:-1], threading.Event(), 16)
    model.evaluate(after[-1:])
    assert model.held == tuple(after)
    assert_same_scores(model.logits(-1), full)


def assert_same_scores(scores: np.ndarray, expected: np.ndarray) -> None:
    """Equal but for the rounding of the F16 cache (keys rotated to a new position are
    rounded once more: 2e-3 on scores of 4.7 measured)."""
    assert scores.argmax() == expected.argmax()
    assert np.abs(scores - expected).max() < 0.005 * np.abs(expected).max()


def test_without_reuse_only_the_common_prefix_is_kept(engine, one_layer_model):
    engine.load_blocking(one_layer_model, SETTINGS)
    before, after = cursor_move_prompts(engine)
    engine.generate_blocking(GenerationRequest(tuple(before), 1))
    result = engine.generate_blocking(GenerationRequest(tuple(after), 1))
    common = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)
    assert 3 <= common < 20 and result.evaluated_tokens == len(after) - common
    assert engine.counters.reused_tokens == 0


# -- stopping inside a batch --------------------------------------------------------------------


def test_a_stop_inside_a_batch_ends_it_at_once_and_keeps_the_record_true(engine, slow_x_model):
    engine.load_blocking(slow_x_model, replace(SETTINGS, n_batch=1024))
    model = engine._model
    tokens = [1] + [1000 + i % 500 for i in range(1000)]
    model.evaluate(tokens[:100])
    began = time.perf_counter()
    model.evaluate(tokens[100:200])
    per_token = (time.perf_counter() - began) / 100
    stop = threading.Event()
    timer = threading.Timer(0.05, stop.set)
    timer.start()
    began = time.perf_counter()
    with pytest.raises(Stopped):
        model.evaluate(tokens[200:], stop=stop)
    took = time.perf_counter() - began
    # One call of 800 tokens, stopped after a small part of its time.
    assert took < 0.05 + 0.05 < 0.5 * 800 * per_token
    assert model.held == tuple(tokens[:200])
    assert memory_span(engine, 0) == (0, 199)
    # The next evaluation carries on from the record and scores as a fresh cache does.
    model.evaluate(tokens[200:260])
    after_stop = model.logits(-1).copy()
    assert_same_scores(after_stop, engine_logits_after(engine, tokens[:260]))


def test_a_cancelled_prompt_stops_inside_its_chunk_and_the_next_answer_is_unchanged(
    engine, slow_x_model
):
    engine.load_blocking(slow_x_model, replace(SETTINGS, n_batch=1024))
    engine.prefill_rate = 1e6  # chunks as large as nBatch
    tokens = tuple([1] + [1000 + i % 500 for i in range(1000)])
    request = GenerationRequest(tokens, 4)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(engine.generate_blocking(request)))
    worker.start()
    while not engine.busy.is_set():
        time.sleep(0.002)
    time.sleep(0.1)
    request.cancel.set()
    cancelled_at = time.perf_counter()
    worker.join(30)
    assert result[0].stop_reason == "cancelled"
    assert time.perf_counter() - cancelled_at < 0.2
    again = engine.generate_blocking(GenerationRequest(tokens, 4))
    engine.generate_blocking(GenerationRequest((1, 2), 1))
    fresh = engine.generate_blocking(GenerationRequest(tokens, 4))
    assert again.token_ids == fresh.token_ids == (921,) * 4


# -- drafting -----------------------------------------------------------------------------------


def test_drafts_come_from_where_the_last_tokens_occurred_before():
    drafter = Drafter([1, 2, 3, 4, 5, 6, 9, 1, 2], limit=3)
    assert drafter.draft() == [3, 4, 5]  # after the last "1 2"
    drafter.add(7)
    assert drafter.draft() == []  # "1 2 7", "2 7" never occurred
    drafter.add(3)
    assert drafter.draft() == []
    drafter.checked(3, 0)
    drafter2 = Drafter([4, 5, 6, 4, 5], limit=8)
    drafter2.checked(8, 1)  # shrinks to twice what was accepted
    assert drafter2.draft() == [6, 4]


def real_code_prompts(engine: LocalEngine, count: int) -> list[tuple[int, ...]]:
    lines = SOURCE.read_text().splitlines(keepends=True)
    step = (len(lines) - 80) // count
    return [
        tuple(engine.vocab.encode("".join(lines[at : at + 60])))
        for at in range(40, 40 + step * count, step)
    ]


def test_drafting_gives_the_same_answer_in_fewer_passes(engine, tiny_model, x_model):
    for model in (tiny_model, x_model):
        engine.load_blocking(model, SETTINGS)
        for tokens in real_code_prompts(engine, 6):
            plain = engine.generate_blocking(GenerationRequest(tokens, 40))
            drafted = engine.generate_blocking(GenerationRequest(tokens, 40, draft=8))
            assert drafted.token_ids == plain.token_ids and len(plain.token_ids) == 40
    # " x x x ...": every draft after the first few tokens is right.
    assert engine.counters.accepted_tokens > 6 * 30


# -- warming up ---------------------------------------------------------------------------------


async def test_a_request_stops_a_warm_up_inside_its_chunk(engine, slow_x_model):
    engine.load_blocking(slow_x_model, replace(SETTINGS, n_batch=1024))
    engine.prefill_rate = 1e6  # chunks as large as nBatch: one call for the whole warm-up
    long = tuple([1] + [1000 + i % 500 for i in range(1000)])
    began = time.perf_counter()
    engine._completion().prefill(list(long[:-1]), threading.Event(), 0)
    whole = time.perf_counter() - began  # what the warm-up's one chunk costs
    engine._model.keep(0)
    warming = asyncio.ensure_future(engine.warm(GenerationRequest(long, 1)))
    while engine.warm_ups.started == 0:
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.05)
    asked = time.perf_counter()
    answer = await engine.generate(GenerationRequest((1, 2000, 2001, 2002), 4))
    waited = time.perf_counter() - asked - answer.seconds  # before the request could start
    assert await warming < len(long) - 1
    assert engine.warm_ups.preempted == 1 and answer.token_ids == (921,) * 4
    assert waited < 0.05 < whole / 4


async def test_a_warm_up_waits_for_requests_and_actions(engine, x_model):
    engine.load_blocking(x_model, SETTINGS)
    tokens = tuple([1] + [1000 + i for i in range(50)])
    engine.priority.completion_started()  # a completion is queued
    assert await engine.warm(GenerationRequest(tokens, 1)) == 0
    engine.priority.completion_finished()
    assert await engine.warm(GenerationRequest(tokens, 1)) == len(tokens) - 1
    assert engine.held_tokens() == tokens[:-1]
    # What the warm-up evaluated, the request keeps.
    answer = await engine.generate(GenerationRequest(tokens, 2))
    assert answer.evaluated_tokens == 1


async def test_an_opened_document_is_warmed_so_the_first_request_is_cheap(
    start_server, slow_x_model, tmp_path
):
    client = await start_server(model=slow_x_model, options={"completion": {"maxTokens": 4}})
    text = SOURCE.read_text()
    cold_uri, warm_uri = (tmp_path / "cold.py").as_uri(), (tmp_path / "warm.py").as_uri()
    # A cursor at the start of a document, straight after opening it: the whole window.
    open_doc(client, cold_uri, text)
    await inline(client, cold_uri, 0, 0)
    # The same, after a pause: the warm-up evaluated the window meanwhile.
    open_doc(client, warm_uri, (SOURCE.parent / "wire.py").read_text())
    deadline = time.monotonic() + 30
    while (await status(client))["warmUps"]["tokens"] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    while (await status(client))["busy"] or time.monotonic() < deadline - 29:
        await asyncio.sleep(0.1)
    await inline(client, warm_uri, 0, 0)
    cold, warm = (await status(client))["recent"][-2:]
    # At a document's start the window is the suffix: 500 tokens (completion.suffixTokens).
    assert cold["promptTokens"] > 400 and cold["evaluatedTokens"] > 400
    assert warm["evaluatedTokens"] <= 3
    assert (await status(client))["warmUps"]["tokens"] > 400


# -- the cold-start budget ----------------------------------------------------------------------


def test_a_cold_window_is_cut_to_the_budget_and_grows_with_what_is_cached(tiny_vocab):
    text = SOURCE.read_text()
    offset = text.index("\n", len(text) // 2) + 1
    settings = CompletionSettings(cold_budget_ms=1000)
    common = {"vocab": tiny_vocab, "n_ctx": 4096, "language_id": "python", "path": "remote.py"}
    full = plan_within(text, offset, held=(), rate=None, settings=settings, **common)
    assert not full.cold and len(full.request.tokens) > 1000
    # 200 prompt tokens/s, 1 s: a window of at most 200 new tokens.
    first = plan_within(text, offset, held=(), rate=200.0, settings=settings, **common)
    assert first.cold and 50 < len(first.request.tokens) <= 200
    held = first.request.tokens[:-1]
    second = plan_within(text, offset, held=held, rate=200.0, settings=settings, **common)
    assert len(second.request.tokens) > len(first.request.tokens)
    reuse = plan(held, second.request.tokens[:-1], min_run=settings.cache_reuse)
    assert reuse.reused >= len(held) - 10 and reuse.to_evaluate < 200
    # Once the whole window is held, no cut.
    held = full.request.tokens[:-1]
    again = plan_within(text, offset, held=held, rate=200.0, settings=settings, **common)
    assert not again.cold and again.request.tokens == full.request.tokens
