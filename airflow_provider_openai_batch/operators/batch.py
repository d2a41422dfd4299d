"""Create, Cancel and Download operators for OpenAI batches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from airflow.sdk import BaseOperator

from airflow_provider_openai_batch._compat import AirflowFailException, default_deferrable
from airflow_provider_openai_batch.budget import check_cost_arguments, enforce_budget
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.hooks.validation import check_create_arguments as check_create_arguments
from airflow_provider_openai_batch.idempotency import look_back, task_instance_key
from airflow_provider_openai_batch.job.names import local_file_name
from airflow_provider_openai_batch.links import OpenAIBatchLink
from airflow_provider_openai_batch.operators.input_file import InputFile, jsonl_name
from airflow_provider_openai_batch.wait_decision import WaitPolicy
from airflow_provider_openai_batch.waiting import BatchWaitMixin, as_seconds
from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_openai_batch.batch_input import InputSummary
    from airflow_provider_openai_batch.models import Batch

__all__ = ["OpenAIBatchCancelOperator", "OpenAIBatchCreateOperator", "OpenAIBatchDownloadOperator"]

#: How long a waiting operator waits by default: the 24 h completion window plus time to finalize.
DEFAULT_WAIT_TIMEOUT = timedelta(hours=26)


class OpenAIBatchCreateOperator(BatchWaitMixin, BaseOperator):
    """Creates a batch, from an uploaded file id or from a JSONL file it validates and uploads.

    Idempotent: the batch is tagged in ``metadata`` with a key derived from the dag, task, run and map
    index (and the input), and a retry or a cleared task instance reuses the batch that carries it instead of
    creating and billing a second one, when that batch is still running or completed with results that still
    exist. A first try does not look; a later one looks back to its DAG run's start.

    XComs: ``batch_id`` (pushed the moment the batch exists, before any waiting) and ``return_value`` =
    the batch id. With ``input_file`` also ``estimate`` (the pre-flight cost bound, pushed before the
    upload). With ``wait_for_completion`` also ``output_file_id``, ``error_file_id``, ``batch`` and ``cost``
    (tokens and USD at batch prices, see :mod:`~airflow_provider_openai_batch.pricing`). With ``dry_run``,
    ``return_value`` is the estimate and nothing else happens.

    :param endpoint: API endpoint of every request, e.g. ``/v1/chat/completions`` (templated).
    :param input_file_id: an uploaded ``purpose=batch`` file (templated). Give this or ``input_file``.
    :param input_file: a local path, a URI (``s3://``, ``gs://``, ``file://``, ...) or an
        ``ObjectStoragePath`` of a JSONL file (templated). It is validated (every line, with line numbers in
        the error) before anything is uploaded, then streamed up.
    :param completion_window: ``24h`` on OpenAI (templated); not checked here since gateways differ.
    :param metadata: up to 15 string pairs of your own (the 16th is the idempotency tag, under a reserved key)
        (templated).
    :param output_expires_after: seconds after which output files expire, or ``{"anchor": "created_at",
        "seconds": N}``; a template may render either as a string (templated).
    :param input_expires_after: seconds after which the input this task uploads expires; ``None``: the
        connection's ``input_expires_after`` (14 days), ``0``: no expiry sent (for a service that refuses one).
    :param conn_id: Airflow connection id.
    :param wait_for_completion: wait until the batch is terminal, then judge it like the sensor.
    :param deferrable: wait in the triggerer (no worker slot); default ``[operators] default_deferrable``.
    :param poll_interval: seconds between polls while waiting.
    :param wait_timeout: how long to wait (default 26 h); the batch is left running when it elapses.
    :param allow_partial: see :class:`~airflow_provider_openai_batch.sensors.batch.OpenAIBatchSensor`.
    :param max_failed_requests: see :class:`~airflow_provider_openai_batch.sensors.batch.OpenAIBatchSensor`.
    :param cancel_on_kill: cancel the batch this task created when the task is killed (marked failed or
        success, cleared, or timed out by ``execution_timeout``), also while deferred on Airflow 3.3+.
    :param delete_input_on_failure: delete the file this task uploaded when the batch cannot be created.
    :param max_consecutive_errors: transient poll failures in a row tolerated while waiting.
    :param prices: price overrides, ``{model: {"input", "output", "cached_input"?, "max_output_tokens"?}}`` in
        USD per 1M tokens at batch prices, over the shipped table and the connection extra's ``prices`` (an
        Azure deployment or a gateway has its own names and prices). Used for the ``estimate`` and ``cost``.
    :param max_cost_usd: fail before anything is uploaded when the pre-flight estimate (an upper bound of
        the cost, counted while ``input_file`` is validated) exceeds this many US dollars, or cannot be
        computed. Needs ``input_file``.
    :param dry_run: validate ``input_file`` and estimate its cost, upload nothing and create no batch;
        returns the estimate. Needs ``input_file``.
    :param max_requests: most requests ``input_file`` may hold; default: the connection's limit (by API type,
        OpenAI 50,000, Azure 100,000, or its extra ``batch_max_requests``). Set it when one service differs.
    :param max_bytes: largest ``input_file`` in bytes; default: the connection's (200 MB, ``batch_max_bytes``).
    :param max_embedding_inputs: most embedding inputs across an ``/v1/embeddings`` file; default: the
        connection's (50,000, ``batch_max_embedding_inputs``).
    """

    template_fields: Sequence[str] = (
        "endpoint",
        "input_file_id",
        "input_file",
        "completion_window",
        "metadata",
        "output_expires_after",
    )
    template_fields_renderers = {"metadata": "json"}
    operator_extra_links = (OpenAIBatchLink(),)
    ui_color = "#10a37f"

    def __init__(
        self,
        *,
        endpoint: str,
        input_file_id: str | None = None,
        input_file: Any = None,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        output_expires_after: int | str | Mapping[str, Any] | None = None,
        input_expires_after: int | None = None,
        conn_id: str = "openai_default",
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = 60,
        wait_timeout: timedelta | float | None = DEFAULT_WAIT_TIMEOUT,
        allow_partial: bool = False,
        max_failed_requests: int | float | None = None,
        cancel_on_kill: bool = True,
        delete_input_on_failure: bool = True,
        max_consecutive_errors: int = 10,
        prices: Mapping[str, Any] | None = None,
        max_cost_usd: float | None = None,
        dry_run: bool = False,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_embedding_inputs: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (input_file_id is None) == (input_file is None):
            raise ValueError("Give exactly one of input_file_id (an uploaded file) or input_file (a JSONL to upload)")
        check_cost_arguments(max_cost_usd, dry_run, has_local_input=input_file is not None)
        self.endpoint = endpoint
        self.input_file_id = input_file_id
        self.input_file = input_file
        self.completion_window = completion_window
        self.metadata = metadata
        self.output_expires_after = output_expires_after
        self.input_expires_after = input_expires_after
        self.conn_id = conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        self.wait_timeout = wait_timeout
        self.allow_partial = allow_partial
        self.max_failed_requests = max_failed_requests
        self.cancel_on_kill = cancel_on_kill
        self.delete_input_on_failure = delete_input_on_failure
        self.max_consecutive_errors = max_consecutive_errors
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        # Not self.dry_run: BaseOperator.dry_run() is a method (render templates only) that must stay callable.
        self.dry_run_only = dry_run
        self.file_limit_overrides = {
            "max_requests": max_requests,
            "max_bytes": max_bytes,
            "max_embedding_inputs": max_embedding_inputs,
        }
        self.batch_id: str | None = None
        self.wait_policy()  # a bad value fails when the DAG is parsed, not hours later

    def wait_policy(self) -> WaitPolicy:
        return WaitPolicy(
            poll_interval=self.poll_interval,
            timeout=as_seconds(self.wait_timeout),
            cancel_on_kill=self.cancel_on_kill,
            allow_partial=self.allow_partial,
            max_failed_requests=self.max_failed_requests,
            max_consecutive_errors=self.max_consecutive_errors,
        )

    def execute(self, context: Context) -> Any:
        check_create_arguments(self.endpoint, self.metadata, self.output_expires_after, self.completion_window)
        if self.dry_run_only:
            source = InputFile(self.input_file)
            with source.open() as handle:
                summary = self._validate(context, handle, source)
            self.log.info("Dry run: nothing was uploaded and no batch was created")
            return summary.estimate.to_dict() if summary.estimate is not None else None
        batch = self._create_or_reuse(context)
        self.batch_id = batch.id
        context["ti"].xcom_push(key=XCOM_BATCH_ID, value=batch.id)
        if self.wait_for_completion:
            self.finish(context, self.wait_until_terminal(batch))
        return batch.id

    def _create_or_reuse(self, context: Context) -> Batch:
        # A first try cannot find a batch of its own: it does not look. A later one looks back to its DAG run.
        look = look_back(context)
        if look.needed:
            self.log.info("Try %s: looking for a batch an earlier try made since %s", context["ti"].try_number, look)
        if self.input_file_id is not None:
            key = task_instance_key(context, "file", self.input_file_id)
            return self.hook.create_batch(
                input_file_id=self.input_file_id,
                endpoint=self.endpoint,
                completion_window=self.completion_window,
                metadata=self.metadata,
                output_expires_after=self.output_expires_after,
                idempotency_key=key,
                not_before=look.not_before,
                look_first=look.needed,
            )
        source = InputFile(self.input_file)
        with source.open() as handle:
            summary = self._validate(context, handle, source)
            key = task_instance_key(context, "sha256", summary.sha256)
            existing = self.hook.find_batch_by_idempotency_key(key, not_before=look.not_before) if look.needed else None
            if existing is not None:
                self.log.info(
                    "Reusing batch %s created by an earlier try of this task (%s)", existing.id, existing.status.value
                )
                return existing
            handle.seek(0)
            expires = self.input_expires_after
            if expires is None:
                expires = self.hook.settings.input_expires_after
            uploaded = self.hook.upload_file(
                handle, purpose="batch", filename=jsonl_name(source.name), expires_after_seconds=expires or None
            )
        try:
            # Looked just above (or a first try): the create itself need not look again.
            return self.hook.create_batch(
                input_file_id=uploaded.id,
                endpoint=self.endpoint,
                completion_window=self.completion_window,
                metadata=self.metadata,
                output_expires_after=self.output_expires_after,
                idempotency_key=key,
                look_first=False,
            )
        except Exception:
            if self.delete_input_on_failure:
                with contextlib.suppress(Exception):
                    self.hook.delete_file(uploaded.id)
                    self.log.info("Deleted the uploaded input %s since no batch was created from it", uploaded.id)
            raise

    def _validate(self, context: Context, handle: BinaryIO, source: InputFile) -> InputSummary:
        """Check every line and estimate the cost in one pass; fail if the estimate breaks ``max_cost_usd``."""
        from airflow_provider_openai_batch.batch_input import validate_batch_input

        limits = self.hook.settings.file_limits.with_overrides(**self.file_limit_overrides)
        summary = validate_batch_input(
            handle,
            endpoint=self.endpoint,
            prices=self.price_table(),
            max_requests=limits.max_requests,
            max_bytes=limits.max_bytes,
            max_embedding_inputs=limits.max_embedding_inputs,
        )
        self.log.info(
            "Validated %s: %d requests, %d bytes, model %s", source, summary.requests, summary.bytes, summary.model
        )
        for warning in summary.warnings:
            self.log.warning("Input %s, %s", source, warning)
        enforce_budget(self, context, summary.estimate, self.max_cost_usd)
        return summary

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        batch = self.batch_from_event(event)
        self.finish(context, batch)
        return batch.id

    def on_kill(self) -> None:
        """Cancel the batch this task created (worker side; the trigger handles the deferred case).

        A failed cancel is logged, not raised (as the trigger does): the task is being killed anyway.
        """
        if self.cancel_on_kill and self.batch_id:
            try:
                batch = self.hook.cancel_batch(self.batch_id)
            except Exception as exc:
                self.log.warning("Task killed but cancelling batch %s failed: %s", self.batch_id, exc)
                return
            self.log.info("Task killed: cancel requested for batch %s (%s)", self.batch_id, batch.status.value)


class OpenAIBatchCancelOperator(BatchWaitMixin, BaseOperator):
    """Cancels a batch and (by default) waits until it is ``cancelled``.

    A batch that is already terminal is reported, not treated as an error. Returns the final status;
    pushes ``output_file_id`` (the partial results, when there are any) and ``batch``.

    :param batch_id: the batch to cancel (templated).
    :param conn_id: Airflow connection id.
    :param wait_for_completion: wait through ``cancelling`` until the batch is terminal.
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param poll_interval: seconds between polls while waiting.
    :param wait_timeout: how long to wait (cancelling takes up to ~10 minutes).
    :param max_consecutive_errors: transient poll failures in a row tolerated while waiting.
    """

    template_fields: Sequence[str] = ("batch_id",)
    operator_extra_links = (OpenAIBatchLink(),)
    ui_color = "#c0392b"

    def __init__(
        self,
        *,
        batch_id: str,
        conn_id: str = "openai_default",
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = 30,
        wait_timeout: timedelta | float | None = timedelta(hours=1),
        max_consecutive_errors: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.conn_id = conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        self.wait_timeout = wait_timeout
        self.max_consecutive_errors = max_consecutive_errors
        self.wait_policy()

    def wait_policy(self) -> WaitPolicy:
        # Killing a cancel task must not do anything surprising, and a cancelled batch is what it asked for:
        # its status is reported, never judged.
        return WaitPolicy(
            poll_interval=self.poll_interval,
            timeout=as_seconds(self.wait_timeout),
            cancel_on_kill=False,
            allow_partial=True,
            max_consecutive_errors=self.max_consecutive_errors,
        )

    def execute(self, context: Context) -> str:
        context["ti"].xcom_push(key=XCOM_BATCH_ID, value=self.batch_id)
        batch = self.hook.retrieve_batch(self.batch_id)
        if batch.status.is_terminal:
            self.log.info("Batch %s is already %s; nothing to cancel", batch.id, batch.status.value)
            return self._report(context, batch)
        batch = self.hook.cancel_batch(self.batch_id)
        self.log.info("Cancel requested for batch %s: now %s", batch.id, batch.status.value)
        if self.wait_for_completion:
            batch = self.wait_until_terminal(batch)
        return self._report(context, batch)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        return self._report(context, self.batch_from_event(event))

    def _report(self, context: Context, batch: Batch) -> str:
        self.push_batch_xcoms(context, batch)
        counts = batch.request_counts
        self.log.info(
            "Batch %s is %s: %d completed, %d failed of %d; partial output %s",
            batch.id,
            batch.status.value,
            counts.completed,
            counts.failed,
            counts.total,
            batch.output_file_id,
        )
        return batch.status.value


class OpenAIBatchDownloadOperator(BaseOperator):
    """Streams a batch's output file (and error file) to a local folder or object storage.

    Nothing is held whole in memory. Returns ``{"output": {"file_id", "path", "lines", "bytes"}, "error":
    {...} or None}``. Files are named ``<batch_id>_output.jsonl`` / ``<batch_id>_error.jsonl`` (or
    ``<file_id>.jsonl`` when a ``file_id`` is given); an id that is long or not a plain name (a gateway's may
    be 330 characters, or hold ``/``) is shortened to its start and a hash, see
    :func:`~airflow_provider_openai_batch.job.names.local_file_name`.

    :param batch_id: download the batch's output (and error) file (templated). Give this or ``file_id``.
    :param file_id: download one file (templated).
    :param destination: a local folder, a URI (``s3://bucket/prefix``) or an ``ObjectStoragePath`` (templated).
    :param include_errors: also download the error file when the batch has one.
    :param conn_id: Airflow connection id.
    """

    template_fields: Sequence[str] = ("batch_id", "file_id", "destination")
    ui_color = "#2980b9"

    def __init__(
        self,
        *,
        destination: Any,
        batch_id: str | None = None,
        file_id: str | None = None,
        include_errors: bool = True,
        conn_id: str = "openai_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (batch_id is None) == (file_id is None):
            raise ValueError("Give exactly one of batch_id or file_id")
        self.destination = destination
        self.batch_id = batch_id
        self.file_id = file_id
        self.include_errors = include_errors
        self.conn_id = conn_id

    @cached_property
    def hook(self) -> OpenAIBatchHook:
        """Built on first use: no connection lookup while a DAG file is parsed."""
        return OpenAIBatchHook(self.conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook
        if self.file_id is not None:
            return {"output": self._download(hook, self.file_id, local_file_name(self.file_id)), "error": None}
        batch = hook.retrieve_batch(str(self.batch_id))
        if not batch.status.is_terminal:
            raise AirflowFailException(
                f"Batch {batch.id} is still {batch.status.value}; wait for it (OpenAIBatchSensor) before downloading"
            )
        if not batch.output_file_id and not batch.error_file_id:
            raise AirflowFailException(f"Batch {batch.id} ({batch.status.value}) has no output or error file")
        result: dict[str, Any] = {"output": None, "error": None}
        errors = batch.error_file_id if self.include_errors else None
        for kind, file_id in (("output", batch.output_file_id), ("error", errors)):
            if file_id:
                result[kind] = self._download(hook, file_id, local_file_name(batch.id, suffix=f"_{kind}.jsonl"))
        return result

    def _download(self, hook: OpenAIBatchHook, file_id: str, name: str) -> dict[str, Any]:
        from airflow_provider_openai_batch.batch_input import STORAGE_BLOCK_SIZE, LineCounter, count_lines

        dest = self.destination
        if isinstance(dest, (str, os.PathLike)) and "://" not in os.fspath(dest):
            path = Path(dest) / name
            written = hook.download_file(file_id, path)
            lines = count_lines(path)
            where = str(path)
        else:
            from airflow.sdk import ObjectStoragePath

            target = dest if hasattr(dest, "fs") else ObjectStoragePath(os.fspath(dest))
            target = target / name
            with target.open("wb", block_size=STORAGE_BLOCK_SIZE) as raw:
                counter = LineCounter(raw)
                written = hook.download_file(file_id, cast(IO[bytes], counter))  # it has what the hook uses
            lines = counter.lines
            where = str(target)
        self.log.info("Downloaded %s to %s: %d lines, %d bytes", file_id, where, lines, written)
        return {"file_id": file_id, "path": where, "lines": lines, "bytes": written}
