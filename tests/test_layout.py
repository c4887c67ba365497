"""The code keeps the promise of timers/models.py and actions/transitions.py: each status
change has one home. A new writer of a status anywhere else fails here, naming the line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_PACKAGES = ("timers", "actions", "minoots_project", "integrations")
# The only modules that may write a status: the transition functions and their raw SQL.
OWNERS = {"timers/services.py", "timers/queries.py", "actions/transitions.py", "actions/queries.py"}
# Raw SQL that writes a status does it for its transition module alone (checked below).
RAW_SQL_OF = {"actions/queries.py": "actions/transitions.py"}
WRITES = {"update", "create", "bulk_create", "bulk_update", "get_or_create", "update_or_create"}


# The agent toolkit is a client library installed on its own (it talks HTTP to the service and
# imports none of it): its exceptions' ``status`` is an HTTP status, not a timer's.
CLIENT_PACKAGES = (ROOT / "integrations" / "python",)


def _sources() -> list[Path]:
    return [
        p
        for package in APP_PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if "migrations" not in p.parts and not any(p.is_relative_to(c) for c in CLIENT_PACKAGES)
    ]


def status_writes(path: Path, root: Path = ROOT) -> list[str]:
    """Lines of ``path`` that write a ``status``: an ORM write with a ``status=`` keyword, an
    assignment to ``<x>.status``, or SQL text that sets a status."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
            if any(k.arg == "status" for k in node.keywords):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in targets):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "set status" in node.value.lower():
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found, key=lambda w: int(w.rpartition(":")[2]))


def test_only_the_transition_modules_write_a_timer_or_run_status() -> None:
    writers = [w for p in _sources() if str(p.relative_to(ROOT)) not in OWNERS for w in status_writes(p)]
    assert writers == [], "status written outside timers.services / timers.queries / actions.transitions"


def test_the_raw_sql_that_writes_a_run_status_is_called_by_its_transition_module_alone() -> None:
    """``actions/queries.py`` holds the set-based statements of ``actions/transitions.py``; a
    function of it that writes a status is no back door around the transitions."""
    strays = []
    for raw, owner in RAW_SQL_OF.items():
        path = ROOT / raw
        lines = {int(w.rpartition(":")[2]) for w in status_writes(path)}
        tree = ast.parse(path.read_text())
        writing = [
            f.name
            for f in tree.body
            if isinstance(f, ast.FunctionDef) and any(f.lineno <= n <= (f.end_lineno or f.lineno) for n in lines)
        ]
        assert writing, f"{raw} writes no status any more: drop it from OWNERS and RAW_SQL_OF"
        for source in _sources():
            if str(source.relative_to(ROOT)) in (raw, owner):
                continue
            text = source.read_text()
            strays += [f"{source.relative_to(ROOT)}: {name}" for name in writing if re.search(rf"\b{name}\b", text)]
    assert strays == [], "a status-writing statement called outside its transition module"


def test_the_check_finds_a_status_written_elsewhere(tmp_path: Path) -> None:
    rogue = tmp_path / "rogue.py"
    rogue.write_text(
        "def f(qs, t, cur):\n"
        "    qs.update(status='fired')\n"
        "    t.status = 'settled'\n"
        "    cur.execute(\"UPDATE timers_timer SET status = 'armed'\")\n"
    )
    assert status_writes(rogue, root=tmp_path) == ["rogue.py:2", "rogue.py:3", "rogue.py:4"]
