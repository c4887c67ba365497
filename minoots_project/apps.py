"""The admin app with MINOOTS' own site (the operator dashboard as its front page)."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class MinootsAdminConfig(AdminConfig):
    default_site = "minoots_project.admin_site.MinootsAdminSite"
