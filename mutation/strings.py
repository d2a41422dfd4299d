"""A cosmic-ray operator for the strings the code decides with: keys, statuses, endpoints, table entries.

cosmic-ray's own operators leave string literals alone, yet a renamed XCom key, a misspelt status in a table or
a changed endpoint is exactly the kind of change a test must catch. Messages are left out (strings with
whitespace, docstrings, implicit concatenations, arguments of exceptions and log calls): their wording is not
a contract, and mutating them would bury the survivors that matter under equivalent ones.
"""

from __future__ import annotations

from typing import Any

import parso.python.tree
from cosmic_ray.operators.operator import Example, Operator

# Calls whose string arguments are wording, not values the code decides with.
_MESSAGE_CALLS = frozenset(
    {"debug", "info", "warning", "warn", "error", "exception", "critical", "log", "print", "format", "join"}
)
_MESSAGE_SUFFIXES = ("Error", "Exception", "Warning")


def _called_name(trailer: Any) -> str | None:
    """Name of the function a call trailer ``(...)`` belongs to, e.g. ``get`` for ``d.get("k")``."""
    prev = trailer.get_previous_sibling()
    if prev is None:
        return None
    if prev.type == "name":
        return str(prev.value)
    if prev.type == "trailer" and len(prev.children) == 2 and prev.children[0].value == ".":
        return str(prev.children[1].value)
    return None


def _is_message(leaf: Any) -> bool:
    if any(c.isspace() for c in leaf._get_payload()):
        return True  # keys, statuses, endpoints and table entries hold no spaces; sentences do
    parent = leaf.parent
    if parent.type in ("simple_stmt", "strings", "fstring"):  # docstring, "a" "b" concatenation
        return True
    node = leaf
    while node.parent is not None and node.parent.type in ("arglist", "argument", "trailer"):
        node = node.parent
        if node.type == "trailer" and node.children[0].value == "(":
            name = _called_name(node) or ""
            return name in _MESSAGE_CALLS or name.endswith(_MESSAGE_SUFFIXES)
    return False


class ReplaceKeyString(Operator):
    """Turn a string literal ``"x"`` into ``"XXxXX"`` (messages excepted, see the module docstring)."""

    def mutation_positions(self, node: Any) -> Any:
        if isinstance(node, parso.python.tree.String) and not _is_message(node):
            yield (node.start_pos, node.end_pos)

    def mutate(self, node: Any, index: int) -> Any:
        value = node.value
        prefix_len = len(value) - len(value.lstrip("rRbBuU"))
        quote = value[prefix_len : prefix_len + 3]
        if quote not in ('"""', "'''"):
            quote = value[prefix_len]
        body = value[prefix_len + len(quote) : -len(quote)]
        new = f"{value[:prefix_len]}{quote}XX{body}XX{quote}"
        return parso.python.tree.String(new, node.start_pos, node.prefix)

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return (
            Example('x = "a"', 'x = "XXaXX"'),
            Example('d.get("k")', 'd.get("XXkXX")'),
        )
