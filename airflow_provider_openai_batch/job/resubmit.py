"""A resubmission round: the input lines whose results failed for a passing reason, split into new shards."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from airflow_provider_openai_batch.job.plan import JobPlan
from airflow_provider_openai_batch.job.split import SplitInput, split_input

__all__ = ["split_retry"]


def split_retry(retry: Path, numbers: Path, workdir: Path, *, plan: JobPlan, round: int) -> SplitInput:
    """Split the retry file written by the merge into the shards of resubmission ``round``.

    The new shards are numbered after the plan's and carry the input's own line numbers (read from
    ``numbers``, 8 bytes per retry line), so the manifest names input lines whatever the round.

    :param retry: the input lines to run again, in input order.
    :param numbers: their input line numbers.
    :param workdir: an existing scratch folder for the shard files.
    :param plan: the job's plan so far (its limits and endpoint apply).
    :param round: the resubmission's number, from 1.
    """
    folder = workdir / f"round-{round}"
    folder.mkdir()
    with open(retry, "rb") as stream:
        split = split_input(
            stream, folder, endpoint=plan.endpoint, limits=plan.limits, source=f"{plan.source} (resubmission {round})"
        )
    first_index = len(plan.shards)
    with open(numbers, "rb") as lines:

        def original(line: int) -> int:
            lines.seek(8 * (line - 1))
            return int.from_bytes(lines.read(8), "little")

        shards = [
            replace(
                shard,
                index=first_index + shard.index,
                round=round,
                first_line=original(shard.first_line),
                last_line=original(shard.last_line),
            )
            for shard in split.plan.shards
        ]
    return SplitInput(plan=split.plan.with_shards(shards), paths=split.paths, estimator=split.estimator)
