"""The admin of tenants, keys, timers and events: what an operator reads and the few things
they do, each through a service (no rule lives here).

Every time is shown in UTC to the millisecond (``timers.timefmt.utc_ms``); internal fields
(the request hash, key hashes, webhook secrets) are never shown. Operator actions: cancel,
fire now, reschedule and retry failed runs on timers; revoke keys (a button on the tenant's
page, an action on the key list); rotate a tenant's signing secret. An action needs the
``change`` permission of its model (a superuser has them all); a read-only staff member sees
the pages without the actions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from actions.admin import ActionRunInline, retry_runs
from actions.models import ActionRun, RunStatus
from actions.runners import RUNNERS
from actions.secrets import tenant_webhook_secret_rotate
from timers.durations import DurationError, parse_duration
from timers.keys import api_key_revoke
from timers.models import PENDING_STATUSES, ApiKey, Tenant, Timer, TimerEvent, TimerStatus
from timers.services import ServiceError, timer_cancel, timer_reschedule
from timers.timefmt import EMPTY, ms_text, utc_ms

if TYPE_CHECKING:  # the admin classes are generic in django-stubs only: Django's take no type arguments
    _ReadOnlyInlineBase = admin.TabularInline[Any, Any]
    _TenantAdminBase = admin.ModelAdmin[Tenant]
    _ApiKeyAdminBase = admin.ModelAdmin[ApiKey]
    _TimerAdminBase = admin.ModelAdmin[Timer]
    _TimerEventAdminBase = admin.ModelAdmin[TimerEvent]
    _TenantFormBase = forms.ModelForm[Tenant]
else:
    _ReadOnlyInlineBase = admin.TabularInline
    _TenantAdminBase = _ApiKeyAdminBase = _TimerAdminBase = _TimerEventAdminBase = admin.ModelAdmin
    _TenantFormBase = forms.ModelForm

ADMIN_CSS = {"all": ["minoots/admin.css"]}
# The changelist counts its rows for the paginator; on a million timers an exact COUNT(*)
# reads them all, so the count stops here (the last pages are then out of reach; filter).
COUNT_CAP = 10_000


def operator(request: HttpRequest) -> str:
    """Who did it, as the events record it."""
    return f"admin:{request.user.get_username()}"


def status_badge(status: str) -> SafeString:
    return format_html('<span class="mn-badge mn-{}">{}</span>', status, status)


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]  # django-stubs: generic only there
    """A paginator whose count reads at most COUNT_CAP + 1 rows."""

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        return int(object_list.order_by().values("pk")[: COUNT_CAP + 1].count())


class ReadOnlyInline(_ReadOnlyInlineBase):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OperatorActions:
    """``allowed_permissions = ("operate",)``: the model's change permission, whatever the
    admin's own ``has_change_permission`` answers (timers are never edited as a form)."""

    opts: Any

    def has_operate_permission(self, request: HttpRequest) -> bool:
        user: Any = request.user
        return bool(user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}"))


# --- tenants and keys -------------------------------------------------------------------------


class ApiKeyInline(ReadOnlyInline):
    """A tenant's keys: never the secret, nor its hash. Revoke is a button per key."""

    model = ApiKey
    fields = readonly_fields = ("prefix", "name", "roles", "created", "last_used", "revoked", "revoke")
    ordering = ["-created_at"]

    @admin.display(description="created")
    def created(self, key: ApiKey) -> str:
        return utc_ms(key.created_at)

    @admin.display(description="last used")
    def last_used(self, key: ApiKey) -> str:
        return utc_ms(key.last_used_at)

    @admin.display(description="revoked")
    def revoked(self, key: ApiKey) -> str:
        return utc_ms(key.revoked_at)

    @admin.display(description="")
    def revoke(self, key: ApiKey) -> str:
        if key.pk is None or key.revoked_at is not None:
            return ""
        url = reverse("admin:timers_tenant_revoke_key", args=[key.tenant_id, key.pk])
        # A button of the tenant's own form, posted (with its CSRF token) to the revoke view.
        return format_html(
            '<button type="submit" class="button" formaction="{}" formmethod="post" name="_revoke" '
            "onclick=\"return confirm('Revoke key {}? Requests with it get 401 at once.')\">Revoke</button>",
            url,
            key.prefix,
        )


class TenantForm(_TenantFormBase):
    allowed_action_kinds = forms.MultipleChoiceField(
        choices=[(kind, kind) for kind in sorted(RUNNERS)],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=(
            "The action kinds this tenant may use; none checked means every kind. Checked when a timer "
            "is created (a 400 naming the kind) and again at each attempt: an attempt of a kind taken off "
            "the list fails for good."
        ),
    )

    class Meta:
        model = Tenant
        fields = ["id", "name", "max_active_timers", "max_creates_per_day", "allowed_action_kinds"]

    def clean_allowed_action_kinds(self) -> list[str]:
        return sorted(self.cleaned_data.get("allowed_action_kinds") or [])


@admin.register(Tenant)
class TenantAdmin(OperatorActions, _TenantAdminBase):
    form = TenantForm
    list_display = ["id", "name", "max_active_timers", "max_creates_per_day", "action_kinds", "created"]
    search_fields = ["id", "name"]
    fields = [
        "id",
        "name",
        "max_active_timers",
        "max_creates_per_day",
        "allowed_action_kinds",
        "secret_rotated",
        "created",
    ]
    readonly_fields = ["secret_rotated", "created"]
    inlines = [ApiKeyInline]
    actions = ["rotate_webhook_secret"]

    class Media:
        css = ADMIN_CSS

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "id"] if obj is not None else list(self.readonly_fields)

    @admin.display(description="action kinds")
    def action_kinds(self, tenant: Tenant) -> str:
        return ", ".join(tenant.allowed_action_kinds) if tenant.allowed_action_kinds else "all"

    @admin.display(description="created", ordering="created_at")
    def created(self, tenant: Tenant) -> str:
        return utc_ms(tenant.created_at)

    @admin.display(description="webhook secret rotated")
    def secret_rotated(self, tenant: Tenant) -> str:
        return utc_ms(tenant.webhook_secret_rotated_at)

    def get_urls(self) -> list[URLPattern]:
        revoke = path(
            "<path:tenant_id>/revoke-key/<int:key_id>/",
            self.admin_site.admin_view(self.revoke_key_view),
            name="timers_tenant_revoke_key",
        )
        return [revoke, *super().get_urls()]

    def revoke_key_view(self, request: HttpRequest, tenant_id: str, key_id: int) -> HttpResponse:
        back = reverse("admin:timers_tenant_change", args=[tenant_id])
        if request.method != "POST":
            return HttpResponseRedirect(back)
        if not self.has_operate_permission(request):
            self.message_user(
                request, "You may not revoke keys (it needs the change permission of tenants).", messages.ERROR
            )
            return HttpResponseRedirect(back)
        key = get_object_or_404(ApiKey, pk=key_id, tenant_id=tenant_id)
        if api_key_revoke(key=key):
            self.message_user(request, f"Key {key.prefix} ({key.name or 'unnamed'}) revoked.", messages.SUCCESS)
        else:
            self.message_user(request, f"Key {key.prefix} was already revoked.", messages.WARNING)
        return HttpResponseRedirect(back)

    @admin.action(
        description="Rotate the webhook signing secret (the previous one stays valid 24 h)",
        permissions=["operate"],
    )
    def rotate_webhook_secret(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
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
class ApiKeyAdmin(OperatorActions, _ApiKeyAdminBase):
    list_display = ["prefix", "tenant", "name", "roles", "created", "last_used", "revoked"]
    list_filter = ["tenant", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "tenant__id"]
    # key_hash is not listed anywhere: even the hash stays out of the UI. revoked_at changes
    # only through api_key_revoke (the action below, or the button on the tenant's page).
    fields = ["tenant", "name", "prefix", "roles", "created", "last_used", "revoked"]
    readonly_fields = ["tenant", "prefix", "created", "last_used", "revoked"]
    actions = ["revoke_selected"]

    @admin.display(description="created", ordering="created_at")
    def created(self, key: ApiKey) -> str:
        return utc_ms(key.created_at)

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, key: ApiKey) -> str:
        return utc_ms(key.last_used_at)

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked(self, key: ApiKey) -> str:
        return utc_ms(key.revoked_at)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created with `manage.py create_api_key`, which shows the raw key once

    @admin.action(description="Revoke the selected keys", permissions=["operate"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(api_key_revoke(key=key) for key in queryset)
        self.message_user(request, f"{revoked} key(s) revoked; {queryset.count() - revoked} were already.")


# --- timers -----------------------------------------------------------------------------------


class TextInputFilter(admin.ListFilter):
    """A filter typed in: a small GET form in the filter sidebar (``parameters``: name -> label)."""

    template = "admin/minoots/input_filter.html"
    parameters: dict[str, str] = {}

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.values: dict[str, str] = {}
        for name in self.parameters:
            if name in params:
                raw = params.pop(name)
                value = raw[-1] if isinstance(raw, list) else raw
                if str(value).strip():
                    self.values[name] = str(value).strip()

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:
        keep = [(k, v) for k, v in changelist.params.items() if k not in self.parameters]
        yield {
            "inputs": [(name, label, self.values.get(name, "")) for name, label in self.parameters.items()],
            "hidden": keep,
            "clear": changelist.get_query_string(remove=list(self.parameters)) if self.values else "",
        }


class LabelFilter(TextInputFilter):
    title = "label"
    parameters = {"label": "key:value"}

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        wanted = self.values.get("label")
        if not wanted:
            return queryset
        key, sep, value = wanted.partition(":")
        if not sep or not key:
            messages.warning(request, f"Label filter '{wanted}' ignored: write it as key:value")
            return queryset
        # As timers.selectors.timers_list does (a text comparison on Postgres and SQLite alike).
        labelled: QuerySet[Any] = queryset.annotate(_label=Cast(KeyTextTransform(key, "labels"), TextField()))
        return labelled.filter(_label=value)


def _instant(raw: str) -> datetime | None:
    """An RFC 3339 / ISO instant; without an offset it is UTC."""
    value = raw.strip().replace(" ", "T")
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if timezone.is_naive(parsed) else parsed


class FireAtFilter(TextInputFilter):
    title = "fireAt (UTC)"
    parameters = {"fire_after": "from (inclusive)", "fire_before": "to (exclusive)"}

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        for name, lookup in (("fire_after", "fire_at__gte"), ("fire_before", "fire_at__lt")):
            if name in self.values:
                moment = _instant(self.values[name])
                if moment is None:
                    messages.warning(request, f"fireAt {self.parameters[name]} '{self.values[name]}' is not a time")
                    continue
                queryset = queryset.filter(**{lookup: moment})
        return queryset


class TimerEventInline(ReadOnlyInline):
    model = TimerEvent
    fields = readonly_fields = ("occurred", "kind", "state_version", "data")
    ordering = ["id"]

    @admin.display(description="occurred at (UTC)")
    def occurred(self, event: TimerEvent) -> str:
        return utc_ms(event.occurred_at)


class RescheduleForm(forms.Form):
    """The intermediate page of "Reschedule": a new fireAt, or a duration from now."""

    fire_at = forms.CharField(
        required=False, label="New fireAt", help_text="RFC 3339, e.g. 2026-12-01T14:00:00Z (no offset: UTC)"
    )
    duration = forms.CharField(
        required=False, label="or a duration from now", help_text="'90s', '5m', '1h30m', 'PT15M'"
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        fire_at, duration = (data.get("fire_at") or "").strip(), (data.get("duration") or "").strip()
        if bool(fire_at) == bool(duration):
            raise forms.ValidationError("Give exactly one of a new fireAt or a duration.")
        if fire_at:
            moment = _instant(fire_at)
            if moment is None:
                raise forms.ValidationError(f"'{fire_at}' is not an RFC 3339 time.")
            data["when"] = {"fire_at": moment}
        else:
            try:
                data["when"] = {"duration": parse_duration(duration)}
            except DurationError as exc:
                raise forms.ValidationError(f"duration: {exc}") from exc
        return data


_END_LABELS = {
    TimerStatus.SETTLED: ("settled_at", "Settled at"),
    TimerStatus.FAILED: ("settled_at", "Failed at"),
    TimerStatus.CANCELLED: ("cancelled_at", "Cancelled at"),
}


@admin.register(Timer)
class TimerAdmin(OperatorActions, _TimerAdminBase):
    list_display = ["id", "name", "tenant", "badge", "fire_at_ms", "fired_at_ms", "lateness", "ended", "created_ms"]
    list_display_links = ["id", "name"]
    list_filter = ["status", "tenant", LabelFilter, FireAtFilter]
    search_fields = ["=id", "name"]
    search_help_text = "A timer id, or part of a name or of a label value"
    list_select_related = ["tenant"]
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    actions = ["cancel_selected", "fire_now", "reschedule_selected", "retry_failed_runs"]
    inlines = [ActionRunInline, TimerEventInline]

    class Media:
        css = ADMIN_CSS

    # --- columns and fields (times in UTC to the millisecond) ---

    @admin.display(description="status", ordering="status")
    def badge(self, timer: Timer) -> SafeString:
        return status_badge(timer.status)

    @admin.display(description="fireAt (UTC)", ordering="fire_at")
    def fire_at_ms(self, timer: Timer) -> str:
        return utc_ms(timer.fire_at)

    @admin.display(description="firedAt (UTC)", ordering="fired_at")
    def fired_at_ms(self, timer: Timer) -> str:
        return utc_ms(timer.fired_at)

    @admin.display(description="created (UTC)", ordering="created_at")
    def created_ms(self, timer: Timer) -> str:
        return utc_ms(timer.created_at)

    @admin.display(description="lateness", ordering="lateness_ms")
    def lateness(self, timer: Timer) -> str | SafeString:
        if timer.lateness_ms is not None:
            return ms_text(timer.lateness_ms)
        if timer.status in PENDING_STATUSES and timer.fire_at < timezone.now():
            late = (timezone.now() - timer.fire_at) // timedelta(milliseconds=1)
            return format_html('<span class="mn-late" title="due, not fired yet">overdue {}</span>', ms_text(late))
        return EMPTY

    @admin.display(description="ended (UTC)")
    def ended(self, timer: Timer) -> str:
        label = _END_LABELS.get(TimerStatus(timer.status))
        if label is None:
            return EMPTY
        return f"{label[1].removesuffix(' at').lower()} {utc_ms(getattr(timer, label[0]))}"

    @admin.display(description="Settled at (UTC)")
    def settled_at_ms(self, timer: Timer) -> str:
        return utc_ms(timer.settled_at)

    @admin.display(description="Failed at (UTC)")
    def failed_at_ms(self, timer: Timer) -> str:
        return utc_ms(timer.settled_at)

    @admin.display(description="Cancelled at (UTC)")
    def cancelled_at_ms(self, timer: Timer) -> str:
        return utc_ms(timer.cancelled_at)

    @admin.display(description="Status")
    def status_field(self, timer: Timer) -> SafeString:
        return status_badge(timer.status)

    @admin.display(description="Lateness")
    def lateness_field(self, timer: Timer) -> str | SafeString:
        return self.lateness(timer)

    @admin.display(description="fireAt (UTC)")
    def fire_at_field(self, timer: Timer) -> str:
        return utc_ms(timer.fire_at)

    @admin.display(description="firedAt (UTC)")
    def fired_at_field(self, timer: Timer) -> str:
        return utc_ms(timer.fired_at)

    @admin.display(description="Created (UTC)")
    def created_field(self, timer: Timer) -> str:
        return utc_ms(timer.created_at)

    @admin.display(description="Duration")
    def duration_field(self, timer: Timer) -> str:
        return f"{ms_text(timer.duration_ms)} ({timer.duration_ms} ms)"

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": ["name"]})]
        when = ["status_field", "created_field", "duration_field", "fire_at_field", "fired_at_field", "lateness_field"]
        end = {
            TimerStatus.SETTLED: ["settled_at_ms"],
            TimerStatus.FAILED: ["failed_at_ms", "failure_reason"],
            TimerStatus.CANCELLED: ["cancelled_at_ms", "cancel_reason", "cancelled_by"],
        }.get(TimerStatus(obj.status), [])
        # No request_hash: an internal fingerprint of the create body, of no use to an operator.
        return [
            (None, {"fields": ["id", "tenant", "name", "requested_by", "state_version", "idempotency_key"]}),
            ("When", {"fields": [*when, *end]}),
            ("Content", {"fields": ["labels", "metadata", "action_bundle", "agent_binding"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fieldsets = self.get_fieldsets(request, obj)
        return [f for _, options in fieldsets for f in options["fields"]]

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            uuid.UUID(term)
        except ValueError:
            # A label value (or key) is found in the labels' JSON text.
            labels_text = Cast("labels", TextField())
            return queryset.annotate(_labels_text=labels_text).filter(
                Q(name__icontains=term) | Q(_labels_text__icontains=term)
            ), False
        return queryset.filter(id=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # timers are created through the API, which validates and arms them

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # status changes only through services: the actions of the list

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting a timer mid-flight would bypass the services and the event log

    # --- operator actions: each one a service call per timer ---

    def _report(self, request: HttpRequest, done: str, count: int, skipped: list[str]) -> None:
        self.message_user(request, f"{count} timer(s) {done}.", messages.SUCCESS if count else messages.WARNING)
        if skipped:
            shown = "; ".join(skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
            self.message_user(request, f"{len(skipped)} skipped: {shown}", messages.WARNING)

    @admin.action(description="Cancel the selected timers", permissions=["operate"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Timer]) -> None:
        done, skipped = 0, []
        for timer in queryset:
            before = timer.status
            try:
                after = timer_cancel(timer=timer, reason="cancelled in the admin", by=operator(request))
            except ServiceError as exc:
                skipped.append(f"{timer.name} ({timer.pk}): {exc.message}")
                continue
            # A fired timer is cancelled too: what has not started of its actions is stopped.
            if (before in PENDING_STATUSES or before == TimerStatus.FIRED) and after.status == TimerStatus.CANCELLED:
                done += 1
            else:
                skipped.append(f"{timer.name} ({timer.pk}): already {after.status}")
        self._report(request, "cancelled", done, skipped)

    def _reschedule(
        self, request: HttpRequest, queryset: QuerySet[Timer], when: dict[str, Any], done: str, *, refuse_past: bool
    ) -> None:
        moved, skipped = 0, []
        for timer in queryset:
            try:
                timer_reschedule(timer=timer, by=operator(request), refuse_past=refuse_past, **when)
            except ServiceError as exc:
                skipped.append(f"{timer.name} ({timer.pk}): {exc.message}")
                continue
            moved += 1
        self._report(request, done, moved, skipped)

    @admin.action(description="Fire the selected timers now", permissions=["operate"])
    def fire_now(self, request: HttpRequest, queryset: QuerySet[Timer]) -> None:
        # A fireAt already past from an internal caller means now (timer_reschedule).
        self._reschedule(request, queryset, {"fire_at": timezone.now()}, "fired now", refuse_past=False)

    @admin.action(description="Reschedule the selected timers…", permissions=["operate"])
    def reschedule_selected(self, request: HttpRequest, queryset: QuerySet[Timer]) -> HttpResponse | None:
        form = RescheduleForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            # An operator's past fireAt is a typo, not "now": Fire now is the action for that.
            self._reschedule(request, queryset, form.cleaned_data["when"], "rescheduled", refuse_past=True)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Reschedule timers",
            "opts": self.opts,
            "form": form,
            "timers": queryset.order_by("fire_at")[:100],
            "count": queryset.count(),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action": "reschedule_selected",
        }
        return TemplateResponse(request, "admin/minoots/reschedule.html", context)

    @admin.action(description="Retry the failed action runs of the selected timers", permissions=["operate"])
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet[Timer]) -> None:
        runs = ActionRun.objects.filter(timer__in=queryset.order_by().values("pk"), status=RunStatus.FAILED)
        retry_runs(self, request, runs)


@admin.register(TimerEvent)
class TimerEventAdmin(_TimerEventAdminBase):
    list_display = ["occurred", "timer", "kind", "state_version"]
    list_filter = ["kind"]
    search_fields = ["=timer__id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    fields = readonly_fields = ("timer", "kind", "occurred", "state_version", "data")

    @admin.display(description="occurred at (UTC)", ordering="occurred_at")
    def occurred(self, event: TimerEvent) -> str:
        return utc_ms(event.occurred_at)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the history is append-only
