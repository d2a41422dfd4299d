"""``make demo DAG=<name>`` runs every example offline against the emulator, and explains what it ran.

Each example runs through the Makefile target itself (as the README tells users to), with no
``AIRFLOW_CONN_*`` or proxy settings from the environment, so the emulator on loopback is all it can reach.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from example_dags.demo import EXAMPLES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _make_demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "PYTEST_", "OPENAI_BATCH_"))
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    return subprocess.run(
        ["make", "--no-print-directory", "demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_examples_are_the_six_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    listed = set(re.findall(r"^\| `(openai_batch_\w+)` \|", readme, flags=re.MULTILINE))
    assert set(EXAMPLES) == listed
    assert len(EXAMPLES) == 6


@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_make_demo_runs_the_example_against_the_emulator(dag_id: str) -> None:
    # Plain `make demo` (the README's first command) runs the chat example.
    done = _make_demo() if dag_id == "openai_batch_chat" else _make_demo(f"DAG={dag_id}")
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert re.search(r"local OpenAI Batch API emulator at http://127\.0\.0\.1:\d+/v1", out)
    assert f"Running example_dags/{dag_id}.py once with dag.test()" in out
    assert re.search(r"DAG run \S+: success", out)
    assert "Task states:" in out and "=failed" not in out
    assert "stand-in answers" in out
    assert f"make demo DAG={dag_id}" in out  # how to run the same DAG against the real API
    if dag_id == "openai_batch_chat":
        assert re.search(r"capital-fr\s+-> echo:[0-9a-f]{12} What is the capital of France", out)
        assert "Requests: 5 total, 5 completed, 0 failed" in out


def test_a_wrong_name_lists_the_choices() -> None:
    done = _make_demo("DAG=openai_batch_nope", timeout=60)
    assert done.returncode != 0
    assert "Unknown example DAG 'openai_batch_nope'" in done.stderr
    for dag_id in EXAMPLES:
        assert f"make demo DAG={dag_id}" in done.stderr
    assert "emulator" not in done.stdout  # nothing was started
