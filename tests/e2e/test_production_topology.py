"""The provider in Airflow's production topology: PostgreSQL, CeleryExecutor on Redis, two Celery workers, two
triggerers, the api-server, scheduler and dag-processor (``tests/_kit/production_stack.py``), one stack for the
module. Each scenario asserts what the emulator was asked (its request log) besides what Airflow reports:

(a) a job's worker SIGKILLed during the merge: the retry runs on the other worker; every line answered once,
    no batch created twice;
(b) a triggerer SIGKILLed while ``SENSORS`` deferred sensors and a job wait: the other triggerer takes every
    trigger over, no batch is cancelled, all finish;
(c) a deferred job marked failed through the REST API: its shard batches are cancelled (by the triggerer);
(d) the API key is in no log file the stack wrote, no XCom and no rendered field (nor any database row), and
    nothing the stack started listens beyond loopback.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.hooks.validation import IDEMPOTENCY_METADATA_KEY
from tests._kit.production_stack import (
    TRIGGERERS,
    WORKERS,
    ProductionStack,
    StackError,
    batch_creates,
    cancelled_batches,
    content_downloads,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.production, pytest.mark.timeout(480)]

DAGS = Path(__file__).parent / "dags"
JOB, SENSORS = "openai_batch_prod_job", "openai_batch_prod_sensors"
TASK = "run_job"
#: Lines per job shard (the DAG's max_requests_per_batch).
PER_SHARD = 10
#: The emulator's phase: a batch runs 3 phases (``slow``: 60 phases, the sensors' and (b)'s job's batches).
PHASE = 2.5
#: How long a ``slow`` batch runs.
SLOW_SECONDS = 60 * PHASE
#: Deferred sensors in (b): each starts on a worker twice (defer, then resume), about 1 s of a core each on a
#: loaded 2-core machine; all must have deferred before their batches end (SLOW_SECONDS after they are made).
SENSORS_COUNT = int(os.environ.get("PRODUCTION_SENSORS", "100"))
#: Every result download takes this long: the merge of (a) lasts long enough to be killed in.
DOWNLOAD_LATENCY = 1.5


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionStack]:
    stack = ProductionStack(
        home=tmp_path_factory.mktemp("airflow-home-production"),
        dags_folder=DAGS,
        expected_dag_ids=(JOB, SENSORS),
        phase_seconds=PHASE,
        poll_interval=1.0,
        emulator_args=("--fault", f"GET /v1/files/{{id}}/content:latency={DOWNLOAD_LATENCY}:times=forever"),
    )
    started = time.monotonic()
    with stack.running():
        print(f"\nproduction stack ready in {time.monotonic() - started:.1f}s (home {stack.home})")
        yield stack


@pytest.fixture(autouse=True)
def full_topology(prod: ProductionStack) -> Iterator[None]:
    """Every scenario starts with both workers and both triggerers running (one may have killed one)."""
    for key in (*WORKERS, *TRIGGERERS):
        prod.revive(key)
    started = time.monotonic()
    yield
    print(f"\nscenario wall time {time.monotonic() - started:.1f}s")


# -- reading back ------------------------------------------------------------------------------------


def leg_batches(prod: ProductionStack, leg: str) -> list[dict[str, Any]]:
    """The emulator's batches whose metadata carries ``leg`` (every batch of a scenario carries its name)."""
    return [b for b in prod.emulator_batches() if (b.get("metadata") or {}).get("leg") == leg]


def batch_ids_of(prod: ProductionStack, run_id: str) -> list[str]:
    try:
        return [str(b) for b in prod.xcom(JOB, run_id, TASK, key="batch_ids")]
    except RuntimeError:  # not pushed yet
        return []


def worker_of(prod: ProductionStack, run_id: str, try_number: int) -> list[str]:
    """The workers (keys) that were handed the job task's try ``try_number`` (once per start or resume), in order
    of the hand-over, read from the workers' logs (``Executing workload in Celery: ... try_number=N``)."""
    seen: list[tuple[str, str]] = []
    needle = f"task_id='{TASK}', dag_id='{JOB}', run_id='{run_id}', try_number={try_number},"
    for key in WORKERS:
        for path in sorted(prod.proc_logs_dir.glob(f"{key}*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if "Executing workload in Celery" in line and needle in line:
                    seen.append((line[:27], key))
    return [key for _stamp, key in sorted(seen)]


def wait_for_batch_ids(prod: ProductionStack, run_id: str, count: int, timeout: float = 120.0) -> list[str]:
    ids: list[str] = []

    def pushed() -> bool:
        ids[:] = batch_ids_of(prod, run_id)
        return len(ids) >= count

    wait_until(f"{count} batch ids of {run_id}", pushed, timeout=timeout, logs=prod.diagnostics, interval=0.5)
    return ids


def assert_no_duplicates(batches: list[dict[str, Any]]) -> None:
    per_key = collections.Counter(b["metadata"].get(IDEMPOTENCY_METADATA_KEY) for b in batches)
    assert all(per_key.values()) and max(per_key.values()) == 1, f"a batch was created twice: {per_key}"


def merged_ids(prod: ProductionStack, run_id: str) -> tuple[list[str], list[str]]:
    """Custom ids of the job's merged output and error files, in file order."""
    manifest = prod.xcom(JOB, run_id, TASK, key="manifest")
    output = Path(manifest["output"]["path"]).read_text().splitlines()
    error = manifest.get("error") or {}
    errors = Path(error["path"]).read_text().splitlines() if error.get("path") else []
    return [json.loads(x)["custom_id"] for x in output], [json.loads(x)["custom_id"] for x in errors]


def task_states(prod: ProductionStack, dag_id: str, run_id: str) -> collections.Counter[str]:
    rows = prod.sql("SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
    return collections.Counter(str(r[0]) for r in rows)


# -- (a) a worker killed during the merge ------------------------------------------------------------


def test_a_worker_killed_during_the_merge_retries_on_the_other_worker(prod: ProductionStack) -> None:
    shards, lines = 6, 60
    run_id = prod.trigger(JOB, {"requests": lines, "batch_metadata": {"leg": "merge-kill"}})
    ids = wait_for_batch_ids(prod, run_id, shards)
    creates_before = batch_creates(prod.requests())

    outputs: set[str] = set()

    def all_completed() -> bool:
        batches = [prod.emulator_get(f"/batches/{b}") for b in ids]
        outputs.update(b["output_file_id"] for b in batches if b["status"] == "completed")
        return len(outputs) == shards

    wait_until("the shard batches completed", all_completed, timeout=120, logs=prod.diagnostics, interval=0.5)

    # The resumed try downloads the shards' results one by one (each DOWNLOAD_LATENCY s): kill its worker as the
    # first download is answered, with the merge under way.
    def merging() -> bool:
        return any(f in outputs for f in content_downloads(prod.requests()))

    wait_until("the merge's first download", merging, timeout=120, logs=prod.diagnostics, interval=0.1)
    victim = worker_of(prod, run_id, 1)[-1]
    killed = prod.sigkill(victim)
    downloaded = sum(1 for f in content_downloads(prod.requests()) if f in outputs)
    state_at_kill = prod.task_instance(JOB, run_id, TASK)["state"]
    print(f"\nkilled {victim} ({killed} processes) after {downloaded} of {shards} downloads; task was {state_at_kill}")
    assert downloaded < shards and state_at_kill == "running", "the kill did not land during the merge"

    assert prod.wait_for_run(JOB, run_id, timeout=240, interval=1.0) == "success", prod.diagnostics()
    ti = prod.task_instance(JOB, run_id, TASK)
    retried_on = worker_of(prod, run_id, 2)
    print(f"try {ti['try_number']} ran on {retried_on}")
    assert ti["try_number"] == 2 and retried_on and victim not in retried_on

    requests = prod.requests()
    batches = leg_batches(prod, "merge-kill")
    assert sorted(b["id"] for b in batches) == sorted(ids)
    assert_no_duplicates(batches)
    assert batch_creates(requests) == creates_before, "the retry created batches"
    assert sum(b["request_counts"]["total"] for b in batches) == lines  # every line sent once
    assert {b["status"] for b in batches} == {"completed"} and not set(cancelled_batches(requests)) & set(ids)
    answered, failed = merged_ids(prod, run_id)
    assert answered == [f"t{i:04d}" for i in range(lines)] and failed == []  # every line answered, once


# -- (b) a triggerer killed while sensors and a job wait ---------------------------------------------


def create_batches(prod: ProductionStack, count: int, metadata: dict[str, str]) -> list[str]:
    """``count`` one-line batches created straight on the emulator (as another system would)."""
    ids = []
    headers = {"Authorization": f"Bearer {prod.api_key}"}
    for i in range(count):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"sensor {i}"}]}
        line = {"custom_id": f"s{i:04d}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        upload = prod._http.post(
            f"{prod.emulator_url}/files",
            headers=headers,
            files={"file": ("sensor.jsonl", (json.dumps(line) + "\n").encode())},
            data={"purpose": "batch"},
            timeout=30,
        )
        upload.raise_for_status()
        create = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        made = prod._http.post(
            f"{prod.emulator_url}/batches", headers=headers, json={**create, "metadata": metadata}, timeout=30
        )
        made.raise_for_status()
        ids.append(str(made.json()["id"]))
    return ids


def triggers_of(prod: ProductionStack, run_ids: list[str]) -> list[tuple[str, int, int | None]]:
    """``(task_id, map_index, triggerer job id)`` of every deferred task instance of the runs, with its trigger."""
    rows = prod.sql(
        "SELECT ti.task_id, ti.map_index, t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id"
        " WHERE ti.run_id = ANY(%s) AND ti.state = 'deferred'",
        (run_ids,),
    )
    return [(str(r[0]), int(r[1]), r[2]) for r in rows]


def test_b_a_triggerer_killed_mid_wait_hands_every_trigger_over(prod: ProductionStack) -> None:
    count, job_lines = SENSORS_COUNT, 30
    sensor_ids = create_batches(prod, count, {"leg": "handover", "emulator": "slow"})
    created = time.monotonic()
    sensors_run = prod.trigger(SENSORS, {"batch_ids": sensor_ids})
    job_run = prod.trigger(JOB, {"requests": job_lines, "batch_metadata": {"leg": "handover-job", "emulator": "slow"}})
    runs = [sensors_run, job_run]

    held: list[tuple[str, int, int | None]] = []

    def all_held() -> bool:
        held[:] = triggers_of(prod, runs)
        if len(held) == count + 1 and all(t[2] is not None for t in held):
            return True
        if time.monotonic() - created > SLOW_SECONDS - 10:
            raise StackError(
                f"{len(held)} of {count + 1} triggers held {SLOW_SECONDS}s after the batches were made, as they end:"
                f" the machine starts sensors too slowly for PRODUCTION_SENSORS={count}\n{prod.diagnostics()}"
            )
        return False

    wait_until(
        f"{count} sensors and the job deferred, each trigger running in a triggerer",
        all_held,
        timeout=SLOW_SECONDS,
        logs=lambda: f"{task_states(prod, SENSORS, sensors_run)} {len(held)} held\n{prod.diagnostics()}",
        interval=1.0,
    )
    ramp = time.monotonic() - created
    job_triggerer = next(t[2] for t in held if t[0] == TASK)
    victim = prod.triggerer_key(job_triggerer)
    assert victim is not None, f"triggerer job {job_triggerer} is none of {prod.triggerer_jobs}"
    survivor = next(k for k in TRIGGERERS if k != victim)
    moved = [t for t in held if t[2] == job_triggerer]
    job_ids = wait_for_batch_ids(prod, job_run, job_lines // PER_SHARD)
    leg_ids = set(sensor_ids) | set(job_ids)
    running = [b["id"] for b in prod.emulator_batches() if b["id"] in leg_ids and b["status"] != "completed"]
    assert running, "every batch had ended before the kill: nothing to hand over"

    prod.sigkill(victim)
    killed_at = time.monotonic()
    print(
        f"\n{count} sensors + 1 job deferred {ramp:.0f}s after the batches were made; killed {victim} holding "
        f"{len(moved)} triggers, {len(running)} of {len(leg_ids)} batches running"
    )

    def taken_over() -> bool:
        # Every trigger still waiting is on the survivor (one that fired since could only have fired there).
        return all(t[2] == prod.triggerer_jobs[survivor] for t in triggers_of(prod, runs))

    wait_until(f"{survivor} took every trigger over", taken_over, timeout=90, logs=prod.diagnostics, interval=1.0)
    print(f"taken over by {survivor} {time.monotonic() - killed_at:.0f}s after the kill")

    for dag_id, run_id in ((SENSORS, sensors_run), (JOB, job_run)):
        state = prod.wait_for_run(dag_id, run_id, timeout=300, interval=2.0)
        assert state == "success", f"{dag_id}: {task_states(prod, dag_id, run_id)}\n{prod.diagnostics()}"
    assert task_states(prod, SENSORS, sensors_run) == {"success": count + 1}
    requests = prod.requests()
    assert not set(cancelled_batches(requests)) & leg_ids, "a batch was cancelled"
    batches = [b for b in prod.emulator_batches() if b["id"] in leg_ids]
    assert len(batches) == len(leg_ids) and {b["status"] for b in batches} == {"completed"}
    job_batches = leg_batches(prod, "handover-job")
    assert sorted(b["id"] for b in job_batches) == sorted(job_ids)
    assert_no_duplicates(job_batches)
    answered, failed = merged_ids(prod, job_run)
    assert answered == [f"t{i:04d}" for i in range(job_lines)] and failed == []


# -- (c) a deferred job marked failed -----------------------------------------------------------------


def test_c_marking_a_deferred_job_failed_cancels_its_shards(prod: ProductionStack) -> None:
    shards = 3
    run_id = prod.trigger(
        JOB, {"requests": shards * PER_SHARD, "batch_metadata": {"leg": "mark-failed", "emulator": "hold"}}
    )
    prod.wait_for_ti_state(JOB, run_id, TASK, {"deferred"}, timeout=120)
    ids = wait_for_batch_ids(prod, run_id, shards)
    wait_until(
        "the job's trigger running in a triggerer",
        lambda: any(t[0] == TASK and t[2] is not None for t in triggers_of(prod, [run_id])),
        timeout=60,
        logs=prod.diagnostics,
    )
    time.sleep(2 * prod.poll_interval)  # and polling: a trigger not started yet has no on_kill to run
    # (d) while a trigger exists: its kwargs, decrypted as the triggerer reads them, do not hold the key either.
    kwargs = [row[2] for row in prod.trigger_rows()]
    assert any("batch_ids" in k for k in kwargs) and all(prod.api_key not in k for k in kwargs)

    prod.api("PATCH", f"/api/v2/dags/{JOB}/dagRuns/{run_id}/taskInstances/{TASK}", json={"new_state": "failed"})
    marked = time.monotonic()

    def cancelled() -> bool:
        return {prod.emulator_get(f"/batches/{b}")["status"] for b in ids} == {"cancelled"}

    wait_until("every shard batch cancelled", cancelled, timeout=120, logs=prod.diagnostics, interval=0.5)
    cancels = collections.Counter(b for b in cancelled_batches(prod.requests()) if b in ids)
    print(f"\nshards cancelled {time.monotonic() - marked:.1f}s after the mark; cancel requests {dict(cancels)}")
    assert set(cancels) == set(ids)
    assert prod.wait_for_run(JOB, run_id, timeout=60) == "failed"
    assert prod.task_instance(JOB, run_id, TASK)["state"] == "failed"
    assert_no_duplicates(leg_batches(prod, "mark-failed"))


# -- (d) the API key nowhere ----------------------------------------------------------------------------


def pages(prod: ProductionStack, path: str, items: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = prod.api("GET", path, params={"limit": 100, "offset": len(out)})
        out.extend(page[items])
        if not page[items] or len(out) >= page["total_entries"]:
            return out


def test_d_the_api_key_is_nowhere_and_nothing_listens_beyond_loopback(prod: ProductionStack) -> None:
    key = prod.api_key
    files = prod.log_files()
    names = {f.name for f in files}
    for must in ("scheduler.log", "worker-a.log", "triggerer-b.log", "api-server.log", "postgres.log", "emulator.log"):
        assert must in names, f"{must} missing from {sorted(names)[:50]}"
    assert any(".log.trigger." in n for n in names) and any(n.startswith("attempt=") for n in names)
    assert prod.files_containing(key, files) == []

    tis = pages(prod, "/api/v2/dags/~/dagRuns/~/taskInstances", "task_instances")
    assert len(tis) > SENSORS_COUNT and any(ti.get("rendered_fields") for ti in tis)
    assert key not in json.dumps(tis), "a rendered field (or another task-instance field) holds the key"

    entries = pages(prod, "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries", "xcom_entries")

    def value(entry: dict[str, Any]) -> str:
        path = (
            f"/api/v2/dags/{entry['dag_id']}/dagRuns/{entry['run_id']}/taskInstances/{entry['task_id']}"
            f"/xcomEntries/{entry['key']}"
        )
        return json.dumps(prod.api("GET", path, params={"map_index": entry["map_index"], "deserialize": True}))

    with ThreadPoolExecutor(max_workers=4) as pool:
        values = list(pool.map(value, entries))
    print(f"\n{len(files)} log files, {len(tis)} task instances, {len(values)} XComs searched")
    assert len(values) > SENSORS_COUNT and all(key not in v for v in values), "an XCom holds the key"

    # And the stack listens on loopback only: every TCP socket in LISTEN of every process it started.
    *beyond, checked = prod.listening_beyond_loopback()
    assert beyond == [] and checked != "checked 0", beyond

    tables = [r[0] for r in prod.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    hits = [t for t in tables if prod.sql(f'SELECT 1 FROM "{t}" r WHERE strpos(r::text, %s) > 0 LIMIT 1', (key,))]
    assert hits == [], f"database tables holding the key: {hits}"
