"""The browser tests' screenshots are listed at the end of the run (they are the artifacts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAVED: list[Path] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SAVED:
        terminalreporter.write_sep("-", f"browser screenshots ({len(SAVED)})")
        for path in SAVED:
            terminalreporter.write_line(str(path))
