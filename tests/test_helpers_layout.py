"""The tests' own layout: shared helpers are imported from the package ``tests._kit``, never as top-level modules.

A helper imported by its bare name (``from batch_testkit import ...``) works only while pytest happens to put its
folder on ``sys.path``; a conftest that edits ``sys.path`` hides the same dependency. Both are refused here.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: The e2e suite's DAG bundle: Airflow parses and runs these files with their own folder as the import root, where
#: ``tests._kit`` is not importable; they share code as sibling modules of the bundle, which is what a bundle allows.
DAG_BUNDLE = TESTS / "e2e" / "dags"
#: Every module name a file under tests/ could be imported by if its folder were on ``sys.path``.
LOCAL_NAMES = {path.stem for path in TESTS.rglob("*.py") if path.stem != "__init__"}


def bare_local_imports(path: Path) -> list[str]:
    """``module (line n)`` for each import of a file under tests/ by its bare name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [f"{name} (line {node.lineno})" for name in names if name.split(".")[0] in LOCAL_NAMES]
    return found


def test_no_test_file_imports_a_helper_or_another_test_by_its_bare_name() -> None:
    offenders = {
        str(path.relative_to(TESTS)): imports
        for path in sorted(TESTS.rglob("*.py"))
        if DAG_BUNDLE not in path.parents and (imports := bare_local_imports(path))
    }
    assert offenders == {}, "import these from tests._kit instead (move the helper there): " + repr(offenders)


def test_no_conftest_edits_sys_path() -> None:
    editing = [str(path.relative_to(TESTS)) for path in TESTS.rglob("conftest.py") if "sys.path" in path.read_text()]
    assert editing == []


def test_the_check_sees_a_bare_import(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text("import json\nfrom batches import ENDPOINT\nfrom tests._kit.batches import MODEL\n")
    assert bare_local_imports(sample) == ["batches (line 2)"]
