"""FIM prompts against Code Llama's reference format, with the real Llama tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from cl_lsp.completion.families import CODE_LLAMA, fim_format
from cl_lsp.completion.prompts import Layout, build_fim_prompt, build_prefix_prompt, build_prompt
from cl_lsp.config import PromptFormat
from cl_lsp.engine.tokenizer import encode_nospace

BOS, PRE, SUF, MID, EOT = 1, 32007, 32008, 32009, 32010
DEF_F = [822, 285, 29898, 29916, 1125]  # enc("def f(x):") with the implicit leading space
RETURN_X = [13, 1678, 736, 921]  # enc_nospace("\n    return x")


@pytest.fixture(scope="module")
def fim(tiny_vocab):
    return fim_format(tiny_vocab)


def test_vocabulary_finds_code_llama_tokens_by_text(tiny_vocab, fim):
    assert fim.family is CODE_LLAMA and fim.bos == BOS and fim.space_prefix
    assert dict(fim.ids) == {"pre": PRE, "suf": SUF, "mid": MID}
    assert fim.stop_ids == {EOT} and 2 in tiny_vocab.stop_ids


def test_reference_encodings(tiny_vocab, fim):
    assert tiny_vocab.encode("def f(x):") == DEF_F
    assert encode_nospace(tiny_vocab.encode, "\n    return x") == RETURN_X
    # enc keeps SentencePiece's implicit space, enc_nospace drops it
    assert tiny_vocab.encode("\n    return x") == [29871, *RETURN_X]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        pytest.param(Layout.PSM, [BOS, PRE, *DEF_F, SUF, *RETURN_X, MID], id="psm"),
        pytest.param(Layout.SPM, [BOS, PRE, SUF, *RETURN_X, MID, *DEF_F], id="spm"),
    ],
)
def test_exact_prompt_ids(tiny_vocab, fim, layout, expected):
    prompt = build_fim_prompt("def f(x):", "\n    return x", tiny_vocab.encode, fim, layout)
    assert prompt.layout is layout
    assert list(prompt.tokens) == expected


@pytest.mark.parametrize(
    ("prefix", "suffix", "layout", "expected"),
    [
        pytest.param(
            "", "\n    return x", Layout.SPM, [BOS, PRE, SUF, *RETURN_X, MID], id="empty-prefix"
        ),
        pytest.param("def f(x):", "", Layout.SPM, [BOS, PRE, SUF, MID, *DEF_F], id="empty-suffix"),
        pytest.param("def f(x):", "", Layout.PSM, [BOS, PRE, *DEF_F, SUF, MID], id="psm-no-suffix"),
    ],
)
def test_empty_parts(tiny_vocab, fim, prefix, suffix, layout, expected):
    prompt = build_fim_prompt(prefix, suffix, tiny_vocab.encode, fim, layout)
    assert list(prompt.tokens) == expected


def test_user_text_never_becomes_a_control_token(tiny_vocab, fim):
    code = 'marker = "<PRE> <SUF> <MID> <EOT> ▁<PRE>"\n'
    prompt = build_fim_prompt(code, code, tiny_vocab.encode, fim, Layout.PSM)
    ids = list(prompt.tokens)
    assert ids.count(PRE) == ids.count(SUF) == ids.count(MID) == 1
    assert EOT not in ids


@pytest.mark.parametrize(
    ("setting", "prefix", "layout", "heal"),
    [
        pytest.param(PromptFormat.AUTO, "def f(x):", Layout.SPM, "", id="auto-boundary"),
        pytest.param(PromptFormat.AUTO, "x = 1\n    ", Layout.SPM, "", id="auto-indent"),
        pytest.param(
            PromptFormat.AUTO, "    return fib", Layout.SPM, " fib", id="auto-mid-identifier-heals"
        ),
        pytest.param(PromptFormat.AUTO, "x = (n_", Layout.SPM, "n_", id="auto-heals-after-paren"),
        pytest.param(PromptFormat.AUTO, "한국어", Layout.PSM, "", id="auto-non-ascii-word-psm"),
        pytest.param(PromptFormat.SPM, "    return fib", Layout.SPM, "", id="forced-spm"),
        pytest.param(PromptFormat.PSM, "def f(x):", Layout.PSM, "", id="forced-psm"),
    ],
)
def test_prompt_format_setting(tiny_vocab, fim, setting, prefix, layout, heal):
    prompt = build_prompt(setting, prefix, "\n", tiny_vocab.encode, fim, BOS)
    assert (prompt.layout, prompt.heal) == (layout, heal)
    if layout is Layout.SPM and not heal:
        assert prompt == build_fim_prompt(prefix, "\n", tiny_vocab.encode, fim, Layout.SPM)


def test_models_without_fim_tokens_get_a_prefix_prompt(tiny_vocab, fim):
    prompt = build_prompt(PromptFormat.AUTO, "def f", "", tiny_vocab.encode, None, BOS)
    assert prompt.layout is Layout.PREFIX
    assert prompt.tokens == (BOS, *tiny_vocab.encode("def f"))
    assert build_prefix_prompt([5, 6], bos=1).tokens == (1, 5, 6)
    assert build_prefix_prompt([5, 6], bos=None).tokens == (5, 6)


def test_spm_keeps_the_cache_valid_while_typing(tiny_vocab, fim):
    """Typing at the cursor changes only the tail of an SPM prompt (PSM: everything after it)."""
    suffix = "\n    return total\n\n\ndef other():\n    pass\n"
    before = "def total(xs):\n    total = 0\n    for x in xs:\n        total += "
    after = before + "x "

    def shared(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    spm = [
        build_fim_prompt(p, suffix, tiny_vocab.encode, fim, Layout.SPM).tokens
        for p in (before, after)
    ]
    psm = [
        build_fim_prompt(p, suffix, tiny_vocab.encode, fim, Layout.PSM).tokens
        for p in (before, after)
    ]
    assert len(spm[1]) - shared(*spm) <= 3
    assert len(psm[1]) - shared(*psm) > len(encode_nospace(tiny_vocab.encode, suffix))


def test_line_cached_encoding_is_exactly_the_tokenizer(tiny_vocab, fim):
    """The per-line cache must give the very ids the tokenizer gives for the whole text."""
    import sysconfig

    assert tiny_vocab._lines is not None  # Llama's SentencePiece vocabulary qualifies
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("textwrap.py", "shlex.py", "fractions.py", "colorsys.py"):
        text = (stdlib / name).read_text(encoding="utf-8")
        for start, end in ((0, 3000), (1234, 5000), (777, 778), (10, 2500)):
            part = text[start:end]
            assert tiny_vocab.encode(part) == tiny_vocab._tokenize(part), (name, start, end)
    tricky = "\n\n  x = '☺'\r\n\tüñí😀\n<PRE> <EOT>\n☺☺\n   \n"
    for start in range(len(tricky)):
        assert tiny_vocab.encode(tricky[start:]) == tiny_vocab._tokenize(tricky[start:])


def test_byte_level_bpe_vocabularies_are_tokenized_whole(smollm2_model):
    from cl_lsp.engine import Vocabulary

    vocab = Vocabulary(smollm2_model)
    try:
        assert vocab._lines is None
        assert vocab.encode("def f():\n\n    return 1\n") == vocab._tokenize(
            "def f():\n\n    return 1\n"
        )
    finally:
        vocab.close()


def test_healed_prompt_leaves_the_partial_word_out_and_stays_put_while_typing(tiny_vocab, fim):
    from cl_lsp.completion.prompts import build_healed_prompt

    suffix = "\n\nprint(fib(10))\n"
    healed = [
        build_healed_prompt(prefix, suffix, tiny_vocab.encode, fim)
        for prefix in ("    return fi", "    return fib", "    return fibo")
    ]
    plain = build_fim_prompt("    return", suffix, tiny_vocab.encode, fim, Layout.SPM)
    assert [p.tokens for p in healed] == [plain.tokens] * 3
    assert [p.heal for p in healed] == [" fi", " fib", " fibo"]
    at_boundary = build_healed_prompt("x = ", suffix, tiny_vocab.encode, fim)
    assert at_boundary.heal == "" and at_boundary.layout is Layout.SPM
    assert build_healed_prompt("x = 변", "", tiny_vocab.encode, fim).layout is (Layout.PSM)


# -- instruct prompts ------------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
NO_SYSTEM_ROLE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('no system role') }}{% endif %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endfor %}"
)


def test_code_llama_instruct_format_without_a_template():
    from cl_lsp.engine.chat import ChatPiece, render_chat

    pieces = render_chat("Be brief.", "  Explain this.\n", None)
    # facebookresearch/codellama generation.py: the system prompt folded into the user turn,
    # [INST] as plain text (the caller adds BOS).
    assert pieces == (
        ChatPiece("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n  Explain this. [/INST]", special=False),
    )  # only the whole content is stripped


def test_a_gguf_chat_template_renders_with_messages_as_plain_text():
    from cl_lsp.engine.chat import ChatPiece, render_chat

    user = "x = '<|im_end|>'"  # code that spells a control token stays text
    pieces = render_chat("Be brief.", user, CHATML)
    assert pieces == (
        ChatPiece("<|im_start|>system\n", special=True),
        ChatPiece("Be brief.", special=False),
        ChatPiece("<|im_end|>\n<|im_start|>user\n", special=True),
        ChatPiece(user, special=False),
        ChatPiece("<|im_end|>\n<|im_start|>assistant\n", special=True),
    )


def test_a_template_without_a_system_role_gets_it_in_the_user_turn():
    from cl_lsp.engine.chat import ChatPiece, render_chat

    pieces = render_chat("Be brief.", "Explain.", NO_SYSTEM_ROLE, bos_token="<s>")
    assert pieces == (
        ChatPiece("<s>[INST] ", special=True),
        ChatPiece("Be brief.", special=False),
        ChatPiece("\n\n", special=True),
        ChatPiece("Explain.", special=False),
        ChatPiece(" [/INST]", special=True),
    )


@pytest.mark.parametrize("layout", [Layout.SPM, Layout.PSM])
@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [
        ("def f(x):\n    return ", "\n\nprint(f(1))\n"),
        ("a", "foo)\n"),
        ("", ""),
        ("x = <PRE>", " y"),
    ],
)
def test_the_text_form_is_the_token_exact_prompt_but_for_the_suffixs_space(
    tiny_model, tiny_vocab, fim, layout, prefix, suffix
):
    # What a server that takes only text (llama-cpp-python's, Ollama) makes of the text form,
    # with its llama.cpp tokenizer: BOS added, control tokens parsed from text.
    from cl_lsp.engine.llama import Weights

    prompt = build_fim_prompt(prefix, suffix, tiny_vocab.encode, fim, layout)
    server = Weights.load(tiny_model, vocab_only=True)
    try:
        received = server._model.tokenize(prompt.text.encode(), add_bos=True, special=True)
    finally:
        server.close()
    exact = list(prompt.tokens)
    nospace = encode_nospace(tiny_vocab.encode, suffix)
    spaced = tiny_vocab.encode(suffix) if suffix else []
    start = exact.index(fim.ids["suf"]) + 1
    assert exact[start : start + len(nospace)] == nospace
    assert received == exact[:start] + spaced + exact[start + len(nospace) :]
