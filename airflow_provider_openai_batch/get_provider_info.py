"""Provider metadata read by every Airflow component at start-up.

Keep this module free of imports beyond the standard library: the scheduler, the API server and
every worker call :func:`get_provider_info` through the ``apache_airflow_provider`` entry point.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "airflow-provider-openai-batch"
CONN_TYPE = "openai_batch"
HOOK_CLASS = "airflow_provider_openai_batch.hooks.openai_batch.OpenAIBatchHook"

#: Labels, placeholders and hidden fields for the standard connection form (also the 3.1 fallback
#: returned by ``OpenAIBatchHook.get_ui_field_behaviour``).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": "https://api.openai.com/v1",
        "password": "sk-...",
    },
}

#: Extra fields, stored as top-level keys of ``Connection.extra`` (rendered by the Airflow 3.2+ UI).
CONN_FIELDS: dict[str, Any] = {
    "api_type": {
        "label": "API type",
        "description": "'openai' sends 'Authorization: Bearer'; 'azure' sends the key in an 'api-key' header.",
        "schema": {"type": ["string", "null"], "enum": ["openai", "azure", None], "default": "openai"},
    },
    "organization": {
        "label": "Organization",
        "description": "Optional OpenAI organization id (OpenAI-Organization header).",
        "schema": {"type": ["string", "null"]},
    },
    "project": {
        "label": "Project",
        "description": "Optional OpenAI project id (OpenAI-Project header).",
        "schema": {"type": ["string", "null"]},
    },
    "api_version": {
        "label": "API version",
        "description": "Azure only: the api-version query parameter (e.g. 2024-10-21). Empty for the v1 layout.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Read timeout (s)",
        "description": "Seconds to wait for a response before the call is retried or fails.",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": 60},
    },
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "description": "Seconds to wait for a TCP/TLS connection.",
        "schema": {"type": ["number", "null"], "minimum": 0.1, "default": 10},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a transient failure (connection error, 408, 429, 5xx) per call.",
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20, "default": 5},
    },
    "backoff_factor": {
        "label": "Backoff factor (s)",
        "description": "Exponential backoff base between retries; jitter is added.",
        "schema": {"type": ["number", "null"], "minimum": 0, "default": 0.5},
    },
    "console_url": {
        "label": "Console URL",
        "description": (
            "Optional link target for the task's 'OpenAI Batch' button, with {batch_id} in it. Without it, "
            "only OpenAI's API host gets a link (platform.openai.com)."
        ),
        "schema": {"type": ["string", "null"]},
    },
    "verify_ssl": {
        "label": "Verify TLS",
        "description": "Verify the server's TLS certificate. Turn off only for a trusted local gateway.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "status_polling": {
        "label": "Status polling",
        "description": "How triggers learn batch statuses: 'auto' lists pages of GET /batches when that needs fewer "
        "requests than one GET /batches/{id} each; 'list' always lists first; 'retrieve' never lists.",
        "schema": {"type": ["string", "null"], "enum": ["auto", "list", "retrieve", None], "default": "auto"},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider-info dict validated by Airflow's provider manager."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "OpenAI Batch",
        "description": "Run OpenAI Batch API jobs from Airflow: create, wait (deferrable), cancel, download.",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "OpenAI Batch",
                "external-doc-url": "https://platform.openai.com/docs/guides/batch",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": ["airflow_provider_openai_batch.hooks.openai_batch"],
            }
        ],
        "operators": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": [
                    "airflow_provider_openai_batch.operators.batch",
                    "airflow_provider_openai_batch.operators.job",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": ["airflow_provider_openai_batch.sensors.batch"],
            }
        ],
        "triggers": [
            {
                "integration-name": "OpenAI Batch",
                "python-modules": [
                    "airflow_provider_openai_batch.triggers.batch",
                    "airflow_provider_openai_batch.triggers.job",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": "OpenAI Batch",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
        "extra-links": ["airflow_provider_openai_batch.links.OpenAIBatchLink"],
    }
