"""Repository context (issue 18): does the prompt hold the definition the missing code uses?

    python bench/repo_recall.py [--projects email,asyncio,json,npm] [--holes 150] [--seed 0]
                                [--stdlib DIR] [--npm DIR] [--examples 4] [--json OUT]

There is no Code Llama model here, so this measures what the context makes possible, not what
a model does with it. Holes are punched in real multi-file projects nobody on the team wrote:
the packages ``email``, ``asyncio`` and ``json`` of the running Python's stdlib, and npm's own
folder (``/usr/lib/node_modules/npm``, JavaScript, its bundled ``node_modules`` included; the
largest). ``--projects`` also takes ``name=path`` for any other folder. About a minute on 2
cores.

**Holes.** Each project is indexed as the server indexes a workspace folder
(``RepositoryContext.build_now``). In every indexed file with definitions, an identifier X in
code (a tree-sitter identifier node; not on a comment line, not on an import or ``require``
line, where the name enters the file) is a candidate when X is defined in another file of the
project in the same language family (a JavaScript name is not a use of a Python definition:
npm bundles node-gyp's Python) and not in this file (by the index), has at most 3 definitions
and 3 characters or more. The true middle is the rest of the line from X's start, so X is the
first thing the model would write; the editor holds the file without it, the cursor at X's
start. Holes are sampled with ``random.Random(seed)``, at most 3 per file (so a project of
few files gets fewer than ``--holes``).

Most such holes are names that merely coincide with another file's definition (``opts``,
``length``), which the issue's rule ("the true middle uses an identifier defined in another
file") does not mean, so each hole is also read with tree-sitter for whether X is a **use** of
another file's definition. It is not when X is
- bound in the file itself: a parameter, a variable, a loop's or a pattern's name, a nested
  function or class, anywhere in the file (``bound_names``), or ``self.X``/``this.X`` where
  the file assigns ``self.X`` (``own_attributes``);
- an object key or a keyword argument's name;
- one of the language's builtins, or ``x.X`` with X a member of a builtin type (``str``,
  ``dict``, ``Array``...: the owner's type decides, and nothing here knows it);
- imported from, or ``module.X`` of, a module outside the project (no indexed file);
- ``x.X`` where x is no module and another file defines X only at top level.
Recall is reported on those uses (the target), on all holes, and on **linked** holes: the
file imports (as the index resolves imports) a file that defines X. Each hole also says how X
reaches the file (from the tree): ``imported`` (an import binds X), ``module.X`` (after a name
an import binds), ``obj.X`` (after another ``.``), ``bare``.

**Each hole** is planned with the real pipeline (``plan_completion``, default
``CompletionSettings``, ``n_ctx`` 4096) and Code Llama's tokenizer (the tests' tiny Code Llama
GGUF: the real vocabulary with its FIM tokens), the block chosen by
``RepositoryContext.block_for`` as ``Completions._repository`` binds it. The index holds the
holed text of the file while it is planned (``update_text``) and the file's text again after.
Open documents: the file and up to 4 others (the files it imports that the index resolves,
else seeded-random files of its folder), opened before and closed after each plan, so no
hole sees another's block (``block_for`` keeps a block per document while the cursor stays in
the same unit).

**Hit**: some definition D of X in another file is shown: a ``definition`` snippet of D's
file naming X, or any snippet whose text holds D's first line (the first line of D's snippet
that names X, stripped, at least 10 characters). Recall is reported with all sources
(default ``context.repoTokens``, half and double), per source within that block, and each
source alone at the default budget (the others switched off). Recent edits cannot be measured
on static holes: there are no edits to show, so none are made up. ``no context`` is the
control: the prompt window alone (prefix + suffix) already holds D's first line.

A miss at the default budget gets a reason, read off the selection's own candidates
(``definition_snippets``) and rules: never a candidate (X not near the cursor once the middle
is gone, another file's variable, ambiguous, ``.X`` of a top-level name, or folded away as a
member under another snippet that does not list it), or a candidate the budget left out.

Also per project: block tokens (median, p90), whole-prompt tokens with and without the block,
planning time with and without it (after a warm-up plan, so the tokenizer's line cache is warm
for both), the block tokens spent on another language's definitions and on snippets whose text
another file's snippet already shows; and for the largest project the index: build time, its
own estimate (``IndexStats.bytes``), the tracemalloc peak of a build (Python objects only) and
the RSS it adds, each in a fresh child process (``--measure-index``) so the other projects do
not blur it.
"""

from __future__ import annotations

import argparse
import builtins
import json
import random
import re
import shlex
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))
import typing_replay as replay  # the bench's own helpers: machine, percentile
from typing_replay import pct, share

from cl_lsp.completion.context import CursorContext
from cl_lsp.completion.pipeline import CompletionPlan, plan_completion, repository_block
from cl_lsp.config import CompletionSettings, ContextSettings
from cl_lsp.languages import grammar_named_by, parser_for
from cl_lsp.repository.definitions import (
    AMBIGUOUS,
    AMBIGUOUS_MEMBER,
    definition_snippets,
    names_near,
)
from cl_lsp.repository.files import read_source
from cl_lsp.repository.index import RepositoryIndex
from cl_lsp.repository.selection import ContextBlock
from cl_lsp.repository.service import RepositoryContext, uri_path
from cl_lsp.repository.snippets import Cursor
from cl_lsp.repository.tags import Definition

STDLIB_PROJECTS = ("email", "asyncio", "json")
NPM_DIR = Path("/usr/lib/node_modules/npm")
N_CTX = 4096
PER_FILE = 3
MAX_DEFINITIONS = 3
MIN_NAME = 3
MIN_LINE = 10  # a shorter first line (`@property`, `};`) says too little to count as shown
OTHER_OPEN = 4
IDENTIFIERS = frozenset(
    {"identifier", "property_identifier", "shorthand_property_identifier", "type_identifier"}
)
PY_IMPORTS = frozenset({"import_statement", "import_from_statement", "future_import_statement"})
COMMENT_LINE = ("#", "//", "/*", "*")
HOWS = ("imported", "module.X", "obj.X", "bare")
#: The language's own names, never a project's: Python's builtins and the members of its
#: builtin types; JavaScript's globals (ECMAScript's and Node's) and the members of its
#: standard objects' prototypes and constructors (as Node 18 lists them).
PY_BUILTINS = frozenset(dir(builtins))
PY_MEMBERS = frozenset(
    name
    for kind in (str, bytes, bytearray, list, dict, set, frozenset, tuple, int, float, object)
    for name in dir(kind)
) | frozenset(dir(BaseException))
JS_GLOBALS = frozenset(
    """
    AbortController AbortSignal AggregateError Array ArrayBuffer Atomics BigInt BigInt64Array
    BigUint64Array Blob Boolean BroadcastChannel Buffer DOMException DataView Date Error
    EvalError Event EventTarget File FinalizationRegistry Float32Array Float64Array FormData
    Function Headers Infinity Int16Array Int32Array Int8Array Intl JSON Map Math MessageChannel
    MessageEvent MessagePort NaN Number Object Promise Proxy RangeError ReadableStream
    ReferenceError Reflect RegExp Request Response Set SharedArrayBuffer String Symbol
    SyntaxError TextDecoder TextEncoder TransformStream TypeError URIError URL URLSearchParams
    Uint16Array Uint32Array Uint8Array Uint8ClampedArray WeakMap WeakRef WeakSet WebAssembly
    WritableStream __dirname __filename arguments atob btoa clearImmediate clearInterval
    clearTimeout console decodeURI decodeURIComponent encodeURI encodeURIComponent escape eval
    exports fetch global globalThis isFinite isNaN module parseFloat parseInt performance
    process queueMicrotask require setImmediate setInterval setTimeout structuredClone
    undefined unescape
    """.split()  # noqa: SIM905  (a list literal of 120 names reads worse)
)
JS_MEMBERS = frozenset(
    """
    BYTES_PER_ELEMENT EPSILON MAX_SAFE_INTEGER MAX_VALUE MIN_SAFE_INTEGER MIN_VALUE
    NEGATIVE_INFINITY POSITIVE_INFINITY abs add all allSettled any apply assign at bind buffer
    byteLength byteOffset call captureStackTrace catch ceil charAt charCodeAt clear codePointAt
    concat constructor copyWithin create defineProperties defineProperty delete description
    endsWith entries every exec fill filter finally find findIndex findLast findLastIndex flags
    flat flatMap floor for forEach freeze from fromCharCode fromCodePoint fromEntries get
    getOwnPropertyDescriptor getOwnPropertyNames getPrototypeOf getTime has hasOwn
    hasOwnProperty includes indexOf is isArray isFrozen isInteger isPrototypeOf isSafeInteger
    join keys lastIndexOf length localeCompare map match matchAll max message min name
    normalize now of padEnd padStart parse pop pow propertyIsEnumerable prototype push race
    random raw reduce reduceRight reject repeat replace replaceAll resolve reverse round seal
    search set setPrototypeOf shift sign size slice some sort source splice split sqrt
    startsWith stringify subarray substr substring test then toFixed toISOString toJSON
    toLowerCase toString toUpperCase trim trimEnd trimStart trunc unshift valueOf values
    """.split()  # noqa: SIM905  (a list literal of 120 names reads worse)
)
#: What makes a name in the code not a use of another file's definition ("" where it is one).
NOT_USES = {
    "bound": "bound in the file (a parameter, a variable, a loop's or a pattern's name)",
    "key": "an object key or a keyword argument's name",
    "builtin": "one of the language's builtins",
    "builtin member": "x.X where X is a member of a builtin type (str, dict, Array...)",
    "own attribute": "self.X or this.X where the file assigns self.X (its class's attribute)",
    "outside": "X comes from a module outside the project (an import of it, or module.X)",
    "not a member": "x.X where x is no module and another file defines X only at top level",
}
TARGET = 0.80


def log(message: str) -> None:
    print(f"[repo-recall] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- projects and their index ----------------------------------------------------------------


@dataclass
class Project:
    name: str
    root: Path
    context: RepositoryContext  # the default settings; variants share its index
    build_seconds: float

    @property
    def index(self) -> RepositoryIndex:
        assert self.context.index is not None
        return self.context.index


def project_roots(spec: str, stdlib: Path, npm: Path) -> list[tuple[str, Path]]:
    found = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        name, _, path = item.partition("=")
        if path:
            found.append((name, Path(path).expanduser()))
        elif name == "npm":
            found.append((name, npm))
        else:
            found.append((name, stdlib / name))
    return found


def build_project(name: str, root: Path, open_texts: dict[str, str]) -> Project:
    context = RepositoryContext(ContextSettings(), open_texts.get)
    started = time.perf_counter()
    context.build_now([root])
    return Project(name, root, context, time.perf_counter() - started)


def vm_rss() -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) * 1024
    return 0


def measure_index(root: Path, traced: bool) -> dict[str, Any]:
    """One build of `root`'s index in this (fresh) process: time and RSS added, or the
    tracemalloc peak (Python allocations only; tree-sitter's trees are C memory, freed per
    file) and what stays allocated."""
    if traced:
        tracemalloc.start()
    before = vm_rss()
    started = time.perf_counter()
    context = RepositoryContext(ContextSettings(), lambda uri: None)
    context.build_now([root])
    seconds = time.perf_counter() - started
    after = vm_rss()
    assert context.index is not None
    stats = context.index.stats
    out: dict[str, Any] = {
        "seconds": seconds,
        "rssBefore": before,
        "rssDelta": after - before,
        "files": stats.files,
        "definitions": stats.definitions,
        "indexBytes": stats.bytes,
        "full": stats.full,
    }
    if traced:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out.update(tracedPeak=peak, tracedCurrent=current)
    return out


def measure_in_child(root: Path) -> dict[str, Any]:
    """`measure_index` in fresh processes: untraced (time, RSS), then traced (peak)."""
    out: dict[str, Any] = {}
    for traced in (False, True):
        command = [sys.executable, __file__, "--measure-index", str(root)]
        done = subprocess.run(
            [*command, "--traced"] if traced else command,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        found = json.loads(done.stdout.strip().splitlines()[-1])
        if traced:
            out.update(tracedPeak=found["tracedPeak"], tracedCurrent=found["tracedCurrent"])
            out["tracedSeconds"] = found["seconds"]
        else:
            out.update(found)
    return out


# -- holes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hole:
    project: str
    path: str  # as the index names it (resolved, POSIX)
    relative: str
    row: int  # 0-based
    column: int  # str column of X
    start: int  # str offset of X
    end: int  # end of the line (the middle is text[start:end])
    name: str
    how: str  # imported, module.X, obj.X, bare: how X reaches the file (HOWS)
    linked: bool  # the file imports a file that defines X
    not_use: str  # why X here is not a use of another file's definition (NOT_USES), or ""

    def label(self) -> str:
        return f"{self.project}/{self.relative}:{self.row + 1}:{self.column}"


def line_starts(text: str) -> list[int]:
    starts = [0]
    position = text.find("\n")
    while position >= 0:
        starts.append(position + 1)
        position = text.find("\n", position + 1)
    return starts


def import_rows(root: Any, grammar: str, source: bytes) -> set[int]:
    """Rows of import statements and `require` calls (with their short declarations)."""
    rows: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        if grammar == "python":
            if node.type in PY_IMPORTS:
                rows.update(range(node.start_point[0], node.end_point[0] + 1))
            continue
        if node.type == "import_statement" or (
            node.type == "export_statement" and node.child_by_field_name("source") is not None
        ):
            rows.update(range(node.start_point[0], node.end_point[0] + 1))
        elif node.type == "call_expression":
            function = node.child_by_field_name("function")
            if function is None or source[function.start_byte : function.end_byte] != b"require":
                continue
            span = node
            parent = node.parent
            while parent is not None and parent.type not in (
                "lexical_declaration",
                "variable_declaration",
                "expression_statement",
            ):
                parent = parent.parent
            if parent is not None and parent.end_point[0] - parent.start_point[0] < 10:
                span = parent
            rows.update(range(span.start_point[0], span.end_point[0] + 1))
    return rows


#: Where a name is bound: the node type and the field (None: each named child) holding the
#: binding targets.
BINDERS = {
    "python": (
        ("parameters", None),
        ("lambda_parameters", None),
        ("assignment", "left"),
        ("augmented_assignment", "left"),
        ("for_statement", "left"),
        ("for_in_clause", "left"),
        ("as_pattern", "alias"),
        ("named_expression", "name"),
        ("function_definition", "name"),
        ("class_definition", "name"),
        ("global_statement", None),
        ("nonlocal_statement", None),
        ("except_clause", None),  # `except E as e` (older grammars): the alias identifier
    ),
    "javascript": (
        ("variable_declarator", "name"),
        ("formal_parameters", None),
        ("arrow_function", "parameter"),
        ("catch_clause", "parameter"),
        ("for_in_statement", "left"),
        ("function_declaration", "name"),
        ("generator_function_declaration", "name"),
        ("function_expression", "name"),
        ("class_declaration", "name"),
    ),
}
#: Inside a binding target, what is not bound: defaults, annotations, a pattern's keys.
NOT_BOUND = frozenset({"type", "type_annotation", "attribute", "subscript"})


def bound_names(root: Any, kind: str | None, source: bytes) -> set[str]:
    """The names bound anywhere in a file (its parameters, variables, loop and pattern names,
    nested functions and classes): a use of one of them is the file's own."""
    binders: dict[str, str | None] = dict(BINDERS.get(kind or "", ()))
    names: set[str] = set()

    def take(node: Any) -> None:
        if node.type in ("identifier", "shorthand_property_identifier_pattern"):
            names.add(source[node.start_byte : node.end_byte].decode("utf-8", "replace"))
            return
        if node.type in NOT_BOUND or node.type.endswith("expression"):
            return  # `a.b = ...` and `a[i] = ...` bind no name; annotations are uses
        field_name = {
            "default_parameter": "name",
            "typed_default_parameter": "name",
            "assignment_pattern": "left",
            "object_assignment_pattern": "left",
            "pair_pattern": "value",
        }.get(node.type)
        if field_name is not None:  # `a=1`, `{ a = 1 }`, `{ k: a }`: only `a` is bound
            target = node.child_by_field_name(field_name)
            if target is not None:
                take(target)
            return
        for child in node.named_children:
            take(child)

    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        if node.type not in binders:
            continue
        field_name = binders[node.type]
        if field_name is None:
            for child in node.named_children:
                if (
                    node.type != "except_clause"
                    or child.prev_sibling is not None
                    and (child.prev_sibling.type == "as")
                ):
                    take(child)
        elif (target := node.child_by_field_name(field_name)) is not None:
            take(target)
    return names


def own_attributes(root: Any, source: bytes) -> set[str]:
    """The attributes a file assigns on `self` or `this` (`self.X = ...`): its classes' own."""
    names: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        if node.type not in ("assignment", "augmented_assignment", "assignment_expression"):
            continue
        targets = [node.child_by_field_name("left")]
        while targets:
            target = targets.pop()
            if target is None:
                continue
            if target.type in ("pattern_list", "tuple_pattern"):
                targets.extend(target.named_children)
            elif target.type in ("attribute", "member_expression"):
                owner = target.child_by_field_name("object")
                member = target.named_children[-1]
                if owner is not None and source[owner.start_byte : owner.end_byte] in (
                    b"self",
                    b"this",
                ):
                    names.add(source[member.start_byte : member.end_byte].decode())
    return names


def use_of(node: Any) -> tuple[str, Any]:
    """How an identifier is used: ("member", its owner node) for `owner.X`, ("key", None) for
    an object key or a keyword argument's name, else ("name", None)."""
    parent = node.parent
    if parent is None:
        return "name", None
    if parent.type in ("attribute", "member_expression"):
        member = parent.child_by_field_name(
            "attribute" if parent.type == "attribute" else "property"
        )
        if member is not None and member.id == node.id:
            return "member", parent.child_by_field_name("object")
    if parent.type in ("keyword_argument", "pair"):
        key = parent.child_by_field_name("name" if parent.type == "keyword_argument" else "key")
        if key is not None and key.id == node.id:
            return "key", None
    return "name", None


def not_a_use(name: str, use: str, kind: str | None, bound: set[str]) -> str:
    """Why `name`, used so, is not a use of another file's definition (a NOT_USES key), or ""."""
    python = kind == "python"
    if use == "key":
        return "key"
    if use == "member":
        return "builtin member" if name in (PY_MEMBERS if python else JS_MEMBERS) else ""
    if name in bound:
        return "bound"
    return "builtin" if name in (PY_BUILTINS if python else JS_GLOBALS) else ""


def file_candidates(project: Project, path: str, text: str) -> list[Hole]:
    grammar = grammar_named_by(path)
    entry = parser_for(grammar) if grammar else None
    tags = project.index.tags(path)
    if entry is None or grammar is None or tags is None or not tags.definitions:
        return []
    parser, lock = entry
    source = text.encode("utf-8", errors="replace")
    with lock:
        tree = parser.parse(source)
    lines = text.split("\n")
    byte_lines = source.split(b"\n")
    starts = line_starts(text)
    skipped = import_rows(tree.root_node, grammar, source)
    here = {d.name for d in tags.definitions}
    imports = {i.bound: i for i in tags.imports}
    imported = set(imports)
    reached = {f for i in tags.imports for f in project.index.module_files(path, i)}
    kind = family(path)
    bound = bound_names(tree.root_node, kind, source)
    attributes = own_attributes(tree.root_node, source)
    relative = project.index.relative(path)
    found: list[Hole] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        if node.type not in IDENTIFIERS:
            continue
        row, byte_column = node.start_point
        if row in skipped or row >= len(lines) or node.end_point[0] != row:
            continue
        if lines[row].lstrip().startswith(COMMENT_LINE):
            continue
        name = source[node.start_byte : node.end_byte].decode("utf-8", errors="replace")
        if len(name) < MIN_NAME or name in here:
            continue
        definitions = project.index.named(name)
        if len(definitions) > MAX_DEFINITIONS or any(d.path == path for d in definitions):
            continue
        wanted = [d for d in definitions if family(d.path) == kind]
        if not wanted:
            continue  # a JavaScript name is not a use of a Python definition
        column = len(byte_lines[row][:byte_column].decode("utf-8", errors="replace"))
        start = starts[row] + column
        if text[start : start + len(name)] != name:
            continue
        use, owner = use_of(node)
        written = source[owner.start_byte : owner.end_byte] if owner is not None else b""
        module = imports.get(written.decode("utf-8", "replace").split(".")[0].strip())
        if name in imported:
            how, module = "imported", imports[name]
        elif use == "member":
            how = "module.X" if module is not None else "obj.X"
        else:
            how = "bare"
        linked = any(d.path in reached for d in wanted)
        if how in ("imported", "module.X"):
            assert module is not None
            outside = not project.index.module_files(path, module)
            not_use = "outside" if outside else ""
        elif use == "member" and written in (b"self", b"this") and name in attributes:
            not_use = "own attribute"
        elif use == "member" and all(d.container is None for d in wanted):
            not_use = not_a_use(name, use, kind, bound) or "not a member"
        else:
            not_use = not_a_use(name, use, kind, bound)
        end = starts[row] + len(lines[row])
        found.append(
            Hole(project.name, path, relative, row, column, start, end, name, how, linked, not_use)
        )
    return found


def family(path: str) -> str | None:
    """The language family a definition's name means something in."""
    grammar = grammar_named_by(path)
    return "javascript" if grammar in ("javascript", "typescript", "tsx") else grammar


def pick_holes(
    project: Project, texts: dict[str, str], holes: int, seed: int, uses_only: bool = False
) -> list[Hole]:
    """Up to `holes` seeded-random holes, `PER_FILE` per file at most; `uses_only`: of those
    whose X is a use of another file's definition."""
    candidates: list[Hole] = []
    for path in sorted(texts):
        found = file_candidates(project, path, texts[path])
        candidates.extend(h for h in found if not (uses_only and h.not_use))
    candidates.sort(key=lambda h: (h.path, h.start))
    random.Random(seed).shuffle(candidates)
    per_file: Counter[str] = Counter()
    rows: set[tuple[str, int]] = set()
    picked = []
    for hole in candidates:
        if len(picked) >= holes:
            break
        if per_file[hole.path] >= PER_FILE or (hole.path, hole.row) in rows:
            continue
        per_file[hole.path] += 1
        rows.add((hole.path, hole.row))
        picked.append(hole)
    log(
        f"{project.name}: {len(candidates)} candidate holes in "
        f"{len({h.path for h in candidates})} files; {len(picked)} picked"
    )
    return picked


# -- planning one hole -------------------------------------------------------------------------


def first_line(definition: Definition) -> str | None:
    """The line of D's snippet that names it (its def/class/const line), stripped."""
    word = re.compile(rf"(?<![\w$]){re.escape(definition.name)}(?![\w$])")
    for line in definition.snippet.split("\n"):
        if word.search(line):
            stripped = line.strip()
            return stripped if len(stripped) >= MIN_LINE else None
    return None


def hit_sources(block: ContextBlock | None, wanted: list[Definition]) -> set[str]:
    """The sources whose snippets in `block` show one of the definitions `wanted`."""
    if block is None:
        return set()
    found = set()
    for snippet in block.snippets:
        for definition in wanted:
            line = first_line(definition)
            if (
                snippet.source == "definition"
                and snippet.key[1:2] == (definition.path,)
                and snippet.key[3:4] == (definition.name,)
            ) or (line is not None and line in snippet.text):
                found.add(snippet.source)
    return found


@dataclass
class Variant:
    label: str
    context: RepositoryContext | None  # None: no block at all
    budget: int


@dataclass
class Session:
    """The editor around one hole: the open documents, fed to each variant's context."""

    texts: dict[str, str]  # the open documents' text by uri (the contexts' `text_of`)
    uris: list[str] = field(default_factory=list)


def plan_with(
    variant: Variant, session: Session, uri: str, text: str, offset: int, vocab: Any
) -> tuple[CompletionPlan, float]:
    repo = variant.context
    kwargs: dict[str, Any] = {}
    if repo is not None:
        for open_uri in session.uris:
            repo.opened(open_uri, 0, session.texts[open_uri])

        block = repository_block(repo, uri, text, vocab.count)
        kwargs = {"repository": block, "repo_tokens": variant.budget}
    started = time.perf_counter()
    try:
        plan = plan_completion(
            text,
            offset,
            vocab=vocab,
            settings=CompletionSettings(),
            n_ctx=N_CTX,
            path=uri_to_path(uri),
            **kwargs,
        )
    finally:
        seconds = time.perf_counter() - started
        if repo is not None:
            for open_uri in session.uris:
                repo.closed(open_uri)  # forgets the chunks, the edits and the kept block
    return plan, seconds


def variant(
    label: str, budget: int, index: RepositoryIndex, session: Session, **switches: bool
) -> Variant:
    """A context with the default settings but `switches`, sharing the project's index."""
    context = RepositoryContext(replace(ContextSettings(), **switches), session.texts.get)
    context.index = index
    return Variant(label, context, budget)


def uri_to_path(uri: str) -> str:
    path = uri_path(uri)
    return str(path) if path is not None else uri


def open_others(project: Project, hole: Hole, rng: random.Random) -> list[str]:
    """Up to OTHER_OPEN other files: those the file imports (resolved by the index), else
    seeded-random files of its folder."""
    index = project.index
    tags = index.tags(hole.path)
    found: list[str] = []
    for imported in tags.imports if tags else ():
        for path in index.module_files(hole.path, imported):
            if path != hole.path and path not in found:
                found.append(path)
    if found:
        return found[:OTHER_OPEN]
    folder = hole.path.rsplit("/", 1)[0]
    same = sorted(p for p in index.paths() if p != hole.path and p.rsplit("/", 1)[0] == folder)
    rng.shuffle(same)
    return same[:OTHER_OPEN]


def miss_reason(
    hole: Hole, cursor: Cursor, index: RepositoryIndex, wanted: list[Definition], block: Any
) -> dict[str, Any]:
    """Why the default block lacks D: never a candidate (and why, as the selection's rules
    read), or a candidate the budget left out (its rank, and what the block held)."""
    candidates = definition_snippets(cursor, index)
    keys = {("definition", *d.key) for d in wanted}
    ranked = [i for i, s in enumerate(candidates) if s.key in keys]
    held = (
        [
            f"{s.source} {s.path}:{s.line + 1} {s.text.split(chr(10))[0].strip()[:70]}"
            for s in block.snippets
        ]
        if block
        else []
    )
    if ranked:
        rank = ranked[0]
        before = candidates[:rank]
        return {
            "reason": "candidate, left out by the budget",
            "rank": rank + 1,
            "candidates": len(candidates),
            "score": candidates[rank].score,
            "why": candidates[rank].why,
            "ahead": [f"{s.path}:{s.line + 1} {s.why} ({s.score:.3f})" for s in before[:6]],
            "held": held,
        }
    names, _pairs = names_near(cursor.text, cursor.offset)
    bare, member = hole.name in names, "." + hole.name in names
    for definition in wanted if bare or member else ():
        header = definition.snippet.split("\n", 1)[0]
        folded = [
            s
            for s in candidates
            if definition.container is not None
            and s.path == index.relative(definition.path)
            and s.line < definition.line
            and s.text.startswith(header)
        ]
        if folded:
            shown = any(s.key == folded[0].key for s in block.snippets) if block else False
            whose = "its class's" if folded[0].key[3] == definition.container else "a sibling's"
            return {
                "reason": f"folded under {whose} snippet, which does not list it",
                "container": f"{folded[0].path}:{folded[0].line + 1} {folded[0].key[3]}",
                "containerShown": shown,
                "candidates": len(candidates),
                "held": held,
            }
    all_definitions = index.named(hole.name)
    if not bare and not member:
        reason = "X not used near the cursor (and not found through an import)"
    elif (
        bare
        and any(d.kind == "variable" and not d.name.isupper() for d in wanted)
        and all(d.kind == "variable" for d in wanted)
    ):
        reason = "X used near the cursor, but another file's variable (not imported)"
    elif not bare and not any(d.container is not None for d in wanted):
        reason = "X used near the cursor only as `.X`, and D is not a member"
    elif len(all_definitions) > (AMBIGUOUS if bare else AMBIGUOUS_MEMBER):
        reason = f"X used near the cursor, but {len(all_definitions)} definitions: ambiguous"
    else:
        reason = "X used near the cursor, yet not a candidate"
    return {"reason": reason, "candidates": len(candidates), "held": held}


def block_oddities(block: ContextBlock | None, kind: str | None, index: Any) -> dict[str, int]:
    """Tokens a block spends on another language's definitions, and on a snippet whose text
    another file's snippet in the same block already shows (a package's CommonJS and ESM
    builds)."""
    if block is None:
        return {"foreignTokens": 0, "duplicateTokens": 0}
    foreign = duplicate = 0
    seen: dict[str, str] = {}
    root = index.roots[0].as_posix()
    for snippet, tokens in zip(block.snippets, block.tokens, strict=True):
        if family(f"{root}/{snippet.path}") != kind:
            foreign += tokens
        body = "\n".join(line.strip() for line in snippet.text.strip().split("\n"))
        if seen.get(body, snippet.path) != snippet.path:
            duplicate += tokens
        seen.setdefault(body, snippet.path)
    return {"foreignTokens": foreign, "duplicateTokens": duplicate}


def cursor_of(uri: str, path: str, text: str, context: CursorContext) -> Cursor:
    window = (context.window_start, context.window_end)
    return Cursor(
        uri,
        path,
        text,
        context.offset,
        (text.count("\n", 0, window[0]), text.count("\n", 0, window[1]) + 1),
        context.language,
    )


def run_hole(
    project: Project,
    hole: Hole,
    text: str,
    variants: list[Variant],
    session: Session,
    vocab: Any,
    rng: random.Random,
) -> dict[str, Any]:
    index = project.index
    path = Path(hole.path)
    holed = text[: hole.start] + text[hole.end :]
    kind = family(hole.path)
    wanted = [d for d in index.named(hole.name) if d.path != hole.path and family(d.path) == kind]
    uri = path.as_uri()
    others = open_others(project, hole, rng)
    session.texts.clear()
    session.texts[uri] = holed
    for other in others:
        other_text = read_source(Path(other), index.rules)
        if other_text is not None:
            session.texts[Path(other).as_uri()] = other_text
    session.uris = list(session.texts)
    record: dict[str, Any] = {
        "at": hole.label(),
        "project": hole.project,
        "name": hole.name,
        "how": hole.how,
        "linked": hole.linked,
        "notUse": hole.not_use,
        "middle": text[hole.start : hole.end],
        "definitions": [f"{index.relative(d.path)}:{d.line + 1} {d.kind}" for d in wanted],
        "open": [index.relative(p) for p in others],
        "configs": {},
    }
    index.update_text(path, holed)
    try:
        plan_with(variants[0], session, uri, holed, hole.start, vocab)  # warms the tokenizer
        for variant in variants:
            plan, seconds = plan_with(variant, session, uri, holed, hole.start, vocab)
            if plan.request is None:
                record["mode"] = plan.context.mode.value
                return record
            block = plan.repository
            sources = hit_sources(block, wanted)
            result: dict[str, Any] = {
                "hit": bool(sources),
                "sources": sorted(sources),
                "blockTokens": block.total if block else 0,
                "promptTokens": len(plan.request.tokens),
                "ms": 1000 * seconds,
            }
            if variant.context is None:
                window = plan.context.prefix + plan.context.suffix
                result["hit"] = any(
                    (line := first_line(d)) is not None and line in window for d in wanted
                )
            elif variant.label == "default":
                result.update(block_oddities(block, kind, index))
                if not sources:
                    cursor = cursor_of(uri, hole.path, holed, plan.context)
                    result["miss"] = miss_reason(hole, cursor, index, wanted, block)
            record["configs"][variant.label] = result
        record["mode"] = plan.context.mode.value
    finally:
        index.update_text(path, text)
        session.texts.clear()
    return record


# -- figures ---------------------------------------------------------------------------------


def summarize(records: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    planned = [r for r in records if r["configs"]]
    subsets = {
        "": planned,
        "uses:": [r for r in planned if not r["notUse"]],
        "linked:": [r for r in planned if r["linked"]],
    }
    out: dict[str, Any] = {"noPrompt": len(records) - len(planned)}
    for key, subset in subsets.items():
        out[key + "holes"] = len(subset)
        for label in labels:
            out[key + label] = share([r["configs"][label]["hit"] for r in subset])
    out["notUses"] = dict(Counter(r["notUse"] for r in planned if r["notUse"]).most_common())
    default = [r["configs"]["default"] for r in planned]
    for source in ("definition", "similar", "edit"):
        out["via:" + source] = share([source in c["sources"] for c in default])
    tokens = [c["blockTokens"] for c in default]
    spent = sum(tokens) or 1
    groups = group_by(planned, "how")
    out.update(
        blockMedian=median(tokens),
        blockP90=replay.percentile(tokens, 0.9),
        promptWith=median([c["promptTokens"] for c in default]),
        promptWithout=median([r["configs"]["none"]["promptTokens"] for r in planned]),
        msWith=median([c["ms"] for c in default]),
        msWithout=median([r["configs"]["none"]["ms"] for r in planned]),
        byHow={
            how: (share([r["configs"]["default"]["hit"] for r in groups[how]]), len(groups[how]))
            for how in HOWS
            if how in groups
        },
        foreignShare=sum(c["foreignTokens"] for c in default) / spent,
        foreignBlocks=share([c["foreignTokens"] > 0 for c in default]),
        duplicateShare=sum(c["duplicateTokens"] for c in default) / spent,
        duplicateBlocks=share([c["duplicateTokens"] > 0 for c in default]),
        misses=dict(Counter(c["miss"]["reason"] for c in default if "miss" in c).most_common()),
    )
    return out


def group_by(records: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record[key]].append(record)
    return dict(sorted(groups.items()))


def print_recall(
    summaries: dict[str, dict[str, Any]],
    projects: dict[str, Project],
    budgets: dict[str, int],
    key: str,
) -> None:
    half, default, double = budgets["half"], budgets["default"], budgets["double"]
    print(
        f"\n| project | files | holes | no context | {half} tokens | {default} tokens (default) "
        f"| {double} tokens | definitions alone | similar alone | edits alone |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, s in summaries.items():
        files = str(len(projects[name].index)) if name in projects else ""
        shown = f"**{name}**" if name == "combined" else name
        holes = s[key + "holes"]
        print(
            f"| {shown} | {files} | {holes} | {pct(s[key + 'none'])} | {pct(s[key + 'half'])} | "
            f"**{pct(s[key + 'default'])}** | {pct(s[key + 'double'])} | "
            f"{pct(s[key + 'definitions'])} | {pct(s[key + 'similar'])} | not measured |"
        )


def print_tables(
    summaries: dict[str, dict[str, Any]],
    projects: dict[str, Project],
    budgets: dict[str, int],
    index_figures: tuple[str, dict[str, Any]] | None,
) -> None:
    print(
        "\nHoles whose X is a use of another file's definition (the issue's rule; not a name "
        "the file binds itself, an object key, a builtin or a builtin type's member):"
    )
    print_recall(summaries, projects, budgets, "uses:")
    print("\nAll holes (X is named like a definition in another file of the project):")
    print_recall(summaries, projects, budgets, "")
    print("\nLinked holes (the file imports a file that defines X, as the index resolves imports):")
    print_recall(summaries, projects, budgets, "linked:")
    combined = summaries.get("combined", {})
    print(f"\nNot uses, among all {combined.get('holes')} holes:")
    for reason, n in combined.get("notUses", {}).items():
        print(f"   {n:4d}  {NOT_USES[reason]}")
    print(
        "\n| project | hit via definitions | hit via similar | block tokens median / p90 "
        "| prompt tokens without / with block | planning ms without / with block "
        "| block tokens on another language / on duplicates |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in summaries.items():
        print(
            f"| {name} | {pct(s['via:definition'])} | {pct(s['via:similar'])} | "
            f"{replay.fmt(s['blockMedian'])} / {replay.fmt(s['blockP90'])} | "
            f"{replay.fmt(s['promptWithout'])} / {replay.fmt(s['promptWith'])} | "
            f"{replay.fmt(s['msWithout'], 1)} / {replay.fmt(s['msWith'], 1)} | "
            f"{pct(s['foreignShare'])} / {pct(s['duplicateShare'])} |"
        )
    print("\n| project | recall at the default budget by how X reaches the file |")
    print("|---|---|")
    for name, s in summaries.items():
        parts = [f"{how} {pct(r)} of {n}" for how, (r, n) in s["byHow"].items()]
        print(f"| {name} | {', '.join(parts)} |")
    if index_figures is not None:
        name, m = index_figures
        mb = 1e6
        print(
            f"\n| index of {name} | files | definitions | build (s) | IndexStats.bytes "
            "| tracemalloc peak | tracemalloc kept | RSS added |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {projects[name].root} | {m['files']} | {m['definitions']} | {m['seconds']:.2f} | "
            f"{m['indexBytes'] / mb:.1f} MB | {m['tracedPeak'] / mb:.1f} MB | "
            f"{m['tracedCurrent'] / mb:.1f} MB | {m['rssDelta'] / mb:.1f} MB |"
        )


def print_misses(records: list[dict[str, Any]], summary: dict[str, Any], examples: int) -> None:
    missed = [
        {**r, "reason": r["configs"]["default"]["miss"]["reason"]}
        for r in records
        if r["configs"] and "miss" in r["configs"]["default"] and not r["notUse"]
    ]
    print(
        "\n== misses at the default budget of the holes using another file's definition, by "
        "reason (linked holes among them; by how)"
    )
    for reason, group in sorted(group_by(missed, "reason").items(), key=lambda g: -len(g[1])):
        hows = Counter(r["how"] for r in group)
        print(
            f"   {len(group):4d}  {reason} ({sum(r['linked'] for r in group)} linked; "
            f"{', '.join(f'{h} {n}' for h, n in hows.most_common())})"
        )
    for reason, group in group_by(missed, "reason").items():
        print(f"-- {reason}")
        group = sorted(group, key=lambda r: not r["linked"])  # linked holes first
        for record in group[:examples]:
            miss = record["configs"]["default"]["miss"]
            print(
                f"   {record['at']} X={record['name']} ({record['how']}"
                f"{', linked' if record['linked'] else ''}) "
                f"middle={record['middle'].strip()[:60]!r}"
            )
            print(f"     defined at {', '.join(record['definitions'])}")
            if "rank" in miss:
                print(
                    f"     D is candidate {miss['rank']} of {miss['candidates']}: {miss['why']} "
                    f"({miss['score']:.3f}); ahead of it:"
                )
                for line in miss["ahead"]:
                    print(f"       {line}")
            if "container" in miss:
                print(f"     folded under {miss['container']} (shown: {miss['containerShown']})")
            print(f"     block ({record['configs']['default']['blockTokens']} tokens) held:")
            for line in miss["held"][:8]:
                print(f"       {line}")


# -- main ------------------------------------------------------------------------------------


def load_vocab(directory: Path) -> Any:
    """Code Llama's tokenizer with its FIM tokens (the tests' tiny Code Llama GGUF), else the
    bare vocabulary file (no FIM tokens: prefix-only prompts, the block is the same)."""
    import assets

    from cl_lsp.engine import Vocabulary

    vocab_file = assets.vocab_path()
    try:
        model = assets.build_codellama_gguf(directory / "tiny-codellama.gguf", vocab=vocab_file)
    except Exception as error:  # noqa: BLE001  (the bare vocabulary still measures recall)
        log(f"could not build the tiny Code Llama GGUF ({error}); using {vocab_file.name}")
        model = vocab_file
    return Vocabulary(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Recall of repository context: holes whose missing code uses a name "
        "defined in another file, and whether the prompt shows that definition."
    )
    parser.add_argument(
        "--projects",
        default=",".join((*STDLIB_PROJECTS, "npm")),
        help="comma-separated: stdlib package names, npm, or name=path (default "
        "email,asyncio,json,npm)",
    )
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--npm", type=Path, default=NPM_DIR, help=f"npm's folder ({NPM_DIR})")
    parser.add_argument("--holes", type=int, default=150, help="holes per project (150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=4, help="misses shown per reason (4)")
    parser.add_argument("--no-memory", action="store_true", help="skip the index measurement")
    parser.add_argument("--json", help="write the figures and every hole's record")
    parser.add_argument("--measure-index", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_index is not None:
        print(json.dumps(measure_index(args.measure_index, args.traced)))
        return 0

    started = time.monotonic()
    info = replay.machine()
    print(
        f"repo recall: {info['nproc']} CPUs ({info['cpu']}), {info['ramBytes'] / 2**30:.0f} GiB "
        f"RAM, Python {info['python']}, load average {info['loadavg']}"
    )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    defaults = ContextSettings()
    budgets = {
        "half": defaults.repo_tokens // 2,
        "default": defaults.repo_tokens,
        "double": defaults.repo_tokens * 2,
    }
    workdir = tempfile.TemporaryDirectory(prefix="repo-recall-")
    vocab = load_vocab(Path(workdir.name))
    print(f"tokenizer: {vocab.model_name} (FIM tokens: {bool(vocab.fim_ids)}); n_ctx {N_CTX}")

    session = Session({})
    projects: dict[str, Project] = {}
    records: list[dict[str, Any]] = []
    for name, root in project_roots(args.projects, args.stdlib, args.npm):
        if not root.is_dir():
            log(f"{name}: no folder {root}; skipped")
            continue
        project = build_project(name, root, session.texts)
        projects[name] = project
        stats = project.index.stats
        print(
            f"{name}: {root} -- {stats.files} files, {stats.definitions} definitions, "
            f"indexed in {project.build_seconds:.2f} s"
        )
        index = project.index
        texts = {}
        for path in index.paths():
            tags = index.tags(path)
            text = read_source(Path(path), index.rules) if tags and tags.definitions else None
            if text is not None:
                texts[path] = text
        holes = pick_holes(project, texts, args.holes, args.seed)

        default = budgets["default"]
        variants = [
            Variant("none", None, 0),
            *(variant(label, budget, index, session) for label, budget in budgets.items()),
            variant("definitions", default, index, session, similar=False, edits=False),
            variant("similar", default, index, session, definitions=False, edits=False),
        ]
        rng = random.Random(args.seed)
        began = time.monotonic()
        for hole in holes:
            records.append(run_hole(project, hole, texts[hole.path], variants, session, vocab, rng))
        log(f"{name}: {len(holes)} holes planned in {time.monotonic() - began:.0f} s")
    if not projects:
        raise SystemExit("error: none of the projects' folders exists on this machine")

    labels = ["none", *budgets, "definitions", "similar"]
    summaries = {
        name: summarize([r for r in records if r["project"] == name], labels) for name in projects
    }
    summaries["combined"] = summarize(records, labels)
    index_figures = None
    if not args.no_memory:
        largest = max(projects, key=lambda n: projects[n].index.stats.bytes)
        log(f"measuring the index of {largest} in child processes")
        index_figures = (largest, measure_in_child(projects[largest].root))
    print(
        f"\nRecall: share of holes whose prompt shows a definition of the name the missing code "
        f"starts with (target >= {TARGET:.0%} at the default budget, {budgets['default']} tokens)"
    )
    print_tables(summaries, projects, budgets, index_figures)
    combined = summaries["combined"]
    no_prompt = combined["noPrompt"]
    if no_prompt:
        print(f"\n{no_prompt} holes got no prompt (completion mode none) and are not counted")
    reached = combined["uses:default"]
    print(
        f"\ntarget: recall {pct(reached)} at the default budget on the holes using another "
        f"file's definition ({'met' if (reached or 0) >= TARGET else 'NOT met'}); "
        f"{pct(combined['default'])} on all holes"
    )
    print_misses(records, combined, args.examples)
    print(f"\ntotal {time.monotonic() - started:.0f} s; load average at the end {replay.loadavg()}")
    if args.json:
        out = {
            "machine": info,
            "command": [sys.executable, *sys.argv],
            "args": {k: str(v) for k, v in vars(args).items()},
            "budgets": budgets,
            "summaries": summaries,
            "index": index_figures,
            "holes": records,
        }
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    vocab.close()
    workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
