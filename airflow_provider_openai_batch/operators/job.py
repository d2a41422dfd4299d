"""OpenAIBatchJobOperator: one JSONL input of any size in, one merged output (in input order) out."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_openai_batch._compat import AirflowFailException, default_deferrable
from airflow_provider_openai_batch.budget import check_cost_arguments, enforce_budget, task_price_table
from airflow_provider_openai_batch.capacity import EnqueuedLimit
from airflow_provider_openai_batch.job.deadline import check_on_deadline, parse_deadline
from airflow_provider_openai_batch.outcome import FailedRequestsPolicy
from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_IDS, XCOM_MANIFEST

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_openai_batch.capacity import EnqueuedLimits
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.limits import ShardLimits
    from airflow_provider_openai_batch.pricing import PriceTable

__all__ = ["XCOM_BATCH_IDS", "XCOM_MANIFEST", "OpenAIBatchJobOperator"]

_OUTPUT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,149}")


class OpenAIBatchJobOperator(BaseOperator):
    """Runs one JSONL input of any size as one job: split into batches, wait once, merge in input order.

    1. **Split**: the input is read once, streaming; every line is checked (problems are reported with
       their line numbers before anything is uploaded), and the requests are cut, at line boundaries, into
       shards within the connection's per-batch limits (requests, bytes, embedding inputs) or smaller ones
       you set. An input that mixes models gets shards of one model each.
    2. **Submit**: each shard becomes a batch tagged with the job's key (the task instance and the input's
       hash: never the try, the round or a limit) and the shard's place. A retry, a clear, or a try after a
       limit change first reads every batch of the job from the service (their output and error files, line by
       line) and sends only the lines no batch answered and none still holds, cut under its own limits: an
       answered line is never billed twice.
    3. **Wait once**: one deferral, one trigger for all shard batches (no worker slot), with a progress line
       for the whole job.
    4. **Merge**: outputs and errors of every batch of the job (of every try) into ``<name>_output.jsonl`` and
       ``<name>_error.jsonl`` at ``destination`` (``<name>``: ``output_name``, else the input's stem, the run id
       and the map index), in input order: answers (2xx) in the output file, failed and unanswered lines in the
       error file. Memory stays small whatever the job's size (on-disk indexes).
    5. **Judge** the whole job as the sensor judges one batch, and return the manifest.

    XComs: ``estimate`` (the pre-flight cost bound, before any upload), ``batch_ids`` (as soon as all shard
    batches exist), ``cost`` (tokens and USD at batch prices over every shard), ``manifest`` and
    ``return_value`` (the manifest: every shard's batch id, line range, status and counts; the merged
    files' paths, lines and bytes; totals, failed lines by error code, token usage).

    :param endpoint: the endpoint of every request, e.g. ``/v1/chat/completions`` (templated).
    :param input_file: a local path, a URI (``s3://``, ``file://``, ...) or an ``ObjectStoragePath`` of the
        JSONL input (templated). It must stay unchanged until the job ends: the merge reads it again.
    :param destination: a local folder, a URI or an ``ObjectStoragePath`` for the merged files (templated).
    :param completion_window: ``24h`` on OpenAI (templated).
    :param metadata: up to 15 string pairs of your own, put on every shard batch (templated).
    :param output_expires_after: seconds after which the shard batches' output files expire (templated).
    :param conn_id: Airflow connection id; its API type sets the per-batch limits (OpenAI: 50,000 requests,
        Azure: 100,000; 200 MB; 50,000 embedding inputs).
    :param max_requests_per_batch: a smaller request limit per shard.
    :param max_bytes_per_batch: a smaller byte limit per shard.
    :param max_embedding_inputs_per_batch: a smaller embedding-input limit per shard.
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param poll_interval: seconds between poll rounds while waiting.
    :param wait_timeout: how long to wait (default 26 h); the batches are left running when it elapses.
    :param allow_partial: accept expired or cancelled shard batches that kept some results.
    :param max_failed_requests: failed or unanswered lines the job may have: a count or a share of the
        job's requests; ``None`` accepts any number short of all.
    :param cancel_on_kill: cancel every shard batch of this task still running when the task is killed
        (also while deferred on Airflow 3.3+).
    :param max_consecutive_errors: transient poll failures in a row tolerated while waiting.
    :param max_resubmits: rounds of resubmission in one try: after the shard batches end, the lines that failed
        for a passing reason (expired, left out of every file, HTTP 408/429/5xx, timeouts) run again as new
        batches, up to this many times; lines whose request is at fault (400 ``invalid_request_error``, content
        policy) never do. A new try (a retry or a clear) sends what is left at its start, then may run this many
        rounds of its own.
    :param max_enqueued_tokens: the organization's enqueued-token limit (or the share of it this job may use):
        a number for every model, or ``{model: number}`` (``"*"`` for the models not named); it replaces the
        connection extra of the same name. Shard batches are then admitted under it: a shard is submitted only
        while its estimated tokens plus those of the same model's shard batches still running fit, and the
        rest follow as earlier ones finish (the deferred task wakes, submits and defers again, holding no
        worker slot meanwhile). The estimate of a shard is its size in bytes, an upper bound on its input
        tokens; shards are cut to fit the smallest limit alone. A shard batch that still fails with
        ``token_limit_exceeded`` or ``request_limit_exceeded`` is put back in the queue after a doubling
        back-off (up to 8 times), not counted as a failure of its lines. Resubmission rounds
        (``max_resubmits``) are admitted like the input's shards: their files are uploaded at once, their
        batches created as capacity allows.
    :param max_enqueued_requests: the organization's enqueued-request limit, as ``max_enqueued_tokens`` (a
        number or ``{model: number}``; over the connection extra of the same name), counted in requests
        (lines); shards are cut to at most the smallest of it. Both limits apply when both are set.
    :param deadline: when the job must end (templated): a ``datetime`` with a time zone (or an ISO-8601 string
        with its offset), or a duration counted from the DAG run's start: a ``timedelta``, seconds, or an ISO-8601
        duration (``PT6H``). The run's start, unlike the task's, is the same in every try and after deferrals,
        so a retry never pushes the deadline out. Checked before anything is uploaded; a deadline already past
        fails the task then. ``None`` (or a template that renders empty): no deadline.
    :param on_deadline: what happens when the deadline passes with work unfinished. Then no further shard or
        resubmission round is submitted, and every batch of this job still running is cancelled (the job's
        own only). ``"fail"`` (default): fail at once with the counts. ``"partial"``: wait until the cancelled
        batches end, merge what exists, and succeed if ``max_failed_requests`` allows (cancelled batches are
        accepted without ``allow_partial``); the lines not run are in the error file as ``deadline_exceeded``.
        Enforced while deferred (the trigger wakes at the deadline) and in the worker.
    :param prices: price overrides, ``{model: {"input", "output", "cached_input"?, "max_output_tokens"?}}`` in
        USD per 1M tokens at batch prices, over the shipped table and the connection extra's ``prices``.
        Used for the ``estimate`` and ``cost`` XComs.
    :param max_cost_usd: fail before anything is uploaded when the pre-flight estimate of the whole input
        (an upper bound, counted while it is split) exceeds this many US dollars, or cannot be computed.
    :param dry_run: check, split and estimate the input, then stop: nothing is uploaded and no batch is
        created; returns the estimate.
    :param output_name: the merged files' common start (templated): ``<output_name>_output.jsonl`` and
        ``<output_name>_error.jsonl``. Default: the input's stem, the run id and the map index
        (``in__scheduled__2026-01-01T00_00_00_00_00__3``), so mapped tasks and daily runs never share a file.
    :param overwrite: replace merged files that another task instance wrote. Without it such a file is never
        replaced: the task fails before anything is uploaded, naming the file and who wrote it (a retry or a
        clear of the same task instance may always replace its own).
    """

    template_fields: Sequence[str] = (
        "endpoint",
        "input_file",
        "destination",
        "completion_window",
        "metadata",
        "output_expires_after",
        "deadline",
        "output_name",
    )
    template_fields_renderers = {"metadata": "json"}
    ui_color = "#10a37f"

    def __init__(
        self,
        *,
        endpoint: str,
        input_file: Any,
        destination: Any,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        output_expires_after: int | Mapping[str, Any] | None = None,
        conn_id: str = "openai_default",
        max_requests_per_batch: int | None = None,
        max_bytes_per_batch: int | None = None,
        max_embedding_inputs_per_batch: int | None = None,
        deferrable: bool | None = None,
        poll_interval: float = 60,
        wait_timeout: timedelta | float | None = timedelta(hours=26),
        allow_partial: bool = False,
        max_failed_requests: int | float | None = None,
        cancel_on_kill: bool = True,
        max_consecutive_errors: int = 10,
        max_resubmits: int = 0,
        max_enqueued_tokens: int | Mapping[str, int] | None = None,
        max_enqueued_requests: int | Mapping[str, int] | None = None,
        deadline: Any = None,
        on_deadline: str = "fail",
        prices: Mapping[str, Any] | None = None,
        max_cost_usd: float | None = None,
        dry_run: bool = False,
        output_name: str | None = None,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        FailedRequestsPolicy(max_failed_requests)
        check_cost_arguments(max_cost_usd, dry_run, has_local_input=True)
        self.endpoint = endpoint
        self.input_file = input_file
        self.destination = destination
        self.completion_window = completion_window
        self.metadata = metadata
        self.output_expires_after = output_expires_after
        self.conn_id = conn_id
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self.max_embedding_inputs_per_batch = max_embedding_inputs_per_batch
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        self.wait_timeout = wait_timeout
        self.allow_partial = allow_partial
        self.max_failed_requests = max_failed_requests
        self.cancel_on_kill = cancel_on_kill
        self.max_consecutive_errors = max_consecutive_errors
        if isinstance(max_resubmits, bool) or not isinstance(max_resubmits, int) or max_resubmits < 0:
            raise ValueError(f"max_resubmits must be an integer >= 0, got {max_resubmits!r}")
        self.max_resubmits = max_resubmits
        # Checked now (a clear error when the DAG is parsed); the connection's own are checked before the split.
        EnqueuedLimit.parse(max_enqueued_tokens, name="max_enqueued_tokens")
        EnqueuedLimit.parse(max_enqueued_requests, name="max_enqueued_requests")
        self.max_enqueued_tokens = max_enqueued_tokens
        self.max_enqueued_requests = max_enqueued_requests
        if not isinstance(deadline, str):  # a string may be a template: checked once rendered
            parse_deadline(deadline)
        self.deadline = deadline
        self.on_deadline = check_on_deadline(on_deadline)
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        # Not self.dry_run: BaseOperator.dry_run() is a method (render templates only) that must stay callable.
        self.dry_run_only = dry_run
        self.output_name = output_name
        self.overwrite = overwrite
        #: the job's clock and its waits in the worker (tests give a clock they control)
        self._clock: Callable[[], float] = time.time
        self._sleep: Callable[[float], None] = time.sleep
        self.batch_ids: list[str] = []

    @cached_property
    def hook(self) -> OpenAIBatchHook:
        """Built on first use: no connection lookup while a DAG file is parsed."""
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

        return OpenAIBatchHook(self.conn_id)

    def price_table(self) -> PriceTable:
        """The shipped prices, overridden by the connection extra's ``prices``, then by ``self.prices``."""
        return task_price_table(self)

    @cached_property
    def enqueued_limits(self) -> EnqueuedLimits:
        """The enqueued limits shard batches are admitted under: each of this task's replaces the connection's."""
        return self.hook.settings.enqueued_limits.overridden(
            tokens=EnqueuedLimit.parse(self.max_enqueued_tokens, name="max_enqueued_tokens"),
            requests=EnqueuedLimit.parse(self.max_enqueued_requests, name="max_enqueued_requests"),
        )

    # -- split and submit ------------------------------------------------------------------------

    def limits(self) -> ShardLimits:
        """The connection's per-batch limits (by API type, or its extras), narrowed by this task's own and cut
        to the smallest enqueued limit (a shard's estimate is its bytes and lines: each shard fits alone)."""
        limits = self.hook.settings.file_limits.narrowed(
            max_requests=self.max_requests_per_batch,
            max_bytes=self.max_bytes_per_batch,
            max_embedding_inputs=self.max_embedding_inputs_per_batch,
        )
        tokens, requests = self.enqueued_limits.tokens.smallest, self.enqueued_limits.requests.smallest
        return limits.narrowed(
            max_bytes=min(tokens, limits.max_bytes) if tokens is not None else None,
            max_requests=min(requests, limits.max_requests) if requests is not None else None,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_openai_batch.operators._job_deadline import resolve_job_deadline
        from airflow_provider_openai_batch.operators._job_run import JobRunner
        from airflow_provider_openai_batch.operators._job_split import split_job
        from airflow_provider_openai_batch.operators.batch import check_create_arguments
        from airflow_provider_openai_batch.operators.input_file import InputFile

        # Everything the client can check is checked before anything is uploaded or billed.
        check_create_arguments(self.endpoint, self.metadata, self.output_expires_after, self.completion_window)
        deadline = resolve_job_deadline(
            context, self.deadline, self.on_deadline, log=self.log, dry_run=self.dry_run_only, now=self._clock()
        )
        limits = self.limits()

        source = InputFile(self.input_file)
        with tempfile.TemporaryDirectory(prefix="openai-batch-job-") as work:
            split = split_job(source, work, endpoint=self.endpoint, limits=limits, log=self.log)
            if split.estimator is not None:
                estimate = split.estimator.result(split.plan.endpoint, self.price_table())
                enforce_budget(self, context, estimate, self.max_cost_usd)
                if self.dry_run_only:
                    self.log.info("Dry run: nothing was uploaded and no batch was created")
                    return estimate.to_dict()
            self._claim_destination(context)
            runner = JobRunner(self, context, Path(work), clock=self._clock, sleep=self._sleep)
            plan, batches = runner.start(split, deadline)
            return runner.run(plan, batches)

    def merged_names(self, context: Context | Mapping[str, Any]) -> tuple[str, str]:
        """The merged ``(output, error)`` file names of this task instance."""
        from airflow_provider_openai_batch.job.destination import merged_names
        from airflow_provider_openai_batch.operators.input_file import InputFile

        if self.output_name:
            base = str(self.output_name)
            if not _OUTPUT_NAME.fullmatch(base):
                raise ValueError(
                    f"output_name {base!r} is not a file name: use 1 to 150 letters, digits, '.', '_' or '-', not "
                    "starting with '.'"
                )
            return f"{base}_output.jsonl", f"{base}_error.jsonl"
        return merged_names(context, InputFile(self.input_file).name)

    def _claim_destination(self, context: Context) -> None:
        """Before anything is uploaded: the merged names are this task instance's (or ``overwrite`` says so)."""
        from airflow_provider_openai_batch.exceptions import DestinationOwnedError
        from airflow_provider_openai_batch.job.destination import Destination, task_instance_owner

        target = Destination(self.destination, owner=task_instance_owner(context), overwrite=self.overwrite)
        try:
            target.check(self.merged_names(context))
        except DestinationOwnedError as exc:
            raise AirflowFailException(str(exc)) from exc

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired (a batch ended, a back-off or the deadline came): the runner goes on."""
        from airflow_provider_openai_batch.operators._job_run import JobRunner
        from airflow_provider_openai_batch.operators._job_wait import resume_from_event

        plan, batches = resume_from_event(event, retrieve=self.hook.retrieve_batch)
        with tempfile.TemporaryDirectory(prefix="openai-batch-job-") as work:
            return JobRunner(self, context, Path(work), clock=self._clock, sleep=self._sleep).run(plan, batches)

    def on_kill(self) -> None:
        """Cancel this task's shard batches that are still running (worker side; the trigger covers deferral)."""
        if not self.cancel_on_kill:
            return
        for batch_id in self.batch_ids:
            try:
                batch = self.hook.cancel_batch(batch_id)
                self.log.info("Task killed: cancel requested for batch %s (%s)", batch_id, batch.status.value)
            except Exception as exc:
                self.log.warning("Task killed but cancelling batch %s failed: %s", batch_id, exc)
