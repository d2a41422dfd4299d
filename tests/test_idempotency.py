"""Whether, and back to when, a create looks for a batch an earlier try made (idempotency.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_openai_batch.idempotency import look_back, task_instance_key

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def ctx(try_number: Any = 1, **dag_run: Any) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=try_number)
    return {"ti": ti, "dag_run": SimpleNamespace(**dag_run) if dag_run else None}


@pytest.mark.parametrize(("try_number", "needed"), [(1, False), (2, True), (7, True), (None, True), (True, True)])
def test_only_a_first_try_skips_the_look(try_number: Any, needed: bool) -> None:
    assert look_back(ctx(try_number, run_after=T0)).needed is needed


def test_the_bound_is_the_earliest_moment_of_the_dag_run() -> None:
    later = T0 + timedelta(hours=2)  # a cleared run gets a new start_date; run_after stays
    assert look_back(ctx(2, run_after=T0, start_date=later, queued_at=later)).not_before == T0.timestamp()
    assert look_back(ctx(2, run_after=later, start_date=T0)).not_before == T0.timestamp()


def test_naive_datetimes_are_utc_and_an_unknown_bound_looks_everywhere() -> None:
    assert look_back(ctx(2, run_after=T0.replace(tzinfo=None))).not_before == T0.timestamp()
    assert look_back(ctx(2)).not_before == 0.0
    assert look_back(ctx(2, run_after=None, start_date=None)).not_before == 0.0


def test_the_task_sdk_dag_run_carries_the_fields_read() -> None:
    """The DagRun a task gets from the Task SDK (3.1 and newest 3.x) has run_after and start_date."""
    from airflow.sdk.api.datamodels._generated import DagRun

    fields = set(DagRun.model_fields)
    assert {"run_after", "start_date"} <= fields
    run = DagRun.model_construct(run_after=T0, start_date=T0 + timedelta(minutes=1))
    assert look_back({"ti": SimpleNamespace(try_number=2), "dag_run": run}).not_before == T0.timestamp()


def test_the_key_ignores_the_try_number() -> None:
    assert task_instance_key(ctx(1), "x") == task_instance_key(ctx(9), "x") != task_instance_key(ctx(1), "y")
