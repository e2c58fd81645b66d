"""The layout's rules, checked on every run, so the structure cannot quietly rot.

- import-linter (contracts in pyproject.toml): core never imports the UIs, storage imports nothing above it,
  core's packages import downwards along the loop only, and nothing imports in a circle at any depth.
- The UIs (app/, pages/, launch.py) run no SQL: they call core functions.
- No private name (``_x``) is shared between modules: modules that share behaviour share public functions.
- No test module imports another test module or conftest: shared helpers live in ``tests/support`` (and, those the
  benchmarks use too, in ``bench/harness``).
- No module of the product or the benchmarks is over MAX_LINES unless its docstring says why it is one
  indivisible thing. The limit is counted on ``ruff format``'s output, which spreads a call over one line per
  argument once it does not fit: the same code took 1.2x the lines (core 1.17x, app 1.22x, pages 1.33x) when the
  tree was first formatted, so 600 formatted lines are the 500 compact lines the rule held before.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UI_FILES = sorted([*(ROOT / "app").glob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "launch.py"])
OUR_PACKAGES = ("core", "storage", "app", "tests", "bench")
MAX_LINES = 600
SQL = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS"
    r"|CREATE\s+(TABLE|INDEX|VIEW|SEQUENCE))\b"
)
DB_CALLS = {"query", "scalar", "execute", "executemany", "transaction"}


def python_files(*folders: str) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        files += [p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts]
    return sorted(files) + [ROOT / "launch.py"]


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_import_contracts_hold():
    """The layer, independence and no-cycle contracts of pyproject.toml's [tool.importlinter]."""
    linter = Path(sys.executable).with_name("lint-imports")  # the test extra's console script, in this venv
    done = subprocess.run(
        [str(linter), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_the_uis_run_no_sql():
    found = []
    for path in UI_FILES:
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: SQL text {node.value[:40]!r}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in DB_CALLS
                and isinstance(node.func.value, (ast.Name, ast.Attribute))
                and (
                    getattr(node.func.value, "id", None) in {"db", "cur"}
                    or getattr(node.func.value, "attr", None) == "db"
                )
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: db.{node.func.attr}(...)")
    assert not found, "the UIs must call core functions, not SQL:\n" + "\n".join(found)


def _module_file(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_shared_between_modules():
    found = []
    for path in python_files(*OUR_PACKAGES):
        tree = parse(path)
        modules: set[str] = set()  # local names bound to one of our modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OUR_PACKAGES:
                for alias in node.names:
                    if _private(alias.name):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {node.module}.{alias.name}")
                    elif _module_file(f"{node.module}.{alias.name}"):
                        modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in OUR_PACKAGES and alias.asname:
                        modules.add(alias.asname)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    assert not found, "share public functions, not private ones:\n" + "\n".join(found)


def test_no_test_module_imports_another():
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(parse(path)):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                last = name.split(".")[-1]
                if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert not found, "shared test helpers belong in tests/support:\n" + "\n".join(found)


def test_the_benchmarks_never_import_the_tests():
    """The harness both use (processes, the engine, random versions, the Hub stand-in) is bench/harness: the tests
    may import the benchmarks' code, never the other way round."""
    found = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for node in ast.walk(parse(path)):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}"
                for name in names
                if name == "tests" or name.startswith("tests.")
            ]
    assert not found, "move what bench needs into bench/harness:\n" + "\n".join(found)


def test_modules_stay_readable_in_size():
    found = []
    for path in python_files("core", "storage", "app", "pages", "bench"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        doc = ast.get_docstring(parse(path)) or ""
        if lines > MAX_LINES and "indivisible" not in doc.lower():
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not found, (
        f"split these by concern (or say in the docstring why one is indivisible), "
        f"max {MAX_LINES}:\n" + "\n".join(found)
    )
