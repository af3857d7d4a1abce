"""The life of a fill after its authorization: retries, completion,
reversal and refund (POST /pos/v1/complete, /reverse, /refund).

Money and limit usage are read the way a client reads them, through the
cabinet (the contract's `available`, each limit's `usage.used`), and
Redis is checked against PostgreSQL with `fcctl compare`.  The clock is
the real one: no X-FC-Test-Now here.
"""

import types

import pytest

import procs


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.org = b.org(tz="Europe/Moscow")
    w.station = b.station()
    w.term = b.terminal(w.station)
    w.other_station = b.station(region="74")
    w.other_term = b.terminal(w.other_station)
    w.owner = b.user(w.org, "owner")
    b.publish()
    w.pos = procs.Terminal(w.term.key)
    w.other_pos = procs.Terminal(w.other_term.key)
    w.cab = procs.cabinet_for(w.owner)
    yield w
    b.close()


def fresh(world, balance=1_000_000):
    cid = world.b.contract(world.org, balance=balance)
    card = world.b.card(cid)
    world.b.publish()
    return card


def available(world, openapi, contract_id):
    r = world.cab.get(f"/api/v1/contracts/{contract_id}")
    return openapi(r, "/api/v1/contracts/{id}")["available"]


def contract(world, openapi, contract_id):
    r = world.cab.get(f"/api/v1/contracts/{contract_id}")
    assert r.status == 200, r
    return openapi(r, "/api/v1/contracts/{id}")


def used(world, openapi, card_id, limit_id):
    r = world.cab.get(f"/api/v1/cards/{card_id}")
    assert r.status == 200, r
    body = openapi(r, "/api/v1/cards/{id}")
    for lim in body["limits"]:
        if lim["id"] == limit_id:
            return lim["usage"]["used"]
    raise AssertionError(f"limit {limit_id} not on card {card_id}")


def approve(world, openapi, card, volume_ml, price=5_000):
    r = world.pos.authorize(card.pan, volume_ml=volume_ml, price=price)
    body = openapi(r, "/pos/v1/authorize", "POST")
    assert body["status"] == "approved", body
    return body


def test_repeated_authorize_returns_the_same_answer_and_holds_once(
        world, openapi, redis):
    card = fresh(world)
    txn = procs.txn_id()
    r1 = world.pos.authorize(card.pan, volume_ml=20_000, price=5_000,
                             txn=txn)
    first = openapi(r1, "/pos/v1/authorize", "POST")
    r2 = world.pos.authorize(card.pan, volume_ml=20_000, price=5_000,
                             txn=txn)
    second = openapi(r2, "/pos/v1/authorize", "POST")

    assert second == first
    assert second["auth_id"] == first["auth_id"]
    assert procs.scalar("SELECT count(*) FROM pos_auths "
                        "WHERE terminal_id = %s AND terminal_txn_id = %s",
                        (world.term.id, txn)) == 1
    assert procs.redis_ctr(redis, card.contract_id)["holds"] == "100000"
    assert available(world, openapi, card.contract_id) == 900_000


def test_complete_debits_what_was_dispensed_and_releases_the_rest(
        world, openapi, redis):
    card = fresh(world)
    auth = approve(world, openapi, card, 40_000)        # 200000 held
    r = world.pos.complete(auth["auth_id"], 31_234, 156_170)
    body = openapi(r, "/pos/v1/complete", "POST")
    assert r.status == 200
    assert body == {"status": "completed", "auth_id": auth["auth_id"],
                    "volume_ml": 31_234, "amount": 156_170,
                    "released_amount": 43_830}

    c = contract(world, openapi, card.contract_id)
    assert (c["balance"], c["holds"], c["available"]) == (843_830, 0,
                                                          843_830)
    ctr = procs.redis_ctr(redis, card.contract_id)
    assert (ctr["balance"], ctr["holds"]) == ("843830", "0")
    assert not redis.exists(
        f"{{c:{card.contract_id}}}:hold:{auth['auth_id']}")
    assert procs.query("""
        SELECT kind, station_id, product_code, volume_ml, unit_price, amount
          FROM transactions WHERE auth_id = %s""", (auth["auth_id"],)) == [
        ("sale", world.station, "AI-95", 31_234, 5_000, 156_170)]
    procs.fcctl("compare", card.contract_id)


def test_repeated_complete_returns_the_first_answer_and_debits_once(
        world, openapi):
    card = fresh(world)
    auth = approve(world, openapi, card, 10_000)
    txn = procs.txn_id()
    first = world.pos.complete(auth["auth_id"], 10_000, 50_000, txn=txn)
    again = world.pos.complete(auth["auth_id"], 10_000, 50_000, txn=txn)
    assert first.status == again.status == 200
    assert openapi(again, "/pos/v1/complete", "POST") == first.json()
    assert procs.scalar("SELECT count(*) FROM ledger WHERE kind = "
                        "'purchase' AND ref = %s", (auth["auth_id"],)) == 1
    assert available(world, openapi, card.contract_id) == 950_000


def test_complete_above_the_authorized_amount_is_refused(world, openapi,
                                                         redis):
    card = fresh(world)
    auth = approve(world, openapi, card, 40_000)        # 200000 held
    before = procs.redis_ctr(redis, card.contract_id)

    r = world.pos.complete(auth["auth_id"], 40_000, 200_001)
    openapi(r, "/pos/v1/complete", "POST")
    err = procs.error_of(r, 422, "exceeds_authorized")
    assert err["message"].startswith("amount:")

    r = world.pos.complete(auth["auth_id"], 40_001, 200_000)
    openapi(r, "/pos/v1/complete", "POST")
    err = procs.error_of(r, 422, "exceeds_authorized")
    assert err["message"].startswith("volume_ml:")

    # nothing moved: the hold stands, no ledger entry, Redis unchanged
    assert procs.scalar("SELECT state FROM pos_auths WHERE auth_id = %s",
                        (auth["auth_id"],)) == "held"
    assert procs.scalar("SELECT count(*) FROM ledger WHERE contract_id = %s "
                        "AND kind = 'purchase'", (card.contract_id,)) == 0
    assert procs.redis_ctr(redis, card.contract_id) == before
    assert available(world, openapi, card.contract_id) == 800_000

    # the exact authorized amount is fine
    r = world.pos.complete(auth["auth_id"], 40_000, 200_000)
    assert openapi(r, "/pos/v1/complete", "POST")["released_amount"] == 0


def test_reverse_releases_the_hold(world, openapi, redis):
    card = fresh(world)
    auth = approve(world, openapi, card, 30_000)
    assert available(world, openapi, card.contract_id) == 850_000
    r = world.pos.reverse(auth["auth_id"])
    body = openapi(r, "/pos/v1/reverse", "POST")
    assert body == {"status": "reversed", "auth_id": auth["auth_id"],
                    "released_amount": 150_000}
    assert available(world, openapi, card.contract_id) == 1_000_000
    assert procs.redis_ctr(redis, card.contract_id)["holds"] == "0"
    assert procs.scalar("SELECT count(*) FROM ledger WHERE contract_id = %s "
                        "AND kind <> 'opening'", (card.contract_id,)) == 0
    procs.fcctl("compare", card.contract_id)


def test_reverse_after_completion_is_a_conflict(world, openapi, redis):
    card = fresh(world)
    auth = approve(world, openapi, card, 30_000)
    r = world.pos.complete(auth["auth_id"], 30_000, 150_000)
    assert r.status == 200, r
    before = procs.redis_ctr(redis, card.contract_id)

    r = world.pos.reverse(auth["auth_id"])
    openapi(r, "/pos/v1/reverse", "POST")
    procs.error_of(r, 409, "conflict")
    assert procs.scalar("SELECT state FROM pos_auths WHERE auth_id = %s",
                        (auth["auth_id"],)) == "completed"
    assert procs.redis_ctr(redis, card.contract_id) == before
    assert available(world, openapi, card.contract_id) == 850_000


def test_complete_after_reverse_is_a_conflict(world, openapi):
    card = fresh(world)
    auth = approve(world, openapi, card, 10_000)
    assert world.pos.reverse(auth["auth_id"]).status == 200
    r = world.pos.complete(auth["auth_id"], 10_000, 50_000)
    openapi(r, "/pos/v1/complete", "POST")
    procs.error_of(r, 409, "conflict")
    assert available(world, openapi, card.contract_id) == 1_000_000


def test_refund_restores_money_and_limit_usage(world, openapi, redis):
    card = fresh(world)
    amount_limit = world.b.limit(card.contract_id, "amount", scope="card",
                                 card_id=card.id, period="day",
                                 value=500_000)
    volume_limit = world.b.limit(card.contract_id, "volume", scope="card",
                                 card_id=card.id, period="month",
                                 value=400_000)
    count_limit = world.b.limit(card.contract_id, "count", period="week",
                                value=10)
    world.b.publish()

    def readings():
        return (available(world, openapi, card.contract_id),
                used(world, openapi, card.id, amount_limit),
                used(world, openapi, card.id, volume_limit),
                used(world, openapi, card.id, count_limit))

    assert readings() == (1_000_000, 0, 0, 0)

    auth = approve(world, openapi, card, 30_000)        # 150000
    assert readings() == (850_000, 150_000, 30_000, 1)
    r = world.pos.complete(auth["auth_id"], 30_000, 150_000)
    assert r.status == 200, r
    assert readings() == (850_000, 150_000, 30_000, 1)

    r = world.pos.refund(auth["auth_id"], 50_000, 10_000)
    body = openapi(r, "/pos/v1/refund", "POST")
    assert body == {"status": "refunded", "auth_id": auth["auth_id"],
                    "amount": 50_000, "volume_ml": 10_000,
                    "refunded_amount": 50_000, "refunded_volume_ml": 10_000}
    assert readings() == (900_000, 100_000, 20_000, 1)

    r = world.pos.refund(auth["auth_id"], 100_000, 20_000)
    body = openapi(r, "/pos/v1/refund", "POST")
    assert (body["refunded_amount"], body["refunded_volume_ml"]) == (
        150_000, 30_000)
    # the whole amount is back: the fill no longer counts as one
    assert readings() == (1_000_000, 0, 0, 0)

    # Redis says the same as the cabinet
    ctr = procs.redis_ctr(redis, card.contract_id)
    assert (ctr["balance"], ctr["holds"]) == ("1000000", "0")
    procs.fcctl("compare", card.contract_id)

    # the next fill may use the whole limit again
    r = world.pos.authorize(card.pan, amount=600_000, price=5_000)
    body = openapi(r, "/pos/v1/authorize", "POST")
    assert (body["status"], body["approved_amount"],
            body["limit"]["id"]) == ("partial", 500_000, amount_limit)


def test_refund_beyond_what_was_completed_is_refused(world, openapi):
    card = fresh(world)
    auth = approve(world, openapi, card, 10_000)
    assert world.pos.complete(auth["auth_id"], 8_000, 40_000).status == 200
    r = world.pos.refund(auth["auth_id"], 40_001, 0)
    openapi(r, "/pos/v1/refund", "POST")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("amount:")
    r = world.pos.refund(auth["auth_id"], 1_000, 8_001)
    openapi(r, "/pos/v1/refund", "POST")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("volume_ml:")
    assert available(world, openapi, card.contract_id) == 960_000


def test_refund_of_a_held_authorization_is_a_conflict(world, openapi):
    card = fresh(world)
    auth = approve(world, openapi, card, 10_000)
    r = world.pos.refund(auth["auth_id"], 1_000, 0)
    openapi(r, "/pos/v1/refund", "POST")
    procs.error_of(r, 409, "conflict")


def test_another_station_gets_404_for_every_operation(world, openapi):
    card = fresh(world)
    auth = approve(world, openapi, card, 10_000)
    for path, r in (
            ("/pos/v1/complete",
             world.other_pos.complete(auth["auth_id"], 10_000, 50_000)),
            ("/pos/v1/reverse", world.other_pos.reverse(auth["auth_id"])),
            ("/pos/v1/refund",
             world.other_pos.refund(auth["auth_id"], 1_000, 0))):
        openapi(r, path, "POST")
        procs.error_of(r, 404, "not_found")
    assert procs.scalar("SELECT state FROM pos_auths WHERE auth_id = %s",
                        (auth["auth_id"],)) == "held"


def test_unknown_auth_id_is_404(world, openapi):
    r = world.pos.complete("00000000-0000-4000-8000-000000000000", 1, 1)
    openapi(r, "/pos/v1/complete", "POST")
    procs.error_of(r, 404, "not_found")


def test_terminal_txn_id_used_for_another_operation_is_a_conflict(
        world, openapi):
    card = fresh(world)
    a1 = approve(world, openapi, card, 10_000)
    a2 = approve(world, openapi, card, 10_000)
    txn = procs.txn_id()
    assert world.pos.complete(a1["auth_id"], 10_000, 50_000,
                              txn=txn).status == 200
    r = world.pos.complete(a2["auth_id"], 10_000, 50_000, txn=txn)
    openapi(r, "/pos/v1/complete", "POST")
    procs.error_of(r, 409, "conflict")
    assert procs.scalar("SELECT state FROM pos_auths WHERE auth_id = %s",
                        (a2["auth_id"],)) == "held"


def test_completed_fill_shows_in_the_cabinet_transactions(world, openapi):
    card = fresh(world)
    auth = approve(world, openapi, card, 12_345, price=6_789)
    amount = procs.amount_of(12_345, 6_789)
    assert auth["approved_amount"] == amount == 83_810
    assert world.pos.complete(auth["auth_id"], 12_345, amount).status == 200
    r = world.cab.get(f"/api/v1/transactions?card_id={card.id}")
    body = openapi(r, "/api/v1/transactions")
    assert len(body["items"]) == 1
    t = body["items"][0]
    assert {k: t[k] for k in ("kind", "contract_id", "card_id", "card",
                              "station_id", "product_code", "volume_ml",
                              "unit_price", "amount")} == {
        "kind": "sale", "contract_id": card.contract_id,
        "card_id": card.id, "card": card.masked,
        "station_id": world.station, "product_code": "AI-95",
        "volume_ml": 12_345, "unit_price": 6_789, "amount": 83_810}
    assert t["at"].endswith("+03:00")
