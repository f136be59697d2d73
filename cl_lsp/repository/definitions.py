"""Definitions for a cursor: of the names used around it (nearest first; an imported name is
looked up in the files it was imported from, `module.name` in that module's files), of what
comes right after `module.`, `self.` or `thing.`, then of what the file imports; from files of
the same language family only, best first."""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Collection

from .. import languages
from ..languages import grammar_named_by
from .index import RepositoryIndex
from .snippets import Cursor, Snippet, lines_around
from .tags import Definition, Import

#: Lines around the cursor whose names are looked up (above, below).
NEAR_ABOVE, NEAR_BELOW = 40, 10
#: A name with more definitions than this, not imported, is too common to guess between.
AMBIGUOUS = 3
#: The same for a member (`x.name`), whose owner is not known.
AMBIGUOUS_MEMBER = 2
#: The score of a definition the file imports but the code near the cursor does not use: about
#: that of a name used a dozen lines away.
IMPORTED = 0.08
#: The score of a definition the file imports but does not use yet: the import was written
#: for code still to come, likely where the cursor is (about a name used 2 lines away).
UNUSED_IMPORT = 0.3
#: The score of a class guessed from a name (`self._loop.` -> EventLoop): after `thing.` the
#: next word is one of thing's members, so the guess goes before the names around the cursor
#: (measured: scored below them, recall fell from 57.9% to 57.6%).
GUESSED = 2.5
#: What a JavaScript module writes its exports on: `exports.` is followed by one of the
#: file's own names, not a member of some class.
EXPORTS = frozenset({"exports", "module"})
#: The most classes guessed for `thing.`, and how well a class must cover the members the
#: file uses on `thing` to be guessed from them (see `_classes_used_like`).
GUESSES, COVERED = 2, 0.5
#: A member defined by more classes than this (`get`, `close`) says nothing of its owner.
COMMON_MEMBER = 6
#: The words of a name: `dest_loop` -> dest, loop; `childNode` -> child, Node.
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
#: The most definitions a module's outline lists.
OUTLINE = 60
#: `name.` right before the cursor (and the part of a word typed after it).
_OWNER = re.compile(r"\b([A-Za-z_]\w*)\s*\.\s*[A-Za-z_0-9]*\Z")
_NAME = re.compile(r"(?<![A-Za-z0-9_])(\.?)([A-Za-z_][A-Za-z0-9_]*)(?:\s*\.\s*([A-Za-z_]\w*))?")


def names_near(text: str, offset: int) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """The names used around the cursor with a weight (1 on the cursor's line, falling with
    the distance; lines below count half), and the `a.b` pairs likewise. The word being typed
    at the cursor is left out: it is not a name yet."""
    starts, hi = lines_around(text, offset, NEAR_ABOVE, NEAR_BELOW)
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
                popular = sorted(tops, key=lambda d: -index.member_uses(d.name))
                outline = "".join(d.snippet.split("\n", 1)[0] + "\n" for d in popular[:OUTLINE])
                why = f"{owner}. is before the cursor: what {index.relative(path)} defines"
                key = ("outline", path)
                found[key] = Snippet(
                    "definition",
                    index.relative(path),
                    0,
                    outline,
                    why,
                    4.0,
                    key,
                    True,
                    next_word=True,
                )
            for order, definition in enumerate(tops):
                add(definition, 3.0 / (1 + 0.02 * order), f"{owner}. is before the cursor")
    elif owner in ("self", "this") and tags is not None:
        for definition in tags.definitions:
            if definition.kind == "class" and definition.line <= cursor.line < definition.end_line:
                # The class the cursor is in: its members' list, even where the window
                # shows part of it; then what it inherits, from the base classes up.
                found[definition.key] = Snippet(
                    "definition",
                    index.relative(definition.path),
                    definition.line,
                    definition.snippet,
                    f"{owner}. is before the cursor",
                    3.0,
                    ("definition", *definition.key),
                    True,
                    next_word=True,
                )
                # What a class overrides is listed once, under the class nearest the cursor.
                listed = {m.name for m in _members(definition, index)}
                for depth, base in enumerate(_bases(definition, index, imports), start=1):
                    why = f"{owner}. is before the cursor: {definition.name} inherits from {base.name}"
                    outline = _members_outline(base, index, skip=listed)
                    listed |= {m.name for m in _members(base, index)}
                    snippet = _outline_snippet(base, outline, why, 3.0 / (1 + 0.1 * depth), index)
                    found[snippet.key] = snippet
    elif owner is not None and owner not in EXPORTS:
        # `thing.|`, its type unknown: the members of the classes whose members the file
        # uses on `thing`, or named like it (`self._loop.` -> EventLoop), as an outline.
        for order, (cls, how) in enumerate(_owner_classes(owner, index, cursor, imports)):
            outline = _members_outline(cls, index, public=True)
            why = f"{owner}. is before the cursor: the members of {cls.name} ({how})"
            snippet = _outline_snippet(cls, outline, why, GUESSED / (1 + order), index)
            found[snippet.key] = snippet
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
    unused = tags.unused if tags is not None else frozenset()
    for order, imported in enumerate(imports.values()):
        for definition in _imported_definitions(cursor.path, imported, index):
            if imported.bound in unused:
                why = f"imported from {imported.module}, not used in the file yet"
                add(definition, UNUSED_IMPORT, why, near=False)
            else:
                add(definition, IMPORTED / (1 + 0.1 * order), f"imported from {imported.module}")
    return _distinct(_members_folded(sorted(found.values(), key=lambda s: -s.score)))


def _owner_before(text: str, offset: int) -> str | None:
    """`name` when the cursor follows `name.` (and maybe part of a word)."""
    match = _OWNER.search(text, max(0, offset - 200), offset)
    return match.group(1) if match else None


def _owner_classes(
    owner: str, index: RepositoryIndex, cursor: Cursor, imports: dict[str, Import]
) -> list[tuple[Definition, str]]:
    """At most `GUESSES` classes `owner` may be an instance of, each with how it was found:
    those defining the members the file uses on it (`msg.get_payload()` elsewhere: Message),
    then those named like it."""
    found: dict[Definition, str] = {}
    used = f"the file uses {owner}'s members"
    for cls in _classes_used_like(owner, index, cursor):
        found.setdefault(cls, used)
    for cls in _classes_like(owner, index, cursor, imports):
        found.setdefault(cls, "named like it")
    return list(found.items())[:GUESSES]


def _classes_used_like(owner: str, index: RepositoryIndex, cursor: Cursor) -> list[Definition]:
    """The classes of the cursor's language that define the members the file uses on
    `owner` (`owner.name`, anywhere in it but at the cursor), best covered first: each member
    counts 1 shared among the classes defining it; a member most classes define (`get`)
    says nothing. A class needs `COVERED` at least."""
    pattern = re.compile(rf"(?<![\w$]){re.escape(owner)}\s*\.\s*([A-Za-z_$][\w$]*)")
    used = {
        m.group(1)
        for m in pattern.finditer(cursor.text)
        if not m.start(1) <= cursor.offset <= m.end(1)
    }
    syntax = _syntax(cursor.path)
    scores: dict[tuple[str, str], float] = {}
    for member in used:
        owners = {
            (d.path, d.container)
            for d in index.named(member)
            if d.container is not None and _syntax(d.path) == syntax
        }
        if len(owners) > COMMON_MEMBER:
            continue
        for key in owners:
            scores[key] = scores.get(key, 0.0) + 1 / len(owners)
    found = []
    for (path, name), score in sorted(scores.items(), key=lambda i: (-i[1], i[0])):
        if score < COVERED:
            break
        cls = next(
            (d for d in index.named(name) if d.path == path and d.kind == "class"),
            None,
        )
        if cls is not None:
            found.append(cls)
    return found


def _classes_like(
    owner: str, index: RepositoryIndex, cursor: Cursor, imports: dict[str, Import]
) -> list[Definition]:
    """Classes with members whose name ends or begins like `owner` or its last word
    (`_loop` and `dest_loop` -> `EventLoop`, `fut` -> `Future`): those in files the file
    imports first, then its folder's, then the shortest names."""
    words = [owner.strip("_$").lower()]
    last = _WORDS.findall(owner)
    if len(last) > 1:
        words.append(last[-1].lower())
    words = [w for w in words if len(w) >= 3]
    syntax = _syntax(cursor.path)
    imported = {p for i in imports.values() for p in index.module_files(cursor.path, i)}
    here = cursor.path.rsplit("/", 1)[0] + "/"
    found: list[Definition] = []
    for word in words:
        classes = [
            d
            for name in index.class_names()
            if name.lower().endswith(word) or name.lower().startswith(word)
            for d in index.named(name)
            if d.kind == "class" and d.container is None and _syntax(d.path) == syntax
        ]
        classes.sort(
            key=lambda d: (d.path not in imported, not d.path.startswith(here), len(d.name), d.path)
        )
        for cls in classes:
            if _members(cls, index):
                found.append(cls)
                if len(found) >= GUESSES:
                    return found
    return found


#: A class statement's base classes: Python's parentheses, or `extends` / `implements`.
_BASES = re.compile(r"\(([^)]*)\)\s*:|\bextends\s+([\w.$]+)|\bimplements\s+([\w.$, ]+)")
#: How many generations of base classes `self.` shows.
INHERITED = 3


def _bases(cls: Definition, index: RepositoryIndex, imports: dict[str, Import]) -> list[Definition]:
    """The classes `cls` inherits from, nearest first, `INHERITED` generations up: each base
    named in its header, found through the imports of `cls`'s file where they name it, else
    unambiguously by name."""
    found: list[Definition] = []
    generation = [(cls, imports)]
    for _ in range(INHERITED):
        following = []
        for child, child_imports in generation:
            header = child.snippet.split("\n", 1)[0]
            for match in _BASES.finditer(header):
                text = next(group for group in match.groups() if group is not None)
                for written in (part.strip() for part in text.split(",")):
                    if not written or "=" in written:
                        continue  # `metaclass=...`
                    base = _class_named(written, child.path, index, child_imports)
                    if base is not None and base not in found and base != cls:
                        found.append(base)
                        tags = index.tags(base.path)
                        following.append((base, {i.bound: i for i in tags.imports} if tags else {}))
        generation = following
    return found


def _class_named(
    written: str, path: str, index: RepositoryIndex, imports: dict[str, Import]
) -> Definition | None:
    """The class `written` (`Base`, `module.Base`) names in the file at `path`."""
    head, _, name = written.rpartition(".")
    name = name or written
    imported = imports.get(head.split(".")[0] if head else name)
    classes = [d for d in index.named(name) if d.kind == "class" and d.container is None]
    if imported is not None:
        files = set(index.module_files(path, imported))
        named = [d for d in classes if d.path in files]
        if named:
            return named[0]
    same = [d for d in classes if d.path == path]
    if same:
        return same[0]
    return classes[0] if len(classes) == 1 else None


def _outline_snippet(
    cls: Definition, outline: str, why: str, score: float, index: RepositoryIndex
) -> Snippet:
    """A class's outline as a snippet: what the word about to be typed is one of."""
    key = ("outline", cls.path, cls.line, cls.name)
    return Snippet(
        "definition",
        index.relative(cls.path),
        cls.line,
        outline,
        why,
        score,
        key,
        True,
        next_word=True,
    )


def _members(cls: Definition, index: RepositoryIndex) -> list[Definition]:
    tags = index.tags(cls.path)
    return [m for m in tags.definitions if m.container == cls.name] if tags else []


def _members_outline(
    cls: Definition,
    index: RepositoryIndex,
    public: bool = False,
    skip: Collection[str] = frozenset(),
) -> str:
    """A class's header and each member's first line (its whole list, up to `OUTLINE`), those
    the most files call first (a budget cutting the outline keeps them), but those named in
    `skip` (listed already, under a class overriding them); `public`: only the
    members code outside the class calls (not `_private`, not `__dunder__`: `thing.` is rarely
    followed by them)."""
    members = [
        m
        for m in _members(cls, index)
        if m.name not in skip and not (public and m.name.startswith("_"))
    ]
    members.sort(key=lambda m: -index.member_uses(m.name))  # the most called first
    lines = [cls.snippet.split("\n", 1)[0]]
    lines += [m.snippet.split("\n")[1] for m in members[:OUTLINE] if "\n" in m.snippet.strip()]
    return "".join(line + "\n" for line in lines)


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
