"""compose.yaml and .env.example, checked without Docker: services, commands that name real
modules and commands of this project, dependencies, health checks, and every setting listed."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import re
import runpy
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import environ
import pytest
import yaml
from celery.beat import Scheduler
from celery.bin.celery import celery as celery_cli
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

ROOT = Path(__file__).resolve().parent.parent.parent
APP_SERVICES = ("migrate", "web", "firing", "worker", "beat")
LONG_RUNNING = ("web", "firing", "worker", "beat")
WORKERS = ("firing", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command(service: dict[str, Any]) -> list[str]:
    """The program a service runs: for ``sh -c "...; exec prog args"``, what the shell execs."""
    cmd = service["command"]
    argv = cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]
    if argv[:2] == ["sh", "-c"]:
        return shlex.split(argv[2].rsplit("exec ", 1)[1])
    return argv


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
    assert set(services) == {"postgres", "redis", "migrate", "web", "firing", "worker", "beat"}


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
        assert env["DATABASE_URL"].startswith("postgres://postgres:5432/"), name
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/"), name
        assert "SECRET_KEY" in env, name


def test_migrate_is_a_one_shot_django_migrate_after_postgres_is_healthy(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    argv = command(migrate)
    assert argv[:3] == ["python", "manage.py", "migrate"]
    assert (ROOT / "manage.py").exists() and "migrate" in get_commands()
    assert migrate["restart"] == "no"
    assert conditions(migrate) == {"postgres": "service_healthy"}


@pytest.mark.parametrize("name", LONG_RUNNING)
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
    # The configuration file (a path: gevent patches before the package is imported) only
    # patches and takes its settings from gunicorn_conf; running it here would patch pytest.
    assert config == "minoots_project/gunicorn.conf.py"
    assert "from minoots_project.gunicorn_conf import *" in (ROOT / config).read_text()
    # With the image's ENV (not the caller's), gunicorn listens on every interface at the published port.
    spec = importlib.util.find_spec("minoots_project.gunicorn_conf")
    assert spec is not None and spec.origin is not None
    with pytest.MonkeyPatch.context() as mp:
        for name in ("BIND_HOST", "PORT"):
            mp.delenv(name, raising=False)
        for name, value in dockerfile_env().items():
            mp.setenv(name, value)
        conf = runpy.run_path(spec.origin)
    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["worker_class"] == "gevent"
    assert importlib.util.find_spec("whitenoise") is not None  # static files without the debug server
    wsgi_module, _, attr = argv[-1].partition(":")
    assert callable(getattr(importlib.import_module(wsgi_module), attr or "application"))
    assert any(str(p).endswith(":8000") for p in web["ports"])
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
    assert resolve("/healthz").url_name == "healthz"


def consumed_queues(services: dict[str, Any]) -> dict[str, set[str]]:
    """The queues each Celery worker service consumes (``-Q``), by service."""
    found = {}
    for name, service in services.items():
        if "command" in service and command(service)[:4] == ["celery", "-A", "minoots_project", "worker"]:
            found[name] = set(option(command(service), "-Q", "--queues").split(","))
    return found


def test_each_queue_has_a_consumer_of_its_own_so_actions_cannot_starve_firing(services: dict[str, Any]) -> None:
    consumed = consumed_queues(services)
    assert set(consumed) == set(WORKERS)
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert routed == {"timers", "actions"}
    # Every queue is consumed, and no service consumes two: an action never holds a firing slot.
    assert set().union(*consumed.values()) == routed
    assert all(len(queues) == 1 for queues in consumed.values()), consumed
    assert consumed == {"firing": {"timers"}, "worker": {"actions"}}
    assert importlib.import_module("minoots_project.celery").app.main == "minoots_project"


@pytest.mark.parametrize("name", WORKERS)
def test_workers_use_threads_and_can_scale(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    argv = command(worker)
    assert option(argv, "--pool", "-P") == "threads"
    # `--scale worker=N` needs no fixed container name and no published port.
    assert "container_name" not in worker and "ports" not in worker


def test_the_firing_pool_is_small_and_the_action_pool_follows_celery_worker_concurrency() -> None:
    rendered_services = rendered({"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p", "CELERY_WORKER_CONCURRENCY": "32"})
    firing = command(rendered_services["services"]["firing"])
    worker = command(rendered_services["services"]["worker"])
    assert 1 <= int(option(firing, "--concurrency", "-c")) <= 8
    assert option(worker, "--concurrency", "-c") == "32"


def test_beat_runs_the_project_beat(services: dict[str, Any]) -> None:
    argv = command(services["beat"])
    assert argv[:4] == ["celery", "-A", "minoots_project", "beat"]
    assert "timers.reconcile" in {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "container_name" not in services["beat"]


def test_metrics_directory_is_shared_by_web_the_workers_and_beat(services: dict[str, Any]) -> None:
    mounts = {name: services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] for name in LONG_RUNNING}
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
    # `$${X}` is a literal `${X}` for the container's shell, not compose interpolation.
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
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


# --- What compose does with .env ----------------------------------------------------------------
# compose interpolates ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and
# $VAR from the shell and .env, `$$` being a literal `$`; `env_file` then hands every line of
# .env to the container, and `environment:` wins over it.
_INTERPOLATION = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")

# A .env written for `make run` on the same machine, plus the two secrets compose requires.
MAKE_RUN_DOTENV = {
    "SECRET_KEY": "s3cret-for-the-test",
    "POSTGRES_PASSWORD": "p@ss/w:rd",
    "PORT": "8001",
    "BIND_HOST": "127.0.0.1",
    "DATABASE_URL": "postgres://me:pw@127.0.0.1:5432/minoots",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "MINOOTS_DATA_DIR": "./.data",
    "STATIC_ROOT": "./.data/static",
    "PROMETHEUS_MULTIPROC_DIR": "./.data/prometheus",
    "GUNICORN_GRACEFUL_TIMEOUT": "60",
}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4) or ""
        current = env.get(name)
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise AssertionError(f"compose refuses to start: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def rendered(dotenv: dict[str, str]) -> dict[str, Any]:
    """compose.yaml as `docker compose config` would print it with this .env (and no shell vars)."""
    return interpolate(yaml.safe_load((ROOT / "compose.yaml").read_text()), dotenv)


def container_env(service: dict[str, Any], dotenv: dict[str, str]) -> dict[str, str]:
    """The environment of a container: the image's ENV, then env_file (.env), then environment:."""
    env = dockerfile_env()
    if any((e["path"] if isinstance(e, dict) else e) == ".env" for e in service.get("env_file", [])):
        env.update(dotenv)
    env.update({key: str(value) for key, value in (service.get("environment") or {}).items()})
    return env


def gunicorn_conf(env: dict[str, str]) -> dict[str, Any]:
    spec = importlib.util.find_spec("minoots_project.gunicorn_conf")
    assert spec is not None and spec.origin is not None
    with pytest.MonkeyPatch.context() as mp:
        for name in ("BIND_HOST", "PORT", "GUNICORN_GRACEFUL_TIMEOUT"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        return runpy.run_path(spec.origin)


def seconds(duration: str) -> float:
    """A compose duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"([0-9.]+)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.mark.parametrize("dotenv", [{}, {"PORT": "8001"}, {"BIND_HOST": "127.0.0.1"}, MAKE_RUN_DOTENV])
def test_dotenv_written_for_make_run_cannot_move_web_off_its_published_port(dotenv: dict[str, str]) -> None:
    dotenv = {"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p", **dotenv}
    web = rendered(dotenv)["services"]["web"]
    conf = gunicorn_conf(container_env(web, dotenv))
    assert conf["bind"] == "0.0.0.0:8000"
    # The published port's container side and the health check's URL say the same port.
    assert [str(p).rsplit(":", 1)[1] for p in web["ports"]] == ["8000"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(web["healthcheck"]["test"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_dotenv_written_for_make_run_cannot_move_the_containers_paths_database_or_broker(name: str) -> None:
    compose = rendered(MAKE_RUN_DOTENV)
    service = compose["services"][name]
    env = container_env(service, MAKE_RUN_DOTENV)
    image = dockerfile_env()
    assert env["STATIC_ROOT"] == image["STATIC_ROOT"]  # where the image's collectstatic put the files
    assert env["MINOOTS_DATA_DIR"] == image["MINOOTS_DATA_DIR"]
    metrics = env["PROMETHEUS_MULTIPROC_DIR"]
    assert any(v.endswith(f":{metrics}") for v in service["volumes"])
    assert environ.Env.db_url_config(env["DATABASE_URL"])["HOST"] == "postgres"
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/")


@pytest.mark.parametrize("password", ["p@ss/w:rd", "a%2Fb%", "x?y#z&w=1", "s p a c e", "$ingle'quote\"", "ünï"])
def test_a_postgres_password_reaches_postgres_and_the_app_unencoded(password: str) -> None:
    dotenv = {"SECRET_KEY": "s", "POSTGRES_PASSWORD": password, "POSTGRES_USER": "u@me", "POSTGRES_DB": "db"}
    compose = rendered(dotenv)
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    for name in APP_SERVICES:
        env = container_env(compose["services"][name], dotenv)
        db = environ.Env.db_url_config(env["DATABASE_URL"])
        assert (db["HOST"], db["PORT"], db["NAME"]) == ("postgres", 5432, "db"), name
        # Django passes USER / PASSWORD to libpq only when set; libpq falls back to PGUSER / PGPASSWORD.
        assert (db["USER"] or env.get("PGUSER")) == "u@me", name
        assert (db["PASSWORD"] or env.get("PGPASSWORD")) == password, name


@pytest.mark.postgres_only(reason="libpq itself resolves PGUSER / PGPASSWORD")
def test_libpq_connects_with_compose_user_and_password_as_they_are() -> None:
    """Django's connection parameters for compose's DATABASE_URL, opened by psycopg2 against the
    test Postgres: libpq takes the user and the password from PGUSER / PGPASSWORD unchanged."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    password = "p@ss/w:rd%2F?#"
    test_db = settings.DATABASES["default"]
    dotenv = {"SECRET_KEY": "s", "POSTGRES_PASSWORD": password, "POSTGRES_USER": test_db["USER"], "POSTGRES_DB": "x"}
    env = container_env(rendered(dotenv)["services"]["web"], dotenv)
    config = environ.Env.db_url_config(env["DATABASE_URL"])
    # The compose host and database swapped for the test server's and its maintenance database
    # (which Django's test runner needs too); a trust login ignores the password, but libpq
    # still reports the one it would send.
    config.update(HOST=test_db["HOST"], PORT=test_db["PORT"], NAME="postgres", OPTIONS={}, TIME_ZONE=None)
    params = DatabaseWrapper({**test_db, **config}).get_connection_params()
    assert "password" not in params and "user" not in params
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGUSER", env["PGUSER"])
        mp.setenv("PGPASSWORD", env["PGPASSWORD"])
        import psycopg2

        connection = psycopg2.connect(**params)
    try:
        assert (connection.info.user, connection.info.password) == (test_db["USER"], password)
    finally:
        connection.close()


@pytest.mark.parametrize("dotenv", [{}, {"GUNICORN_GRACEFUL_TIMEOUT": "60"}, MAKE_RUN_DOTENV])
def test_web_stop_grace_period_exceeds_gunicorns_graceful_timeout(dotenv: dict[str, str]) -> None:
    dotenv = {"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p", **dotenv}
    web = rendered(dotenv)["services"]["web"]
    graceful = gunicorn_conf(container_env(web, dotenv))["graceful_timeout"]
    # Docker's default is 10 s, then SIGKILL; a few seconds on top for gunicorn's own exit.
    assert seconds(web.get("stop_grace_period", "10s")) >= graceful + 5


def health_shell(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test  # the shell expands $HOSTNAME and $PROMETHEUS_MULTIPROC_DIR
    return str(test[1])


@pytest.mark.parametrize("name", WORKERS)
def test_worker_health_check_pings_this_very_worker_through_the_broker(name: str) -> None:
    worker = rendered({"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p"})["services"][name]
    check = shlex.split(health_shell(worker).split(";", 1)[1])
    assert check[:5] == ["celery", "-A", "minoots_project", "inspect", "ping"]
    # The worker's node name is <service>@<container hostname>, which the shell has as $HOSTNAME.
    assert option(command(worker), "--hostname", "-n") == f"{name}@%h"
    assert option(check, "--destination", "-d") == f"{name}@${{HOSTNAME}}"
    names = {opt for param in celery_cli.commands["inspect"].params for opt in param.opts}
    assert {"--destination", "--timeout"} <= names  # options the installed celery knows
    assert float(option(check, "--timeout", "-t")) < seconds(worker["healthcheck"]["timeout"])
    assert seconds(worker["healthcheck"]["interval"]) <= 60


def test_beat_health_check_fails_once_beat_stops_writing_its_schedule(tmp_path: Path) -> None:
    beat = rendered({"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p"})["services"]["beat"]
    schedule = option(command(beat), "--schedule", "-s")
    check = shlex.split(health_shell(beat).split(";", 1)[1])
    assert check[:2] == ["python", "-c"] and f"'{schedule}*'" in check[2]
    # Beat writes the file at its first tick, then every sync_every seconds; ticks are at most
    # max_interval apart: a live beat's file is never older than both together.
    app = importlib.import_module("minoots_project.celery").app
    max_age = float(re.findall(r"< (\d+)", check[2])[0])
    max_interval = float(app.conf.beat_max_loop_interval or Scheduler.max_interval or 300)
    assert Scheduler.sync_every + max_interval < max_age

    script = check[2].replace(schedule, str(tmp_path / "celerybeat-schedule"))

    def healthy() -> bool:
        return subprocess.run([sys.executable, "-c", script], check=False).returncode == 0

    assert not healthy()  # beat never wrote its schedule
    dat = tmp_path / "celerybeat-schedule.dat"  # dbm.dumb's files; dbm.gnu writes the bare name
    dat.write_bytes(b"")
    assert healthy()
    os.utime(dat, (time.time() - max_age - 60,) * 2)
    assert not healthy()  # stuck or dead scheduler loop


def test_every_app_health_check_marks_its_own_metrics_files_alive(tmp_path: Path) -> None:
    compose = rendered({"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p"})
    # The files prometheus-client names after timers.metrics' process identifier.
    identifier = importlib.import_module("timers.metrics")._process_identifier()
    assert fnmatch.fnmatch(f"counter_{identifier}.db", f"*_{socket.gethostname()}-*.db")
    old = time.time() - 3600
    for name in LONG_RUNNING:
        service = compose["services"][name]
        mine, other = tmp_path / "counter_abc123-7.db", tmp_path / "counter_abc1234-1.db"
        for path in (mine, other):
            path.write_bytes(b"x")
            os.utime(path, (old, old))
        heartbeat = health_shell(service).split(";", 1)[0]
        env = {"PATH": os.environ["PATH"], "HOSTNAME": "abc123", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        subprocess.run(["sh", "-c", heartbeat], env=env, check=True)
        assert mine.stat().st_mtime > old + 3000, name
        assert other.stat().st_mtime == old, name
        assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, other.name], name  # nothing created
        assert seconds(service["healthcheck"]["interval"]) <= 60, name  # well inside migrate's 3 minutes


def test_migrate_empties_the_metrics_volume_of_processes_gone_then_migrates(tmp_path: Path) -> None:
    migrate = rendered({"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p"})["services"]["migrate"]
    argv = [str(part) for part in migrate["command"]]
    assert argv[:2] == ["sh", "-c"]
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    gone, alive = metrics / "counter_dead01-1.db", metrics / "histogram_live01-7.db"
    gone.write_bytes(b"x")
    alive.write_bytes(b"x")
    os.utime(gone, (time.time() - 3600,) * 2)
    os.utime(alive, (time.time() - 60,) * 2)  # touched by its container's last health check
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_python = bin_dir / "python"
    fake_python.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "ran"}\n')
    fake_python.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    subprocess.run(argv, env=env, check=True)
    assert not gone.exists() and alive.exists()
    assert (tmp_path / "ran").read_text().split() == ["manage.py", "migrate", "--noinput"]
    # A cleaning failure (no directory at all) does not keep the migrations from running.
    (tmp_path / "ran").unlink()
    subprocess.run(argv, env={**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "none")}, check=True)
    assert (tmp_path / "ran").read_text().split() == ["manage.py", "migrate", "--noinput"]
    assert migrate["environment"]["PROMETHEUS_MULTIPROC_DIR"] == str(
        rendered({"SECRET_KEY": "s", "POSTGRES_PASSWORD": "p"})["services"]["web"]["environment"][
            "PROMETHEUS_MULTIPROC_DIR"
        ]
    )
    assert any(v.endswith(f":{migrate['environment']['PROMETHEUS_MULTIPROC_DIR']}") for v in migrate["volumes"])


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_health_check(services: dict[str, Any], name: str) -> None:
    check = services[name]["healthcheck"]
    assert check["test"] and {"interval", "timeout", "retries", "start_period"} <= set(check)
