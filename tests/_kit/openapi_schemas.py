"""JSON Schemas of the Batch and Files operations the provider uses, transcribed from OpenAI's OpenAPI
description (openai/openai-openapi, version 2.3.0): the same types, enums, bounds and required fields.

One documented relaxation: in the response objects ``Batch`` and ``OpenAIFile``, a property that is not
required may be ``null``. The service sends ``null`` for fields not set yet (``output_file_id`` while a batch
runs, ``expires_at`` of a file that never expires), and OpenAI's own SDK types them ``Optional``.
Request bodies and list pages get no relaxation.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["OPERATIONS", "SCHEMAS", "Operation", "schema_of"]

_TIMESTAMP: dict[str, Any] = {"type": "integer"}
_STRING: dict[str, Any] = {"type": "string"}
_NULLABLE_STRING: dict[str, Any] = {"anyOf": [_STRING, {"type": "null"}]}


def _nullable_unless_required(schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema["required"])
    properties = {
        name: value if name in required else {"anyOf": [value, {"type": "null"}]}
        for name, value in schema["properties"].items()
    }
    return {**schema, "properties": properties}


_EXPIRATION = {
    "type": "object",
    "properties": {
        "anchor": {"type": "string", "enum": ["created_at"]},
        "seconds": {"type": "integer", "minimum": 3600, "maximum": 2592000},
    },
    "required": ["anchor", "seconds"],
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Metadata": {
        "anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}],
    },
    "BatchError": {
        "type": "object",
        "properties": {
            "code": _STRING,
            "message": _STRING,
            "param": _NULLABLE_STRING,
            "line": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
    },
    "BatchRequestCounts": {
        "type": "object",
        "properties": {"total": {"type": "integer"}, "completed": {"type": "integer"}, "failed": {"type": "integer"}},
        "required": ["total", "completed", "failed"],
    },
    "Batch": _nullable_unless_required(
        {
            "type": "object",
            "properties": {
                "id": _STRING,
                "object": {"type": "string", "enum": ["batch"]},
                "endpoint": _STRING,
                "model": _STRING,
                "errors": {
                    "type": "object",
                    "properties": {
                        "object": _STRING,
                        "data": {"type": "array", "items": {"$ref": "#/$defs/BatchError"}},
                    },
                },
                "input_file_id": _STRING,
                "completion_window": _STRING,
                "status": {
                    "type": "string",
                    "enum": [
                        "validating",
                        "failed",
                        "in_progress",
                        "finalizing",
                        "completed",
                        "expired",
                        "cancelling",
                        "cancelled",
                    ],
                },
                "output_file_id": _STRING,
                "error_file_id": _STRING,
                **{
                    name: _TIMESTAMP
                    for name in (
                        "created_at",
                        "in_progress_at",
                        "expires_at",
                        "finalizing_at",
                        "completed_at",
                        "failed_at",
                        "expired_at",
                        "cancelling_at",
                        "cancelled_at",
                    )
                },
                "request_counts": {"$ref": "#/$defs/BatchRequestCounts"},
                "usage": {
                    "type": "object",
                    "properties": {
                        "input_tokens": {"type": "integer"},
                        "input_tokens_details": {
                            "type": "object",
                            "properties": {"cached_tokens": {"type": "integer"}},
                            "required": ["cached_tokens"],
                        },
                        "output_tokens": {"type": "integer"},
                        "output_tokens_details": {
                            "type": "object",
                            "properties": {"reasoning_tokens": {"type": "integer"}},
                            "required": ["reasoning_tokens"],
                        },
                        "total_tokens": {"type": "integer"},
                    },
                    "required": [
                        "input_tokens",
                        "input_tokens_details",
                        "output_tokens",
                        "output_tokens_details",
                        "total_tokens",
                    ],
                },
                "metadata": {"$ref": "#/$defs/Metadata"},
            },
            "required": ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at"],
        }
    ),
    "OpenAIFile": _nullable_unless_required(
        {
            "type": "object",
            "properties": {
                "id": _STRING,
                "bytes": {"type": "integer"},
                "created_at": _TIMESTAMP,
                "expires_at": _TIMESTAMP,
                "filename": _STRING,
                "object": {"type": "string", "enum": ["file"]},
                "purpose": {
                    "type": "string",
                    "enum": [
                        "assistants",
                        "assistants_output",
                        "batch",
                        "batch_output",
                        "fine-tune",
                        "fine-tune-results",
                        "vision",
                        "user_data",
                    ],
                },
                "status": {"type": "string", "enum": ["uploaded", "processed", "error"]},
                "status_details": _STRING,
            },
            "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
        }
    ),
    "ListBatchesResponse": {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": {"$ref": "#/$defs/Batch"}},
            "first_id": _STRING,
            "last_id": _STRING,
            "has_more": {"type": "boolean"},
            "object": {"type": "string", "enum": ["list"]},
        },
        "required": ["object", "data", "has_more"],
    },
    "ListFilesResponse": {
        "type": "object",
        "properties": {
            "object": _STRING,
            "data": {"type": "array", "items": {"$ref": "#/$defs/OpenAIFile"}},
            "first_id": _STRING,
            "last_id": _STRING,
            "has_more": {"type": "boolean"},
        },
        "required": ["object", "data", "first_id", "last_id", "has_more"],
    },
    "DeleteFileResponse": {
        "type": "object",
        "properties": {"id": _STRING, "object": {"type": "string", "enum": ["file"]}, "deleted": {"type": "boolean"}},
        "required": ["id", "object", "deleted"],
    },
    "CreateBatchRequest": {
        "type": "object",
        "properties": {
            "input_file_id": _STRING,
            "endpoint": {
                "type": "string",
                "enum": [
                    "/v1/responses",
                    "/v1/chat/completions",
                    "/v1/embeddings",
                    "/v1/completions",
                    "/v1/moderations",
                    "/v1/images/generations",
                    "/v1/images/edits",
                    "/v1/videos",
                ],
            },
            "completion_window": {"type": "string", "enum": ["24h"]},
            "metadata": {"$ref": "#/$defs/Metadata"},
            "output_expires_after": _EXPIRATION,
        },
        "required": ["input_file_id", "endpoint", "completion_window"],
    },
    "CreateFileRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "file": _STRING,
            "purpose": {"type": "string", "enum": ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]},
            "expires_after": _EXPIRATION,
        },
        "required": ["file", "purpose"],
    },
}


def schema_of(name: str) -> dict[str, Any]:
    """A self-contained schema for one component (``$ref`` resolves within it)."""
    return {**SCHEMAS[name], "$defs": SCHEMAS}


class Operation:
    """One operation: how to recognise its request, its query parameters, its body and its 200 response.

    :param query: parameter name -> JSON Schema of its value (query values arrive as text: integers are
        checked after conversion).
    :param body: name of the request body's schema; ``None`` when the operation takes no body.
    :param response: name of the 200 response's schema; ``None`` for a file's raw content.
    """

    def __init__(
        self,
        operation_id: str,
        method: str,
        path: str,
        *,
        query: dict[str, dict[str, Any]] | None = None,
        body: str | None = None,
        response: str | None = None,
    ) -> None:
        self.operation_id = operation_id
        self.method = method
        self.pattern = re.compile("^" + re.sub(r"\{[a-z_]+\}", r"[^/]+", path) + "$")
        self.query = query or {}
        self.body = body
        self.response = response

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and bool(self.pattern.match(path))


OPERATIONS = [
    Operation("createBatch", "POST", "/batches", body="CreateBatchRequest", response="Batch"),
    Operation(
        "listBatches",
        "GET",
        "/batches",
        query={"after": _STRING, "limit": {"type": "integer"}},
        response="ListBatchesResponse",
    ),
    Operation("retrieveBatch", "GET", "/batches/{batch_id}", response="Batch"),
    Operation("cancelBatch", "POST", "/batches/{batch_id}/cancel", response="Batch"),
    Operation(
        "listFiles",
        "GET",
        "/files",
        query={"purpose": _STRING, "limit": {"type": "integer"}, "order": {"enum": ["asc", "desc"]}, "after": _STRING},
        response="ListFilesResponse",
    ),
    Operation("createFile", "POST", "/files", body="CreateFileRequest", response="OpenAIFile"),
    Operation("deleteFile", "DELETE", "/files/{file_id}", response="DeleteFileResponse"),
    Operation("retrieveFile", "GET", "/files/{file_id}", response="OpenAIFile"),
    Operation("downloadFile", "GET", "/files/{file_id}/content"),
]
