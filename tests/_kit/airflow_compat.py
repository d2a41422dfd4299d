"""Airflow names whose import path moved between 3.1 (the floor we test) and 3.3.

The package itself imports the exceptions it raises from ``airflow_provider_openai_batch._compat``; the tests
catch the same classes through this module.
"""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, TaskDeferred
except ImportError:  # Airflow 3.1: the Task SDK does not export them yet
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
        TaskDeferred,
    )

try:
    from airflow.sdk.types import TaskInstanceKey
except ImportError:  # Airflow 3.1
    from airflow.models.taskinstancekey import TaskInstanceKey  # type: ignore[no-redef,assignment]

__all__ = ["AirflowException", "AirflowFailException", "AirflowSkipException", "TaskDeferred", "TaskInstanceKey"]
