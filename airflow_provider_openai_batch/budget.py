"""The pre-flight cost check of the operators that upload: log the estimate, push it, hold the cap.

The estimate itself is counted while the input is validated (see :mod:`~airflow_provider_openai_batch.estimate`);
this module is what a task does with it, before anything is uploaded or billed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.estimate import CostEstimate, budget_problem

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["XCOM_ESTIMATE", "check_cost_arguments", "enforce_budget"]

#: XCom key of the pre-flight estimate (a :meth:`CostEstimate.to_dict`).
XCOM_ESTIMATE = "estimate"


def check_cost_arguments(max_cost_usd: object, dry_run: object, *, has_local_input: bool) -> None:
    """Reject, when the DAG is parsed, cost arguments that could never work.

    :raises ValueError: naming the argument.
    """
    if max_cost_usd is not None and (
        isinstance(max_cost_usd, bool)
        or not isinstance(max_cost_usd, (int, float))
        or not math.isfinite(max_cost_usd)
        or max_cost_usd < 0
    ):
        raise ValueError(f"max_cost_usd must be a number of US dollars >= 0, got {max_cost_usd!r}")
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run must be True or False, got {dry_run!r}")
    if not has_local_input and (max_cost_usd is not None or dry_run):
        raise ValueError(
            "max_cost_usd and dry_run need input_file: the estimate is counted while the local file is "
            "validated, and a file given by input_file_id is already uploaded"
        )


def enforce_budget(task: Any, context: Context, estimate: CostEstimate | None, max_cost_usd: float | None) -> None:
    """Log the estimate in one line, push it as the ``estimate`` XCom, and fail if it breaks the cap.

    Fails without retry (``AirflowFailException``): the same input and prices give the same estimate.
    """
    if estimate is None:
        return
    task.log.info("%s", estimate.describe())
    context["ti"].xcom_push(key=XCOM_ESTIMATE, value=estimate.to_dict())
    problem = budget_problem(estimate, max_cost_usd)
    if problem is not None:
        from airflow_provider_openai_batch.waiting import airflow_exceptions

        raise airflow_exceptions()[1](problem)
    if max_cost_usd is not None:
        task.log.info("The estimate is within max_cost_usd=%s", max_cost_usd)
