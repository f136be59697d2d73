"""Load and soak: many documents typed into at once, then a long stretch of typing, against
`python -m cl_lsp --stdio`.

1. **Load**: `--documents` (50) open documents, `--load-rate` keystrokes a second (each
   followed by an inline completion, a completion or a code-action request) for
   `--load-seconds`. Prints requests sent and answered, latency p50/p95, and the checks of
   tests/loadgen.py: every request answered, newest wins per document (from the server's
   request records), no item that only fits an older version of its document.
2. **Soak**: `--soak-documents` (20), `--rate` keystrokes a second for `--minutes` after
   `--warm-up` keystrokes, a document closed and a new one opened every `--reopen-every`
   keystrokes. Samples the server's RSS (/proc/PID/status) and
   internal table sizes (`cl-lsp.status` "tables") every `--sample-every` seconds; prints RSS
   at the start and end and its least-squares slope per thousand edits over the second half.

    python bench/soak.py                         # 10-minute soak, ~11 minutes in all
    python bench/soak.py --minutes 1             # a quick look
    python bench/soak.py --json soak.json        # also every sample

The model is `x_model` of the tests (tiny, F32, always answers " x x x"), built into
`bench/.models/` on first use: the figures are the server's own cost, not a model's.
Needs the test assets (`python tests/assets.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "bench" / ".models"
sys.path.insert(0, str(ROOT / "tests"))

import assets
import loadgen

X_TOKEN = 921  # "▁x"


def x_model() -> Path:
    """The tests' x_model, built once into bench/.models/."""
    path = MODELS_DIR / "x-codellama.gguf"
    if not path.is_file():
        MODELS_DIR.mkdir(parents=True, exist_ok=True)
        assets.build_codellama_gguf(path, vocab=assets.vocab_path(), forced_token=X_TOKEN)
    return path


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", ""
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"commit {commit}{' + local changes' if dirty else ''}"
    )


def options(debounce_ms: int) -> dict[str, Any]:
    return {
        "completion": {
            "debounceMs": debounce_ms,
            "generationTimeoutMs": 0,
            "maxTokensSingleLine": loadgen.ANSWER_TOKENS,
        }
    }


async def load_phase(args: argparse.Namespace, model: Path, root: Path) -> dict[str, Any]:
    client = await loadgen.start_server(model, root, options(args.debounce_ms))
    try:
        typist = loadgen.Typist(client, root, args.documents, seed=args.seed)
        typist.open_all()
        result = await typist.type_for(args.load_seconds, args.load_rate, record_every=1.0)
        typist.close_all()
        after = await client.status()
    finally:
        await client.stop()
    records = list(result.records.values())
    delays = sorted(loadgen.supersede_delays_ms(records))
    asked = sum(len(result.latencies.get(kind, ())) for kind in ("inline", "completion"))
    return {
        "sent": result.sent,
        "answered": result.answered,
        "cancelledAnswers": result.cancelled_answers,
        "withItem": result.with_item,
        "seconds": round(result.seconds, 1),
        "p50Ms": round(result.percentile(0.5), 1),
        "p95Ms": round(result.percentile(0.95), 1),
        "p50CompletionMs": round(result.percentile(0.5, ("inline", "completion")), 1),
        "p95CompletionMs": round(result.percentile(0.95, ("inline", "completion")), 1),
        "p50CodeActionMs": round(result.percentile(0.5, ("codeAction",)), 1),
        "p95CodeActionMs": round(result.percentile(0.95, ("codeAction",)), 1),
        "records": len(records),
        "completionAnswers": asked,
        "newestWinsViolations": loadgen.newest_wins_violations(records),
        "supersededAfterNewerP50Ms": round(delays[len(delays) // 2], 1) if delays else None,
        "supersededAfterNewerP95Ms": round(delays[int(len(delays) * 0.95)], 1) if delays else None,
        "problems": result.problems,
        "problemCount": result.problem_count,
        "tablesAfterClose": after["tables"],
    }


async def soak_phase(args: argparse.Namespace, model: Path, root: Path) -> dict[str, Any]:
    client = await loadgen.start_server(model, root, options(args.soak_debounce_ms))
    try:
        typist = loadgen.Typist(
            client, root, args.soak_documents, seed=args.seed + 1, reopen_every=args.reopen_every
        )
        typist.open_all()
        warm = await typist.type_for(600, args.rate, edits=args.warm_up)  # caches fill up
        typist.result = loadgen.LoadResult(problems=warm.problems, problem_count=warm.problem_count)
        start = await typist.sample(0.0)
        result = await typist.type_for(args.minutes * 60, args.rate, sample_every=args.sample_every)
        end = await typist.sample(result.seconds)
        typist.close_all()
        closed = await client.status()
    finally:
        await client.stop()
    samples = result.samples
    slope = loadgen.rss_slope_kb_per_1000(samples)
    half = samples[len(samples) // 2 :]
    return {
        "sent": result.sent,
        "answered": result.answered,
        "edits": result.edits,
        "seconds": round(result.seconds, 1),
        "p50Ms": round(result.percentile(0.5), 1),
        "p95Ms": round(result.percentile(0.95), 1),
        "rssStartKb": start.rss_kb,
        "rssEndKb": end.rss_kb,
        "rssMaxKb": max(sample.rss_kb for sample in samples),
        "rssSlopeKbPer1000Edits": round(slope, 1),
        "rssSlopeWholeKbPer1000Edits": round(loadgen.rss_slope_kb_per_1000(samples, skip=0), 1),
        "pythonBlocksStart": start.python_blocks,
        "pythonBlocksEnd": end.python_blocks,
        "pythonBlocksSlopePer1000Edits": round(loadgen.blocks_slope_per_1000(samples, skip=0)),
        "rssSecondHalfKb": [half[0].rss_kb, half[-1].rss_kb] if half else None,
        "tablesStart": start.tables,
        "tablesEnd": end.tables,
        "tablesMax": {
            name: max(sample.tables.get(name, 0) for sample in samples) for name in end.tables
        },
        "tablesAfterClose": closed["tables"],
        "problems": result.problems,
        "problemCount": result.problem_count,
        "samples": [sample.__dict__ for sample in samples],
    }


def report(
    args: argparse.Namespace, load: dict[str, Any] | None, soak: dict[str, Any] | None
) -> None:
    print(f"\nmachine: {machine()}")
    print(f"command: python bench/soak.py {' '.join(sys.argv[1:])}".rstrip())
    print("\n| phase | figure | value |\n|---|---|---|")
    if load:
        print(
            f"| load ({args.documents} documents, {args.load_rate:.0f} keystrokes/s, "
            f"{load['seconds']} s) | requests sent / answered | "
            f"{load['sent']} / {load['answered']} |"
        )
        rows = [
            ("latency p50 / p95, all requests", f"{load['p50Ms']} / {load['p95Ms']} ms"),
            (
                "latency p50 / p95, completions",
                (f"{load['p50CompletionMs']} / {load['p95CompletionMs']} ms"),
            ),
            (
                "latency p50 / p95, code-action listings",
                (f"{load['p50CodeActionMs']} / {load['p95CodeActionMs']} ms"),
            ),
            ("answers with an item", load["withItem"]),
            (
                "superseded request answered after the newer one started, p50 / p95",
                f"{load['supersededAfterNewerP50Ms']} / {load['supersededAfterNewerP95Ms']} ms",
            ),
            (
                "newest-wins violations / stale items or errors",
                f"{len(load['newestWinsViolations'])} / {load['problemCount']}",
            ),
        ]
        for name, value in rows:
            print(f"| | {name} | {value} |")
    if soak:
        print(
            f"| soak ({args.soak_documents} documents, {args.rate:.0f} keystrokes/s, "
            f"{soak['seconds'] / 60:.1f} min) | requests sent / answered | "
            f"{soak['sent']} / {soak['answered']} |"
        )
        grown = {
            name: f"{soak['tablesStart'].get(name)}→{value}"
            for name, value in soak["tablesEnd"].items()
            if value != soak["tablesStart"].get(name)
        }
        rows = [
            (
                (f"edits (after a warm-up of {args.warm_up})"),
                (
                    f"{soak['edits']} ({soak['edits'] / soak['seconds']:.0f}/s with the pauses to "
                    "sample)"
                ),
            ),
            ("latency p50 / p95", f"{soak['p50Ms']} / {soak['p95Ms']} ms"),
            (
                "RSS start / end (max)",
                (
                    f"{soak['rssStartKb'] / 1024:.1f} / "
                    f"{soak['rssEndKb'] / 1024:.1f} ({soak['rssMaxKb'] / 1024:.1f}) MB"
                ),
            ),
            (
                "RSS slope, second half (whole soak)",
                (
                    f"{soak['rssSlopeKbPer1000Edits']:+.1f} "
                    f"({soak['rssSlopeWholeKbPer1000Edits']:+.1f}) kB per 1000 edits"
                ),
            ),
            (
                "Python allocated blocks start / end, slope",
                (
                    f"{soak['pythonBlocksStart']} / {soak['pythonBlocksEnd']}, "
                    f"{soak['pythonBlocksSlopePer1000Edits']:+d} per 1000 edits"
                ),
            ),
            (
                "tables that changed, start→end",
                ", ".join(f"{k} {v}" for k, v in grown.items()) or "none",
            ),
            (
                "requestFutures / resultTypes at the end",
                (f"{soak['tablesEnd']['requestFutures']} / {soak['tablesEnd']['resultTypes']}"),
            ),
            ("stale items or errors", soak["problemCount"]),
        ]
        for name, value in rows:
            print(f"| | {name} | {value} |")
    for phase, figures in (("load", load), ("soak", soak)):
        if figures and figures["problems"]:
            print(f"\n{phase} problems (first {len(figures['problems'])}):")
            for problem in figures["problems"]:
                print(f"  {problem}")
        if figures and figures.get("newestWinsViolations"):
            print(f"\n{phase} newest-wins violations:")
            for problem in figures["newestWinsViolations"][:20]:
                print(f"  {problem}")


async def main_async(args: argparse.Namespace) -> int:
    model = Path(args.model) if args.model else x_model()
    with tempfile.TemporaryDirectory(prefix="cl-lsp-soak-") as tmp:
        root = Path(tmp)
        load = soak = None
        if args.load_seconds > 0:
            print(
                f"load: {args.documents} documents, {args.load_rate:.0f} keystrokes/s for "
                f"{args.load_seconds:.0f} s ...",
                file=sys.stderr,
                flush=True,
            )
            load = await load_phase(args, model, root)
        if args.minutes > 0:
            print(
                f"soak: {args.rate:.0f} keystrokes/s for {args.minutes:g} min ...",
                file=sys.stderr,
                flush=True,
            )
            soak = await soak_phase(args, model, root)
    report(args, load, soak)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "load": load, "soak": soak}, indent=1)
        )
    failed = any(
        figures
        and (
            figures["problemCount"]
            or figures["sent"] != figures["answered"]
            or figures.get("newestWinsViolations")
        )
        for figures in (load, soak)
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=50, help="in the load phase")
    parser.add_argument(
        "--load-rate",
        type=float,
        default=250.0,
        help="keystrokes (and requests) a second in the load phase",
    )
    parser.add_argument("--load-seconds", type=float, default=5.0, help="0: no load phase")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="keystrokes (and requests) a second in the soak"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="0: no soak")
    parser.add_argument("--soak-documents", type=int, default=20)
    parser.add_argument(
        "--warm-up",
        type=int,
        default=2000,
        help="keystrokes before the soak's first sample (caches fill up)",
    )
    parser.add_argument(
        "--reopen-every",
        type=int,
        default=500,
        help="close a document and open a new one every N keystrokes",
    )
    parser.add_argument(
        "--sample-every",
        type=float,
        default=10.0,
        help="seconds; each sample waits until nothing is in flight",
    )
    parser.add_argument("--debounce-ms", type=int, default=20, help="in the load phase")
    parser.add_argument(
        "--soak-debounce-ms", type=int, default=150, help="in the soak (the default setting)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        help="GGUF file (default: the tests' x_model); the stale check assumes x_model's answers",
    )
    parser.add_argument("--json", help="also write every figure and sample to this file")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
