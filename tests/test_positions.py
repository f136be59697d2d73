"""Positions in every negotiated encoding: never inside a character, clamped to the document.

Unit tests of `Document`, then end-to-end tests that apply the server's answers to a mirror of
the document kept by the client, as an editor does. The mirror decodes strictly, so a range
that ends inside a UTF-16 surrogate pair or a UTF-8 sequence fails the test.
"""

from __future__ import annotations

import asyncio
import re
from typing import ClassVar

import pytest
from conftest import status
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from cl_lsp.lsp.documents import UTF8, UTF16, UTF32, Document, PositionError, units

ENCODINGS = [UTF16, UTF8, UTF32]
OPTIONS = {"completion": {"debounceMs": 0, "maxTokensSingleLine": 4, "maxTokens": 4}}
X4 = " x" * 3  # the x model's answer at a 4-token budget (the last, cut by the cap, dropped)

# Emoji (2 UTF-16 units, 4 UTF-8 bytes), CJK (3 UTF-8 bytes), a combining mark, a ZWJ sequence,
# and all three LSP line ends: \r\n, a lone \r and \n.
FAMILY = "👩\u200d👩\u200d👧"
TEXT = f'a = "😀😀"\r\nb = "中文。"\rc = "e\u0301 "\nd = "{FAMILY}!"\ne = 1\n'
LINES = re.split(r"\r\n|\r|\n", TEXT)


def column(text: str, encoding: str) -> int:
    """An independent count of LSP code units (not the server's `units`)."""
    return (
        len(text.encode({UTF16: "utf-16-le", UTF8: "utf-8", UTF32: "utf-32-le"}[encoding]))
        // {UTF16: 2, UTF8: 1, UTF32: 4}[encoding]
    )


class Mirror:
    """The client's copy of a document. A position inside a character raises."""

    CODECS: ClassVar[dict[str, tuple[str, int]]] = {
        UTF16: ("utf-16-le", 2),
        UTF8: ("utf-8", 1),
        UTF32: ("utf-32-le", 4),
    }

    def __init__(self, text: str, encoding: str) -> None:
        self.text, self.encoding = text, encoding

    def offset(self, position: types.Position) -> int:
        starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", self.text)]
        assert position.line < len(starts), f"line {position.line} is past the end"
        start = starts[position.line]
        line = re.split(r"\r\n|\r|\n", self.text[start:], maxsplit=1)[0]
        codec, width = self.CODECS[self.encoding]
        encoded = line.encode(codec)
        # strict: a cut inside a character raises UnicodeDecodeError
        return start + len(encoded[: position.character * width].decode(codec))

    def apply(self, where: types.Range, new_text: str) -> str:
        begin, end = self.offset(where.start), self.offset(where.end)
        assert begin <= end
        self.text = self.text[:begin] + new_text + self.text[end:]
        return self.text


# -- Document ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_column_rounds_down_to_a_character_start(encoding):
    document = Document("file:///p.py", TEXT, 1)
    for line, line_text in enumerate(LINES):
        start = document.offset_at(line, 0, encoding)
        for col in range(column(line_text, encoding) + 3):
            index = document.offset_at(line, col, encoding) - start
            assert 0 <= index <= len(line_text)
            assert column(line_text[:index], encoding) <= col
            if index < len(line_text):  # the next character would cross the column
                assert column(line_text[: index + 1], encoding) > col
            line_back, col_back = document.position_at(start + index, encoding)
            assert (line_back, col_back) == (line, column(line_text[:index], encoding))


@pytest.mark.parametrize(
    ("encoding", "start", "end", "new_text", "expected"),
    [
        pytest.param(UTF16, (0, 1), (0, 1), "Z", "Z😀😀|中", id="utf16-insert-inside-pair"),
        pytest.param(UTF16, (0, 1), (0, 3), "Q", "Q😀|中", id="utf16-replace-pair-to-pair"),
        pytest.param(UTF16, (0, 3), (0, 1), "", "😀|中", id="utf16-reversed-empty"),
        pytest.param(UTF8, (0, 2), (0, 6), "", "😀|中", id="utf8-delete-inside-bytes"),
        pytest.param(UTF8, (1, 1), (1, 1), "Z", "😀😀|Z中", id="utf8-insert-inside-cjk"),
        pytest.param(UTF16, (0, 99), (1, 0), "", "😀😀中", id="utf16-column-past-end-joins"),
        pytest.param(UTF32, (0, 1), (0, 1), "-", "😀-😀|中", id="utf32-between-emoji"),
    ],
)
def test_changes_inside_a_character_keep_it_whole(encoding, start, end, new_text, expected):
    document = Document("file:///p.py", "😀😀\r中", 1)
    document.apply_change(start, end, new_text, encoding)
    assert document.text == expected.replace("|", "\r")
    assert document.line_starts == Document("file:///q", document.text, 1).line_starts


def test_a_position_between_cr_and_lf_is_the_line_end():
    document = Document("file:///p.py", "ab\r\ncd", 1)
    assert document.position_at(3) == (0, 2)
    assert document.position_at(4) == (1, 0)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_lone_surrogates_keep_their_width_and_do_not_crash(encoding):
    # JSON allows "\ud83d" alone; a UTF-16 client counts it as one unit, as U+FFFD is
    document = Document("file:///p.py", "a\ud83db\n", 1)
    assert document.text == "a\ufffdb\n"
    document.apply_change((0, 1), (0, 1), "\ude00", encoding)
    assert "\ufffd\ufffd" in document.text
    assert document.position_at(len(document.text)) == (1, 0)
    assert document.offset_at(0, 99, encoding) == 4
    document.text.encode("utf-8")  # valid text for the tokenizer and tree-sitter


def test_positions_out_of_range():
    document = Document("file:///p.py", TEXT, 1)
    assert document.offset_at(0, 10_000) == TEXT.index("\r\n")
    assert document.offset_at(99, 0) == len(TEXT)
    with pytest.raises(PositionError):
        document.offset_at(99, 0, strict=True)
    with pytest.raises(PositionError):
        document.offset_at(0, -1)
    assert units("😀", UTF8) == 4 and units("😀", UTF16) == 2 and units("😀", UTF32) == 1


# -- end to end --------------------------------------------------------------------------------


def open_doc(client, uri: str, text: str) -> None:
    # Plain text: the x model's answer is cut by the token cap, and an answer cut short is
    # shown only if it parses (`d = "…" x x` would not, in Python).
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="plaintext", version=1, text=text
            )
        )
    )


def change(
    client, uri: str, version: int, start: types.Position, end: types.Position, text: str
) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=start, end=end), text=text
                )
            ],
        )
    )


async def inline(client, uri: str, position: types.Position):
    return await asyncio.wait_for(
        client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=position,
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
            )
        ),
        60,
    )


async def complete(client, uri: str, position: types.Position):
    return await asyncio.wait_for(
        client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=position
            )
        ),
        60,
    )


async def raw_request(client, method: str, params: dict, request_id: str):
    """Send params pygls's own types would refuse to build (a negative position)."""
    answer: asyncio.Future = asyncio.get_running_loop().create_future()
    client.protocol._request_futures[request_id] = answer
    client.protocol._send_data(
        {"jsonrpc": "2.0", "id": request_id, "params": params, "method": method}
    )
    return await asyncio.wait_for(answer, 10)


# (line, text before the cursor): the cursor is put at every code unit of the next character
CURSORS = [
    (0, 'a = "'),  # before an emoji
    (0, 'a = "😀'),  # between two emoji
    (1, 'b = "中文'),  # before the CJK full stop
    (2, 'c = "e\u0301'),  # after a combining mark
    (3, 'd = "👩'),  # before a ZWJ
    (3, 'd = "👩\u200d👩\u200d'),  # before the last person of a ZWJ sequence
    (4, "e = 1"),  # end of the line after \n, after a lone \r
]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_answered_ranges_apply_cleanly_in_each_encoding(
    start_server, x_model, tmp_path, encoding
):
    client = await start_server(model=x_model, options=OPTIONS, encodings=[encoding, UTF16])
    assert client.init_result.capabilities.position_encoding == encoding
    uri = (tmp_path / "p.txt").as_uri()
    open_doc(client, uri, TEXT)
    line_offsets = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", TEXT)]
    for line, before in CURSORS:
        offset = line_offsets[line] + len(before)
        cursor = types.Position(line, column(before, encoding))
        width = column(TEXT[offset : offset + 1], encoding) if TEXT[offset] not in "\r\n" else 1
        for into in range(width):  # every code unit of the character after the cursor
            asked = types.Position(line, cursor.character + into)
            expected = TEXT[:offset] + X4 + TEXT[offset:]
            (item,) = (await inline(client, uri, asked)).items
            assert item.insert_text == X4
            assert item.range == types.Range(start=cursor, end=cursor), (before, into)
            assert Mirror(TEXT, encoding).apply(item.range, item.insert_text) == expected
            (entry,) = (await complete(client, uri, asked)).items
            assert entry.text_edit.range.end == cursor, (before, into)
            assert (
                Mirror(TEXT, encoding).apply(entry.text_edit.range, entry.text_edit.new_text)
                == expected
            )


async def test_positions_out_of_range_are_clamped_or_refused(start_server, x_model, tmp_path):
    client = await start_server(model=x_model, options=OPTIONS)
    uri = (tmp_path / "o.txt").as_uri()
    open_doc(client, uri, TEXT)
    for line in (0, 1, 4):  # past the end of a CRLF line, a CR line, an LF line
        line_end = types.Position(line, column(LINES[line], UTF16))
        (item,) = (await inline(client, uri, types.Position(line, 10_000))).items
        assert item.range == types.Range(start=line_end, end=line_end)
        assert Mirror(TEXT, UTF16).apply(item.range, item.insert_text).count(X4) == 1
        (entry,) = (await complete(client, uri, types.Position(line, 10_000))).items
        assert entry.text_edit.range.end == line_end
    assert (await inline(client, uri, types.Position(6, 0))).items == ()
    assert not (await complete(client, uri, types.Position(40, 3))).items
    for method in (types.TEXT_DOCUMENT_INLINE_COMPLETION, types.TEXT_DOCUMENT_COMPLETION):
        bad = {
            "textDocument": {"uri": uri},
            "position": {"line": 0, "character": -2},
            "context": {"triggerKind": 1},
        }
        with pytest.raises(JsonRpcException) as error:
            await raw_request(client, method, bad, f"negative-{method}")
        assert "invalid params" in str(error.value).lower()
    # code actions for a selection from inside an emoji to past the end: offered, no error
    actions = await asyncio.wait_for(
        client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(start=types.Position(0, 6), end=types.Position(99, 99)),
                context=types.CodeActionContext(diagnostics=[]),
            )
        ),
        30,
    )
    assert actions and all(action.title.startswith("cl-lsp: ") for action in actions)
    # a change with a negative position is refused; the document stays as it was
    client.protocol._send_data(
        {
            "jsonrpc": "2.0",
            "method": types.TEXT_DOCUMENT_DID_CHANGE,
            "params": {
                "textDocument": {"uri": uri, "version": 2},
                "contentChanges": [
                    {
                        "range": {
                            "start": {"line": -1, "character": 0},
                            "end": {"line": 0, "character": 0},
                        },
                        "text": "junk",
                    }
                ],
            },
        }
    )
    (item,) = (await inline(client, uri, types.Position(4, 5))).items
    assert item.range.start == types.Position(4, 5)
    assert (await status(client))["state"] == "ready"
    assert not client.messages  # nothing to show the user: the client sent bad params
    assert not any("Traceback" in message.message for message in client.log_messages)


@pytest.mark.parametrize("encoding", [UTF16, UTF8])
async def test_changes_inside_a_character_do_not_corrupt_the_document(
    start_server, x_model, tmp_path, encoding
):
    """The completion item retypes the word before the cursor, so it shows the server's text."""
    client = await start_server(model=x_model, options=OPTIONS, encodings=[encoding])
    uri = (tmp_path / "c.txt").as_uri()
    mirror = Mirror("word = a𝑥b\nt = 𝑥𝑦\n", encoding)  # 𝑥: a letter outside the BMP
    open_doc(client, uri, mirror.text)

    def inside(line: int, before: str) -> types.Position:  # one unit into the next character
        return types.Position(line, column(before, encoding) + 1)

    def at(line: int, before: str) -> types.Position:
        return types.Position(line, column(before, encoding))

    # insert inside 𝑥: lands before it; replace from inside 𝑥 to inside 𝑦: 𝑥 goes, 𝑦 stays
    change(client, uri, 2, inside(0, "word = a"), inside(0, "word = a"), "Z")
    mirror.apply(types.Range(at(0, "word = a"), at(0, "word = a")), "Z")
    change(client, uri, 3, inside(1, "t = "), inside(1, "t = 𝑥"), "Q")
    mirror.apply(types.Range(at(1, "t = "), at(1, "t = 𝑥")), "Q")
    assert mirror.text == "word = aZ𝑥b\nt = Q𝑦\n"
    for line, word in ((0, "aZ𝑥b"), (1, "Q𝑦")):
        end = at(line, mirror.text.splitlines()[line])
        (entry,) = (await complete(client, uri, end)).items
        assert entry.text_edit.new_text == word + X4
        assert entry.text_edit.range.start == at(line, mirror.text.splitlines()[line][: -len(word)])
        (item,) = (await inline(client, uri, end)).items
        assert item.range.start == end


async def test_a_lone_surrogate_from_the_client_is_survived(start_server, x_model, tmp_path):
    """JSON can carry half a surrogate pair; it counts as one UTF-16 unit, like U+FFFD."""
    client = await start_server(model=x_model, options=OPTIONS)
    uri = (tmp_path / "s.txt").as_uri()
    open_doc(client, uri, 's = "\ud83d"\nt = ')
    change(client, uri, 2, types.Position(0, 6), types.Position(0, 6), "\ude00")
    (item,) = (await inline(client, uri, types.Position(1, 4))).items
    assert item.range.start == types.Position(1, 4)
    (entry,) = (await complete(client, uri, types.Position(0, 9))).items
    assert entry.text_edit.range.end == types.Position(0, 8)  # past the line end: clamped
    assert (await status(client))["state"] == "ready"
