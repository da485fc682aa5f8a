"""Every command the README and docs/ show composes, and every error message they quote is real.

The pages are read as a user reads them: each fenced code block of ``README.md`` and
``docs/*.md`` is scanned for

* commands, a line (``\\`` continuations joined, an optional ``$ `` prompt dropped) starting with
  ``python run.py`` or ``bash scripts/run.sh``: each is composed in-process with Hydra's compose
  API against ``conf/``, every cell of a ``-m`` grid (the command line's own grid in full; a grid
  an experiment file declares in full when small, else each value at least once). Shell
  variables (``$SEARCH``) stand for run directories and are replaced by a placeholder path. A
  command that cannot be composed offline carries a trailing :data:`SKIP_MARK` comment with its
  reason;
* quoted errors, a line starting with ``error:``: the nearest command above it in the same block is
  run as a subprocess (``python run.py ...`` from the repository root, outputs in a temporary
  folder) and its stderr must hold the quoted line, ``...`` standing for any text.

The pages' own references are checked too: repository paths in inline code and links exist,
links to headings resolve to a heading, and the ``autopeft`` names that inline code and code
blocks import or mention exist.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: A trailing comment that exempts a command from composition; give the reason after it.
SKIP_MARK = "# not composed:"
#: How the pages start the commands this test composes.
COMMAND_PREFIXES = ("python run.py", "bash scripts/run.sh")
#: Top-level folders whose paths, when the pages name them, must exist.
REPO_DIRS = ("autopeft", "tests", "conf", "scripts", "benchmarks", "docs", ".ci")
#: A composed grid declared by an experiment file is covered value by value, not in full.
MAX_FULL_GRID = 64


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, the line its body starts on, its language and lines."""

    page: Path
    start: int
    lang: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """One command of a block (continuations joined), with the line it starts on."""

    page: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class QuotedError:
    """An ``error:`` line of a block and the command above it (None: the block has none)."""

    page: Path
    line: int
    message: str
    command: Command | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks(page: Path) -> Iterator[Block]:
    fence: str | None = None
    lang, start, body = "", 0, []
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if match:
                fence, lang, start, body = match.group(1), match.group(2), number + 1, []
        elif stripped.startswith(fence) and not stripped[len(fence) :].strip():
            yield Block(page, start, lang, tuple(body))
            fence = None
        else:
            body.append(line)


BLOCKS = [block for page in PAGES for block in _blocks(page)]


def _logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """The block's lines with ``\\`` continuations joined and a ``$ `` prompt dropped."""
    pending, first = "", 0
    for offset, raw in enumerate(block.lines):
        line = raw.strip()
        if not pending:
            first = block.start + offset
            line = line.removeprefix("$ ")
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield first, pending + line
        pending = ""
    if pending:
        yield first, pending


def _commands_and_errors() -> tuple[list[Command], list[QuotedError]]:
    commands, errors = [], []
    for block in BLOCKS:
        last: Command | None = None
        for line, text in _logical_lines(block):
            if text.startswith(COMMAND_PREFIXES):
                last = Command(block.page, line, text)
                commands.append(last)
            elif text.startswith("error:"):
                errors.append(QuotedError(block.page, line, text, last))
    return commands, errors


COMMANDS, QUOTED_ERRORS = _commands_and_errors()


def _expand_variables(text: str) -> str:
    """``$NAME`` / ``${NAME}`` as a placeholder run directory (the pages set them with ``ls``)."""
    return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: f"outputs/docs-placeholder/{m.group(1)}", text)


def _arguments(command: Command) -> tuple[list[str], bool]:
    """The Hydra overrides of ``command`` and whether it is a multirun (``-m``)."""
    tokens = shlex.split(_expand_variables(command.text), comments=True)
    args = tokens[2:]  # after `python run.py` / `bash scripts/run.sh`
    overrides, multirun, skip = [], False, 0
    for i, arg in enumerate(args):
        if skip:
            skip -= 1
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg in ("--cfg", "-c", "--package", "-p"):
            skip = 1  # --cfg job: print instead of run; the config is the same
            if arg in ("--cfg", "-c") and i + 1 < len(args) and args[i + 1] not in ("job", "hydra", "all"):
                pytest.fail(f"{command.where}: --cfg takes job, hydra or all, not {args[i + 1]!r}")
        elif arg in ("--help", "-h", "--hydra-help", "--resolve"):
            pass
        elif arg.startswith("-"):
            pytest.fail(f"{command.where}: {arg!r} is not a flag this test knows run.py to take")
        else:
            overrides.append(arg)
    return overrides, multirun


def _cells(overrides: list[str]) -> list[list[str]]:
    """Every cell of the grid the command line spans (one cell when nothing is swept)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.input_line] for o in parsed]
    keys = [o.get_key_element() + "=" for o in parsed]
    return [
        [value if not o.is_sweep_override() else key + value for o, key, value in zip(parsed, keys, cell, strict=True)]
        for cell in itertools.product(*choices)
    ]


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="run", overrides=overrides, return_hydra_config=True)


def _resolve(cfg: DictConfig) -> None:
    """Resolve every interpolation outside the ``hydra`` node (which only a Hydra run resolves)."""
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    OmegaConf.to_container(job, resolve=True)


def _declared_grid(cfg: DictConfig, given: list[str]) -> list[list[str]]:
    """The cells a multirun adds from the config's own ``hydra.sweeper.params``.

    As Hydra's sweeper does, a key the command line sets is not swept. The grid is covered in
    full when it is small, else each value once (with the first value of every other key).
    """
    declared = cfg.hydra.sweeper.get("params")
    if not declared:
        return []
    params = OmegaConf.to_container(declared, resolve=False)
    keys = {o.get_key_element() for o in OverridesParser.create().parse_overrides(given)}
    grid = {key: [v.strip() for v in str(values).split(",")] for key, values in params.items() if key not in keys}
    if not grid:
        return []
    if len(list(itertools.product(*grid.values()))) <= MAX_FULL_GRID:
        return [[f"{k}={v}" for k, v in zip(grid, cell, strict=True)] for cell in itertools.product(*grid.values())]
    firsts = {k: v[0] for k, v in grid.items()}
    return [[f"{k}={v if k == key else firsts[k]}" for k in grid] for key, values in grid.items() for v in values]


def _id(item: Command | QuotedError) -> str:
    return item.where


def test_the_pages_show_commands_and_quote_errors() -> None:
    """The extraction itself works: an empty scan would make every other test pass vacuously."""
    assert len(COMMANDS) >= 40, [c.where for c in COMMANDS]
    assert len(QUOTED_ERRORS) >= 3, [e.where for e in QUOTED_ERRORS]
    assert any(c.page.name == "README.md" for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_every_command_composes(command: Command) -> None:
    if SKIP_MARK in command.text:
        reason = command.text.split(SKIP_MARK, 1)[1].strip()
        assert reason, f"{command.where}: {SKIP_MARK!r} needs a reason"
        pytest.skip(f"{command.where}: {reason}")
    overrides, multirun = _arguments(command)
    cells = _cells(overrides)
    assert multirun or len(cells) == 1, f"{command.where}: a comma-separated sweep needs -m: {command.text}"
    for cell in cells:
        try:
            cfg = _compose(cell)
            _resolve(cfg)
            if multirun:
                for extra in _declared_grid(cfg, cell):
                    _resolve(_compose([*cell, *extra]))
        except Exception as err:  # the message is the point: which command, which override
            pytest.fail(f"{command.where}: `{command.text}` does not compose ({cell}): {type(err).__name__}: {err}")


def _pattern(message: str) -> re.Pattern[str]:
    """The quoted line as a regex: literal text, ``...`` for any text, the whole stderr line."""
    return re.compile("^" + ".*".join(re.escape(part) for part in message.split("...")) + "$", re.MULTILINE)


def _run(command: Command, out: Path) -> subprocess.CompletedProcess:
    tokens = shlex.split(command.text, comments=True)
    assert tokens[:2] == ["python", "run.py"], f"{command.where}: a quoted error needs a `python run.py` command"
    env = {
        **os.environ,
        "AUTOPEFT_OUTPUT_ROOT": str(out),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_SILENT": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, *tokens[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Each distinct command behind a quoted error, run once, several at a time."""
    commands = {e.command.text: e.command for e in QUOTED_ERRORS if e.command is not None}
    out = tmp_path_factory.mktemp("docs-outputs")
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        futures = {text: pool.submit(_run, c, out / str(i)) for i, (text, c) in enumerate(commands.items())}
        return {text: future.result() for text, future in futures.items()}


@pytest.mark.parametrize("quoted", QUOTED_ERRORS, ids=_id)
def test_every_quoted_error_is_what_its_command_prints(
    quoted: QuotedError, error_runs: dict[str, subprocess.CompletedProcess]
) -> None:
    assert quoted.command is not None, f"{quoted.where}: the quoted error has no `python run.py` command above it"
    result = error_runs[quoted.command.text]
    assert result.returncode != 0, f"{quoted.where}: `{quoted.command.text}` succeeded"
    assert _pattern(quoted.message).search(result.stderr), (
        f"{quoted.where}: `{quoted.command.text}` did not print the quoted line\n"
        f"quoted: {quoted.message}\nstderr: {result.stderr[-2000:]}"
    )


# --- the pages' references ---------------------------------------------------------------------


def _prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    kept, fence = [], None
    for line in page.read_text().splitlines():
        stripped = line.strip()
        match = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and stripped.startswith(fence) and not stripped[len(fence) :].strip():
            fence = None
        elif fence is None:
            kept.append(line)
    return "\n".join(kept)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    for line in _prose(page).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            slug, n = _slug(match.group(1)), 1
            while slug in anchors:
                slug, n = f"{_slug(match.group(1))}-{n}", n + 1
            anchors.add(slug)
    return anchors


def _links(page: Path) -> Iterator[str]:
    for match in re.finditer(r"\]\(([^)\s]+)\)", _prose(page)):
        if not re.match(r"[a-z]+:", match.group(1)):
            yield match.group(1)


def _expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [
        expanded
        for option in match.group(1).split(",")
        for expanded in _expand_braces(path[: match.start()] + option + path[match.end() :])
    ]


def _code_spans(page: Path) -> Iterator[str]:
    yield from (m.group(1) for m in re.finditer(r"`([^`\n]+)`", _prose(page)))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_to_files_and_headings(page: Path) -> None:
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_the_page_names_exist(page: Path) -> None:
    named = [span for span in _code_spans(page) if REPO_PATH.fullmatch(span)]
    for block in (b for b in BLOCKS if b.page == page):  # scripts the page's commands run
        named += re.findall(r"(?:python|bash)\s+((?:scripts|benchmarks|docs)/[\w./-]+)", "\n".join(block.lines))
    missing = [p for span in named for p in _expand_braces(span) if not (ROOT / p).exists()]
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


#: Inline code that is a repository path (``{a,b}`` alternatives allowed; ``<placeholders>`` are not).
REPO_PATH = re.compile(rf"(?:{'|'.join(map(re.escape, REPO_DIRS))})/[\w./{{,}}-]*")


def _module_file(dotted: str) -> Path | None:
    base = ROOT / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(module: Path, name: str) -> bool:
    """``module`` defines, assigns or imports ``name``, or its package has a submodule ``name``."""
    definition = rf"^(?:def|class|async def)\s+{name}\b|^{name}\s*[:=]|^from\s+\S+\s+import\s+.*\b{name}\b"
    if re.search(definition, module.read_text(), re.M):
        return True
    if module.name != "__init__.py":
        return False
    package = module.parent.relative_to(ROOT).as_posix().replace("/", ".")
    return _module_file(f"{package}.{name}") is not None


def _autopeft_name_exists(dotted: str) -> bool:
    """``autopeft.a.b`` is a module, or ``autopeft.a.b.name`` a name defined in module ``a.b``."""
    if _module_file(dotted):
        return True
    module, _, name = dotted.rpartition(".")
    file = _module_file(module)
    return file is not None and _defines(file, name)


def _autopeft_names(page: Path) -> Iterator[str]:
    for span in _code_spans(page):  # inline code that names a module or a function
        if re.search(r"\.(?:json|jsonl|yaml|md|csv|png|py|txt|safetensors)$", span):
            continue  # a file name such as autopeft.json
        match = re.fullmatch(r"(?:from\s+)?(autopeft(?:\.\w+)+)(?:\s+import\s+([\w, ]+))?(?:\(.*\))?", span.strip())
        if match:
            yield match.group(1)
            for name in filter(None, (n.strip() for n in (match.group(2) or "").split(","))):
                yield f"{match.group(1)}.{name}"
    for block in (b for b in BLOCKS if b.page == page):  # imports in code blocks and python -c
        text = "\n".join(block.lines)
        for module, names in re.findall(r"from\s+(autopeft[\w.]*)\s+import\s+([\w, ]+)", text):
            yield module
            yield from (f"{module}.{n.strip()}" for n in names.split(",") if n.strip())
        yield from re.findall(r"^\s*import\s+(autopeft[\w.]*)", text, re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_autopeft_modules_and_names_the_page_uses_exist(page: Path) -> None:
    missing = sorted({name for name in _autopeft_names(page) if not _autopeft_name_exists(name)})
    assert not missing, f"{page.relative_to(ROOT)} names what autopeft does not have: {missing}"
