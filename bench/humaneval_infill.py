"""HumanEval infilling through cl-lsp's planning, stop rules and post-processing (issue 13).

    python bench/humaneval_infill.py [--data DIR] [--sets single,multi] [--limit N]
                                     [--jobs 2] [--json OUT] [--examples 3]

The data: the single-line and multi-line sets of HumanEval infilling (Bavarian et al. 2022,
github ``openai/human-eval-infilling``, MIT), two ``.jsonl.gz`` files; ``--data`` is the
directory holding them (default ``$CL_LSP_HUMANEVAL_DATA`` or ``../shared/data/
human-eval-infilling`` beside the repository). Each task is a ``prompt`` (the text before the
gap), a ``suffix``, the ``canonical_solution`` (the middle) and a ``test``.

No model writes anything here: the *raw outputs are scripted* around the canonical middle M,
as a perfect model would write it and as models overrun it:

* ``exact``: M, then the end token;
* ``suffix+1`` / ``+2`` / ``+5`` / ``all``: M, then a copy of the next 1, 2, 5 or all lines of
  the document after it (a model that does not stop where the suffix takes over);
* ``repeat``: M with its last line written twice;
* ``half``: M cut inside a line near its middle, stop reason ``max_tokens``.

Each task is planned as the server plans it (``plan_completion``: tree-sitter context, mode,
token budgets, the prompt) with Code Llama's vocabulary, at two cursors:

* ``dataset``: the dataset's own, column 0 of the line after the gap (M ends with a newline);
* ``enter``: the user pressed Enter at the end of the line before the gap and the editor
  indented the new line like M's first line (M loses that indentation and its final newline);
* ``midline``: the span moved to start inside M's first line and end inside the line after M
  (seeded by the task id; tasks whose lines are too short are left out).

The raw output is tokenized and fed token by token through the engine's own stop rules
(``stop_after_piece``: the newline stop of single-line mode, the block-end stop; the token cap
of the mode), then ``finish_completion`` (the post-processing filters). The suggestion is
spliced at the cursor as an editor does (over the auto-closed characters it types over) and
the task's tests run in a child process (fork per program, 3 s, 1 GiB address space, no
writes outside a temporary directory). ``exact`` means the spliced document is the reference
document character for character.

Control (no cl-lsp): the raw output spliced as it is. For the canonical middle that is the
reference document itself, which must pass 100%: it checks the sandbox.

Reports exact% and pass% per set, cursor and scenario; for ``half`` the share shown and the
share whose splice adds tree-sitter parse errors to the document; and what cut correct code
(the stop rule or the first filter that changed M) with an example each.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cl_lsp import syntax
from cl_lsp.completion import postprocess
from cl_lsp.completion.context import CompletionMode
from cl_lsp.config import CompletionSettings
from cl_lsp.engine import Generation, GenerationRequest

try:
    from cl_lsp.engine import stop_after_piece
except ImportError:  # a checkout from before issue 13, measured as the baseline: the same rules

    def stop_after_piece(
        request: GenerationRequest, text: str, piece: str
    ) -> tuple[str, str] | None:
        if "\n" not in piece:
            return None
        if request.stop_at_newline:
            return text, "newline"
        if request.stop_check is not None and (cut := request.stop_check(text)) is not None:
            return text[:cut], "end_of_block"
        return None


from cl_lsp.completion.pipeline import CompletionPlan, finish_completion, plan_completion

try:
    from cl_lsp.engine.tokenizer import encode_nospace
except ImportError:  # a checkout from before the engine package
    from cl_lsp.completion.prompts import encode_nospace

SETS = {
    "single": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi": "HumanEval-MultiLineInfilling.jsonl.gz",
}
CURSORS = ("dataset", "enter", "midline")
SCENARIOS = ("exact", "suffix+1", "suffix+2", "suffix+5", "suffix+all", "repeat", "half")
OVERRUNS = ("suffix+1", "suffix+2", "suffix+5", "suffix+all", "repeat")
N_CTX = 4096
TIMEOUT_S = 3.0
MEMORY_BYTES = 1 << 30


def default_data() -> Path:
    env = os.environ.get("CL_LSP_HUMANEVAL_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "human-eval-infilling"


def log(message: str) -> None:
    print(f"[humaneval] {message}", file=sys.stderr, flush=True)


# -- tasks and cursors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    set: str
    id: str
    prompt: str
    middle: str
    suffix: str
    test: str
    entry_point: str

    @property
    def reference(self) -> str:
        return self.prompt + self.middle + self.suffix

    def program(self, document: str) -> str:
        return f"{document}\n{self.test}\ncheck({self.entry_point})\n"


def load_tasks(data: Path, name: str) -> list[Task]:
    path = data / SETS[name]
    if not path.exists():
        raise SystemExit(
            f"{path} not found: get the HumanEval infilling files from github "
            "openai/human-eval-infilling (data/) and pass --data"
        )
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return [
        Task(
            name,
            row["task_id"],
            row["prompt"],
            row["canonical_solution"],
            row["suffix"],
            row["test"],
            row["entry_point"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Spot:
    """A cursor in a document, and the text a perfect suggestion inserts there."""

    cursor: str
    document: str  # the document as the editor has it (without the middle)
    offset: int
    middle: str  # what accepting the perfect suggestion inserts


def spots(task: Task) -> Iterator[Spot]:
    yield Spot("dataset", task.prompt + task.suffix, len(task.prompt), task.middle)
    m = task.middle
    if task.prompt.endswith("\n") and m.endswith("\n"):
        indent = m[: len(m) - len(m.lstrip(" \t"))]
        document = task.prompt + indent + "\n" + task.suffix
        yield Spot("enter", document, len(task.prompt) + len(indent), m[len(indent) : -1])
    if (spot := midline(task)) is not None:
        yield spot


def midline(task: Task) -> Spot | None:
    """The span moved to start and end inside lines: from a seeded point inside the code of
    M's first line to one inside the code of the line after M (both at least 4 characters)."""
    m, (line, nl, rest) = task.middle, task.suffix.partition("\n")
    first = m.partition("\n")[0]
    if not m.endswith("\n") or len(first.strip()) < 4 or len(line.strip()) < 4:
        return None
    rng = random.Random(task.id)
    a = len(first) - len(first.lstrip()) + rng.randint(1, len(first.strip()) - 1)
    b = len(line) - len(line.lstrip()) + rng.randint(1, len(line.strip()) - 1)
    prompt = task.prompt + m[:a]
    return Spot("midline", prompt + line[b:] + nl + rest, len(prompt), m[a:] + line[:b])


def raw_outputs(spot: Spot) -> Iterator[tuple[str, str, str]]:
    """(scenario, raw text, stop reason when the text runs out) around the perfect middle."""
    m = spot.middle
    yield "exact", m, "eot"
    after = spot.document[spot.offset :]
    if not m.endswith("\n"):  # the middle ends inside a line: its rest comes first
        rest, nl, after = after.partition("\n")
        head = rest + nl
    else:
        head = ""
    lines = after.splitlines(keepends=True)
    for k, name in ((1, "suffix+1"), (2, "suffix+2"), (5, "suffix+5"), (len(lines), "suffix+all")):
        if lines and k <= len(lines) or name == "suffix+all":
            yield name, m + head + "".join(lines[:k]), "eot"
    last = m.rstrip("\n").rpartition("\n")[2]
    if last.strip():
        yield "repeat", m + (last + "\n" if m.endswith("\n") else "\n" + last), "eot"
    cut = half_cut(m)
    if cut is not None:
        yield "half", m[:cut], "max_tokens"


def half_cut(m: str) -> int | None:
    """The first position from the middle of ``m`` on that is inside a line's code: after a
    non-blank character of its line and before another character of the same line."""
    for p in range(max(1, len(m) // 2), len(m) - 1):
        line_start = m.rfind("\n", 0, p) + 1
        if m[p - 1] != "\n" and m[p] != "\n" and m[line_start:p].strip():
            return p
    return None


# -- the server's path, with scripted output -----------------------------------------------------


def generate(plan: CompletionPlan, raw: str, runs_out: str, vocab: Any) -> Generation:
    """What the engine returns when the model writes ``raw`` (then ``runs_out``): the text
    token by token through the engine's stop rules and the token cap."""
    request = plan.request
    assert request is not None
    tokens = encode_nospace(vocab.encode, request.heal + raw)
    text, generated, reason = "", [], runs_out
    for token in tokens:
        generated.append(token)
        piece = vocab.piece(token).decode("utf-8", errors="replace")
        text += piece
        if (stop := stop_after_piece(request, text, piece)) is not None:
            text, reason = stop
            break
        if len(generated) >= request.max_tokens:
            reason = "max_tokens"
            break
    return Generation(
        text[len(request.heal) :], tuple(generated), len(request.tokens), 0, reason, 0.0
    )


def cut_by(plan: CompletionPlan, raw: str, generation: Generation, shown: str) -> str:
    """What changed the perfect middle: the stop rule, or the first filter that altered it."""
    context = plan.context
    if generation.text != raw:
        return f"stop:{generation.stop_reason}"
    ctx = postprocess.FilterInput(
        context.prefix, context.suffix, context.mode is CompletionMode.SINGLE_LINE, context.language
    )
    text = raw
    indent = postprocess.lines_above(ctx) if hasattr(postprocess, "lines_above") else None
    if indent is not None and raw.endswith("\n"):  # as clean_completion judges whole lines
        text = raw[:-1]
        ctx = replace(ctx, suffix="\n" + indent + ctx.suffix)
    for step in postprocess.FILTERS:
        new = step(text, ctx)
        if new != text and new.rstrip() != text.rstrip():
            return f"filter:{step.__name__}"
        text = new
    if shown != raw and shown == raw.rstrip():
        return "trailing line break"

    def strip(t: str) -> str:
        return "\n".join(line.rstrip() for line in t.split("\n"))

    return "trailing spaces" if strip(shown) == strip(raw) else "other"


@dataclass
class Outcome:
    set: str
    task: str
    cursor: str
    scenario: str
    mode: str
    shown: str
    exact: bool
    program: str  # hashed later: runs once however many outcomes share it
    control: str  # the raw output spliced without cl-lsp
    syntax_added: bool | None  # "half" only: the splice parses worse than the document
    cause: str | None  # what made a correct middle fail, for "exact"
    fits: bool  # the middle fits the mode's token cap


_vocab: Any = None
_scenarios: frozenset[str] = frozenset(SCENARIOS)


def _init_worker(model: str, scenarios: str) -> None:
    global _vocab, _scenarios
    from cl_lsp.engine import Vocabulary

    _vocab = Vocabulary(Path(model))
    _scenarios = frozenset(scenarios.split(","))


def evaluate(task: Task) -> list[Outcome]:
    vocab, settings = _vocab, CompletionSettings()
    outcomes = []
    for spot in spots(task):
        plan = plan_completion(
            spot.document,
            spot.offset,
            vocab=vocab,
            settings=settings,
            n_ctx=N_CTX,
            language_id="python",
            path="task.py",
        )
        single = plan.context.mode is CompletionMode.SINGLE_LINE
        cap = settings.max_tokens_single_line if single else settings.max_tokens
        # The model's end token counts too: a middle of exactly `cap` tokens is cut by the cap.
        fits = len(encode_nospace(vocab.encode, spot.middle)) < cap
        for scenario, raw, runs_out in raw_outputs(spot):
            if scenario not in _scenarios:
                continue
            if plan.request is None:
                shown, after, generation = "", 0, None
            else:
                generation = generate(plan, raw, runs_out, vocab)
                suggestion = finish_completion(plan, generation)
                shown, after = suggestion.text, suggestion.replace_after
            document = spot.document[: spot.offset] + shown + spot.document[spot.offset + after :]
            exact = document == task.reference
            syntax_added = None
            if scenario == "half":
                added = syntax.added_errors(
                    spot.document[: spot.offset],
                    shown,
                    spot.document[spot.offset + after :],
                    "python",
                )
                syntax_added = bool(shown) and added is not None and added > 0
            cause = None
            if scenario == "exact" and not exact:
                cause = "mode:none" if generation is None else cut_by(plan, raw, generation, shown)
            control = spot.document[: spot.offset] + raw + spot.document[spot.offset :]
            outcomes.append(
                Outcome(
                    task.set,
                    task.id,
                    spot.cursor,
                    scenario,
                    plan.context.mode.value,
                    shown,
                    exact,
                    task.program(document),
                    task.program(control),
                    syntax_added,
                    cause,
                    fits,
                )
            )
    return outcomes


def evaluate_chunk(tasks: list[Task]) -> list[Outcome]:
    return [outcome for task in tasks for outcome in evaluate(task)]


# -- running the tests ------------------------------------------------------------------------------


def run_program(program: str) -> bool:
    """Run a task's program in a forked child with a time and memory limit, in a temporary
    directory, its output discarded; True if it exits cleanly."""
    with tempfile.TemporaryDirectory(prefix="cl-lsp-humaneval-") as workdir:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.chdir(workdir)
                os.setsid()
                resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
                resource.setrlimit(resource.RLIMIT_CPU, (int(TIMEOUT_S) + 1,) * 2)
                resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                signal.alarm(int(TIMEOUT_S))
                exec(compile(program, "task.py", "exec"), {"__name__": "__task__"})  # noqa: S102 - the sandboxed child
                code = 0
            except BaseException:  # noqa: BLE001 - any failure fails the task
                code = 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + TIMEOUT_S + 2
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status) == 0
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False
            time.sleep(0.002)


def run_programs(programs: list[str]) -> list[bool]:
    return [run_program(program) for program in programs]


def digest(program: str) -> str:
    return hashlib.sha1(program.encode("utf-8", "surrogatepass")).hexdigest()


# -- the report -------------------------------------------------------------------------------------


def pct(n: int, d: int) -> str:
    return "-" if not d else f"{100 * n / d:.1f}%"


def summarize(outcomes: list[Outcome], passed: dict[str, bool]) -> dict[str, Any]:
    cells: dict[str, dict[str, int]] = defaultdict(Counter)
    causes: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        for key in (
            f"{o.set}/{o.cursor}/{o.scenario}",
            *((f"{o.set}/{o.cursor}/{o.scenario}/fits",) if o.fits else ()),
        ):
            cell = cells[key]
            cell["n"] += 1
            cell["exact"] += o.exact
            cell["pass"] += passed[digest(o.program)]
            cell["control"] += passed[digest(o.control)]
            cell["shown"] += bool(o.shown)
            cell["syntaxAdded"] += bool(o.syntax_added)
        if o.cause:
            causes[f"{o.set}/{o.cursor}"][o.cause] += 1
    return {
        "cells": {k: dict(v) for k, v in cells.items()},
        "causes": {k: dict(v.most_common()) for k, v in causes.items()},
    }


def print_report(summary: dict[str, Any], sets: list[str]) -> None:
    cells = summary["cells"]
    print(
        f"\n{'set':<7} {'cursor':<8} {'scenario':<11} {'tasks':>5}  {'exact':>6} {'pass':>6} "
        f"{'pass(fits)':>10} {'no cl-lsp':>9} {'shown':>6} {'syntax+':>7}"
    )
    for name in sets:
        for cursor in CURSORS:
            for scenario in SCENARIOS:
                cell = cells.get(f"{name}/{cursor}/{scenario}")
                if not cell:
                    continue
                fits = cells.get(f"{name}/{cursor}/{scenario}/fits", {"n": 0, "pass": 0})
                n = cell["n"]
                print(
                    f"{name:<7} {cursor:<8} {scenario:<11} {n:>5}  "
                    f"{pct(cell['exact'], n):>6} {pct(cell['pass'], n):>6} "
                    f"{pct(fits['pass'], fits['n']):>10} {pct(cell['control'], n):>9} "
                    f"{pct(cell['shown'], n):>6} "
                    f"{pct(cell['syntaxAdded'], n) if scenario == 'half' else '':>7}"
                )
    for key, causes in summary["causes"].items():
        print(
            f"\nwhat cut the exact middle ({key}): "
            + ", ".join(f"{cause} {count}" for cause, count in causes.items())
        )


def print_examples(
    outcomes: list[Outcome], passed: dict[str, bool], tasks: dict[str, Task], count: int
) -> None:
    seen: Counter[str] = Counter()
    for o in outcomes:
        if o.scenario == "exact" and o.cause and seen[o.cause] < count:
            seen[o.cause] += 1
            task = tasks[o.task]
            spot = next(s for s in spots(task) if s.cursor == o.cursor)
            print(
                f"\n--- {o.cause}: {o.task} at {o.cursor} ({o.mode})\n"
                f"prefix ...{spot.document[max(0, spot.offset - 160) : spot.offset]!r}\n"
                f"middle   {spot.middle!r}\nshown    {o.shown!r}\n"
                f"suffix   {spot.document[spot.offset : spot.offset + 160]!r}..."
            )


@cache
def default_model() -> Path:
    """A Code Llama vocabulary in a tiny model built like the tests' (weights unused here)."""
    sys.path.insert(0, str(REPO / "tests"))
    import assets

    path = REPO / "bench" / ".models" / "codellama-vocab.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        assets.build_codellama_gguf(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--sets", default="single,multi")
    parser.add_argument("--limit", type=int, default=0, help="first N tasks of each set")
    parser.add_argument(
        "--model",
        type=Path,
        help="a GGUF whose vocabulary to use "
        "(default: Code Llama's, in a tiny model built under bench/.models)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, of " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sets = args.sets.split(",")
    tasks = [t for name in sets for t in load_tasks(args.data, name)[: args.limit or None]]
    model = args.model or default_model()
    started = time.monotonic()
    chunks = [tasks[i :: args.jobs * 8] for i in range(args.jobs * 8)]
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        args.jobs, mp_context=spawn, initializer=_init_worker, initargs=(str(model), args.scenarios)
    ) as pool:
        outcomes = [o for part in pool.map(evaluate_chunk, chunks) for o in part]
        log(
            f"{len(tasks)} tasks, {len(outcomes)} outcomes planned and cleaned in "
            f"{time.monotonic() - started:.0f} s"
        )
        programs = {digest(p): p for o in outcomes for p in (o.program, o.control)}
        keys = sorted(programs)
        batches = [keys[i :: args.jobs * 16] for i in range(args.jobs * 16)]
        results = pool.map(run_programs, [[programs[k] for k in batch] for batch in batches])
        passed = {k: ok for batch, oks in zip(batches, results) for k, ok in zip(batch, oks)}
    log(f"{len(programs)} distinct programs run; {time.monotonic() - started:.0f} s in all")
    summary = summarize(outcomes, passed)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    command = " ".join(["python", "bench/humaneval_infill.py", *(argv or sys.argv[1:])])
    summary.update(
        command=command,
        commit=commit,
        cpus=os.cpu_count(),
        python=sys.version.split()[0],
        seconds=round(time.monotonic() - started),
    )
    print(
        f"{command}\ncommit {commit}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{summary['seconds']} s"
    )
    print_report(summary, sets)
    print_examples(outcomes, passed, {t.id: t for t in tasks}, args.examples)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
