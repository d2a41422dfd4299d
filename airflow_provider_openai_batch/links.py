"""The "OpenAI Batch" extra link: the batch's page in the console of the service that runs it.

Which console depends on the connection:

* a ``console_url`` extra (a URL template with ``{batch_id}``) wins, for any service: an Azure AI
  Foundry batch page, a gateway's UI, ...;
* OpenAI's API host (``api.openai.com``, also the default base URL) links to platform.openai.com;
* anything else (Azure OpenAI, whose portal page needs the subscription and resource group that the
  endpoint does not carry; gateways; the local emulator) gets no link rather than one that leads nowhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_ID

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["CONSOLE_URL_EXTRA", "OpenAIBatchLink", "console_url"]

PLATFORM_BATCH_URL = "https://platform.openai.com/batches/{batch_id}"
#: The connection extra that sets the link's URL template.
CONSOLE_URL_EXTRA = "console_url"
_OPENAI_API_HOST = "api.openai.com"


def console_url(batch_id: str, *, host: str | None, extra: Mapping[str, Any]) -> str:
    """The batch's console URL for a connection, or ``""`` when the service has no known console.

    :param batch_id: the batch id; percent-encoded into the URL.
    :param host: the connection's Host field (the base URL); empty means OpenAI's default.
    :param extra: the connection's extra; its ``console_url`` template, if set, is used for any service.
    """
    quoted = quote(batch_id, safe="")
    template = extra.get(CONSOLE_URL_EXTRA)
    if isinstance(template, str) and template.strip():
        # replace(), not format(): a template is user text and may hold other braces.
        return template.strip().replace("{batch_id}", quoted)
    raw = (host or "").strip()
    hostname = (urlsplit(raw if "://" in raw else f"https://{raw}").hostname or "") if raw else _OPENAI_API_HOST
    if hostname == _OPENAI_API_HOST or hostname.endswith("." + _OPENAI_API_HOST):  # e.g. eu.api.openai.com
        return PLATFORM_BATCH_URL.format(batch_id=quoted)
    return ""


class OpenAIBatchLink(BaseOperatorLink):
    """Links a task to its batch in the service's console (see :func:`console_url`).

    Reads the ``batch_id`` XCom that the operators push before they wait, and the task's connection.
    Airflow computes the link in the worker when the task finishes or defers and stores it, so it shows
    while the task is deferred. Returns ``""`` (no link) until a batch id exists, or when the
    connection cannot be read or names no known console.
    """

    name = "OpenAI Batch"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk import BaseHook
        from airflow.sdk.execution_time.xcom import XCom

        batch_id = XCom.get_value(ti_key=ti_key, key=XCOM_BATCH_ID)
        if not batch_id or not isinstance(batch_id, str):
            return ""
        conn_id = getattr(operator, "conn_id", None)
        if not isinstance(conn_id, str) or not conn_id:
            return ""
        try:
            conn = BaseHook.get_connection(conn_id)
            extra = conn.extra_dejson
        except Exception:  # a link is a convenience: an unreadable connection means no link, never an error
            return ""
        return console_url(batch_id, host=conn.host, extra=extra if isinstance(extra, Mapping) else {})
