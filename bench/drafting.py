"""Generation speed with drafts taken from the prompt (prompt lookup, `engine/drafting.py`)
against plain greedy decoding, at temperature 0.

    python bench/drafting.py [--model PATH] [--prompts 30] [--draft 8 | --draft 4,8,16]
                             [--max-tokens 64] [--files A,B,...] [--threads N] [--seed 0]
                             [--no-chunk-check] [--json OUT]

Prompts: windows of 40-60 lines of real source files (default: the .py files under cl_lsp/),
ending at the end of a line inside the file, chosen deterministically for a seed; the prompt is
the window's tokens (BOS first if the model adds one) and each request completes the next
`--max-tokens` tokens. Default model: SmolLM2-135M-Instruct (Q4_1, from the test assets); the
7B-shaped model of `bench/make_model.py` with `--model bench/.models/...gguf`.

Per prompt: the cache is emptied (a 1-token request on another short prompt), the prompt is
brought into the cache (a request with max_tokens 1), then the same request runs once without
drafts and once per draft length, in a rotating order: each evaluates ~1 prompt token, so its
time (`Generation.seconds`) is generation. Figures per run: tokens/s per prompt (generated
tokens / seconds; p5, median, p95), the ratio of medians against plain decoding, the share of
drafted tokens the model accepted (the engine's counters), generated tokens per model pass
(model calls counted during the request, the prompt's last token included), and how many
answers are identical to plain decoding (token ids).

Drafts are checked in a batch, and llama.cpp's batch kernels round slightly differently from
its one-token kernels on quantized weights, so a near tie can go the other way. For scale, the
chunk check (on by default) counts the answers of plain decoding that change when only the
prefill chunk differs: the prompt brought in by 32-token chunks against chunks of n_batch, from
an empty cache each time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import assets
import typing_replay as replay

from cl_lsp.config import ModelSettings, physical_cores
from cl_lsp.engine import Generation, GenerationRequest, LocalEngine

WINDOW = (40, 60)  # lines per prompt
SMALL_CHUNK = 32  # prefill chunk of the chunk check (PREFILL_FIRST_CHUNK)


class BenchEngine(LocalEngine):
    """`LocalEngine` whose prefill chunk can be pinned (the measured rate moves it otherwise),
    and which counts model calls."""

    fixed_chunk: int | None = None
    passes = 0

    @property
    def prefill_chunk(self) -> int:
        return self.fixed_chunk or super().prefill_chunk

    def count_passes(self) -> None:
        session = self._model
        assert session is not None
        evaluate = session.evaluate

        def counted(*args: Any, **kwargs: Any) -> None:
            self.passes += 1
            evaluate(*args, **kwargs)

        session.evaluate = counted  # type: ignore[method-assign]


@dataclass(frozen=True)
class Spot:
    label: str
    text: str


def source_files(spec: str | None) -> list[Path]:
    paths = [Path(p) for p in spec.split(",")] if spec else [ROOT / "cl_lsp"]
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def make_spots(files: list[Path], count: int, seed: int) -> list[Spot]:
    """`count` windows, round-robin over the files (shuffled by the seed) long enough."""
    rng = random.Random(seed)
    sources = []
    for path in files:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        if len(lines) > WINDOW[0] + 1:
            sources.append((path, lines))
    if not sources:
        raise SystemExit(f"no file has more than {WINDOW[0] + 1} lines")
    rng.shuffle(sources)
    spots = []
    for index in range(count):
        path, lines = sources[index % len(sources)]
        window = min(rng.randint(*WINDOW), len(lines) - 2)
        end = rng.randint(window, len(lines) - 2)  # the window ends before line `end`
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        spots.append(Spot(f"{name}:{end + 1}", "\n".join(lines[end - window : end]) + "\n"))
    return spots


def quantile(values: list[float], q: float) -> float | None:
    return replay.percentile(values, q)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="GGUF (default: SmolLM2-135M-Instruct, test assets)")
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--draft", default="8", help="draft lengths to try, comma-separated (8)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--files", help="comma-separated files or folders (default: cl_lsp/)")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-chunk-check",
        dest="chunk_check",
        action="store_false",
        help="skip the plain-decoding comparison of prefill chunk sizes (2 prefills a prompt)",
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    drafts = [int(d) for d in args.draft.split(",")]
    if any(d <= 0 for d in drafts):
        parser.error("draft lengths must be positive")

    model = Path(args.model) if args.model else assets.smollm2_path()
    spots = make_spots(source_files(args.files), args.prompts, args.seed)
    info = replay.machine()
    engine = BenchEngine()
    loading = time.perf_counter()
    engine.load_blocking(model, ModelSettings(n_ctx=args.n_ctx, n_threads=args.threads))
    vocab = engine.vocab
    assert vocab is not None
    engine.count_passes()
    print(
        f"drafting bench: {model.name} ({model.stat().st_size / 2**20:,.0f} MB, loaded in "
        f"{time.perf_counter() - loading:.1f} s), {args.threads} threads, n_batch "
        f"{engine.n_batch}; {info['nproc']} CPUs ({info['cpu']}), load average "
        f"{info['loadavg']}, llama-cpp-python {info['llamaCppPython']}; {len(spots)} prompts, "
        f"max_tokens {args.max_tokens}, drafts {drafts}, seed {args.seed}",
        flush=True,
    )
    head = [vocab.bos] if vocab.add_bos else []
    flush_tokens = (*head, vocab.eos, *vocab.encode(" flush"))

    def generate(tokens: tuple[int, ...], max_tokens: int, draft: int = 0) -> Generation:
        return engine.generate_blocking(GenerationRequest(tokens, max_tokens, draft=draft))

    def flush() -> None:
        generate(flush_tokens, 1)

    runs = [0, *drafts]  # 0: plain decoding
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    for index, spot in enumerate(spots):
        tokens = (*head, *vocab.encode(spot.text))
        if len(tokens) + args.max_tokens >= engine.n_ctx:
            tokens = tokens[-(engine.n_ctx - args.max_tokens - 1) :]
        flush()
        generate(tokens, 1)  # the prompt into the cache
        record: dict[str, Any] = {"at": spot.label, "promptTokens": len(tokens), "runs": {}}
        order = runs[index % len(runs) :] + runs[: index % len(runs)]
        for draft in order:
            counters = engine.counters
            drafted, accepted = counters.drafted_tokens, counters.accepted_tokens
            engine.passes = 0
            got = generate(tokens, args.max_tokens, draft)
            record["runs"][draft] = {
                "tokens": list(got.token_ids),
                "evaluated": got.evaluated_tokens,
                "seconds": got.seconds,
                "stop": got.stop_reason,
                "passes": engine.passes,
                "drafted": counters.drafted_tokens - drafted,
                "accepted": counters.accepted_tokens - accepted,
            }
        if args.chunk_check:
            chunked = {}
            for chunk in (SMALL_CHUNK, engine.n_batch):
                flush()
                engine.fixed_chunk = chunk
                try:
                    chunked[chunk] = generate(tokens, args.max_tokens).token_ids
                finally:
                    engine.fixed_chunk = None
            record["chunksAgree"] = chunked[SMALL_CHUNK] == chunked[engine.n_batch]
        records.append(record)
        plain = record["runs"][0]
        print(
            f"  [{index + 1}/{len(spots)}] {spot.label}: {len(tokens)} prompt tokens, "
            + ", ".join(
                f"draft {d}: {len(r['tokens'])} tokens in {r['seconds']:.2f} s"
                + ("" if d == 0 or r["tokens"] == plain["tokens"] else " (differs)")
                for d, r in sorted(record["runs"].items())
            ),
            flush=True,
        )
    elapsed = time.monotonic() - started

    def speed(run: dict[str, Any]) -> float | None:
        return len(run["tokens"]) / run["seconds"] if run["tokens"] and run["seconds"] else None

    summary = []
    plain_median = None
    for draft in runs:
        rates = [r for r in (speed(rec["runs"][draft]) for rec in records) if r is not None]
        of = [rec["runs"][draft] for rec in records]
        median = statistics.median(rates) if rates else None
        if draft == 0:
            plain_median = median
        drafted = sum(r["drafted"] for r in of)
        generated = sum(len(r["tokens"]) for r in of)
        passes = sum(r["passes"] for r in of)
        summary.append(
            {
                "draft": draft,
                "prompts": len(of),
                "generatedMean": generated / len(of) if of else None,
                "tokensPerSecond": {
                    "p5": quantile(rates, 0.05),
                    "median": median,
                    "p95": quantile(rates, 0.95),
                },
                "ratioOfMedians": median / plain_median if median and plain_median else None,
                "drafted": drafted,
                "accepted": sum(r["accepted"] for r in of),
                "acceptance": sum(r["accepted"] for r in of) / drafted if drafted else None,
                "tokensPerPass": generated / passes if passes else None,
                "identical": sum(
                    r["tokens"] == rec["runs"][0]["tokens"] for r, rec in zip(of, records)
                ),
            }
        )
    print()
    print(
        "| run | tokens/s p5 | median | p95 | median / plain | acceptance (accepted / drafted) "
        "| tokens / model pass | mean tokens | identical to plain |"
    )
    print("|---" * 9 + "|")
    for row in summary:
        rate = row["tokensPerSecond"]
        accepted = (
            "-"
            if not row["drafted"]
            else f"{row['acceptance']:.0%} ({row['accepted']:,} / {row['drafted']:,})"
        )
        print(
            f"| {'plain' if row['draft'] == 0 else 'draft ' + str(row['draft'])} | "
            f"{fmt(rate['p5'])} | {fmt(rate['median'])} | {fmt(rate['p95'])} | "
            f"{fmt(row['ratioOfMedians'], 2)} | {accepted} | {fmt(row['tokensPerPass'], 2)} | "
            f"{fmt(row['generatedMean'])} | "
            f"{'-' if row['draft'] == 0 else str(row['identical']) + ' / ' + str(row['prompts'])} |"
        )
    differ = None
    if args.chunk_check:
        differ = sum(not rec["chunksAgree"] for rec in records)
        print(
            f"\nplain decoding, prompt brought in by {SMALL_CHUNK}-token chunks against "
            f"{engine.n_batch}-token chunks (empty cache each): {differ} / {len(records)} "
            "answers differ"
        )
    print(f"\ntotal {elapsed:.0f} s; load average at the end {replay.loadavg()}")
    if args.json:
        out = {
            "machine": info,
            "model": str(model),
            "threads": args.threads,
            "maxTokens": args.max_tokens,
            "seed": args.seed,
            "summary": summary,
            "chunkCheckDiffer": differ,
            "prompts": records,
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
