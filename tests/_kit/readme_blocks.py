"""Code blocks taken from README.md itself, so that what the tests run is what a user pastes."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section(heading: str) -> str:
    """The README text under ``## <heading>``, up to the next ``## `` heading."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        raise AssertionError(f"README.md has no '## {heading}' section")
    return match.group(1)


def code_blocks(heading: str, language: str) -> list[str]:
    """Every fenced ``language`` block of a README section, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", section(heading), flags=re.MULTILINE | re.DOTALL)


def quick_start_dag() -> str:
    """The quick start's DAG file, exactly as the README shows it."""
    (code,) = code_blocks("Quick start", "python")
    return code


def quick_start_commands() -> list[str]:
    """The quick start's shell lines (comments dropped), exactly as the README shows them."""
    (block,) = code_blocks("Quick start", "bash")
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
