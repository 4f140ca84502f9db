"""The README and docs/*.md as a reader uses them.

Python: every ```python block of a page runs verbatim, top to bottom in one namespace (as a reader pastes them), in
a temporary working directory (the pages' relative paths such as out/store land there), on the built-in models and
data: real Prefect, Ray and store. A block fenced ```python no-run: REASON is skipped (it needs an object store, a
cluster, ...); the reason is required.

Command line: every `attn-audit ...` command of a shell block (```bash, ```console, ```sh, a plain ``` fence, an
indented block) and every inline `attn-audit SUBCOMMAND ...` of the text is checked against the real argument
parser, in milliseconds: its subcommand exists and every --option it names is one that `attn-audit SUBCOMMAND --help`
lists; a command of a shell block that is complete (no [optional] parts or a|b alternatives) must also parse. They
are not run: each needs a store made before, a server, an object store, or takes a minute or more (the demo's
audit), where the Python blocks already run the same code on the built-in data in seconds."""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from attn_audit.flows.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
SHELL = {"", "bash", "console", "sh", "shell"}
PYTHON = re.compile(r"python|py|python3|pycon|ipython", re.I)
SYNOPSIS = re.compile(r"[\[\]|]|\.\.\.|…")  # [optional] parts, a|b alternatives, repetition


@dataclass(frozen=True)
class Block:
    page: str  # README.md, docs/store.md, ...
    line: int  # of the opening fence
    info: str  # the fence's info string: "python", "python no-run: needs S3", "bash", ""
    code: str

    @property
    def language(self) -> str:
        return self.info.split(maxsplit=1)[0] if self.info else ""

    @property
    def runs(self) -> bool:
        return self.info == "python"


def label(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [Block(label(page), text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            for m in FENCE.finditer(text)]


def runnable_pages() -> list[Path]:
    return [p for p in PAGES if any(b.runs for b in blocks(p))]


def test_the_pages_fence_python_only_as_runnable_or_no_run_with_a_reason():
    """A python block that the runner below would miss is a mistake: a misspelt language (```py, ```Python), a
    no-run without its reason, anything else after "python"."""
    assert {"README.md", "store.md", "evaluation.md", "workflow.md"} <= {p.name for p in runnable_pages()}
    found = [b for p in PAGES for b in blocks(p) if PYTHON.fullmatch(b.language)]
    for b in found:
        assert b.language == "python", f"{b.page}:{b.line}: fence ```{b.info}: write ```python"
        if not b.runs:
            assert re.fullmatch(r"python no-run: \S.*", b.info), f"{b.page}:{b.line}: say why: ```python no-run: WHY"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages(), ids=label)
def test_every_python_block_of_the_page_runs(page, ray_cluster, prefect_api, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}  # as a pasted script
    for b in blocks(page):
        if b.runs:  # our own pages
            exec(compile(b.code, f"{b.page} python block at line {b.line}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "out" / "store" / "runs" / "_delta_log").is_dir()  # every page writes a store to show


# --- the command line ------------------------------------------------------------------------------------------


def prose(page: Path) -> str:
    """The page with its fenced blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text())


def shell_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of the shell code of a page: lines of shell fences and of indented code blocks, each
    `\\`-continued command joined into one line."""
    lines = [(b.line + 1 + i, s) for b in blocks(page) if b.language in SHELL
             for i, s in enumerate(b.code.splitlines())]
    lines += [(n, s.strip()) for n, s in enumerate(prose(page).splitlines(), 1) if re.match(r" {4,}attn-audit ", s)]
    joined: list[tuple[int, str]] = []
    for n, s in lines:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1].removesuffix("\\") + " " + s.strip())
        else:
            joined.append((n, s))
    return joined


def cli_commands(page: Path) -> list[tuple[int, list[str], bool]]:
    """(line, words after `attn-audit`, whether it is a command to type) of each attn-audit command of a page's
    shell code, comments left out, and of each inline `attn-audit SUBCOMMAND ...` of its text (a mention, maybe
    not the whole command). A quoted string that spans lines (SQL) is read to its end; a synopsis line that starts
    with `[--option` or `--option` goes on with the command above it."""
    commands: list[tuple[int, list[str], bool]] = []
    pending, after_command = None, False
    for n, s in shell_lines(page):
        start, text = (n, s) if pending is None else (pending[0], pending[1] + "\n" + s)
        try:
            words = shlex.split(text, comments=True)
        except ValueError:  # an open quote: the string goes on on the next line
            pending = (start, text)
            continue
        pending = None
        if after_command and re.match(r"\s+\[?--", text):
            commands[-1][1].extend(words)
            continue
        while words and (words[0] == "$" or re.fullmatch(r"\w+=\S*", words[0])):  # a prompt, VAR=value
            words.pop(0)
        after_command = bool(words) and words[0] == "attn-audit"
        if after_command:
            cut = next((i for i, w in enumerate(words) if w in {"|", "&&", ";", "&", ">"}), len(words))
            commands.append((start, words[1:cut], True))
    text = prose(page)
    for m in re.finditer(r"(?<!`)`attn-audit ((?:-|[a-z])[^`]*)`", text):
        commands.append((text.count("\n", 0, m.start()) + 1, shlex.split(m.group(1)), False))
    return commands


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def resolve(words: list[str]) -> tuple[list[argparse.ArgumentParser], list[str], str | None]:
    """The parsers a command reaches (one per alternative of `store optimize|vacuum`), the words after its
    subcommands, and what is wrong with its subcommands (None: nothing)."""
    parsers, rest = [build_parser()], list(words)
    while rest and subparsers(parsers[0]) and not rest[0].startswith("-"):
        names = rest.pop(0).split("|")
        known = subparsers(parsers[0])
        unknown = [x for x in names if x not in known]
        if unknown:
            return parsers, rest, f"no subcommand {unknown} (there are: {sorted(known)})"
        parsers = [subparsers(p)[x] for p in parsers for x in names]
    return parsers, rest, None


def option_names(words: list[str]) -> list[str]:
    return [m.group(0) for w in words if (m := re.match(r"--[a-z][a-z0-9-]*", w.lstrip("[(")))]


DOC_COMMANDS = [(label(p), n, words, typed) for p in PAGES for n, words, typed in cli_commands(p)]


def test_the_pages_show_the_main_commands():
    """The extraction finds the commands a reader copies (the check below would pass on a page it misreads)."""
    subcommands = {words[0] for _, _, words, _ in DOC_COMMANDS if words}
    assert {"audit", "explain", "evaluate", "report", "query", "compare", "store"} <= subcommands


@pytest.mark.parametrize(("page", "line", "words", "typed"), DOC_COMMANDS,
                         ids=[f"{page}:{line}:{words[0] if words else ''}" for page, line, words, _ in DOC_COMMANDS])
def test_every_attn_audit_command_of_the_pages_names_real_subcommands_and_options(page, line, words, typed):
    parsers, rest, wrong = resolve(words)
    command = shlex.join(["attn-audit", *words])
    assert wrong is None, f"{page}:{line}: {command}: {wrong}"
    for parser in parsers:
        unknown = [o for o in option_names(rest) if o not in parser._option_string_actions]
        assert not unknown, f"{page}:{line}: {command}: {parser.prog} has no option {unknown}"
    if typed and not SYNOPSIS.search(" ".join(words)) and not {"-h", "--help"} & set(rest):
        try:
            build_parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"{page}:{line}: {command} does not parse (argparse's message above)")
