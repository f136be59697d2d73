"""Latency away from the last place typed: open, read, jump around, type a little.

    python bench/cursor_moves.py [--model PATH | --layers 8] [--baseline REV] [--keys 3]
                                 [--pause 0] [--probes 4] [--json OUT]

Each configuration is one `python -m cl_lsp --stdio` server, driven like an editor. The same
script runs against a baseline checkout (`--baseline`, default the commit before issue 17's
work: `git worktree` into bench/.baseline) with its defaults, and this checkout with its
defaults (cache reuse, warm-up, cold-start budget, drafting, stops inside a batch). On a real
file (the standard library's argparse.py) with the rest of six lines deleted:

1. cold: open a copy and ask at once at a place far from the others (nothing could have been
   prepared);
2. open + read: open another copy, type one key at P0, read (no request) for `--pause`
   seconds (default: long enough for the warm-up, measured), then ask at P0;
3. moves: from P0, jump 1, 10, 50 and 200 lines down and to another function; at each, ask on
   arrival (first-suggestion latency, prompt tokens evaluated), then type `--keys` keys at
   120 ms with a request each (keystroke-to-suggestion of the last, tokens per keystroke);
4. stop probes: at `--probes` far places, ask, and 0.8 s later type a key: the first request is
   superseded inside its prompt; its record's stopLatencyMs is the time from the newer request
   to the engine stopping.

Generation is capped (`maxTokens` 8) in both, so the figures are prompt costs. The model is
bench/make_model.py's 7B-shaped Q4_K_M one (`--layers 8`: the same with 8 layers, the
mid-sized one), or `--model`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import typing_replay as replay

BASELINE_REV = "65333c7"  # main before issue 17
CAPS = {"maxTokens": 8, "maxTokensSingleLine": 8}
MOVES = (("+1 line", 1), ("+10 lines", 10), ("+50 lines", 50), ("+200 lines", 200))
PACE = 0.12


def baseline_checkout(rev: str) -> Path:
    where = ROOT / "bench" / ".baseline"
    if not (where / "cl_lsp").is_dir():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
            check=True,
            capture_output=True,
        )
    else:
        subprocess.run(
            ["git", "-C", str(where), "checkout", "--detach", rev], check=True, capture_output=True
        )
    return where


def function_lines(text: str) -> list[int]:
    """0-based lines of function bodies' first statements in a Python file."""
    lines = text.split("\n")
    found = []
    for number, line in enumerate(lines[:-1]):
        if line.lstrip().startswith("def ") and line.rstrip().endswith(":"):
            body = number + 1
            while body < len(lines) and (
                not lines[body].strip() or lines[body].lstrip().startswith(("#", '"""', "'"))
            ):
                body += 1
            if body < len(lines) and len(lines[body].strip()) > 8:
                found.append(body)
    return found


def places(text: str) -> dict[str, int]:
    """P0 (a body line in the first third), the moves from it, another function far away, and
    stop-probe places: all lines with code to type."""
    lines = text.split("\n")
    bodies = function_lines(text)

    def codeline(near: int) -> int:
        for line in range(near, len(lines)):
            if len(lines[line].strip()) > 8 and not lines[line].lstrip().startswith("#"):
                return line
        raise ValueError("no code line")

    p0 = codeline(len(lines) // 3)
    chosen = {"P0": p0}
    for label, distance in MOVES:
        chosen[label] = codeline(p0 + distance)
    far = [b for b in bodies if abs(b - p0) > 600]
    chosen["another function"] = far[0]
    chosen["cold"] = far[len(far) // 2]
    for index, line in enumerate(far[1:5]):
        chosen[f"probe {index}"] = line
    return chosen


def column(line: str) -> int:
    return len(line) - len(line.lstrip())


def document(text: str, spots: dict[str, int]) -> str:
    """The file with the rest of each place's line (after its indentation) deleted."""
    lines = text.split("\n")
    for line in spots.values():
        lines[line] = lines[line][: column(lines[line])]
    return "\n".join(lines)


async def ask(server: replay.Server, uri: str, line: int, col: int, timeout: float) -> float:
    pending = server.request(uri, line, col)
    await replay.settle([pending], timeout)
    return pending.ms() or float("nan")


async def type_keys(
    server: replay.Server, uri: str, line: int, col: int, text: str, timeout: float
) -> float:
    """Type `text` at (line, col), a request per key; the last answer's latency."""
    requests = []
    for index, char in enumerate(text):
        if index:
            await asyncio.sleep(PACE)
        server.insert(uri, line, col + index, char)
        requests.append(server.request(uri, line, col + index + 1))
    await replay.settle(requests, timeout)
    return requests[-1].ms() or float("nan")


def last_record(current: dict[str, Any], uri: str, outcome: str = "generated") -> dict[str, Any]:
    records = [r for r in replay.records_for(current, uri) if r["outcome"] == outcome]
    return records[-1] if records else {}


async def run_config(
    label: str, root: Path, model: Path, options: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    source = replay.read_source(replay.stdlib_dir() / "argparse.py")
    original = source.text.split("\n")
    spots = places(source.text)
    text = document(source.text, spots)
    server = replay.Server(model, {"completion": {**CAPS, **options}}, root=root)
    replay.log(f"{label}: starting ({root})")
    await server.start(600)
    timeout = args.answer_timeout
    result: dict[str, Any] = {"label": label, "root": str(root), "options": options}
    try:
        cold_uri = (ROOT / "bench" / ".virtual" / "moves" / "cold.py").as_uri()
        server.open(cold_uri, text, "python")
        cold = spots["cold"]
        result["coldMs"] = await ask(server, cold_uri, cold, column(original[cold]), timeout)
        result["coldRecord"] = last_record(await server.status(), cold_uri)
        server.close(cold_uri)

        uri = (ROOT / "bench" / ".virtual" / "moves" / "argparse.py").as_uri()
        server.open(uri, text, "python")
        p0 = spots["P0"]
        col0 = column(original[p0])
        first = original[p0][col0]
        server.insert(uri, p0, col0, first)
        pause = args.pause
        waited = time.monotonic()
        if pause <= 0:  # until the warm-up (if the server has one) is over
            await asyncio.sleep(3)
            while time.monotonic() - waited < 900:
                current = await server.status()
                if not current.get("warming") and not current["tables"].get("warmUpPending"):
                    break
                await asyncio.sleep(0.5)
        else:
            await asyncio.sleep(pause)
        result["readSeconds"] = round(time.monotonic() - waited, 1)
        result["afterReadMs"] = await ask(server, uri, p0, col0 + 1, timeout)
        result["afterReadRecord"] = last_record(await server.status(), uri)

        moves = []
        for name, _ in (*MOVES, ("another function", 0)):
            line = spots[name]
            col = column(original[line])
            ms = await ask(server, uri, line, col, timeout)
            record = last_record(await server.status(), uri)
            keys = original[line][col : col + args.keys]
            typed_ms = await type_keys(server, uri, line, col, keys, timeout)
            current = await server.status()
            typed = [r for r in replay.records_for(current, uri)][-len(keys) :]
            moves.append(
                {
                    "move": name,
                    "line": line,
                    "firstMs": ms,
                    "firstEvaluated": record.get("evaluatedTokens"),
                    "firstPrompt": record.get("promptTokens"),
                    "keystrokeToSuggestionMs": typed_ms,
                    "evaluatedPerKeystroke": sum(r["evaluatedTokens"] for r in typed) / len(keys),
                }
            )
            replay.log(f"{label}: {name}: {ms:.0f} ms, evaluated {record.get('evaluatedTokens')}")
        result["moves"] = moves

        stops = []
        for index in range(args.probes):
            line = spots.get(f"probe {index}")
            if line is None:
                break
            col = column(original[line])
            first_request = server.request(uri, line, col)
            await asyncio.sleep(0.8)
            server.insert(uri, line, col, original[line][col])
            second = server.request(uri, line, col + 1)
            await replay.settle([first_request, second], timeout)
            await asyncio.sleep(0.3)
            records = replay.records_for(await server.status(), uri)
            superseded = [r for r in records if r["outcome"] == "superseded"]
            if superseded and superseded[-1]["stopLatencyMs"] is not None:
                stops.append(superseded[-1]["stopLatencyMs"])
        result["stopLatencyMs"] = stops
        final = await server.status()
        result["counters"] = final["counters"]
        result["warmUps"] = final.get("warmUps")
    finally:
        await server.stop()
    return result


def moved_tokens(model: Path, text: str, spots: dict[str, int]) -> dict[str, int]:
    """Tokens of the lines each move passes over (the target for what it should cost)."""
    from cl_lsp.engine import Vocabulary

    vocab = Vocabulary(model)
    lines = text.split("\n")
    p0 = spots["P0"]
    try:
        return {name: vocab.count("\n".join(lines[p0 : spots[name]])) for name, _ in MOVES}
    finally:
        vocab.close()


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def report(results: list[dict[str, Any]], moved: dict[str, int]) -> None:
    base, new = results
    print("\n| | baseline | now | ratio |")
    print("|---|---:|---:|---:|")

    def row(name: str, a: float | None, b: float | None, digits: int = 0) -> None:
        ratio = f"{a / b:.1f}x" if a and b else "-"
        print(f"| {name} | {replay.fmt(a, digits)} | {replay.fmt(b, digits)} | {ratio} |")

    row("cold first request (ms)", base["coldMs"], new["coldMs"])
    row("after open + read (ms)", base["afterReadMs"], new["afterReadMs"])
    row(
        "after open + read: evaluated tokens",
        base["afterReadRecord"].get("evaluatedTokens"),
        new["afterReadRecord"].get("evaluatedTokens"),
    )
    for a, b in zip(base["moves"], new["moves"]):
        extra = f" ({moved[a['move']]} tokens moved over)" if a["move"] in moved else ""
        row(f"{a['move']}: first request (ms)", a["firstMs"], b["firstMs"])
        row(f"{a['move']}: evaluated tokens{extra}", a["firstEvaluated"], b["firstEvaluated"])
    first_a = [m["firstMs"] for m in base["moves"][:4]]
    first_b = [m["firstMs"] for m in new["moves"][:4]]
    row("moves within the window: median first request (ms)", median(first_a), median(first_b))
    row(
        "moves within the window: p95 first request (ms)",
        replay.percentile(first_a, 0.95),
        replay.percentile(first_b, 0.95),
    )
    row(
        "typing at a place: keystroke-to-suggestion median (ms)",
        median([m["keystrokeToSuggestionMs"] for m in base["moves"]]),
        median([m["keystrokeToSuggestionMs"] for m in new["moves"]]),
    )
    row(
        "typing at a place: evaluated tokens per keystroke (median)",
        median([m["evaluatedPerKeystroke"] for m in base["moves"]]),
        median([m["evaluatedPerKeystroke"] for m in new["moves"]]),
        1,
    )
    for label, result in (("baseline", base), ("now", new)):
        stops = result["stopLatencyMs"]
        print(
            f"\n{label}: stop latency after a newer keystroke: median "
            f"{replay.fmt(median(stops))} ms, max {replay.fmt(max(stops) if stops else None)} ms "
            f"({len(stops)} probes); warm-ups {result.get('warmUps')}"
        )


async def main_async(args: argparse.Namespace) -> int:
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        report(saved["results"], saved["moved"])
        return 0
    if args.model:
        model = Path(args.model)
    else:
        spec_path = ROOT / "bench" / "make_model.py"
        import importlib.util

        spec = importlib.util.spec_from_file_location("make_model", spec_path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = Path(module.ensure_model(layers=args.layers))
    baseline = baseline_checkout(args.baseline)
    info = replay.machine()
    replay.log(f"model {model} ({model.stat().st_size / 1e9:.2f} GB), machine {info}")
    results = [
        await run_config("baseline", baseline, model, {}, args),
        await run_config("now", ROOT, model, {}, args),
    ]
    source = replay.read_source(replay.stdlib_dir() / "argparse.py")
    moved = moved_tokens(model, source.text, places(source.text))
    print(
        f"\nModel {model.name}, {info['nproc']} cores ({info['cpu']}), "
        f"load {info['loadavg']}, baseline {args.baseline}"
    )
    report(results, moved)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": info, "results": results, "moved": moved}, indent=1)
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a GGUF (default: bench/make_model.py's)")
    parser.add_argument("--layers", type=int, default=32, help="make_model.py's layers")
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision to compare with")
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0, help="reading time (0: until warm)")
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--answer-timeout", type=float, default=900)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--report", help="print the tables of a --json file, run nothing")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
