"""What the browsable API (DRF's HTML pages for a staff session) shows above each response: a
human title (``name``) and a short description with links to the related endpoints.

The OpenAPI schema does not read these: its summaries and descriptions are each method's
``extend_schema``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from rest_framework import renderers


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF's browsable API, titled and branded MINOOTS (minoots/api.html), linking the front
    page, the docs and the admin."""

    template = "minoots/api.html"


class Described:
    """Mixin of the API views: ``name`` is the page title, ``description`` its text (plain),
    ``links()`` the (label, URL) pairs shown under it in the browsable API."""

    name: str
    description: str
    kwargs: dict[str, Any]
    request: Any

    def links(self) -> list[tuple[str, str]]:
        return [("All timers", self.url("timer-list")), ("API docs", reverse("docs"))]

    def url(self, name: str, query: dict[str, str] | None = None, **kwargs: Any) -> str:
        """An API URL with ``query``, keeping the staff session's ``?tenant=`` choice."""
        path = reverse(name, kwargs=kwargs or None)
        params = dict(query or {})
        tenant = self.request.query_params.get("tenant") if self.request is not None else None
        if tenant:
            params["tenant"] = tenant
        return f"{path}?{urlencode(params)}" if params else path

    def timer_url(self, name: str) -> str:
        return self.url(name, timer_id=self.kwargs["timer_id"])

    def get_view_description(self, html: bool = False) -> str:
        if not html:
            return self.description
        links = format_html_join(" · ", '<a href="{}">{}</a>', ((url, label) for label, url in self.links()))
        description: SafeString = format_html("<p>{}</p><p>{}</p>", self.description, links)
        return description
