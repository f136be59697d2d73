"""Document sync and position conversion, as LSP defines them."""

from __future__ import annotations

import pytest

from cl_lsp.lsp.documents import UTF8, UTF16, UTF32, Document, PositionError

LINE = "이름 = '😀' + value"  # Korean (BMP, 3 UTF-8 bytes) and an emoji (2 UTF-16 units)


@pytest.mark.parametrize(
    ("encoding", "column", "expected_index"),
    [
        pytest.param(UTF16, 8, 7, id="utf16-after-emoji"),  # 이름 = '😀 -> 7 chars, 8 units
        pytest.param(UTF16, 7, 6, id="utf16-inside-surrogate-pair"),
        pytest.param(UTF8, 14, 7, id="utf8-after-emoji"),  # 3+3+1+1+1+1+4 bytes
        pytest.param(UTF8, 11, 6, id="utf8-inside-emoji"),
        pytest.param(UTF32, 7, 7, id="utf32"),
        pytest.param(UTF16, 999, len(LINE), id="past-line-end-clamps"),
    ],
)
def test_columns_in_each_encoding(encoding, column, expected_index):
    document = Document("file:///a.py", "first\n" + LINE + "\nlast", 1)
    assert document.offset_at(1, column, encoding) == len("first\n") + expected_index


def test_round_trip_positions():
    document = Document("file:///a.py", "x\r\n" + LINE + "\rtail", 1)
    for encoding in (UTF8, UTF16, UTF32):
        for offset in range(len(document.text) + 1):
            if document.text[offset - 1 : offset + 1] == "\r\n":
                continue  # between \r and \n is not a position
            line, column = document.position_at(offset, encoding)
            assert document.offset_at(line, column, encoding) == offset


def test_only_lsp_line_breaks_count():
    text = "a\x0cb\u2028c\x85d\nsecond\r\nthird\rfourth"
    document = Document("file:///a.txt", text, 1)
    assert document.line_count == 4
    assert document.offset_at(1, 0) == text.index("second")
    assert document.offset_at(3, 2) == text.index("fourth") + 2


def test_incremental_changes_with_non_ascii_text():
    document = Document("file:///a.py", "first\n" + LINE + "\n", 1)
    # type "abc" right after the emoji (UTF-16 column 8), then replace the Korean name
    document.apply_change((1, 8), (1, 8), "abc")
    document.apply_change((1, 0), (1, 2), "name")
    assert document.text == "first\nname = '😀abc' + value\n"
    # a multi-line replacement and an append at the very end
    document.apply_change((0, 2), (1, 4), "X")
    document.apply_change((1, 0), (1, 0), "end\n")
    assert document.text == "fiX = '😀abc' + value\nend\n"


def test_full_change_replaces_everything():
    document = Document("file:///a.py", "old", 1)
    document.apply_change(None, None, "new\ntext")
    assert document.text == "new\ntext"
    assert document.line_count == 2


def test_positions_outside_the_document():
    document = Document("file:///a.py", "one\ntwo", 1)
    with pytest.raises(PositionError):
        document.offset_at(5, 0, strict=True)
    with pytest.raises(PositionError):
        document.offset_at(-1, 0)
    assert document.offset_at(5, 0) == len(document.text)


def test_line_index_stays_exact_under_random_edits():
    """The incrementally updated line index always equals a fresh scan."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = st.text(alphabet="ab \r\n\t😀", max_size=6)

    @settings(max_examples=400, deadline=None)
    @given(
        st.text(alphabet="ab \r\n😀", max_size=40),
        st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), pieces), max_size=6),
    )
    def check(text, edits):
        document = Document("file:///h.txt", text, 1)
        assert document.line_starts  # build the index so edits update it incrementally
        for a, b, new in edits:
            start = document.position_at(a % (len(document.text) + 1), UTF32)
            end = document.position_at(b % (len(document.text) + 1), UTF32)
            if start > end:
                start, end = end, start
            document.apply_change(start, end, new, UTF32)
            assert document.line_starts == Document("file:///f", document.text, 1).line_starts

    check()
