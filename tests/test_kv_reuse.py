"""Latency on a CPU: cache reuse across cursor moves, drafting from the prompt, stopping an
evaluation inside a batch. Real llama.cpp, real GGUF files."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import assets
import llama_cpp
import numpy as np
import pytest

from cl_lsp.config import ModelSettings
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
