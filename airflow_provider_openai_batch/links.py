"""The "OpenAI Batch" extra link: the batch's page on the OpenAI platform."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["OpenAIBatchLink"]

PLATFORM_BATCH_URL = "https://platform.openai.com/batches/{batch_id}"


class OpenAIBatchLink(BaseOperatorLink):
    """Links a task to its batch on platform.openai.com.

    Reads the ``batch_id`` XCom that the operators push before they wait (so the link works while the
    task is deferred). Makes no network call; returns ``""`` until a batch id exists.
    """

    name = "OpenAI Batch"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        batch_id = XCom.get_value(ti_key=ti_key, key="batch_id")
        if not batch_id or not isinstance(batch_id, str):
            return ""
        return PLATFORM_BATCH_URL.format(batch_id=batch_id)
