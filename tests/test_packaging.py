"""A plain install works: every third-party module the package imports is a declared runtime
dependency, the wheel builds without setuptools warnings and carries the shipped model and the
mapped sub-packages, and nothing in the repository cites the internal design notes."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("analogeq", "integrators", "circuits")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {_norm(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0])
            for req in data["project"]["dependencies"]}


def imported_top_level_modules() -> dict[str, set[str]]:
    """{top-level module: files importing it} over the installed package's sources (absolute
    imports only, also those inside functions: a lazy import is still needed at run time)."""
    found: dict[str, set[str]] = {}
    for folder in PACKAGE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(
                        str(path.relative_to(ROOT)))
    return found


def test_every_imported_third_party_module_is_a_runtime_dependency():
    declared = runtime_requirements()
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in ("analogeq", "__future__"):
            continue
        owners = {_norm(d) for d in dists.get(module, [module])}
        if not owners & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not in [project] dependencies: {missing}"
    # the two the issue was about: the digits data and analogeq.testing
    assert {"scikit-learn", "hypothesis"} <= declared


def test_wheel_builds_without_warnings_and_carries_the_data(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    for bad in ("SetuptoolsDeprecationWarning", "BuildBackendWarning", "is absent from the",
                "License classifiers are deprecated", "`project.license` as a TOML table"):
        assert bad not in log, bad
    (wheel,) = tmp_path.glob("analogeq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("analogeq/data/digits.pt", "analogeq/py.typed", "analogeq/integrators/settle.py",
                   "analogeq/circuits/devices.py", "analogeq/commands/_options.py",
                   "analogeq/learning/asymep.py"):
        assert needed in names, needed
    assert not any(n.startswith(("integrators/", "circuits/", "tests/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert "Requires-Dist: scikit-learn" in meta


def test_nothing_cites_the_internal_notes():
    """The physics and design notes users need are in docs/; nothing points elsewhere."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    pattern = re.compile(r"\b(DOMAIN|DESIGN|STYLE)\.md\b")
    offenders = [f for f in tracked if f.endswith((".py", ".md", ".toml", ".txt", ".cfg"))
                 and pattern.search((ROOT / f).read_text(errors="replace"))]
    assert offenders == []


def test_cited_docs_sections_exist():
    """Every `docs/<file>.md section N` cited in the sources names a file and a section that
    exist."""
    sections: dict[str, set[str]] = {}
    for doc in (ROOT / "docs").glob("*.md"):
        sections[f"docs/{doc.name}"] = set(re.findall(r"(?m)^## (\d+)\.", doc.read_text()))
    cited = re.compile(r"(docs/\w+\.md)(?:,? (?:section|sections)? ?(\d+)"
                       r"(?:(?:, | and |-)(\d+))*)?")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    bad = []
    for f in tracked:
        if not f.endswith((".py", ".md", ".toml")):
            continue
        text = " ".join((ROOT / f).read_text(errors="replace").split())
        for m in cited.finditer(text):
            doc = m.group(1)
            if doc not in sections:
                bad.append((f, doc))
                continue
            for number in re.findall(r"\d+", m.group(0).split(".md", 1)[1]):
                if sections[doc] and number not in sections[doc]:
                    bad.append((f, f"{doc} section {number}"))
    assert not bad, bad
