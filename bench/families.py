"""What a family's layout costs while typing: an SPM family against a PSM-only family of the
same size, on `typing_replay.py`'s bursts.

    python bench/families.py [--bursts 12] [--json OUT]

Two models of one shape (8 layers, n_embd 1024, F16, ~270 MB), built with `tests/assets.py`'s
`build_family_gguf` from the same Llama SentencePiece vocabulary (32,003-32,004 tokens), so the
only difference is the family: Codestral's tokens (suffix first, the answer after the prefix:
SPM) and CodeGemma's (PSM only). Both are scripted to answer "x" and stop at their family's end
token, so every request costs its prompt evaluation plus two tokens: the figures are the layout's
prompt cost, not inference. Each runs with cl-lsp's defaults (150 ms debounce) and with
`debounceMs` 0 (every keystroke starts a generation); the PSM model also with
`psmSuffixTokens` 500 (the suffix budget SPM families get).

Figures per run, from the server's request records: evaluated tokens per keystroke and per
generated request (median, p95), keystroke-to-suggestion (median, p95), generations per burst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import assets
import typing_replay as replay

SHAPE = {"n_layer": 8, "n_embd": 1024, "n_head": 16, "n_ff": 2816, "dtype": "f16"}
FAMILIES = {"codestral": "SPM (Codestral's tokens)", "codegemma": "PSM only (CodeGemma's tokens)"}
END = {"codestral": "</s>", "codegemma": "<|file_separator|>"}

RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("SPM, defaults", "codestral", {}),
    ("PSM, defaults (psmSuffixTokens 128)", "codegemma", {}),
    ("PSM, psmSuffixTokens 500", "codegemma", {"psmSuffixTokens": 500}),
    ("SPM, no debounce", "codestral", {"debounceMs": 0}),
    ("PSM, no debounce (128)", "codegemma", {"debounceMs": 0}),
    ("PSM, no debounce, 500", "codegemma", {"debounceMs": 0, "psmSuffixTokens": 500}),
]


def build_model(family: str, where: Path) -> Path:
    """The family's scripted model: "x", then its end token, after any prompt."""
    from cl_lsp.engine import Vocabulary
    from cl_lsp.engine.tokenizer import encode_nospace

    probe = assets.build_family_gguf(where / f"{family}-probe.gguf", family)
    vocab = Vocabulary(probe)
    try:
        (x,) = encode_nospace(vocab.encode, "x") if vocab.space_prefix else vocab.encode("x")
        end = vocab.token_id(END[family])
    finally:
        vocab.close()
    assert end is not None, family
    return assets.build_family_gguf(where / f"{family}.gguf", family, script=(x, end), **SHAPE)


def per_keystroke(result: dict[str, Any]) -> list[float]:
    return [b["evaluatedTokensBurst"] / b["keys"] for b in result["bursts"] if b["keys"]]


def quantiles(values: list[float]) -> tuple[float | None, float | None]:
    return replay.percentile(values, 0.5), replay.percentile(values, 0.95)


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


async def main_async(args: argparse.Namespace) -> int:
    sources = [replay.read_source(path) for path in replay.default_files()]
    spots = replay.make_bursts(sources, args.bursts, args.seed)
    info = replay.machine()
    print(
        f"families bench: {info['nproc']} CPUs ({info['cpu']}), load average "
        f"{info['loadavg']}, llama-cpp-python {info['llamaCppPython']}; {len(spots)} bursts "
        f"({sum(len(spot.span) for spot in spots)} keystrokes), seed {args.seed}"
    )
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cl-lsp-families-") as folder:
        models = {family: build_model(family, Path(folder)) for family in FAMILIES}
        for family, model in models.items():
            print(f"  {family}: {model.stat().st_size / 2**20:.0f} MB, {SHAPE}")
        for label, family, completion in RUNS:
            options = {"debounceMs": 150, **completion}
            result = await replay.run_config(label, options, models[family], spots, None, args)
            summary = replay.summarize(result, models[family].stat().st_size)
            rows.append((label, family, options, result, summary))
    print()
    header = (
        "| run | layout | evaluated / keystroke (median, p95) | evaluated / generated request "
        "(median, p95) | keystroke-to-suggestion ms (median, p95) | generations / burst "
        "(median) | unanswered |"
    )
    print(header)
    print("|---" * 7 + "|")
    out = []
    for label, family, options, result, summary in rows:
        stats = summary["stats"]
        keys = quantiles(per_keystroke(result))
        generations = [b["generationsStarted"] for b in result["bursts"]]
        print(
            f"| {label} | {FAMILIES[family]} | {fmt(keys[0], 1)}, {fmt(keys[1], 1)} | "
            f"{fmt(stats['evaluated']['median'])}, {fmt(stats['evaluated']['p95'])} | "
            f"{fmt(stats['k2s']['median'])}, {fmt(stats['k2s']['p95'])} | "
            f"{fmt(statistics.median(generations) if generations else None, 1)} | "
            f"{summary['unanswered']} |"
        )
        out.append(
            {
                "run": label,
                "family": family,
                "options": options,
                "evaluatedPerKeystroke": keys,
                "summary": summary,
                "error": result["error"],
            }
        )
    print(f"\ntotal {time.monotonic() - started:.0f} s; load average at the end {replay.loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "runs": out}, indent=1))
    return 0 if all(row[3]["error"] is None for row in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bursts", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    # What `typing_replay.run_config` reads of its arguments.
    args.time_limit, args.answer_timeout, args.ready_timeout = 900.0, 300.0, 300.0
    args.overhead_keys = 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
