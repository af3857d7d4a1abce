"""Every error of the API has one shape, {"error":{"code","message"}}, as
application/json, whoever produced it: a route, the SQL function, or
nginx itself (unknown paths, wrong methods, a broken request).  And when
a backend is down the answer is a 503 that leaves nothing half done: an
authorization Redis decided but PostgreSQL could not record is released
again.
"""

import socket
import types

import pytest

import fc
import procs


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.org = b.org()
    w.owner = b.user(w.org, "owner")
    w.contract = b.contract(w.org, balance=1_000_000)
    w.card = b.card(w.contract)
    w.station = b.station()
    w.term = b.terminal(w.station)
    b.publish()
    w.pos = procs.Terminal(w.term.key)
    yield w
    b.close()


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/pos/v1/nope",
                                  "/mobile/v1/nope", "/api/v1/cards/1/x",
                                  "/api/v2/cards"])
def test_unknown_path_is_a_json_404(client, path):
    r = client.get(path)
    err = procs.error_of(r, 404, "not_found")
    assert err["message"]


@pytest.mark.parametrize("method,path,documented", [
    ("GET", "/pos/v1/authorize", "POST"),
    ("PUT", "/pos/v1/complete", "POST"),
    ("DELETE", "/api/v1/cards/{id}", "GET"),
    ("PUT", "/api/v1/cards/block", "POST"),
    ("POST", "/api/v1/me", "GET"),
    ("PATCH", "/api/v1/limits", "GET"),
    ("GET", "/mobile/v1/token", "POST"),
    ("DELETE", "/mobile/v1/stations", "GET"),
    ("POST", "/health", "GET"),
])
def test_wrong_method_is_a_json_405(client, openapi, method, path,
                                    documented):
    r = client.request(method, path.replace("{id}", "1"))
    openapi(r, path, documented)
    procs.error_of(r, 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/pos/v1/complete", "/pos/v1/reverse",
                                  "/pos/v1/refund"])
@pytest.mark.parametrize("key", [None, "", "unknown"])
def test_terminal_operations_need_a_known_key(world, client, openapi, path,
                                              key):
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    r = client.post(path, {"terminal_txn_id": procs.txn_id(),
                           "auth_id": "00000000-0000-4000-8000-000000000000",
                           "volume_ml": 1, "amount": 1},
                    headers=headers)
    openapi(r, path, "POST")
    procs.error_of(r, 401, "unauthorized")


@pytest.mark.parametrize("scheme", ["Basic", "bearer-ish", ""])
def test_authorization_that_is_not_bearer_is_401(world, client, openapi,
                                                 scheme):
    r = client.post("/pos/v1/authorize",
                    {"terminal_txn_id": procs.txn_id(),
                     "card_number": world.card.pan, "product_code": "AI-95",
                     "unit_price": 5_000, "requested_volume_ml": 1_000},
                    headers={"Authorization": f"{scheme} {world.term.key}"})
    openapi(r, "/pos/v1/authorize", "POST")
    procs.error_of(r, 401, "unauthorized")


@pytest.mark.parametrize("id_", ["abc", "0", "-1", "1.5",
                                 "99999999999999999999", "%20"])
def test_id_that_is_not_a_positive_integer_is_404(world, openapi, id_):
    cab = procs.cabinet_for(world.owner)
    r = cab.get(f"/api/v1/cards/{id_}")
    openapi(r, "/api/v1/cards/{id}")
    procs.error_of(r, 404, "not_found")
    r = cab.get(f"/api/v1/contracts/{id_}")
    openapi(r, "/api/v1/contracts/{id}")
    procs.error_of(r, 404, "not_found")


def test_missing_session_is_401_on_every_cabinet_route(world, client,
                                                       openapi):
    for method, path, template in (
            ("GET", "/api/v1/me", "/api/v1/me"),
            ("DELETE", "/api/v1/session", "/api/v1/session"),
            ("GET", "/api/v1/contracts", "/api/v1/contracts"),
            ("GET", f"/api/v1/contracts/{world.contract}",
             "/api/v1/contracts/{id}"),
            ("GET", f"/api/v1/contracts/{world.contract}/statement",
             "/api/v1/contracts/{id}/statement"),
            ("GET", "/api/v1/cards", "/api/v1/cards"),
            ("GET", f"/api/v1/cards/{world.card.id}", "/api/v1/cards/{id}"),
            ("POST", f"/api/v1/cards/{world.card.id}/block",
             "/api/v1/cards/{id}/block"),
            ("GET", "/api/v1/card-groups", "/api/v1/card-groups"),
            ("GET", "/api/v1/limits", "/api/v1/limits"),
            ("GET", "/api/v1/transactions", "/api/v1/transactions"),
            ("GET", "/mobile/v1/cards", "/mobile/v1/cards"),
            ("DELETE", "/mobile/v1/token", "/mobile/v1/token")):
        r = client.request(method, path)
        openapi(r, template, method)
        procs.error_of(r, 401, "unauthorized")
    assert procs.scalar("SELECT status FROM cards WHERE id = %s",
                        (world.card.id,)) == "active"


def test_a_forged_session_cookie_is_401(world, client):
    r = client.get("/api/v1/me", headers={"Cookie": "fc_session=" + "ab" * 32})
    procs.error_of(r, 401, "unauthorized", "/api/v1/me")


def test_broken_request_is_a_json_400_from_nginx(stack_env):
    target = fc.Client()
    with socket.create_connection((target.host, target.port),
                                  timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
                  b"This line has no colon\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/json" in head.lower(), head
    assert b'"code":"bad_request"' in body, body


def test_request_uri_too_long_is_a_json_414(client):
    r = client.get("/api/v1/cards?q=" + "x" * 20_000)
    procs.error_of(r, 414, "uri_too_long")


def test_request_header_too_large_is_a_json_400(client):
    r = client.get("/health", headers={"X-Padding": "x" * 20_000})
    procs.error_of(r, 400, "bad_request")


# ---------------------------------------------------------------------
# backends down

def test_redis_down_makes_authorize_and_ready_503_and_records_nothing(
        world, openapi):
    txn = procs.txn_id()
    with fc.outage("redis"):
        r = fc.Client().get("/ready")
        body = openapi(r, "/ready")
        assert r.status == 503
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["checks"]["postgres"] == "ok"
        assert body["error"]["checks"]["redis"] != "ok"

        r = world.pos.authorize(world.card.pan, volume_ml=1_000, txn=txn)
        openapi(r, "/pos/v1/authorize", "POST")
        procs.error_of(r, 503, "service_unavailable")

    assert procs.scalar("SELECT count(*) FROM pos_auths "
                        "WHERE terminal_txn_id = %s", (txn,)) == 0
    fc.wait_for(lambda: fc.Client().get("/ready").status == 200,
                timeout=15, what="/ready after redis came back")
    r = world.pos.authorize(world.card.pan, volume_ml=1_000, txn=txn)
    body = openapi(r, "/pos/v1/authorize", "POST")
    assert body["status"] == "approved"
    assert world.pos.reverse(body["auth_id"]).status == 200


def test_postgres_down_releases_the_hold_redis_placed(world, openapi,
                                                      redis):
    cab = procs.cabinet_for(world.owner)
    holds = procs.redis_ctr(redis, world.contract)["holds"]
    counters_before = procs.redis_contract_state(redis, world.contract)
    txn = procs.txn_id()
    with fc.outage("postgres"):
        r = world.pos.authorize(world.card.pan, volume_ml=1_000, txn=txn)
        openapi(r, "/pos/v1/authorize", "POST")
        procs.error_of(r, 503, "service_unavailable")
        # no approval exists that is not on record
        assert procs.redis_ctr(redis, world.contract)["holds"] == holds
        assert procs.redis_contract_state(redis, world.contract) == \
            counters_before

        r = cab.get("/api/v1/me")
        openapi(r, "/api/v1/me")
        procs.error_of(r, 503, "service_unavailable")

    fc.wait_for(lambda: fc.Client().get("/ready").status == 200,
                timeout=15, what="/ready after postgres came back")
    assert procs.scalar("SELECT count(*) FROM pos_auths "
                        "WHERE terminal_txn_id = %s", (txn,)) == 0
    r = world.pos.authorize(world.card.pan, volume_ml=1_000, txn=txn)
    body = openapi(r, "/pos/v1/authorize", "POST")
    assert body["status"] == "approved"
    assert world.pos.reverse(body["auth_id"]).status == 200
