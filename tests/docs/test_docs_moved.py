"""The README's reference moved into docs/ (issue 28): every section of the old README has a home.

The old README's headings, each with the file and heading that now hold its text. A section deleted or renamed
without updating this map fails here, so nothing is dropped silently.
"""

from __future__ import annotations

import re

import pytest

from tests._kit.readme_blocks import DOCS, README, REPO

pytestmark = pytest.mark.unit

OPERATORS = DOCS / "operators"

#: old README heading -> (file, heading that holds it now)
MOVED = {
    "## Install": (README, "## Install"),
    "## Quick start": (README, "## Quick start"),
    "## Connection": (DOCS / "connections.md", "# Connections"),
    "### Testing the connection": (DOCS / "connections.md", "## Testing the connection"),
    "## Operators and sensor": (DOCS / "index.md", "## Import paths"),
    "### `OpenAIBatchCreateOperator`": (OPERATORS / "create.md", "# Create: `OpenAIBatchCreateOperator`"),
    "### `OpenAIBatchSensor`": (OPERATORS / "sensor.md", "# Sensor: `OpenAIBatchSensor`"),
    "### `OpenAIBatchCancelOperator`": (OPERATORS / "cancel.md", "# Cancel: `OpenAIBatchCancelOperator`"),
    "### `OpenAIBatchDownloadOperator`": (OPERATORS / "download.md", "# Download: `OpenAIBatchDownloadOperator`"),
    "### `OpenAIBatchJobOperator`": (OPERATORS / "job.md", "# Job: `OpenAIBatchJobOperator`"),
    "### Building inputs and reading results": (DOCS / "batch-input.md", "# Batch input and results"),
    "## Cost": (DOCS / "cost.md", "# Cost"),
    "### Pre-flight estimate and `max_cost_usd`": (DOCS / "cost.md", "## Pre-flight estimate and `max_cost_usd`"),
    "## Guarantees, and their limits": (DOCS / "guarantees.md", "# Guarantees, and their limits"),
    "## Developing your DAGs against the emulator": (DOCS / "emulator.md", "# The emulator"),
    "## Migrating from `apache-airflow-providers-openai`": (
        DOCS / "migrating.md",
        "# Migrating from `apache-airflow-providers-openai`",
    ),
    "## Development": (DOCS / "contributing.md", "## Tests"),
    "## Compatibility": (DOCS / "install.md", "## Compatibility"),
    "## Package map": (DOCS / "contributing.md", "## Package map"),
    "## Development: mutation testing": (DOCS / "contributing.md", "## Mutation testing"),
    "## Performance": (DOCS / "performance.md", "# Performance"),
    "#### Targets": (DOCS / "performance.md", "### Targets"),
    "#### What limits the missed targets": (DOCS / "performance.md", "### What limits the missed targets"),
    "#### Job rows again, on a quieter machine": (DOCS / "performance.md", "### Job rows again, on a quieter machine"),
    "#### Machine and run": (DOCS / "performance.md", "### Machine and run"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_section_has_a_home(old: str) -> None:
    path, heading = MOVED[old]
    headings = re.findall(r"^#+ .*$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert heading in headings, f"{old!r} of the old README should be {heading!r} in {path.relative_to(REPO)}"


def test_the_guarantees_keep_a_section_on_retries_clears_and_limit_changes() -> None:
    assert "## Retries, clears and limit changes" in (DOCS / "guarantees.md").read_text().splitlines()


def test_the_readme_stays_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250
