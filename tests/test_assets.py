"""The offline test assets are what we claim: real llama.cpp engine, real Code Llama tokenizer."""

from __future__ import annotations

import assets
import llama_cpp
import pytest

from cl_lsp.engine import repack
from cl_lsp.engine.llama import load_llama

PRE, SUF, MID, EOT = assets.FIM_PRE_ID, assets.FIM_SUF_ID, assets.FIM_MID_ID, assets.EOT_ID


def _load(path) -> llama_cpp.Llama:
    # Repacking decided as the server decides it: some CPUs (AMX Xeons) crash with it.
    use = repack.decide(path, "auto").repack
    return load_llama(path, repack=use, n_ctx=512, verbose=False, n_threads=2)


def _greedy(llm: llama_cpp.Llama, prompt: bytes, n: int) -> list[int]:
    tokens = llm.tokenize(prompt, add_bos=True, special=False)
    out: list[int] = []
    for tok in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(tok)
        if len(out) >= n or tok == llm.token_eos():
            break
    return out


@pytest.fixture(scope="module")
def tiny(tiny_model) -> llama_cpp.Llama:
    return _load(tiny_model)


@pytest.fixture(scope="module")
def vocab(tiny):
    return llama_cpp.llama_model_get_vocab(tiny.model)


def test_tiny_model_loads_with_codellama_vocab_size(tiny):
    assert tiny.n_vocab() == 32016
    assert tiny.n_ctx() == 512
    assert tiny.token_bos() == 1
    assert tiny.token_eos() == 2


def test_tokenizes_like_llama_spm(tiny):
    toks = tiny.tokenize(b"def f(x):", add_bos=False, special=False)
    assert toks[0] == 822  # "▁def"
    assert toks == [822, 285, 29898, 29916, 1125]
    assert tiny.tokenize(b"def", add_bos=True, special=False)[0] == 1  # add_bos_token copied


def test_encode_without_implicit_leading_space_trick(tiny):
    # Code Llama's reference code encodes the suffix as tokenize("☺" + s)[2:]:
    # "☺" must be exactly [▁, ☺] so that stripping two tokens removes the dummy prefix.
    smiley = tiny.tokenize("☺".encode(), add_bos=False, special=False)
    assert len(smiley) == 2 and smiley[0] == 29871  # "▁"
    suffix = "\n    return x"
    toks = tiny.tokenize(("☺" + suffix).encode(), add_bos=False, special=False)
    assert toks[:2] == smiley
    assert toks[2:] == [13, 1678, 736, 921]
    # plain tokenization inserts the SentencePiece dummy-prefix "▁" instead
    assert tiny.tokenize(suffix.encode(), add_bos=False, special=False) == [
        29871,
        13,
        1678,
        736,
        921,
    ]


@pytest.mark.parametrize(
    "tok, text",
    [(PRE, "▁<PRE>"), (SUF, "▁<SUF>"), (MID, "▁<MID>"), (EOT, "▁<EOT>")],
)
def test_fim_tokens_are_control_tokens_with_codellama_texts(vocab, tok, text):
    assert llama_cpp.llama_vocab_get_text(vocab, tok).decode("utf-8") == text
    assert llama_cpp.llama_vocab_is_control(vocab, tok)


def test_placeholder_tokens_are_distinct_and_not_control(vocab):
    texts = set()
    for tok in set(range(32000, 32016)) - {PRE, SUF, MID, EOT}:
        texts.add(llama_cpp.llama_vocab_get_text(vocab, tok))
        assert not llama_cpp.llama_vocab_is_control(vocab, tok)
    assert len(texts) == 12


def test_llama_cpp_finds_fim_tokens_by_text_but_not_eot(vocab):
    # no tokenizer.ggml.*_token_id metadata: llama.cpp detects PRE/SUF/MID by their text ...
    assert llama_cpp.llama_vocab_fim_pre(vocab) == PRE
    assert llama_cpp.llama_vocab_fim_suf(vocab) == SUF
    assert llama_cpp.llama_vocab_fim_mid(vocab) == MID
    # ... but its EOT detection only knows "<EOT>"/"_<EOT>" (ASCII underscore), not "▁<EOT>":
    # the server must stop on 32010 itself, llama.cpp will not treat it as end-of-generation.
    assert llama_cpp.llama_vocab_eot(vocab) == -1
    assert not llama_cpp.llama_vocab_is_eog(vocab, EOT)
    assert llama_cpp.llama_vocab_is_eog(vocab, 2)


def test_fim_markers_are_not_produced_from_plain_text(tiny):
    for special in (False, True):
        toks = tiny.tokenize(b"<PRE> <SUF> <MID> <EOT>", add_bos=False, special=special)
        assert not set(toks) & {PRE, SUF, MID, EOT}
    assert PRE not in tiny.tokenize(b"<PRE>", add_bos=False, special=False)
    # only the exact token text, parsed as special, maps to the id
    assert tiny.tokenize("▁<PRE>".encode(), add_bos=False, special=True) == [PRE]
    assert tiny.detokenize([PRE]) == b""  # control tokens render empty by default
    assert tiny.detokenize([PRE], special=True) == "▁<PRE>".encode()


def test_tiny_model_greedy_generates_noise_text(tiny):
    out = _greedy(tiny, b"def f(x):", 16)
    assert len(out) == 16
    assert not set(out) & {0, 1, 2, *range(32000, 32016)}
    assert len(set(out)) >= 4
    text = tiny.detokenize(out).decode("utf-8")  # valid UTF-8 (high byte tokens suppressed)
    assert text.strip()
    assert _greedy(tiny, b"def f(x):", 16) == out  # deterministic


def test_build_is_deterministic(tmp_path):
    a = assets.build_codellama_gguf(tmp_path / "a.gguf", seed=1)
    b = assets.build_codellama_gguf(tmp_path / "b.gguf", seed=1)
    c = assets.build_codellama_gguf(tmp_path / "c.gguf", seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_eot_model_first_token_is_eot(eot_model):
    llm = _load(eot_model)
    for prompt in (b"def f(x):", b"\n", b"import os\n\nclass Foo:\n    pass\n"):
        assert _greedy(llm, prompt, 1) == [EOT]


def test_forced_ordinary_token_runs_long(tmp_path):
    path = assets.build_codellama_gguf(tmp_path / "forced.gguf", forced_token=1678)  # "▁▁▁"
    llm = _load(path)
    out = _greedy(llm, b"x = 1", 64)
    assert out == [1678] * 64
    assert llm.detokenize(out) == b" " * 192


def test_smollm2_generates_readable_text(smollm2_model):
    assert smollm2_model.suffix == ".gguf"
    llm = _load(smollm2_model)
    out = _greedy(llm, b"The capital of France is", 12)
    text = llm.detokenize(out).decode("utf-8")
    assert text.isascii() and text.strip()
    assert "Paris" in text


@pytest.mark.parametrize("dtype", assets.QUANT_DTYPES)
def test_quantized_build_loads_and_generates(tmp_path, dtype):
    # the bench model's code path (random k-quant blocks written directly), tiny shape
    kw = {"n_layer": 2, "n_embd": 256, "n_head": 4, "n_ff": 512, "dtype": dtype}
    path = assets.build_codellama_gguf(tmp_path / f"{dtype}.gguf", **kw)
    assert path.stat().st_size == assets.codellama_gguf_size(**kw)
    llm = _load(path)
    assert llm.n_vocab() == 32016
    out = _greedy(llm, b"def f(x):", 16)
    assert len(out) == 16  # no NaN logits, no early stop: silent output rows are zero
    assert not set(out) & {0, 1, 2, *range(32000, 32016)}
    assert len(set(out)) >= 4
    assert llm.detokenize(out).decode("utf-8").strip()
    assert _greedy(llm, b"def f(x):", 16) == out


def test_quantized_build_rejects_unsupported_args(tmp_path):
    with pytest.raises(ValueError, match="divisible by 256"):
        assets.build_codellama_gguf(tmp_path / "a.gguf", n_embd=64, dtype="q4_k")
    with pytest.raises(ValueError, match="forced_token"):
        assets.build_codellama_gguf(
            tmp_path / "b.gguf", n_embd=256, n_ff=512, forced_token=921, dtype="q4_k_m"
        )
    assert not list(tmp_path.iterdir())
