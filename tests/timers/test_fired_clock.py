"""firedAt and latenessMs of fired timers, read from the API, on every supported database.

README "Scheduling": latenessMs is firedAt minus fireAt in whole milliseconds, and both come
from one reading of the clock per claim (Postgres: the database's statement time; SQLite: the
firing process's clock). The fire times below sit at sub-millisecond offsets, so a lateness
rounded instead of floored, or taken from another reading than firedAt, shows on some timer.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import make_timer, make_timers
from timers import services
from timers.models import Tenant, TimerStatus
from timers.ports import ClaimedTimer

pytestmark = pytest.mark.django_db

MS = timedelta(milliseconds=1)


def wire_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def detail_and_fired_event(client: APIClient, timer_id: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = client.get(f"/api/timers/{timer_id}").json()
    events = client.get(f"/api/timers/{timer_id}/events").json()["events"]
    [fired] = [e for e in events if e["kind"] == "fired"]
    return body, fired


def test_lateness_is_fired_at_minus_fire_at_in_whole_milliseconds_for_every_fired_timer(
    tenant: Tenant, client: APIClient
) -> None:
    now = timezone.now()
    fire_ats = [now - timedelta(microseconds=6_271 * i + 999) for i in range(40)]
    # A fireAt without a fraction of a second (SQLite stores its text without one).
    fire_ats.append(now.replace(microsecond=0) - timedelta(seconds=1))
    timers = make_timers(tenant=tenant, name_prefix="clock", fire_ats=fire_ats)
    # A timer with actions stays fired; its firedAt and latenessMs come from the same claim.
    hook = {"id": "a", "kind": "webhook", "parameters": {"url": "https://example.com/x"}}
    with_actions = make_timer(tenant=tenant, name="acts", fire_at=now - timedelta(microseconds=1_500), actions=[hook])

    # Several claims, so several clock readings.
    claims: list[list[ClaimedTimer]] = []
    while claimed := services.timers_fire(limit=15):
        claims.append(claimed)

    assert sum(len(c) for c in claims) == len(timers) + 1
    fired_ats: Counter[datetime] = Counter()
    for timer in [*timers, with_actions]:
        body, fired = detail_and_fired_event(client, timer.id)
        fired_at, fire_at = wire_time(body["firedAt"]), wire_time(body["fireAt"])
        assert fire_at == timer.fire_at  # the wire keeps every microsecond
        assert body["latenessMs"] == (fired_at - fire_at) // MS, body
        assert body["latenessMs"] >= (now - timer.fire_at) // MS  # it was due that long before the claim
        assert wire_time(fired["occurredAt"]) == fired_at
        assert fired["data"] == {"latenessMs": body["latenessMs"]}
        if timer.pk == with_actions.pk:
            assert body["status"] == TimerStatus.FIRED and body["settledAt"] is None
        else:
            assert body["status"] == TimerStatus.SETTLED and wire_time(body["settledAt"]) == fired_at
        fired_ats[fired_at] += 1
    # One clock reading per claim: every timer of a claim has the same firedAt.
    assert sorted(fired_ats.values()) == sorted(len(c) for c in claims)
    for claimed in claims:
        assert len({c.fired_at for c in claimed}) == 1
