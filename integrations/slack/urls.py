from __future__ import annotations

from django.urls import path

from integrations.slack import views

urlpatterns = [
    path("commands", views.commands, name="slack-commands"),
    path("interactive", views.interactive, name="slack-interactive"),
]
