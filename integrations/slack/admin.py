"""Slack workspaces in the admin: the bot token can be set or replaced, never read back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin

from integrations.slack.models import SlackWorkspace

if TYPE_CHECKING:  # generic in django-stubs only
    _FormBase = forms.ModelForm[SlackWorkspace]
    _AdminBase = admin.ModelAdmin[SlackWorkspace]
else:
    _FormBase = forms.ModelForm
    _AdminBase = admin.ModelAdmin


class SlackWorkspaceForm(_FormBase):
    bot_token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="The Bot User OAuth Token (xoxb-...). Never shown again; leave empty to keep the current one.",
    )

    class Meta:
        model = SlackWorkspace
        fields = ["team_id", "name", "tenant", "bot_token"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["bot_token"] = ""  # never sent to the browser
        if not self.instance._state.adding:  # a CharField primary key is "" before the first save
            self.fields["team_id"].disabled = True

    def clean_bot_token(self) -> str:
        token: str = self.cleaned_data.get("bot_token") or ""
        if not token:
            if self.instance._state.adding or not self.instance.bot_token:
                raise forms.ValidationError("A bot token is required to connect a workspace.")
            return str(self.instance.bot_token)  # kept as it is
        if not token.startswith("xox"):
            raise forms.ValidationError("A Slack bot token starts with xoxb-.")
        return token


@admin.register(SlackWorkspace)
class SlackWorkspaceAdmin(_AdminBase):
    form = SlackWorkspaceForm
    list_display = ["team_id", "name", "tenant", "token_set", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["team_id", "name", "tenant__id"]
    readonly_fields = ["created_at"]

    @admin.display(boolean=True, description="bot token set")
    def token_set(self, obj: SlackWorkspace) -> bool:
        return bool(obj.bot_token)
