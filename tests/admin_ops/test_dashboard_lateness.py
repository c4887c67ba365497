"""The dashboard's lateness figures from per-minute and per-hour histograms: the same numbers as
computing them from every fire of the window, and a final minute or hour read once."""

from __future__ import annotations

import random
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import make_tenant
from timers import dashboard
from timers.models import Timer, TimerStatus

pytestmark = pytest.mark.django_db


def fires(tenant: Any, moments: list[Any], lateness: list[int]) -> None:
    Timer.objects.bulk_create(
        [
            Timer(
                tenant=tenant,
                name=f"f{i}",
                status=TimerStatus.SETTLED,
                duration_ms=1000,
                created_at=fired_at - timedelta(seconds=1),
                fire_at=fired_at - timedelta(milliseconds=late),
                fired_at=fired_at,
                lateness_ms=late,
                settled_at=fired_at,
            )
            for i, (fired_at, late) in enumerate(zip(moments, lateness, strict=True))
        ]
    )


def expected(tenant_id: str | None, since: Any, until: Any) -> dashboard.Lateness:
    rows = Timer.objects.filter(fired_at__gte=since, fired_at__lt=until)
    if tenant_id:
        rows = rows.filter(tenant_id=tenant_id)
    return dashboard._from_values([r for r in rows.values_list("lateness_ms", flat=True) if r is not None])


def expected_per_minute(tenant_id: str | None, since: Any, until: Any) -> list[dashboard.MinuteLateness]:
    by_minute: dict[Any, list[int]] = {}
    rows = Timer.objects.filter(fired_at__gte=since, fired_at__lt=until)
    if tenant_id:
        rows = rows.filter(tenant_id=tenant_id)
    for fired_at, late in rows.values_list("fired_at", "lateness_ms"):
        if fired_at is None or late is None:  # the window's fires have both; for the type checker
            continue
        by_minute.setdefault(fired_at.astimezone(UTC).replace(second=0, microsecond=0), []).append(late)
    return [
        dashboard.MinuteLateness(minute=m, lateness=dashboard._from_values(v)) for m, v in sorted(by_minute.items())
    ]


def test_the_figures_are_those_of_every_fire_in_the_window_across_minutes_and_hours() -> None:
    rng = random.Random(14)
    acme, globex = make_tenant(id="acme"), make_tenant(id="globex")
    now = timezone.now()
    for tenant in (acme, globex):
        moments = [now - timedelta(seconds=rng.uniform(0, 3 * 3600)) for _ in range(600)]
        fires(tenant, moments, [int(rng.expovariate(1 / 40)) for _ in moments])
    windows = [
        (now - timedelta(hours=2, seconds=17), now),
        (now - timedelta(hours=24), now),
        (now - timedelta(minutes=59, seconds=3), now),
    ]

    for _ in range(2):  # the second time from the cache
        for tenant_id in (None, "acme", "globex"):
            for since, until in windows:
                assert dashboard.lateness(tenant_id=tenant_id, since=since, until=until) == expected(
                    tenant_id, since, until
                )
                assert dashboard.lateness_per_minute(
                    tenant_id=tenant_id, since=since, until=until
                ) == expected_per_minute(tenant_id, since, until)


def test_a_final_minute_is_read_once_and_the_current_one_every_time() -> None:
    """What fired in a minute over FINAL_AFTER ago is read from the database once: the next
    render takes it from the cache (here: even after its row is gone, which retention does only
    days later), and reads live only the window's partial first minute and the minutes not final."""
    acme = make_tenant(id="acme")
    now = timezone.now()
    fires(acme, [now - timedelta(minutes=30), now - timedelta(seconds=1)], [10, 20])
    since = now - timedelta(hours=1)

    first = dashboard.lateness(tenant_id=None, since=since, until=now)
    Timer.objects.filter(lateness_ms=10).delete()
    with CaptureQueriesContext(connection) as read:
        again = dashboard.lateness(tenant_id=None, since=since, until=now)
    fires(acme, [timezone.now()], [30])  # a fire now: the live part
    later = dashboard.lateness(tenant_id=None, since=since, until=timezone.now() + timedelta(milliseconds=1))

    assert first == again and first.fires == 2 and first.p50 == 10
    assert len(read.captured_queries) <= 2, [q["sql"][:80] for q in read.captured_queries]
    assert later.fires == 3 and later.max == 30


def test_pruned_fires_leave_the_figures_at_the_next_render() -> None:
    """``minoots prune`` deleting timers that fired within the window: the kept histograms
    counted them, so they are read again."""
    from timers import retention

    acme = make_tenant(id="acme")
    now = timezone.now()
    fires(acme, [now - timedelta(minutes=30), now - timedelta(minutes=20)], [10, 20])
    since = now - timedelta(hours=1)
    assert dashboard.lateness(tenant_id=None, since=since, until=now).fires == 2

    deleted = retention.timers_prune(ended_before=now - timedelta(minutes=25))

    assert deleted[Timer._meta.label] == 1
    after = dashboard.lateness(tenant_id=None, since=since, until=now)
    assert (after.fires, after.max) == (1, 20)
