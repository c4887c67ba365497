"""Size limits on what a timer stores, for every caller of ``timer_create``.

The API's serializer checks types and shapes; these are the rules on size, applied in the
domain so that a management command, a batch create or an internal caller cannot store what the
API would refuse. Each is measured as compact UTF-8 JSON, as stored.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

MAX_METADATA_BYTES = 64 * 1024
MAX_AGENT_BINDING_BYTES = 64 * 1024


# What json.dumps(value, ensure_ascii=False, separators=(",", ":")) builds on every call: made
# once, since building it cost more than encoding the small values most timers carry.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_bytes(value: Any) -> int:
    """The size of ``value`` as compact UTF-8 JSON: ensure_ascii would count "é" as 6 bytes
    ("\\u00e9")."""
    if type(value) is dict and not value:
        return 2  # {}: what most timers' metadata is
    return len(_COMPACT.encode(value).encode())


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


def oversized_fields(*, metadata: Any, action_bundle: Any, agent_binding: Any) -> list[tuple[str, str]]:
    """``(field, reason)`` for each value over its limit, fields named as the API spells them."""
    found = []
    if metadata is not None and json_bytes(metadata) > MAX_METADATA_BYTES:
        found.append(("metadata", f"must be at most {_size(MAX_METADATA_BYTES)} as JSON"))
    bundle_limit = settings.MINOOTS_MAX_ACTION_BUNDLE_BYTES
    if action_bundle is not None and json_bytes(action_bundle) > bundle_limit:
        found.append(
            ("actionBundle", f"must be at most {_size(bundle_limit)} as JSON (MINOOTS_MAX_ACTION_BUNDLE_BYTES)")
        )
    if agent_binding is not None and json_bytes(agent_binding) > MAX_AGENT_BINDING_BYTES:
        found.append(("agentBinding", f"must be at most {_size(MAX_AGENT_BINDING_BYTES)} as JSON"))
    return found
