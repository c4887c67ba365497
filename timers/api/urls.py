from __future__ import annotations

from django.urls import path

from timers.api import stream, views

urlpatterns = [
    path("timers", views.TimerListCreateApi.as_view(), name="timer-list"),
    path("timers/batch", views.TimerBatchCreateApi.as_view(), name="timer-batch"),
    path("timers/stream", stream.TimerStreamApi.as_view(), name="timer-stream"),
    path("timers/<uuid:timer_id>", views.TimerDetailApi.as_view(), name="timer-detail"),
    path("timers/<uuid:timer_id>/cancel", views.TimerCancelApi.as_view(), name="timer-cancel"),
    path("timers/<uuid:timer_id>/events", views.TimerEventsApi.as_view(), name="timer-events"),
]
