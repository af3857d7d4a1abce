"""Organizations never see each other, and a driver sees only their own
cards.

Two organizations, A and B, each with a contract, a group, cards, a
limit and a completed fill.  A user of A asking for any card, contract,
limit, group or transaction of B gets the same 404 as for an id that
does not exist (B's objects are not revealed), in the cabinet and in the
mobile API; an id of B inside a request body is a 422 naming the field.
Nothing of B changes.  A's driver sees the one card assigned to them.
"""

import types

import pytest

import procs

NO_SUCH_ID = 9_000_000_001


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.station = b.station()
    w.term = b.terminal(w.station)

    w.a = b.org()
    w.a_owner = b.user(w.a, "owner")
    w.a_driver = b.user(w.a, "driver")
    w.a_contract = b.contract(w.a, balance=1_000_000)
    w.a_other_contract = b.contract(w.a, balance=1_000_000)
    w.a_group = b.group(w.a_contract)
    w.a_driver_card = b.card(w.a_contract, driver_user_id=w.a_driver.id)
    w.a_card = b.card(w.a_contract, group_id=w.a_group)
    w.a_other_card = b.card(w.a_other_contract)
    w.a_limit = b.limit(w.a_contract, "amount", period="day", value=500_000)

    w.b = b.org()
    w.b_owner = b.user(w.b, "owner")
    w.b_contract = b.contract(w.b, balance=1_000_000)
    w.b_group = b.group(w.b_contract)
    w.b_card = b.card(w.b_contract, group_id=w.b_group)
    w.b_limit = b.limit(w.b_contract, "volume", scope="card",
                        card_id=w.b_card.id, period="day", value=100_000)
    b.publish()

    pos = procs.Terminal(w.term.key)
    for card in (w.a_driver_card, w.a_card, w.b_card):
        a = procs.decision(pos.authorize(card.pan, volume_ml=10_000,
                                         price=5_000))
        assert pos.complete(a["auth_id"], 10_000, 50_000).status == 200

    w.cab = procs.cabinet_for(w.a_owner)
    w.driver_cab = procs.cabinet_for(w.a_driver)
    w.app = procs.mobile_for(w.a_owner)
    w.driver_app = procs.mobile_for(w.a_driver)
    yield w
    b.close()


def b_state(world):
    """Everything of B that a request of A could have changed."""
    return (procs.query("SELECT id, status, group_id, driver_name, "
                        "allowed_fuel FROM cards WHERE contract_id = %s "
                        "ORDER BY id", (world.b_contract,)),
            procs.query("SELECT id, kind, value, scope, card_id FROM limits "
                        "WHERE contract_id = %s ORDER BY id",
                        (world.b_contract,)),
            procs.query("SELECT id, name FROM card_groups "
                        "WHERE contract_id = %s ORDER BY id",
                        (world.b_contract,)))


def limit_body(world):
    return {"scope": "contract", "contract_id": world.a_contract,
            "kind": "amount", "period": "day", "value": 1_000}


# (method, path template, template, body) of every route that takes an
# id of B in its path or query
CABINET_PROBES = [
    ("GET", "/api/v1/cards/{id}", "/api/v1/cards/{card}", None),
    ("PATCH", "/api/v1/cards/{id}", "/api/v1/cards/{card}",
     {"driver_name": "Intruder"}),
    ("POST", "/api/v1/cards/{id}/block", "/api/v1/cards/{card}/block", None),
    ("POST", "/api/v1/cards/{id}/unblock", "/api/v1/cards/{card}/unblock",
     None),
    ("GET", "/api/v1/contracts/{id}", "/api/v1/contracts/{contract}", None),
    ("GET", "/api/v1/contracts/{id}/statement",
     "/api/v1/contracts/{contract}/statement", None),
    ("PUT", "/api/v1/limits/{id}", "/api/v1/limits/{limit}", "limit"),
    ("DELETE", "/api/v1/limits/{id}", "/api/v1/limits/{limit}", None),
    ("GET", "/api/v1/limits", "/api/v1/limits?card_id={card}", None),
    ("GET", "/api/v1/limits", "/api/v1/limits?group_id={group}", None),
    ("GET", "/api/v1/limits", "/api/v1/limits?contract_id={contract}",
     None),
    ("GET", "/api/v1/card-groups", "/api/v1/card-groups?contract_id="
     "{contract}", None),
    ("GET", "/api/v1/transactions", "/api/v1/transactions?card_id={card}",
     None),
    ("GET", "/api/v1/transactions",
     "/api/v1/transactions?contract_id={contract}", None),
]


@pytest.mark.parametrize("method,path,template,body", CABINET_PROBES,
                         ids=[f"{p[0]} {p[2]}" for p in CABINET_PROBES])
def test_cabinet_answers_404_for_objects_of_another_organization(
        world, openapi, method, path, template, body):
    before = b_state(world)
    if body == "limit":
        body = limit_body(world)
    theirs = template.format(card=world.b_card.id, contract=world.b_contract,
                             limit=world.b_limit, group=world.b_group)
    missing = template.format(card=NO_SUCH_ID, contract=NO_SUCH_ID,
                              limit=NO_SUCH_ID, group=NO_SUCH_ID)

    r = world.cab.request(method, theirs, body=body)
    openapi(r, path, method)
    err = procs.error_of(r, 404, "not_found")
    r = world.cab.request(method, missing, body=body)
    err_missing = procs.error_of(r, 404, "not_found", path, method)

    # the same answer as for nothing at all, but for the id itself
    their_id = {"{card}": world.b_card.id, "{contract}": world.b_contract,
                "{limit}": world.b_limit, "{group}": world.b_group}
    [placeholder] = [k for k in their_id if k in template]
    assert err["message"].replace(str(their_id[placeholder]), "<id>") == \
        err_missing["message"].replace(str(NO_SUCH_ID), "<id>")
    assert b_state(world) == before


def test_cabinet_lists_show_nothing_of_another_organization(world,
                                                            openapi):
    cards = openapi(world.cab.get("/api/v1/cards"), "/api/v1/cards")
    assert sorted(c["id"] for c in cards["items"]) == sorted(
        [world.a_driver_card.id, world.a_card.id, world.a_other_card.id])
    contracts = openapi(world.cab.get("/api/v1/contracts"),
                        "/api/v1/contracts")
    assert sorted(c["id"] for c in contracts["items"]) == sorted(
        [world.a_contract, world.a_other_contract])
    limits = openapi(world.cab.get("/api/v1/limits"), "/api/v1/limits")
    assert [lim["id"] for lim in limits["items"]] == [world.a_limit]
    groups = openapi(world.cab.get("/api/v1/card-groups"),
                     "/api/v1/card-groups")
    assert [g["id"] for g in groups["items"]] == [world.a_group]
    txns = openapi(world.cab.get("/api/v1/transactions"),
                   "/api/v1/transactions")
    assert sorted(t["card_id"] for t in txns["items"]) == sorted(
        [world.a_driver_card.id, world.a_card.id])


@pytest.mark.parametrize("what", ["block", "unblock"])
def test_bulk_block_with_a_card_of_another_organization_changes_nothing(
        world, openapi, what):
    before = b_state(world)
    mine = procs.scalar("SELECT status FROM cards WHERE id = %s",
                        (world.a_card.id,))
    r = world.cab.post(f"/api/v1/cards/{what}",
                       {"card_ids": [world.a_card.id, world.b_card.id]})
    openapi(r, f"/api/v1/cards/{what}", "POST")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("card_ids[1]:")
    assert b_state(world) == before
    assert procs.scalar("SELECT status FROM cards WHERE id = %s",
                        (world.a_card.id,)) == mine


@pytest.mark.parametrize("field", ["contract_id", "card_id", "group_id"])
def test_limit_on_an_object_of_another_organization_is_refused(
        world, openapi, field):
    before = b_state(world)
    scope = {"contract_id": "contract", "card_id": "card",
             "group_id": "group"}[field]
    value = {"contract_id": world.b_contract, "card_id": world.b_card.id,
             "group_id": world.b_group}[field]
    r = world.cab.post("/api/v1/limits", {"scope": scope, field: value,
                                          "kind": "volume", "period": "day",
                                          "value": 1})
    openapi(r, "/api/v1/limits", "POST")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith(f"{field}:")
    assert b_state(world) == before


def test_group_of_another_organization_cannot_be_created_or_assigned(
        world, openapi):
    before = b_state(world)
    r = world.cab.post("/api/v1/card-groups",
                       {"contract_id": world.b_contract, "name": "mine"})
    openapi(r, "/api/v1/card-groups", "POST")
    assert procs.error_of(r, 422, "validation_failed")["message"] \
        .startswith("contract_id:")
    r = world.cab.patch(f"/api/v1/cards/{world.a_card.id}",
                        {"group_id": world.b_group})
    openapi(r, "/api/v1/cards/{id}", "PATCH")
    assert procs.error_of(r, 422, "validation_failed")["message"] \
        .startswith("group_id:")
    assert b_state(world) == before


def test_mobile_shows_and_blocks_nothing_of_another_organization(
        world, openapi):
    before = b_state(world)
    cards = openapi(world.app.get("/mobile/v1/cards"), "/mobile/v1/cards")
    assert sorted(c["id"] for c in cards["items"]) == sorted(
        [world.a_driver_card.id, world.a_card.id, world.a_other_card.id])
    for what in ("block", "unblock"):
        r = world.app.post(f"/mobile/v1/cards/{world.b_card.id}/{what}")
        openapi(r, f"/mobile/v1/cards/{{id}}/{what}", "POST")
        procs.error_of(r, 404, "not_found")
    assert b_state(world) == before


def test_driver_sees_only_their_own_card(world, openapi):
    mine = world.a_driver_card
    cards = openapi(world.driver_cab.get("/api/v1/cards"), "/api/v1/cards")
    assert [c["id"] for c in cards["items"]] == [mine.id]
    assert cards["items"][0]["number"] == mine.masked

    app = openapi(world.driver_app.get("/mobile/v1/cards"),
                  "/mobile/v1/cards")
    assert [c["id"] for c in app["items"]] == [mine.id]
    assert app["items"][0]["contract"]["id"] == world.a_contract

    txns = openapi(world.driver_cab.get("/api/v1/transactions"),
                   "/api/v1/transactions")
    assert [t["card_id"] for t in txns["items"]] == [mine.id]

    contracts = openapi(world.driver_cab.get("/api/v1/contracts"),
                        "/api/v1/contracts")
    assert [c["id"] for c in contracts["items"]] == [world.a_contract]


@pytest.mark.parametrize("method,path,template", [
    ("GET", "/api/v1/cards/{id}", "/api/v1/cards/{card}"),
    ("POST", "/api/v1/cards/{id}/block", "/api/v1/cards/{card}/block"),
    ("GET", "/api/v1/transactions", "/api/v1/transactions?card_id={card}"),
    ("GET", "/api/v1/contracts/{id}", "/api/v1/contracts/{contract}"),
])
def test_driver_gets_404_for_the_other_cards_of_their_organization(
        world, openapi, method, path, template):
    r = world.driver_cab.request(method, template.format(
        card=world.a_card.id, contract=world.a_other_contract))
    openapi(r, path, method)
    procs.error_of(r, 404, "not_found")
    assert procs.scalar("SELECT status FROM cards WHERE id = %s",
                        (world.a_card.id,)) == "active"


def test_driver_gets_404_blocking_another_card_in_the_app(world, openapi):
    r = world.driver_app.post(f"/mobile/v1/cards/{world.a_card.id}/block")
    openapi(r, "/mobile/v1/cards/{id}/block", "POST")
    procs.error_of(r, 404, "not_found")
    assert procs.scalar("SELECT status FROM cards WHERE id = %s",
                        (world.a_card.id,)) == "active"
