"""Recently edited regions: edits moved along by later ones, merged when they meet, kept to a
limit, and turned into text from the documents' current lines."""

from __future__ import annotations

from cl_lsp.repository.edits import RecentEdits, Region

DOC = "".join(f"line {i}\n" for i in range(40))


def spans(edits: RecentEdits, uri: str = "a", around: int = 0) -> list[tuple[int, int]]:
    """Where the edits of `uri` are now, most recent first (regions with no widening)."""
    return [
        (r.start_line, r.end_line)
        for r in edits.regions(lambda _: DOC, around=around, limit=100)
        if r.uri == uri
    ]


def test_an_insert_above_shifts_later_edits_down() -> None:
    edits = RecentEdits()
    edits.record("a", 20, 20, 20)
    edits.record("a", 5, 5, 8)  # three lines inserted at line 5
    assert spans(edits) == [(5, 9), (23, 24)]


def test_a_deletion_above_shifts_later_edits_up_and_others_stay() -> None:
    edits = RecentEdits()
    edits.record("a", 2, 2, 2)
    edits.record("a", 30, 31, 31)
    edits.record("b", 30, 30, 30)
    edits.record("a", 10, 14, 10)  # four lines deleted
    assert spans(edits) == [(10, 11), (26, 28), (2, 3)]
    assert spans(edits, "b") == [(30, 31)]


def test_touching_edits_merge_and_become_most_recent() -> None:
    edits = RecentEdits(limit=2)  # an edit not merged would push the oldest out
    edits.record("a", 10, 10, 10)
    edits.record("a", 30, 30, 30)
    edits.record("a", 11, 11, 12)  # the line after the first edit
    assert spans(edits) == [(10, 13), (31, 32)]  # the line inserted moved the other down
    edits.record("a", 30, 30, 30)  # the line before the other
    assert spans(edits) == [(30, 32), (10, 13)]


def test_edits_two_lines_apart_stay_apart() -> None:
    edits = RecentEdits()
    edits.record("a", 10, 10, 10)
    edits.record("a", 12, 12, 12)
    assert spans(edits) == [(12, 13), (10, 11)]


def test_edits_inside_deleted_lines_collapse_onto_the_deletion() -> None:
    edits = RecentEdits()
    edits.record("a", 12, 12, 14)
    edits.record("a", 18, 18, 18)
    edits.record("a", 30, 30, 30)
    edits.record("a", 10, 20, 10)  # lines 10..20 joined into line 10
    assert spans(edits) == [(10, 11), (20, 21)]


def test_an_edit_reaching_past_a_deletion_keeps_its_tail_moved_up() -> None:
    edits = RecentEdits()
    edits.record("a", 10, 10, 15)
    edits.record("a", 8, 12, 8)  # lines 8..12 joined: old 13..15 are now 9..11
    assert spans(edits) == [(8, 12)]


def test_only_the_most_recent_edits_are_kept() -> None:
    edits = RecentEdits(limit=3)
    for line in (0, 5, 10, 15, 20):
        edits.record("a", line, line, line)
    assert spans(edits) == [(20, 21), (15, 16), (10, 11)]


def test_forget_drops_a_closed_documents_edits() -> None:
    edits = RecentEdits()
    edits.record("a", 1, 1, 1)
    edits.record("b", 1, 1, 1)
    edits.forget("a")
    assert spans(edits, "a") == []
    assert spans(edits, "b") == [(1, 2)]


def test_regions_hold_the_current_lines_around_each_edit_clamped() -> None:
    texts = {"a": "a0\na1\na2\na3\na4\na5\na6\na7\n", "b": "b0\r\nb1\r\nb2"}
    edits = RecentEdits()
    edits.record("a", 0, 0, 0)
    edits.record("b", 2, 2, 2)
    edits.record("a", 6, 6, 6)
    assert edits.regions(texts.get, around=2) == [
        Region("a", 4, 8, "a4\na5\na6\na7\n"),
        Region("b", 0, 3, "b0\nb1\nb2\n"),
        Region("a", 0, 3, "a0\na1\na2\n"),
    ]


def test_regions_skip_documents_without_text_and_edits_past_the_end() -> None:
    edits = RecentEdits()
    edits.record("gone", 1, 1, 1)
    edits.record("a", 50, 50, 50)  # the document has since shrunk to 3 lines
    edits.record("a", 1, 1, 1)
    texts = {"a": "x\ny\nz\n"}
    assert edits.regions(texts.get, around=1) == [Region("a", 0, 3, "x\ny\nz\n")]


def test_overlapping_regions_of_a_document_merge_into_the_most_recent() -> None:
    edits = RecentEdits()
    edits.record("a", 14, 14, 14)  # oldest: widened by 3, it reaches both others
    edits.record("a", 8, 8, 8)
    edits.record("a", 20, 20, 20)
    edits.record("b", 20, 20, 20)
    found = edits.regions(lambda _: DOC, around=3)
    assert [(r.uri, r.start_line, r.end_line) for r in found] == [("b", 17, 24), ("a", 5, 24)]
    assert found[1].text == "".join(f"line {i}\n" for i in range(5, 24))


def test_regions_overlapping_the_prompt_window_are_left_out() -> None:
    edits = RecentEdits()
    edits.record("a", 5, 5, 5)
    edits.record("b", 20, 20, 20)
    edits.record("a", 20, 20, 20)
    found = edits.regions(lambda _: DOC, around=2, exclude=("a", 15, 19))
    assert [(r.uri, r.start_line, r.end_line) for r in found] == [("b", 18, 23), ("a", 3, 8)]
    found = edits.regions(lambda _: DOC, around=2, exclude=("a", 22, 30))
    assert [(r.uri, r.start_line) for r in found] == [("b", 18), ("a", 3)]
    found = edits.regions(lambda _: DOC, around=2, exclude=("a", 23, 30))  # just past it
    assert [(r.uri, r.start_line) for r in found] == [("a", 18), ("b", 18), ("a", 3)]


def test_regions_limit_keeps_the_most_recent() -> None:
    edits = RecentEdits()
    for line in (0, 10, 20, 30):
        edits.record("a", line, line, line)
    found = edits.regions(lambda _: DOC, around=1, limit=2)
    assert [r.start_line for r in found] == [29, 19]
