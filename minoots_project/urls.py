from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from integrations.slack import views as slack_views
from minoots_project import health, pages

urlpatterns = [
    path("", pages.home, name="home"),
    path("favicon.ico", pages.favicon),
    path("admin", RedirectView.as_view(url="/admin/", permanent=True)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", pages.DocsView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", pages.RedocView.as_view(url_name="schema"), name="redoc"),
    path("api/", include("timers.api.urls")),
    # APPEND_SLASH is off (the API's URLs end without one): /api/timers/ and the like get a 308.
    re_path(r"^api/(?P<path>timers(?:/[^/]+)*)/$", pages.api_without_slash),
    path("api-auth/", include("rest_framework.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("integrations/slack/", include("integrations.slack.urls")),
    # The original Slack bot's request URL, so an existing Slack app keeps working.
    path("slack/events", slack_views.commands),
]

handler400 = "timers.api.errors.bad_request_view"
handler403 = "timers.api.errors.forbidden_view"
handler404 = "timers.api.errors.not_found_view"
handler500 = "timers.api.errors.server_error_view"
