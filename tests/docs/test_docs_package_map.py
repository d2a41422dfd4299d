"""The package map of docs/contributing.md is true to the tree: every path it names exists, every module is named."""

from __future__ import annotations

import re

import pytest

from tests._kit.readme_blocks import DOCS, REPO, section

pytestmark = pytest.mark.unit

PACKAGE = REPO / "airflow_provider_openai_batch"


def package_map() -> list[tuple[list[str], str]]:
    """(the paths of the first column, the text of the second) for each row of the table."""
    rows = []
    for line in section("Package map", DOCS / "contributing.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 2:
            continue
        rows.append((re.findall(r"`([^`]+)`", cells[0]), "|".join(cells[1:])))
    return rows


def test_every_path_in_the_map_exists() -> None:
    named = [path for paths, _ in package_map() for path in paths]
    assert len(named) > 30
    assert [path for path in named if not (PACKAGE / path).exists()] == []


def test_every_module_is_in_the_map() -> None:
    covered: set[str] = set()
    for paths, holds in package_map():
        for path in paths:
            if path.endswith("/"):  # a folder: its modules are named in the second column
                covered |= {path + name for name in re.findall(r"`(\w+\.py)`", holds)}
            else:
                covered.add(path)
    modules = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
    assert sorted(modules - covered) == []
