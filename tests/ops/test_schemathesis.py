"""Schemathesis against a live web process: what the API answers matches its OpenAPI schema.

Every operation of /api/schema/ gets schema-generated requests, valid and invalid, with all of
schemathesis' checks: no 5xx, every status, header, content type and body as documented,
invalid input refused, valid input accepted. Any failure fails the test, with schemathesis'
report of it (the failing request as a curl command) printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.factories import make_api_key
from tests.processes import Processes
from timers.models import Tenant

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.e2e,
    # Postgres, the stricter of the two (NUL bytes, lengths, integer ranges), is where a generated
    # request is likelier to reach a database error: the schema's answers are the same on both.
    pytest.mark.once_on_postgres(reason="the API's answers against its schema do not depend on the database"),
]

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
# Test cases per operation and phase: bounded, so the run stays under a minute on 2 cores.
MAX_EXAMPLES = 25
# Fixed, so a run is reproducible; MINOOTS_SCHEMATHESIS_SEED explores others.
SEED = int(os.environ.get("MINOOTS_SCHEMATHESIS_SEED", "1"))

# All checks stay on. What is set here, and why:
CONFIG = """
[auth.openapi.apiKey]
api_key = "API_KEY"

[generation]
# Requests authenticate with the API key only: values made up for the other schemes
# (Authorization, the session cookie) would sit next to a valid key, which wins.
with-security-parameters = false
# The API ignores query parameters and headers it does not know, as HTTP services do (proxies
# add headers); OpenAPI 3.0 cannot say "no other headers" anyway.
allow-extra-parameters = false
# The API refuses NUL in every string, nested ones too (Postgres cannot store it), which the
# schema cannot say of free-form objects such as metadata.
allow-x00 = false

[[operations]]
include-operation-id = "timers_list"
# ?cursor= is opaque: only a next / previous link the server gave is valid, any other a 400.
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 404, 409, 429]
# Many long labels make a request line gunicorn refuses itself (414, documented) before Django
# can answer 400: a refusal all the same. The default statuses otherwise.
checks.negative_data_rejection.expected-statuses = [400, 401, 403, 404, 405, 406, 409, 414, 415, 422, 428, 429, "5xx"]

[[operations]]
include-operation-id = "timers_create"
# A create the schema allows can still be a 400 for rules JSON Schema cannot state: the duration
# grammar, fireAt in the future and within the horizon, an action bundle its runners accept,
# label keys without ':'. Every other status stays checked.
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 404, 409, 429]

[[operations]]
include-operation-id = "timers_create_batch"
# Each timer of a batch is answered on its own: a timer the schema refuses (or a rule refuses)
# is a 400 inside the 200 that answers the batch, and its neighbours are created. So a 200 is a
# refusal too here (tests/timers/test_api_batch.py checks each timer's); every other check stays.
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 404, 409, 429]
checks.negative_data_rejection.expected-statuses = [200, 400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]

[[operations]]
include-operation-id = "timers_reschedule"
# The same rules as a create's fireAt / duration (in the future, within the horizon, the
# duration grammar), which JSON Schema cannot state.
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 401, 403, 404, 409, 429]
"""


@pytest.mark.timeout(240)
def test_the_api_answers_as_its_openapi_schema_says(tenant: Tenant, processes: Processes, tmp_path: Path) -> None:
    # An event stream ends after MINOOTS_STREAM_MAX_SECONDS: short, so each generated request
    # to /api/timers/stream gets its whole response (events included) and the stream is tested like
    # the rest, its events against the schema's SSE event.
    processes.env.update({"MINOOTS_STREAM_MAX_SECONDS": "0.2", "MINOOTS_STREAMS_PER_PROCESS": "64"})
    _, base = processes.web()
    key = make_api_key(tenant=tenant, name="schemathesis")
    schema = requests.get(f"{base}/api/schema/", headers={"X-API-Key": key, "Accept": "application/json"}, timeout=30)
    assert schema.status_code == 200, schema.text[:500]
    schema_path = tmp_path / "openapi.json"
    schema_path.write_bytes(schema.content)

    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.replace("API_KEY", key))
    started = time.monotonic()
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(config),
            "run",
            str(schema_path),
            "--url",
            base,
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            # One worker: schemathesis' workers are threads, and ast.parse in two threads at
            # once (hypothesis describing lambdas) can raise SystemError on CPython 3.11.7
            # ("AST constructor recursion depth mismatch", fixed in later CPython releases).
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--continue-on-failure",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis-output.txt").write_text(output)
    assert result.returncode == 0, f"schemathesis found failures ({elapsed:.0f} s):\n{output[-20000:]}"
    assert "No issues found" in output or "passed" in output, output[-3000:]
