"""Action runs and attempts in the operator dashboard (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from actions.models import ActionAttempt, ActionRun


class ActionRunInline(admin.TabularInline):
    model = ActionRun
    extra = 0
    can_delete = False
    fields = readonly_fields = ("action_id", "kind", "status", "attempts", "next_attempt_at", "last_error", "finished_at")
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ActionAttemptInline(admin.TabularInline):
    model = ActionAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ("number", "started_at", "finished_at", "outcome", "http_status", "exit_code", "duration_ms", "error", "output_excerpt")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ActionRun)
class ActionRunAdmin(admin.ModelAdmin):
    list_display = ["id", "timer", "action_id", "kind", "status", "attempts", "next_attempt_at"]
    list_filter = ["status", "kind"]
    search_fields = ["=id", "=timer__id", "action_id"]
    inlines = [ActionAttemptInline]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
