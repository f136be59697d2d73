"""Which snippets from elsewhere go into one prompt, within one token budget, and how they read.

Three sources, each switchable:

- **definitions** of the names used around the cursor (nearest first; an imported name is
  looked up in the files it was imported from, `module.name` in that module's files), then of
  what the file imports;
- **similar** chunks of the open documents (`chunks`);
- recent **edits** in any open document (`edits`).

The budget is shared: definitions may take `SHARES` of it first, then edits, then similar
chunks, each passing on what it leaves. Tokens are counted with the model's tokenizer on the
block as it goes into the prompt, so the block never exceeds the budget. The block is comments
in the target file's comment syntax, one ``Path:`` line per file, the most relevant snippets
last (nearest the code).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..languages import comment_style
from .chunks import ChunkPool
from .edits import RecentEdits
from .index import RepositoryIndex
from .tags import Definition, Import

#: Lines around the cursor whose names are looked up (above, below).
NEAR_ABOVE, NEAR_BELOW = 40, 10
#: Lines around the cursor that similar chunks are compared with.
QUERY_ABOVE, QUERY_BELOW = 20, 4
#: A name with more definitions than this, not imported, is too common to guess between.
AMBIGUOUS = 3
#: The same for a member (`x.name`), whose owner is not known.
AMBIGUOUS_MEMBER = 2
#: Each source's share of the budget, in the order they fill it.
SHARES = (("definition", 0.6), ("edit", 0.15), ("similar", 0.25))

_NAME = re.compile(r"(?<![A-Za-z0-9_])(\.?)([A-Za-z_][A-Za-z0-9_]*)(?:\s*\.\s*([A-Za-z_]\w*))?")


@dataclass(frozen=True)
class Snippet:
    source: str  # "definition", "similar", "edit"
    path: str  # as the block names it: relative to its workspace folder
    line: int  # first line (0-based)
    text: str  # the code, ending with a line break
    why: str  # for `complete --json`
    score: float  # higher: more relevant
    key: tuple[object, ...]  # what it is, for comparing selections
    near: bool = False  # a definition of a name used near the cursor

    def as_dict(self, tokens: int) -> dict[str, object]:
        return {
            "source": self.source,
            "path": self.path,
            "line": self.line + 1,
            "why": self.why,
            "tokens": tokens,
            "text": self.text,
        }


@dataclass(frozen=True)
class Cursor:
    """Where the prompt is for: the document, its text, the cursor, the window shown."""

    uri: str
    path: str  # the file's path ("" for a document with no file)
    text: str
    offset: int
    window: tuple[int, int]  # first and after-last line of the prompt window
    grammar: str | None


@dataclass(frozen=True)
class Sources:
    index: RepositoryIndex | None
    chunks: ChunkPool | None
    edits: RecentEdits | None
    text_of: Callable[[str], str | None] = lambda uri: None  # an open document's text
    path_of: Callable[[str], str] = lambda uri: uri


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

    def describe(self) -> dict[str, object]:
        return {
            "tokens": self.total,
            "budget": self.budget,
            "kept": self.kept,
            "snippets": [s.as_dict(t) for s, t in zip(self.snippets, self.tokens, strict=True)],
        }


# --------------------------------------------------------------------------- the names


def names_near(text: str, offset: int) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """The names used around the cursor with a weight (1 on the cursor's line, falling with
    the distance; lines below count half), and the `a.b` pairs likewise. The word being typed
    at the cursor is left out: it is not a name yet."""
    starts = _line_starts_near(text, offset)
    cursor_line = bisect.bisect_right(starts, offset) - 1
    word_start = offset
    while word_start > 0 and (text[word_start - 1].isalnum() or text[word_start - 1] == "_"):
        word_start -= 1
    lo = starts[max(0, cursor_line - NEAR_ABOVE)]
    last = cursor_line + NEAR_BELOW + 1
    hi = starts[last] if last < len(starts) else len(text)
    names: dict[str, float] = {}
    pairs: dict[tuple[str, str], float] = {}
    for match in _NAME.finditer(text, lo, hi):
        if match.start(2) <= offset <= match.end(2) and match.start(2) >= word_start:
            continue
        line = bisect.bisect_right(starts, match.start(2)) - 1
        distance = line - cursor_line
        weight = 1 / (1 + abs(distance)) * (0.5 if distance > 0 else 1.0)
        dotted, name, member = match.group(1), match.group(2), match.group(3)
        key = "." + name if dotted else name
        names[key] = max(names.get(key, 0.0), weight)
        if member and not (match.start(3) <= offset <= match.end(3)):
            pairs[(name, member)] = max(pairs.get((name, member), 0.0), weight)
            names["." + member] = max(names.get("." + member, 0.0), weight)
    return names, pairs


def _line_starts_near(text: str, offset: int) -> list[int]:
    """Line starts of the whole text (cheap enough: one scan for \\n in C)."""
    starts = [0]
    find = text.find
    position = find("\n")
    while position >= 0:
        starts.append(position + 1)
        position = find("\n", position + 1)
    return starts


# --------------------------------------------------------------------------- definitions


def definition_snippets(cursor: Cursor, index: RepositoryIndex) -> list[Snippet]:
    """Definitions of the names around the cursor, then of the file's imports, best first."""
    names, pairs = names_near(cursor.text, cursor.offset)
    tags = index.tags(cursor.path)
    imports = {i.bound: i for i in tags.imports} if tags else {}
    found: dict[tuple[object, ...], Snippet] = {}

    def add(definition: Definition, score: float, why: str, near: bool = True) -> None:
        if definition.path == cursor.path and _overlaps(definition, cursor.window):
            return  # the model sees it already
        key = definition.key
        if key not in found or found[key].score < score:
            found[key] = Snippet(
                "definition",
                index.relative(definition.path),
                definition.line,
                definition.snippet,
                why,
                score,
                ("definition", *key),
                near,
            )

    for (module, member), weight in pairs.items():
        imported = imports.get(module)
        if imported is None or imported.name not in (None, module):
            continue
        files = set(index.module_files(cursor.path, imported))
        for definition in index.named(member):
            if definition.path in files:
                add(definition, 2 * weight, f"{module}.{member} is used near the cursor")
    for key, weight in names.items():
        member = key.startswith(".")
        name = key.lstrip(".")
        imported = None if member else imports.get(name)
        if imported is not None:
            candidates = _imported_definitions(cursor.path, imported, index)
            for definition in candidates:
                add(
                    definition,
                    2 * weight,
                    f"{name} is used near the cursor, imported from {imported.module}",
                )
            if candidates:
                continue
        candidates = [
            d
            for d in index.named(name)
            if (d.container is not None if member else True)
            and not (d.path == cursor.path and _overlaps(d, cursor.window))
        ]
        local = [d for d in candidates if d.path == cursor.path]
        if local:
            candidates = local  # the file's own definition is the one meant
        elif len(name) < 3:
            continue  # `i`, `db`: too short to mean one thing across files
        else:
            # Another file's variables are rarely meant unless imported; its constants are.
            candidates = [d for d in candidates if d.kind != "variable" or name.isupper()]
        if not candidates or len(candidates) > (AMBIGUOUS_MEMBER if member else AMBIGUOUS):
            continue
        here = cursor.path.rsplit("/", 1)[0]
        candidates.sort(key=lambda d: (not d.path.startswith(here + "/"), d.path, d.line))
        factor = 0.5 if member else 1.0  # `x.name`: the type of x is not known
        for definition in candidates[:2]:
            why = f"{name} is used near the cursor"
            add(definition, factor * weight / math.sqrt(len(candidates)), why)
    for order, imported in enumerate(imports.values()):
        for definition in _imported_definitions(cursor.path, imported, index):
            add(definition, 0.01 / (1 + order), f"imported from {imported.module}", near=False)
    return _members_folded(sorted(found.values(), key=lambda s: -s.score))


def _imported_definitions(path: str, imported: Import, index: RepositoryIndex) -> list[Definition]:
    """What an imported name stands for: the definition of that name in the files the import
    names; for a whole module bound to a name (CommonJS `const Cmd = require("./cmd")`), its
    definition of the same name, else its only class."""
    files = index.module_files(path, imported)
    if imported.name is not None:
        wanted = set(files)
        return [d for d in index.named(imported.name) if d.path in wanted and not d.container]
    if not files or path.endswith(".py"):
        return []  # a Python module's names are found as `module.name`
    tags = [t for f in files if (t := index.tags(f)) is not None]
    tops = [d for t in tags for d in t.definitions if d.container is None]
    named = [d for d in tops if d.name == imported.bound]
    classes = [d for d in tops if d.kind == "class"]
    return named or (classes if len(classes) == 1 else [])


def _overlaps(definition: Definition, window: tuple[int, int]) -> bool:
    return definition.line < window[1] and window[0] < definition.end_line


def _members_folded(snippets: list[Snippet]) -> list[Snippet]:
    """A member's snippet repeats its container's header: when the container's own snippet is
    chosen too (it lists the members), the member's is left out."""
    kept: list[Snippet] = []
    for snippet in snippets:
        if any(
            other.path == snippet.path
            and other.text.startswith(snippet.text.split("\n", 1)[0])
            and other.line < snippet.line
            for other in kept
        ):
            continue
        kept.append(snippet)
    return kept


# --------------------------------------------------------------------------- the others


def similar_snippets(cursor: Cursor, sources: Sources, limit: int = 8) -> list[Snippet]:
    if sources.chunks is None:
        return []
    starts = _line_starts_near(cursor.text, cursor.offset)
    line = bisect.bisect_right(starts, cursor.offset) - 1
    lo = starts[max(0, line - QUERY_ABOVE)]
    end = line + QUERY_BELOW + 1
    hi = starts[end] if end < len(starts) else len(cursor.text)
    query = cursor.text[lo:hi]
    picked = sources.chunks.similar(
        query, limit=limit, exclude=(cursor.uri, cursor.window[0], cursor.window[1])
    )
    return [
        Snippet(
            "similar",
            sources.path_of(chunk.uri),
            chunk.start_line,
            chunk.text,
            f"similar to the code around the cursor ({score:.2f})",
            score,
            ("similar", chunk.uri, chunk.start_line),
        )
        for score, chunk in picked
    ]


def edit_snippets(cursor: Cursor, sources: Sources, limit: int = 8) -> list[Snippet]:
    if sources.edits is None:
        return []
    regions = sources.edits.regions(
        sources.text_of, exclude=(cursor.uri, cursor.window[0], cursor.window[1]), limit=limit
    )
    return [
        Snippet(
            "edit",
            sources.path_of(region.uri),
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
            cost = count(render([rest[0]], grammar))
            if used + cost > allowance or spent + cost > budget:
                break
            chosen.append((rest.pop(0), cost))
            used += cost
            spent += cost
        carry = allowance - used
        leftovers.append((source, rest))
    for _source, rest in leftovers:
        for snippet in rest:
            cost = count(render([snippet], grammar))
            if spent + cost <= budget:
                chosen.append((snippet, cost))
                spent += cost
    # Least relevant first: the best sit right before the code.
    ordered = _ordered(chosen)
    text = render([s for s, _ in ordered], grammar)
    total = count(text) if text else 0
    while ordered and total > budget:  # joining texts can cost a token more than the parts
        ordered.pop(0)
        text = render([s for s, _ in ordered], grammar)
        total = count(text) if text else 0
    return ContextBlock(
        text=text,
        snippets=tuple(s for s, _ in ordered),
        tokens=tuple(c for _, c in ordered),
        total=total,
        budget=budget,
    )


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


def render(snippets: Sequence[Snippet], grammar: str | None) -> str:
    """The snippets as comments in the target file's syntax (Code Llama reads other files'
    code this way, as Copilot and Continue show it): `Path:` before each file's snippets."""
    if not snippets:
        return ""
    marker, closer = comment_style(grammar)
    lines: list[str] = []
    path = header = None
    for snippet in snippets:
        if snippet.path != path:
            path, header = snippet.path, None
            lines.append(f"Path: {path}")
        text = snippet.text.rstrip("\n").split("\n")
        if len(text) > 1 and text[0] == header:
            text = text[1:]  # another member of the class just shown
        header = text[0] if len(text) > 1 and snippet.text.startswith(text[0]) else header
        lines.extend(text)
    if closer is None:
        return "".join(f"{marker} {line}".rstrip() + "\n" for line in lines)
    body = "\n".join(line.replace(closer, "") for line in lines)
    return f"{marker}\n{body}\n{closer}\n"
