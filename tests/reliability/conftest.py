"""Reliability suite: prints the fault matrix and the summary counts at the end of the run.

The counts come from :data:`tests._kit.reliability.REGISTRY`, which the tests fill in as they run.
"""

from __future__ import annotations

from typing import Any

from tests._kit.reliability import REGISTRY


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    reg = REGISTRY
    if not (reg.matrix or reg.bad_inputs or reg.secret_places or reg.duplicate_checks):
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability")
    if reg.matrix:
        faults = sorted(reg.faults, key=_fault_order)
        calls = sorted(reg.calls, key=_call_order)
        width = max(len(f) for f in faults) + 2
        col = max(20, *(len(c) + 2 for c in calls))
        write("fault matrix (transient fault -> outcome / persistent fault -> outcome):")
        write(" " * width + "".join(c.ljust(col) for c in calls))
        for fault in faults:
            row = fault.ljust(width)
            for call in calls:
                row += reg.matrix.get((fault, call), "-").ljust(col)
            write(row)
        write("  ok = correct result within the retry budget; ok(r) = reused the object the failed call created;")
        write("  other entries name the typed error raised once the budget was spent; HANG/WRONG would be failures")
    summary = (
        f"reliability: faults tried={len(reg.faults)} ({reg.injections} injected), calls covered={len(reg.calls)}, "
        f"matrix cells={len(reg.matrix)}, bad inputs tried={len(reg.bad_inputs)}, "
        f"secret searches={len(reg.secret_places)}, secrets found={reg.secrets_found}, "
        f"duplicate checks={reg.duplicate_checks}, duplicates created={reg.duplicates}, "
        f"crash/re-run cycles={reg.crash_runs}"
    )
    write(summary)
    for note in reg.notes:
        write(f"  {note}")


_FAULTS = ["429+Retry-After", "500", "502", "503", "drop", "slow>timeout", "truncated", "not_json", "created+5xx"]
_CALLS = ["upload", "create", "retrieve", "retrieve(async)", "list", "cancel", "download"]


def _fault_order(name: str) -> tuple[int, str]:
    return (_FAULTS.index(name) if name in _FAULTS else len(_FAULTS), name)


def _call_order(name: str) -> tuple[int, str]:
    return (_CALLS.index(name) if name in _CALLS else len(_CALLS), name)
