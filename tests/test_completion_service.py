"""Completion requests against a fake engine: debounce, newest wins, reuse, stale answers.

The fake engine answers scripted text after a gate the test opens, so each rule is checked in
process, in milliseconds (the end-to-end tests check the same rules over stdio with models).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import ClassVar

import pytest

from cl_lsp.completion import service as completions_module
from cl_lsp.completion.service import Completions
from cl_lsp.config import CompletionSettings
from cl_lsp.engine import Generation, GenerationRequest

URI = "file:///work/add.py"
OTHER = "file:///work/other.py"
TEXT = "def add(a, b):\n    \n\n\nprint(add(1, 2))\n"
OFFSET = TEXT.index("    \n") + 4  # in the function's empty body
ANSWER = "return a + b"
CONTROL = 16  # ids below this are control tokens; characters come after


class FakeVocabulary:
    """One token per character, and Code Llama's FIM control tokens."""

    bos = 1
    add_bos = True
    space_prefix = False
    placeholder_ids = False
    model_name = "fake.gguf"
    fim_ids: ClassVar = {"pre": 2, "suf": 3, "mid": 4}
    _control: ClassVar = {"▁<PRE>": 2, "▁<SUF>": 3, "▁<MID>": 4, "▁<EOT>": 5}

    def token_id(self, text: str) -> int | None:
        return self._control.get(text)

    def token_text(self, token: int) -> str:
        return {token: text for text, token in self._control.items()}.get(token, "")

    def encode(self, text: str) -> list[int]:
        return [CONTROL + ord(ch) for ch in text]

    def count(self, text: str) -> int:
        return len(text)


def decode(tokens: tuple[int, ...]) -> str:
    return "".join(chr(token - CONTROL) for token in tokens if token >= CONTROL)


class FakeEngine:
    """Answers every request with `answer` once `gate` is open (at once when it is None),
    as the real engine does: a request whose cancel flag is set stops as "cancelled"."""

    heals = True
    warms = True

    def __init__(self) -> None:
        self.vocab = FakeVocabulary()
        self.n_ctx = 4096
        self.wind_down = 0.0  # seconds a cancelled generation takes to end (a stream closing)
        self.running = self.most_running = 0
        self.model_path = "fake.gguf"
        self.answer = ANSWER
        self.gate: asyncio.Event | None = None
        self.requests: list[GenerationRequest] = []
        self.warmed: list[GenerationRequest] = []
        self.prefill_rate: float | None = None
        self.held: tuple[int, ...] = ()
        self.ready = True

    def held_tokens(self) -> tuple[int, ...]:
        return self.held

    async def warm(self, request: GenerationRequest) -> int:
        self.warmed.append(request)
        return len(request.tokens) - 1

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            while self.gate is not None and not self.gate.is_set():
                if request.cancel.is_set():
                    await asyncio.sleep(self.wind_down)
                    break
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            request.cancel.set()
            raise
        finally:
            self.running -= 1
        cancelled = request.cancel.is_set()
        text = "" if cancelled else self.answer
        tokens = tuple(range(len(text)))
        reason = "cancelled" if cancelled else "eot"
        return Generation(
            text, tokens, len(request.tokens), len(request.tokens), reason, 0.001, time.monotonic()
        )


class Editor:
    """The server's side of a request: the document's current version, per document."""

    def __init__(self, completions: Completions) -> None:
        self.completions = completions
        self.versions: dict[str, int] = {URI: 1, OTHER: 1}

    async def suggest(self, text: str = TEXT, offset: int = OFFSET, uri: str = URI):
        version = self.versions[uri]
        return await self.completions.suggest(
            uri, text, version, offset, lambda: self.versions.get(uri), language_id="python"
        )

    def start(self, text: str = TEXT, offset: int = OFFSET, uri: str = URI) -> asyncio.Task:
        return asyncio.ensure_future(self.suggest(text, offset, uri))


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings() -> dict[str, CompletionSettings]:
    return {"completion": CompletionSettings(debounce_ms=0)}


@pytest.fixture
async def editor(engine, settings) -> AsyncIterator[Editor]:
    completions = Completions(engine, lambda: settings["completion"])  # type: ignore[arg-type]
    yield Editor(completions)
    completions.scheduler.cancel_all()
    completions._planner.shutdown(wait=False)


async def until(condition: Callable[[], bool], seconds: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


async def test_the_debounce_waits_then_the_model_generates(editor, engine, settings):
    settings["completion"] = CompletionSettings(debounce_ms=60)
    started = time.monotonic()
    suggestion, record = await editor.suggest()
    assert suggestion == ANSWER
    assert time.monotonic() - started >= 0.06
    assert record.outcome == "generated"
    assert record.debounce_ms >= 55
    assert len(engine.requests) == 1
    prompt = decode(engine.requests[0].tokens)
    assert prompt.endswith(TEXT[:OFFSET]) and prompt.startswith(TEXT[OFFSET:])  # SPM


async def test_a_place_with_nothing_to_write_is_answered_before_the_debounce_ends(
    editor, engine, settings
):
    settings["completion"] = CompletionSettings(debounce_ms=2000)
    inside_a_name = TEXT.index("add(1") + 2  # pr|int: the model is not asked mid-word
    started = time.monotonic()
    suggestion, record = await asyncio.wait_for(editor.suggest(offset=inside_a_name), 5)
    assert (suggestion, record.outcome) == ("", "none")
    assert time.monotonic() - started < 1.0  # not the 2 s debounce
    assert record.debounce_ms < 1000
    assert engine.requests == []


async def test_a_documents_next_generation_starts_once_the_superseded_one_ended(editor, engine):
    # A server engine's superseded stream takes a moment to close: the next generation for
    # the document waits for it, so the server never runs two for one document.
    engine.gate, engine.wind_down = asyncio.Event(), 0.05
    older = editor.start()
    await until(lambda: engine.running == 1)
    newer = editor.start()
    assert (await older)[0] == ""
    await until(lambda: len(engine.requests) == 2)
    engine.gate.set()
    suggestion, record = await newer
    assert suggestion == ANSWER and record.outcome == "generated"
    assert engine.most_running == 1


async def test_a_newer_request_supersedes_one_waiting_out_its_debounce(editor, engine, settings):
    settings["completion"] = CompletionSettings(debounce_ms=200)
    older = editor.start()
    await asyncio.sleep(0.01)
    started = time.monotonic()
    newer = editor.start()
    suggestion, record = await older
    assert (suggestion, record.outcome) == ("", "superseded")
    assert time.monotonic() - started < 0.1  # answered at once, not after its debounce
    assert (await newer)[0] == ANSWER
    assert len(engine.requests) == 1


async def test_a_newer_request_stops_the_older_ones_generation(editor, engine):
    engine.gate = asyncio.Event()
    older = editor.start()
    await until(lambda: len(engine.requests) == 1)
    newer = editor.start(TEXT[:OFFSET] + "r" + TEXT[OFFSET:], OFFSET + 1)
    suggestion, record = await asyncio.wait_for(older, 0.1)  # before the gate opens
    assert (suggestion, record.outcome) == ("", "superseded")
    assert engine.requests[0].cancel.is_set()
    await until(lambda: len(engine.requests) == 2)
    engine.gate.set()
    suggestion, record = await newer
    assert (suggestion, record.outcome) == (ANSWER, "generated")


async def test_requests_for_different_documents_do_not_supersede_each_other(editor, engine):
    engine.gate = asyncio.Event()
    first = editor.start(uri=URI)
    second = editor.start(uri=OTHER)
    await until(lambda: len(engine.requests) == 2)
    assert not any(request.cancel.is_set() for request in engine.requests)
    engine.gate.set()
    assert [(await task)[0] for task in (first, second)] == [ANSWER, ANSWER]


async def test_a_change_during_the_debounce_makes_the_answer_stale(editor, engine, settings):
    settings["completion"] = CompletionSettings(debounce_ms=50)
    pending = editor.start()
    await asyncio.sleep(0.01)
    editor.versions[URI] = 2  # didChange, without a newer request
    suggestion, record = await pending
    assert (suggestion, record.outcome) == ("", "stale")
    assert engine.requests == []


async def test_a_change_during_the_generation_makes_the_answer_stale(editor, engine):
    engine.gate = asyncio.Event()
    pending = editor.start()
    await until(lambda: len(engine.requests) == 1)
    editor.versions[URI] = 2
    engine.gate.set()
    suggestion, record = await pending
    assert (suggestion, record.outcome) == ("", "stale")


async def test_typing_the_suggestions_start_is_answered_without_the_model(editor, engine):
    assert (await editor.suggest())[0] == ANSWER
    typed = TEXT[:OFFSET] + "ret" + TEXT[OFFSET:]
    suggestion, record = await editor.suggest(typed, OFFSET + 3)
    assert (suggestion, record.outcome) == ("urn a + b", "typed_ahead")
    assert len(engine.requests) == 1
    assert editor.completions.answers_without_model == 1


async def test_the_same_request_again_is_answered_from_the_cache(editor, engine):
    assert (await editor.suggest())[0] == ANSWER
    editor.versions[URI] = 2  # undo and redo: the same text under a new version
    suggestion, record = await editor.suggest()
    assert (suggestion, record.outcome) == (ANSWER, "cached")
    assert len(engine.requests) == 1


async def test_without_reuse_every_request_runs_the_model(editor, engine, settings):
    settings["completion"] = CompletionSettings(debounce_ms=0, reuse=False)
    for _ in range(2):
        assert (await editor.suggest())[1].outcome == "generated"
    assert len(engine.requests) == 2


async def test_forget_drops_the_documents_state_and_ends_its_request(editor, engine):
    completions = editor.completions
    assert (await editor.suggest())[0] == ANSWER
    assert completions.table_sizes()["shown"] == 1
    engine.gate = asyncio.Event()
    pending = editor.start(TEXT + "\n", OFFSET)  # not typed ahead, not cached: to the model
    await until(lambda: len(engine.requests) == 2)
    completions.forget(URI)
    assert (await asyncio.wait_for(pending, 0.1))[0] == ""
    assert URI not in completions.documents
    sizes = completions.table_sizes()
    assert (sizes["shown"], sizes["anchors"], sizes["suffixes"]) == (0, 0, 0)


async def test_clear_forgets_the_shown_suggestions_but_keeps_the_windows(editor):
    await editor.suggest()
    editor.completions.clear()
    sizes = editor.completions.table_sizes()
    assert (sizes["shown"], sizes["anchors"], sizes["resultCache"]) == (0, 1, 0)


async def test_the_window_edges_are_carried_to_the_documents_next_request(
    editor, engine, settings, monkeypatch
):
    settings["completion"] = CompletionSettings(debounce_ms=0, prefix_tokens=60)
    planned: list[tuple[int | None, str | None]] = []
    plan = completions_module.plan_within

    def spy(*args, **kwargs):
        planned.append((kwargs["anchor"], kwargs["suffix_anchor"]))
        return plan(*args, **kwargs)

    monkeypatch.setattr(completions_module, "plan_within", spy)
    body = "".join(f"    x{i} = a * {i}\n" for i in range(20))
    text = "def add(a, b):\n" + body + "    \n"
    offset = len(text) - 1
    await editor.suggest(text, offset)
    state = editor.completions.documents[URI]
    assert state.anchor is not None and state.anchor > 0  # the window starts mid-document
    anchor, suffix = state.anchor, state.suffix
    for typed in itertools.accumulate("(a"):  # "(", then "(a"
        await editor.suggest(text[:offset] + typed + text[offset:], offset + len(typed))
    assert planned == [(None, None), (anchor, suffix), (anchor, suffix)]
    assert decode(engine.requests[1].tokens).endswith(text[anchor:offset] + "(")
