"""The drivers' mobile API: token pairs, the cards with their contract
and limits, blocking from the phone, and the stations nearby.

The stations of this module stand around a point in the Southern Ocean
drawn at random for each run, where the seed has none, so the nearby
list holds exactly what the test put there.
"""

import datetime
import math
import random
import types
import zoneinfo

import pytest

import procs

MSK = zoneinfo.ZoneInfo("Europe/Moscow")
EARTH_RADIUS_M = 6371008.8


def distance_m(lat1, lon1, lat2, lon2):
    """Great-circle distance, the haversine the API documents."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (math.sin(math.radians(lat2 - lat1) / 2) ** 2
         + math.cos(p1) * math.cos(p2)
         * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return round(2 * EARTH_RADIUS_M * math.asin(min(1, math.sqrt(h))))


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.org = b.org()
    w.owner = b.user(w.org, "owner")
    w.driver = b.user(w.org, "driver")
    w.contract = b.contract(w.org, balance=1_000_000, credit=200_000)
    w.card = b.card(w.contract, driver_user_id=w.driver.id,
                    driver_name="Driver Dmitry", allowed_fuel=["DT"])
    w.other_card = b.card(w.contract)
    w.volume_limit = b.limit(w.contract, "volume", scope="card",
                             card_id=w.card.id, period="day", value=80_000)

    # the stations: A 1 km north, B 2 km east, C 3 km south (no AI-95),
    # D 22 km south, all around a random quiet point
    rng = random.Random()
    w.lat, w.lon = rng.uniform(-65, -60), rng.uniform(90, 150)
    east = 2.0 / (111.195 * math.cos(math.radians(w.lat)))
    w.places = {"A": (w.lat + 0.009, w.lon), "B": (w.lat, w.lon + east),
                "C": (w.lat - 0.027, w.lon), "D": (w.lat - 0.2, w.lon)}
    w.st = {k: b.station(lat=lat, lon=lon, name=f"Quiet {k}")
            for k, (lat, lon) in w.places.items()}
    today = datetime.datetime.now(MSK).date()
    day = datetime.timedelta(days=1)
    b.price(w.st["A"], "AI-95", 5_000, today - 400 * day)
    b.price(w.st["A"], "AI-95", 5_200, today - 10 * day)
    b.price(w.st["A"], "AI-95", 9_999, today + 30 * day)
    b.price(w.st["B"], "AI-95", 5_100, today - day)
    b.price(w.st["B"], "DT", 6_900, today - day)
    b.price(w.st["C"], "DT", 7_000, today - day)
    b.price(w.st["D"], "AI-95", 4_900, today)
    w.term = b.terminal(w.st["A"])
    b.publish()
    w.pos = procs.Terminal(w.term.key)
    yield w
    b.close()


# ---------------------------------------------------------------------
# tokens

def test_password_grant_returns_a_bearer_token_pair(world, openapi):
    app = procs.Mobile()
    r = app.login(world.driver.email, world.driver.password)
    body = openapi(r, "/mobile/v1/token", "POST")
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 900)
    assert body["access_token"] != body["refresh_token"]
    assert app.get("/mobile/v1/cards").status == 200


def test_wrong_password_grant_is_401(world, openapi):
    r = procs.Mobile().login(world.driver.email, "wrong")
    openapi(r, "/mobile/v1/token", "POST")
    procs.error_of(r, 401, "invalid_credentials")


def test_refresh_token_works_once_and_replaces_the_pair(world, openapi):
    app = procs.mobile_for(world.driver)
    old_access, old_refresh = app.access, app.refresh_token
    r = app.refresh()
    body = openapi(r, "/mobile/v1/token", "POST")
    assert body["refresh_token"] != old_refresh
    assert app.get("/mobile/v1/cards").status == 200

    r = app.refresh(old_refresh)
    openapi(r, "/mobile/v1/token", "POST")
    procs.error_of(r, 401, "invalid_credentials")

    old = procs.Mobile()
    old.access = old_access
    r = old.get("/mobile/v1/cards")
    openapi(r, "/mobile/v1/cards")
    procs.error_of(r, 401, "unauthorized")


def test_revoked_pair_is_refused(world, openapi):
    app = procs.mobile_for(world.driver)
    refresh = app.refresh_token
    r = app.delete("/mobile/v1/token")
    assert openapi(r, "/mobile/v1/token", "DELETE") == {"status": "revoked"}
    procs.error_of(app.get("/mobile/v1/cards"), 401, "unauthorized",
                   "/mobile/v1/cards")
    procs.error_of(app.refresh(refresh), 401, "invalid_credentials",
                   "/mobile/v1/token", "POST")


def test_requests_without_a_token_are_401(world, openapi, client):
    for path in ("/mobile/v1/cards",
                 f"/mobile/v1/stations?lat={world.lat}&lon={world.lon}"):
        r = client.get(path)
        openapi(r, path.split("?")[0])
        procs.error_of(r, 401, "unauthorized")


# ---------------------------------------------------------------------
# cards

def test_driver_sees_their_card_with_contract_and_limits(world, openapi):
    auth = procs.decision(world.pos.authorize(
        world.card.pan, volume_ml=20_000, price=6_900, product="DT"))
    assert auth["status"] == "approved", auth

    app = procs.mobile_for(world.driver)
    body = openapi(app.get("/mobile/v1/cards"), "/mobile/v1/cards")
    assert [c["id"] for c in body["items"]] == [world.card.id]
    card = body["items"][0]
    assert (card["number"], card["driver_name"], card["allowed_fuel"],
            card["status"]) == (world.card.masked, "Driver Dmitry", ["DT"],
                                "active")
    # 1,000,000 + 200,000 credit - 138,000 held
    assert {k: card["contract"][k] for k in ("id", "balance",
                                             "available")} == {
        "id": world.contract, "balance": 1_000_000, "available": 1_062_000}
    [lim] = card["limits"]
    assert (lim["id"], lim["name"], lim["usage"]["used"],
            lim["usage"]["remaining"]) == (world.volume_limit,
                                           "card 80 L/day", 20_000, 60_000)
    assert world.pos.reverse(auth["auth_id"]).status == 200


def test_owner_sees_every_card_of_the_organization(world, openapi):
    app = procs.mobile_for(world.owner)
    body = openapi(app.get("/mobile/v1/cards"), "/mobile/v1/cards")
    assert sorted(c["id"] for c in body["items"]) == sorted(
        [world.card.id, world.other_card.id])


def test_driver_blocks_their_card_but_only_the_owner_unblocks_it(world,
                                                                 openapi):
    driver = procs.mobile_for(world.driver)
    r = driver.post(f"/mobile/v1/cards/{world.card.id}/block")
    assert openapi(r, "/mobile/v1/cards/{id}/block", "POST")["status"] == \
        "blocked"
    a = procs.decision(world.pos.authorize(
        world.card.pan, volume_ml=1_000, price=6_900, product="DT"))
    assert a["decline_code"] == "CARD_BLOCKED"

    r = driver.post(f"/mobile/v1/cards/{world.card.id}/unblock")
    openapi(r, "/mobile/v1/cards/{id}/unblock", "POST")
    procs.error_of(r, 403, "forbidden")

    owner = procs.mobile_for(world.owner)
    r = owner.post(f"/mobile/v1/cards/{world.card.id}/unblock")
    assert openapi(r, "/mobile/v1/cards/{id}/unblock", "POST")["status"] \
        == "active"
    a = procs.decision(world.pos.authorize(
        world.card.pan, volume_ml=1_000, price=6_900, product="DT"))
    assert a["status"] == "approved"
    assert world.pos.reverse(a["auth_id"]).status == 200


def test_driver_gets_404_for_a_card_not_theirs(world, openapi):
    driver = procs.mobile_for(world.driver)
    r = driver.post(f"/mobile/v1/cards/{world.other_card.id}/block")
    openapi(r, "/mobile/v1/cards/{id}/block", "POST")
    procs.error_of(r, 404, "not_found")
    assert procs.scalar("SELECT status FROM cards WHERE id = %s",
                        (world.other_card.id,)) == "active"


# ---------------------------------------------------------------------
# stations

def stations(world, openapi, query):
    app = procs.mobile_for(world.driver)
    r = app.get(f"/mobile/v1/stations?lat={world.lat:.6f}"
                f"&lon={world.lon:.6f}&{query}")
    return openapi(r, "/mobile/v1/stations")["items"]


def expect(world, key, product=None, price=None):
    lat, lon = world.places[key]
    return {"id": world.st[key], "name": f"Quiet {key}",
            "distance_m": distance_m(round(world.lat, 6),
                                     round(world.lon, 6), lat, lon),
            "product_code": product, "price": price}


def seen(items):
    return [{k: s[k] for k in ("id", "name", "distance_m", "product_code",
                               "price")} for s in items]


def test_stations_selling_the_product_nearest_first_with_todays_price(
        world, openapi):
    items = stations(world, openapi, "radius_km=10&product=AI-95")
    assert seen(items) == [expect(world, "A", "AI-95", 5_200),
                           expect(world, "B", "AI-95", 5_100)]
    a = items[0]
    assert (a["network"], a["own"], a["region"]) == ("own", True, "66")
    assert (a["lat"], a["lon"]) == pytest.approx(world.places["A"])


def test_stations_without_a_product_are_every_station_in_the_radius(
        world, openapi):
    items = stations(world, openapi, "radius_km=10")
    assert seen(items) == [expect(world, "A"), expect(world, "B"),
                           expect(world, "C")]
    assert [s["distance_m"] for s in items] == sorted(
        s["distance_m"] for s in items)


def test_stations_default_radius_is_25_km(world, openapi):
    items = stations(world, openapi, "product=AI-95")
    assert [s["id"] for s in items] == [world.st["A"], world.st["B"],
                                        world.st["D"]]
    assert items[2]["price"] == 4_900


def test_stations_limit_keeps_the_nearest(world, openapi):
    items = stations(world, openapi, "radius_km=10&limit=1")
    assert [s["id"] for s in items] == [world.st["A"]]


@pytest.mark.parametrize("query,field", [
    ("radius_km=0", "radius_km"),
    ("radius_km=501", "radius_km"),
    ("product=NO-SUCH", "product"),
    ("limit=0", "limit"),
])
def test_stations_reject_bad_parameters(world, openapi, query, field):
    app = procs.mobile_for(world.driver)
    r = app.get(f"/mobile/v1/stations?lat={world.lat:.6f}"
                f"&lon={world.lon:.6f}&{query}")
    openapi(r, "/mobile/v1/stations")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith(f"{field}:")


@pytest.mark.parametrize("query,field", [
    ("lon=100", "lat"),
    ("lat=91&lon=100", "lat"),
    ("lat=-60&lon=abc", "lon"),
])
def test_stations_need_a_valid_point(world, openapi, query, field):
    app = procs.mobile_for(world.driver)
    r = app.get(f"/mobile/v1/stations?{query}")
    openapi(r, "/mobile/v1/stations")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith(f"{field}:")
