"""Airflow names whose import path moved between 3.1 (the floor we support) and the newest 3.x.

Imported once here, so every other module imports plain names and mypy sees one ``type: ignore`` per move.
"""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSkipException,
    )
except ImportError:  # Airflow 3.1's Task SDK has no AirflowFailException yet
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,assignment]
        AirflowException,
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSkipException,
    )

try:
    from airflow.sdk import conf
except ImportError:  # Airflow 3.1 exposes the configuration only here
    from airflow.configuration import conf  # type: ignore[assignment,no-redef]

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowRescheduleException",
    "AirflowSkipException",
    "conf",
    "default_deferrable",
]


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` from the Airflow configuration (False when unset)."""
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))
