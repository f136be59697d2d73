"""Similar chunks of open documents: splitting, picking by shared words, the prompt window
left out, near-duplicates evicted, one split per document version."""

from __future__ import annotations

import pytest

from cl_lsp.repository import chunks
from cl_lsp.repository.chunks import ChunkPool, similarity, split_chunks, words


def numbered(count: int, break_: str = "\n") -> str:
    return "".join(f"line_{i}{break_}" for i in range(count))


def test_words_are_identifiers_of_two_characters_or_more() -> None:
    assert words("for i in range(n): total_1 += x2 * 0xFF") == {
        "for",
        "in",
        "range",
        "total_1",
        "x2",
    }


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param("alpha beta", "alpha beta", 1.0, id="same"),
        pytest.param("alpha beta", "beta gamma", 1 / 3, id="one-of-three"),
        pytest.param("alpha", "gamma", 0.0, id="disjoint"),
        pytest.param("", "", 0.0, id="both-empty"),
    ],
)
def test_similarity_is_jaccard(a: str, b: str, expected: float) -> None:
    assert similarity(words(a), words(b)) == pytest.approx(expected)


def test_split_into_fixed_size_chunks_the_last_shorter() -> None:
    found = split_chunks("file:///a.py", numbered(10), lines=4)
    assert [(c.start_line, c.end_line) for c in found] == [(0, 4), (4, 8), (8, 10)]
    assert found[2].text == "line_8\nline_9\n"
    assert found[0].words == {"line_0", "line_1", "line_2", "line_3"}
    assert {c.uri for c in found} == {"file:///a.py"}


@pytest.mark.parametrize("break_", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_split_counts_every_kind_of_line_break(break_: str) -> None:
    found = split_chunks("u", numbered(5, break_), lines=2)
    assert [(c.start_line, c.end_line) for c in found] == [(0, 2), (2, 4), (4, 5)]
    assert found[0].text == "line_0\nline_1\n"


def test_split_without_final_line_break() -> None:
    found = split_chunks("u", "alpha\nbeta", lines=32)
    assert [(c.start_line, c.end_line, c.text) for c in found] == [(0, 2, "alpha\nbeta\n")]


def test_split_leaves_out_chunks_without_words() -> None:
    text = "alpha\nbeta\n\n\n}\n);\nx\n\ngamma\n"
    found = split_chunks("u", text, lines=2)
    assert [(c.start_line, c.end_line) for c in found] == [(0, 2), (8, 9)]
    assert split_chunks("u", "", lines=2) == ()


def pool_of(documents: dict[str, str], lines: int = 4) -> ChunkPool:
    pool = ChunkPool(lines=lines)
    for uri, text in documents.items():
        pool.update(uri, 1, text)
    return pool


def test_similar_picks_the_chunk_sharing_most_words_best_first() -> None:
    pool = pool_of(
        {
            "a": "parse_header read_bytes\nchecksum\n",
            "b": "parse_header read_bytes\nchecksum verify_crc\n",
            "c": "render_page layout\nfonts\n",
        }
    )
    found = pool.similar("parse_header(read_bytes(), checksum, verify_crc)", limit=5)
    assert [(chunk.uri, round(score, 2)) for score, chunk in found] == [("b", 1.0), ("a", 0.75)]


def test_similar_respects_limit_and_breaks_ties_by_uri_then_line() -> None:
    pool = pool_of({"b": "alpha beta\n" * 8, "a": "alpha gamma\n" * 4}, lines=4)
    found = pool.similar("alpha", limit=2, evict_similarity=1.0)
    assert [(c.uri, c.start_line) for _, c in found] == [("a", 0), ("b", 0)]


def test_similar_below_minimum_is_not_picked() -> None:
    pool = pool_of({"a": "alpha beta gamma delta epsilon\n"})
    assert pool.similar("alpha", limit=5, min_similarity=0.3) == []
    assert len(pool.similar("alpha", limit=5, min_similarity=0.2)) == 1


def test_similar_never_picks_chunks_of_the_prompt_window() -> None:
    text = "alpha beta\nfiller_0\nfiller_1\nfiller_2\n" * 3
    pool = pool_of({"a": text, "b": text}, lines=4)
    found = pool.similar("alpha beta", limit=10, exclude=("a", 3, 5), evict_similarity=1.0)
    assert [(c.uri, c.start_line) for _, c in found] == [("a", 8), ("b", 0), ("b", 4), ("b", 8)]


def test_near_duplicates_are_evicted_but_different_chunks_kept() -> None:
    same = "connect_socket retry_count\ntimeout backoff\n"
    other = "connect_socket retry_count\nlogger metrics\n"
    pool = pool_of({"a": same, "b": same, "c": other})
    found = pool.similar("connect_socket retry_count timeout backoff", limit=5)
    assert [c.uri for _, c in found] == ["a", "c"]


def counting_splits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []
    real = chunks.split_chunks

    def counted(uri: str, text: str, lines: int = 32) -> tuple[chunks.Chunk, ...]:
        calls.append((uri, len(text)))
        return real(uri, text, lines)

    monkeypatch.setattr(chunks, "split_chunks", counted)
    return calls


def test_each_version_is_split_once_and_only_when_queried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_splits(monkeypatch)
    pool = ChunkPool(lines=32)
    for i in range(20):
        pool.update(f"doc{i}", 1, numbered(2000))
    pool.update("doc0", 1, numbered(2000))  # same version again: nothing to redo
    assert calls == []
    query = " ".join(f"line_{i}" for i in range(8))
    for _ in range(3):
        assert pool.similar(query, limit=4)
    assert len(calls) == 20
    pool.update("doc3", 2, numbered(10))
    pool.similar("line_5", limit=4)
    pool.similar("line_5", limit=4)
    assert calls[20:] == [("doc3", len(numbered(10)))]


def test_a_new_version_replaces_the_old_chunks() -> None:
    pool = ChunkPool()
    pool.update("a", 1, "old_name\n")
    assert pool.similar("old_name", limit=1)
    pool.update("a", 2, "new_name\n")
    assert pool.similar("old_name", limit=1) == []
    assert [c.text for _, c in pool.similar("new_name", limit=1)] == ["new_name\n"]


def test_forget_drops_the_document() -> None:
    pool = pool_of({"a": "alpha\n", "b": "alpha\n"})
    assert len(pool) == 2
    pool.forget("a")
    pool.forget("never-opened")
    assert len(pool) == 1
    assert [c.uri for _, c in pool.similar("alpha", limit=5)] == ["b"]
