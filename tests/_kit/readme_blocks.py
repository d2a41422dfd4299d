"""Code blocks taken from README.md and docs/ themselves, so that what the tests run is what a user pastes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"

#: A fenced block: the opening fence (with its language), the body, the closing fence.
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def markdown_files() -> list[Path]:
    """README.md and every page under docs/, in a stable order."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    return [
        Block(path, text.count("\n", 0, match.start()) + 1, match.group(1).strip(), match.group(2))
        for match in _FENCE.finditer(text)
    ]


def section(heading: str, path: Path = README) -> str:
    """The text of ``path`` under ``## <heading>``, up to the next ``## `` heading (or the end)."""
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        raise AssertionError(f"{path.name} has no '## {heading}' section")
    return match.group(1)


def code_blocks(heading: str, language: str, path: Path = README) -> list[str]:
    """Every fenced ``language`` block of a section, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", section(heading, path), flags=re.MULTILINE | re.DOTALL)


def quick_start_dag() -> str:
    """The quick start's DAG file, exactly as the README shows it."""
    (code,) = code_blocks("Quick start", "python")
    return code


def quick_start_commands() -> list[str]:
    """The quick start's shell lines (comments dropped), in order, exactly as the README shows them."""
    return [
        line.split("  #", 1)[0].strip()
        for block in code_blocks("Quick start", "bash")
        for line in block.splitlines()
        if line.strip()
    ]
