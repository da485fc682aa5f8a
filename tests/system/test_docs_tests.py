"""docs/development.md says what the code is: its test lists match the markers, its map the modules.

Nothing here runs a test or a subprocess: the test files are parsed with :mod:`ast` to find which
tests carry ``pytest.mark.slow`` (on the function, its class, the module's ``pytestmark``, or one
``pytest.param`` of a parametrization), and the page's two lists ("In the default suite", "Marked
slow") are read for the pytest ids they name (``tests/x/test_y.py::test_z`` or
``tests/x/test_y.py::test_z[case-id]``). The package map is read from the page's "Package layout"
code block and compared with the ``.py`` files under ``autopeft/``.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "development.md"
DEFAULT_HEADING = "### In the default suite"
SLOW_HEADING = "### Marked slow"
#: A pytest id as the page writes it in inline code.
TEST_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^\]`]+)\])?`")


# --- which tests are slow, from the source ------------------------------------------------------


def _is_slow_mark(node: ast.expr) -> bool:
    """``pytest.mark.slow`` (or ``pytest.mark.slow(...)``)."""
    if isinstance(node, ast.Call):
        node = node.func
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "slow"
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
    )


def _marks_slow(value: ast.expr | None) -> bool:
    """A ``pytestmark``/``marks=`` value: one mark, or a list or tuple of them, holding ``slow``."""
    if value is None:
        return False
    items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
    return any(_is_slow_mark(item) for item in items)


def _is_parametrize(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "parametrize"


def _literal_id(values: list[ast.expr]) -> str | None:
    """pytest's id of a case made of literals (``"ablation", 6`` -> ``ablation-6``); None otherwise."""
    parts = []
    for value in values:
        if not isinstance(value, ast.Constant) or not isinstance(value.value, (str, int, float, bool)):
            return None
        parts.append(str(value.value))
    return "-".join(parts)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_pytest_param(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "param"


def _cases(call: ast.Call) -> list[tuple[str | None, bool]]:
    """(id, slow) of each case of a literal ``parametrize`` list (id None where it is not a literal)."""
    values = call.args[1] if len(call.args) > 1 else _keyword(call, "argvalues")
    if not isinstance(values, (ast.List, ast.Tuple)):
        return []
    ids = _keyword(call, "ids")
    given = (
        [e.value if isinstance(e, ast.Constant) else None for e in ids.elts]
        if isinstance(ids, (ast.List, ast.Tuple))
        else None
    )
    cases = []
    for i, case in enumerate(values.elts):
        slow = False
        if _is_pytest_param(case):
            slow = _marks_slow(_keyword(case, "marks"))
            explicit = _keyword(case, "id")
            case_id = explicit.value if isinstance(explicit, ast.Constant) else _literal_id(case.args)
        else:
            case_id = _literal_id(case.elts if isinstance(case, ast.Tuple) else [case])
        if given is not None and i < len(given):
            case_id = given[i]
        cases.append((case_id, slow))
    return cases


@dataclass
class MarkedTest:
    """One test function: whether all of it is slow, and its literal cases' ids that are."""

    slow: bool
    case_ids: set[str] = field(default_factory=set)
    slow_cases: set[str] = field(default_factory=set)


def _function_info(func: ast.FunctionDef | ast.AsyncFunctionDef, inherited: bool) -> MarkedTest:
    info = MarkedTest(slow=inherited or any(_is_slow_mark(d) for d in func.decorator_list))
    for decorator in func.decorator_list:
        if _is_parametrize(decorator):
            for case_id, slow in _cases(decorator):
                if case_id is not None:
                    info.case_ids.add(case_id)
                    if slow:
                        info.slow_cases.add(case_id)
    return info


def _module_pytestmark(body: list[ast.stmt]) -> bool:
    return any(
        isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
        and _marks_slow(stmt.value)
        for stmt in body
    )


def marked_tests(source: str) -> dict[str, MarkedTest]:
    """Every test of a test module's source, by its name in the pytest id (``Class::test`` in classes)."""
    tree = ast.parse(source)
    module_slow = _module_pytestmark(tree.body)
    found: dict[str, MarkedTest] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            found[node.name] = _function_info(node, module_slow)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            class_slow = module_slow or any(_is_slow_mark(d) for d in node.decorator_list)
            class_slow = class_slow or _module_pytestmark(node.body)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    found[f"{node.name}::{item.name}"] = _function_info(item, class_slow)
    return found


def _all_tests() -> dict[str, dict[str, MarkedTest]]:
    return {
        path.relative_to(ROOT).as_posix(): marked_tests(path.read_text())
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
    }


TESTS = _all_tests()


# --- what the page says -------------------------------------------------------------------------


def _section(text: str, heading: str) -> str:
    """The page's text from ``heading`` to the next heading of any level."""
    assert heading in text, f"{PAGE.relative_to(ROOT)} has no heading {heading!r}"
    body = text.split(heading, 1)[1]
    match = re.search(r"^#{1,6} ", body, re.M)
    return body[: match.start()] if match else body


def _named(heading: str) -> list[tuple[str, str, str | None]]:
    """The pytest ids named in the section under ``heading``, as (file, test, case or None)."""
    return [(file, name, case or None) for file, name, case in TEST_ID.findall(_section(PAGE.read_text(), heading))]


DEFAULT_NAMED = _named(DEFAULT_HEADING)
SLOW_NAMED = _named(SLOW_HEADING)


def _label(file: str, name: str, case: str | None) -> str:
    return f"{file}::{name}" + (f"[{case}]" if case else "")


def _lookup(file: str, name: str, case: str | None) -> MarkedTest:
    assert file in TESTS, f"{PAGE.name} names {file}, which is not a test file"
    assert name in TESTS[file], f"{PAGE.name} names {_label(file, name, None)}, which {file} does not define"
    info = TESTS[file][name]
    if case is not None:
        cases = sorted(info.case_ids)
        assert case in info.case_ids, f"{PAGE.name} names {_label(file, name, case)}; its cases: {cases}"
    return info


def test_the_page_names_tests_in_both_lists() -> None:
    """The scan itself works: empty lists would make the other checks pass vacuously."""
    assert len(DEFAULT_NAMED) >= 5 and len(SLOW_NAMED) >= 10, (DEFAULT_NAMED, SLOW_NAMED)
    assert sum(info.slow for tests in TESTS.values() for info in tests.values()) >= 5


@pytest.mark.parametrize("named", DEFAULT_NAMED, ids=lambda n: _label(*n))
def test_each_test_the_default_list_names_is_in_the_default_suite(named: tuple[str, str, str | None]) -> None:
    file, name, case = named
    info = _lookup(file, name, case)
    assert not info.slow, f"{_label(*named)} is marked slow, but {PAGE.name} lists it in the default suite"
    if case is not None:
        assert case not in info.slow_cases, f"{_label(*named)} is marked slow, but {PAGE.name} lists it as default"
    else:
        assert info.slow_cases != info.case_ids or not info.case_ids, f"every case of {_label(*named)} is slow"


@pytest.mark.parametrize("named", SLOW_NAMED, ids=lambda n: _label(*n))
def test_each_test_the_slow_list_names_is_marked_slow(named: tuple[str, str, str | None]) -> None:
    file, name, case = named
    info = _lookup(file, name, case)
    if case is None:
        assert info.slow, f"{_label(*named)} is not marked slow (in all its cases), but {PAGE.name} lists it as slow"
    else:
        assert info.slow or case in info.slow_cases, f"{_label(*named)} is not marked slow, but {PAGE.name} says so"


def test_every_slow_test_is_named_in_the_slow_list() -> None:
    named = {_label(*n) for n in SLOW_NAMED}
    unnamed = []
    for file, tests in TESTS.items():
        for name, info in tests.items():
            if info.slow:
                if _label(file, name, None) not in named:
                    unnamed.append(_label(file, name, None))
            else:
                cases = (_label(file, name, c) for c in sorted(info.slow_cases))
                unnamed += [case for case in cases if case not in named]
    assert not unnamed, f"marked slow but not in {PAGE.name}'s list under {SLOW_HEADING!r}: {unnamed}"


def test_the_default_suite_leaves_out_the_slow_tests_and_ci_runs_them() -> None:
    """What the page says of the two suites: pytest's addopts deselect slow, .ci/run runs both."""
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-m 'not slow and not gpu'" in addopts, addopts
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/test\.sh$", ci, re.M) and 'bash scripts/test.sh -m "slow and not gpu"' in ci


def test_the_marker_scan_finds_every_kind_of_slow_mark() -> None:
    """The scan can fail: each way of marking a test slow is found, and unmarked tests are not."""
    source = """
import pytest
@pytest.mark.slow
def test_decorated(): ...
@pytest.mark.timeout(10)
def test_plain(): ...
@pytest.mark.parametrize(("a", "b"), [("x", 1), pytest.param("y", 2, marks=pytest.mark.slow), pytest.param(3, id="z")])
def test_cases(a, b): ...
@pytest.mark.slow
class TestGroup:
    def test_in_class(self): ...
"""
    found = marked_tests(source)
    assert found["test_decorated"].slow and not found["test_plain"].slow
    assert not found["test_cases"].slow and found["test_cases"].slow_cases == {"y-2"}
    assert found["test_cases"].case_ids == {"x-1", "y-2", "z"}
    assert found["TestGroup::test_in_class"].slow
    assert all(info.slow for info in marked_tests("import pytest\npytestmark = [pytest.mark.slow]\n" + source).values())


# --- the package map ----------------------------------------------------------------------------


def _package_map() -> list[str]:
    """The paths the "Package layout" block names, built from its indentation (two spaces a level)."""
    section = _section(PAGE.read_text(), "## Package layout")
    block = re.search(r"```text\n(.*?)\n```", section, re.S)
    assert block, "the Package layout section has no ```text block"
    paths, stack = [], []
    for line in block.group(1).splitlines():
        name = line.split()[0] if line.strip() else ""
        if not (name.endswith(".py") or name.endswith("/")):
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        stack = stack[:depth]
        paths.append("".join(stack) + name)
        if name.endswith("/"):
            stack.append(name)
    return paths


def test_the_package_map_names_every_module_and_nothing_else() -> None:
    named = {p for p in _package_map() if p.startswith("autopeft/") and p.endswith(".py")}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "autopeft").rglob("*.py")}
    assert len(named) >= 10, sorted(named)
    assert not modules - named, f"{PAGE.name}'s package map lacks {sorted(modules - named)}"
    assert not named - modules, f"{PAGE.name}'s package map names modules that do not exist: {sorted(named - modules)}"
