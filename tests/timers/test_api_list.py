"""GET /api/timers: newest first, cursor pagination, and the status/name/label/fireAt filters."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.factories import make_timer, make_timers
from tests.timers.conftest import CreateTimer
from timers import selectors
from timers.models import Timer


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [t["id"] for t in response.json()["timers"]]


def _get(client: APIClient, query: str = "") -> Any:
    return client.get(f"/api/timers{query}")


def _follow(client: APIClient, url: str) -> Any:
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def test_empty_list_has_no_timers_and_no_next_page(client: APIClient) -> None:
    response = _get(client)
    assert response.json() == {"timers": [], "next": None, "previous": None}


def test_timers_are_listed_newest_first(client: APIClient, create_timer: CreateTimer) -> None:
    created = [create_timer(name=f"t{i}")["id"] for i in range(3)]
    assert _ids(_get(client)) == created[::-1]


def test_cursor_pagination_walks_every_timer_exactly_once(client: APIClient, create_timer: CreateTimer) -> None:
    created = [create_timer(name=f"t{i}")["id"] for i in range(7)]
    seen: list[str] = []
    response = _get(client, "?limit=3")
    pages = 0
    while True:
        seen += _ids(response)
        pages += 1
        next_url = response.json()["next"]
        if next_url is None:
            break
        response = _follow(client, next_url)
    assert pages == 3
    assert seen == created[::-1]


def test_previous_link_returns_to_the_first_page(client: APIClient, create_timer: CreateTimer) -> None:
    for i in range(4):
        create_timer(name=f"t{i}")
    first = _get(client, "?limit=2")
    second = _follow(client, first.json()["next"])
    assert first.json()["previous"] is None
    back = _follow(client, second.json()["previous"])
    assert _ids(back) == _ids(first)


def test_pages_stay_stable_when_timers_are_created_between_requests(
    client: APIClient, create_timer: CreateTimer
) -> None:
    old = [create_timer(name=f"old{i}")["id"] for i in range(4)]
    first = _get(client, "?limit=2")
    create_timer(name="newer")
    second = _follow(client, first.json()["next"])
    assert _ids(first) + _ids(second) == old[::-1]


def test_limit_of_the_maximum_page_size_is_accepted(client: APIClient, create_timer: CreateTimer) -> None:
    create_timer()
    response = _get(client, "?limit=500")
    assert response.status_code == 200
    assert len(response.json()["timers"]) == 1


@pytest.mark.parametrize(
    "limit", ["null", "abc", "0", "-1", "501", "100000", "1" + "0" * 400, "1e309", "", " 5", "2.5"]
)
def test_a_limit_that_is_not_an_integer_from_1_to_500_is_400(client: APIClient, limit: str) -> None:
    response = client.get("/api/timers", {"limit": limit})
    assert_error(response, 400, field="limit", contains="500")


def test_an_invalid_cursor_is_400(client: APIClient) -> None:
    response = _get(client, "?cursor=not-a-cursor")
    assert_error(response, 400, field="cursor")


def _cursor(querystring: str) -> str:
    return base64.b64encode(querystring.encode()).decode()


HOSTILE_CURSORS = {
    "garbage position": _cursor("p=garbage"),
    "year 0": _cursor("p=0000-01-01"),
    "NUL position": _cursor("p=\0"),
    "reversed, month 13": _cursor("r=1&p=2026-13-45"),
    "float overflow": _cursor("p=1e309"),
    "plus decoded as a space": _cursor("p=2026-12-01 22:40:28.123456+00:00"),
    "empty position": _cursor("p="),
    "date without a time": _cursor("p=2026-01-01"),
    "no UTC offset": _cursor("p=2026-01-01 10:00:00"),
    "underflows UTC": _cursor("p=0001-01-01 00:00:00+01:00"),
    "overflows UTC": _cursor("p=9999-12-31 23:59:59-01:00"),
    "huge offset": _cursor("o=" + "9" * 5000),
    "non-integer reverse": _cursor("r=yes"),
    "not ASCII": "w6k=",
}


@pytest.mark.parametrize("cursor", list(HOSTILE_CURSORS.values()), ids=list(HOSTILE_CURSORS))
def test_a_crafted_cursor_is_400_naming_it(client: APIClient, create_timer: CreateTimer, cursor: str) -> None:
    create_timer()
    response = client.get("/api/timers", {"cursor": cursor})
    assert_error(response, 400, field="cursor")


def test_a_cursor_whose_plus_signs_arrived_as_spaces_is_400_or_a_page(
    client: APIClient, create_timer: CreateTimer
) -> None:
    for i in range(3):
        create_timer(name=f"t{i}")
    next_url = _get(client, "?limit=1").json()["next"]
    cursor = parse_qs(urlsplit(next_url).query)["cursor"][0]
    # Sent unencoded, every "+" of the base64 text reaches the server as a space.
    response = client.get(f"/api/timers?cursor={cursor.replace('+', '%20')}&limit=1")
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert_error(response, 400, field="cursor")


def test_a_cursor_naming_any_valid_instant_lists_the_older_timers(client: APIClient, create_timer: CreateTimer) -> None:
    created = create_timer()
    for position in ("2999-01-01 00:00:00+00:00", "2999-01-01T02:00:00+02:00", "2999-01-01T00:00:00Z"):
        assert _ids(client.get("/api/timers", {"cursor": _cursor(urlencode({"p": position}))})) == [created["id"]]
    assert _ids(client.get("/api/timers", {"cursor": _cursor(urlencode({"p": "2000-01-01 00:00:00+00:00"}))})) == []


def test_status_filter_keeps_only_those_statuses(client: APIClient, create_timer: CreateTimer) -> None:
    keep = create_timer(name="keep")
    cancelled = create_timer(name="gone")
    armed = create_timer(name="soon", duration="30s")
    client.post(f"/api/timers/{cancelled['id']}/cancel", {}, format="json")
    assert _ids(_get(client, "?status=scheduled")) == [keep["id"]]
    assert _ids(_get(client, "?status=cancelled")) == [cancelled["id"]]
    assert set(_ids(_get(client, "?status=scheduled,armed"))) == {keep["id"], armed["id"]}


def test_an_unknown_status_is_400_naming_the_parameter(client: APIClient) -> None:
    response = _get(client, "?status=sleeping")
    assert_error(response, 400, field="status")


def test_name_filter_matches_the_exact_name(client: APIClient, create_timer: CreateTimer) -> None:
    wanted = create_timer(name="deploy-check")
    create_timer(name="deploy-check-2")
    create_timer(name="other")
    assert _ids(_get(client, "?name=deploy-check")) == [wanted["id"]]


def test_label_filter_matches_key_and_value(client: APIClient, create_timer: CreateTimer) -> None:
    prod = create_timer(labels={"env": "prod"})
    create_timer(labels={"env": "dev"})
    create_timer(labels={"team": "prod"})
    assert _ids(_get(client, "?label=env:prod")) == [prod["id"]]


def test_repeated_label_filters_must_all_match(client: APIClient, create_timer: CreateTimer) -> None:
    both = create_timer(labels={"env": "prod", "team": "infra"})
    create_timer(labels={"env": "prod", "team": "web"})
    create_timer(labels={"team": "infra"})
    assert _ids(_get(client, "?label=env:prod&label=team:infra")) == [both["id"]]


def test_label_value_may_contain_a_colon(client: APIClient, create_timer: CreateTimer) -> None:
    url = create_timer(labels={"callback": "https://example.com:8443/x"})
    create_timer(labels={"callback": "https://example.com"})
    assert _ids(_get(client, "?label=callback:https://example.com:8443/x")) == [url["id"]]


@pytest.mark.parametrize("raw", ["env", ":prod", ""])
def test_a_label_filter_without_key_and_colon_is_400(client: APIClient, raw: str) -> None:
    response = _get(client, f"?label={raw}")
    assert_error(response, 400, field="label")


def test_fire_after_is_inclusive_and_fire_before_is_exclusive(client: APIClient, create_timer: CreateTimer) -> None:
    base = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    at = [create_timer(fireAt=(base + timedelta(hours=h)).isoformat(), duration=None)["id"] for h in range(4)]
    window = f"?fireAfter={(base + timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    window += f"&fireBefore={(base + timedelta(hours=3)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert _ids(_get(client, window)) == [at[2], at[1]]


def test_fire_range_accepts_an_offset(client: APIClient, create_timer: CreateTimer) -> None:
    base = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    early = create_timer(fireAt=base.isoformat(), duration=None)
    create_timer(fireAt=(base + timedelta(hours=5)).isoformat(), duration=None)
    before = (base + timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    response = client.get("/api/timers", {"fireBefore": f"{before}+00:00"})
    assert _ids(response) == [early["id"]]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("fireAfter", "yesterday"),
        ("fireBefore", "2030-01-01T00:00:00"),
        ("fireAfter", ""),
        ("fireBefore", "9999-12-31T23:59:59-01:00"),
        ("fireAfter", "0001-01-01T00:00:00+01:00"),
    ],
)
def test_an_invalid_fire_range_is_400_naming_the_parameter(client: APIClient, param: str, value: str) -> None:
    response = client.get("/api/timers", {param: value})
    assert_error(response, 400, field=param)


def test_filters_combine_and_survive_pagination(client: APIClient, create_timer: CreateTimer) -> None:
    wanted = [create_timer(name="job", labels={"env": "prod"})["id"] for _ in range(3)]
    create_timer(name="job", labels={"env": "dev"})
    create_timer(name="other", labels={"env": "prod"})
    first = _get(client, "?name=job&label=env:prod&status=scheduled&limit=2")
    next_url = first.json()["next"]
    query = parse_qs(urlsplit(next_url).query)
    assert query["name"] == ["job"] and query["label"] == ["env:prod"]
    second = _follow(client, next_url)
    assert _ids(first) + _ids(second) == wanted[::-1]
    assert second.json()["next"] is None


def test_list_body_renders_each_timer_in_the_wire_format(client: APIClient, create_timer: CreateTimer) -> None:
    created = create_timer(name="wire", labels={"a": "b"})
    listed = _get(client).json()["timers"][0]
    assert listed == created


def test_list_does_not_grow_queries_with_the_page(
    client: APIClient, create_timer: CreateTimer, django_assert_max_num_queries: Any
) -> None:
    for i in range(10):
        create_timer(name=f"t{i}")
    with django_assert_max_num_queries(5):
        assert len(_ids(_get(client))) == 10
    assert Timer.objects.count() == 10


@pytest.mark.parametrize("raw", ["env:pr\x00d", "e\x00nv:prod"])
def test_a_label_filter_with_nul_is_400(client: APIClient, raw: str) -> None:
    response = client.get("/api/timers", {"label": raw})
    assert_error(response, 400, field="label")


# --- pages are bounded in bytes whatever the timers hold --------------------------------------

PAGE_BYTES = 4 * 1024 * 1024


def _make_big(ids: list[str], *, kib: int = 64) -> None:
    """Give the timers metadata and a bundle of ``kib`` KiB each (the create caps) directly."""
    blob = "x" * (kib * 1024 - 100)
    bundle = {"actions": [{"id": "f", "kind": "file", "parameters": {"path": "a", "content": blob}}]}
    Timer.objects.filter(pk__in=ids).update(metadata={"blob": blob}, action_bundle=bundle)


def _walk(client: APIClient, first: str, *, backwards: bool = False) -> tuple[list[str], list[Any]]:
    seen: list[str] = []
    responses: list[Any] = []
    response = _get(client, first)
    while True:
        responses.append(response)
        seen += _ids(response)
        link = response.json()["previous" if backwards else "next"]
        if link is None:
            return seen, responses
        response = _follow(client, link)


def test_a_page_of_big_timers_stays_under_4_mib_and_next_continues_it(
    client: APIClient, create_timer: CreateTimer
) -> None:
    created = [create_timer(name=f"t{i}")["id"] for i in range(45)]
    _make_big(created)  # 45 x 128 KiB: 5.6 MiB in all

    seen, responses = _walk(client, "?limit=500")

    assert seen == created[::-1]  # every timer exactly once, newest first
    assert len(responses) == 2
    for response in responses:
        assert len(response.content) <= PAGE_BYTES, len(response.content)
    first_page = len(_ids(responses[0]))
    assert 25 <= first_page < 45  # cut by bytes, not by the limit
    assert responses[0].json()["timers"][0]["metadata"]["blob"]  # timers are listed in full


def test_previous_links_of_byte_bounded_pages_walk_back_to_the_first_page(
    client: APIClient, create_timer: CreateTimer
) -> None:
    created = [create_timer(name=f"t{i}")["id"] for i in range(70)]
    _make_big(created)
    forward, pages = _walk(client, "?limit=500")
    assert forward == created[::-1]
    assert len(pages) == 3
    last = pages[-1]
    back, back_pages = _walk(client, "?" + urlsplit(last.json()["previous"]).query, backwards=True)
    assert back == [t for page in pages[-2::-1] for t in _ids(page)]
    for response in back_pages:
        assert len(response.content) <= PAGE_BYTES


def test_a_timer_larger_than_the_page_bound_comes_alone_on_its_page(
    client: APIClient, create_timer: CreateTimer
) -> None:
    small = create_timer(name="small")["id"]
    big = create_timer(name="big")["id"]
    newest = create_timer(name="newest")["id"]
    Timer.objects.filter(pk=big).update(agent_binding={"blob": "y" * (PAGE_BYTES + 1)})
    seen, responses = _walk(client, "")
    assert seen == [newest, big, small]
    assert [len(_ids(r)) for r in responses] == [1, 1, 1]


def test_a_page_of_big_timers_loads_only_the_timers_it_returns(
    client: APIClient, create_timer: CreateTimer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The web process must not load 500 big timers to return 30 of them: memory is bounded too.
    created = [create_timer(name=f"t{i}")["id"] for i in range(45)]
    _make_big(created)
    loaded: list[int] = []
    original = Timer.from_db.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Timer], *args: Any, **kwargs: Any) -> Timer:
        loaded.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Timer, "from_db", classmethod(counting))
    response = _get(client, "?limit=500")
    returned = len(_ids(response))
    assert returned < 45
    assert len(loaded) <= returned + 1, (len(loaded), returned)
    assert _ids(_follow(client, response.json()["next"])) == created[::-1][returned:]


def test_the_schema_gives_limit_its_range(client: APIClient) -> None:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    (limit,) = [p for p in schema["paths"]["/api/timers"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}


# --- label and fireAt filters: by id when few match, the walk in the list's order otherwise --


@pytest.fixture(params=["by id", "from the newest match", "as planned"])
def filtered_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test below three times on Postgres: with the matching timers under the bound (looked
    up by id, then sorted), above it (a fireAt window: from its newest timer on), and above both
    (the query as it is). SQLite always runs the query as it is."""
    by_id, newest = {"by id": (1000, 20_000), "from the newest match": (2, 20_000), "as planned": (2, 2)}[request.param]
    monkeypatch.setattr(selectors, "LIST_BY_ID_LIMIT", by_id)
    monkeypatch.setattr(selectors, "WINDOW_NEWEST_LIMIT", newest)
    return str(request.param)


def _timers_at(tenant: Any, specs: Sequence[tuple[int, int, dict[str, str]]]) -> list[Timer]:
    """Timers of ``tenant``, one per (created seconds ago, fireAt hours ahead, labels); timers
    created in the same second tie on created_at (the id orders them, as the list does)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        make_timer(
            tenant=tenant,
            status="scheduled",
            name=f"t{i}",
            created_at=now - timedelta(seconds=ago),
            fire_at=now + timedelta(hours=ahead),
            labels=labels,
        )
        for i, (ago, ahead, labels) in enumerate(specs)
    ]


def _in_list_order(timers: list[Timer]) -> list[str]:
    return [str(t.id) for t in sorted(timers, key=lambda t: (t.created_at, t.id), reverse=True)]


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_label_filter_lists_its_timers_in_order_across_pages_and_back(
    client: APIClient, tenant: Any, other_tenant: Any, filtered_path: str
) -> None:
    specs = [(ago, 1, {"env": "prod" if ago % 3 == 0 else "dev", "n": str(ago)}) for ago in range(20)]
    specs += [(6, 2, {"env": "prod"}), (6, 3, {"env": "prod"})]  # ties on created_at
    timers = _timers_at(tenant, specs)
    _timers_at(other_tenant, [(0, 1, {"env": "prod"})])
    wanted = _in_list_order([t for t in timers if t.labels["env"] == "prod"])
    assert len(wanted) == 9
    seen, responses = _walk(client, "?label=env:prod&limit=2")
    assert seen == wanted and len(responses) == 5
    back, _ = _walk(client, responses[-1].json()["previous"].split("/api/timers", 1)[1], backwards=True)
    assert back == wanted[6:8] + wanted[4:6] + wanted[2:4] + wanted[0:2]


def test_repeated_labels_and_a_fire_window_all_filter_across_pages(
    client: APIClient, tenant: Any, filtered_path: str
) -> None:
    specs = [(ago, ago % 5, {"env": "prod", "team": "infra" if ago % 2 else "web"}) for ago in range(24)]
    timers = _timers_at(tenant, specs)
    now = min(t.fire_at for t in timers)  # fireAt hours ahead of the same instant
    window = (now + timedelta(hours=1), now + timedelta(hours=3))
    wanted = _in_list_order([t for t in timers if t.labels["team"] == "infra" and window[0] <= t.fire_at < window[1]])
    query = f"?label=env:prod&label=team:infra&fireAfter={_at(window[0])}&fireBefore={_at(window[1])}&limit=2"
    seen, _ = _walk(client, query)
    assert seen == wanted and len(wanted) == 5


def test_a_fire_window_lists_its_timers_in_order_across_pages(
    client: APIClient, tenant: Any, other_tenant: Any, filtered_path: str
) -> None:
    timers = _timers_at(tenant, [(ago, ago % 4, {}) for ago in range(16)] + [(3, 1, {}), (3, 2, {})])
    _timers_at(other_tenant, [(0, 1, {})])
    now = min(t.fire_at for t in timers)
    window = (now + timedelta(hours=1), now + timedelta(hours=3))
    in_window = [t for t in timers if window[0] <= t.fire_at < window[1]]
    seen, _ = _walk(client, f"?fireAfter={_at(window[0])}&fireBefore={_at(window[1])}&limit=3")
    assert seen == _in_list_order(in_window) and len(in_window) == 10
    after, _ = _walk(client, f"?fireAfter={_at(now + timedelta(hours=3))}&limit=3")
    assert after == _in_list_order([t for t in timers if t.fire_at >= now + timedelta(hours=3)])


def test_a_label_or_window_no_timer_matches_lists_nothing(client: APIClient, tenant: Any, filtered_path: str) -> None:
    timers = _timers_at(tenant, [(ago, 1, {"env": "prod"}) for ago in range(5)])
    assert _get(client, "?label=env:absent").json() == {"timers": [], "next": None, "previous": None}
    assert _ids(_get(client, "?label=absent:prod")) == []
    past = _at(min(t.fire_at for t in timers) - timedelta(days=1))
    assert _ids(_get(client, f"?fireBefore={past}")) == []
    assert _ids(_get(client, "?label=env:prod&limit=10")) == _in_list_order(timers)


def _plan_indexes(node: dict[str, Any]) -> set[str]:
    found = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        found |= _plan_indexes(child)
    return found


@pytest.mark.postgres_only("Postgres plans")
@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("?label=env:rare", "timer_labels"),
        ("?fireAfter={0}T05:00:00Z&fireBefore={0}T05:01:00Z", "timer_tenant_fire_at"),
    ],
)
def test_a_label_or_a_fire_window_is_found_by_its_own_index_then_listed_by_id(
    client: APIClient, tenant: Any, query: str, index: str
) -> None:
    day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    make_timers(tenant=tenant, fire_ats=[day + timedelta(minutes=i) for i in range(600)], labels={"env": "prod"})
    rare = make_timers(
        tenant=tenant, fire_ats=[day + timedelta(hours=5, seconds=i) for i in range(3)], labels={"env": "rare"}
    )
    with connection.cursor() as cur:
        cur.execute("ANALYZE timers_timer")
    with CaptureQueriesContext(connection) as queries:
        listed = _ids(_get(client, query.format(day.date().isoformat())))
    assert set(listed) >= {str(t.id) for t in rare}
    timer_sqls = [q["sql"] for q in queries.captured_queries if 'FROM "timers_timer"' in q["sql"]]
    probe, *pages = timer_sqls  # the count up to the bound, then the page's sizes and the page
    assert "ORDER BY" not in probe and len(pages) == 2
    with connection.cursor() as cur:
        # A few hundred rows: a scan of the table would win anyway; what is left is the index.
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute(f"EXPLAIN (FORMAT JSON) {probe}")
        (plan,) = cur.fetchone()
        assert index in _plan_indexes(plan[0]["Plan"]), plan
        for sql in pages:  # the ids found (by primary key or the filter's index), then sorted
            assert '"timers_timer"."id" IN (' in sql
            cur.execute(f"EXPLAIN (FORMAT JSON) {sql}")
            (plan,) = cur.fetchone()
            used = _plan_indexes(plan[0]["Plan"])
            assert used and not used & {"timer_tenant_created", "timer_created"}, plan  # no walk in list order


@pytest.mark.postgres_only("Postgres plans")
def test_a_fire_window_of_more_timers_than_listed_by_id_starts_at_its_newest_read_from_its_index(
    client: APIClient, tenant: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selectors, "LIST_BY_ID_LIMIT", 2)
    day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    make_timers(tenant=tenant, fire_ats=[day + timedelta(minutes=i) for i in range(600)])
    with connection.cursor() as cur:
        cur.execute("ANALYZE timers_timer")
    with CaptureQueriesContext(connection) as queries:
        listed = _ids(
            _get(client, f"?fireAfter={_at(day + timedelta(hours=5))}&fireBefore={_at(day + timedelta(hours=6))}")
        )
    assert len(listed) == 50
    _, newest, *pages = [q["sql"] for q in queries.captured_queries if 'FROM "timers_timer"' in q["sql"]]
    assert "MAX(" in newest and len(pages) == 2
    assert all('"timers_timer"."created_at" <= ' in sql for sql in pages)
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute(f"EXPLAIN (FORMAT JSON) {newest}")
        (plan,) = cur.fetchone()
    # An index-only scan once vacuum has marked the pages all-visible (not in a test's transaction).
    assert _plan_indexes(plan[0]["Plan"]) == {"timer_tenant_fire_at"}, plan
