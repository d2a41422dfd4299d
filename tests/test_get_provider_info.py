"""The provider metadata: schema-valid, registered through the entry point, and consistent with the hook."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import warnings
from importlib.resources import files
from typing import Any

import jsonschema
import pytest

from airflow_provider_openai_batch.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

DISTRIBUTION = "airflow-provider-openai-batch"


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return get_provider_info()


def airflow_schema() -> dict[str, Any]:
    return json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())


def test_validates_against_airflows_schema(info: dict[str, Any]) -> None:
    jsonschema.validate(info, airflow_schema())


def test_is_plain_json(info: dict[str, Any]) -> None:
    assert json.loads(json.dumps(info)) == info


def test_package_name_and_version_match_the_distribution(info: dict[str, Any]) -> None:
    dist = importlib.metadata.distribution(DISTRIBUTION)
    assert info["package-name"] == dist.metadata["Name"] == DISTRIBUTION
    assert dist.version in info["versions"]


def test_entry_point_is_registered(info: dict[str, Any]) -> None:
    points = [
        ep
        for ep in importlib.metadata.entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_provider_openai_batch")
    ]
    assert len(points) == 1
    (point,) = points
    assert point.name == "provider_info"
    assert point.value == "airflow_provider_openai_batch.get_provider_info:get_provider_info"
    assert point.dist is not None and point.dist.name == DISTRIBUTION
    assert point.load() is get_provider_info
    assert point.load()() == info


def test_connection_type_points_at_the_hook(info: dict[str, Any]) -> None:
    (conn_type,) = info["connection-types"]
    module_name, _, class_name = conn_type["hook-class-name"].rpartition(".")
    hook_class = getattr(importlib.import_module(module_name), class_name)
    assert hook_class is OpenAIBatchHook
    assert conn_type["connection-type"] == OpenAIBatchHook.conn_type == "openai_batch"
    assert conn_type["hook-name"] == OpenAIBatchHook.hook_name
    assert OpenAIBatchHook.default_conn_name == "openai_default"


def test_ui_field_behaviour_matches_the_provider_info_form(info: dict[str, Any]) -> None:
    (conn_type,) = info["connection-types"]
    assert OpenAIBatchHook.get_ui_field_behaviour() == conn_type["ui-field-behaviour"] == UI_FIELD_BEHAVIOUR
    assert OpenAIBatchHook.get_connection_form_fields() == conn_type["conn-fields"] == CONN_FIELDS
    behaviour = conn_type["ui-field-behaviour"]
    assert set(behaviour) <= {"hidden-fields", "relabeling", "placeholders"}
    standard = {"description", "host", "schema", "login", "password", "port", "extra"}
    assert set(behaviour["hidden-fields"]) <= standard
    assert set(behaviour["relabeling"]) <= standard
    assert set(behaviour["placeholders"]) <= standard | set(CONN_FIELDS)
    # the fields the hook reads are not hidden
    assert {"host", "password"}.isdisjoint(behaviour["hidden-fields"])


@pytest.mark.parametrize("name", sorted(CONN_FIELDS))
def test_conn_fields_are_valid_and_accepted_by_the_hook(name: str) -> None:
    field = CONN_FIELDS[name]
    assert field["label"] and field["description"]
    jsonschema.Draft7Validator.check_schema(field["schema"])
    default = field["schema"].get("default")
    jsonschema.validate(default, field["schema"])
    jsonschema.validate(None, field["schema"])  # every extra is optional


def test_conn_field_defaults_are_the_hooks_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = {name: field["schema"]["default"] for name, field in CONN_FIELDS.items() if "default" in field["schema"]}
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps({"conn_type": "openai_batch", "password": "sk-test-SECRET-1234", "extra": defaults}),
    )
    with_defaults = OpenAIBatchHook().settings
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps({"conn_type": "openai_batch", "password": "sk-test-SECRET-1234"})
    )
    assert OpenAIBatchHook().settings == with_defaults


def test_every_referenced_module_and_class_imports(info: dict[str, Any]) -> None:
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(section, []):
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for path in info.get("extra-links", []):
        module_name, _, class_name = path.rpartition(".")
        assert hasattr(importlib.import_module(module_name), class_name), path


def test_airflows_providers_manager_registers_the_provider() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.providers[DISTRIBUTION].version == importlib.metadata.version(DISTRIBUTION)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hook_info = manager.hooks["openai_batch"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_openai_batch.hooks.openai_batch.OpenAIBatchHook"
    assert hook_info.connection_testable is True
