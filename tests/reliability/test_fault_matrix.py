"""Fault matrix: every hook call against every fault the emulator can inject.

For each (fault, call) two runs: the fault fires once (transient) and then on every request (persistent).
A transient fault must be absorbed within the retry budget with a correct result; a persistent one must end
in a typed :class:`OpenAIBatchAPIError` (or, where the failed request did its work, in that object being
reused). Every call runs under a hard time bound, and no run may leave a second batch or file behind.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import OpenAIBatchAPIError
from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY, OpenAIBatchHook
from tests._kit.batches import jsonl
from tests._kit.connection import set_connection
from tests._kit.reliability import REGISTRY, Bounded, run_bounded

READ_TIMEOUT = 0.5
MAX_RETRIES = 2
#: No call may take longer than this, whatever the fault: (retries + 1) slow attempts plus lookups and backoff.
CALL_BOUND = 20.0


@dataclass(frozen=True)
class Fault:
    name: str
    kind: str
    options: dict[str, Any]


FAULTS = [
    Fault("429+Retry-After", "status", {"status": 429, "retry_after": 1}),
    Fault("500", "status", {"status": 500}),
    Fault("502", "status", {"status": 502}),
    Fault("503", "status", {"status": 503}),
    Fault("drop", "drop", {}),
    Fault("slow>timeout", "latency", {"latency": READ_TIMEOUT + 0.3}),
    Fault("truncated", "truncated", {}),
    Fault("not_json", "not_json", {}),
    Fault("created+5xx", "created_then_error", {}),
]

ROUTES = {
    "upload": "POST /v1/files",
    "create": "POST /v1/batches",
    "retrieve": "GET /v1/batches/{id}",
    "retrieve(async)": "GET /v1/batches/{id}",
    "list": "GET /v1/batches",
    "cancel": "POST /v1/batches/{id}/cancel",
    "download": "GET /v1/files/{id}/content",
}

CONTENT = jsonl(3)


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(phase_seconds=0.05) as server, pytest.MonkeyPatch.context() as mp:
        set_connection(mp, server.base_url, max_retry_after=5)
        yield server


def _hook() -> OpenAIBatchHook:
    return OpenAIBatchHook("openai_default", timeout=READ_TIMEOUT, max_retries=MAX_RETRIES)


class Case:
    """One call: ``prepare`` (fault-free), ``run`` (under the fault), ``check`` (result is correct), ``extra``."""

    def __init__(self, call: str, emu: EmulatorServer, tmp_path: Any) -> None:
        self.call = call
        self.emu = emu
        self.tmp_path = tmp_path
        self.hook = _hook()
        self.token = uuid.uuid4().hex[:12]
        setup = _hook()
        self.file = setup.upload_file(io.BytesIO(CONTENT), filename=f"in-{self.token}.jsonl")
        self.batch_id: str | None = None
        if call in ("retrieve", "retrieve(async)", "cancel", "list"):
            held = setup.create_batch(
                input_file_id=self.file.id, endpoint="/v1/chat/completions", metadata={"emulator": "hold"}
            )
            self.batch_id = held.id
        setup.close()

    def run(self) -> Any:
        hook = self.hook
        if self.call == "upload":
            return hook.upload_file(io.BytesIO(CONTENT), filename=f"up-{self.token}.jsonl")
        if self.call == "create":
            return hook.create_batch(
                input_file_id=self.file.id, endpoint="/v1/chat/completions", idempotency_key=f"key-{self.token}"
            )
        if self.call == "retrieve":
            return hook.retrieve_batch(str(self.batch_id))
        if self.call == "retrieve(async)":

            async def go() -> Any:
                try:
                    return await hook.aretrieve_batch(str(self.batch_id))
                finally:
                    await hook.aclose()

            return asyncio.run(go())
        if self.call == "list":
            return hook.list_batches(limit=5)
        if self.call == "cancel":
            return hook.cancel_batch(str(self.batch_id))
        if self.call == "download":
            target = self.tmp_path / f"down-{self.token}.jsonl"
            written = hook.download_file(self.file.id, target)
            return written, target.read_bytes()
        raise AssertionError(self.call)

    def correct(self, value: Any) -> bool:
        if self.call == "upload":
            return value.bytes == len(CONTENT) and value.id in self.emu.files
        if self.call == "create":
            return (value.metadata or {}).get(IDEMPOTENCY_METADATA_KEY) == f"key-{self.token}"
        if self.call in ("retrieve", "retrieve(async)"):
            return value.id == self.batch_id
        if self.call == "list":
            return any(b.id == self.batch_id for b in value.data)
        if self.call == "cancel":
            return value.id == self.batch_id and value.status.value in ("cancelling", "cancelled")
        if self.call == "download":
            written, data = value
            return written == len(CONTENT) and data == CONTENT
        raise AssertionError(self.call)

    def extra_objects(self) -> int:
        """Objects this case created beyond the one intended (0 when it created none or one)."""
        if self.call == "create":
            tagged = [
                b
                for b in self.emu.batches.values()
                if (b.get("metadata") or {}).get(IDEMPOTENCY_METADATA_KEY) == f"key-{self.token}"
            ]
            return max(0, len(tagged) - 1)
        if self.call == "upload":
            named = [f for f in self.emu.files.values() if f["filename"] == f"up-{self.token}.jsonl"]
            return max(0, len(named) - 1)
        return 0

    def created_count(self) -> int:
        if self.call == "create":
            return sum(
                1
                for b in self.emu.batches.values()
                if (b.get("metadata") or {}).get(IDEMPOTENCY_METADATA_KEY) == f"key-{self.token}"
            )
        if self.call == "upload":
            return sum(1 for f in self.emu.files.values() if f["filename"] == f"up-{self.token}.jsonl")
        return 0


def _attempt(case: Case, fault: Fault, times: int | None) -> tuple[Bounded, int]:
    emu = case.emu
    emu.faults.clear()
    rule = emu.faults.add(ROUTES[case.call], fault.kind, times=times, **fault.options)
    try:
        result = run_bounded(case.run, CALL_BOUND)
    finally:
        emu.faults.clear()
    # A delayed request is still being served after the client gave up: let it finish before counting objects.
    assert emu.wait_idle(CALL_BOUND), "the emulator is still serving a request"
    REGISTRY.injections += rule.fired
    return result, rule.fired


def _describe(case: Case, result: Bounded, *, transient: bool) -> str:
    if result.hung:
        return "HANG"
    if result.error is None:
        if not case.correct(result.value):
            return "WRONG"
        return "ok"
    if isinstance(result.error, OpenAIBatchAPIError):
        return type(result.error).__name__.replace("Error", "")
    return f"UNTYPED:{type(result.error).__name__}"


@pytest.mark.parametrize("call", list(ROUTES))
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_matrix(emu: EmulatorServer, tmp_path: Any, fault: Fault, call: str) -> None:
    # Transient: the fault fires once; the call must recover with a correct result.
    case = Case(call, emu, tmp_path)
    transient, fired = _attempt(case, fault, times=1)
    assert fired == 1, f"the {fault.name} fault never fired on {call}"
    transient_outcome = _describe(case, transient, transient=True)
    transient_extra = case.extra_objects()
    REGISTRY.duplicates_seen(transient_extra)
    if fault.name == "429+Retry-After" and transient.error is None:
        assert transient.elapsed >= 0.9, f"Retry-After: 1 was not obeyed ({transient.elapsed:.2f}s)"

    # Persistent: the fault fires on every matching request; the call must end, typed, within the bound.
    case2 = Case(call, emu, tmp_path)
    persistent, fired2 = _attempt(case2, fault, times=None)
    persistent_outcome = _describe(case2, persistent, transient=False)
    persistent_extra = case2.extra_objects()
    REGISTRY.duplicates_seen(persistent_extra)
    if persistent.error is None and call in ("create", "upload") and persistent_outcome == "ok":
        persistent_outcome = "ok(r)"  # only possible by finding the object the failed request created

    REGISTRY.cell(fault.name, call, f"{transient_outcome}/{persistent_outcome}")

    allowed = {"ok"}
    if fault.kind == "latency" and call in ("create", "upload"):
        # A create that timed out is looked for, never sent again: if the slow server has not finished it
        # within the grace period (a loaded host), a typed timeout is the right answer, and still no duplicate.
        allowed.add("APITimeout")
    assert transient_outcome in allowed, f"{fault.name} once on {call}: {transient_outcome} {transient.error!r}"
    assert not persistent.hung, f"{fault.name} on every {call} request: no answer within {CALL_BOUND}s"
    assert not persistent_outcome.startswith(("UNTYPED", "WRONG")), (
        f"{fault.name} on every {call} request: {persistent_outcome} {persistent.error!r}"
    )
    if persistent.error is not None:
        assert fired2 >= 1
        text = str(persistent.error)
        assert ROUTES[call].split(" ")[0] in text, f"the error does not name the call: {text}"
    assert transient_extra == 0, f"{fault.name} once on {call} left {transient_extra} duplicate(s)"
    assert persistent_extra == 0, f"{fault.name} on every {call} request left {persistent_extra} duplicate(s)"
    if call in ("create", "upload"):
        assert case.created_count() == 1
        # A call that failed created nothing, unless the server did the work before the fault hit the answer
        # (created_then_error, truncated) or after the client gave up (latency).
        did_the_work = persistent.error is None or fault.kind in ("created_then_error", "truncated", "latency")
        assert case2.created_count() == (1 if did_the_work else 0), persistent.error
    for c in (case, case2):
        c.hook.close()


def test_create_answered_after_the_grace_is_not_sent_again(emu: EmulatorServer) -> None:
    """The server creates the batch long after the client timed out: one batch, a typed error, reuse on retry."""
    hook = _hook()
    uploaded = hook.upload_file(io.BytesIO(CONTENT), filename="late.jsonl")
    key = f"late-{uuid.uuid4().hex}"
    emu.faults.add("POST /v1/batches", "latency", latency=READ_TIMEOUT * 4, times=None)
    try:
        result = run_bounded(
            lambda: hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions", idempotency_key=key),
            CALL_BOUND,
        )
    finally:
        emu.faults.clear()
    REGISTRY.injections += 1
    assert not result.hung
    assert type(result.error).__name__ == "APITimeoutError", repr(result.error)
    assert "not sent again" in str(result.error)
    assert emu.wait_idle(CALL_BOUND)  # the server now finishes the request the client gave up on

    tagged = [b for b in emu.batches.values() if (b.get("metadata") or {}).get(IDEMPOTENCY_METADATA_KEY) == key]
    REGISTRY.duplicates_seen(len(tagged) - 1)
    assert len(tagged) == 1
    again = hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions", idempotency_key=key)
    assert again.id == tagged[0]["id"]
    tagged = [b for b in emu.batches.values() if (b.get("metadata") or {}).get(IDEMPOTENCY_METADATA_KEY) == key]
    REGISTRY.duplicates_seen(len(tagged) - 1)
    assert len(tagged) == 1
