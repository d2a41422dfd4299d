"""Every code block of README.md and docs/ runs: what a user pastes is what the tests ran.

* ``python``: a block that builds a DAG is loaded by Airflow's ``DagBag`` (no import errors, at least one DAG);
  any other block is executed in an empty temporary folder.
* ``bash``: parses (``bash -n``); each ``make`` line names targets of the Makefile; each ``AIRFLOW_CONN_*`` value
  is a connection the hook accepts, whose extras the Connections page documents.
* No other language: a block nobody runs would drift unnoticed.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.hooks._settings import ConnectionSettings
from tests._kit.readme_blocks import DOCS, REPO, Block, blocks, markdown_files

try:  # Airflow 3.1+
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # pragma: no cover - older layout
    from airflow.models import DagBag  # type: ignore[no-redef]

pytestmark = pytest.mark.unit

ALL_BLOCKS = [block for path in markdown_files() for block in blocks(path)]
LANGUAGES = {"python", "bash"}


def _ids(block: Block) -> str:
    return block.where


def _of(language: str) -> list[Block]:
    return [block for block in ALL_BLOCKS if block.language == language]


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, flags=re.MULTILINE))


def builds_a_dag(code: str) -> bool:
    return "DAG(" in code or "@dag" in code


def test_blocks_are_found() -> None:
    assert len(_of("python")) >= 10 and len(_of("bash")) >= 10
    pages_with_code = {block.path for block in ALL_BLOCKS}
    for page in ("operators/create.md", "operators/sensor.md", "operators/download.md", "operators/cancel.md"):
        assert DOCS / page in pages_with_code, page
    assert DOCS / "operators" / "job.md" in pages_with_code


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=_ids)
def test_every_block_is_in_a_language_the_tests_run(block: Block) -> None:
    assert block.language in LANGUAGES, f"{block.where}: a ```{block.language} block is run by no test"


@pytest.mark.parametrize("block", [b for b in _of("python") if builds_a_dag(b.code)], ids=_ids)
def test_a_dag_block_builds_a_dag(block: Block, tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(block.code)
    kwargs: dict[str, Any] = {"dag_folder": str(tmp_path), "safe_mode": False}
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:  # older DagBag
        kwargs["include_examples"] = False
    dagbag = DagBag(**kwargs)
    assert dagbag.import_errors == {}, f"{block.where}: {dagbag.import_errors}"
    assert dagbag.dag_ids, f"{block.where}: no DAG built"
    for dag_id in dagbag.dag_ids:
        assert dagbag.dags[dag_id].task_ids, f"{block.where}: DAG {dag_id} has no task"


@pytest.mark.parametrize("block", [b for b in _of("python") if not builds_a_dag(b.code)], ids=_ids)
def test_a_python_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(block.code, block.where, "exec"), {"__name__": "__docs_block__"})


@pytest.mark.parametrize("block", _of("bash"), ids=_ids)
def test_a_bash_block_parses(block: Block) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, "-n"], input=block.code, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{block.where}: {done.stderr}"


@pytest.mark.parametrize("block", _of("bash"), ids=_ids)
def test_make_lines_name_real_targets(block: Block) -> None:
    targets = make_targets()
    for line in block.code.splitlines():
        if line.split()[:1] != ["make"]:
            continue  # other lines may be parts of a multi-line quoted string
        words = shlex.split(line, comments=True)
        named = [word for word in words[1:] if "=" not in word and not word.startswith("-")]
        assert named, f"{block.where}: {line!r} names no target"
        assert set(named) <= targets, f"{block.where}: {line!r}: no such target in the Makefile"


CONNECTION_BLOCKS = [b for b in _of("bash") if "AIRFLOW_CONN_" in b.code]


@pytest.mark.parametrize("block", CONNECTION_BLOCKS, ids=_ids)
def test_connection_examples_are_valid_connections(block: Block) -> None:
    documented = (DOCS / "connections.md").read_text()
    found = 0
    for word in shlex.split(block.code, comments=True):
        name, _, value = word.partition("=")
        if not re.fullmatch(r"AIRFLOW_CONN_[A-Z0-9_]+", name):
            continue
        found += 1
        conn = json.loads(value)
        assert conn["conn_type"] == "openai_batch", block.where
        extra = conn.get("extra", {})
        ConnectionSettings.from_connection_fields(
            name.removeprefix("AIRFLOW_CONN_").lower(),
            host=conn.get("host"),
            password=conn.get("password"),
            extra=extra,
        )
        undocumented = [key for key in extra if f"`{key}`" not in documented]
        assert undocumented == [], f"{block.where}: extras not on the Connections page: {undocumented}"
    assert found, block.where


def test_the_make_target_check_sees_a_wrong_target() -> None:
    assert {"demo", "test", "bench", "emulator", "wheel", "mutate"} <= make_targets()
    assert "tset" not in make_targets()
