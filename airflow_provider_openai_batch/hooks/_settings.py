"""Connection settings: every field of an Airflow connection the hook uses, validated once.

A pure function of the connection's fields, so the synchronous and the asynchronous connection lookups share it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_openai_batch import __version__
from airflow_provider_openai_batch.batch_input.limits import FileLimits
from airflow_provider_openai_batch.capacity import EnqueuedLimit, EnqueuedLimits
from airflow_provider_openai_batch.exceptions import InvalidConnectionError

__all__ = ["API_TYPES", "DEFAULT_BASE_URL", "STATUS_POLLING", "ConnectionSettings"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
API_TYPES = ("openai", "azure")
#: Expiry of an uploaded batch input: 14 days, past any completion window, and accepted by both OpenAI
#: (1 hour to 30 days) and Azure OpenAI (14 to 30 days), where files with an expiry get a far larger quota.
DEFAULT_INPUT_EXPIRES_AFTER = 14 * 86_400
#: How triggers learn batch statuses: ``auto`` lists pages when that takes fewer requests, ``list`` always
#: lists first, ``retrieve`` asks for each batch on its own (for gateways without a usable ``GET /batches``).
STATUS_POLLING = ("auto", "list", "retrieve")


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the hook needs from an Airflow connection, validated once.

    :param conn_id: the connection id, for error messages.
    :param api_key: the secret; kept out of ``repr`` and never logged.
    :param base_url: scheme, host and path prefix every API path is appended to.
    :param api_type: ``openai`` (Bearer header) or ``azure`` (``api-key`` header).
    :param organization: sent as ``OpenAI-Organization`` when set.
    :param project: sent as ``OpenAI-Project`` when set.
    :param api_version: Azure ``api-version`` query parameter, added to every call when set.
    :param connect_timeout: seconds for the TCP/TLS handshake.
    :param read_timeout: seconds between bytes of a response.
    :param max_retries: retries of one call on a transient failure.
    :param backoff_factor: first backoff step in seconds; doubles each retry, jitter added.
    :param backoff_max: cap of one backoff step.
    :param max_retry_after: longest ``Retry-After`` hint obeyed; a longer one ends the retries.
    :param verify_ssl: verify TLS certificates (on unless turned off explicitly).
    :param input_expires_after: seconds after which a batch input uploaded by the operators expires
        (``expires_after`` on upload); ``None`` sends none, for a service that refuses the field.
    :param status_polling: how triggers of this connection learn statuses, one of :data:`STATUS_POLLING`.
    :param file_limits: the most one batch input file may hold on this service: by ``api_type`` (OpenAI
        50,000 requests, Azure 100,000; 200 MB; 50,000 embedding inputs), each replaced by the extras
        ``batch_max_requests``, ``batch_max_bytes`` and ``batch_max_embedding_inputs`` (e.g. for a gateway).
    :param enqueued_limits: the organization's enqueued limits a job budgets against (extras
        ``max_enqueued_tokens`` and ``max_enqueued_requests``: a number, or ``{model: number}``); not set by
        default, since the service does not say what they are.
    """

    conn_id: str
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    api_type: str = "openai"
    organization: str | None = None
    project: str | None = None
    api_version: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0
    verify_ssl: bool = True
    input_expires_after: int | None = DEFAULT_INPUT_EXPIRES_AFTER
    status_polling: str = "auto"
    file_limits: FileLimits = field(default_factory=FileLimits)
    enqueued_limits: EnqueuedLimits = field(default_factory=EnqueuedLimits)

    @classmethod
    def from_connection_fields(
        cls,
        conn_id: str,
        *,
        host: str | None,
        password: str | None,
        extra: str | Mapping[str, Any] | None,
        schema: str | None = None,
        port: int | None = None,
    ) -> ConnectionSettings:
        """Validate the fields of an Airflow connection.

        Pure function of the fields, so the synchronous and the asynchronous connection lookups share it.

        :raises InvalidConnectionError: naming the field that is missing or wrong.
        """
        extras = _parse_extra(conn_id, extra)
        client_kwargs = extras.get("openai_client_kwargs")
        # Connections made for apache-airflow-providers-openai keep these under openai_client_kwargs.
        legacy = client_kwargs if isinstance(client_kwargs, Mapping) else {}

        api_key = password or extras.get("api_key") or legacy.get("api_key")
        if not api_key or not str(api_key).strip():
            raise InvalidConnectionError(conn_id, "no API key: put it in the connection's Password field.")
        base_url = _base_url(conn_id, host or legacy.get("base_url") or extras.get("base_url"), schema, port)

        api_type = str(extras.get("api_type") or "openai").strip().lower()
        if api_type not in API_TYPES:
            raise InvalidConnectionError(
                conn_id, f"unknown api_type {api_type!r} in extra; use one of {', '.join(API_TYPES)}."
            )
        status_polling = str(extras.get("status_polling") or "auto").strip().lower()
        if status_polling not in STATUS_POLLING:
            raise InvalidConnectionError(
                conn_id, f"unknown status_polling {status_polling!r} in extra; use one of {', '.join(STATUS_POLLING)}."
            )
        return cls(
            conn_id=conn_id,
            api_key=str(api_key).strip(),
            base_url=base_url,
            api_type=api_type,
            organization=opt_text(extras.get("organization") or legacy.get("organization")),
            project=opt_text(extras.get("project") or legacy.get("project")),
            api_version=opt_text(extras.get("api_version")),
            connect_timeout=_number(conn_id, extras, "connect_timeout", 10.0, minimum=0.1),
            read_timeout=_number(conn_id, extras, "timeout", 60.0, minimum=1.0),
            max_retries=int(_number(conn_id, extras, "max_retries", 5, minimum=0, maximum=20)),
            backoff_factor=_number(conn_id, extras, "backoff_factor", 0.5, minimum=0.0),
            backoff_max=_number(conn_id, extras, "backoff_max", 30.0, minimum=0.0),
            max_retry_after=_number(conn_id, extras, "max_retry_after", 60.0, minimum=0.0),
            verify_ssl=_boolean(conn_id, extras, "verify_ssl", True),
            # 0 turns it off.
            input_expires_after=int(
                _number(conn_id, extras, "input_expires_after", DEFAULT_INPUT_EXPIRES_AFTER, minimum=0)
            )
            or None,
            status_polling=status_polling,
            file_limits=_file_limits(conn_id, extras, api_type),
            enqueued_limits=EnqueuedLimits(
                tokens=_enqueued(conn_id, extras, "max_enqueued_tokens"),
                requests=_enqueued(conn_id, extras, "max_enqueued_requests"),
            ),
        )

    def with_overrides(self, **changes: Any) -> ConnectionSettings:
        """A copy with some fields replaced (``None`` values are ignored)."""
        from dataclasses import replace

        return replace(self, **{key: value for key, value in changes.items() if value is not None})

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self) -> dict[str, str]:
        """Authentication and identification headers. Never log these."""
        headers = {"User-Agent": f"airflow-provider-openai-batch/{__version__}"}
        if self.api_type == "azure":
            headers["api-key"] = self.api_key
        else:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    def query(self, params: Mapping[str, Any] | None) -> dict[str, str]:
        query = {key: str(value) for key, value in (params or {}).items() if value is not None}
        if self.api_version:
            query["api-version"] = self.api_version
        return query


def _parse_extra(conn_id: str, extra: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if extra is None or extra == "":
        return {}
    if isinstance(extra, Mapping):
        return extra
    try:
        parsed = json.loads(extra)
    except ValueError as exc:
        raise InvalidConnectionError(conn_id, f"Extra is not valid JSON ({exc}).") from None
    if not isinstance(parsed, Mapping):
        raise InvalidConnectionError(conn_id, "Extra must be a JSON object.")
    return parsed


def _base_url(conn_id: str, host: object, schema: str | None, port: int | None) -> str:
    raw = str(host).strip() if host else DEFAULT_BASE_URL
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        if schema in ("http", "https") and "://" not in raw:
            # URI-style connections ("openai_batch://:key@host:port/path?...") split the URL apart.
            raw = f"{schema}://{raw}{':' + str(port) if port else ''}"
            parts = urlsplit(raw)
        else:
            raise InvalidConnectionError(
                conn_id,
                f"base URL {raw!r} (the Host field) needs a scheme and a host, e.g. {DEFAULT_BASE_URL}.",
            )
    elif (port and parts.port is None) or (schema and not parts.path.strip("/")):
        # URI-style connections with the protocol in the host ("openai-batch://https://:key@host:port/v1")
        # arrive as host "https://host", port and schema "v1": put the port and the path back.
        netloc = f"{parts.netloc}:{port}" if port and parts.port is None else parts.netloc
        path = parts.path if parts.path.strip("/") or not schema else "/" + schema.strip("/")
        raw = f"{parts.scheme}://{netloc}{path}"
    if parts.query or parts.fragment:
        raise InvalidConnectionError(
            conn_id,
            "base URL must not carry a query or fragment; put api-version in the extra 'api_version'.",
        )
    if parts.username or parts.password:
        raise InvalidConnectionError(conn_id, "base URL must not embed credentials; use the Password field.")
    return raw.rstrip("/")


def opt_text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _number(
    conn_id: str,
    extras: Mapping[str, Any],
    key: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
) -> float:
    value = extras.get(key)
    if value is None or value == "":
        return float(default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidConnectionError(conn_id, f"extra {key!r} must be a number, got {value!r}.") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise InvalidConnectionError(conn_id, f"extra {key!r} must be {bounds}, got {value!r}.")
    return number


def _file_limits(conn_id: str, extras: Mapping[str, Any], api_type: str) -> FileLimits:
    limits = FileLimits.for_api_type(api_type)
    overrides = {
        name: int(_number(conn_id, extras, f"batch_{name}", getattr(limits, name), minimum=1))
        for name in ("max_requests", "max_bytes", "max_embedding_inputs")
    }
    return limits.with_overrides(**overrides)


def _enqueued(conn_id: str, extras: Mapping[str, Any], key: str) -> EnqueuedLimit:
    try:
        return EnqueuedLimit.parse(extras.get(key), name=f"extra {key!r}")
    except ValueError as exc:
        raise InvalidConnectionError(conn_id, f"{exc}.") from None


def _boolean(conn_id: str, extras: Mapping[str, Any], key: str, default: bool) -> bool:
    value = extras.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise InvalidConnectionError(conn_id, f"extra {key!r} must be true or false, got {value!r}.")
