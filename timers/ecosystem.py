"""The original control plane's ``ecosystem`` block: strict sub-schemas, merged into
``metadata.ecosystem``, projected into labels, returned as ``ecosystem``.

The rules are the original's (its ``types/ecosystem.ts``, zod): every section is a strict object
(unknown keys refused) with at least one field; identifiers are trimmed non-empty strings; the
block names at least one section or marker. One table below says all of it; the parser, the
label projection and the OpenAPI schema are read from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Label values are at most this long (the create's rule on labels), so a string of a section is
# too: its projection must be a valid label.
MAX_TEXT = 500

# zod's z.string().datetime(): UTC with 'Z', optional fraction; no offsets.
_ISO_UTC = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$", re.ASCII)
# What new URL() accepts, near enough: a scheme, a colon, something after it.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


class EcosystemError(ValueError):
    """A refusal naming the path inside ``ecosystem`` (``parserator.datasetId``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Field:
    kind: str  # "id" (trimmed non-empty string), "url", "unit" (number 0..1), "bool", "enum"
    choices: tuple[str, ...] = ()
    label: str | None = None  # the label key suffix it is projected to, if any


def _enum(*choices: str, label: str | None = None) -> Field:
    return Field("enum", choices, label)


SECTIONS: dict[str, dict[str, Field]] = {
    "parserator": {
        "workspaceId": Field("id", label="workspace"),
        "datasetId": Field("id", label="dataset"),
        "recipeSlug": Field("id", label="recipe"),
        "callbackUrl": Field("url"),
        "confidenceThreshold": Field("unit"),
        "autopilotMode": _enum("manual_review", "assisted", "autonomous", label="autopilot"),
    },
    "reposiologist": {
        "repositoryUrl": Field("url", label="repository"),
        "branch": Field("id", label="branch"),
        "sweepCadence": _enum("daily", "weekly", "biweekly", "monthly", label="cadence"),
        "auditFocus": _enum("safety", "quality", "compliance", "ecosystem", label="focus"),
        "clausePack": Field("id"),
    },
    "nimbusGuardian": {
        "policyId": Field("id", label="policy"),
        "gateLevel": _enum("advisory", "enforced", label="gate"),
        "environment": _enum("development", "staging", "production", label="environment"),
        "runbookUrl": Field("url"),
        "enableSecretScan": Field("bool"),
    },
    "clearSeas": {
        "engagementId": Field("id", label="engagement"),
        "partnerPod": Field("id", label="pod"),
        "serviceTier": _enum("discovery", "pilot", "retainer", label="tier"),
        "liaison": Field("id"),
        "cadence": _enum("weekly", "biweekly", "monthly"),
    },
}
MARKERS = ("sharedNarrative", "nextSyncIso")
KEYS = (*SECTIONS, *MARKERS)
_SECTION_TITLES = {
    "parserator": "Parserator",
    "reposiologist": "Reposiologist",
    "nimbusGuardian": "Nimbus Guardian",
    "clearSeas": "Clear Seas Solutions",
}


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise EcosystemError(path, "must be a string")
    text = value.strip()
    if not text:
        raise EcosystemError(path, "must not be blank")
    if len(text) > MAX_TEXT:
        raise EcosystemError(path, f"must be at most {MAX_TEXT} characters")
    return text


def _value(spec: Field, value: Any, path: str) -> Any:
    if spec.kind == "id":
        return _text(value, path)
    if spec.kind == "url":
        text = _text(value, path)
        if not _URL.match(text):
            raise EcosystemError(path, "must be a URL")
        return text
    if spec.kind == "unit":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise EcosystemError(path, "must be a number from 0 to 1")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise EcosystemError(path, "must be true or false")
        return value
    if value not in spec.choices:
        raise EcosystemError(path, f"must be one of {', '.join(spec.choices)}")
    return value


def _section(name: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise EcosystemError(name, "must be an object")
    fields = SECTIONS[name]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise EcosystemError(f"{name}.{unknown[0]}", f"unknown field; allowed: {', '.join(fields)}")
    if not raw:
        raise EcosystemError(name, f"Provide at least one {_SECTION_TITLES[name]} field")
    return {key: _value(fields[key], value, f"{name}.{key}") for key, value in raw.items()}


def parse_ecosystem(raw: Any) -> dict[str, Any]:
    """The block, checked and normalised (strings trimmed); EcosystemError otherwise."""
    if not isinstance(raw, dict):
        raise EcosystemError("", "must be a JSON object")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise EcosystemError(unknown[0], f"unknown field; allowed: {', '.join(KEYS)}")
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS:
            parsed[key] = _section(key, value)
        elif key == "sharedNarrative":
            if not isinstance(value, str) or not value.strip():
                raise EcosystemError(key, "must be a non-blank string")
            parsed[key] = value.strip()
        else:
            if not isinstance(value, str) or not _ISO_UTC.match(value):
                raise EcosystemError(key, "must be an ISO 8601 UTC timestamp (e.g. 2030-01-01T14:00:00Z)")
            parsed[key] = value
    if not parsed:
        raise EcosystemError("", "Provide at least one ecosystem integration or narrative marker")
    return parsed


def read_ecosystem(metadata: Any) -> dict[str, Any] | None:
    """The valid block stored in ``metadata.ecosystem``, or None (absent, or not valid)."""
    if not isinstance(metadata, dict) or "ecosystem" not in metadata:
        return None
    try:
        return parse_ecosystem(metadata["ecosystem"])
    except EcosystemError:
        return None


def merge_ecosystem(base: dict[str, Any] | None, incoming: dict[str, Any] | None) -> dict[str, Any] | None:
    """The original's mergeEcosystem: sections merged key by key, the incoming block winning."""
    if base is None or incoming is None:
        return incoming if base is None else base
    merged: dict[str, Any] = {**base, **incoming}
    for name in SECTIONS:
        if name in base and name in incoming:
            merged[name] = {**base[name], **incoming[name]}
    return merged


def ecosystem_labels(ecosystem: dict[str, Any]) -> dict[str, str]:
    """The labels the original projects: ``ecosystem.sources`` (how many sections),
    ``ecosystem.<section>/<suffix>`` for the projected fields, ``ecosystem.nextSyncIso``."""
    labels = {"ecosystem.sources": str(sum(1 for name in SECTIONS if name in ecosystem))}
    for name, fields in SECTIONS.items():
        for key, spec in fields.items():
            value = ecosystem.get(name, {}).get(key)
            if spec.label and value:
                labels[f"ecosystem.{name}/{spec.label}"] = str(value)
    if ecosystem.get("nextSyncIso"):
        labels["ecosystem.nextSyncIso"] = ecosystem["nextSyncIso"]
    return labels


def apply_ecosystem(
    *, metadata: dict[str, Any], labels: dict[str, str], incoming: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Metadata with the merged block in ``ecosystem`` and labels with its projection (a label
    the client set itself wins). A ``metadata.ecosystem`` that is not a valid block is left as it
    is and neither merged nor projected."""
    merged = merge_ecosystem(read_ecosystem(metadata), incoming)
    if merged is None:
        return metadata, labels
    return {**metadata, "ecosystem": merged}, {**ecosystem_labels(merged), **labels}


def _field_schema(spec: Field) -> dict[str, Any]:
    if spec.kind in ("id", "url"):
        # Looser than the server (blank after trimming, the URL shape): a schema never refuses
        # what the server accepts.
        return {"type": "string", "minLength": 1}
    if spec.kind == "unit":
        return {"type": "number", "minimum": 0, "maximum": 1}
    if spec.kind == "bool":
        return {"type": "boolean"}
    return {"type": "string", "enum": list(spec.choices)}


def ecosystem_schema() -> dict[str, Any]:
    """The block as an OpenAPI schema (the create's ``ecosystem`` field)."""
    sections = {
        name: {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {key: _field_schema(spec) for key, spec in fields.items()},
        }
        for name, fields in SECTIONS.items()
    }
    return {
        "type": "object",
        "nullable": True,
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            **sections,
            "sharedNarrative": {"type": "string", "minLength": 1},
            "nextSyncIso": {"type": "string", "pattern": _ISO_UTC.pattern},
        },
        "description": "the original control plane's ecosystem block: merged into metadata.ecosystem, "
        "projected into labels (ecosystem.sources, ecosystem.parserator/dataset, ...)",
    }
