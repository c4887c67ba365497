"""MINOOTS settings: one module, every knob an environment variable (see .env.example).

With no DATABASE_URL and no CELERY_BROKER_URL the service runs in its *embedded default*:
SQLite and kombu's filesystem transport under MINOOTS_DATA_DIR, so `make run` needs nothing.
"""

from __future__ import annotations

import secrets
import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from timers.durations import parse_duration_setting

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DATA_DIR = Path(env.str("MINOOTS_DATA_DIR", default=str(BASE_DIR / ".data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG: bool = env.bool("DEBUG", default=False)
# An empty value counts as unset, so `DATABASE_URL= make run` means the embedded default.
DATABASE_URL: str = env.str("DATABASE_URL", default="")
EMBEDDED_DATABASE = not DATABASE_URL
EMBEDDED_BROKER = not env.str("CELERY_BROKER_URL", default="")


def _embedded_secret_key() -> str:
    """Generate one key on first start and keep it, so sessions survive restarts."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY: str = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not (EMBEDDED_DATABASE or DEBUG):
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set (production).")
    SECRET_KEY = _embedded_secret_key()

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # django.contrib.admin with MINOOTS' site: the operator dashboard is its front page.
    "minoots_project.apps.MinootsAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    # Swagger UI and Redoc served from our own static files, pinned with the package (no CDN).
    "drf_spectacular_sidecar",
    "axes",
    "timers",
    "actions",
    "integrations.slack",
]

MIDDLEWARE = [
    # First: a slow body is read before anything takes a database connection.
    "minoots_project.middleware.RequestBodyFirstMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "minoots_project.middleware.ApiErrorMiddleware",
    # Last, as django-axes asks: turns a lockout found during authenticate() into its response.
    "axes.middleware.AxesMiddleware",
]

# --- Admin login throttling (django-axes) ------------------------------------------------------
# Only Django's authenticate() is watched: the admin's and the browsable API's login forms.
# API keys and JWTs (timers/api/authentication.py) never call it, so the API is not throttled here.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out username + address
    "django.contrib.auth.backends.ModelBackend",
]
MINOOTS_ADMIN_LOGIN_FAILURES: int = env.int("MINOOTS_ADMIN_LOGIN_FAILURES", default=5)
if MINOOTS_ADMIN_LOGIN_FAILURES < 1:
    raise ImproperlyConfigured(f"MINOOTS_ADMIN_LOGIN_FAILURES must be at least 1, got {MINOOTS_ADMIN_LOGIN_FAILURES}")
AXES_FAILURE_LIMIT = MINOOTS_ADMIN_LOGIN_FAILURES
AXES_COOLOFF_TIME: timedelta = parse_duration_setting(
    "MINOOTS_ADMIN_LOCKOUT", env.str("MINOOTS_ADMIN_LOCKOUT", default="15m")
)
# Keyed by the pair: an attacker cannot lock the real operator out from another address.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"  # shared by every web process
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # no "AXES: BEGIN" line in every worker and command; failures still log

ROOT_URLCONF = "minoots_project.urls"
WSGI_APPLICATION = "minoots_project.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- Database -------------------------------------------------------------------------------


def _gevent_patched() -> bool:
    """True in a process whose sockets gevent has patched: gunicorn's gevent web workers."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


DATABASES = {"default": env.db_url_config(DATABASE_URL or f"sqlite:///{DATA_DIR / 'minoots.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + busy timeout + IMMEDIATE transactions let web, worker and beat write side by side.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    if _gevent_patched():
        # A gevent web worker: wait for SQLite's write lock without freezing the process, which
        # would freeze the greenlet holding the lock too; see greensqlite/base.py.
        DATABASES["default"]["ENGINE"] = "minoots_project.greensqlite"
elif _gevent_patched():
    # A gevent web worker (gunicorn_conf): a bounded pool per process shared by the greenlets,
    # lent per request (CONN_MAX_AGE 0 gives the connection back); see greendb/base.py.
    DATABASES["default"]["ENGINE"] = "minoots_project.greendb"
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        MAX_CONNS=env.int("MINOOTS_WEB_DB_CONNECTIONS", default=10),
        POOL_TIMEOUT=env.float("MINOOTS_WEB_DB_WAIT", default=5.0),
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
USE_I18N = False

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "timers.api.authentication.ApiKeyAuthentication",
        "timers.api.authentication.JwtAuthentication",
        "timers.api.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["timers.api.permissions.HasTenant"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "timers.api.browsable.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["timers.api.parsers.SafeJSONParser"],
    "EXCEPTION_HANDLER": "timers.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MINOOTS API",
    "DESCRIPTION": (
        "Durable timers that fire actions (webhooks, commands, file writes, Slack messages, agent prompts) "
        "on time and exactly once, "
        "even when processes crash. Create a timer with a `duration` or a `fireAt`, list and inspect your "
        "tenant's timers with their action runs and event log, reschedule or cancel a pending one, and "
        "follow every change as server-sent events.\n\n"
        "Authenticate with `X-API-Key: <key>` (`manage.py create_api_key <tenant>`), "
        "`Authorization: Bearer <JWT>`, or a staff session of the admin. Every error has one JSON shape, "
        '`{"message": ..., "details": ...}` (the `Error` schema).'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ and /api/redoc/ load their JavaScript and CSS from drf-spectacular-sidecar's
    # static files (collectstatic, served by WhiteNoise): they render with no network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge (it would ask validator.swagger.io about every schema).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "displayOperationId": False},
    # Like every other API endpoint: an API key, a bearer token or a staff session.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "ENUM_NAME_OVERRIDES": {
        "TimerStatusEnum": "timers.models.TimerStatus",
        "ActionRunStatusEnum": "actions.models.RunStatus",
    },
    # The default hook (enums) and ours: additionalProperties false on strict bodies, Retry-After.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "timers.api.schema.postprocess",
    ],
}

JWT_PUBLIC_KEY: str = env.str("JWT_PUBLIC_KEY", default="").replace("\\n", "\n")
JWT_AUDIENCE: str | None = env.str("JWT_AUDIENCE", default="") or None
JWT_ISSUER: str | None = env.str("JWT_ISSUER", default="") or None

# --- MINOOTS knobs --------------------------------------------------------------------------
MINOOTS_ARM_HORIZON: timedelta = parse_duration_setting(
    "MINOOTS_ARM_HORIZON", env.str("MINOOTS_ARM_HORIZON", default="60s")
)
MINOOTS_TICK: timedelta = parse_duration_setting("MINOOTS_TICK", env.str("MINOOTS_TICK", default="10ms"))
MINOOTS_RECONCILE_INTERVAL: timedelta = parse_duration_setting(
    "MINOOTS_RECONCILE_INTERVAL", env.str("MINOOTS_RECONCILE_INTERVAL", default="5s")
)
MINOOTS_REPAIR_GRACE: timedelta = parse_duration_setting(
    "MINOOTS_REPAIR_GRACE", env.str("MINOOTS_REPAIR_GRACE", default="2s")
)
MINOOTS_MAX_HORIZON: timedelta = parse_duration_setting(
    "MINOOTS_MAX_HORIZON", env.str("MINOOTS_MAX_HORIZON", default="365d")
)
MINOOTS_MAX_BACKOFF: timedelta = parse_duration_setting(
    "MINOOTS_MAX_BACKOFF", env.str("MINOOTS_MAX_BACKOFF", default="1h")
)
# Retry storms: a retry never comes sooner than this, whatever backoffInitialMs says, and one
# timer's actions (escalations included) retry only until they have made this many attempts.
MINOOTS_MIN_BACKOFF: timedelta = parse_duration_setting(
    "MINOOTS_MIN_BACKOFF", env.str("MINOOTS_MIN_BACKOFF", default="1s")
)
MINOOTS_MAX_ATTEMPTS_PER_TIMER: int = env.int("MINOOTS_MAX_ATTEMPTS_PER_TIMER", default=100)
# Worker slots (attempts in flight; a batch is one) one tenant may hold over all action workers
# while another tenant has runs waiting (0: no cap); a tenant alone uses every slot. The default
# leaves half of `make run`'s 16 action threads to the other tenants (see actions/transitions.py).
MINOOTS_TENANT_ACTION_CONCURRENCY: int = env.int("MINOOTS_TENANT_ACTION_CONCURRENCY", default=8)
MINOOTS_ACTION_LEASE: timedelta = parse_duration_setting(
    "MINOOTS_ACTION_LEASE", env.str("MINOOTS_ACTION_LEASE", default="5m")
)
MINOOTS_CLAIM_BATCH: int = env.int("MINOOTS_CLAIM_BATCH", default=1000)
MINOOTS_RECONCILE_BATCH: int = env.int("MINOOTS_RECONCILE_BATCH", default=5000)
MINOOTS_DEFAULT_MAX_ACTIVE_TIMERS: int = env.int("MINOOTS_DEFAULT_MAX_ACTIVE_TIMERS", default=1_000_000)
MINOOTS_DEFAULT_MAX_CREATES_PER_DAY: int = env.int("MINOOTS_DEFAULT_MAX_CREATES_PER_DAY", default=5_000_000)
MINOOTS_IDEMPOTENCY_TTL = timedelta(hours=24)
# Most timers one POST /api/timers/batch may create.
MINOOTS_BATCH_MAX: int = env.int("MINOOTS_BATCH_MAX", default=1000)
# Largest actionBundle a timer may store, as compact UTF-8 JSON (metadata has 64 KiB too).
MINOOTS_MAX_ACTION_BUNDLE_BYTES: int = env.int("MINOOTS_MAX_ACTION_BUNDLE_BYTES", default=64 * 1024)
MINOOTS_COMMAND_ALLOWLIST: list[str] = [p for p in env.list("MINOOTS_COMMAND_ALLOWLIST", default=[]) if p]
MINOOTS_FILE_ROOT: str = env.str("MINOOTS_FILE_ROOT", default="")
MINOOTS_WEBHOOK_ALLOW_PRIVATE: bool = env.bool("MINOOTS_WEBHOOK_ALLOW_PRIVATE", default=False)
# Runs published together when timers fire (one message per chunk; see actions/batch.py).
MINOOTS_ACTION_BATCH: int = env.int("MINOOTS_ACTION_BATCH", default=100)
# A batch's webhooks in flight together on the worker's event loop (actions/batch.py); off,
# a batch sends them one after another, like its other kinds.
MINOOTS_WEBHOOKS_TOGETHER: bool = env.bool("MINOOTS_WEBHOOKS_TOGETHER", default=True)
MINOOTS_STREAM_MAX_SECONDS: float = env.float("MINOOTS_STREAM_MAX_SECONDS", default=300.0)
# Open event streams per web process (each a greenlet polling the database); more get a 503.
MINOOTS_STREAMS_PER_PROCESS: int = env.int("MINOOTS_STREAMS_PER_PROCESS", default=200)
# Open event streams of one tenant over every web process (timers.streams); more get a 429.
MINOOTS_STREAMS_PER_TENANT: int = env.int("MINOOTS_STREAMS_PER_TENANT", default=10)
# Seconds a client has to send a request's whole body (gevent web workers); then a 408.
MINOOTS_REQUEST_BODY_SECONDS: float = env.float("MINOOTS_REQUEST_BODY_SECONDS", default=10.0)
ACTION_WEBHOOK_TIMEOUT_MS: int = env.int("ACTION_WEBHOOK_TIMEOUT_MS", default=10_000)

# --- Slack (integrations/slack) ----------------------------------------------------------------
# The app's signing secret: /integrations/slack/* answer 503 without it (the integration is off).
SLACK_SIGNING_SECRET: str = env.str("SLACK_SIGNING_SECRET", default="")
# A single-workspace install: a workspace with no row of its own (admin: Slack workspaces) is
# this tenant's, posting with this bot token. Both empty: only the admin's workspaces connect.
SLACK_DEFAULT_TENANT: str = env.str("SLACK_DEFAULT_TENANT", default="")
SLACK_BOT_TOKEN: str = env.str("SLACK_BOT_TOKEN", default="")
# Slack's Web API; tests point it at a local fake (whose host may then receive response_url posts).
SLACK_API_URL: str = env.str("SLACK_API_URL", default="https://slack.com/api/")

# --- Celery ---------------------------------------------------------------------------------
if EMBEDDED_BROKER:
    _broker_dir = DATA_DIR / "broker"
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    # A hostname, or kombu warns "No hostname was supplied" on every connection.
    CELERY_BROKER_URL: str = "filesystem://localhost//"
    # kombu's filesystem transport with atomic writes (kombu's own can hand a worker a message
    # file before its payload is written, which kills the worker); see fsbroker.py.
    CELERY_BROKER_TRANSPORT = "minoots_project.fsbroker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "store_processed": False,
        # kombu polls the folder; 1 s by default would delay every immediate task.
        "polling_interval": 0.05,
        # Exchange bindings; kombu's default is "control" relative to the *current directory*,
        # so processes started from different directories would not route to each other.
        "control_folder": str(_broker_dir / "control"),
    }
else:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # kombu's Redis transport, except that a worker holding ETA ticks survives Redis going
        # away (kombu's channel close dies with AttributeError); see redis_transport.py.
        CELERY_BROKER_TRANSPORT = "minoots_project.redis_transport:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis re-delivers unacked messages after this; it must stay far above the arm
        # horizon plus the longest action, or ETA ticks get delivered twice (kombu #337).
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=6 * 3600),
        # A Redis host that vanished (no RST) must not hold a reconnect for minutes.
        "socket_connect_timeout": 5,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER: int = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_TASK_DEFAULT_QUEUE = "timers"
CELERY_TASK_ROUTES = {
    "timers.*": {"queue": "timers"},
    "actions.*": {"queue": "actions"},
    # Slack follow-ups (chat.update after a button): I/O like actions, never on the firing queue.
    "integrations.*": {"queue": "actions"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis may be away for any length of time: workers and beat wait for it forever (Celery's
# default gives up after 100 attempts and exits), retrying every 2 s at most (celery.py).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "timers.reconcile",
        "schedule": MINOOTS_RECONCILE_INTERVAL.total_seconds(),
        "options": {"expires": MINOOTS_RECONCILE_INTERVAL.total_seconds() * 2},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- Cache: tick de-duplication markers ------------------------------------------------------
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "minoots_project.rediscache.SharedPoolRedisCache",
            "LOCATION": CELERY_BROKER_URL,
            "KEY_PREFIX": "minoots",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

# --- Logging --------------------------------------------------------------------------------
# LOG_FORMAT=json: one JSON object per line (timer_id, tenant, event, trace_id); text otherwise.
# Secrets (API keys, whsec_ secrets, Authorization / X-API-Key values) are redacted either way.
from minoots_project.logconfig import build_logging  # noqa: E402

LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT: str = env.str("LOG_FORMAT", default="text").lower()
LOGGING = build_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)

# --- Operations: static files, tracing, metrics, health ----------------------------------------
# Trace ids first, so every later middleware logs with the request's id.
MIDDLEWARE.insert(0, "minoots_project.tracing.TraceIdMiddleware")
# gunicorn serves the admin's static files through WhiteNoise (collected by `runall` / the image).
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on each start if it is missing
# prometheus-client multiprocess mode: each process writes its samples here and /metrics
# merges them. `runall` sets it under MINOOTS_DATA_DIR (and wipes it at start); unset means
# one process only (tests, manage.py shell).
PROMETHEUS_MULTIPROC_DIR: str = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# /metrics requires `Authorization: Bearer <token>` when set; when unset, loopback clients only.
MINOOTS_METRICS_TOKEN: str = env.str("MINOOTS_METRICS_TOKEN", default="")
# /readyz gives the broker this long to answer.
MINOOTS_READYZ_TIMEOUT: float = env.float("MINOOTS_READYZ_TIMEOUT", default=2.0)
