"""Connection settings: where each field comes from, the bounds of every number, flags and the base URL."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from airflow_provider_openai_batch import __version__
from airflow_provider_openai_batch.exceptions import InvalidConnectionError
from airflow_provider_openai_batch.hooks._settings import DEFAULT_BASE_URL, ConnectionSettings

KEY = "sk-test-SECRET-1234"


def settings(*, host: str | None = "https://api.example.com/v1", **extra: Any) -> ConnectionSettings:
    return ConnectionSettings.from_connection_fields("c", host=host, password=KEY, extra=extra)


def refused(message: str, **extra: Any) -> None:
    with pytest.raises(InvalidConnectionError) as info:
        settings(**extra)
    assert message in str(info.value)


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings().max_retries = 50  # type: ignore[misc]


def test_an_empty_extra_string_is_no_extra() -> None:
    s = ConnectionSettings.from_connection_fields("c", host=None, password=KEY, extra="")
    assert (s.base_url, s.max_retries, s.status_polling) == (DEFAULT_BASE_URL, 5, "auto")


@pytest.mark.parametrize("password", ["   ", "\n"])
def test_a_blank_key_is_no_key(password: str) -> None:
    with pytest.raises(InvalidConnectionError, match="no API key"):
        ConnectionSettings.from_connection_fields("c", host=None, password=password, extra={})


def test_connections_made_for_the_official_provider_are_read() -> None:
    legacy = {
        "api_key": KEY,
        "base_url": "https://gateway.example.com/v1",
        "organization": "org-legacy",
        "project": "proj_legacy",
    }
    s = ConnectionSettings.from_connection_fields("c", host=None, password=None, extra={"openai_client_kwargs": legacy})
    assert (s.api_key, s.base_url, s.organization, s.project) == (
        KEY, "https://gateway.example.com/v1", "org-legacy", "proj_legacy",
    )  # fmt: skip


def test_base_url_from_the_extra_when_the_host_is_empty() -> None:
    s = settings(host=None, base_url="https://gateway.example.com/openai/")
    assert s.base_url == "https://gateway.example.com/openai"
    assert settings(host="https://host.example.com", base_url="https://extra.example.com").base_url == (
        "https://host.example.com"
    )


@pytest.mark.parametrize("value", ["list", "retrieve", " AUTO "])
def test_status_polling_choices(value: str) -> None:
    assert settings(status_polling=value).status_polling == value.strip().lower()


def test_unknown_status_polling_names_the_choices() -> None:
    refused("unknown status_polling 'pages' in extra; use one of auto, list, retrieve.", status_polling="pages")
    refused("unknown api_type 'aws' in extra; use one of openai, azure.", api_type="aws")


def test_every_number_is_read_from_its_own_key() -> None:
    s = settings(
        connect_timeout=3,
        timeout="45",
        max_retries=7,
        backoff_factor=0.25,
        backoff_max=9,
        max_retry_after=120,
        input_expires_after=3600,
        verify_ssl="false",
    )
    assert (
        s.connect_timeout, s.read_timeout, s.max_retries, s.backoff_factor, s.backoff_max, s.max_retry_after,
        s.input_expires_after, s.verify_ssl,
    ) == (3.0, 45.0, 7, 0.25, 9.0, 120.0, 3600, False)  # fmt: skip


def test_number_defaults() -> None:
    s = settings(timeout="", max_retries=None)
    assert (s.connect_timeout, s.read_timeout, s.max_retries, s.backoff_factor, s.backoff_max) == (
        10.0, 60.0, 5, 0.5, 30.0,
    )  # fmt: skip
    assert (s.max_retry_after, s.verify_ssl) == (60.0, True)
    assert s.input_expires_after == 14 * 24 * 3600  # the uploads' expiry: 14 days


@pytest.mark.parametrize(
    ("key", "lowest", "below"),
    [
        ("connect_timeout", 0.1, 0.05),
        ("timeout", 1, 0.5),
        ("max_retries", 0, -1),
        ("backoff_factor", 0, -0.5),
        ("backoff_max", 0, -0.5),
        ("max_retry_after", 0, -0.5),
        ("input_expires_after", 0, -1),
    ],
)
def test_lower_bounds_are_inclusive(key: str, lowest: float, below: float) -> None:
    settings(**{key: lowest})
    with pytest.raises(InvalidConnectionError) as info:
        settings(**{key: below})
    assert f"extra {key!r} must be >= " in str(info.value)
    assert f"got {below!r}." in str(info.value)


def test_bounded_numbers_name_both_bounds() -> None:
    assert settings(max_retries=20).max_retries == 20
    refused("extra 'max_retries' must be >= 0 and <= 20, got 21.", max_retries=21)
    refused("extra 'timeout' must be >= 1.0, got 0.5.", timeout=0.5)


@pytest.mark.parametrize("value", ["soon", [5], {"s": 5}])
def test_a_number_that_is_not_a_number_is_named(value: Any) -> None:
    refused(f"extra 'timeout' must be a number, got {value!r}.", timeout=value)


def test_zero_turns_the_input_expiry_off() -> None:
    assert settings(input_expires_after=0).input_expires_after is None
    assert settings(input_expires_after="86400").input_expires_after == 86_400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *((text, True) for text in ("true", "1", "yes", "on", " TRUE ", True)),
        *((text, False) for text in ("false", "0", "no", "off", " Off", False)),
        ("", True),
        (None, True),
    ],
)
def test_verify_ssl_flag(value: Any, expected: bool) -> None:
    assert settings(verify_ssl=value).verify_ssl is expected


def test_a_flag_that_is_not_a_flag_is_named() -> None:
    refused("extra 'verify_ssl' must be true or false, got 'maybe'.", verify_ssl="maybe")


def test_identification_headers() -> None:
    plain = settings().headers()
    assert plain == {"User-Agent": f"airflow-provider-openai-batch/{__version__}", "Authorization": f"Bearer {KEY}"}
    assert settings().query(None) == {}


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        # The port of a URI-style connection goes back into the URL, before the host's own path.
        ("https://gw.example.com/v1", None, 8443, "https://gw.example.com:8443/v1"),
        # A schema is the path only when the host has none.
        ("https://gw.example.com", "openai/v1", None, "https://gw.example.com/openai/v1"),
        ("https://gw.example.com", "/deployments/X/", None, "https://gw.example.com/deployments/X"),
        ("https://gw.example.com/X", "v1", 8443, "https://gw.example.com:8443/X"),
        ("https://gw.example.com/openai", "ignored", 443, "https://gw.example.com:443/openai"),
    ],
)
def test_uri_style_parts_are_put_back(host: str, schema: str | None, port: int | None, expected: str) -> None:
    s = ConnectionSettings.from_connection_fields("c", host=host, password=KEY, extra={}, schema=schema, port=port)
    assert s.base_url == expected


@pytest.mark.parametrize(
    ("host", "schema"),
    [
        ("ftp://files.example.com/v1", None),
        ("ftp://files.example.com/v1", "https"),  # a scheme of its own is not replaced by the schema
        ("https:///v1", None),  # no host
        ("api.example.com", None),  # no scheme, and no schema to take it from
        ("api.example.com", "v1"),
    ],
)
def test_base_url_without_scheme_or_host_is_refused(host: str, schema: str | None) -> None:
    with pytest.raises(InvalidConnectionError) as info:
        ConnectionSettings.from_connection_fields("c", host=host, password=KEY, extra={}, schema=schema)
    assert f"(the Host field) needs a scheme and a host, e.g. {DEFAULT_BASE_URL}." in str(info.value)
