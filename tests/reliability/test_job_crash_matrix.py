"""The Job operator's crash matrix: at each step boundary the worker dies, and the task is tried again.

A death is a ``BaseException`` (:class:`WorkerDied`) raised on the N-th call of a hook method (before the call
reaches the service, or after it landed and before its answer is used), or in the middle of the merge: nothing
of the dead try's memory survives, as after a lost worker. The next try is a fresh operator with the next
``try_number`` and the same task instance identity. Each case ends with the emulator's own account: every input
line answered exactly once across every batch it ever created, and the merged output holding every line once,
in input order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, cast

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.job import collect
from airflow_provider_openai_batch.job.destination import Destination
from airflow_provider_openai_batch.job.merge import merge_results
from tests._kit.airflow_compat import AirflowFailException, TaskDeferred
from tests._kit.billing import all_ended, answered_counts, run_twice
from tests._kit.connection import set_connection
from tests._kit.job_lines import ids_of
from tests._kit.operators import job_op, run_trigger, write_requests
from tests._kit.reliability import REGISTRY, wait_until
from tests._kit.ti import FakeTI, context

LINES = 24
ALL = [f"req-{i}" for i in range(LINES)]
#: Three shards of 8 unless a case says otherwise.
BASE: dict[str, Any] = {"max_requests_per_batch": 8}
#: Every line answers 500 with this chance (drawn again each time it is sent), so a resubmission round happens.
FLAKY: dict[str, Any] = {"emulator_error_rate": 0.2}
#: Every batch leaves 20 % of its lines unrun and ends ``expired`` (a batch of fewer than 5 lines runs them all).
EXPIRING: dict[str, Any] = {"metadata": {"emulator": "expire=20"}}


class WorkerDied(BaseException):
    """The worker process is gone: no ``except Exception`` handler of the provider runs."""


@dataclass(frozen=True)
class Death:
    """Where a try dies: on the ``call``-th call of ``what`` (a hook method, ``"publish"`` for a merged file put in
    place, or ``"merge"`` for the ``call``-th line written to the merged output), before the call reaches the
    service or after it ``landed``."""

    what: str
    call: int
    landed: bool = False

    def __str__(self) -> str:
        return f"{self.what}#{self.call}{'+' if self.landed else ''}"


@dataclass(frozen=True)
class Try:
    """One try of the task: the operator's arguments that differ from the case's, and how it ends.

    :param death: the try dies there (``None``: it runs to its end).
    :param lost_deferral: deferrable: the try defers, and its trigger never wakes it (the task is retried).
    :param late: the try starts once every batch earlier tries made has ended (the worker was gone that long).
    """

    death: Death | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    lost_deferral: bool = False
    late: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    tries: tuple[Try, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    #: the last try sends nothing (a clear of a finished job)
    sends_nothing: bool = False


@dataclass
class Armed:
    """A death set up: the calls it has seen, and the files a killed process would leave behind."""

    seen: int = 0
    leftovers: dict[Path, bytes] = field(default_factory=dict)

    def leave(self) -> None:
        """Put back what the dead try's clean-up removed (a SIGKILL runs no ``finally``)."""
        for path, data in self.leftovers.items():
            path.write_bytes(data)


def _die_on(monkeypatch: pytest.MonkeyPatch, death: Death) -> Armed:
    """Arm ``death`` (it fires when ``armed.seen`` reaches ``death.call``)."""
    armed = Armed()
    if death.what == "merge":

        class DyingOutput:
            def __init__(self, target: Any) -> None:
                self.target = target

            def write(self, data: bytes) -> int:
                armed.seen += 1
                if armed.seen == death.call:  # the half-written merged file stays, as after a kill
                    self.target.flush()
                    armed.leftovers[Path(self.target.name)] = Path(self.target.name).read_bytes()
                    raise WorkerDied(str(death))
                return int(self.target.write(data))

        def merge(source: Any, results: Any, output: Any, *args: Any, **kwargs: Any) -> Any:
            return merge_results(source, results, cast(IO[bytes], DyingOutput(output)), *args, **kwargs)

        monkeypatch.setattr(collect, "merge_results", merge)
        return armed
    owner = Destination if death.what == "publish" else OpenAIBatchHook
    real: Callable[..., Any] = getattr(owner, death.what)

    def dying(self: Any, *args: Any, **kwargs: Any) -> Any:
        armed.seen += 1
        if armed.seen != death.call:
            return real(self, *args, **kwargs)
        if death.landed:
            real(self, *args, **kwargs)
        raise WorkerDied(str(death))

    monkeypatch.setattr(owner, death.what, dying)
    return armed


def _run(tmp_path: Path, ti: FakeTI, kwargs: dict[str, Any], *, lost_deferral: bool) -> dict[str, Any]:
    """One try to its end: in the worker, or deferred with each trigger run here (a fresh operator each time)."""

    def op() -> Any:
        return job_op(tmp_path, **kwargs)

    try:
        return dict(op().execute(context(ti)))
    except TaskDeferred as first:
        deferred = first
    if lost_deferral:
        raise WorkerDied("the deferred try is never resumed")
    for _ in range(60):
        (event,) = run_trigger(deferred.trigger)  # type: ignore[arg-type]
        try:
            return dict(op().execute_complete(context(ti), event))
        except TaskDeferred as again:
            deferred = again
    raise AssertionError("the job deferred 60 times")


@contextmanager
def _late(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[None]:
    """The job's clock ``seconds`` ahead for the operators built meanwhile (no real time passes)."""
    with monkeypatch.context() as patch:
        _job_clock(patch, lambda: time.time() + seconds)
        yield


def _job_clock(patch: pytest.MonkeyPatch, clock: Callable[[], float]) -> None:
    """The Job operators built meanwhile read ``clock``."""
    import airflow_provider_openai_batch.operators.job as job_module

    patch.setattr(job_module, "time", SimpleNamespace(time=clock, sleep=time.sleep))


def _play(emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case) -> dict[str, Any]:
    """Every try of ``case`` in turn; the last one's manifest."""
    write_requests(tmp_path / "in.jsonl", LINES, **case.body)
    manifest: dict[str, Any] = {}
    for number, attempt in enumerate(case.tries, start=1):
        ti = FakeTI(dag_id="crash", task_id="job", run_id="scheduled__1", try_number=number)
        kwargs = {**BASE, **case.kwargs, **attempt.changes}
        if attempt.late:
            all_ended(emulator)
        sent = (emulator.counters.files_uploaded, emulator.counters.batches_created)
        with monkeypatch.context() as patch:
            armed = _die_on(patch, attempt.death) if attempt.death is not None else Armed()
            if attempt.death is None and not attempt.lost_deferral:
                manifest = _run(tmp_path, ti, kwargs, lost_deferral=False)
                REGISTRY.crash_runs += 1
                continue
            with pytest.raises(WorkerDied):
                _run(tmp_path, ti, kwargs, lost_deferral=attempt.lost_deferral)
            assert attempt.death is None or armed.seen == attempt.death.call, f"it did not die at {attempt.death}"
            armed.leave()
    if case.sends_nothing:
        assert (emulator.counters.files_uploaded, emulator.counters.batches_created) == sent, "a clear sent again"
    return manifest


def _attempts(*tries: Try) -> tuple[Try, ...]:
    return (*tries, Try())  # every case ends with a try that runs to its end


CASES = [
    Case("after-first-upload", _attempts(Try(Death("upload_file", 1, landed=True)))),
    Case("after-an-upload", _attempts(Try(Death("upload_file", 2, landed=True)))),
    Case("before-a-create", _attempts(Try(Death("create_batch", 2)))),
    Case("after-a-create", _attempts(Try(Death("create_batch", 2, landed=True)))),
    Case("after-the-last-create", _attempts(Try(Death("create_batch", 3, landed=True)))),
    Case("during-the-wait", _attempts(Try(Death("retrieve_batch", 2)))),
    Case("during-a-download", _attempts(Try(Death("download_file", 2)))),
    Case("during-the-merge", _attempts(Try(Death("merge", 10)))),
    Case(
        "during-the-record-read-of-a-retry",
        _attempts(Try(Death("retrieve_batch", 1)), Try(Death("download_file", 1))),
    ),
    Case(
        "after-a-resubmission-create",
        _attempts(Try(Death("create_batch", 4, landed=True))),
        kwargs={"max_resubmits": 2},
        body=FLAKY,
    ),
    Case(
        "during-the-merge-before-a-resubmission",
        _attempts(Try(Death("download_file", 4))),
        kwargs={"max_resubmits": 2},
        body=FLAKY,
    ),
    Case(  # round 0's merge downloads 3 output and 3 error files, round 1's 7: the 8th is in round 1's
        "during-the-merge-after-a-resubmission",
        _attempts(Try(Death("download_file", 8))),
        kwargs={"max_resubmits": 2},
        body=FLAKY,
    ),
    Case(
        "after-a-create-of-two-tries-in-turn",
        _attempts(Try(Death("create_batch", 2, landed=True)), Try(Death("create_batch", 1, landed=True))),
    ),
    Case("after-the-merged-output-is-published", _attempts(Try(Death("publish", 1, landed=True)))),
    Case(
        "expired-while-the-worker-was-dead",
        (Try(Death("retrieve_batch", 1)), Try(late=True)),
        kwargs=EXPIRING,
    ),
    Case(
        "after-a-create-of-an-expiry-resubmission",
        _attempts(Try(Death("create_batch", 4, landed=True))),
        kwargs={**EXPIRING, "max_resubmits": 1},
    ),
    Case(
        "deferred-after-a-create",
        _attempts(Try(Death("create_batch", 2, landed=True))),
        kwargs={"deferrable": True},
    ),
    Case("deferred-trigger-lost", _attempts(Try(lost_deferral=True)), kwargs={"deferrable": True}),
    Case("deferred-during-a-download", _attempts(Try(Death("download_file", 1))), kwargs={"deferrable": True}),
    Case(
        "deferred-after-a-resubmission-create",
        _attempts(Try(Death("create_batch", 4, landed=True))),
        kwargs={"max_resubmits": 2, "deferrable": True},
        body=FLAKY,
    ),
    Case("finished-then-cleared", (Try(), Try()), sends_nothing=True),
    Case(
        "finished-with-a-resubmission-then-cleared",
        (Try(), Try()),
        kwargs={"max_resubmits": 2},
        body=FLAKY,
        sends_nothing=True,
    ),
    Case(
        "finished-then-cleared-with-a-raised-request-limit",
        (Try(), Try(changes={"max_requests_per_batch": 50})),
        sends_nothing=True,
    ),
    Case(
        "after-a-create-then-cleared-with-a-raised-request-limit",
        (Try(Death("create_batch", 2, landed=True)), Try(changes={"max_requests_per_batch": 50})),
    ),
    Case(
        "admission-wait-then-cleared-with-a-raised-enqueued-limit",
        (
            Try(Death("retrieve_batch", 2), changes={"max_enqueued_requests": 8}),
            Try(changes={"max_enqueued_requests": 24}),
        ),
    ),
    Case(
        "admission-after-a-create",
        _attempts(Try(Death("create_batch", 2, landed=True))),
        kwargs={"max_enqueued_requests": 8},
    ),
    Case(
        "deferred-admission-trigger-lost-then-cleared-with-a-raised-enqueued-limit",
        (Try(changes={"max_enqueued_requests": 8}, lost_deferral=True), Try(changes={"max_enqueued_requests": 24})),
        kwargs={"deferrable": True},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_worker_dies_and_the_task_is_retried(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    manifest = _play(openai_conn, tmp_path, monkeypatch, case)
    counts = answered_counts(openai_conn)
    twice = run_twice(counts)
    REGISTRY.duplicates_seen(sum(n - 1 for n in twice.values()))
    assert not twice, f"lines answered (billed) more than once: {twice}"
    assert sorted(counts) == sorted(ALL), "a line was never answered"
    assert ids_of(manifest["output"]["path"]) == ALL  # every line once, in input order
    assert manifest["error"] is None and manifest["verdict"] == "succeed"


def test_a_retry_past_the_deadline_cancels_what_earlier_tries_left_and_sends_nothing(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = 3600.0
    deadline = datetime.now(timezone.utc) + timedelta(seconds=hour)  # the same moment in every try
    kwargs = {"metadata": {"emulator": "stall=50"}, "deadline": deadline}

    case = Case("past-the-deadline", (Try(Death("retrieve_batch", 2)),), kwargs=kwargs)
    _play(openai_conn, tmp_path, monkeypatch, case)
    earlier = list(openai_conn.batches)
    sent = (openai_conn.counters.files_uploaded, openai_conn.counters.batches_created)
    assert len(earlier) == 3

    ti = FakeTI(dag_id="crash", task_id="job", run_id="scheduled__1", try_number=2)
    with _late(monkeypatch, 2 * hour), pytest.raises(AirflowFailException, match="cancelled 3 batch"):
        job_op(tmp_path, **BASE, **kwargs).execute(context(ti))  # type: ignore[arg-type]

    assert (openai_conn.counters.files_uploaded, openai_conn.counters.batches_created) == sent
    counts = answered_counts(openai_conn)  # every batch ends (cancelled)
    assert {openai_conn.get_batch(b)["status"] for b in earlier} == {"cancelled"}
    twice = run_twice(counts)
    REGISTRY.duplicates_seen(sum(n - 1 for n in twice.values()))
    assert not twice


@pytest.mark.parametrize(
    ("death", "created", "deferrable"),
    [
        (Death("retrieve_batch", 2), 3, False),
        (Death("create_batch", 2, landed=True), 2, False),
        (Death("create_batch", 2, landed=True), 2, True),
    ],
    ids=["died-waiting", "died-after-a-create", "deferred-died-after-a-create"],
)
def test_a_partial_retry_past_the_deadline_merges_what_earlier_tries_got_and_sends_nothing(
    openai_conn: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    death: Death,
    created: int,
    deferrable: bool,
) -> None:
    hour = 3600.0
    deadline = datetime.now(timezone.utc) + timedelta(seconds=hour)
    kwargs = {"metadata": {"emulator": "stall=50"}, "deadline": deadline, "on_deadline": "partial"}
    kwargs["deferrable"] = deferrable
    _play(openai_conn, tmp_path, monkeypatch, Case("partial", (Try(death),), kwargs=kwargs))
    earlier = list(openai_conn.batches)
    sent = (openai_conn.counters.files_uploaded, openai_conn.counters.batches_created)
    assert len(earlier) == created

    def stalled() -> bool:  # each batch stalls with half its lines answered before the retry starts
        return all(openai_conn.get_batch(b)["request_counts"]["completed"] == 4 for b in earlier)

    wait_until(stalled, 10, "the batches to stall")

    ti = FakeTI(dag_id="crash", task_id="job", run_id="scheduled__1", try_number=2)
    with _late(monkeypatch, 2 * hour):
        manifest = _run(tmp_path, ti, {**BASE, **kwargs}, lost_deferral=False)

    assert (openai_conn.counters.files_uploaded, openai_conn.counters.batches_created) == sent  # nothing sent
    counts = answered_counts(openai_conn)
    assert {openai_conn.get_batch(b)["status"] for b in earlier} == {"cancelled"}
    twice = run_twice(counts)
    REGISTRY.duplicates_seen(sum(n - 1 for n in twice.values()))
    assert not twice
    answered, unanswered = ids_of(manifest["output"]["path"]), ids_of(manifest["error"]["path"])
    assert len(counts) == 4 * created
    assert answered == [line for line in ALL if line in counts]  # every answer of every batch, in input order
    assert unanswered == [line for line in ALL if line not in counts]
    assert set(manifest["errors_by_code"]) == {"deadline_exceeded"}
    assert manifest["verdict"] == "succeed" and manifest["reason"] == "deadline"


class ShiftedClock:
    """Real time moved forward by ``offset`` seconds: one for the emulator and the runner, so that both pass the
    deadline together (no real time passes)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def test_a_death_while_cancelling_at_the_deadline_then_a_partial_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try passes its deadline once its 3 batches exist, cancels one and dies cancelling the second;
    the retry counts both as cancelled at the deadline, cancels the third and merges what they answered."""
    hour = 3600.0
    deadline = datetime.now(timezone.utc) + timedelta(seconds=hour)
    kwargs = {**BASE, "metadata": {"emulator": "stall=50"}, "deadline": deadline, "on_deadline": "partial"}
    write_requests(tmp_path / "in.jsonl", LINES)
    shifted = ShiftedClock()
    with EmulatorServer(phase_seconds=0.05, clock=shifted) as emulator:
        set_connection(monkeypatch, emulator.base_url)

        def clock() -> float:  # past the deadline once every shard has its batch
            if emulator.counters.batches_created >= 3:
                shifted.offset = 2 * hour
            return shifted.now()

        first = FakeTI(dag_id="crash", task_id="job", run_id="scheduled__1", try_number=1)
        with monkeypatch.context() as patch:
            _job_clock(patch, clock)
            armed = _die_on(patch, Death("cancel_batch", 2, landed=True))
            with pytest.raises(WorkerDied):
                _run(tmp_path, first, kwargs, lost_deferral=False)
        assert armed.seen == 2 and emulator.counters.batches_created == 3
        sent = (emulator.counters.files_uploaded, emulator.counters.batches_created)

        second = FakeTI(dag_id="crash", task_id="job", run_id="scheduled__1", try_number=2)
        with monkeypatch.context() as patch:
            _job_clock(patch, shifted.now)
            manifest = _run(tmp_path, second, kwargs, lost_deferral=False)

        assert (emulator.counters.files_uploaded, emulator.counters.batches_created) == sent
        counts = answered_counts(emulator)
        assert {b["status"] for b in emulator.batches.values()} == {"cancelled"}
        twice = run_twice(counts)
        REGISTRY.duplicates_seen(sum(n - 1 for n in twice.values()))
        assert not twice and len(counts) == 12  # half of each stalled batch
        assert ids_of(manifest["output"]["path"]) == [line for line in ALL if line in counts]
        assert ids_of(manifest["error"]["path"]) == [line for line in ALL if line not in counts]
        assert manifest["errors_by_code"] == {"deadline_exceeded": 12}
        assert manifest["verdict"] == "succeed" and manifest["reason"] == "deadline"
        assert len(manifest["deadline"]["cancelled"]) == 3


def test_the_manifest_counts_every_request_of_batches_found_while_validating(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_conn.set_phase_seconds(0.5)  # the retry surely finds the last batch still validating
    manifest = _play(openai_conn, tmp_path, monkeypatch, Case("x", _attempts(Try(Death("create_batch", 3, True)))))

    assert sum(shard["requests"] for shard in manifest["shards"]) == LINES
    assert sum(one["requests"] for one in manifest["rounds"]) == LINES
