"""Limits against the calendar: periods and time windows are computed in
the organization's time zone, not in UTC and not in the server's zone.

Every authorization here carries the test clock (X-FC-Test-Now), which
the stack honours because scripts/test starts it with FC_TEST_ROUTES=1.
The dates are in January 2027: Friday the 15th, Saturday the 16th, and
the turn of January into February.  Each test has a contract of its own
so that no counter is shared; Redis learns the contract before the first
authorization and is not rebuilt afterwards.
"""

import datetime
import types

import pytest

import procs

YEKT = "Asia/Yekaterinburg"         # UTC+5
VLAT = "Asia/Vladivostok"           # UTC+10

PATH = "/pos/v1/authorize"

MON_TO_FRI = 0b0011111              # bit 0 Monday


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.yekt = b.org(tz=YEKT)
    w.vlat = b.org(tz=VLAT)
    w.station = b.station()
    w.term = b.terminal(w.station)
    w.yekt_owner = b.user(w.yekt, "owner")
    b.publish()
    w.pos = procs.Terminal(w.term.key)
    yield w
    b.close()


def fresh(world, org, balance=100_000_000):
    cid = world.b.contract(org, balance=balance)
    return world.b.card(cid)


def decide(world, openapi, card, now, **kw):
    kw.setdefault("price", 5_000)
    r = world.pos.authorize(card.pan, now=now, **kw)
    return openapi(r, PATH, "POST")


def complete(world, auth):
    """Completes a fill in full, so that its usage stays when its hold
    would have expired (the completion's own time does not matter)."""
    r = world.pos.complete(auth["auth_id"], auth["approved_volume_ml"],
                           auth["approved_amount"])
    assert r.status == 200, r


def test_daily_volume_limit_gives_partial_then_starts_again_next_local_day(
        world, openapi, redis):
    card = fresh(world, world.yekt)
    lid = world.b.limit(card.contract_id, "volume", scope="card",
                        card_id=card.id, period="day", value=100_000)
    world.b.publish()
    evening = procs.local_unix(YEKT, 2027, 1, 15, 23, 59)
    morning = procs.local_unix(YEKT, 2027, 1, 16, 0, 1)

    body = decide(world, openapi, card, evening, volume_ml=60_000)
    assert (body["status"], body["approved_volume_ml"],
            body["approved_amount"]) == ("approved", 60_000, 300_000)

    body = decide(world, openapi, card, evening, volume_ml=50_000)
    assert (body["status"], body["approved_volume_ml"],
            body["approved_amount"], body["reason"],
            body["limit"]) == ("partial", 40_000, 200_000, "LIMIT_EXCEEDED",
                               {"id": lid, "name": "card 100 L/day"})

    body = decide(world, openapi, card, evening, volume_ml=1)
    assert (body["status"], body["decline_code"]) == ("declined",
                                                     "LIMIT_EXCEEDED")

    # two minutes later it is the 16th in Yekaterinburg (still the 15th
    # in UTC): the whole 100 L again
    body = decide(world, openapi, card, morning, volume_ml=100_000)
    assert (body["status"], body["approved_volume_ml"]) == ("approved",
                                                           100_000)
    body = decide(world, openapi, card, morning, volume_ml=1)
    assert body["decline_code"] == "LIMIT_EXCEEDED"

    base = f"{{c:{card.contract_id}}}:use:{lid}"
    assert redis.get(f"{base}:2027-01-15") == b"100000"
    assert redis.get(f"{base}:2027-01-16") == b"100000"


def test_utc_midnight_is_not_a_new_day_in_yekaterinburg(world, openapi):
    card = fresh(world, world.yekt)
    world.b.limit(card.contract_id, "volume", scope="card",
                  card_id=card.id, period="day", value=100_000)
    world.b.publish()
    # 04:59 and 05:01 local are 23:59 and 00:01 UTC
    before = procs.local_unix(YEKT, 2027, 1, 15, 4, 59)
    after = procs.local_unix(YEKT, 2027, 1, 15, 5, 1)

    assert decide(world, openapi, card, before,
                  volume_ml=70_000)["approved_volume_ml"] == 70_000
    body = decide(world, openapi, card, after, volume_ml=70_000)
    assert (body["status"], body["approved_volume_ml"]) == ("partial",
                                                           30_000)


def test_weekday_window_declines_at_18_01_on_friday(world, openapi):
    card = fresh(world, world.yekt)
    lid = world.b.limit(card.contract_id, "time", weekdays=MON_TO_FRI,
                        time_from=7 * 60, time_to=18 * 60)
    world.b.publish()
    body = decide(world, openapi, card,
                  procs.local_unix(YEKT, 2027, 1, 15, 18, 1),
                  volume_ml=10_000)
    assert (body["status"], body["decline_code"], body["approved_amount"],
            body["limit"]) == ("declined", "OUTSIDE_ALLOWED_TIME", 0,
                               {"id": lid,
                                "name": "contract hours 07:00-18:00"})


def test_weekday_window_declines_on_saturday(world, openapi):
    card = fresh(world, world.yekt)
    world.b.limit(card.contract_id, "time", weekdays=MON_TO_FRI,
                  time_from=7 * 60, time_to=18 * 60)
    world.b.publish()
    body = decide(world, openapi, card,
                  procs.local_unix(YEKT, 2027, 1, 16, 10, 0),
                  volume_ml=10_000)
    assert (body["status"], body["decline_code"]) == (
        "declined", "OUTSIDE_ALLOWED_TIME")


def test_weekday_window_approves_at_17_59_on_friday(world, openapi):
    card = fresh(world, world.yekt)
    world.b.limit(card.contract_id, "time", weekdays=MON_TO_FRI,
                  time_from=7 * 60, time_to=18 * 60)
    world.b.publish()
    body = decide(world, openapi, card,
                  procs.local_unix(YEKT, 2027, 1, 15, 17, 59),
                  volume_ml=10_000)
    assert (body["status"], body["approved_volume_ml"],
            body["approved_amount"]) == ("approved", 10_000, 50_000)


def test_weekday_window_ends_at_18_00_and_starts_at_07_00(world, openapi):
    card = fresh(world, world.yekt)
    world.b.limit(card.contract_id, "time", weekdays=MON_TO_FRI,
                  time_from=7 * 60, time_to=18 * 60)
    world.b.publish()
    at = {(6, 59): "declined", (7, 0): "approved", (18, 0): "declined"}
    for (h, m), status in at.items():
        body = decide(world, openapi, card,
                      procs.local_unix(YEKT, 2027, 1, 15, h, m),
                      volume_ml=1_000)
        assert body["status"] == status, (h, m, body)


def test_monthly_money_limit_starts_again_on_the_first_in_vladivostok(
        world, openapi, redis):
    card = fresh(world, world.vlat)
    lid = world.b.limit(card.contract_id, "amount", period="month",
                        value=1_000_000)
    world.b.publish()
    # 31 Jan 23:30 and 1 Feb 00:30 local are both 31 Jan in UTC; the
    # January fills are completed, so their usage does not go away with
    # their holds at 00:30
    january = procs.local_unix(VLAT, 2027, 1, 31, 23, 30)
    february = procs.local_unix(VLAT, 2027, 2, 1, 0, 30)

    body = decide(world, openapi, card, january, amount=800_000)
    assert (body["status"], body["approved_amount"]) == ("approved",
                                                        800_000)
    complete(world, body)
    body = decide(world, openapi, card, january, amount=300_000)
    assert (body["status"], body["approved_amount"], body["reason"],
            body["limit"]) == ("partial", 200_000, "LIMIT_EXCEEDED",
                               {"id": lid,
                                "name": "contract 10000 RUB/month"})
    complete(world, body)

    body = decide(world, openapi, card, february, amount=1_000_000)
    assert (body["status"], body["approved_amount"]) == ("approved",
                                                        1_000_000)
    body = decide(world, openapi, card, february, amount=1)
    assert body["decline_code"] == "LIMIT_EXCEEDED"

    base = f"{{c:{card.contract_id}}}:use:{lid}"
    assert redis.get(f"{base}:2027-01") == b"1000000"
    assert redis.get(f"{base}:2027-02") == b"1000000"


def test_weekly_count_limit_follows_iso_weeks_in_local_time(world, openapi):
    card = fresh(world, world.vlat)
    world.b.limit(card.contract_id, "count", period="week", value=1)
    world.b.publish()
    # Sunday 31 Jan 23:30 ends ISO week 4; Monday 00:15 starts week 5
    # (and the Sunday hold has not expired yet)
    sunday = procs.local_unix(VLAT, 2027, 1, 31, 23, 30)
    monday = procs.local_unix(VLAT, 2027, 2, 1, 0, 15)
    assert decide(world, openapi, card, sunday,
                  volume_ml=1_000)["status"] == "approved"
    assert decide(world, openapi, card, sunday,
                  volume_ml=1_000)["decline_code"] == "TOO_MANY_TRANSACTIONS"
    assert decide(world, openapi, card, monday,
                  volume_ml=1_000)["status"] == "approved"


def test_cabinet_usage_follows_the_test_clock(world, openapi):
    # the usage a client reads at a moment counts the fills the pump
    # decided in that period, on the same clock
    card = fresh(world, world.yekt)
    lid = world.b.limit(card.contract_id, "volume", scope="card",
                        card_id=card.id, period="day", value=100_000)
    world.b.publish()
    evening = procs.local_unix(YEKT, 2027, 1, 15, 23, 59)
    morning = procs.local_unix(YEKT, 2027, 1, 16, 0, 1)
    assert decide(world, openapi, card, evening,
                  volume_ml=60_000)["status"] == "approved"

    # the session lives on the same clock: log in at that time
    cab = procs.Cabinet()
    r = cab.login(world.yekt_owner.email, world.yekt_owner.password,
                  now=evening)
    assert r.status == 200, r

    def usage(now):
        r = cab.get(f"/api/v1/limits?card_id={card.id}", now=now)
        assert r.status == 200, r
        items = openapi(r, "/api/v1/limits")["items"]
        assert [i["id"] for i in items] == [lid]
        return items[0]["usage"]

    u = usage(evening)
    assert (u["period_key"], u["used"], u["remaining"]) == (
        "2027-01-15", 60_000, 40_000)
    assert datetime.datetime.fromisoformat(u["period_start"]) == \
        datetime.datetime(2027, 1, 14, 19, 0, tzinfo=datetime.timezone.utc)
    u = usage(morning)
    assert (u["period_key"], u["used"], u["remaining"]) == (
        "2027-01-16", 0, 100_000)
