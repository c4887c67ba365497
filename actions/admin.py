"""Action runs and attempts in the operator dashboard (read-only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from actions.models import ActionAttempt, ActionRun

if TYPE_CHECKING:  # the admin classes are generic in django-stubs only: Django's take no type arguments
    from timers.models import Timer

    _ActionRunInlineBase = admin.TabularInline[ActionRun, Timer]
    _ActionAttemptInlineBase = admin.TabularInline[ActionAttempt, ActionRun]
    _ActionRunAdminBase = admin.ModelAdmin[ActionRun]
else:
    _ActionRunInlineBase = _ActionAttemptInlineBase = admin.TabularInline
    _ActionRunAdminBase = admin.ModelAdmin


class ActionRunInline(_ActionRunInlineBase):
    model = ActionRun
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "action_id",
        "kind",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "finished_at",
    )
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ActionAttemptInline(_ActionAttemptInlineBase):
    model = ActionAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "number",
        "started_at",
        "finished_at",
        "outcome",
        "http_status",
        "exit_code",
        "duration_ms",
        "error",
        "output_excerpt",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ActionRun)
class ActionRunAdmin(_ActionRunAdminBase):
    list_display = ["id", "timer", "action_id", "kind", "status", "attempts", "next_attempt_at"]
    list_filter = ["status", "kind"]
    search_fields = ["=id", "=timer__id", "action_id"]
    inlines = [ActionAttemptInline]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
