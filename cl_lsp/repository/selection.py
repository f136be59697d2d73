"""Which snippets from elsewhere go into one prompt, within one token budget, and how they read.

Three sources, each switchable:

- **definitions** of the names used around the cursor, and of what the file imports
  (`definitions`);
- **similar** chunks of the open documents (`chunks`);
- recent **edits** in any open document (`edits`).

The budget is shared: definitions may take their `SHARES` of it first, then edits, then
similar chunks, each passing on what it leaves; a source's best snippet too long for its share
is cut to fit. The exception: what the word about to be typed is one of (the members after
`module.`, `self.` or `thing.`) may take all the budget left, cut to fit. Tokens are counted with the model's tokenizer on the block as it goes into the
prompt, so the block never exceeds the budget. The block is comments in the target file's
comment syntax, one ``Path:`` line per file, or (``style`` "files") the files of a family's
repository format; the most relevant snippets come last, nearest the code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..languages import comment_style
from .chunks import ChunkPool
from .edits import RecentEdits
from .snippets import Cursor, Snippet, lines_around

#: Lines around the cursor that similar chunks are compared with.
QUERY_ABOVE, QUERY_BELOW = 20, 4
#: Each source's share of the budget, in the order they fill it.
SHARES = (("definition", 0.7), ("edit", 0.1), ("similar", 0.2))


@dataclass(frozen=True)
class ContextBlock:
    text: str = ""
    snippets: tuple[Snippet, ...] = ()
    tokens: tuple[int, ...] = ()  # each snippet's share, as counted
    total: int = 0  # tokens of `text`
    budget: int = 0
    unit: object = None  # where it was chosen (the enclosing definition)
    kept: bool = False  # the previous block, kept for the model's cache
    # The definitions of names near the cursor when it was chosen, shown or not.
    considered: frozenset[tuple[object, ...]] = field(default_factory=frozenset)
    style: str = "comments"  # or "files": the family's repository format (`render`)
    repo: str = ""  # the workspace folder's name
    path: str = ""  # the file's path in it

    def files(self) -> tuple[tuple[str, str], ...]:
        """(path, code) per file, for a repository format."""
        return tuple(file_texts(self.snippets))

    def describe(self) -> dict[str, object]:
        return {
            "tokens": self.total,
            "budget": self.budget,
            "style": self.style,
            "kept": self.kept,
            "snippets": [s.as_dict(t) for s, t in zip(self.snippets, self.tokens, strict=True)],
        }


# --------------------------------------------------------------------------- the others


def similar_snippets(
    cursor: Cursor, chunks: ChunkPool, path_of: Callable[[str], str], limit: int = 8
) -> list[Snippet]:
    starts, hi = lines_around(cursor.text, cursor.offset, QUERY_ABOVE, QUERY_BELOW)
    query = cursor.text[starts[0] : hi]
    picked = chunks.similar(
        query, limit=limit, exclude=(cursor.uri, cursor.window[0], cursor.window[1])
    )
    return [
        Snippet(
            "similar",
            path_of(chunk.uri),
            chunk.start_line,
            chunk.text,
            f"similar to the code around the cursor ({score:.2f})",
            score,
            ("similar", chunk.uri, chunk.start_line),
        )
        for score, chunk in picked
    ]


def edit_snippets(
    cursor: Cursor,
    edits: RecentEdits,
    text_of: Callable[[str], str | None],
    path_of: Callable[[str], str],
    limit: int = 8,
) -> list[Snippet]:
    regions = edits.regions(
        text_of, exclude=(cursor.uri, cursor.window[0], cursor.window[1]), limit=limit
    )
    return [
        Snippet(
            "edit",
            path_of(region.uri),
            region.start_line,
            region.text,
            "edited recently",
            1.0 / (1 + order),
            ("edit", region.uri, region.start_line),
        )
        for order, region in enumerate(regions)
    ]


# --------------------------------------------------------------------------- the block


def fit(
    candidates: dict[str, Sequence[Snippet]],
    budget: int,
    count: Callable[[str], int],
    grammar: str | None,
    style: str = "comments",
) -> ContextBlock:
    """The snippets that fit `budget` (tokens of the block as the prompt holds it), each
    source first within its share, then the rest in turn."""
    if budget <= 0:
        return ContextBlock(budget=budget)
    chosen: list[tuple[Snippet, int]] = []
    spent = 0
    leftovers: list[tuple[str, list[Snippet]]] = []
    carry = 0.0
    for source, share in SHARES:
        allowance = budget * share + carry
        rest = list(candidates.get(source, ()))
        used = 0
        while rest:
            cost = count(render([rest[0]], grammar, style))
            first = rest[0].next_word  # may take all that is left of the budget
            if (used + cost > allowance and not first) or spent + cost > budget:
                if not used or first:  # the source's best is too long: its head, if it fits
                    room = int(budget - spent if first else min(allowance, budget - spent))
                    cut = _cut(rest[0], room, count, grammar, style)
                    if cut is not None:
                        rest[0], cost = cut
                        continue
                break
            chosen.append((rest.pop(0), cost))
            used += cost
            spent += cost
        carry = allowance - used
        leftovers.append((source, rest))
    for _source, rest in leftovers:
        for snippet in rest:
            cost = count(render([snippet], grammar, style))
            if spent + cost <= budget:
                chosen.append((snippet, cost))
                spent += cost
    # Least relevant first: the best sit right before the code.
    ordered = _ordered(chosen)
    text = render([s for s, _ in ordered], grammar, style)
    total = count(text) if text else 0
    while ordered and total > budget:  # joining texts can cost a token more than the parts
        ordered.pop(0)
        text = render([s for s, _ in ordered], grammar, style)
        total = count(text) if text else 0
    return ContextBlock(
        text=text,
        snippets=tuple(s for s, _ in ordered),
        tokens=tuple(c for _, c in ordered),
        total=total,
        budget=budget,
        style=style,
    )


#: The fewest lines of a snippet cut to fit the budget.
CUT_LINES = 3


def _cut(
    snippet: Snippet, room: int, count: Callable[[str], int], grammar: str | None, style: str
) -> tuple[Snippet, int] | None:
    """The longest head of `snippet` (whole lines, then `...`) that fits `room` tokens."""
    lines = snippet.text.rstrip("\n").split("\n")
    low, high, best = CUT_LINES, len(lines) - 1, None
    while low <= high:
        middle = (low + high) // 2
        text = "\n".join(lines[:middle]) + "\n...\n"
        cost = count(render([replace(snippet, text=text)], grammar, style))
        if cost <= room:
            best, low = (replace(snippet, text=text), cost), middle + 1
        else:
            high = middle - 1
    return best


def _ordered(chosen: list[tuple[Snippet, int]]) -> list[tuple[Snippet, int]]:
    """Files by their best snippet's relevance, least first; a file's snippets in line
    order, so each file shows one `Path:` line."""
    by_path: dict[str, list[tuple[Snippet, int]]] = {}
    for item in chosen:
        by_path.setdefault(item[0].path, []).append(item)
    groups = sorted(by_path.values(), key=lambda group: (_rank(group), group[0][0].path))
    return [item for group in groups for item in sorted(group, key=lambda i: i[0].line)]


_SOURCE_RANK = {"similar": 0, "edit": 1, "definition": 2}


def _rank(group: list[tuple[Snippet, int]]) -> tuple[int, float]:
    best = max(group, key=lambda item: (_SOURCE_RANK[item[0].source], item[0].score))[0]
    return (_SOURCE_RANK[best.source], best.score)


def file_texts(snippets: Sequence[Snippet]) -> list[tuple[str, str]]:
    """The snippets as (path, code) per file in turn; a member's class header line is not
    repeated right after another member of that class."""
    files: list[tuple[str, list[str]]] = []
    header = None
    for snippet in snippets:
        if not files or files[-1][0] != snippet.path:
            files.append((snippet.path, []))
            header = None
        text = snippet.text.rstrip("\n").split("\n")
        if len(text) > 1 and text[0] == header:
            text = text[1:]  # another member of the class just shown
        header = text[0] if len(text) > 1 and snippet.text.startswith(text[0]) else header
        files[-1][1].extend(text)
    return [(path, "".join(line + "\n" for line in lines)) for path, lines in files]


#: Stands for a repository format's file separator when a block is counted as text (a
#: spelled-out marker costs more tokens than the one control token: the count errs high).
FILE_SEPARATOR = "<file_sep>"


def render(snippets: Sequence[Snippet], grammar: str | None, style: str = "comments") -> str:
    """The snippets as the prompt holds them: comments in the target file's syntax (Code
    Llama reads other files' code this way, as Copilot and Continue show it), `Path:` before
    each file's snippets; or ("files") as files of a repository format, counted as text."""
    if not snippets:
        return ""
    files = file_texts(snippets)
    if style == "files":
        return "".join(f"{FILE_SEPARATOR}{path}\n{code}" for path, code in files)
    lines = [line for path, code in files for line in (f"Path: {path}", *code.split("\n")[:-1])]
    marker, closer = comment_style(grammar)
    if closer is None:
        return "".join(f"{marker} {line}".rstrip() + "\n" for line in lines)
    body = "\n".join(line.replace(closer, "") for line in lines)
    return f"{marker}\n{body}\n{closer}\n"
