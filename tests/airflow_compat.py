"""Airflow names whose import path moved between 3.1 (the floor we test) and 3.3.

The package itself resolves the exceptions it raises through ``waiting.airflow_exceptions``; the tests catch
the same classes through this module.
"""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
except ImportError:  # Airflow 3.1: the Task SDK does not export them yet
    from airflow.exceptions import AirflowException, AirflowFailException, TaskDeferred  # type: ignore[no-redef]

try:
    from airflow.sdk.types import TaskInstanceKey
except ImportError:  # Airflow 3.1
    from airflow.models.taskinstancekey import TaskInstanceKey  # type: ignore[no-redef,assignment]

__all__ = ["AirflowException", "AirflowFailException", "TaskDeferred", "TaskInstanceKey"]
