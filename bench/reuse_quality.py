"""How often cache reuse across cursor moves changes the greedy answer (completion.cacheReuse).

    python bench/reuse_quality.py [--model PATH] [--moves 120] [--min-run 64] [--max-tokens 24]
                                  [--shapes prefix,suffix-first] [--seed 0] [--control]
                                  [--json OUT | --report OUT]

Runs moved to new positions keep keys and values computed with other text before them, so the
model sees an approximation of the new prompt. This measures its effect on a real model
(default SmolLM2-135M-Instruct from the test assets): on real files (cl_lsp's own .py files
and a few of the standard library's), a cursor walks by moves of 1, 10, 50 and 200 lines up
and down and jumps to random lines. At each place the prompt is cl-lsp's own
(`plan_completion`, the windows' edges carried from one place to the next as the server
carries them), in two shapes:

- prefix: the prompt cl-lsp sends a model without FIM tokens (SmolLM2's): the prefix window;
- suffix-first: the same windows as an SPM prompt, suffix + EOS + prefix (SmolLM2 was not
  trained for FIM: a stress test of moved runs, whose text before them changed the most).

Per place: with the cache holding the previous place's prompt (evaluated in full), the new
prompt runs with cache reuse (answer A, evaluated tokens), then from an empty cache without it
(answer B). Figures per shape and move, and split by whether runs were moved at all: identical
answers (A == B, token for token), identical first lines, median evaluated tokens with and
without reuse, and the change in the mean log-probability of the file's real text after the
cursor (its next 24 tokens, scored after each prompt): a measure of quality that does not
hang on near ties. `--control` also answers with the common prefix only (what the cache gave
before this setting) to show how much batching alone changes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import assets
import typing_replay as replay

from cl_lsp.completion.pipeline import plan_completion
from cl_lsp.config import CompletionSettings, ModelSettings
from cl_lsp.engine import GenerationRequest, LocalEngine

MOVES = (1, -1, 10, -10, 50, -50, 200, -200, None)  # None: a random line
TRUTH_TOKENS = 24  # the file's own text after the cursor, scored after each prompt
MIN_PROMPT = 16  # places with fewer prompt tokens (a file's first lines) are left out
STDLIB = ("argparse.py", "inspect.py", "typing.py", "pathlib.py", "subprocess.py")


def files() -> list[Path]:
    own = sorted((ROOT / "cl_lsp").rglob("*.py"))
    own = [path for path in own if path.stat().st_size > 8000]
    stdlib = [replay.stdlib_dir() / name for name in STDLIB]
    return own + [path for path in stdlib if path.is_file()]


class Walk:
    """A cursor on one file, with the window edges the server would carry."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.text = path.read_text(encoding="utf-8", errors="replace")
        self.lines = self.text.split("\n")
        self.rng = rng
        self.line = rng.randrange(len(self.lines))
        self.anchor: int | None = None
        self.suffix: str | None = None
        self.tail: int | None = None
        self.truth: list[int] = []

    def move(self, distance: int | None) -> None:
        target = self.rng.randrange(len(self.lines)) if distance is None else self.line + distance
        self.line = min(max(target, 0), len(self.lines) - 1)

    def prompts(self, engine: LocalEngine) -> dict[str, tuple[int, ...]]:
        vocab = engine.vocab
        offset = sum(len(row) + 1 for row in self.lines[: self.line])
        offset += len(self.lines[self.line]) - len(self.lines[self.line].lstrip())
        plan = plan_completion(
            self.text,
            offset,
            vocab=vocab,
            settings=CompletionSettings(),
            n_ctx=engine.n_ctx,
            language_id="python",
            path="file.py",
            anchor=self.anchor,
            suffix_anchor=self.suffix,
            end_anchor=None if self.tail is None else len(self.text) - self.tail,
        )
        context = plan.context
        self.truth = vocab.encode(self.text[offset : offset + 400])[:TRUTH_TOKENS]
        self.anchor, self.suffix = context.window_start, context.suffix
        self.tail = len(self.text) - context.window_end
        bos = [vocab.bos] if vocab.add_bos else []
        prefix = vocab.encode(context.prefix)
        return {
            "prefix": tuple(bos + prefix),
            "suffix-first": tuple(bos + vocab.encode(context.suffix) + [vocab.eos] + prefix),
        }


def answer(engine: LocalEngine, tokens: tuple[int, ...], args: argparse.Namespace, reuse: int):
    result = engine.generate_blocking(
        GenerationRequest(tokens, args.max_tokens, reuse_min_run=reuse)
    )
    return result.token_ids, result.evaluated_tokens, result.text


def truth_logprob(engine: LocalEngine, prompt: tuple[int, ...], truth: list[int]) -> float:
    """Mean log-probability per token of the file's real text after the cursor, given the
    prompt as the cache now holds it (the answer just generated is dropped first)."""
    import numpy as np

    model = engine._model
    assert model is not None and model.held[: len(prompt)] == prompt
    model.keep(len(prompt) - 1)
    model.evaluate(prompt[-1:], outputs=True)
    rows = [np.array(model.logits(-1), dtype=np.float64)]
    model.evaluate(truth[:-1], outputs=True)
    rows += [np.array(model.logits(i), dtype=np.float64) for i in range(len(truth) - 1)]
    total = 0.0
    for row, token in zip(rows, truth):
        top = row.max()
        total += row[token] - top - np.log(np.exp(row - top).sum())
    return total / len(truth)


def empty(engine: LocalEngine) -> None:
    engine.generate_blocking(GenerationRequest((engine.vocab.eos, engine.vocab.eos), 1))


def share(rows: list[dict[str, Any]], key: str) -> str:
    same = sum(r[key] for r in rows)
    return f"{same} ({100 * same / len(rows):.0f}%)"


def drift(rows: list[dict[str, Any]], key: str) -> str:
    """The change of the real text's log-probability against the full run: median of its size,
    mean, in nats per token."""
    changes = [r[key] - r["fullScore"] for r in rows if key in r]
    if not changes:
        return "-"
    size = statistics.median(abs(c) for c in changes)
    return f"{size:.3f} / {statistics.fmean(changes):+.3f}"


def report(rows: list[dict[str, Any]], model: str, args: dict[str, Any]) -> None:
    control = any("controlIdentical" in r for r in rows)
    print(
        f"\nModel {model}, min run {args['min_run']}, {args['moves']} moves per shape, "
        f"{args['max_tokens']} tokens; places with fewer than {MIN_PROMPT} prompt tokens left out"
    )
    print(
        "\n| shape | moves | places | identical answers | identical first line | "
        "real text's log-prob change, median size / mean (nats/token) | "
        "evaluated with reuse (median) | without (median) |"
        + (" common prefix only: identical answers | its log-prob change |" if control else "")
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if control else ""))
    groups: list[tuple[str, Any]] = [
        (move, lambda r, move=move: r["move"] == move)
        for move in ("+1", "-1", "+10", "-10", "+50", "-50", "+200", "-200", "jump")
    ]
    groups += [
        ("runs moved", lambda r: r.get("moved", 0) > 0),
        ("common prefix only", lambda r: r.get("moved", 0) == 0),
        ("all", lambda r: True),
    ]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for name, test in groups:
            chosen = [r for r in rows if r["shape"] == shape and r["prompt"] >= MIN_PROMPT]
            chosen = [r for r in chosen if test(r)]
            if not chosen:
                continue
            print(
                f"| {shape} | {name} | {len(chosen)} | {share(chosen, 'identical')} | "
                f"{share(chosen, 'firstLine')} | {drift(chosen, 'score')} | "
                f"{statistics.median(r['evaluated'] for r in chosen):.0f} | "
                f"{statistics.median(r['fullEvaluated'] for r in chosen):.0f} |"
                + (
                    f" {share(chosen, 'controlIdentical')} | {drift(chosen, 'controlScore')} |"
                    if control
                    else ""
                )
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--moves", type=int, default=120)
    parser.add_argument("--min-run", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--shapes", default="prefix,suffix-first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--control",
        action="store_true",
        help="also answer with the common prefix only (today's reuse) against the full run: "
        "how often the answer changes from batching alone",
    )
    parser.add_argument("--json")
    parser.add_argument("--report", help="print the tables of a --json file, run nothing")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        report(saved["rows"], saved.get("model", "?"), saved["args"])
        return 0
    model = Path(args.model) if args.model else assets.smollm2_path()
    engine = LocalEngine()
    engine.load_blocking(model, ModelSettings(n_ctx=4096))
    shapes = args.shapes.split(",")
    rows: list[dict[str, Any]] = []
    paths = files()
    per_file = max(1, -(-args.moves // len(paths)))
    for shape in shapes:
        rng = random.Random(args.seed)  # the same walk for every shape
        done = 0
        for path in paths:
            if done >= args.moves:
                break
            walk = Walk(path, rng)
            previous = walk.prompts(engine)[shape]
            empty(engine)
            answer(engine, previous, args, 0)
            for _ in range(per_file):
                if done >= args.moves:
                    break
                distance = rng.choice(MOVES)
                walk.move(distance)
                current = walk.prompts(engine)[shape]
                # The cache holds the previous place's prompt (evaluated in full) and answer.
                if len(current) < MIN_PROMPT or len(walk.truth) < 2:  # nothing to compare
                    previous = current
                    continue
                moved_before = engine.counters.reused_tokens
                reused, evaluated, text_a = answer(engine, current, args, args.min_run)
                moved = engine.counters.reused_tokens - moved_before
                score_a = truth_logprob(engine, current, walk.truth)
                row: dict[str, Any] = {"shape": shape}
                if args.control:
                    empty(engine)
                    answer(engine, previous, args, 0)
                    prefix_only, _, _ = answer(engine, current, args, 0)
                    row["controlIdentical"] = prefix_only
                    row["controlScore"] = truth_logprob(engine, current, walk.truth)
                empty(engine)
                full, full_evaluated, text_b = answer(engine, current, args, 0)
                score_b = truth_logprob(engine, current, walk.truth)
                if args.control:
                    row["controlIdentical"] = row["controlIdentical"] == full
                row.update(
                    move="jump" if distance is None else f"{distance:+d}",
                    identical=reused == full,
                    firstLine=text_a.split("\n")[0] == text_b.split("\n")[0],
                    evaluated=evaluated,
                    moved=moved,
                    score=score_a,
                    fullScore=score_b,
                    fullEvaluated=full_evaluated,
                    prompt=len(current),
                )
                rows.append(row)
                previous = current
                done += 1
            replay.log(f"{shape} {path.name}: {done} moves")
    report(rows, model.name, vars(args))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"model": model.name, "args": vars(args), "rows": rows}, indent=1)
        )
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
