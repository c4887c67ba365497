"""compose.yaml and .env.example, checked without Docker: services, commands that name real
modules and commands of this project, dependencies, health checks, and every setting listed."""

from __future__ import annotations

import importlib
import importlib.util
import re
import runpy
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

ROOT = Path(__file__).resolve().parent.parent.parent
APP_SERVICES = ("migrate", "web", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def option(argv: list[str], *names: str) -> str:
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[i + 1]
    raise AssertionError(f"none of {names} in {argv}")


def conditions(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service["depends_on"].items()}


def dockerfile_env() -> dict[str, str]:
    """The variables the Dockerfile's ENV instructions set (``ENV A=1 \\`` continuation lines)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for part in shlex.split(line[4:]):
                name, _, value = part.partition("=")
                env[name] = value
    return env


def documented_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M))


def test_compose_has_exactly_the_services_of_the_design(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat"}


def test_postgres_is_16_with_a_volume_and_a_health_check(compose: dict[str, Any], services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:16")
    volume = next(v for v in pg["volumes"] if v.endswith(":/var/lib/postgresql/data"))
    assert volume.split(":")[0] in compose["volumes"]  # a named volume, not the container's layer
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_redis_is_7_with_a_health_check(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    # Exec form, so the container's redis-cli itself is run and its exit status is the health.
    test = redis["healthcheck"]["test"]
    assert test[:2] == ["CMD", "redis-cli"] and test[-1] == "ping", test


def test_app_services_share_one_image_and_read_dotenv(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == "." and service["image"] == services["web"]["image"], name
        paths = [e["path"] if isinstance(e, dict) else e for e in service["env_file"]]
        assert ".env" in paths, name
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"], name
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/"), name
        assert "SECRET_KEY" in env, name


def test_migrate_is_a_one_shot_django_migrate_after_postgres_is_healthy(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    argv = command(migrate)
    assert argv[:3] == ["python", "manage.py", "migrate"]
    assert (ROOT / "manage.py").exists() and "migrate" in get_commands()
    assert migrate["restart"] == "no"
    assert conditions(migrate) == {"postgres": "service_healthy"}


@pytest.mark.parametrize("name", ["web", "worker", "beat"])
def test_long_running_services_wait_for_healthy_services_and_the_migration(services: dict[str, Any], name: str) -> None:
    assert conditions(services[name]) == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }


def test_web_runs_gunicorn_on_the_project_wsgi_with_its_config_and_a_healthz_check(services: dict[str, Any]) -> None:
    web = services["web"]
    argv = command(web)
    assert argv[0] == "gunicorn"
    config = option(argv, "-c", "--config")
    assert config.startswith("python:")
    # With the image's ENV (not the caller's), gunicorn listens on every interface at the published port.
    spec = importlib.util.find_spec(config.removeprefix("python:"))
    assert spec is not None and spec.origin is not None
    with pytest.MonkeyPatch.context() as mp:
        for name in ("BIND_HOST", "PORT"):
            mp.delenv(name, raising=False)
        for name, value in dockerfile_env().items():
            mp.setenv(name, value)
        conf = runpy.run_path(spec.origin)
    assert conf["bind"] == "0.0.0.0:8000"
    assert importlib.util.find_spec("whitenoise") is not None  # static files without the debug server
    wsgi_module, _, attr = argv[-1].partition(":")
    assert callable(getattr(importlib.import_module(wsgi_module), attr or "application"))
    assert any(str(p).endswith(":8000") for p in web["ports"])
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
    assert resolve("/healthz").url_name == "healthz"


def test_worker_consumes_every_routed_queue_with_threads_and_can_scale(services: dict[str, Any]) -> None:
    worker = services["worker"]
    argv = command(worker)
    assert argv[:4] == ["celery", "-A", "minoots_project", "worker"]
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert set(option(argv, "-Q", "--queues").split(",")) == routed
    assert option(argv, "--pool", "-P") == "threads"
    assert importlib.import_module("minoots_project.celery").app.main == "minoots_project"
    # `--scale worker=N` needs no fixed container name and no published port.
    assert "container_name" not in worker and "ports" not in worker


def test_beat_runs_the_project_beat(services: dict[str, Any]) -> None:
    argv = command(services["beat"])
    assert argv[:4] == ["celery", "-A", "minoots_project", "beat"]
    assert "timers.reconcile" in {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "container_name" not in services["beat"]


def test_metrics_directory_is_shared_by_web_worker_and_beat(services: dict[str, Any]) -> None:
    mounts = {name: services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] for name in ("web", "worker", "beat")}
    assert len(set(mounts.values())) == 1
    path = next(iter(mounts.values()))
    for name in mounts:
        assert any(v.endswith(f":{path}") for v in services[name]["volumes"]), name


def test_the_image_builds_from_the_requirements_and_collects_static_files() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert "pip install -r requirements.txt" in dockerfile
    assert "collectstatic" in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, re.M)


def test_every_variable_compose_interpolates_is_documented(compose: dict[str, Any]) -> None:
    text = (ROOT / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert used <= documented_variables(), used - documented_variables()


def _read_variables(path: Path) -> set[str]:
    text = path.read_text()
    found = set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", text))
    found |= set(re.findall(r"\"([A-Z][A-Z0-9_]*)\"\s+(?:not\s+)?in\s+env\b", text))
    found |= set(re.findall(r"environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]*)\"", text))
    return found


def test_env_example_lists_every_variable_the_settings_read() -> None:
    read = _read_variables(ROOT / "minoots_project" / "settings.py")
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "LOG_FORMAT"} <= read  # the scan works
    missing = read - documented_variables()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_lists_the_process_knobs_of_runall_and_gunicorn() -> None:
    read = _read_variables(ROOT / "minoots_project" / "gunicorn_conf.py")
    read |= _read_variables(ROOT / "minoots_project" / "runall.py")
    read -= {"DJANGO_SETTINGS_MODULE"}
    assert {"PORT", "CELERY_WORKER_CONCURRENCY"} <= read
    missing = read - documented_variables()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_changes_nothing_when_copied_as_is() -> None:
    """Every assignment is commented out: copying it must not leave the embedded default."""
    active = [line for line in (ROOT / ".env.example").read_text().splitlines() if re.match(r"^[A-Z]", line)]
    assert active == []


def test_readme_configuration_table_lists_every_documented_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", table, re.M))
    missing = documented_variables() - listed
    assert not missing, f"add to the README configuration table: {sorted(missing)}"
