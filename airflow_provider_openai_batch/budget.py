"""What the operators do about cost: find the prices, hold the cap before upload, report the bill after.

The estimate itself is counted while the input is validated (see :mod:`~airflow_provider_openai_batch.estimate`)
and the arithmetic of prices is in :mod:`~airflow_provider_openai_batch.pricing`; this module is what a task
does with them: log, push XComs, fail before anything is uploaded or billed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.estimate import CostEstimate, budget_problem
from airflow_provider_openai_batch.pricing import CostReport, PriceTable, PricingError, batch_cost, resolve_price_table
from airflow_provider_openai_batch.xcom_keys import XCOM_ESTIMATE

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["XCOM_ESTIMATE", "check_cost_arguments", "enforce_budget", "price_table", "report_cost", "task_price_table"]


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
        from airflow_provider_openai_batch._compat import AirflowFailException

        raise AirflowFailException(problem)
    if max_cost_usd is not None:
        task.log.info("The estimate is within max_cost_usd=%s", max_cost_usd)


def price_table(hook: Any, conn_id: str, operator_prices: object) -> PriceTable:
    """The shipped prices, overridden by the connection extra's ``prices``, then by the operator's ``prices``.

    :raises PricingError: naming the override that is malformed.
    """
    extra = hook.get_connection(conn_id).extra_dejson
    connection_prices = extra.get("prices") if isinstance(extra, Mapping) else None
    return resolve_price_table(conn_id=conn_id, connection_prices=connection_prices, operator_prices=operator_prices)


def task_price_table(task: Any) -> PriceTable:
    """:func:`price_table` for an operator (its ``hook``, ``conn_id`` and ``prices``), built once per task
    process, so that a model missing from it is warned about once."""
    table: PriceTable | None = getattr(task, "_price_table", None)
    if table is None:
        table = task._price_table = price_table(task.hook, task.conn_id, task.prices)
    return table


def report_cost(
    task: Any, usages: Sequence[tuple[str | None, Any]], table: Callable[[], PriceTable]
) -> dict[str, Any] | None:
    """The usage and cost at batch prices of one batch or several (a job), logged in one line.

    :param usages: ``(model, usage)`` per batch; batches without ``usage`` are left out, and with none at
        all the result is ``None`` (batches created before 2025-09-07 report none).
    :param table: gives the prices; called only when there is usage to price.

    Never fails the task: the batches have run, and a price problem is a warning, not a lost result.
    """
    known = [(model, usage) for model, usage in usages if usage is not None]
    if not known:
        task.log.info("No token usage reported, so no cost")
        return None
    try:
        prices = table()
    except PricingError as exc:
        task.log.warning("No cost: %s", exc)
        reports = [CostReport.unpriced(model, usage, str(exc)) for model, usage in known]
    else:
        reports = [report for model, usage in known if (report := batch_cost(model, usage, prices)) is not None]
    report = reports[0] if len(reports) == 1 else CostReport.total(reports)
    task.log.info("%s", report.describe())
    return report.to_dict()
