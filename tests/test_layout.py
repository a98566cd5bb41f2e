"""The package's layout: the library (tinylm) and the course's machinery (tinylm_course) apart.

The library never imports the machinery, read from the import graph of every module; each package
imports only what ``pyproject.toml`` makes it depend on; and every module is named in its
package's index.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY, MACHINERY = "tinylm", "tinylm_course"

PROVIDED_BY = {"IPython": "ipykernel", "docutils": "jupyter-book", "transformers": "transformers",
               "faiss": "faiss-cpu", "rank_bm25": "rank-bm25"}
"""Modules imported under another name than the requirement that brings them."""


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, absolute, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def third_party(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in modules(package):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in (LIBRARY, MACHINERY):
                out.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return out


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_library_never_imports_the_course_machinery():
    offenders = {str(path.relative_to(ROOT)): sorted(n for n in imports_of(path) if n.split(".")[0] == MACHINERY)
                 for path in modules(LIBRARY)}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_import_reader_sees_relative_imports():
    """The check above would pass vacuously if relative imports were not resolved."""
    seen = imports_of(ROOT / LIBRARY / "training" / "recipes.py")
    assert {"tinylm.checkpoint", "tinylm.training.loop", "tinylm.data"} <= seen


def test_each_package_imports_only_what_it_depends_on():
    library = requirement_names(PROJECT["dependencies"])
    optional = {extra: requirement_names(reqs) for extra, reqs in PROJECT["optional-dependencies"].items()}
    for module, where in third_party(LIBRARY).items():
        needed = PROVIDED_BY.get(module, module).lower()
        assert needed in library or any(needed in reqs for extra, reqs in optional.items() if extra != "course"), \
            f"{module} (imported by {sorted(where)}) is not a dependency of the library"
    for module, where in third_party(MACHINERY).items():
        needed = PROVIDED_BY.get(module, module).lower()
        assert needed in library | optional["course"], \
            f"{module} (imported by {sorted(where)}) is not a dependency of the course's machinery"
    course_only = optional["course"] - library
    assert {"nbval", "pytest", "jupyter-book"} <= course_only
    leaked = {m for m in third_party(LIBRARY) if PROVIDED_BY.get(m, m).lower() in course_only}
    assert leaked == set(), f"the library imports course-only packages: {leaked}"
    assert {"numpy", "torch"} <= library


def test_every_module_is_named_in_its_package_index():
    """Each package's ``__init__`` docstring names each of its modules and subpackages."""
    missing = []
    for init in sorted((ROOT / LIBRARY).rglob("__init__.py")) + [ROOT / MACHINERY / "__init__.py"]:
        folder = init.parent
        index = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        parts = [p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")]
        parts += [p.name for p in folder.iterdir() if (p / "__init__.py").is_file()]
        missing += [f"{folder.relative_to(ROOT)}: {name}" for name in parts if not re.search(rf"\b{name}\b", index)]
    assert missing == []


def test_the_readme_draws_the_module_map():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The package", 1)[1].split("\n## ", 1)[0]
    names = [p.name for p in (ROOT / LIBRARY).iterdir() if (p / "__init__.py").is_file()]
    names += [p.stem for p in (ROOT / LIBRARY).glob("*.py") if not p.stem.startswith("_")]
    assert [n for n in names if n not in section] == []
    assert MACHINERY in section


@pytest.mark.parametrize("package", [LIBRARY, MACHINERY])
def test_the_commands_answer_help(package):
    done = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "Commands" in done.stdout
