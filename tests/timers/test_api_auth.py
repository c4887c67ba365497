"""Authentication (API keys, RS256 JWTs, staff sessions), roles and tenant isolation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.factories import api_client
from tests.timers.conftest import CreateTimer, MakeClient, MakeToken
from timers import keys
from timers.keys import api_key_create, api_key_revoke
from timers.models import ApiKey, Tenant, Timer

TIMER_BODY = {"name": "t", "duration": "5m"}


def _bearer(token: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return c


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# --- API keys -------------------------------------------------------------------------------


def test_valid_api_key_lists_the_tenants_timers(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    response = client.get("/api/timers")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["timers"]] == [timer["id"]]


def test_request_without_credentials_is_401(anon_client: APIClient) -> None:
    body = assert_error(anon_client.get("/api/timers"), 401)
    assert "credentials" in body["message"].lower()


def test_unknown_api_key_is_401(anon_client: APIClient, tenant: Tenant) -> None:
    anon_client.credentials(HTTP_X_API_KEY="mk_000000000000_notarealsecret")
    assert_error(anon_client.get("/api/timers"), 401)


def test_api_key_with_a_wrong_secret_is_401(anon_client: APIClient, api_key: str) -> None:
    prefix = api_key.rsplit("_", 1)[0]
    anon_client.credentials(HTTP_X_API_KEY=f"{prefix}_wrongsecret")
    assert_error(anon_client.get("/api/timers"), 401)


@pytest.mark.parametrize("raw", ["", "garbage", "mk_", "mk__", "Bearer abc", "mk_" + "a" * 40 + "_x"])
def test_malformed_api_key_is_401(anon_client: APIClient, tenant: Tenant, raw: str) -> None:
    anon_client.credentials(HTTP_X_API_KEY=raw)
    assert_error(anon_client.get("/api/timers"), 401)


def test_revoked_api_key_is_401(client: APIClient, api_key: str) -> None:
    assert client.get("/api/timers").status_code == 200
    ApiKey.objects.update(revoked_at=timezone.now())
    body = assert_error(client.get("/api/timers"), 401)
    assert "revoked" in body["message"].lower()


def test_401_names_the_expected_scheme_in_www_authenticate(anon_client: APIClient) -> None:
    response = anon_client.get("/api/timers")
    assert_error(response, 401)
    assert "X-API-Key" in response["WWW-Authenticate"]


def test_api_key_use_records_last_used_at(client: APIClient) -> None:
    assert ApiKey.objects.get().last_used_at is None
    client.get("/api/timers")
    assert ApiKey.objects.get().last_used_at is not None


def test_only_the_hash_of_an_api_key_is_stored(tenant: Tenant) -> None:
    key, raw = keys.api_key_create(tenant=tenant, name="k")
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert all(raw not in str(value) for value in stored.values())
    assert keys.api_key_verify(raw=raw) == key


# --- JWT ------------------------------------------------------------------------------------


def test_bearer_jwt_creates_a_timer_with_the_subject_as_requested_by(tenant: Tenant, make_token: MakeToken) -> None:
    response = _bearer(make_token()).post("/api/timers", TIMER_BODY, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["tenantId"] == "acme"
    assert response.json()["requestedBy"] == "agent-7"


def test_bearer_jwt_reads_only_its_tenants_timers(
    tenant: Tenant, other_tenant: Tenant, make_token: MakeToken, create_timer: CreateTimer, other_client: APIClient
) -> None:
    mine = create_timer()
    create_timer(other_client)
    response = _bearer(make_token()).get("/api/timers")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["timers"]] == [mine["id"]]


def test_jwt_with_matching_requested_by_is_accepted(tenant: Tenant, make_token: MakeToken) -> None:
    response = _bearer(make_token()).post("/api/timers", {**TIMER_BODY, "requestedBy": "agent-7"}, format="json")
    assert response.status_code == 201


def test_jwt_with_a_different_requested_by_is_403(tenant: Tenant, make_token: MakeToken) -> None:
    response = _bearer(make_token()).post("/api/timers", {**TIMER_BODY, "requestedBy": "someone-else"}, format="json")
    assert_error(response, 403, contains="requestedBy")
    assert not Timer.objects.exists()


def test_expired_jwt_is_401(tenant: Tenant, make_token: MakeToken) -> None:
    token = make_token(exp=datetime.now(UTC) - timedelta(minutes=1))
    body = assert_error(_bearer(token).get("/api/timers"), 401)
    assert "expired" in body["message"].lower()


def test_jwt_signed_by_an_untrusted_key_is_401(
    tenant: Tenant, make_token: MakeToken, foreign_rsa_key_pair: tuple[str, str]
) -> None:
    token = make_token(private_key=foreign_rsa_key_pair[0])
    assert_error(_bearer(token).get("/api/timers"), 401)


def test_hs256_jwt_signed_with_the_public_key_is_401(tenant: Tenant, jwt_public_key: str) -> None:
    """Algorithm confusion: the public key used as an HMAC secret must not be accepted."""
    payload = {"sub": "x", "tenant": "acme", "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())}
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(payload)}"
    signature = hmac.new(jwt_public_key.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert_error(_bearer(token).get("/api/timers"), 401)


def test_unsigned_jwt_is_401(tenant: Tenant, jwt_public_key: str) -> None:
    payload = {"sub": "x", "tenant": "acme", "exp": datetime.now(UTC) + timedelta(minutes=5)}
    token = jwt.encode(payload, key="", algorithm="none")  # PyJWT takes "" as no key for "none"
    assert_error(_bearer(token).get("/api/timers"), 401)


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_jwt_without_a_required_claim_is_401(tenant: Tenant, make_token: MakeToken, missing: str) -> None:
    token = make_token(**{missing: None})
    assert_error(_bearer(token).get("/api/timers"), 401)


def test_jwt_without_a_tenant_claim_is_401(tenant: Tenant, make_token: MakeToken) -> None:
    assert_error(_bearer(make_token(tenant=None)).get("/api/timers"), 401, contains="tenant")


def test_jwt_for_an_unknown_tenant_is_401(tenant: Tenant, make_token: MakeToken) -> None:
    assert_error(_bearer(make_token(tenant="initech")).get("/api/timers"), 401)


def test_garbage_bearer_token_is_401(tenant: Tenant, jwt_public_key: str) -> None:
    assert_error(_bearer("not.a.jwt").get("/api/timers"), 401)


def test_bearer_token_is_401_when_no_public_key_is_configured(
    tenant: Tenant, make_token: MakeToken, settings: Any
) -> None:
    token = make_token()
    settings.JWT_PUBLIC_KEY = ""
    assert_error(_bearer(token).get("/api/timers"), 401, contains="JWT_PUBLIC_KEY")


def test_jwt_audience_is_enforced_when_configured(tenant: Tenant, make_token: MakeToken, settings: Any) -> None:
    settings.JWT_AUDIENCE = "minoots"
    assert _bearer(make_token(aud="minoots")).get("/api/timers").status_code == 200
    assert_error(_bearer(make_token(aud="someone-else")).get("/api/timers"), 401)
    assert_error(_bearer(make_token()).get("/api/timers"), 401)


def test_jwt_issuer_is_enforced_when_configured(tenant: Tenant, make_token: MakeToken, settings: Any) -> None:
    settings.JWT_ISSUER = "https://auth.example"
    assert _bearer(make_token(iss="https://auth.example")).get("/api/timers").status_code == 200
    assert_error(_bearer(make_token(iss="https://evil.example")).get("/api/timers"), 401)


def test_jwt_roles_claim_limits_what_the_token_may_do(tenant: Tenant, make_token: MakeToken) -> None:
    reader = _bearer(make_token(roles=["timer.read"]))
    assert reader.get("/api/timers").status_code == 200
    assert_error(reader.post("/api/timers", TIMER_BODY, format="json"), 403, contains="timer.write")


@pytest.mark.parametrize("roles", [["root"], [], ["TIMER.READ"]])
def test_jwt_with_unknown_roles_only_gets_no_role(tenant: Tenant, make_token: MakeToken, roles: list[Any]) -> None:
    assert_error(_bearer(make_token(roles=roles)).get("/api/timers"), 403)


def _signed(rsa_key_pair: tuple[str, str], **claims: Any) -> str:
    """An RS256 token with exactly ``claims`` beyond sub/tenant/exp: None stays a JSON null."""
    payload: dict[str, Any] = {
        "sub": "agent-7",
        "tenant": "acme",
        "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()),
        **claims,
    }
    return jwt.encode(payload, rsa_key_pair[0], algorithm="RS256")


@pytest.mark.parametrize(
    "roles",
    [
        "timer.read",
        None,
        {},
        "",
        [1],
        {"timer.read": True},
        [{"timer.read": True}],
        [["timer.read"]],
        ["timer.read", 1],
    ],
)
def test_jwt_whose_roles_claim_is_not_a_list_of_strings_is_401(
    tenant: Tenant, jwt_public_key: str, rsa_key_pair: tuple[str, str], roles: Any
) -> None:
    """A malformed ``roles`` claim must not fall back to the default (writing) roles."""
    client = _bearer(_signed(rsa_key_pair, roles=roles))
    assert_error(client.get("/api/timers"), 401, contains="roles")
    assert_error(client.post("/api/timers", TIMER_BODY, format="json"), 401, contains="roles")
    assert not Timer.objects.exists()


def test_jwt_without_a_roles_claim_gets_the_default_roles(
    tenant: Tenant, jwt_public_key: str, rsa_key_pair: tuple[str, str]
) -> None:
    """No ``roles`` claim at all: read, write and cancel (not tenant.admin), as before."""
    client = _bearer(_signed(rsa_key_pair))
    created = client.post("/api/timers", TIMER_BODY, format="json")
    assert created.status_code == 201, created.content
    assert client.get("/api/timers").status_code == 200
    cancelled = client.post(f"/api/timers/{created.json()['id']}/cancel", {}, format="json")
    assert cancelled.status_code == 200


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("kind", ["digits", "float-string", "bool", "list"])
def test_jwt_time_claims_that_are_not_numbers_are_401(
    tenant: Tenant, jwt_public_key: str, rsa_key_pair: tuple[str, str], claim: str, kind: str
) -> None:
    """RFC 7519 NumericDate is a JSON number: ``"exp": "1999999999"`` is refused, not parsed."""
    now = datetime.now(UTC)
    when = int((now + timedelta(minutes=5) if claim == "exp" else now - timedelta(minutes=1)).timestamp())
    value: Any = {"digits": str(when), "float-string": f"{when}.0", "bool": True, "list": [when]}[kind]
    token = _signed(rsa_key_pair, **{claim: value})
    assert_error(_bearer(token).get("/api/timers"), 401, contains=claim)


def test_jwt_time_claims_as_json_numbers_are_accepted(
    tenant: Tenant, jwt_public_key: str, rsa_key_pair: tuple[str, str]
) -> None:
    now = datetime.now(UTC).timestamp()
    token = _signed(rsa_key_pair, exp=now + 300.5, nbf=int(now) - 60, iat=now - 1.25)
    assert _bearer(token).get("/api/timers").status_code == 200


# --- roles ----------------------------------------------------------------------------------


def test_key_without_timer_write_cannot_create(make_client: MakeClient) -> None:
    reader = make_client(roles=["timer.read"])
    assert_error(reader.post("/api/timers", TIMER_BODY, format="json"), 403, contains="timer.write")
    assert not Timer.objects.exists()


def test_key_without_timer_read_cannot_list_get_or_read_events(
    make_client: MakeClient, create_timer: CreateTimer
) -> None:
    timer = create_timer()
    writer = make_client(roles=["timer.write"])
    for url in ("/api/timers", f"/api/timers/{timer['id']}", f"/api/timers/{timer['id']}/events"):
        assert_error(writer.get(url), 403, contains="timer.read")


def test_key_without_timer_cancel_cannot_cancel(make_client: MakeClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    no_cancel = make_client(roles=["timer.read", "timer.write"])
    assert_error(no_cancel.post(f"/api/timers/{timer['id']}/cancel", {}, format="json"), 403, contains="timer.cancel")
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"


def test_key_with_only_timer_cancel_can_cancel(make_client: MakeClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    canceller = make_client(roles=["timer.cancel"])
    response = canceller.post(f"/api/timers/{timer['id']}/cancel", {}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


def test_tenant_admin_role_grants_every_timer_role(make_client: MakeClient) -> None:
    admin = make_client(roles=["tenant.admin"])
    timer = admin.post("/api/timers", TIMER_BODY, format="json")
    assert timer.status_code == 201
    timer_id = timer.json()["id"]
    assert admin.get(f"/api/timers/{timer_id}").status_code == 200
    assert admin.post(f"/api/timers/{timer_id}/cancel", {}, format="json").status_code == 200


# --- tenancy --------------------------------------------------------------------------------


def test_another_tenants_timer_is_404_on_every_endpoint(other_client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    for response in (
        other_client.get(f"/api/timers/{timer['id']}"),
        other_client.get(f"/api/timers/{timer['id']}/events"),
        other_client.post(f"/api/timers/{timer['id']}/cancel", {}, format="json"),
    ):
        assert_error(response, 404)
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"


def test_list_never_shows_another_tenants_timers(
    client: APIClient, other_client: APIClient, create_timer: CreateTimer
) -> None:
    create_timer(other_client, name="theirs")
    mine = create_timer(name="mine")
    assert [t["id"] for t in client.get("/api/timers").json()["timers"]] == [mine["id"]]


def test_tenant_id_in_the_body_that_differs_from_the_credential_is_403(client: APIClient, other_tenant: Tenant) -> None:
    response = client.post("/api/timers", {**TIMER_BODY, "tenantId": "globex"}, format="json")
    assert_error(response, 403, contains="tenantId")
    assert not Timer.objects.exists()


def test_x_tenant_id_header_that_differs_from_the_credential_is_403(client: APIClient) -> None:
    assert_error(client.get("/api/timers", HTTP_X_TENANT_ID="globex"), 403, contains="x-tenant-id")
    assert_error(client.post("/api/timers", TIMER_BODY, format="json", HTTP_X_TENANT_ID="globex"), 403)
    assert not Timer.objects.exists()


def test_x_tenant_id_header_that_matches_the_credential_is_accepted(client: APIClient) -> None:
    response = client.post("/api/timers", TIMER_BODY, format="json", HTTP_X_TENANT_ID="acme")
    assert response.status_code == 201


def test_x_tenant_id_mismatch_is_403_for_jwt_too(tenant: Tenant, make_token: MakeToken) -> None:
    assert_error(_bearer(make_token()).get("/api/timers", HTTP_X_TENANT_ID="globex"), 403)


# --- staff session --------------------------------------------------------------------------


@pytest.fixture
def staff_client(db: Any) -> APIClient:
    user = get_user_model().objects.create_user("ops", is_staff=True)
    c = APIClient()
    c.force_login(user)
    return c


def test_staff_session_gets_the_browsable_api_as_html(staff_client: APIClient, create_timer: CreateTimer) -> None:
    create_timer(name="visible-in-browser")
    response = staff_client.get("/api/timers", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"visible-in-browser" in response.content


def test_staff_session_sees_every_tenant_without_choosing_one(
    staff_client: APIClient, create_timer: CreateTimer, other_client: APIClient
) -> None:
    create_timer(name="a")
    create_timer(other_client, name="b")
    names = {t["name"] for t in staff_client.get("/api/timers").json()["timers"]}
    assert names == {"a", "b"}


def test_staff_session_with_x_tenant_id_acts_on_that_tenant(
    staff_client: APIClient, create_timer: CreateTimer, other_client: APIClient
) -> None:
    create_timer(name="a")
    create_timer(other_client, name="b")
    names = {t["name"] for t in staff_client.get("/api/timers", HTTP_X_TENANT_ID="globex").json()["timers"]}
    assert names == {"b"}
    created = staff_client.post("/api/timers", TIMER_BODY, format="json", HTTP_X_TENANT_ID="globex")
    assert created.status_code == 201
    assert created.json()["tenantId"] == "globex"
    assert created.json()["requestedBy"] == "staff:ops"


def test_staff_session_without_a_tenant_must_name_one_to_create(staff_client: APIClient, tenant: Tenant) -> None:
    assert_error(staff_client.post("/api/timers", TIMER_BODY, format="json"), 400)
    created = staff_client.post("/api/timers", {**TIMER_BODY, "tenantId": "acme"}, format="json")
    assert created.status_code == 201
    assert created.json()["tenantId"] == "acme"


def test_staff_session_naming_an_unknown_tenant_is_404(staff_client: APIClient) -> None:
    assert_error(staff_client.get("/api/timers", HTTP_X_TENANT_ID="initech"), 404)


def test_non_staff_session_is_403(db: Any) -> None:
    user = get_user_model().objects.create_user("visitor")
    c = APIClient()
    c.force_login(user)
    body = assert_error(c.get("/api/timers"), 403)
    assert "staff" in body["message"].lower()


def test_jwt_cancel_records_the_subject_and_refuses_another_requested_by(
    tenant: Tenant, make_token: MakeToken, create_timer: CreateTimer
) -> None:
    timer = create_timer()
    caller = _bearer(make_token())
    assert_error(caller.post(f"/api/timers/{timer['id']}/cancel", {"requestedBy": "mallory"}, format="json"), 403)
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"
    response = caller.post(f"/api/timers/{timer['id']}/cancel", {}, format="json")
    assert response.status_code == 200
    assert response.json()["cancelledBy"] == "agent-7"


# --- junk in credentials never reaches the database as a 500 -------------------------------


@pytest.mark.parametrize("raw", ["mk_ab\x00c_secret", "mk_abc_s\x00cret", "mk_abc_caf\u00e9", "mk_\udc00_x"])
def test_api_key_with_nul_or_non_ascii_characters_is_401(anon_client: APIClient, tenant: Tenant, raw: str) -> None:
    anon_client.credentials(HTTP_X_API_KEY=raw)
    assert_error(anon_client.get("/api/timers"), 401)


@pytest.mark.parametrize("claim", ["ac\x00me", "a" * 65, "not a slug"])
def test_jwt_with_a_tenant_claim_that_cannot_be_a_tenant_is_401(
    tenant: Tenant, make_token: MakeToken, claim: str
) -> None:
    assert_error(_bearer(make_token(tenant=claim)).get("/api/timers"), 401)


@pytest.mark.parametrize("sub", ["agent\x00", "x" * 201, ""])
def test_jwt_with_a_subject_that_cannot_be_stored_is_401(tenant: Tenant, make_token: MakeToken, sub: str) -> None:
    assert_error(_bearer(make_token(sub=sub)).post("/api/timers", TIMER_BODY, format="json"), 401)
    assert not Timer.objects.exists()


def test_staff_session_naming_a_tenant_with_nul_is_404(staff_client: APIClient) -> None:
    assert_error(staff_client.get("/api/timers", HTTP_X_TENANT_ID="ac\x00me"), 404)


def test_staff_user_logs_in_through_the_browsable_api_login_page(
    db: Any, create_timer: CreateTimer, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
    get_user_model().objects.create_user("ops", password="s3cret-pw", is_staff=True)
    create_timer(name="after-login")
    browser = Client(enforce_csrf_checks=True)
    login_page = browser.get("/api-auth/login/?next=/api/timers")
    assert login_page.status_code == 200
    response = browser.post(
        "/api-auth/login/?next=/api/timers",
        {"username": "ops", "password": "s3cret-pw", "csrfmiddlewaretoken": login_page.cookies["csrftoken"].value},
    )
    assert response.status_code == 302
    page = browser.get("/api/timers", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert b"after-login" in page.content


def test_staff_session_post_without_a_csrf_token_is_403(db: Any) -> None:
    user = get_user_model().objects.create_user("ops", is_staff=True)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    response = browser.post(
        "/api/timers", {"name": "t", "duration": "5m", "tenantId": "acme"}, content_type="application/json"
    )
    assert_error(response, 403, contains="CSRF")
    assert not Timer.objects.exists()


def test_staff_session_must_choose_the_tenant_before_cancelling(
    staff_client: APIClient, create_timer: CreateTimer
) -> None:
    timer = create_timer(name="a")
    assert_error(staff_client.post(f"/api/timers/{timer['id']}/cancel", {}, format="json"), 403)
    cancelled = staff_client.post(f"/api/timers/{timer['id']}/cancel", {}, format="json", HTTP_X_TENANT_ID="acme")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"


def test_staff_session_reads_the_interactive_docs_and_their_schema(staff_client: APIClient) -> None:
    docs = staff_client.get("/api/docs/")
    assert docs.status_code == 200 and docs["Content-Type"].startswith("text/html")
    assert staff_client.get("/api/schema/?format=json").json()["info"]["title"] == "MINOOTS API"


# --- admin login throttling (django-axes) ---------------------------------------------------

ATTACKER_IP = "203.0.113.7"


def _admin_login(browser: Client, username: str, password: str) -> Any:
    return browser.post("/admin/login/?next=/admin/", {"username": username, "password": password, "next": "/admin/"})


def _logged_in(browser: Client) -> bool:
    return "_auth_user_id" in browser.session


@pytest.fixture
def admins(db: Any) -> None:
    get_user_model().objects.create_superuser("root", password="right-horse-battery")
    get_user_model().objects.create_user("ops", password="ops-staple-battery", is_staff=True)


def test_admin_login_is_locked_after_the_failure_limit(admins: None, settings: Any) -> None:
    """30 wrong passwords: past the limit every attempt, the right password included, is refused."""
    limit = 5  # MINOOTS_ADMIN_LOGIN_FAILURES' default
    browser = Client(REMOTE_ADDR=ATTACKER_IP)

    statuses = [_admin_login(browser, "root", f"guess-{n}").status_code for n in range(30)]

    assert statuses[: limit - 1] == [200] * (limit - 1)  # the form again, with its error
    assert statuses[limit - 1 :] == [429] * (30 - limit + 1)
    locked = _admin_login(browser, "root", "right-horse-battery")
    assert locked.status_code == 429
    assert b"too many login attempts" in locked.content.lower()
    assert not _logged_in(browser)
    assert settings.AXES_FAILURE_LIMIT == limit
    # The DRF browsable API's login form uses the same authenticate(): locked there too.
    assert browser.post("/api-auth/login/", {"username": "root", "password": "right-horse-battery"}).status_code == 429
    assert not _logged_in(browser)


def test_admin_lockout_is_per_username_and_ip(admins: None) -> None:
    attacker = Client(REMOTE_ADDR=ATTACKER_IP)
    for n in range(10):
        _admin_login(attacker, "root", f"guess-{n}")
    assert _admin_login(attacker, "root", "right-horse-battery").status_code == 429

    # The same user from another address, and another user from the attacker's address, log in.
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert _admin_login(elsewhere, "root", "right-horse-battery").status_code == 302
    assert _logged_in(elsewhere)
    colleague = Client(REMOTE_ADDR=ATTACKER_IP)
    assert _admin_login(colleague, "ops", "ops-staple-battery").status_code == 302
    assert _logged_in(colleague)


def test_admin_lockout_ends_after_the_cool_off(admins: None, settings: Any) -> None:
    from axes.models import AccessAttempt

    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)  # MINOOTS_ADMIN_LOCKOUT's default
    browser = Client(REMOTE_ADDR=ATTACKER_IP)
    for n in range(settings.AXES_FAILURE_LIMIT):
        _admin_login(browser, "root", f"guess-{n}")
    assert _admin_login(browser, "root", "right-horse-battery").status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))

    assert _admin_login(browser, "root", "right-horse-battery").status_code == 302
    assert _logged_in(browser)


def test_the_api_is_not_throttled_by_admin_lockouts(
    admins: None, client: APIClient, api_key: str, make_token: MakeToken
) -> None:
    """API keys and JWTs never go through django.contrib.auth.authenticate(): no lockout, no attempts."""
    from axes.models import AccessAttempt

    attacker = Client(REMOTE_ADDR=ATTACKER_IP)
    for n in range(10):
        _admin_login(attacker, "root", f"guess-{n}")
    attempts = AccessAttempt.objects.count()
    assert attempts == 1

    for _ in range(10):
        bad_key = APIClient(REMOTE_ADDR=ATTACKER_IP)
        bad_key.credentials(HTTP_X_API_KEY="mk_000000000000_notarealsecret")
        assert_error(bad_key.get("/api/timers"), 401)
        assert_error(_bearer("not.a.jwt").get("/api/timers", REMOTE_ADDR=ATTACKER_IP), 401)
    assert client.get("/api/timers", REMOTE_ADDR=ATTACKER_IP).status_code == 200
    assert _bearer(make_token()).get("/api/timers", REMOTE_ADDR=ATTACKER_IP).status_code == 200
    assert AccessAttempt.objects.count() == attempts


def test_a_revoked_key_is_refused_at_once_and_revoking_again_keeps_the_first_time(tenant: Tenant) -> None:
    key, raw = api_key_create(tenant=tenant, name="ci")
    client = api_client(api_key=raw)
    assert client.get("/api/timers").status_code == 200
    assert api_key_revoke(key=key) is True
    first = key.revoked_at
    assert first is not None
    assert_error(client.get("/api/timers"), 401)
    assert api_key_revoke(key=key) is False
    assert key.revoked_at == first


@pytest.mark.django_db(transaction=True)
def test_authenticating_from_threads_that_ended_keeps_none_of_their_connections_alive(tenant: Tenant) -> None:
    """Each thread (each greenlet of a gevent web worker) has its own database connection;
    the API key lookup's per-connection state must die with it, not pile up per client."""
    import gc
    import threading
    import weakref

    from django.db import connections

    _, raw = api_key_create(tenant=tenant)
    seen: list[weakref.ref[Any]] = []
    found: list[bool] = []

    def authenticate() -> None:
        found.append(keys.api_key_verify(raw=raw) is not None)
        database = connections["default"]  # this thread's own
        seen.append(weakref.ref(database))
        database.close()

    for _ in range(8):
        thread = threading.Thread(target=authenticate)
        thread.start()
        thread.join()
    gc.collect()

    assert found == [True] * 8
    assert [ref for ref in seen if ref() is not None] == []
