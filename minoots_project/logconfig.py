"""Logging for every process (web, gunicorn, worker, beat): text or JSON lines, secrets redacted.

``build_logging(level=..., fmt=...)`` returns the ``dictConfig`` used both by Django
(``settings.LOGGING``) and by gunicorn's own loggers (``minoots_project.gunicorn_conf``), so a
JSON deployment emits one JSON object per line whichever library logged it.

This module must not import Django: gunicorn's master process loads it before any app.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

# Imported for its side effect too: it connects the Celery signals that carry trace ids.
from minoots_project.tracing import current_trace_id

REDACTED = "[REDACTED]"

# API keys are ``mk_<hex prefix>_<secret>``: keep the prefix (it is not secret and is what an
# operator looks up), drop the secret.
_API_KEY = re.compile(r"\bmk_([0-9a-f]{4,32})_[A-Za-z0-9_\-]{4,}")
_API_KEY_LOOSE = re.compile(r"\bmk_(?![0-9a-f]{4,32}_\[REDACTED\])[A-Za-z0-9_\-]{8,}")
_WEBHOOK_SECRET = re.compile(r"\bwhsec_[A-Za-z0-9+/=_\-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# ``Authorization: Bearer x``, ``'X-API-Key': 'x'``, ``HTTP_AUTHORIZATION=x``, also inside JSON
# strings where quotes appear escaped (``\"``).
_HEADER = re.compile(
    r"(?i)\b((?:http_)?(?:authorization|proxy[-_]authorization|x[-_]api[-_]key|cookie))"
    r"((?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?)"
    r"((?:bearer|basic|token)\s+)?"
    r"([^\s\"',;}\\]+)"
)

# LogRecord attributes that are not user extras (never rewritten by the filter).
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """Replace API keys, webhook signing secrets, JWTs and credential header values."""
    if not text:
        return text
    if "mk_" in text:
        text = _API_KEY.sub(lambda m: f"mk_{m.group(1)}_{REDACTED}", text)
        text = _API_KEY_LOOSE.sub(f"mk_{REDACTED}", text)
    if "whsec_" in text:
        text = _WEBHOOK_SECRET.sub(f"whsec_{REDACTED}", text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    return _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{REDACTED}", text)


class RedactSecretsFilter(logging.Filter):
    """Redact secrets in the message, its arguments and string extras before any handler sees them.

    The formatters below redact their final output again, which also covers tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the formatter to report
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class ContextFilter(logging.Filter):
    """Give every record the structured fields (``None`` when unknown) and the current trace id."""

    FIELDS = ("timer_id", "tenant", "event")

    def filter(self, record: logging.LogRecord) -> bool:
        for name in self.FIELDS:
            if not hasattr(record, name):
                setattr(record, name, None)
        if getattr(record, "trace_id", None) is None:
            record.trace_id = current_trace_id()
        return True


# Celery's own INFO lines about each reconciler pass (beat sends it, a worker receives and
# finishes it), every MINOOTS_RECONCILE_INTERVAL: the pass logs what it changed itself
# (timers.engine.reconcile), so these are DEBUG.
_RECONCILE_TASK = "timers.reconcile"
_CELERY_TASK_LOGGERS = frozenset({"celery.beat", "celery.worker.strategy", "celery.app.trace"})


class QuietReconcileFilter(logging.Filter):
    """Demote Celery's per-pass lines of the reconciler task to DEBUG (shown only when the root
    logger is at DEBUG), so `make run` at INFO is quiet while nothing happens."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in _CELERY_TASK_LOGGERS:
            return True
        try:
            if _RECONCILE_TASK not in record.getMessage():
                return True
        except Exception:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


class TextFormatter(logging.Formatter):
    """Readable lines; the trace id is appended when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            head, sep, tail = line.partition("\n")
            line = f"{head} [trace={trace_id}]{sep}{tail}"
        return redact(line)


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time, level, logger, message, timer_id, tenant, event, trace_id, extras."""

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}{timer_id}{tenant}{event}{trace_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def build_logging(*, level: str = "INFO", fmt: str = "text", gunicorn: bool = False) -> dict[str, Any]:
    """The ``dictConfig`` for every MINOOTS process (``fmt`` is ``text`` or ``json``)."""
    formatter = "json" if fmt == "json" else "text"
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "minoots_project.logconfig.ContextFilter"},
            "redact": {"()": "minoots_project.logconfig.RedactSecretsFilter"},
            "quiet_reconcile": {"()": "minoots_project.logconfig.QuietReconcileFilter"},
        },
        "formatters": {
            "text": {"()": "minoots_project.logconfig.TextFormatter"},
            "json": {"()": "minoots_project.logconfig.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["quiet_reconcile", "context", "redact"],
            },
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # django-environ says at INFO level on every start that there is no .env file.
            "environ.environ": {"level": "WARNING"},
        },
    }
    if gunicorn:
        # gunicorn configures its loggers with this dict in the master, before Django exists;
        # they must not propagate, or Django's root handler would print each line twice.
        config["loggers"] |= {
            "gunicorn.error": {"handlers": ["console"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        }
    return config
