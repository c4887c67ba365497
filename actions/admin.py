"""Action runs and attempts in the admin: read-only and never deleted; the one operator action
is "retry", a new attempt chain of a failed run through ``actions.services.run_retry``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from actions.models import ActionAttempt, ActionRun
from actions.services import run_retry
from timers.services import ServiceError
from timers.timefmt import utc_ms

if TYPE_CHECKING:  # the admin classes are generic in django-stubs only: Django's take no type arguments
    from timers.models import Timer

    _ActionRunInlineBase = admin.TabularInline[ActionRun, Timer]
    _ActionAttemptInlineBase = admin.TabularInline[ActionAttempt, ActionRun]
    _ActionRunAdminBase = admin.ModelAdmin[ActionRun]
else:
    _ActionRunInlineBase = _ActionAttemptInlineBase = admin.TabularInline
    _ActionRunAdminBase = admin.ModelAdmin


def run_badge(status: str) -> SafeString:
    return format_html('<span class="mn-badge mn-{}">{}</span>', status, status)


def retry_runs(model_admin: admin.ModelAdmin[Any], request: HttpRequest, runs: QuerySet[ActionRun]) -> None:
    """Retry each failed run of ``runs`` (``run_retry``), reporting what was retried and why
    the others were not."""
    by = f"admin:{request.user.get_username()}"
    retried, refused = 0, []
    for run in runs.select_related("timer"):
        try:
            run_retry(run_id=run.pk, by=by)
        except ServiceError as exc:
            refused.append(f"{run.action_id} of {run.timer.name}: {exc.message}")
            continue
        retried += 1
    model_admin.message_user(
        request,
        f"{retried} action run(s) retried: their timers are fired again and settle when the new attempts end.",
        messages.SUCCESS if retried else messages.WARNING,
    )
    if refused:
        model_admin.message_user(request, f"{len(refused)} not retried: {'; '.join(refused[:10])}", messages.WARNING)


class ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the record of what an action did is kept


class ActionRunInline(ReadOnly, _ActionRunInlineBase):
    model = ActionRun
    extra = 0
    can_delete = False
    fields = readonly_fields = ("action_id", "kind", "badge", "attempts", "next_attempt", "last_error", "finished")
    show_change_link = True

    @admin.display(description="status")
    def badge(self, run: ActionRun) -> SafeString:
        return run_badge(run.status)

    @admin.display(description="next attempt (UTC)")
    def next_attempt(self, run: ActionRun) -> str:
        return utc_ms(run.next_attempt_at)

    @admin.display(description="finished (UTC)")
    def finished(self, run: ActionRun) -> str:
        return utc_ms(run.finished_at)


class ActionAttemptInline(ReadOnly, _ActionAttemptInlineBase):
    model = ActionAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "number",
        "started",
        "finished",
        "outcome",
        "http_status",
        "exit_code",
        "duration_ms",
        "error",
        "output_excerpt",
    )

    @admin.display(description="started (UTC)")
    def started(self, attempt: ActionAttempt) -> str:
        return utc_ms(attempt.started_at)

    @admin.display(description="finished (UTC)")
    def finished(self, attempt: ActionAttempt) -> str:
        return utc_ms(attempt.finished_at)


@admin.register(ActionRun)
class ActionRunAdmin(ReadOnly, _ActionRunAdminBase):
    list_display = ["id", "timer", "action_id", "kind", "badge", "attempts", "next_attempt", "finished", "error"]
    list_filter = ["status", "kind"]
    search_fields = ["=id", "=timer__id", "action_id"]
    list_select_related = ["timer"]
    inlines = [ActionAttemptInline]
    show_full_result_count = False
    actions = ["retry_selected"]
    fields = readonly_fields = (
        "id",
        "timer",
        "action_id",
        "kind",
        "badge",
        "attempts",
        "escalation_level",
        "escalated_from",
        "next_attempt",
        "created",
        "finished",
        "last_error",
        "result_summary",
        "parameters",
    )

    class Media:
        css = {"all": ["minoots/admin.css"]}

    @admin.display(description="status", ordering="status")
    def badge(self, run: ActionRun) -> SafeString:
        return run_badge(run.status)

    @admin.display(description="next attempt (UTC)", ordering="next_attempt_at")
    def next_attempt(self, run: ActionRun) -> str:
        return utc_ms(run.next_attempt_at)

    @admin.display(description="created (UTC)")
    def created(self, run: ActionRun) -> str:
        return utc_ms(run.created_at)

    @admin.display(description="finished (UTC)", ordering="finished_at")
    def finished(self, run: ActionRun) -> str:
        return utc_ms(run.finished_at)

    @admin.display(description="last error")
    def error(self, run: ActionRun) -> str:
        return run.last_error[:120]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        user: Any = request.user
        return bool(user.has_perm("actions.change_actionrun"))

    @admin.action(description="Retry the selected failed runs (a new attempt chain)", permissions=["operate"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[ActionRun]) -> None:
        retry_runs(self, request, queryset)
