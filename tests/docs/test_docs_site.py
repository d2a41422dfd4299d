"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing page or a docstring
that does not match its signature fails), and the parameters it renders from docstrings are all there."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._kit.readme_blocks import DOCS, REPO

pytestmark = pytest.mark.unit

#: ``::: module.Class`` in a page: mkdocstrings renders that object's docstring there.
_RENDERED = re.compile(r"^::: ([\w.]+)$", flags=re.MULTILINE)


def rendered_objects() -> list[str]:
    return sorted({name for page in DOCS.rglob("*.md") for name in _RENDERED.findall(page.read_text())})


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")  # in the dev group; the Airflow 3.1 / 3.2 legs install no docs tools
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert (tmp_path / "site" / "operators" / "job" / "index.html").is_file()


def test_every_operator_page_renders_its_docstring() -> None:
    names = {name.rsplit(".", 1)[1] for name in rendered_objects()}
    assert {
        "OpenAIBatchCreateOperator",
        "OpenAIBatchSensor",
        "OpenAIBatchDownloadOperator",
        "OpenAIBatchCancelOperator",
        "OpenAIBatchJobOperator",
        "OpenAIBatchTrigger",
        "OpenAIBatchJobTrigger",
        "OpenAIBatchHook",
    } <= names


@pytest.mark.parametrize("dotted", rendered_objects())
def test_docstring_documents_every_parameter_of_the_signature(dotted: str) -> None:
    """Parameters are written once, in the docstring: each one of ``__init__``, and no other."""
    module, _, name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    signature = [
        param
        for param, spec in inspect.signature(cls.__init__).parameters.items()
        if param != "self" and spec.kind not in (spec.VAR_KEYWORD, spec.VAR_POSITIONAL)
    ]
    documented = re.findall(r":param (\w+):", cls.__doc__ or "")
    assert sorted(set(signature) - set(documented)) == [], f"{dotted}: parameters without a :param"
    assert sorted(set(documented) - set(signature)) == [], f"{dotted}: :param for no parameter"


def test_no_docs_page_keeps_a_parameter_table() -> None:
    """A ``| parameter | default |`` table would repeat the docstrings, and drift from them."""
    tables = [
        str(p.relative_to(REPO)) for p in [REPO / "README.md", *DOCS.rglob("*.md")] if "| parameter |" in p.read_text()
    ]
    assert tables == []


def test_the_readme_links_to_files_that_exist() -> None:
    """MkDocs checks the links of docs/; the README, outside it, is checked here."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links into docs/"
    assert [link for link in local if not (REPO / link).exists()] == []
