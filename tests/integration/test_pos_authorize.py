"""POST /pos/v1/authorize: the decision at the pump.

The module makes its own organization (Europe/Moscow), a station in
region 66 of the own network with a terminal, and for each test the
contract and cards it needs; Redis learns them through `fcctl rebuild`.
Every answer is checked against docs/openapi.yaml, every amount is
exact: amount(v) = round half up (v x price / 1000).
"""

import datetime
import types
import uuid
import zoneinfo

import pytest

import procs

PATH = "/pos/v1/authorize"


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.org = b.org(tz="Europe/Moscow")
    w.station = b.station(region="66", network="own")
    w.term = b.terminal(w.station)
    w.disabled = b.terminal(w.station, status="disabled")
    b.publish()
    w.pos = procs.Terminal(w.term.key)
    yield w
    b.close()


def fresh(world, balance=10_000_000, credit=0, contract_status="active",
          **card):
    """A contract of its own with one card, published to Redis."""
    cid = world.b.contract(world.org, balance=balance, credit=credit,
                           status=contract_status)
    c = world.b.card(cid, **card)
    world.b.publish()
    return c


def auth_row(auth_id):
    rows = procs.query("""
        SELECT status, state, decline_code, card_id, contract_id,
               station_id, approved_volume_ml, approved_amount,
               requested_volume_ml, requested_amount, pan_masked
          FROM pos_auths WHERE auth_id = %s""", (auth_id,))
    assert len(rows) == 1, rows
    keys = ("status", "state", "decline_code", "card_id", "contract_id",
            "station_id", "approved_volume_ml", "approved_amount",
            "requested_volume_ml", "requested_amount", "pan_masked")
    return dict(zip(keys, rows[0]))


def test_volume_request_is_approved_and_held(world, openapi, redis):
    card = fresh(world, balance=1_000_000)
    txn = procs.txn_id()
    r = world.pos.authorize(card.pan, volume_ml=40_000, price=5_432,
                            txn=txn)
    body = openapi(r, PATH, "POST")
    assert r.status == 200
    assert body == {"status": "approved", "auth_id": body["auth_id"],
                    "terminal_txn_id": txn, "card": card.masked,
                    "approved_volume_ml": 40_000,
                    "approved_amount": 217_280}
    assert uuid.UUID(body["auth_id"]).version == 4

    row = auth_row(body["auth_id"])
    assert row == {"status": "approved", "state": "held",
                   "decline_code": None, "card_id": card.id,
                   "contract_id": card.contract_id,
                   "station_id": world.station,
                   "approved_volume_ml": 40_000, "approved_amount": 217_280,
                   "requested_volume_ml": 40_000, "requested_amount": None,
                   "pan_masked": card.masked}

    ctr = procs.redis_ctr(redis, card.contract_id)
    assert ctr["holds"] == "217280"
    assert ctr["balance"] == "1000000"
    hold = redis.hgetall(f"{{c:{card.contract_id}}}:hold:{body['auth_id']}")
    assert hold[b"amount"] == b"217280"
    assert hold[b"volume"] == b"40000"
    assert hold[b"card"] == str(card.id).encode()


def test_amount_request_approves_the_volume_it_buys(world, openapi):
    card = fresh(world, balance=1_000_000)
    r = world.pos.authorize(card.pan, amount=100_000, price=5_432)
    body = openapi(r, PATH, "POST")
    assert body["status"] == "approved"
    # floor(100000 * 1000 / 5432)
    assert body["approved_volume_ml"] == 18_409
    assert body["approved_amount"] == 100_000


def test_amount_of_a_volume_rounds_half_up(world, openapi):
    card = fresh(world, balance=1_000_000)
    # 1500 ml at 49.99: 7498.5 kopecks, so 7499
    r = world.pos.authorize(card.pan, volume_ml=1_500, price=4_999)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["approved_volume_ml"],
            body["approved_amount"]) == ("approved", 1_500, 7_499)
    # 1499 ml at 49.99: 7493.501, so 7494
    r = world.pos.authorize(card.pan, volume_ml=1_499, price=4_999)
    body = openapi(r, PATH, "POST")
    assert body["approved_amount"] == 7_494


def test_nineteen_digit_card_is_accepted_and_masked(world, openapi):
    card = fresh(world, balance=1_000_000, length=19)
    r = world.pos.authorize(card.pan, volume_ml=1_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert body["status"] == "approved"
    assert body["card"] == card.pan[:6] + "*" * 9 + card.pan[-4:]


def test_unknown_card_is_declined_and_recorded(world, openapi, redis):
    pan = procs.new_pan()
    r = world.pos.authorize(pan, volume_ml=10_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert r.status == 200
    assert {k: body[k] for k in ("status", "decline_code",
                                 "approved_volume_ml", "approved_amount",
                                 "card")} == {
        "status": "declined", "decline_code": "UNKNOWN_CARD",
        "approved_volume_ml": 0, "approved_amount": 0,
        "card": procs.mask(pan)}
    assert "limit" not in body
    row = auth_row(body["auth_id"])
    assert (row["status"], row["state"], row["card_id"],
            row["contract_id"]) == ("declined", "declined", None, None)


@pytest.mark.parametrize("status", ["blocked", "lost"])
def test_blocked_or_lost_card_is_declined_card_blocked(world, openapi,
                                                       redis, status):
    card = fresh(world, status=status)
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"],
            body["approved_amount"]) == ("declined", "CARD_BLOCKED", 0)
    assert procs.redis_ctr(redis, card.contract_id)["holds"] == "0"


def test_card_past_its_expiry_date_is_declined_card_expired(world,
                                                            openapi):
    today = datetime.datetime.now(zoneinfo.ZoneInfo("Europe/Moscow")).date()
    card = fresh(world, expires=today - datetime.timedelta(days=1))
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"]) == ("declined",
                                                     "CARD_EXPIRED")


def test_card_valid_through_today_is_approved(world, openapi):
    today = datetime.datetime.now(zoneinfo.ZoneInfo("Europe/Moscow")).date()
    card = fresh(world, expires=today)
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    assert openapi(r, PATH, "POST")["status"] == "approved"


def test_card_with_status_expired_is_declined_card_expired(world, openapi):
    card = fresh(world, status="expired")
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert body["decline_code"] == "CARD_EXPIRED"


def test_blocked_contract_is_declined_contract_blocked(world, openapi):
    card = fresh(world, balance=1_000_000, contract_status="blocked")
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"]) == ("declined",
                                                     "CONTRACT_BLOCKED")


def test_no_money_is_declined_insufficient_funds(world, openapi, redis):
    card = fresh(world, balance=0)
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"], body["approved_amount"],
            body["approved_volume_ml"]) == ("declined",
                                            "INSUFFICIENT_FUNDS", 0, 0)
    assert "limit" not in body
    assert procs.redis_ctr(redis, card.contract_id)["holds"] == "0"
    assert auth_row(body["auth_id"])["state"] == "declined"


def test_short_money_gives_partial_approval_of_what_it_buys(world, openapi,
                                                            redis):
    # 1000.00 RUB: at 50.00 a litre that is exactly 20 L of the 40 asked
    card = fresh(world, balance=100_000)
    r = world.pos.authorize(card.pan, volume_ml=40_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["reason"], body["approved_volume_ml"],
            body["approved_amount"]) == ("partial", "INSUFFICIENT_FUNDS",
                                         20_000, 100_000)
    assert "decline_code" not in body and "limit" not in body
    assert procs.redis_ctr(redis, card.contract_id)["holds"] == "100000"


def test_credit_limit_adds_to_what_is_available(world, openapi):
    card = fresh(world, balance=50_000, credit=50_000)
    r = world.pos.authorize(card.pan, amount=150_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["approved_amount"],
            body["approved_volume_ml"]) == ("partial", 100_000, 20_000)


def test_fuel_not_on_the_card_is_declined_product_not_allowed(world,
                                                              openapi):
    card = fresh(world, allowed_fuel=["DT"])
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000,
                            product="AI-95")
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"]) == ("declined",
                                                     "PRODUCT_NOT_ALLOWED")
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=7_000,
                            product="DT")
    assert openapi(r, PATH, "POST")["status"] == "approved"


def test_station_outside_an_allow_list_is_declined(world, openapi):
    card = fresh(world)
    lid = world.b.limit(card.contract_id, "geo", scope="card",
                        card_id=card.id, geo_mode="allow", regions=["77"])
    world.b.publish()
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"]) == ("declined",
                                                     "STATION_NOT_ALLOWED")
    assert body["limit"] == {"id": lid, "name": "card allowed stations"}


def test_station_on_a_deny_list_is_declined(world, openapi):
    card = fresh(world)
    world.b.limit(card.contract_id, "geo", geo_mode="deny",
                  station_ids=[world.station])
    world.b.publish()
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000)
    assert openapi(r, PATH, "POST")["decline_code"] == "STATION_NOT_ALLOWED"


def test_count_limit_declines_the_transaction_over_it(world, openapi):
    card = fresh(world)
    lid = world.b.limit(card.contract_id, "count", scope="card",
                        card_id=card.id, period="day", value=2)
    world.b.publish()
    for _ in range(2):
        r = world.pos.authorize(card.pan, volume_ml=1_000, price=5_000)
        assert openapi(r, PATH, "POST")["status"] == "approved"
    r = world.pos.authorize(card.pan, volume_ml=1_000, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"]) == (
        "declined", "TOO_MANY_TRANSACTIONS")
    assert body["limit"] == {"id": lid, "name": "card 2 txn/day"}


def test_exhausted_volume_limit_is_declined_limit_exceeded(world, openapi,
                                                           redis):
    card = fresh(world)
    lid = world.b.limit(card.contract_id, "volume", scope="card",
                        card_id=card.id, period="day", value=30_000,
                        name="thirty litres")
    world.b.publish()
    r = world.pos.authorize(card.pan, volume_ml=30_000, price=5_000)
    assert openapi(r, PATH, "POST")["approved_volume_ml"] == 30_000
    holds = procs.redis_ctr(redis, card.contract_id)["holds"]

    r = world.pos.authorize(card.pan, volume_ml=1, price=5_000)
    body = openapi(r, PATH, "POST")
    assert (body["status"], body["decline_code"], body["limit"]) == (
        "declined", "LIMIT_EXCEEDED", {"id": lid, "name": "thirty litres"})
    # a decline changes no money and no counter
    assert procs.redis_ctr(redis, card.contract_id)["holds"] == holds


def test_limit_of_another_product_does_not_apply(world, openapi):
    card = fresh(world)
    world.b.limit(card.contract_id, "volume", period="day", value=0,
                  product_scope="product", product_code="DT")
    world.b.publish()
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=5_000,
                            product="AI-95")
    assert openapi(r, PATH, "POST")["status"] == "approved"
    r = world.pos.authorize(card.pan, volume_ml=10_000, price=7_000,
                            product="DT")
    assert openapi(r, PATH, "POST")["decline_code"] == "LIMIT_EXCEEDED"


def test_group_amount_limit_cuts_a_volume_request(world, openapi):
    cid = world.b.contract(world.org, balance=10_000_000)
    gid = world.b.group(cid)
    card = world.b.card(cid, group_id=gid)
    lid = world.b.limit(cid, "amount", scope="group", group_id=gid,
                        period="month", value=123_456)
    world.b.publish()
    r = world.pos.authorize(card.pan, volume_ml=100_000, price=5_000)
    body = openapi(r, PATH, "POST")
    # the most that stays within 1234.56 RUB: floor((1000 * 123456 + 499)
    # / 5000) = 24691 ml, worth 1234.55 (24692 ml would be 1234.60)
    assert (body["status"], body["reason"], body["approved_volume_ml"],
            body["approved_amount"], body["limit"]) == (
        "partial", "LIMIT_EXCEEDED", 24_691, 123_455,
        {"id": lid, "name": "group 1234.56 RUB/month"})


def test_disabled_terminal_key_is_refused(world, openapi):
    card = fresh(world)
    r = procs.Terminal(world.disabled.key).authorize(card.pan,
                                                     volume_ml=1_000)
    openapi(r, PATH, "POST")
    procs.error_of(r, 401, "unauthorized")


def test_unknown_terminal_key_is_refused_and_nothing_recorded(world,
                                                              openapi):
    card = fresh(world)
    txn = procs.txn_id()
    r = procs.Terminal("not-a-key-" + procs.tag()).authorize(
        card.pan, volume_ml=1_000, txn=txn)
    openapi(r, PATH, "POST")
    procs.error_of(r, 401, "unauthorized")
    assert procs.scalar("SELECT count(*) FROM pos_auths "
                        "WHERE terminal_txn_id = %s", (txn,)) == 0


def test_missing_terminal_key_is_refused(world, openapi, client):
    card = fresh(world)
    r = client.post(PATH, {"terminal_txn_id": procs.txn_id(),
                           "card_number": card.pan, "product_code": "AI-95",
                           "unit_price": 5_000,
                           "requested_volume_ml": 1_000})
    openapi(r, PATH, "POST")
    procs.error_of(r, 401, "unauthorized")


def test_unknown_product_is_a_validation_error(world, openapi):
    card = fresh(world)
    r = world.pos.authorize(card.pan, volume_ml=1_000, product="NOPE-1")
    openapi(r, PATH, "POST")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("product_code:")
