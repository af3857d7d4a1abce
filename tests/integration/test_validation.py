"""Bad requests are refused whole, with a JSON error, and change nothing.

For the three writes that matter most (authorize, complete, limits):
malformed JSON is a 400 that says where (line and column), a body over
64 KiB a 413, another content type a 415, and a negative, fractional,
missing or wrong-typed field a 422 whose message starts with the field's
name and quotes the value (never a card number).  After each refusal the
rows of pos_auths and limits and the contract's available amount are
what they were.
"""

import json
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
    w.cab = procs.cabinet_for(w.owner)
    a = procs.decision(w.pos.authorize(w.card.pan, volume_ml=10_000,
                                       price=5_000))
    assert a["status"] == "approved", a
    w.auth_id = a["auth_id"]
    yield w
    b.close()


def snapshot(world, redis):
    """What a refused request must not change."""
    r = world.cab.get(f"/api/v1/contracts/{world.contract}")
    assert r.status == 200, r
    contract = fc.check_openapi(r, "/api/v1/contracts/{id}")
    return {"pos_auths": procs.scalar("SELECT count(*) FROM pos_auths"),
            "pos_operations": procs.scalar(
                "SELECT count(*) FROM pos_operations"),
            "limits": procs.scalar("SELECT count(*) FROM limits"),
            "ledger": procs.scalar("SELECT count(*) FROM ledger "
                                   "WHERE contract_id = %s",
                                   (world.contract,)),
            "available": contract["available"],
            "auth_state": procs.scalar("SELECT state FROM pos_auths "
                                       "WHERE auth_id = %s",
                                       (world.auth_id,)),
            "redis": procs.redis_contract_state(redis, world.contract)}


@pytest.fixture
def unchanged(world, redis):
    before = snapshot(world, redis)
    yield
    assert snapshot(world, redis) == before


def authorize_body(world, **change):
    body = {"terminal_txn_id": procs.txn_id(), "card_number": world.card.pan,
            "product_code": "AI-95", "unit_price": 5_000,
            "requested_volume_ml": 10_000}
    body.update(change)
    return {k: v for k, v in body.items() if v is not ...}


def complete_body(world, **change):
    body = {"terminal_txn_id": procs.txn_id(), "auth_id": world.auth_id,
            "volume_ml": 10_000, "amount": 50_000}
    body.update(change)
    return {k: v for k, v in body.items() if v is not ...}


def limit_body(world, **change):
    body = {"scope": "card", "card_id": world.card.id, "kind": "volume",
            "period": "day", "value": 100_000}
    body.update(change)
    return {k: v for k, v in body.items() if v is not ...}


def send(world, route, body=None, raw=None, headers=None):
    if route == "limits":
        return world.cab.post("/api/v1/limits", body=body, raw=raw,
                              headers=headers)
    path = {"authorize": "/pos/v1/authorize",
            "complete": "/pos/v1/complete"}[route]
    return world.pos.post(path, body=body, raw=raw, headers=headers)


PATHS = {"authorize": "/pos/v1/authorize", "complete": "/pos/v1/complete",
         "limits": "/api/v1/limits"}

ROUTES = ["authorize", "complete", "limits"]


# ---------------------------------------------------------------------
# the body as a whole

@pytest.mark.parametrize("route", ROUTES)
def test_malformed_json_is_400_with_line_and_column(world, openapi,
                                                    unchanged, route):
    raw = b'{\n  "terminal_txn_id": "x",\n  "card_number": ,\n}'
    r = send(world, route, raw=raw,
             headers={"Content-Type": "application/json"})
    openapi(r, PATHS[route], "POST")
    err = procs.error_of(r, 400, "invalid_json")
    assert "line 3, column 18" in err["message"], err


@pytest.mark.parametrize("route", ROUTES)
def test_json_that_is_not_an_object_is_400(world, openapi, unchanged,
                                           route):
    r = send(world, route, raw=b"[1, 2, 3]",
             headers={"Content-Type": "application/json"})
    openapi(r, PATHS[route], "POST")
    procs.error_of(r, 400, "invalid_json")


@pytest.mark.parametrize("route", ROUTES)
def test_duplicate_keys_are_400(world, openapi, unchanged, route):
    r = send(world, route, raw=b'{"amount": 1, "amount": 2}',
             headers={"Content-Type": "application/json"})
    openapi(r, PATHS[route], "POST")
    procs.error_of(r, 400, "invalid_json")


@pytest.mark.parametrize("route", ROUTES)
def test_body_over_64_kib_is_413(world, openapi, unchanged, route):
    body = {"terminal_txn_id": procs.txn_id(), "padding": "x" * 70_000}
    r = send(world, route, raw=json.dumps(body).encode(),
             headers={"Content-Type": "application/json"})
    openapi(r, PATHS[route], "POST")
    procs.error_of(r, 413, "payload_too_large")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain",
                                          "application/x-www-form-urlencoded",
                                          None])
def test_body_that_is_not_json_is_415(world, openapi, unchanged, route,
                                      content_type):
    body = {"authorize": authorize_body, "complete": complete_body,
            "limits": limit_body}[route](world)
    headers = {"Content-Type": content_type} if content_type else {}
    r = send(world, route, raw=json.dumps(body).encode(), headers=headers)
    openapi(r, PATHS[route], "POST")
    procs.error_of(r, 415, "unsupported_media_type")


def test_empty_body_is_400(world, openapi, unchanged):
    r = send(world, "authorize", raw=b"",
             headers={"Content-Type": "application/json"})
    openapi(r, PATHS["authorize"], "POST")
    procs.error_of(r, 400, "invalid_json")


# ---------------------------------------------------------------------
# fields

def expect_field(r, openapi, path, field, quoted=None):
    openapi(r, path, "POST")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith(f"{field}:"), err
    if quoted is not None:
        assert quoted in err["message"], err
    return err


@pytest.mark.parametrize("field,value,quoted", [
    ("requested_volume_ml", -5, "-5"),
    ("requested_volume_ml", 0, "0"),
    ("requested_volume_ml", 1.5, "1.5"),
    ("requested_volume_ml", 10_000_001, "10000001"),
    ("requested_volume_ml", "10000", '"10000"'),
    ("requested_volume_ml", True, "true"),
    ("unit_price", -1, "-1"),
    ("unit_price", 49.99, "49.99"),
    ("unit_price", "5000", '"5000"'),
    ("unit_price", ..., None),
    ("terminal_txn_id", ..., None),
    ("terminal_txn_id", "", None),
    ("terminal_txn_id", "has space", "has space"),
    ("terminal_txn_id", "x" * 65, None),
    ("terminal_txn_id", 12345, "12345"),
    ("product_code", ..., None),
    ("product_code", ["AI-95"], None),
    ("card_number", ..., None),
])
def test_authorize_field_errors_name_the_field(world, openapi, unchanged,
                                               field, value, quoted):
    r = world.pos.post("/pos/v1/authorize",
                       authorize_body(world, **{field: value}))
    expect_field(r, openapi, "/pos/v1/authorize", field, quoted)


def test_authorize_amount_request_fields_are_checked_too(world, openapi,
                                                         unchanged):
    body = authorize_body(world, requested_volume_ml=...,
                          requested_amount=-100)
    r = world.pos.post("/pos/v1/authorize", body)
    expect_field(r, openapi, "/pos/v1/authorize", "requested_amount",
                 "-100")


def test_authorize_needs_exactly_one_quantity(world, openapi, unchanged):
    for body in (authorize_body(world, requested_volume_ml=...),
                 authorize_body(world, requested_amount=5_000)):
        r = world.pos.post("/pos/v1/authorize", body)
        openapi(r, "/pos/v1/authorize", "POST")
        err = procs.error_of(r, 422, "validation_failed")
        assert "requested_volume_ml" in err["message"]
        assert "requested_amount" in err["message"]


@pytest.mark.parametrize("pan", ["bad check digit", "short", "letters",
                                 "number"])
def test_bad_card_number_is_422_and_never_echoed(world, openapi, unchanged,
                                                 pan):
    value = {"bad check digit": procs.bad_check_digit(world.card.pan),
             "short": world.card.pan[:15],
             "letters": world.card.pan[:15] + "A",
             "number": int(world.card.pan)}[pan]
    r = world.pos.post("/pos/v1/authorize",
                       authorize_body(world, card_number=value))
    err = expect_field(r, openapi, "/pos/v1/authorize", "card_number")
    assert str(value)[:15] not in err["message"]


@pytest.mark.parametrize("field,value,quoted", [
    ("volume_ml", -1, "-1"),
    ("volume_ml", 0.5, "0.5"),
    ("volume_ml", "10000", '"10000"'),
    ("volume_ml", ..., None),
    ("amount", -50_000, "-50000"),
    ("amount", 500.5, "500.5"),
    ("amount", "50000", '"50000"'),
    ("amount", None, None),
    ("amount", ..., None),
    ("auth_id", "not-a-uuid", "not-a-uuid"),
    ("auth_id", 17, None),
    ("auth_id", ..., None),
    ("terminal_txn_id", ..., None),
    ("terminal_txn_id", "bad/id", "bad/id"),
])
def test_complete_field_errors_name_the_field(world, openapi, unchanged,
                                              field, value, quoted):
    r = world.pos.post("/pos/v1/complete",
                       complete_body(world, **{field: value}))
    expect_field(r, openapi, "/pos/v1/complete", field, quoted)


@pytest.mark.parametrize("field,value,quoted", [
    ("value", -5, "-5"),
    ("value", 1.5, "1.5"),
    ("value", "100000", '"100000"'),
    ("value", True, "true"),
    ("value", ..., None),
    ("kind", ..., None),
    ("kind", "litres", "litres"),
    ("kind", 5, "5"),
    ("period", "fortnight", "fortnight"),
    ("period", ..., None),
    ("scope", ..., None),
    ("scope", "planet", "planet"),
    ("card_id", ..., None),
    ("card_id", -3, "-3"),
    ("card_id", 2.5, "2.5"),
    ("card_id", "abc", "abc"),
    ("name", 7, None),
    ("weekdays", ["mon"], None),
    ("colour", "red", None),
])
def test_limit_field_errors_name_the_field(world, openapi, unchanged,
                                           field, value, quoted):
    r = world.cab.post("/api/v1/limits", limit_body(world, **{field: value}))
    expect_field(r, openapi, "/api/v1/limits", field, quoted)


def test_limit_update_field_error_leaves_the_limit_as_it_was(world,
                                                             openapi,
                                                             redis):
    lid = world.b.limit(world.contract, "volume", scope="card",
                        card_id=world.card.id, period="day", value=100_000)
    world.b.publish()
    before = (procs.query("SELECT * FROM limits WHERE id = %s", (lid,)),
              procs.redis_contract_state(redis, world.contract))
    r = world.cab.put(f"/api/v1/limits/{lid}",
                      limit_body(world, value=-1))
    openapi(r, "/api/v1/limits/{id}", "PUT")
    assert procs.error_of(r, 422, "validation_failed")["message"] \
        .startswith("value:")
    assert (procs.query("SELECT * FROM limits WHERE id = %s", (lid,)),
            procs.redis_contract_state(redis, world.contract)) == before
    procs.query("DELETE FROM limits WHERE id = %s", (lid,))
    procs.fcctl("rebuild", world.contract)
