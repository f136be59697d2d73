"""Text the model wrote twice: a copy of the code after the cursor, a loop of lines."""

from __future__ import annotations

from .text import AUTO_CLOSED, FilterInput, indent_width, is_substantial


def trim_suffix_overlap(text: str, ctx: FilterInput) -> str:
    """Drop what the model re-wrote of the text that already follows the cursor.

    - The rest of the cursor's line: if the suggestion's first line ends with it and more lines
      follow, everything from the copy on is dropped (those lines would land before the rest
      of the line); else if its last line ends with it, that copy is dropped. A rest of line made
      only of auto-closed characters (``)``, ``"]``...) is not trimmed: the suggestion replaces
      those (:func:`auto_closed_span`).
    - The lines after the cursor's line (multi-line only): from the first suggestion line (not
      the first) where the suggestion's non-blank lines repeat the suffix's next non-blank lines
      -- all of them, or until the suffix window ends; the suggestion's last line may be a cut
      copy -- everything is dropped. At least one matched line must be substantial (4+
      characters with a letter or digit; 8+ for a cut copy); lines that are not must also match
      in indentation, so a lone ``}`` or ``end`` never counts as a copy.
    """
    rest, newline, after = ctx.suffix.partition("\n")
    tail = rest.strip()
    if tail and not set(tail) <= AUTO_CLOSED:
        body = text.rstrip()
        first, nl, _ = text.partition("\n")
        if nl and first.rstrip().endswith(tail):
            return first.rstrip()[: -len(tail)].rstrip(" \t")
        if body.endswith(tail):
            text = body[: len(body) - len(tail)].rstrip(" \t")
    if not newline or ctx.single_line:
        return text
    following = [line for line in after.split("\n") if line.strip()][:_OVERLAP_LINES]
    if not following:
        return text
    lines = text.split("\n")
    for index in range(1, len(lines)):
        if lines[index].strip() and repeats(lines[index:], following):
            return "\n".join(lines[:index]).rstrip()
    return text


_OVERLAP_LINES = 8


def repeats(lines: list[str], following: list[str]) -> bool:
    """``lines`` (their non-blank ones) start like ``following`` (see trim_suffix_overlap).

    A match of one line is too little to decide on unless it is the suggestion's last line, at
    the suffix line's indentation: ``return False`` inside a new ``if``, or followed by more
    code where the suffix window holds one line, is not a copy of the function's last line."""
    mine = [line for line in lines if line.strip()]
    pairs = list(zip(mine, following))
    if len(pairs) == 1 and (len(mine) > 1 or indent_width(mine[0]) != indent_width(following[0])):
        return False
    substantial = False
    for i, (line, other) in enumerate(pairs):
        a, b = line.strip(), other.strip()
        last = i == len(mine) - 1
        if a == b:
            if is_substantial(a):
                substantial = True
            elif indent_width(line) != indent_width(other):
                return False
        elif last and b.startswith(a):
            substantial = substantial or (is_substantial(a) and len(a) >= 8)
        else:
            return False
    return substantial


def drop_repeated_lines(text: str, ctx: FilterInput) -> str:
    """Cut a loop: a block of 1-8 non-blank lines repeated back to back is kept once.

    One line must appear 3 times in a row (twice if the copy is on the very next line, the
    same, and 10+ characters long with a letter, or substantial and the suggestion's last
    line), a longer block twice; the block must contain a
    substantial line (so ``}`` / ``end`` runs are legitimate). Lines compare stripped; blank
    lines between copies are ignored. Repeats within a line are left alone: ``[0, 0, 0, 0]``
    is data as often as it is a loop.
    """
    lines = text.split("\n")
    rows = [(i, line.strip()) for i, line in enumerate(lines) if line.strip()]
    keys = [key for _, key in rows]
    for start in range(len(keys)):
        for size in range(1, min(_MAX_LOOP_BLOCK, (len(keys) - start) // 2) + 1):
            block = keys[start : start + size]
            if not any(is_substantial(key) for key in block):
                continue
            copies = 1
            while keys[start + copies * size : start + (copies + 1) * size] == block:
                copies += 1
            needed = 2 if size > 1 or _doubled_line(lines, rows, start) else 3
            if copies >= needed:
                cut = rows[start + size][0]
                return "\n".join(lines[:cut]).rstrip()
    if len(rows) >= 2 and _doubled_line(lines, rows, len(rows) - 2, at_end=True):
        return "\n".join(lines[: rows[-1][0]]).rstrip()
    return text


_MAX_LOOP_BLOCK = 8


_DOUBLED_LINE = 10


def _doubled_line(
    lines: list[str], rows: list[tuple[int, str]], start: int, at_end: bool = False
) -> bool:
    """The row at ``start`` is repeated on the very next line, with the same indentation,
    and is long enough (10+ characters with a letter) not to be a legitimate ``i += 1;`` twice
    -- or, where the copy is the suggestion's last line (``at_end``), substantial: a model
    that writes ``return []`` or ``i += 1`` twice and stops has stuttered far more often than
    it meant it (``i += 1;`` twice followed by more code is kept)."""
    (i, key), (j, _) = rows[start], rows[start + 1]
    if j != i + 1 or lines[i] != lines[j]:
        return False
    if at_end:
        return is_substantial(key)
    return len(key) >= _DOUBLED_LINE and any(ch.isalpha() for ch in key)
