"""``make mutate``: mutation testing of the modules that decide (verdicts, status tables, retries, waits, inputs).

cosmic-ray makes the mutants (it mutates the whole module, module-level constants and class bodies included,
which mutmut 3 does not), plus :mod:`mutation.strings` for the strings the code decides with. This runner
applies each mutant to a scratch copy of the repository (the work tree is never touched), runs only the test
files that ``mutation/plan.toml`` names for the module (``-x``, no e2e), and prints per module the mutants,
killed, survived and the score, with every survivor as ``file:line``. Survivors listed in
``mutation/equivalent.toml`` (equivalent mutants, each with its reason) are left out of the score.

Run ``make mutate`` (all modules) or ``.venv-mutation/bin/python -m mutation.run --module outcome``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import toml as tomllib  # type: ignore[no-redef]

import cosmic_ray.plugins
from cosmic_ray.ast import ast_nodes, get_ast
from cosmic_ray.mutating import mutate_code

from mutation.strings import ReplaceKeyString

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "mutation"
WORK = Path(os.environ.get("MUTATE_WORK_DIR", ROOT / ".mutation"))  # a second run at once needs its own

cosmic_ray.plugins.OPERATOR_PROVIDERS["project"] = {"ReplaceKeyString": ReplaceKeyString}


@dataclass
class Mutant:
    module: str
    path: str
    operator: str
    occurrence: int
    line: int
    definition: str
    code: str = ""
    mutant: str = ""
    status: str = "pending"  # killed, survived, timeout, incompetent, equivalent (after the run: survived + listed)
    reason: str = ""
    seconds: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.path, self.operator, self.code, self.mutant)


@dataclass
class Module:
    name: str
    path: str
    tests: list[str]
    definitions: list[str] = field(default_factory=list)
    mutants: list[Mutant] = field(default_factory=list)
    source: str = ""
    timeout: float = 60.0


def load_toml(path: Path) -> dict[str, Any]:
    return dict(tomllib.loads(path.read_text(encoding="utf-8")))


def operators(settings: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every cosmic-ray operator (and ours) minus those ``exclude_operators`` in plan.toml names, with reasons."""
    excluded = [re.compile(p) for p in settings.get("exclude_operators", [])]
    chosen = []
    for name in cosmic_ray.plugins.operator_names():
        cls = cosmic_ray.plugins.get_operator(name)
        if cls.arguments() or any(p.search(name) for p in excluded):
            continue  # operators with arguments (variable replacers) need per-use configuration
        chosen.append((name, cls()))
    return chosen


# Operator leaves that are syntax, not arithmetic: `*`/`/` markers and `*args` in signatures, star arguments.
_SYNTAX_PARENTS = frozenset({"param", "parameters", "lambdef", "argument", "star_expr", "arglist"})


def not_a_program_change(node: Any) -> bool:
    """True where a mutation cannot change what the program does, so it is not made at all.

    Annotations (every planned module has ``from __future__ import annotations``: they are never evaluated),
    the names in ``__all__`` (ruff's F822 in ``make test`` already fails on a name that does not exist) and the
    ``*``/``/`` markers of a signature, which cosmic-ray mistakes for arithmetic.
    """
    if node.type == "operator" and node.parent is not None and node.parent.type in _SYNTAX_PARENTS:
        return True
    child, parent = node, node.parent
    while parent is not None:
        siblings = parent.children
        index = siblings.index(child)
        before = [getattr(s, "value", None) for s in siblings[:index]]
        if parent.type in ("param", "tfpdef") and ":" in before and "=" not in before:
            return True
        if parent.type == "funcdef" and index > 0 and getattr(siblings[index - 1], "value", None) == "->":
            return True
        if parent.type == "annassign" and index == 1:
            return True
        if parent.type == "expr_stmt" and getattr(siblings[0], "value", None) == "__all__" and index > 0:
            return True
        child, parent = parent, parent.parent
    return False


def definition_of(node: Any) -> str:
    names = []
    scope = node.search_ancestor("funcdef", "classdef")
    while scope is not None:
        names.append(scope.name.value)
        scope = scope.search_ancestor("funcdef", "classdef")
    return ".".join(reversed(names)) or "<module>"


def changed_lines(original: str, mutated: str) -> tuple[str, str]:
    """The first changed chunk, as (original code, mutated code), lines stripped and joined."""
    a, b = original.splitlines(), mutated.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            return " / ".join(x.strip() for x in a[i1:i2]), " / ".join(x.strip() for x in b[j1:j2])
    return "", ""


def enumerate_mutants(module: Module, ops: list[tuple[str, Any]]) -> None:
    module.source = (ROOT / module.path).read_text(encoding="utf-8")
    tree = get_ast(module.source)
    wanted = [re.compile(p) for p in module.definitions]
    for op_name, op in ops:
        occurrence = 0
        for node in ast_nodes(tree):
            for start, _end in op.mutation_positions(node):
                definition = definition_of(node)
                if not_a_program_change(node):
                    pass
                elif not wanted or definition == "<module>" or any(p.fullmatch(definition) for p in wanted):
                    module.mutants.append(Mutant(module.name, module.path, op_name, occurrence, start[0], definition))
                occurrence += 1
    for m in module.mutants:
        mutated = mutate_code(module.source, cosmic_ray.plugins.get_operator(m.operator)(), m.occurrence)
        if mutated is None or mutated == module.source:
            m.status = "incompetent"
            continue
        m.code, m.mutant = changed_lines(module.source, mutated)
        try:
            compile(mutated, m.path, "exec")
        except SyntaxError:
            m.status = "incompetent"  # not a program: says nothing about the tests


def scratch_copy(index: int) -> Path:
    """A copy of the repository's files (tracked and new, not ignored) that mutants are written into."""
    dest = WORK / f"work{index}"
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],  # noqa: S607 - git from PATH, as make does
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("benchmarks/", ".mutation/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not e2e and not slow"]
_OURS = ("airflow_provider_openai_batch", "tests", "conftest", "example_dags", "mutation")


def _child(copy: Path, tests: list[str], report: Path | None = None) -> None:
    """In a forked child: run pytest on ``tests`` in ``copy`` and exit with its code (never returns)."""
    code = 3
    try:
        os.setpgid(0, 0)  # the parent kills the whole group on a timeout (emulator processes included)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.chdir(copy)
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        sys.dont_write_bytecode = True
        sys.path[:] = [str(copy), *(p for p in sys.path if Path(p or ".").resolve() != ROOT)]
        import pytest

        args = [*PYTEST_ARGS, *(["--collect-only"] if report else []), *tests]
        code = int(pytest.main(args))
        if report is not None:
            report.write_text("\n".join(name for name in sorted(sys.modules) if not name.startswith(_OURS)))
    finally:
        os._exit(code)


def start(copy: Path, tests: list[str], report: Path | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        _child(copy, tests, report)
    return pid


def finish(pid: int, deadline: float | None) -> str | None:
    """``passed``/``failed``/``timeout`` once the child is done (killing it past ``deadline``), else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return "passed" if os.waitstatus_to_exitcode(status) == 0 else "failed"
    if deadline is not None and time.monotonic() > deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, 9)
        os.waitpid(pid, 0)
        return "timeout"
    return None


def run_once(copy: Path, tests: list[str], timeout: float, report: Path | None = None) -> tuple[str, float]:
    started = time.monotonic()
    pid = start(copy, tests, report)
    while (outcome := finish(pid, started + timeout)) is None:
        time.sleep(0.02)
    return outcome, time.monotonic() - started


def warm_up(copy: Path, tests: list[str]) -> int:
    """Import in this process every third-party module the tests import, so each forked run starts warm.

    Importing Airflow takes seconds of CPU; paid once here instead of once per mutant. The project's own
    modules are never imported here: each child imports them fresh from its (mutated) copy.
    """
    listing = WORK / "warm-modules.txt"
    outcome, _ = run_once(copy, tests, 600, report=listing)
    if outcome != "passed" or not listing.exists():
        raise SystemExit("collecting the planned test files failed; run them with pytest to see why")
    count = 0
    for name in listing.read_text().split():
        try:
            __import__(name)
            count += 1
        except Exception:  # noqa: S112 - a module that only imports inside pytest's set-up is just not warmed
            continue
    for name in [n for n in sys.modules if n.startswith(_OURS[:1])]:
        del sys.modules[name]  # a third-party import pulled ours in: drop it, the child re-imports it
    return count


def run_all(modules: dict[str, Module], pending: list[Mutant], jobs: int) -> None:
    """Run every mutant, up to ``jobs`` at a time, each in its own scratch copy."""
    copies = [scratch_copy(i) for i in range(jobs)]
    free = list(range(jobs))
    running: dict[int, tuple[Mutant, int, float]] = {}
    todo = list(reversed(pending))
    done = 0
    while todo or running:
        while todo and free:
            m = todo.pop()
            slot = free.pop()
            module = modules[m.module]
            mutated = mutate_code(module.source, cosmic_ray.plugins.get_operator(m.operator)(), m.occurrence)
            (copies[slot] / m.path).write_text(mutated, encoding="utf-8")
            running[start(copies[slot], module.tests)] = (m, slot, time.monotonic())
        time.sleep(0.02)
        for pid, (m, slot, started) in list(running.items()):
            outcome = finish(pid, started + modules[m.module].timeout)
            if outcome is None:
                continue
            del running[pid]
            m.seconds = time.monotonic() - started
            m.status = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[outcome]
            (copies[slot] / m.path).write_text(modules[m.module].source, encoding="utf-8")
            free.append(slot)
            done += 1
            if done % 50 == 0 or done == len(pending):
                print(f"  {done}/{len(pending)} mutants run", flush=True)


def apply_allow_list(modules: list[Module]) -> list[dict[str, Any]]:
    """Mark listed survivors equivalent; return allow-list entries that matched nothing (stale)."""
    entries = load_toml(HERE / "equivalent.toml").get("equivalent", [])
    by_key = {(e["path"], e["operator"], e["code"], e["mutant"]): e for e in entries}
    used = set()
    for module in modules:
        for m in module.mutants:
            # operator = mutant = "*": every mutant of that line (a tuning constant, a batch size).
            wildcard = (m.path, "*", m.code, "*")
            key = m.key if m.key in by_key else wildcard
            entry = by_key.get(key)
            if entry is not None:
                used.add(key)
                if m.status == "survived":
                    m.status, m.reason = "equivalent", entry["reason"]
    planned = {mod.path for mod in modules}
    return [e for k, e in by_key.items() if k not in used and e["path"] in planned]


def report(modules: list[Module], fail_under: float) -> tuple[str, bool]:
    lines = [
        f"{'module':<44} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv.':>6} {'score':>6}",
    ]
    ok = True
    survivors = []
    for mod in modules:
        counted = [m for m in mod.mutants if m.status not in ("incompetent", "pending")]
        killed = sum(m.status in ("killed", "timeout") for m in counted)
        survived = [m for m in counted if m.status == "survived"]
        equivalent = sum(m.status == "equivalent" for m in counted)
        scored = len(counted) - equivalent
        score = 100.0 * killed / scored if scored else 100.0
        ok = ok and score >= fail_under
        lines.append(f"{mod.path:<44} {len(counted):>7} {killed:>6} {len(survived):>8} {equivalent:>6} {score:>5.1f}%")
        survivors.extend(survived)
    lines.append(f"(score = killed / (mutants - equivalent); timeouts count as killed; goal >= {fail_under:.0f}%)")
    if survivors:
        lines.append("\nSurvivors:")
        for m in sorted(survivors, key=lambda m: (m.path, m.line)):
            lines.append(f"  {m.path}:{m.line} [{m.operator.split('/')[-1]}] in {m.definition}")
            lines.append(f"      {m.code}")
            lines.append(f"   -> {m.mutant}")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", help="run only these plan entries (by name)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATE_JOBS", "2")))
    parser.add_argument("--list", action="store_true", help="count the mutants, run nothing")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="keep the last run's kills and run only the other mutants (after adding tests; not after removing any)",
    )
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    plan = load_toml(HERE / "plan.toml")
    settings = plan.get("settings", {})
    ops = operators(settings)
    modules = []
    for entry in plan["module"]:
        if args.module and entry["name"] not in args.module:
            continue
        if not (ROOT / entry["path"]).is_file():
            print(f"{entry['name']}: {entry['path']} is not on this branch yet, skipped")
            continue
        mod = Module(entry["name"], entry["path"], entry["tests"], entry.get("definitions", []))
        enumerate_mutants(mod, ops)
        modules.append(mod)
        live = sum(m.status == "pending" for m in mod.mutants)
        print(f"{mod.name}: {live} mutants in {mod.path} (tests: {' '.join(mod.tests)})")
    if args.list:
        return 0

    WORK.mkdir(exist_ok=True)
    base = scratch_copy(0)
    started = time.monotonic()
    warmed = warm_up(base, sorted({t for mod in modules for t in mod.tests}))
    print(f"warmed {warmed} modules in {time.monotonic() - started:.0f} s")
    for mod in modules:
        outcome, seconds = run_once(base, mod.tests, 600)
        if outcome != "passed":
            print(f"{mod.name}: the unmutated tests do not pass ({outcome}); fix them first", file=sys.stderr)
            return 2
        mod.timeout = max(30.0, 3 * seconds + 15)
        print(f"{mod.name}: baseline {seconds:.1f} s, timeout per mutant {mod.timeout:.0f} s")

    pending = [m for mod in modules for m in mod.mutants if m.status == "pending"]
    if args.survivors:
        # Incremental: a mutant the last run killed stays killed (tests were only added since); the rest runs.
        files = [WORK / f"results-{mod.name}.json" for mod in modules]
        last = [r for f in files if f.exists() for r in json.loads(f.read_text())]
        killed = {(r["path"], r["operator"], r["code"], r["mutant"]): r["status"] for r in last}
        for m in pending:
            if killed.get(m.key) in ("killed", "timeout"):
                m.status = killed[m.key]
        pending = [m for m in pending if m.status == "pending"]
    started = time.monotonic()
    run_all({mod.name: mod for mod in modules}, pending, max(1, args.jobs))
    stale = apply_allow_list(modules)
    text, ok = report(modules, float(settings.get("fail_under", 90)))
    minutes = (time.monotonic() - started) / 60
    text += f"\n\n{len(pending)} mutants in {minutes:.1f} min with {args.jobs} job(s)."
    if stale:
        text += "\nAllow-list entries that matched no mutant (the code changed; review them):"
        text += "".join(f"\n  {e['path']}: {e['code']}  ->  {e['mutant']}" for e in stale)
    print("\n" + text)
    (WORK / "report.txt").write_text(text + "\n", encoding="utf-8")
    for mod in modules:
        (WORK / f"results-{mod.name}.json").write_text(json.dumps([asdict(m) for m in mod.mutants], indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
