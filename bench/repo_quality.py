"""Repository context with a real model: does SmolLM2 write the name defined elsewhere?

    python bench/repo_quality.py [--holes 10] [--projects email,asyncio,json,npm] [--seed 0]
                                 [--all-holes] [--json OUT]

The holes are `repo_recall.py`'s (a name X defined in another file of the project; the middle
is the rest of the line from X) whose X is a use of another file's definition (all of them
with ``--all-holes``), the first ``--holes`` of each project with its seed. Each is
planned with the real pipeline twice, without repository context and with it (defaults), on
SmolLM2-135M-Instruct (the test model: real text, no FIM tokens, so the prompt is the prefix,
after the block when there is one; its own tokenizer counts the budget), and answered with
`LocalEngine` at temperature 0, then post-processed as the server does.

Per hole and configuration: whether the suggestion starts with X (the name the context is
there to supply), whether it is the whole true middle, and the mean log-probability per token
of the true middle after the prompt (the model's belief in the real code, answer aside).
Figures: the shares, the mean log-probability, and the holes where the two differ. SmolLM2 is
a 135M instruction model never trained for infilling or on comments holding other files: this
says what a small model makes of the block, not what Code Llama 7B would.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
import assets
import repo_recall as recall
import typing_replay as replay
from reuse_quality import truth_logprob

from cl_lsp.completion.pipeline import finish_completion
from cl_lsp.config import ModelSettings
from cl_lsp.engine import LocalEngine
from cl_lsp.repository.files import read_source


def run_hole(
    engine: LocalEngine,
    project: recall.Project,
    hole: recall.Hole,
    text: str,
    variants: list[recall.Variant],
    session: recall.Session,
    rng: random.Random,
) -> dict[str, Any]:
    index = project.index
    path = Path(hole.path)
    holed = text[: hole.start] + text[hole.end :]
    middle = text[hole.start : hole.end]
    uri = path.as_uri()
    session.texts.clear()
    session.texts[uri] = holed
    for other in recall.open_others(project, hole, rng):
        other_text = read_source(Path(other), index.rules)
        if other_text is not None:
            session.texts[Path(other).as_uri()] = other_text
    session.uris = list(session.texts)
    record: dict[str, Any] = {"at": hole.label(), "name": hole.name, "middle": middle}
    index.update_text(path, holed)
    try:
        for variant in variants:
            plan, _ = recall.plan_with(variant, session, uri, holed, hole.start, engine.vocab)
            if plan.request is None:
                return record
            started = time.perf_counter()
            generation = engine.generate_blocking(plan.request)
            suggestion = finish_completion(plan, generation).text
            truth = engine.vocab.encode(middle)
            record[variant.label] = {
                "suggestion": suggestion,
                "name": suggestion.startswith(hole.name),
                "exact": suggestion.strip() == middle.strip(),
                "logprob": truth_logprob(engine, plan.request.tokens, truth) if truth else None,
                "promptTokens": len(plan.request.tokens),
                "blockTokens": plan.repository.total if plan.repository else 0,
                "seconds": time.perf_counter() - started,
            }
    finally:
        index.update_text(path, text)
        session.texts.clear()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--projects", default="email,asyncio,json,npm")
    parser.add_argument("--holes", type=int, default=10, help="holes per project (10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--all-holes",
        action="store_true",
        help="every hole, not only those whose X is a use of another file's definition",
    )
    parser.add_argument("--json", help="write every hole's record here")
    args = parser.parse_args(argv)
    import sysconfig

    info = replay.machine()
    print(
        f"repo quality: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average {info['loadavg']}"
    )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    model = assets.smollm2_path()
    engine = LocalEngine()
    engine.load_blocking(model, ModelSettings(n_ctx=recall.N_CTX))
    print(f"model: {model.name}; the budget counted with its tokenizer")
    session = recall.Session({})
    records: list[dict[str, Any]] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name, root in recall.project_roots(args.projects, stdlib, recall.NPM_DIR):
        if not root.is_dir():
            continue
        project = recall.build_project(name, root, session.texts)
        index = project.index
        texts = {}
        for path in index.paths():
            tags = index.tags(path)
            if tags and tags.definitions and (text := read_source(Path(path), index.rules)):
                texts[path] = text
        holes = recall.pick_holes(project, texts, args.holes, args.seed, not args.all_holes)
        variants = [
            recall.Variant("none", None, 0),
            recall.variant("context", recall.ContextSettings().repo_tokens, index, session),
        ]
        rng = random.Random(args.seed)
        for hole in holes:
            record = run_hole(engine, project, hole, texts[hole.path], variants, session, rng)
            record["project"] = name
            records.append(record)
            recall.log(
                f"{hole.label()} {hole.name}: "
                + ", ".join(
                    f"{label} {'name' if record[label]['name'] else '-'}"
                    for label in ("none", "context")
                    if label in record
                )
            )
    engine.close()
    answered = [r for r in records if "none" in r and "context" in r]
    print(f"\n{len(answered)} holes answered by the model (of {len(records)})\n")
    print(
        "| configuration | writes X | whole middle | log-prob of the middle (mean / median) "
        "| prompt tokens (median) |"
    )
    print("|---|---:|---:|---:|---:|")
    for label in ("none", "context"):
        rows = [r[label] for r in answered]
        probs = [row["logprob"] for row in rows if row["logprob"] is not None]
        print(
            f"| {label} | {replay.pct(replay.share([row['name'] for row in rows]))} "
            f"| {replay.pct(replay.share([row['exact'] for row in rows]))} "
            f"| {statistics.fmean(probs):.3f} / {statistics.median(probs):.3f} "
            f"| {statistics.median(row['promptTokens'] for row in rows):.0f} |"
        )
    gained = [r for r in answered if r["context"]["name"] and not r["none"]["name"]]
    lost = [r for r in answered if r["none"]["name"] and not r["context"]["name"]]
    better = sum(
        r["context"]["logprob"] > r["none"]["logprob"]
        for r in answered
        if r["context"]["logprob"] is not None and r["none"]["logprob"] is not None
    )
    print(
        f"\nX written with context only: {len(gained)}; without context only: {len(lost)}; "
        f"the true middle more likely with context at {better} of {len(answered)} holes"
    )
    for r in gained[:5] + lost[:5]:
        print(
            f"  {r['at']} X={r['name']}: none {r['none']['suggestion']!r} / context "
            f"{r['context']['suggestion']!r}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
