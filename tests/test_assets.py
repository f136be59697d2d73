"""The offline test assets are what we claim: real llama.cpp engine, real Code Llama tokenizer."""

from __future__ import annotations

import random

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


# -- the other fill-in-the-middle families (assets.build_family_gguf) ---------------------------

FAMILIES = list(assets.FIM_FAMILIES)
BPE_FAMILIES = ["starcoder", "deepseek-coder", "qwen2.5-coder"]
FIM_KINDS = ("pre", "suf", "mid", "pad", "rep", "sep")

# What llama.cpp's llama_vocab_fim_{pre,suf,mid,pad,rep,sep} report for the models built
# WITHOUT fim metadata, i.e. what it detects from token texts (src/llama-vocab.cpp).
FIM_IDS_BY_TEXT = {
    "starcoder": (1, 3, 2, 4, -1, -1),  # <repo_name>, <file_sep>: texts it doesn't know
    "deepseek-coder": (32016, 32015, 32017, -1, -1, -1),
    "qwen2.5-coder": (151659, 151661, 151660, 151662, 151663, 151664),
    "codegemma": (32000, 32002, 32001, -1, -1, -1),  # <|file_separator|>: unknown text
    "codestral": (-1, -1, -1, -1, -1, -1),  # [PREFIX]/[SUFFIX]/[MIDDLE]: unknown texts
    "plain": (-1, -1, -1, -1, -1, -1),
}

CODE_TEXTS = [
    "def f(x):\n    return x",
    "import os\n\nclass Foo:\n    pass\n",
    "# π ≈ 3.14 — naïve café, 日本語のテキスト 🙂\n",
    "\tif (a && b) { return a->c[0]; }\r\n",
    "x",
    "    \n\n\n  ",
]


def _fim_ids(vocab) -> tuple[int, ...]:
    return tuple(getattr(llama_cpp, f"llama_vocab_fim_{kind}")(vocab) for kind in FIM_KINDS)


def _load_family(path) -> llama_cpp.Llama:
    # One thread: with two, llama.cpp's spinning thread barrier makes these tiny models
    # ~100x slower (seconds per token) as soon as anything else wants the CPU.
    use = repack.decide(path, "auto").repack
    return load_llama(path, repack=use, n_ctx=256, verbose=False, n_threads=1, n_threads_batch=1)


def _vocab(llm: llama_cpp.Llama):
    return llama_cpp.llama_model_get_vocab(llm.model)


def _greedy_ids(llm: llama_cpp.Llama, tokens: list[int], n: int) -> list[int]:
    out: list[int] = []
    for tok in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(tok)
        if len(out) >= n:
            break
    return out


@pytest.fixture(scope="module")
def family_llm(family_gguf):
    """family name -> loaded random-weight model of that family (no fim metadata)."""
    loaded: dict[str, llama_cpp.Llama] = {}

    def get(name: str) -> llama_cpp.Llama:
        if name not in loaded:
            loaded[name] = _load_family(family_gguf(name))
        return loaded[name]

    return get


def _script_for(llm: llama_cpp.Llama, family: assets.FimFamily) -> tuple[int, ...]:
    """A completion of "    return a + b\\n" in the family's own tokens, ending in its end token."""
    body: list[int] = []
    for tok in llm.tokenize(b"    return a + b\n", add_bos=False, special=False):
        if tok not in body:
            body.append(tok)
    return (*body, family.end)


@pytest.fixture(scope="module")
def scripted_llm(family_gguf, family_llm):
    """family name -> (scripted model with fim metadata, its script)."""
    loaded: dict[str, tuple[llama_cpp.Llama, tuple[int, ...]]] = {}

    def get(name: str) -> tuple[llama_cpp.Llama, tuple[int, ...]]:
        if name not in loaded:
            script = _script_for(family_llm(name), assets.FIM_FAMILIES[name])
            path = family_gguf(name, script=script, fim_metadata=True)
            loaded[name] = (_load_family(path), script)
        return loaded[name]

    return get


def test_family_vocab_paths(tmp_path, monkeypatch):
    for name, file_name in assets.FAMILY_VOCAB_NAMES.items():
        assert assets.family_vocab_path(name).name == file_name
    assert assets.family_vocab_path("qwen2.5-coder") == assets.family_vocab_path("qwen2")
    assert assets.family_vocab_path("deepseek-coder").name == "ggml-vocab-deepseek-coder.gguf"
    for name in ("llama-spm", "codegemma", "codestral", "plain"):
        assert assets.family_vocab_path(name) == assets.vocab_path()
    with pytest.raises(ValueError, match="unknown vocabulary"):
        assets.family_vocab_path("gpt-5")
    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
    with pytest.raises(assets.AssetMissingError, match="python tests/assets.py"):
        assets.family_vocab_path("starcoder")


@pytest.mark.parametrize("name", FAMILIES)
def test_family_model_loads_with_its_vocabulary(family_llm, name):
    fam = assets.FIM_FAMILIES[name]
    llm = family_llm(name)
    vocab = _vocab(llm)
    assert llm.n_vocab() == fam.n_vocab
    assert (llm.token_bos(), llm.token_eos()) == (fam.bos, fam.eos)
    assert llama_cpp.llama_vocab_get_add_bos(vocab) == fam.add_bos
    assert llama_cpp.llama_vocab_is_eog(vocab, fam.end)
    for tok, text in fam.added.items():
        assert llama_cpp.llama_vocab_get_text(vocab, tok).decode() == text
    for tok in fam.fim_ids().values():  # CONTROL: never produced from plain text
        assert llama_cpp.llama_vocab_is_control(vocab, tok)
    first = llm.tokenize(b"def f(x):", add_bos=False, special=False)[0]
    dummy_prefix = llama_cpp.llama_vocab_get_text(vocab, first).decode().startswith("\u2581")
    assert dummy_prefix == fam.add_space_prefix
    assert llm.detokenize(llm.tokenize(b"def f(x):", add_bos=False)).strip() == b"def f(x):"


@pytest.mark.parametrize("name", FAMILIES)
def test_llama_cpp_fim_ids_from_texts_and_from_metadata(family_llm, scripted_llm, name):
    fam = assets.FIM_FAMILIES[name]
    # no metadata: what llama.cpp finds by token text
    assert _fim_ids(_vocab(family_llm(name))) == FIM_IDS_BY_TEXT[name]
    # fim metadata: exactly the family's ids
    scripted, _ = scripted_llm(name)
    ids = fam.fim_ids()
    assert _fim_ids(_vocab(scripted)) == tuple(ids.get(kind, -1) for kind in FIM_KINDS)


def test_fim_tokens_by_text_where_llama_cpp_does_not_know_them(family_llm):
    vocab = _vocab(family_llm("codestral"))
    text = {tok: llama_cpp.llama_vocab_get_text(vocab, tok).decode() for tok in (32000, 32001)}
    assert text == {32000: "[SUFFIX]", 32001: "[PREFIX]"}
    vocab = _vocab(family_llm("starcoder"))
    assert llama_cpp.llama_vocab_get_text(vocab, 5) == b"<repo_name>"
    assert llama_cpp.llama_vocab_get_text(vocab, 6) == b"<file_sep>"


def test_deepseek_fim_tokens_are_control_only_when_found_by_text(family_llm, scripted_llm):
    # The vendored vocab types them USER_DEFINED; llama.cpp retypes them CONTROL when it
    # detects them by text, which it skips when the ids come from metadata.
    fim = (32015, 32016, 32017)
    by_text = _vocab(family_llm("deepseek-coder"))
    assert all(llama_cpp.llama_vocab_is_control(by_text, tok) for tok in fim)
    scripted, _ = scripted_llm("deepseek-coder")
    by_metadata = _vocab(scripted)
    assert not any(llama_cpp.llama_vocab_is_control(by_metadata, tok) for tok in fim)
    # user-defined tokens are matched in plain text even with special=False
    marker = "<｜fim▁begin｜>x".encode()
    assert scripted.tokenize(marker, add_bos=False, special=False)[0] == 32016
    assert 32016 not in family_llm("deepseek-coder").tokenize(marker, add_bos=False, special=False)


@pytest.mark.parametrize("name", BPE_FAMILIES)
def test_bpe_family_keeps_its_vocabulary(family_gguf, family_llm, name):
    fam = assets.FIM_FAMILIES[name]
    src_path = assets.family_vocab_path(name)
    src, built = assets.read_vocab(src_path), assets.read_vocab(family_gguf(name))
    rewritten = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"}
    assert {k: v for k, v in built.items() if k not in rewritten} == {
        k: v for k, v in src.items() if k not in rewritten
    }  # merges, pre-tokenizer, special ids, add_bos ... copied verbatim
    for key in rewritten:
        old, new = list(src[key][0]), list(built[key][0])
        for tok in fam.added:
            old[tok] = new[tok]
        assert old == new

    ref = llama_cpp.Llama(model_path=str(src_path), vocab_only=True, verbose=False)
    llm = family_llm(name)
    markers = "".join(fam.added.values())
    for text in [*CODE_TEXTS, "<|fim_prefix|>a<fim_suffix>b<｜fim▁end｜>c"]:
        raw = text.encode()
        for add_bos in (False, True):
            want = ref.tokenize(raw, add_bos=add_bos, special=False)
            assert llm.tokenize(raw, add_bos=add_bos, special=False) == want, text
            if not markers:
                assert llm.tokenize(raw, add_bos=add_bos, special=True) == ref.tokenize(
                    raw, add_bos=add_bos, special=True
                )
        toks = llm.tokenize(raw, add_bos=False, special=False)
        assert llm.detokenize(toks) == ref.detokenize(toks) == raw
    pre, suf, mid = fam.pre, fam.suf, fam.mid
    pre_text, suf_text, mid_text = (
        llama_cpp.llama_vocab_get_text(_vocab(llm), tok).decode() for tok in (pre, suf, mid)
    )
    prompt = f"{pre_text}def f(x):{suf_text}\n    return y{mid_text}".encode()
    toks = llm.tokenize(prompt, add_bos=False, special=True)
    assert toks[0] == pre and toks[-1] == mid and suf in toks


def test_spm_families_tokenize_like_llama_but_codegemma_without_dummy_prefix(family_llm):
    ref = llama_cpp.Llama(model_path=str(assets.vocab_path()), vocab_only=True, verbose=False)
    gemma = family_llm("codegemma")
    for text in CODE_TEXTS:
        raw = text.encode()
        for name in ("codestral", "plain"):
            assert family_llm(name).tokenize(raw) == ref.tokenize(raw), (name, text)
        toks = gemma.tokenize(raw, add_bos=False)
        assert gemma.detokenize(toks) == raw  # no "▁" dummy prefix to strip
        assert ref.detokenize(ref.tokenize(raw, add_bos=False)) == b" " + raw
    assert gemma.tokenize(b"x", add_bos=False) == [29916]  # "x", where Llama has "▁x" (921)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_random_model_generates_noise_text(family_llm, name):
    llm = family_llm(name)
    vocab = _vocab(llm)
    prompt = llm.tokenize(b"def f(x):\n    return", add_bos=assets.FIM_FAMILIES[name].add_bos)
    out = _greedy_ids(llm, prompt, 16)
    assert len(out) == 16 and len(set(out)) >= 4
    for tok in out:
        assert not llama_cpp.llama_vocab_is_eog(vocab, tok)
        assert not llama_cpp.llama_vocab_is_control(vocab, tok)
    assert llm.detokenize(out).decode("utf-8").strip()  # valid UTF-8
    assert _greedy_ids(llm, prompt, 16) == out


@pytest.mark.parametrize("name", FAMILIES)
def test_scripted_family_model_emits_its_script_then_stops(scripted_llm, name):
    fam = assets.FIM_FAMILIES[name]
    llm, script = scripted_llm(name)
    assert script[-1] == fam.end and llama_cpp.llama_vocab_is_eog(_vocab(llm), fam.end)
    assert llm.detokenize(list(script[:-1])).strip() == b"return a + b"
    rng = random.Random(name)
    prompts = [
        llm.tokenize(t.encode(), add_bos=fam.add_bos, special=s)
        for t in CODE_TEXTS
        for s in (False, True)
    ]
    prompts += [[rng.randrange(fam.n_vocab) for _ in range(rng.randint(1, 24))] for _ in range(20)]
    prompts += [[tok] for tok in (fam.bos, fam.eos, *fam.fim_ids().values()) if tok is not None]
    checked = 0
    for prompt in prompts:
        if prompt[-1] in script:
            continue
        assert _greedy_ids(llm, prompt, len(script) + 1) == [*script, script[-1]], prompt
        checked += 1
    assert checked >= 25
    # a prompt ending inside the script continues from there
    assert _greedy_ids(llm, [script[1]], len(script) - 1) == [*script[2:], script[-1]]


def test_scripted_model_f16_and_short_script(family_gguf):
    llm = _load_family(family_gguf("plain", script=(921,), dtype="f16"))  # "▁x" forever
    assert _greedy_ids(llm, llm.tokenize(b"y = 1"), 8) == [921] * 8


def test_family_build_is_deterministic(tmp_path):
    a = assets.build_family_gguf(tmp_path / "a.gguf", "codestral", seed=1)
    b = assets.build_family_gguf(tmp_path / "b.gguf", "codestral", seed=1)
    c = assets.build_family_gguf(tmp_path / "c.gguf", "codestral", seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_family_build_rejects_bad_arguments(tmp_path):
    build = assets.build_family_gguf
    with pytest.raises(ValueError, match="unknown family"):
        build(tmp_path / "a.gguf", "codellama-70b")
    with pytest.raises(ValueError, match="distinct"):
        build(tmp_path / "a.gguf", "plain", script=(5, 6, 5))
    with pytest.raises(ValueError, match="script ids"):
        build(tmp_path / "a.gguf", "plain", script=(5, 32000))
    with pytest.raises(ValueError, match="n_embd"):
        build(tmp_path / "a.gguf", "plain", script=tuple(range(100, 170)))
    with pytest.raises(ValueError, match="dtype"):
        build(tmp_path / "a.gguf", "plain", dtype="q4_k")
    assert not list(tmp_path.iterdir())
