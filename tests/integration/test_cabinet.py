"""The web cabinet: sessions, CSRF, the login lock, roles, and what the
cabinet changes reaching the pump at once (write-through to Redis).

The module's organization (Europe/Moscow) has one user of each role, a
contract with a group of three cards, a card of the driver and a lost
card; tests that change cards make cards of their own.
"""

import datetime
import json
import time
import types
import zoneinfo

import pytest

import procs

MSK = zoneinfo.ZoneInfo("Europe/Moscow")


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.org = b.org(tz="Europe/Moscow", name="Cabinet test fleet")
    w.owner = b.user(w.org, "owner", name="Olga Owner")
    w.manager = b.user(w.org, "manager")
    w.accountant = b.user(w.org, "accountant")
    w.driver = b.user(w.org, "driver")
    w.wrong_password_user = b.user(w.org, "manager")
    w.locked_user = b.user(w.org, "manager")
    w.contract = b.contract(w.org, balance=5_000_000)
    w.group = b.group(w.contract, "Trucks")
    w.trucks = [
        b.card(w.contract, group_id=w.group, driver_name="Ivanov Petr",
               plate="A123BC66"),
        b.card(w.contract, group_id=w.group, driver_name="Smirnova Anna",
               plate="K777OO66"),
        b.card(w.contract, group_id=w.group, status="blocked",
               driver_name="Kuznetsov Oleg", plate="M001MM96"),
    ]
    w.driver_card = b.card(w.contract, driver_user_id=w.driver.id,
                           driver_name="Driver Dmitry")
    w.lost = b.card(w.contract, status="lost")
    w.station = b.station()
    w.term = b.terminal(w.station)
    b.publish()
    w.pos = procs.Terminal(w.term.key)
    w.cab = procs.cabinet_for(w.owner)
    yield w
    b.close()


def new_card(world, **kw):
    card = world.b.card(world.contract, **kw)
    world.b.publish()
    return card


def card_status(card):
    return procs.scalar("SELECT status FROM cards WHERE id = %s",
                        (card.id,))


def pump(world, card, volume_ml=1_000, product="AI-95", price=5_000):
    r = world.pos.authorize(card.pan, volume_ml=volume_ml, product=product,
                            price=price)
    return procs.decision(r)


# ---------------------------------------------------------------------
# sessions

def test_login_returns_the_user_a_csrf_token_and_a_strict_cookie(
        world, openapi):
    cab = procs.Cabinet()
    r = cab.login(world.owner.email, world.owner.password)
    body = openapi(r, "/api/v1/session", "POST")
    assert r.status == 200
    assert body["user"] == {"id": world.owner.id, "email": world.owner.email,
                            "name": "Olga Owner", "role": "owner",
                            "org_id": world.org}
    assert len(body["csrf_token"]) >= 32
    cookie = [p.strip() for p in r.headers["set-cookie"].split(";")]
    assert cookie[0].startswith("fc_session=") and len(cookie[0]) > 40
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie


def test_me_returns_the_user_and_the_organization(world, openapi):
    body = openapi(world.cab.get("/api/v1/me"), "/api/v1/me")
    assert body["id"] == world.owner.id
    assert body["role"] == "owner"
    assert body["organization"]["id"] == world.org
    assert body["organization"]["name"] == "Cabinet test fleet"
    assert body["organization"]["timezone"] == "Europe/Moscow"


def test_wrong_password_is_401_invalid_credentials(world, openapi):
    r = procs.Cabinet().login(world.wrong_password_user.email, "not it")
    openapi(r, "/api/v1/session", "POST")
    err = procs.error_of(r, 401, "invalid_credentials")
    assert "set-cookie" not in r.headers

    # an unknown e-mail gets the very same answer
    r2 = procs.Cabinet().login(f"nobody-{procs.tag()}@test.example",
                               "not it")
    assert procs.error_of(r2, 401, "invalid_credentials",
                          "/api/v1/session", "POST") == err

    # and the right password still works (and resets the count)
    r = procs.Cabinet().login(world.wrong_password_user.email,
                              world.wrong_password_user.password)
    assert r.status == 200, r


def test_ten_failed_logins_lock_the_account_with_retry_after(world,
                                                             openapi):
    user = world.locked_user
    cab = procs.Cabinet()
    took = []
    for _ in range(10):
        start = time.monotonic()
        r = cab.login(user.email, "wrong password")
        took.append(time.monotonic() - start)
        openapi(r, "/api/v1/session", "POST")
        procs.error_of(r, 401, "invalid_credentials")

    # no delay for the first five failures, then one second more each
    assert all(t < 1.0 for t in took[:5]), took
    for extra, t in enumerate(took[5:], start=1):
        assert extra <= t < extra + 1.5, took

    # locked: even the right password is refused for 15 minutes
    r = cab.login(user.email, user.password)
    openapi(r, "/api/v1/session", "POST")
    procs.error_of(r, 429, "account_locked")
    assert 890 <= int(r.headers["retry-after"]) <= 900
    assert "set-cookie" not in r.headers
    assert procs.scalar("SELECT failed_logins FROM users WHERE id = %s",
                        (user.id,)) == 10


def test_requests_without_a_session_are_401(world, client):
    for path, template in (
            ("/api/v1/me", "/api/v1/me"),
            ("/api/v1/cards", "/api/v1/cards"),
            ("/api/v1/contracts", "/api/v1/contracts"),
            (f"/api/v1/cards/{world.driver_card.id}", "/api/v1/cards/{id}")):
        r = client.get(path)
        procs.error_of(r, 401, "unauthorized", template)


def test_logout_ends_the_session(world, openapi):
    cab = procs.cabinet_for(world.manager)
    assert cab.get("/api/v1/me").status == 200
    r = cab.delete("/api/v1/session")
    assert openapi(r, "/api/v1/session", "DELETE") == {
        "status": "logged_out"}
    assert "Max-Age=0" in r.headers["set-cookie"]
    r = cab.get("/api/v1/me")
    procs.error_of(r, 401, "unauthorized", "/api/v1/me")


# ---------------------------------------------------------------------
# CSRF

def test_block_without_csrf_token_is_403_and_changes_nothing(world,
                                                             openapi):
    card = new_card(world)
    r = world.cab.post(f"/api/v1/cards/{card.id}/block", csrf=False)
    openapi(r, "/api/v1/cards/{id}/block", "POST")
    procs.error_of(r, 403, "forbidden")
    assert card_status(card) == "active"
    assert pump(world, card)["status"] == "approved"


def test_wrong_csrf_token_is_403(world, openapi):
    card = new_card(world)
    r = world.cab.post(f"/api/v1/cards/{card.id}/block", csrf=False,
                       headers={"X-CSRF-Token": "0" * 64})
    openapi(r, "/api/v1/cards/{id}/block", "POST")
    procs.error_of(r, 403, "forbidden")
    assert card_status(card) == "active"


def test_csrf_token_of_another_session_is_403(world, openapi):
    card = new_card(world)
    other = procs.cabinet_for(world.owner)
    r = world.cab.post(f"/api/v1/cards/{card.id}/block", csrf=False,
                       headers={"X-CSRF-Token": other.csrf})
    procs.error_of(r, 403, "forbidden", "/api/v1/cards/{id}/block", "POST")
    assert card_status(card) == "active"


def test_every_state_change_needs_the_csrf_token(world, openapi):
    card = new_card(world)
    lid = world.b.limit(world.contract, "amount", scope="card",
                        card_id=card.id, period="day", value=100_000)
    limit_body = {"scope": "card", "card_id": card.id, "kind": "amount",
                  "period": "day", "value": 1}
    before = (procs.query("SELECT * FROM limits WHERE contract_id = %s "
                          "ORDER BY id", (world.contract,)),
              procs.query("SELECT * FROM cards WHERE id = %s", (card.id,)),
              procs.query("SELECT * FROM card_groups WHERE contract_id = %s "
                          "ORDER BY id", (world.contract,)))
    for method, path, template, body in (
            ("PATCH", f"/api/v1/cards/{card.id}", "/api/v1/cards/{id}",
             {"driver_name": "x"}),
            ("POST", "/api/v1/cards/block", "/api/v1/cards/block",
             {"card_ids": [card.id]}),
            ("POST", "/api/v1/limits", "/api/v1/limits", limit_body),
            ("PUT", f"/api/v1/limits/{lid}", "/api/v1/limits/{id}",
             limit_body),
            ("DELETE", f"/api/v1/limits/{lid}", "/api/v1/limits/{id}",
             None),
            ("POST", "/api/v1/card-groups", "/api/v1/card-groups",
             {"contract_id": world.contract, "name": "csrf"}),
            ("DELETE", "/api/v1/session", "/api/v1/session", None)):
        r = world.cab.request(method, path, body=body, csrf=False)
        openapi(r, template, method)
        procs.error_of(r, 403, "forbidden")
    after = (procs.query("SELECT * FROM limits WHERE contract_id = %s "
                         "ORDER BY id", (world.contract,)),
             procs.query("SELECT * FROM cards WHERE id = %s", (card.id,)),
             procs.query("SELECT * FROM card_groups WHERE contract_id = %s "
                         "ORDER BY id", (world.contract,)))
    assert after == before
    assert world.cab.get("/api/v1/me").status == 200


# ---------------------------------------------------------------------
# contracts

def test_contract_shows_balance_holds_and_available(world, openapi):
    cid = world.b.contract(world.org, balance=300_000, credit=50_000,
                           low_balance=200_000)
    card = world.b.card(cid)
    world.b.publish()
    auth = pump(world, card, volume_ml=30_000)          # 150000 held
    r = world.cab.get(f"/api/v1/contracts/{cid}")
    body = openapi(r, "/api/v1/contracts/{id}")
    assert {k: v for k, v in body.items() if k != "number"} == {
        "id": cid, "status": "active", "balance": 300_000,
        "credit_limit": 50_000, "holds": 150_000, "available": 200_000,
        "low_balance": 200_000, "low_balance_reached": False}
    assert world.pos.complete(auth["auth_id"], 30_000,
                              150_000).status == 200
    body = openapi(world.cab.get(f"/api/v1/contracts/{cid}"),
                   "/api/v1/contracts/{id}")
    assert (body["balance"], body["holds"], body["available"]) == (
        150_000, 0, 200_000)

    pump(world, card, volume_ml=200)                    # 1000 held
    body = openapi(world.cab.get(f"/api/v1/contracts/{cid}"),
                   "/api/v1/contracts/{id}")
    assert (body["available"], body["low_balance_reached"]) == (199_000,
                                                               True)


def test_statement_lists_the_days_entries_with_running_balances(world,
                                                                openapi):
    cid = world.b.contract(world.org, balance=500_000)
    card = world.b.card(cid)
    world.b.publish()
    auth = pump(world, card, volume_ml=10_000)
    assert world.pos.complete(auth["auth_id"], 10_000, 50_000).status == 200
    today = datetime.datetime.now(MSK).date().isoformat()

    r = world.cab.get(f"/api/v1/contracts/{cid}/statement"
                      f"?from={today}&to={today}")
    body = openapi(r, "/api/v1/contracts/{id}/statement")
    assert (body["contract_id"], body["from"], body["to"],
            body["opening_balance"], body["closing_balance"]) == (
        cid, today, today, 0, 450_000)
    assert [(e["kind"], e["amount"], e["balance_after"])
            for e in body["entries"]] == [("opening", 500_000, 500_000),
                                          ("purchase", -50_000, 450_000)]
    assert body["entries"][1]["ref"] == auth["auth_id"]
    assert all(e["at"].startswith(today) and e["at"].endswith("+03:00")
               for e in body["entries"])


def test_statement_with_to_before_from_is_422(world, openapi):
    r = world.cab.get(f"/api/v1/contracts/{world.contract}/statement"
                      f"?from=2026-12-02&to=2026-12-01")
    openapi(r, "/api/v1/contracts/{id}/statement")
    assert procs.error_of(r, 422, "validation_failed")["message"] \
        .startswith("to:")


# ---------------------------------------------------------------------
# cards

def test_cards_are_paged_by_id_with_a_cursor(world, openapi):
    ids = sorted(c.id for c in world.trucks)
    r = world.cab.get(f"/api/v1/cards?group_id={world.group}&limit=2")
    page1 = openapi(r, "/api/v1/cards")
    assert [c["id"] for c in page1["items"]] == ids[:2]
    assert page1["next_cursor"]
    r = world.cab.get(f"/api/v1/cards?group_id={world.group}&limit=2"
                      f"&cursor={page1['next_cursor']}")
    page2 = openapi(r, "/api/v1/cards")
    assert [c["id"] for c in page2["items"]] == ids[2:]
    assert page2["next_cursor"] is None


@pytest.mark.parametrize("query,which", [
    ("driver=IVANOV", [0]),
    ("plate=777oo", [1]),
    ("status=blocked", [2]),
    ("q=smirnova", [1]),
])
def test_cards_filter_by_driver_plate_status_and_text(world, openapi,
                                                      query, which):
    r = world.cab.get(f"/api/v1/cards?group_id={world.group}&{query}")
    body = openapi(r, "/api/v1/cards")
    assert [c["id"] for c in body["items"]] == [world.trucks[i].id
                                                for i in which]


def test_cards_filter_by_the_last_digits_of_the_number(world, openapi):
    truck = world.trucks[1]
    r = world.cab.get(f"/api/v1/cards?q={truck.pan[-4:]}")
    body = openapi(r, "/api/v1/cards")
    expected = [row[0] for row in procs.query("""
        SELECT c.id FROM cards c JOIN contracts k ON k.id = c.contract_id
         WHERE k.org_id = %s AND right(c.pan_masked, 4) = %s
         ORDER BY c.id""", (world.org, truck.pan[-4:]))]
    assert truck.id in expected
    assert [c["id"] for c in body["items"]] == expected


def test_card_shows_masked_number_and_every_limit_that_applies(world,
                                                               openapi):
    card = world.trucks[0]
    ctr = world.b.limit(world.contract, "amount", period="month",
                        value=10_000_000)
    grp = world.b.limit(world.contract, "volume", scope="group",
                        group_id=world.group, period="week", value=500_000)
    own = world.b.limit(world.contract, "count", scope="card",
                        card_id=card.id, period="day", value=5)
    other = world.b.limit(world.contract, "count", scope="card",
                          card_id=world.trucks[1].id, period="day", value=5)
    world.b.publish()
    try:
        body = openapi(world.cab.get(f"/api/v1/cards/{card.id}"),
                       "/api/v1/cards/{id}")
        assert body["number"] == card.masked
        assert card.pan not in json.dumps(body)
        assert (body["group_id"], body["driver_name"],
                body["vehicle_plate"]) == (world.group, "Ivanov Petr",
                                           "A123BC66")
        mine = [lim["id"] for lim in body["limits"]]
        assert [i for i in mine if i in (ctr, grp, own, other)] == [
            ctr, grp, own]
        by_id = {lim["id"]: lim for lim in body["limits"]}
        today = datetime.datetime.now(MSK).date().isoformat()
        assert by_id[own]["name"] == "card 5 txn/day"
        assert by_id[own]["usage"]["period_key"] == today
        assert by_id[grp]["name"] == "group 500 L/week"
        assert by_id[ctr]["name"] == "contract 100000 RUB/month"
    finally:
        procs.query("DELETE FROM limits WHERE id IN (%s, %s, %s, %s)",
                    (ctr, grp, own, other))
        procs.fcctl("rebuild", world.contract)


def test_patch_changes_the_card_and_the_pump_follows(world, openapi):
    group = world.b.group(world.contract)
    card = new_card(world)
    r = world.cab.patch(f"/api/v1/cards/{card.id}", {
        "driver_name": "Petrov Pavel", "vehicle_plate": "B456CD66",
        "tank_capacity_ml": 400_000, "allowed_fuel": ["AI-95"],
        "group_id": group})
    body = openapi(r, "/api/v1/cards/{id}", "PATCH")
    assert {k: body[k] for k in ("driver_name", "vehicle_plate",
                                 "tank_capacity_ml", "allowed_fuel",
                                 "group_id", "status")} == {
        "driver_name": "Petrov Pavel", "vehicle_plate": "B456CD66",
        "tank_capacity_ml": 400_000, "allowed_fuel": ["AI-95"],
        "group_id": group, "status": "active"}
    assert pump(world, card, product="DT", price=7_000)["decline_code"] == \
        "PRODUCT_NOT_ALLOWED"
    assert pump(world, card)["status"] == "approved"

    # null clears a field
    r = world.cab.patch(f"/api/v1/cards/{card.id}",
                        {"allowed_fuel": None, "group_id": None})
    body = openapi(r, "/api/v1/cards/{id}", "PATCH")
    assert (body["allowed_fuel"], body["group_id"]) == ([], None)
    assert pump(world, card, product="DT", price=7_000)["status"] == \
        "approved"


def test_block_and_unblock_reach_the_pump_at_once(world, openapi):
    card = new_card(world)
    r = world.cab.post(f"/api/v1/cards/{card.id}/block")
    assert openapi(r, "/api/v1/cards/{id}/block", "POST")["status"] == \
        "blocked"
    assert pump(world, card)["decline_code"] == "CARD_BLOCKED"
    r = world.cab.post(f"/api/v1/cards/{card.id}/unblock")
    assert openapi(r, "/api/v1/cards/{id}/unblock", "POST")["status"] == \
        "active"
    assert pump(world, card)["status"] == "approved"


def test_lost_card_cannot_be_unblocked(world, openapi):
    r = world.cab.post(f"/api/v1/cards/{world.lost.id}/unblock")
    openapi(r, "/api/v1/cards/{id}/unblock", "POST")
    procs.error_of(r, 409, "conflict")
    assert card_status(world.lost) == "lost"


def test_bulk_unblock_is_all_or_nothing(world, openapi):
    blocked = new_card(world, status="blocked")
    r = world.cab.post("/api/v1/cards/unblock",
                       {"card_ids": [blocked.id, world.lost.id]})
    openapi(r, "/api/v1/cards/unblock", "POST")
    procs.error_of(r, 409, "conflict")
    assert card_status(blocked) == "blocked"
    assert pump(world, blocked)["decline_code"] == "CARD_BLOCKED"


def test_bulk_block_blocks_every_card(world, openapi):
    cards = [new_card(world) for _ in range(3)]
    r = world.cab.post("/api/v1/cards/block",
                       {"card_ids": [c.id for c in cards]})
    body = openapi(r, "/api/v1/cards/block", "POST")
    assert [(c["id"], c["status"]) for c in body["items"]] == [
        (c.id, "blocked") for c in cards]
    for c in cards:
        assert pump(world, c)["decline_code"] == "CARD_BLOCKED"


# ---------------------------------------------------------------------
# groups and limits

def test_group_is_created_once_per_name(world, openapi):
    name = f"Vans {procs.tag()}"
    r = world.cab.post("/api/v1/card-groups",
                       {"contract_id": world.contract, "name": name})
    body = openapi(r, "/api/v1/card-groups", "POST")
    assert r.status == 201
    assert (body["contract_id"], body["name"], body["card_count"]) == (
        world.contract, name, 0)
    r = world.cab.post("/api/v1/card-groups",
                       {"contract_id": world.contract, "name": name})
    openapi(r, "/api/v1/card-groups", "POST")
    procs.error_of(r, 409, "conflict")
    listed = openapi(world.cab.get(f"/api/v1/card-groups?contract_id="
                                   f"{world.contract}"),
                     "/api/v1/card-groups")
    assert {(g["id"], g["card_count"]) for g in listed["items"]} >= {
        (body["id"], 0), (world.group, 3)}


def test_limit_created_updated_and_deleted_reaches_the_pump(world, openapi,
                                                            redis):
    card = new_card(world)
    r = world.cab.post("/api/v1/limits", {
        "scope": "card", "card_id": card.id, "kind": "volume",
        "period": "day", "value": 20_000})
    body = openapi(r, "/api/v1/limits", "POST")
    assert r.status == 201
    lid = body["id"]
    today = datetime.datetime.now(MSK).date().isoformat()
    assert {k: body[k] for k in ("name", "scope", "contract_id", "card_id",
                                 "kind", "period", "value",
                                 "product_scope")} == {
        "name": "card 20 L/day", "scope": "card",
        "contract_id": world.contract, "card_id": card.id, "kind": "volume",
        "period": "day", "value": 20_000, "product_scope": "all"}
    assert (body["usage"]["period_key"], body["usage"]["used"],
            body["usage"]["remaining"]) == (today, 0, 20_000)

    hot = redis.hget(f"{{c:{world.contract}}}:lim:card:{card.id}", str(lid))
    assert json.loads(hot)["value"] == 20_000

    a = pump(world, card, volume_ml=30_000)
    assert (a["status"], a["approved_volume_ml"], a["limit"]["id"]) == (
        "partial", 20_000, lid)

    r = world.cab.put(f"/api/v1/limits/{lid}", {
        "scope": "card", "card_id": card.id, "kind": "volume",
        "period": "day", "value": 25_000, "name": "daily tank"})
    body = openapi(r, "/api/v1/limits/{id}", "PUT")
    assert (body["id"], body["name"], body["value"], body["usage"]["used"],
            body["usage"]["remaining"]) == (lid, "daily tank", 25_000,
                                            20_000, 5_000)
    a = pump(world, card, volume_ml=10_000)
    assert (a["status"], a["approved_volume_ml"], a["limit"]) == (
        "partial", 5_000, {"id": lid, "name": "daily tank"})

    r = world.cab.delete(f"/api/v1/limits/{lid}")
    assert openapi(r, "/api/v1/limits/{id}", "DELETE") == {
        "status": "deleted", "id": lid}
    assert not redis.exists(f"{{c:{world.contract}}}:lim:card:{card.id}")
    assert pump(world, card, volume_ml=10_000)["status"] == "approved"
    r = world.cab.delete(f"/api/v1/limits/{lid}")
    procs.error_of(r, 404, "not_found", "/api/v1/limits/{id}", "DELETE")


def test_time_limit_reads_back_weekdays_and_hours(world, openapi):
    card = new_card(world)
    r = world.cab.post("/api/v1/limits", {
        "scope": "card", "card_id": card.id, "kind": "time",
        "weekdays": ["mon", "tue", "wed", "thu", "fri"],
        "time_from": "07:00", "time_to": "18:00"})
    body = openapi(r, "/api/v1/limits", "POST")
    assert (body["weekdays"], body["time_from"], body["time_to"],
            body["usage"], body["period"], body["value"], body["name"]) == (
        ["mon", "tue", "wed", "thu", "fri"], "07:00", "18:00", None, None,
        None, "card hours 07:00-18:00")


# ---------------------------------------------------------------------
# roles

def test_accountant_reads_and_may_not_manage(world, openapi):
    cab = procs.cabinet_for(world.accountant)
    r = cab.get(f"/api/v1/contracts/{world.contract}/statement")
    openapi(r, "/api/v1/contracts/{id}/statement")
    assert r.status == 200
    assert cab.get("/api/v1/limits").status == 200
    card = new_card(world)
    for method, path, template, body in (
            ("POST", "/api/v1/limits", "/api/v1/limits",
             {"scope": "card", "card_id": card.id, "kind": "count",
              "period": "day", "value": 1}),
            ("POST", f"/api/v1/cards/{card.id}/block",
             "/api/v1/cards/{id}/block", None),
            ("PATCH", f"/api/v1/cards/{card.id}", "/api/v1/cards/{id}",
             {"driver_name": "x"})):
        r = cab.request(method, path, body=body)
        openapi(r, template, method)
        procs.error_of(r, 403, "forbidden")
    assert card_status(card) == "active"


def test_driver_may_block_but_not_unblock_their_card(world, openapi):
    card = new_card(world, driver_user_id=world.driver.id)
    cab = procs.cabinet_for(world.driver)
    r = cab.post(f"/api/v1/cards/{card.id}/block")
    assert openapi(r, "/api/v1/cards/{id}/block", "POST")["status"] == \
        "blocked"
    r = cab.post(f"/api/v1/cards/{card.id}/unblock")
    openapi(r, "/api/v1/cards/{id}/unblock", "POST")
    procs.error_of(r, 403, "forbidden")
    assert card_status(card) == "blocked"
    r = cab.get(f"/api/v1/contracts/{world.contract}/statement")
    procs.error_of(r, 403, "forbidden", "/api/v1/contracts/{id}/statement")


def test_manager_manages_limits_and_groups(world, openapi):
    cab = procs.cabinet_for(world.manager)
    card = new_card(world)
    r = cab.post("/api/v1/limits", {"scope": "card", "card_id": card.id,
                                    "kind": "count", "period": "day",
                                    "value": 3})
    assert openapi(r, "/api/v1/limits", "POST")["name"] == "card 3 txn/day"
    r = cab.post("/api/v1/card-groups", {"contract_id": world.contract,
                                         "name": f"M {procs.tag()}"})
    assert r.status == 201, r
