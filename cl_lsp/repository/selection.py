"""Which snippets from elsewhere go into one prompt, within one token budget, and how they read.

Three sources, each switchable:

- **definitions** of the names used around the cursor (nearest first; an imported name is
  looked up in the files it was imported from, `module.name` in that module's files; right
  after `module.` the module's outline, after `self.` the class's members, after `thing.`
  the members of classes named like it), then of what the file imports, from files of the
  same language family only;
- **similar** chunks of the open documents (`chunks`);
- recent **edits** in any open document (`edits`).

The budget is shared: definitions may take their `SHARES` of it first, then edits, then
similar chunks, each passing on what it leaves; a source's best snippet too long for its share
is cut to fit. Tokens are counted with the model's tokenizer on the block as it goes into the
prompt, so the block never exceeds the budget. The block is comments in the target file's
comment syntax, one ``Path:`` line per file, or (``style`` "files") the files of a family's
repository format; the most relevant snippets come last, nearest the code.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .. import languages
from ..languages import comment_style, grammar_named_by
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
#: The score of a definition the file imports but the code near the cursor does not use: about
#: that of a name used a dozen lines away.
IMPORTED = 0.08
#: The score of a class guessed from a name (`self._loop.` -> EventLoop): after `thing.` the
#: next word is one of thing's members, so the guess goes before the names around the cursor
#: (measured: scored below them, recall fell from 57.9% to 57.6%).
GUESSED = 2.5
#: The most definitions a module's outline lists.
OUTLINE = 60
#: `name.` right before the cursor (and the part of a word typed after it).
_OWNER = re.compile(r"\b([A-Za-z_]\w*)\s*\.\s*[A-Za-z_0-9]*\Z")
#: Each source's share of the budget, in the order they fill it.
SHARES = (("definition", 0.7), ("edit", 0.1), ("similar", 0.2))

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
    member_of: str | None = None  # a member's class (impl, interface)

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


# --------------------------------------------------------------------------- the names


def names_near(text: str, offset: int) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """The names used around the cursor with a weight (1 on the cursor's line, falling with
    the distance; lines below count half), and the `a.b` pairs likewise. The word being typed
    at the cursor is left out: it is not a name yet."""
    starts, hi = _lines_around(text, offset, NEAR_ABOVE, NEAR_BELOW)
    cursor_line = bisect.bisect_right(starts, offset) - 1
    word_start = offset
    while word_start > 0 and (text[word_start - 1].isalnum() or text[word_start - 1] == "_"):
        word_start -= 1
    lo = starts[0]
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


def _lines_around(text: str, offset: int, above: int, below: int) -> tuple[list[int], int]:
    """The starts of the lines from `above` lines before the cursor's line to `below` after
    it, and where the last of them ends: a bounded scan, whatever the document's size."""
    lo = text.rfind("\n", 0, offset) + 1
    for _ in range(above):
        if lo == 0:
            break
        lo = text.rfind("\n", 0, lo - 1) + 1
    hi = offset
    for _ in range(below + 1):
        found = text.find("\n", hi)
        if found < 0:
            hi = len(text)
            break
        hi = found + 1
    starts = [lo]
    position = text.find("\n", lo, hi - 1)
    while position >= 0:
        starts.append(position + 1)
        position = text.find("\n", position + 1, hi - 1)
    return starts, hi


# --------------------------------------------------------------------------- definitions


def definition_snippets(cursor: Cursor, index: RepositoryIndex) -> list[Snippet]:
    """Definitions of the names around the cursor, then of the file's imports, best first.
    Right after `module.` (an imported module) or `self.`, what that module or class
    defines comes first: the name about to be typed is one of them."""
    names, pairs = names_near(cursor.text, cursor.offset)
    tags = index.tags(cursor.path)
    imports = {i.bound: i for i in tags.imports} if tags else {}
    syntax = _syntax(cursor.path)
    found: dict[tuple[object, ...], Snippet] = {}

    def add(definition: Definition, score: float, why: str, near: bool = True) -> None:
        if _syntax(definition.path) != syntax:
            return  # another language's code (a bundled tool's, a build script's)
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
                definition.container,
            )

    def outside(definition: Definition) -> bool:
        return not (definition.path == cursor.path and _overlaps(definition, cursor.window))

    owner = _owner_before(cursor.text, cursor.offset)
    if owner in imports:
        # `module.|`: an outline of what the module defines (one line each), then its
        # definitions in the file's order as the budget allows.
        imported = imports[owner]
        for path in index.module_files(cursor.path, imported):
            tops = _tops(index, path)
            if tops and _syntax(path) == syntax:
                outline = "".join(d.snippet.split("\n", 1)[0] + "\n" for d in tops[:OUTLINE])
                why = f"{owner}. is before the cursor: what {index.relative(path)} defines"
                key = ("outline", path)
                found[key] = Snippet(
                    "definition", index.relative(path), 0, outline, why, 4.0, key, True
                )
            for order, definition in enumerate(tops):
                add(definition, 3.0 / (1 + 0.02 * order), f"{owner}. is before the cursor")
    elif owner in ("self", "this") and tags is not None:
        line = cursor.text.count("\n", 0, cursor.offset)
        for definition in tags.definitions:
            if definition.kind == "class" and definition.line <= line < definition.end_line:
                # The class the cursor is in: its members' list, even where the window
                # shows part of it.
                found[definition.key] = Snippet(
                    "definition",
                    index.relative(definition.path),
                    definition.line,
                    definition.snippet,
                    f"{owner}. is before the cursor",
                    3.0,
                    ("definition", *definition.key),
                    True,
                )
    elif owner is not None and len(owner.strip("_")) >= 3:
        # `thing.|`, its type unknown: the members of the classes named like it
        # (`self._loop.` -> EventLoop), as an outline.
        for order, (cls, members) in enumerate(_classes_like(owner, index, cursor, imports)):
            outline = cls.snippet.split("\n", 1)[0] + "\n"
            outline += "".join(m.snippet.split("\n")[1] + "\n" for m in members[:OUTLINE])
            key = ("outline", cls.path, cls.line, cls.name)
            why = f"{owner}. is before the cursor: the members of {cls.name}"
            found[key] = Snippet(
                "definition",
                index.relative(cls.path),
                cls.line,
                outline,
                why,
                GUESSED / (1 + order),
                key,
                True,
            )
    for (module, member), weight in pairs.items():
        imported = imports.get(module)
        if imported is None:
            continue
        files = set(index.module_files(cursor.path, imported))
        for definition in index.named(member):
            if definition.path in files and outside(definition):
                add(definition, 2 * weight, f"{module}.{member} is used near the cursor")
    for key, weight in names.items():
        member = key.startswith(".")
        name = key.lstrip(".")
        imported = None if member else imports.get(name)
        if imported is not None:
            candidates = _imported_definitions(cursor.path, imported, index)
            for definition in candidates:
                why = f"{name} is used near the cursor, imported from {imported.module}"
                add(definition, 2 * weight, why)
            if candidates:
                continue
        candidates = [
            d
            for d in index.named(name)
            if (d.container is not None if member else True)
            and outside(d)
            and _syntax(d.path) == syntax
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
            why = f"imported from {imported.module}"
            add(definition, IMPORTED / (1 + 0.1 * order), why, near=False)
    return _distinct(_members_folded(sorted(found.values(), key=lambda s: -s.score)))


def _owner_before(text: str, offset: int) -> str | None:
    """`name` when the cursor follows `name.` (and maybe part of a word)."""
    match = _OWNER.search(text, max(0, offset - 200), offset)
    return match.group(1) if match else None


def _classes_like(
    owner: str, index: RepositoryIndex, cursor: Cursor, imports: dict[str, Import]
) -> list[tuple[Definition, list[Definition]]]:
    """At most two classes whose name ends like `owner` (`_loop` -> `BaseEventLoop`), with
    their members: those in files the file imports first, then its folder's, then the
    shortest names."""
    word = owner.strip("_").lower()
    syntax = _syntax(cursor.path)
    imported = {p for i in imports.values() for p in index.module_files(cursor.path, i)}
    here = cursor.path.rsplit("/", 1)[0] + "/"
    classes = [
        d
        for name in index.class_names()
        if name.lower().endswith(word)
        for d in index.named(name)
        if d.kind == "class" and d.container is None and _syntax(d.path) == syntax
    ]
    classes.sort(
        key=lambda d: (d.path not in imported, not d.path.startswith(here), len(d.name), d.path)
    )
    found = []
    for cls in classes[:2]:
        tags = index.tags(cls.path)
        members = [m for m in tags.definitions if m.container == cls.name] if tags else []
        if members:
            found.append((cls, members))
    return found


def _tops(index: RepositoryIndex, path: str) -> list[Definition]:
    tags = index.tags(path)
    return [d for d in tags.definitions if d.container is None] if tags else []


@functools.lru_cache(maxsize=4096)
def _syntax(path: str) -> str | None:
    """The import syntax of a file's language: definitions from files of another language
    family are not shown (JavaScript and TypeScript are one family)."""
    grammar = grammar_named_by(path)
    tags = languages.get(grammar).tags if grammar is not None else None
    return tags.imports if tags is not None else None


def _distinct(snippets: list[Snippet]) -> list[Snippet]:
    """One snippet per text: the CommonJS and ES module builds of a package define the same."""
    seen: set[str] = set()
    kept = []
    for snippet in snippets:
        if snippet.text not in seen:
            seen.add(snippet.text)
            kept.append(snippet)
    return kept


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
    """A member's snippet repeats its class's header; when the class's own snippet is chosen
    too and lists the member, the member's is left out."""
    kept: list[Snippet] = []
    for snippet in snippets:
        lines = snippet.text.split("\n")
        signature = lines[1].strip() if snippet.member_of and len(lines) > 1 else None
        if signature and any(
            other.path == snippet.path
            and other.key[-1] == snippet.member_of
            and signature in (line.strip() for line in other.text.split("\n"))
            for other in kept
        ):
            continue
        kept.append(snippet)
    return kept


# --------------------------------------------------------------------------- the others


def similar_snippets(cursor: Cursor, sources: Sources, limit: int = 8) -> list[Snippet]:
    if sources.chunks is None:
        return []
    starts, hi = _lines_around(cursor.text, cursor.offset, QUERY_ABOVE, QUERY_BELOW)
    query = cursor.text[starts[0] : hi]
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
            if used + cost > allowance or spent + cost > budget:
                if not used:  # the source's best is too long: its head, if that fits
                    room = int(min(allowance, budget - spent))
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
