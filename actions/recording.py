"""The recording boundary: what a receiver or a process returned, made storable.

PostgreSQL text and JSON refuse NUL characters, and UTF-8 refuses lone surrogates (what
``errors="surrogateescape"`` turns invalid bytes into). Whatever an attempt produced, its
output, error and summary pass through ``storable_outcome`` before anything is written: each
such character is kept as a visible ``\\xNN`` (or ``\\uNNNN``) escape, never dropped, and the
record says that it was altered.
"""

from __future__ import annotations

import dataclasses
import re

from actions.transitions import Outcome

ALTERED = "[MINOOTS stored this text altered: NUL bytes and invalid UTF-8 are written as \\xNN escapes]"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def storable(text: str) -> tuple[str, bool]:
    """``text`` with every unstorable character escaped; True if there was one."""
    escaped, count = _UNSTORABLE.subn(_escape, text)
    return escaped, bool(count)


def storable_outcome(outcome: Outcome) -> Outcome:
    """The outcome with storable text; altered fields say so (the output in its first line)."""
    output, output_altered = storable(outcome.output)
    error, error_altered = storable(outcome.error)
    summary, summary_altered = storable(outcome.summary)
    if not (output_altered or error_altered or summary_altered):
        return outcome
    return dataclasses.replace(
        outcome,
        output=f"{ALTERED}\n{output}" if output_altered else output,
        error=f"{error} {ALTERED}" if error_altered else error,
        summary=f"{summary} {ALTERED}" if summary_altered else summary,
    )
