"""Operator dashboard: tenants, keys (never the secret), timers with their history, events."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.http import HttpRequest

from actions.admin import ActionRunInline
from actions.secrets import tenant_webhook_secret_rotate
from timers.models import ApiKey, Tenant, Timer, TimerEvent

if TYPE_CHECKING:  # the admin classes are generic in django-stubs only: Django's take no type arguments
    _ReadOnlyInlineBase = admin.TabularInline[Any, Timer]
    _TenantAdminBase = admin.ModelAdmin[Tenant]
    _ApiKeyAdminBase = admin.ModelAdmin[ApiKey]
    _TimerAdminBase = admin.ModelAdmin[Timer]
    _TimerEventAdminBase = admin.ModelAdmin[TimerEvent]
else:
    _ReadOnlyInlineBase = admin.TabularInline
    _TenantAdminBase = _ApiKeyAdminBase = _TimerAdminBase = _TimerEventAdminBase = admin.ModelAdmin


class ReadOnlyInline(_ReadOnlyInlineBase):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(_TenantAdminBase):
    list_display = ["id", "name", "max_active_timers", "max_creates_per_day", "created_at"]
    search_fields = ["id", "name"]
    readonly_fields = ["webhook_secret_rotated_at", "created_at"]
    actions = ["rotate_webhook_secret"]

    @admin.action(description="Rotate the webhook signing secret (the previous one stays valid 24 h)")
    def rotate_webhook_secret(self, request: HttpRequest, queryset: Any) -> None:
        for tenant_id in queryset.values_list("pk", flat=True):
            secret = tenant_webhook_secret_rotate(tenant_id=tenant_id)
            # Shown once, to the staff member who rotated it: receivers need it to verify.
            self.message_user(
                request,
                f"Tenant '{tenant_id}': new webhook secret {secret} (webhooks are signed with both the new "
                "and the previous secret for 24 hours).",
                messages.SUCCESS,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(_ApiKeyAdminBase):
    list_display = ["prefix", "tenant", "name", "roles", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant"]
    search_fields = ["prefix", "name", "tenant__id"]
    # key_hash is not listed anywhere: even the hash stays out of the UI.
    fields = ["tenant", "name", "prefix", "roles", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created with `manage.py create_api_key`, which shows the raw key once


class TimerEventInline(ReadOnlyInline):
    model = TimerEvent
    fields = readonly_fields = ("occurred_at", "kind", "state_version", "data")
    ordering = ["id"]


@admin.register(Timer)
class TimerAdmin(_TimerAdminBase):
    list_display = ["id", "name", "tenant", "status", "fire_at", "fired_at", "lateness_ms", "created_at"]
    list_filter = ["status", "tenant"]
    search_fields = ["=id", "name"]
    date_hierarchy = "fire_at"
    inlines = [TimerEventInline]
    list_select_related = ["tenant"]
    show_full_result_count = False

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return [ActionRunInline, TimerEventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # timers are created through the API, which validates and arms them

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # status changes only through services (cancel from the API)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting a timer mid-flight would bypass the services and the event log

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        try:
            uuid.UUID(search_term)
        except ValueError:
            return queryset.filter(name__icontains=search_term), False
        return queryset.filter(id=search_term), False


@admin.register(TimerEvent)
class TimerEventAdmin(_TimerEventAdminBase):
    list_display = ["occurred_at", "timer", "kind", "state_version"]
    list_filter = ["kind"]
    search_fields = ["=timer__id"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
