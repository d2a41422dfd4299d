"""A new user's first hour, for real: the README's install route, its quick start, and the UI in a browser.

The provider is installed the way the README says (``make wheel``, then the wheel into a fresh virtualenv);
that virtualenv runs a real Airflow (api-server, scheduler, dag-processor, triggerer) whose dags folder holds
the example DAGs and the README's quick-start DAG, extracted from README.md. Headless Chromium (Debian's
``chromium``, driven by Playwright) logs in, checks the **OpenAI Batch** connection form, creates
``openai_default`` through it, and follows a deferred task's **OpenAI Batch** link. Screenshots go to
``test-artifacts/browser/``. The tests run in file order and share the one Airflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from airflow_provider_openai_batch.get_provider_info import CONN_FIELDS
from tests._kit.e2e_stack import DAGS_FOLDER, EXAMPLE_DAG_IDS, REPO, AirflowStack, free_port, kill_group
from tests._kit.readme_blocks import DOCS, quick_start_commands, quick_start_dag, section

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ARTIFACTS = REPO / "test-artifacts" / "browser"
QUICK_START_DAG_ID = "summarize_tickets"
WAIT_IN_CREATE = "openai_batch_wait_in_create"
UV = REPO / ".tools" / "bin" / "uv"


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{cmd} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _fresh_venv(path: Path, requirement: str, constraints: Path) -> Path:
    """A new virtualenv with ``requirement`` installed (pinned to uv.lock's versions, as CI resolves)."""
    _run([str(UV), "venv", "-q", "--python", sys.executable, str(path)])
    python = path / "bin" / "python"
    _run([str(UV), "pip", "install", "-q", "--python", str(python), requirement, "-c", str(constraints)])
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTEST_", "OPENAI_", "VIRTUAL_ENV", "UV_PROJECT"))
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", **extra)
    return env


@pytest.fixture(scope="module")
def constraints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("constraints") / "constraints.txt"
    _run(
        [str(UV), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-q", "-o", str(path)], cwd=REPO
    )
    return path


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory: pytest.TempPathFactory, constraints: Path) -> Path:
    """README, Install: ``make wheel``, then the wheel into an environment of its own."""
    _run(["make", "--no-print-directory", "wheel"], cwd=REPO, env=_clean_env())
    from importlib.metadata import version

    wheel = REPO / "dist" / f"airflow_provider_openai_batch-{version('airflow-provider-openai-batch')}-py3-none-any.whl"
    assert wheel.is_file(), sorted(p.name for p in (REPO / "dist").iterdir())
    assert f"pip install dist/{wheel.name}" in section("Install")
    return _fresh_venv(tmp_path_factory.mktemp("venv") / "wheel", str(wheel), constraints)


def test_the_wheel_and_the_folder_install_the_provider(
    wheel_python: Path, tmp_path_factory: pytest.TempPathFactory, constraints: Path
) -> None:
    folder_python = _fresh_venv(tmp_path_factory.mktemp("venv") / "folder", str(REPO), constraints)
    assert "pip install ./airflow-provider-openai-batch" in section("Install")
    probe = (
        "import json, airflow_provider_openai_batch as m, importlib.metadata as md;"
        "print(json.dumps([m.__file__, [e.value for e in md.entry_points(group='apache_airflow_provider')]]))"
    )
    for python in (wheel_python, folder_python):
        out = _run([str(python), "-c", probe], cwd=python.parent, env=_clean_env()).stdout
        module_file, entry_points = json.loads(out)
        # Installed into that environment (not imported from the clone), and registered with Airflow.
        assert module_file.startswith(str(python.parent.parent)), module_file
        assert "airflow_provider_openai_batch.get_provider_info:get_provider_info" in entry_points


def _states(db: Path, sql: str) -> list[Any]:
    """Rows of one column from Airflow's SQLite database, read-only (Airflow keeps writing it)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            return [row[0] for row in conn.execute(sql, (QUICK_START_DAG_ID,))]
        except sqlite3.OperationalError:  # tables not created yet, or a write in progress
            return []


def test_readme_quick_start_runs_as_pasted_in_airflow_standalone(wheel_python: Path, tmp_path: Path) -> None:
    """README, Quick start: the DAG file and the commands, in a fresh ``airflow standalone``, against the emulator.

    The ``wait`` task must be seen deferred (the emulator's pace makes the batch take 30 s), and the run must
    end in success with the results in the log of ``use``.
    """
    text = section("Quick start")
    emulator_line, export, standalone, unpause, trigger = quick_start_commands()
    assert emulator_line.startswith("python -m airflow_provider_openai_batch.emulator --phase-seconds ")
    assert emulator_line.endswith("&")
    assert export.startswith("export AIRFLOW_CONN_OPENAI_DEFAULT=")
    assert (standalone, unpause, trigger) == (
        "airflow standalone",
        f"airflow dags unpause {QUICK_START_DAG_ID}",
        f"airflow dags trigger {QUICK_START_DAG_ID}",
    )
    # The README's ~/airflow, under a HOME of the test's own.
    home = tmp_path / "home"
    assert f"~/airflow/dags/{QUICK_START_DAG_ID}.py" in text
    dags = home / "airflow" / "dags"
    dags.mkdir(parents=True)
    (dags / f"{QUICK_START_DAG_ID}.py").write_text(quick_start_dag())
    # The README's ports (8787, 8080) may be taken on a shared machine: the same commands on free ports.
    port, api_port = free_port(), free_port()
    name, _, value = shlex.split(export.removeprefix("export "))[0].partition("=")
    env = _clean_env(
        HOME=str(home),
        PATH=f"{wheel_python.parent}{os.pathsep}{os.environ['PATH']}",  # python and airflow: the wheel's environment
        TMPDIR=str(tmp_path),  # the DAG's WORK_DIR is under the temp folder
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__BASE_URL=f"http://localhost:{api_port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://localhost:{api_port}/execution/",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        **{name: value.replace(":8787/", f":{port}/")},
    )
    emulator = subprocess.Popen(
        [*shlex.split(emulator_line.rstrip("& ")), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    airflow_log = tmp_path / "standalone.log"
    db = home / "airflow" / "airflow.db"
    seen: set[str] = set()
    with airflow_log.open("wb") as log:
        airflow = subprocess.Popen(
            shlex.split(standalone), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
        )
        try:
            assert emulator.stdout is not None
            assert f"listening on http://127.0.0.1:{port}/v1" in emulator.stdout.readline().decode()
            started = time.monotonic()
            # The README's "once the UI lists summarize_tickets": before the dag-processor has parsed the file,
            # unpause finds nothing ("No paused DAGs were found") and exits 0 all the same.
            while not _states(db, "SELECT is_paused FROM dag WHERE dag_id = ?"):
                assert airflow.poll() is None, airflow_log.read_text()[-4000:]
                assert time.monotonic() - started < 300, airflow_log.read_text()[-4000:]
                time.sleep(1)
            _run(shlex.split(unpause), env=env, cwd=tmp_path, timeout=120)
            assert _states(db, "SELECT is_paused FROM dag WHERE dag_id = ?") == [0]
            _run(shlex.split(trigger), env=env, cwd=tmp_path, timeout=120)
            runs: list[str] = []
            while not (runs := _states(db, "SELECT state FROM dag_run WHERE dag_id = ?")) or runs[0] not in (
                "success",
                "failed",
            ):
                seen.update(_states(db, "SELECT state FROM task_instance WHERE dag_id = ? AND task_id = 'wait'"))
                assert time.monotonic() - started < 480, (runs, seen, airflow_log.read_text()[-4000:])
                time.sleep(0.5)
            print(f"airflow standalone, quick start: {time.monotonic() - started:.1f}s; wait went through {seen}")
        finally:
            kill_group(airflow, grace=20.0)
            kill_group(emulator, grace=5.0)
    assert runs == ["success"], airflow_log.read_text()[-4000:]
    assert "deferred" in seen, seen
    logs = [path for path in (home / "airflow" / "logs").rglob("*") if "task_id=use" in str(path) and path.is_file()]
    output = "".join(path.read_text(errors="replace") for path in logs)
    assert re.search(r"t-1 echo:[0-9a-f]{12} Summarize: printer on fire", output), output[-4000:]
    assert re.search(r"t-2 echo:[0-9a-f]{12} Summarize: VPN drops hourly", output)


# -- the UI, in a browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui_airflow(wheel_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """Airflow from the wheel's environment, with a login, no ``openai_default`` yet, and connection tests on."""
    home = tmp_path_factory.mktemp("ui-airflow")
    dags = home / "dags"
    dags.mkdir()
    for example in DAGS_FOLDER.glob("openai_batch_*.py"):
        shutil.copy(example, dags)
    (dags / "summarize_tickets.py").write_text(quick_start_dag())
    stack = AirflowStack(
        home=home,
        python=str(wheel_python),
        dags_folder=dags,
        expected_dag_ids=(*EXAMPLE_DAG_IDS, QUICK_START_DAG_ID),
        env_connection=False,
        login=True,
        extra_env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled", "TMPDIR": str(home)},
    )
    started = time.monotonic()
    try:
        stack.start(ready_timeout=240)
        print(f"\nAirflow (from the wheel) ready in {time.monotonic() - started:.1f}s at {stack.api_url}")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def page(ui_airflow: AirflowStack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed (.ci/run installs it: apt-get install chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1600})
            tab.set_default_timeout(30_000)
            yield tab
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_login(ui_airflow: AirflowStack, page: Any) -> None:
    page.goto(f"{ui_airflow.api_url}/", wait_until="networkidle")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ui_airflow.admin_password)
    shot(page, "01-login")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.get_by_role("link", name="Dags").first.wait_for()


def test_connection_form_fields_labels_and_defaults(ui_airflow: AirflowStack, page: Any) -> None:
    page.goto(f"{ui_airflow.api_url}/connections", wait_until="networkidle")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").fill("OpenAI Batch")
    page.get_by_role("option", name="OpenAI Batch", exact=True).click()
    dialog.get_by_text("Base URL", exact=True).wait_for()
    assert dialog.get_by_text("API key", exact=True).is_visible()
    assert dialog.locator("input[name=host]").get_attribute("placeholder") == "https://api.openai.com/v1"
    assert dialog.locator("input[name=password]").get_attribute("type") == "password"
    for hidden in ("schema", "login", "port"):  # hidden-fields: not rendered at all
        assert dialog.locator(f"input[name={hidden}]").count() == 0, hidden
    shot(page, "02-connection-form-standard")

    dialog.locator("input[name=connection_id]").fill("openai_default")
    dialog.locator("input[name=host]").fill(ui_airflow.emulator_url)
    dialog.locator("input[name=password]").fill(ui_airflow.api_key)

    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for field in CONN_FIELDS.values():
        assert dialog.get_by_text(field["label"], exact=True).is_visible(), field["label"]
        assert dialog.get_by_text(field["description"], exact=True).is_visible(), field["description"]
    assert dialog.locator("input[name=element_api_type]").input_value() == "openai"
    numbers = {"timeout": "60", "connect_timeout": "10", "max_retries": "5", "backoff_factor": "0.5"}
    for key, default in numbers.items():
        input_id = dialog.locator(f"[id='number-input:element_{key}:inc']").get_attribute("aria-controls")
        assert dialog.locator(f"[id='{input_id}']").input_value() == default, key
    assert dialog.locator("input[name=element_verify_ssl]").is_checked()
    # The emulator has no console of its own: link to its batch URL through the Console URL template.
    dialog.locator("input[name=element_console_url]").fill(f"{ui_airflow.emulator_url}/batches/{{batch_id}}")
    shot(page, "03-connection-form-extra")

    dialog.get_by_role("button", name="Save").click()
    page.get_by_role("cell", name="openai_default", exact=True).wait_for()
    shot(page, "04-connection-list")
    stored = ui_airflow.api("GET", "/api/v2/connections/openai_default")
    assert stored["conn_type"] == "openai_batch"
    assert stored["host"] == ui_airflow.emulator_url
    assert stored["port"] is None and stored["login"] in (None, "") and stored["schema"] in (None, "")
    extra = json.loads(stored["extra"])
    assert extra["console_url"] == f"{ui_airflow.emulator_url}/batches/{{batch_id}}"
    assert (extra["api_type"], extra["timeout"], extra["max_retries"], extra["verify_ssl"]) == ("openai", 60, 5, True)


def test_the_test_button_fails_upstream_and_the_alternatives_work(ui_airflow: AirflowStack, page: Any) -> None:
    """docs/connections.md: the UI's Test answers "Bad Request" (apache/airflow#73298); the CLI and REST work."""
    page.goto(f"{ui_airflow.api_url}/connections", wait_until="networkidle")
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        page.get_by_role("button", name="Test Connection").click()
    response = answer.value
    sent = json.loads(response.request.post_data or "{}")
    assert sent["port"] == 0 and sent["password"] == "***"  # what the UI sends for a form without a port
    assert response.status == 400, response.text()
    assert "differs from the stored connection" in response.json()["detail"]
    page.get_by_text("Bad Request").first.wait_for()
    shot(page, "05-test-button-bad-request")
    readme = section("Testing the connection", DOCS / "connections.md")
    assert "apache/airflow#73298" in readme and "Bad Request" in readme

    # The alternatives the docs give.
    assert "airflow connections test openai_default" in readme
    cli = _run(
        [ui_airflow.python, "-m", "airflow", "connections", "test", "openai_default"],
        env=ui_airflow.env,
        cwd=ui_airflow.home,
        timeout=180,
    )
    assert "Connection success!" in cli.stdout, cli.stdout
    body = {"connection_id": "openai_default", "conn_type": "openai_batch"}
    assert json.dumps(body) in readme
    result = ui_airflow.api("POST", "/api/v2/connections/test", json=body)
    assert result["status"] is True, result
    assert "can list batches" in result["message"]


def test_quick_start_dag_runs_with_the_connection_made_in_the_form(ui_airflow: AirflowStack) -> None:
    run_id = ui_airflow.trigger(QUICK_START_DAG_ID)
    state = ui_airflow.wait_for_run(QUICK_START_DAG_ID, run_id, timeout=240)
    assert state == "success", {
        ti["task_id"]: ti["state"] for ti in ui_airflow.task_instances(QUICK_START_DAG_ID, run_id)
    }
    log = ui_airflow.task_log(QUICK_START_DAG_ID, run_id, "use")
    assert re.search(r"t-1 echo:[0-9a-f]{12} Summarize: printer on fire", log), log[-3000:]
    batches = ui_airflow.emulator_batches()
    assert any(b["metadata"] and b["status"] == "completed" for b in batches)


def test_deferred_create_task_shows_the_openai_batch_link(ui_airflow: AirflowStack, page: Any) -> None:
    # "hold": the emulator keeps the batch in_progress, so the task stays deferred while we look.
    run_id = ui_airflow.trigger(WAIT_IN_CREATE, {"batch_metadata": {"emulator": "hold"}})
    ui_airflow.wait_for_ti_state(WAIT_IN_CREATE, run_id, "create_and_wait", {"deferred"}, timeout=180)
    batch_id = ui_airflow.xcom(WAIT_IN_CREATE, run_id, "create_and_wait", key="batch_id")
    expected = f"{ui_airflow.emulator_url}/batches/{batch_id}"
    links_path = f"/api/v2/dags/{WAIT_IN_CREATE}/dagRuns/{run_id}/taskInstances/create_and_wait/links"
    deadline = time.monotonic() + 60
    while ui_airflow.api("GET", links_path)["extra_links"].get("OpenAI Batch") != expected:
        # Airflow stores the link right after the task reports the deferral.
        assert time.monotonic() < deadline, ui_airflow.api("GET", links_path)
        time.sleep(0.5)

    details = f"{ui_airflow.api_url}/dags/{WAIT_IN_CREATE}/runs/{quote(run_id, safe='')}/tasks/create_and_wait/details"
    page.goto(details, wait_until="networkidle")
    link = page.get_by_role("link", name="OpenAI Batch", exact=True)
    link.wait_for()
    assert link.get_attribute("href") == expected
    assert page.get_by_text("Deferred").first.is_visible()
    shot(page, "06-deferred-task-openai-batch-link")
    # The link leads to the batch (the emulator answers it with the API key; a console would show a page).
    http = requests.Session()
    http.trust_env = False  # loopback only
    resp = http.get(expected, headers={"Authorization": f"Bearer {ui_airflow.api_key}"}, timeout=10)
    assert resp.json()["id"] == batch_id and resp.json()["status"] == "in_progress"
    assert ui_airflow.task_instance(WAIT_IN_CREATE, run_id, "create_and_wait")["state"] == "deferred"
