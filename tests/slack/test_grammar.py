"""The grammar alone, at a fixed instant: the issue's examples read as they should."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integrations.slack import grammar
from integrations.slack.grammar import Cancel, Create, GrammarError, Help, ListTimers, Status

NOW = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "when", "note"),
    [
        ("10m tea is ready", {"duration": "10m"}, "tea is ready"),
        ("1h30m check the deploy", {"duration": "1h30m"}, "check the deploy"),
        ("at 14:00Z standup", {"fireAt": "2026-12-03T14:00:00+00:00"}, "standup"),
        ("at 16:00Z standup", {"fireAt": "2026-12-02T16:00:00+00:00"}, "standup"),
        ("at 09:30+02:00 sync", {"fireAt": "2026-12-03T07:30:00+00:00"}, "sync"),
        ("at 2026-12-24T09:00+01:00 presents", {"fireAt": "2026-12-24T09:00:00+01:00"}, "presents"),
        ("-f 2026-12-24T09:00:00Z x", {"fireAt": "2026-12-24T09:00:00+00:00"}, "x"),
        ("don't forget --duration 5m", {"duration": "5m"}, "don't forget"),
    ],
)
def test_create_forms(text: str, when: dict[str, str], note: str) -> None:
    parsed = grammar.parse(text, now=NOW)
    assert isinstance(parsed, Create)
    assert (parsed.when, parsed.note) == (when, note)


def test_smart_quotes_from_slack_clients_are_read_as_quotes() -> None:
    parsed = grammar.parse("5m --name “Deploy follow-up” --metadata {“pr”: 42} go", now=NOW)
    assert isinstance(parsed, Create)
    assert parsed.fields == {"name": "Deploy follow-up", "metadata": {"pr": 42}}


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("list", ListTimers()),
        ("help", Help()),
        ("", Help()),
        ("cancel ab12", Cancel("ab12")),
        ("STATUS ab12", Status("ab12")),
    ],
)
def test_keywords(text: str, command: grammar.Command) -> None:
    assert grammar.parse(text, now=NOW) == command


def test_cancel_needs_exactly_one_reference() -> None:
    with pytest.raises(GrammarError, match="needs one timer id"):
        grammar.parse("cancel", now=NOW)
    with pytest.raises(GrammarError, match="needs one timer id"):
        grammar.parse("cancel a b", now=NOW)
