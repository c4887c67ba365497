"""The project's own pages: the front page, the API docs (served offline), and the redirects
that spare a visitor a 404 for a slash.

The front page and the redirects need no credentials and show nothing that is not public: the
name of the service and where its docs, admin and health checks are.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve, reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from timers.api.errors import not_found_view

SUMMARY = (
    "MINOOTS is a durable timer service: create a timer over the REST API and it fires its actions "
    "(webhooks, commands, file writes) on time and exactly once, even when processes crash."
)

# (key in the JSON, path, label, what it is), in the order the page lists them.
LINKS = (
    ("docs", "/api/docs/", "API docs (Swagger UI)", "every operation, with examples; try requests in the browser"),
    ("redoc", "/api/redoc/", "API reference (Redoc)", "the same OpenAPI schema as a readable reference"),
    ("schema", "/api/schema/", "OpenAPI schema", "YAML, or JSON with Accept: application/json"),
    ("api", "/api/timers", "Timers API", "browsable in a browser after logging in as staff"),
    ("admin", "/admin/", "Admin", "the operator dashboard, timers, action runs, tenants and API keys"),
    ("health", "/healthz", "Liveness", "200 while the process serves requests"),
    ("ready", "/readyz", "Readiness", "200 when the database and the broker answer"),
)


def home(request: HttpRequest) -> HttpResponse:
    """``/``: what this is and where to go. JSON for ``Accept: application/json``, else HTML."""
    if request.method not in ("GET", "HEAD"):
        return not_found_view(request)
    if request.get_preferred_type(["text/html", "application/json"]) == "application/json":
        return JsonResponse(
            {
                "service": "MINOOTS",
                "description": SUMMARY,
                "apiVersion": settings.SPECTACULAR_SETTINGS["VERSION"],
                "links": {key: path for key, path, _, _ in LINKS},
                "auth": "X-API-Key: <key> or Authorization: Bearer <JWT>; the docs and the schema need one "
                "too, or a staff login at /admin/",
            }
        )
    return render(request, "minoots/home.html", {"summary": SUMMARY, "links": LINKS})


# A clock face: what browsers ask every site for (/favicon.ico), instead of a 404 on every first page.
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<circle cx="16" cy="16" r="14" fill="#0b5cad"/><circle cx="16" cy="16" r="11" fill="#fff"/>'
    '<path d="M16 8v8l5 3" stroke="#0b5cad" stroke-width="3" fill="none" stroke-linecap="round"/></svg>'
)


@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    return HttpResponse(FAVICON, content_type="image/svg+xml")


@csrf_exempt  # it changes nothing; a POST must reach its 308 and then the API's own checks
def api_without_slash(request: HttpRequest, path: str) -> HttpResponse:
    """``/api/timers/…/`` → the same URL without its trailing slash (APPEND_SLASH is off: the API's
    URLs have none). A 308, so a POST is repeated as a POST with its body; a 404 when the URL
    without the slash does not exist either."""
    target = f"/api/{path}"
    try:
        resolve(target)
    except Resolver404:
        return not_found_view(request)
    query = request.META.get("QUERY_STRING", "")
    return HttpResponsePermanentRedirect(f"{target}?{query}" if query else target, preserve_request=True)


class _LoginFirst:
    """A browser with no credential at all is sent to the admin's login and back, instead of a
    JSON 401 (a client with an API key or a token still gets the API's answers)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        credentials = "X-API-Key" in request.headers or "Authorization" in request.headers
        if not credentials and not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), login_url=reverse("admin:login"))
        response: HttpResponse = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        return response


class DocsView(_LoginFirst, SpectacularSwaggerView):
    """Swagger UI, its files from drf-spectacular-sidecar (SWAGGER_UI_DIST = "SIDECAR")."""

    title = "MINOOTS API docs"


class RedocView(_LoginFirst, SpectacularRedocView):
    """Redoc, from drf-spectacular-sidecar, without the web fonts drf-spectacular's page loads
    from Google (minoots/redoc.html)."""

    title = "MINOOTS API reference"
    template_name = "minoots/redoc.html"
