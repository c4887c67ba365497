"""The inserts of a batch create (``services.timers_create_batch``): many new timers and their
first events, on Postgres in one statement, beside the ORM twin SQLite runs.

Why a module of its own: at a thousand timers a request the generic paths cost more than the
database does. ``Timer(...)`` goes through a descriptor per field (about 8 µs a timer), and
psycopg2 adapts a Python list as ``ARRAY[v1, v2, ...]``, one SQL constant per element, each
datetime through ``isoformat`` (about 26 ms of client CPU for the 15 columns of 1,000 timers,
and the server then parses 15,000 constants). Here each column goes as one array literal in
Postgres' text form (``'{"a","b"}'``), parsed by ``array_in``; the ``created`` / ``armed``
events are made by the same statement from the same arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

from timers import queries
from timers.models import Timer, TimerEvent, TimerStatus
from timers.queries import EventRow

# What a new timer has before it fires, settles or is cancelled (as Timer's defaults say).
_UNSET: dict[str, Any] = {
    "fired_at": None,
    "lateness_ms": None,
    "settled_at": None,
    "cancelled_at": None,
    "cancel_reason": "",
    "cancelled_by": "",
    "failure_reason": "",
}

_TIMER = Timer._meta.db_table
_EVENT = TimerEvent._meta.db_table

# One array per column, in the order of _INSERT's unnest(); the row's position orders the
# events as the timers were given (a timer's created event before its armed event, as
# timer_create writes them, and the timers' events in the batch's order).
_INSERT = f"""
WITH new_rows AS MATERIALIZED (
    SELECT * FROM unnest(
        %s::uuid[], %s::text[], %s::boolean[], %s::bigint[], %s::text[], %s::text[],
        %s::jsonb[], %s::jsonb[], %s::jsonb[], %s::jsonb[], %s::text[], %s::text[]
    ) WITH ORDINALITY AS u(id, name, armed, duration_ms, fire_at, requested_by,
                           metadata, labels, action_bundle, agent_binding, idempotency_key, request_hash,
                           position)
), new_timers AS (
    INSERT INTO {_TIMER} (id, tenant_id, name, status, duration_ms, created_at, fire_at, requested_by,
                          metadata, labels, action_bundle, agent_binding, state_version, idempotency_key,
                          request_hash, cancel_reason, cancelled_by, failure_reason)
    SELECT id, %s, name, CASE WHEN armed THEN 'armed' ELSE 'scheduled' END, duration_ms, %s,
           fire_at::timestamptz, requested_by, metadata, labels, action_bundle, agent_binding,
           CASE WHEN armed THEN 2 ELSE 1 END, idempotency_key, request_hash, '', '', ''
      FROM new_rows ORDER BY position
)
INSERT INTO {_EVENT} (timer_id, kind, occurred_at, state_version, data)
SELECT r.id, e.kind, %s, e.version,
       CASE WHEN e.version = 1 THEN jsonb_build_object('fireAt', r.fire_at) ELSE '{{}}'::jsonb END
  FROM new_rows r CROSS JOIN (VALUES ('created', 1), ('armed', 2)) AS e(kind, version)
 WHERE e.version = 1 OR r.armed
 ORDER BY r.position, e.version
"""  # noqa: S608  (interpolates the model table names only)


def _array(values: Iterable[str | None]) -> str:
    """A Postgres array literal of text elements (NULL for None), for ``'...'::<type>[]``."""
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
        elif '"' in v or "\\" in v:
            parts.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            parts.append(f'"{v}"')
    return "{" + ",".join(parts) + "}"


def _json(value: Any) -> str:
    # Most timers of a batch have no metadata or labels: skip the encoder for them.
    return "{}" if type(value) is dict and not value else json.dumps(value)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else _json(value)


def _no_init_receivers() -> bool:
    return not (pre_init.has_listeners(Timer) or post_init.has_listeners(Timer))


_ATTNAMES = tuple(f.attname for f in Timer._meta.concrete_fields)


def build_timer(values: dict[str, Any], *, plain: bool | None = None) -> Timer:
    """``Timer(**values)`` (every concrete field given by attname) for a row about to be stored.

    Without Model.__init__'s per-field ``setattr`` (its descriptors are most of the cost of a
    thousand timers): the values go into the instance's ``__dict__``, where the field
    descriptors read them. With a ``pre_init`` / ``post_init`` receiver on Timer, through
    ``__init__`` so that the receivers run (``plain``: whether there is none, when the caller
    already asked, since asking the signals costs more than building the timer)."""
    if not (_no_init_receivers() if plain is None else plain):
        return Timer(*(values[name] for name in _ATTNAMES))  # type: ignore[misc]  # positional, as the ORM loads rows
    timer = Timer.__new__(Timer)
    timer._state = ModelState()
    timer.__dict__.update(values)
    return timer


def _new_ids(chunk: int = 256) -> Iterator[UUID]:
    """``uuid.uuid4()`` one after the other, from one ``os.urandom`` call per ``chunk`` ids (a
    system call per id was a tenth of building a batch's timers)."""
    while True:
        random = os.urandom(16 * chunk)
        for start in range(0, len(random), 16):
            yield UUID(bytes=random[start : start + 16], version=4)


class NewTimers:
    """The timers a batch creates, collected one by one, then stored together by ``insert``:
    each timer with its ``created`` event (``{"fireAt": <its fire_at in ISO 8601>}``) and, when
    armed at once, its ``armed`` event, all at ``created_at``, exactly what ``timer_create``
    writes for one."""

    def __init__(self, *, tenant_id: str, created_at: datetime) -> None:
        self.tenant_id = tenant_id
        self.created_at = created_at
        self.timers: list[Timer] = []
        self._fire_at_text: list[str] = []
        self._plain = _no_init_receivers()
        self._ids = _new_ids()

    def __len__(self) -> int:
        return len(self.timers)

    def add(
        self,
        *,
        name: str,
        armed: bool,
        duration_ms: int,
        fire_at: datetime,
        requested_by: str,
        metadata: dict[str, Any],
        labels: dict[str, str],
        action_bundle: dict[str, Any] | None,
        agent_binding: dict[str, Any] | None,
        idempotency_key: str | None,
        request_hash: str,
    ) -> Timer:
        """A new timer (not stored until ``insert``)."""
        timer = build_timer(
            {
                "id": next(self._ids),
                "tenant_id": self.tenant_id,
                "name": name,
                "status": TimerStatus.ARMED if armed else TimerStatus.SCHEDULED,
                "duration_ms": duration_ms,
                "created_at": self.created_at,
                "fire_at": fire_at,
                "requested_by": requested_by,
                "metadata": metadata,
                "labels": labels,
                "action_bundle": action_bundle,
                "agent_binding": agent_binding,
                "state_version": 2 if armed else 1,
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                **_UNSET,
            },
            plain=self._plain,
        )
        self.timers.append(timer)
        self._fire_at_text.append(fire_at.isoformat())
        return timer

    def insert(self) -> None:
        """Store the timers and their events (inside the caller's transaction); Postgres: one
        statement. The timers are then as the ORM leaves saved ones."""
        if not self.timers:
            return
        if connection.vendor == "postgresql":
            self._insert_postgres()
        else:
            self._insert_orm()
        for t in self.timers:
            t._state.adding = False
            t._state.db = connection.alias

    def _insert_postgres(self) -> None:
        timers = self.timers
        columns = [
            _array([str(t.id) for t in timers]),
            _array([t.name for t in timers]),
            "{" + ",".join("t" if t.status == TimerStatus.ARMED else "f" for t in timers) + "}",
            "{" + ",".join(str(t.duration_ms) for t in timers) + "}",
            _array(self._fire_at_text),
            _array([t.requested_by for t in timers]),
            _array([_json(t.metadata) for t in timers]),
            _array([_json(t.labels) for t in timers]),
            _array([_json_or_null(t.action_bundle) for t in timers]),
            _array([_json_or_null(t.agent_binding) for t in timers]),
            _array([t.idempotency_key for t in timers]),
            _array([t.request_hash for t in timers]),
        ]
        with connection.cursor() as cur:
            cur.execute(_INSERT, [*columns, self.tenant_id, self.created_at, self.created_at])

    def _insert_orm(self) -> None:
        events: list[EventRow] = []
        at = self.created_at
        for timer, fire_at in zip(self.timers, self._fire_at_text, strict=True):
            timer_id: UUID = timer.id
            events.append(EventRow(timer_id, "created", at, 1, {"fireAt": fire_at}))
            if timer.status == TimerStatus.ARMED:
                events.append(EventRow(timer_id, "armed", at, 2, {}))
        queries.insert_timers(self.timers)
        queries.insert_events(events)
