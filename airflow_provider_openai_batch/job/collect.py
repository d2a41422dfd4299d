"""Fetch every shard batch's result files and merge them into the job's two files at its destination."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from airflow_provider_openai_batch.exceptions import NotFoundError
from airflow_provider_openai_batch.job.destination import Destination
from airflow_provider_openai_batch.job.merge import MergeStats, Overdue, ResultFile, merge_results
from airflow_provider_openai_batch.job.names import local_file_name
from airflow_provider_openai_batch.job.plan import JobPlan
from airflow_provider_openai_batch.models import Batch

__all__ = ["MergedJob", "collect_results"]


@dataclass(frozen=True)
class MergedJob:
    """The merged files (``path``, ``lines``, ``bytes``; no error file when nothing failed) and how it went."""

    output: dict[str, Any]
    error: dict[str, Any] | None
    stats: MergeStats
    result_files: int
    download_seconds: float
    merge_seconds: float
    #: with ``retry_dir``: the input lines of retryable failures, and their input line numbers (8 bytes each).
    retry: Path | None = None
    retry_numbers: Path | None = None


def collect_results(
    plan: JobPlan,
    batches: Mapping[str, Batch],
    *,
    download: Callable[[str, Path], Any],
    open_input: Callable[[], AbstractContextManager[IO[Any]]],
    names: tuple[str, str],
    destination: Any,
    owner: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    retry_dir: Path | None = None,
    overdue: Overdue | None = None,
    log: Any = None,
) -> MergedJob:
    """Download the shard batches' output and error files to a scratch folder, then merge them in input order
    into the two ``names`` at ``destination``.

    :param plan: the job's plan; every shard has its batch in ``batches``.
    :param batches: the shard batches, terminal, by id.
    :param download: ``(file_id, local path)``: streams one file from the API (the hook's ``download_file``).
    :param open_input: opens the job's input again, in binary, at its start.
    :param names: the merged ``(output, error)`` file names (see
        :func:`~airflow_provider_openai_batch.job.destination.merged_names`).
    :param destination: a local folder, a URI or an ``ObjectStoragePath``.
    :param owner: the task instance writing them: a file another one wrote is never replaced.
    :param overwrite: replace the files whoever wrote them.
    :param retry_dir: where to write the input lines of retryable failures (``retry.jsonl``), for a
        resubmission; ``None``: not written.
    :param overdue: what the job's deadline left unrun (shards never submitted have no batch and are skipped).
    :param log: where to warn about a result file that is gone.
    """
    with tempfile.TemporaryDirectory(prefix="openai-batch-merge-") as scratch:
        work = Path(scratch)
        started = time.monotonic()
        results: list[ResultFile] = []
        cancelled = set(plan.deadline.cancelled) if plan.deadline is not None else set()
        for shard in plan.shards:
            if shard.batch_id is None and overdue is not None:  # never submitted before the deadline
                continue
            batch = batches[str(shard.batch_id)]
            # Errors first, answers last: a line with both keeps its answer.
            for file_id, ok in ((batch.error_file_id, False), (batch.output_file_id, True)):
                if file_id:
                    path = work / local_file_name(file_id)
                    try:
                        download(file_id, path)
                    except NotFoundError:  # expired or deleted: its lines count as not answered
                        if log is not None:
                            log.warning(
                                "File %s of batch %s is gone: its lines count as not answered", file_id, batch.id
                            )
                        continue
                    results.append(ResultFile(path, ok=ok, overdue=batch.id in cancelled))
        downloaded = time.monotonic()
        target = Destination(destination, work, owner=owner, overwrite=overwrite)
        out_name, err_name = names
        retry = retry_dir / "retry.jsonl" if retry_dir is not None else None
        numbers = retry_dir / "retry.lines" if retry_dir is not None else None
        with contextlib.ExitStack() as stack:
            out, out_scratch = stack.enter_context(target.writer(out_name))
            err, err_scratch = stack.enter_context(target.writer(err_name))
            handle = stack.enter_context(open_input())
            again = stack.enter_context(open(retry, "wb")) if retry is not None else None
            again_numbers = stack.enter_context(open(numbers, "wb")) if numbers is not None else None
            stats = merge_results(
                handle,
                results,
                out,
                err,
                plan=plan,
                workdir=work,
                retry=again,
                retry_lines=again_numbers,
                overdue=overdue,
            )
        output = {"path": target.publish(out_name, out_scratch), "lines": stats.output_lines}
        output["bytes"] = stats.output_bytes
        error: dict[str, Any] | None = None
        if stats.error_lines:
            error = {"path": target.publish(err_name, err_scratch), "lines": stats.error_lines}
            error["bytes"] = stats.error_bytes
        else:
            target.discard(err_name, err_scratch)
    merged = time.monotonic() - downloaded
    return MergedJob(output, error, stats, len(results), downloaded - started, merged, retry, numbers)
