"""``manage.py minoots …`` run in-process: stdout and stderr captured, CommandError raised."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command


def run(*args: str) -> tuple[str, str]:
    """Run ``manage.py minoots ARGS``; return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("minoots", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_json(*args: str) -> Any:
    """Run ``manage.py minoots ARGS --json``; return the parsed stdout."""
    out, _ = run(*args, "--json")
    return json.loads(out)


def refused(*args: str, match: str) -> CommandError:
    """Run ``manage.py minoots ARGS``, which must fail with a one-line CommandError matching ``match``."""
    with pytest.raises(CommandError, match=match) as caught:
        run(*args)
    assert "\n" not in str(caught.value)
    assert caught.value.returncode == 1
    return caught.value
