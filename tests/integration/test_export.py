"""The transactions export for accounting systems: API keys in the
cabinet, GET /export/v1/transactions with a key, its formats, exact
values, paging that loses and repeats nothing, streaming, and the rate
limit (docs/export.md).

Organization A (Asia/Yekaterinburg, +05:00) has two contracts, a
station with a Cyrillic name and address, and a handful of transactions
with known values; organization B has transactions of its own.  Rows
are written straight into PostgreSQL as the owner: the export reads
transactions, however they were made.  The concurrency and streaming
tests build organizations of their own.
"""

import csv
import io
import json
import random
import re
import socket
import threading
import time
import types
import urllib.parse

import pytest

import fc
import procs
from test_openapi import check_text

EXPORT = "/export/v1/transactions"

# the cabinet's routes as docs/openapi.yaml writes them
API_KEYS = "/api/v1/api-keys"
API_KEY = "/api/v1/api-keys/{id}"

STATION_NAME = "АЗС №7 «Уральская»"
STATION_ADDRESS = "Свердловская обл., трасса Р-351, 8 км; съезд \"Север\""

CSV_HEADER = ("id,at,operation,contract,card,driver,vehicle_plate,station,"
              "station_address,product_code,product,volume,price,amount,"
              "discount,vat_rate,vat")


# ---------------------------------------------------------------------
# helpers

def add_auth(conn, term, station, card):
    """A completed authorization for transactions rows to point at."""
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO pos_auths (auth_id, terminal_id, terminal_txn_id,
                                   station_id, card_id, contract_id,
                                   pan_masked, product_code, unit_price,
                                   status, state, response)
            VALUES (gen_random_uuid(), %s, %s, %s, %s, %s, %s, 'AI-95',
                    6290, 'approved', 'completed', '{}')
            RETURNING auth_id""",
            (term.id, procs.txn_id("x"), station, card.id, card.contract_id,
             card.masked))
        return cur.fetchone()[0]


def add_txn(conn, auth, station, card, kind="sale", volume_ml=60_000,
            price=6_290, amount=377_400, at=None, count=1):
    """count transactions rows in one statement; returns their ids."""
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO transactions (contract_id, card_id, auth_id, kind,
                                      station_id, product_code, volume_ml,
                                      unit_price, amount, created_at)
            SELECT %s, %s, %s, %s, %s, 'AI-95', %s, %s, %s,
                   coalesce(%s::timestamptz, now())
              FROM generate_series(1, %s)
            RETURNING id""",
            (card.contract_id, card.id, auth, kind, station, volume_ml,
             price, amount, at, count))
        return [r[0] for r in cur.fetchall()]


def export(key, **query):
    """GET the export with a bearer key; returns fc.Response, checked
    against docs/openapi.yaml whatever its status."""
    path = EXPORT
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = fc.Client(timeout=60).get(path, headers=headers)
    if r.content_type == "application/json":
        fc.check_openapi(r, EXPORT)
    else:
        check_text(r, EXPORT)
    return r


def items(response):
    assert response.status == 200, response
    assert response.content_type == "application/json"
    body = response.json()
    assert set(body) == {"items", "next_cursor", "has_more"}
    assert body["next_cursor"] == response.headers["x-next-cursor"]
    assert body["has_more"] == (response.headers["x-has-more"] == "true")
    return body


def csv_rows(response, encoding="utf-8", sep=","):
    assert response.status == 200, response
    text = response.body.decode(encoding)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    assert sep.join(rows[0]) == CSV_HEADER.replace(",", sep)
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def new_key(cab, name=None, scopes=("transactions:read",), networks=None):
    body = {"name": name or f"key {procs.tag()}", "scopes": list(scopes)}
    if networks is not None:
        body["allowed_networks"] = networks
    r = cab.post("/api/v1/api-keys", body)
    assert r.status == 201, r
    return fc.check_openapi(r, API_KEYS, "POST")


def set_rate(key_id, per_minute):
    procs.query("UPDATE api_keys SET rate_limit = %s WHERE id = %s",
                (per_minute, key_id))


def export_all(key, **query):
    """Every row from a first call with since, following the cursor."""
    got = []
    body = items(export(key, **query))
    got += body["items"]
    query.pop("since", None)
    while body["has_more"]:
        body = items(export(key, cursor=body["next_cursor"], **query))
        got += body["items"]
    return got


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)

    w.a = b.org(tz="Asia/Yekaterinburg", name="Export test fleet")
    w.owner = b.user(w.a, "owner")
    w.manager = b.user(w.a, "manager")
    w.contract = b.contract(w.a)
    w.other_contract = b.contract(w.a)
    w.card = b.card(w.contract, driver_name="Сафонов Дмитрий",
                    plate="В802КВ 66")
    w.quoted_card = b.card(w.contract, driver_name='Ivanov, "Big" Ivan',
                           plate="A001AA 66")
    w.other_card = b.card(w.other_contract)
    w.station = b.station()
    procs.query("UPDATE stations SET name = %s, address = %s WHERE id = %s",
                (STATION_NAME, STATION_ADDRESS, w.station))
    w.term = b.terminal(w.station)

    w.b = b.org(tz="Europe/Moscow")
    w.b_owner = b.user(w.b, "owner")
    w.b_contract = b.contract(w.b)
    w.b_card = b.card(w.b_contract)

    conn = b.conn
    auth = add_auth(conn, w.term, w.station, w.card)
    w.sale_2026 = add_txn(conn, auth, w.station, w.card,
                          at="2026-12-04T05:15:00Z")[0]
    w.sale_2025 = add_txn(conn, auth, w.station, w.card, volume_ml=15_898,
                          price=6_290, amount=100_000,
                          at="2025-06-10T07:00:00Z")[0]
    w.refund_2026 = add_txn(conn, auth, w.station, w.card, kind="refund",
                            volume_ml=-30_000, amount=-188_700,
                            at="2026-12-05T04:00:00Z")[0]
    w.big_2026 = add_txn(conn, auth, w.station, w.card, volume_ml=158_983,
                         amount=1_000_000, at="2026-12-06T19:30:00Z")[0]
    w.quoted = add_txn(conn, add_auth(conn, w.term, w.station,
                                      w.quoted_card),
                       w.station, w.quoted_card,
                       at="2026-12-07T10:00:00Z")[0]
    w.other = add_txn(conn, add_auth(conn, w.term, w.station, w.other_card),
                      w.station, w.other_card, at="2026-12-08T10:00:00Z")[0]
    w.a_ids = {w.sale_2026, w.sale_2025, w.refund_2026, w.big_2026,
               w.quoted, w.other}
    w.b_ids = set(add_txn(conn, add_auth(conn, w.term, w.station, w.b_card),
                          w.station, w.b_card, at="2026-12-04T09:00:00Z",
                          count=3))

    w.cab = procs.cabinet_for(w.owner)
    w.key = new_key(w.cab, "1C nightly")["key"]
    w.b_key = new_key(procs.cabinet_for(w.b_owner))["key"]
    yield w
    b.close()


# ---------------------------------------------------------------------
# API keys in the cabinet

def test_a_key_is_shown_once_and_stored_only_as_its_sha256(world):
    made = new_key(world.cab, "SAP", scopes=["transactions:read",
                                            "cards:read"],
                   networks=["10.0.0.0/8", "192.168.1.7"])
    assert re.fullmatch(r"fck_[0-9a-f]{40}", made["key"]), made
    assert made["prefix"] == made["key"][:8]
    assert made["scopes"] == ["transactions:read", "cards:read"]
    assert made["allowed_networks"] == ["10.0.0.0/8", "192.168.1.7/32"]
    assert made["revoked_at"] is None

    stored = procs.scalar("SELECT key_hash FROM api_keys WHERE id = %s",
                          (made["id"],))
    assert stored == procs.sha256_hex(made["key"])

    listed = world.cab.get("/api/v1/api-keys")
    assert listed.status == 200, listed
    mine = [k for k in fc.check_openapi(listed, API_KEYS)["items"]
            if k["id"] == made["id"]]
    assert len(mine) == 1 and "key" not in mine[0]
    assert made["key"] not in listed.body.decode()
    assert stored not in listed.body.decode()


def test_only_the_owner_manages_keys(world):
    cab = procs.cabinet_for(world.manager)
    r = cab.post("/api/v1/api-keys", {"name": "x",
                                      "scopes": ["transactions:read"]})
    procs.error_of(r, 403, "forbidden", API_KEYS, "POST")
    procs.error_of(cab.get("/api/v1/api-keys"), 403, "forbidden", API_KEYS)

    # another organization's key is not found, exactly like none
    other = new_key(procs.cabinet_for(world.b_owner))
    procs.error_of(world.cab.delete(f"/api/v1/api-keys/{other['id']}"),
                   404, "not_found", API_KEY, "DELETE")


@pytest.mark.parametrize("body, message", [
    ({"scopes": ["transactions:read"]}, "name:"),
    ({"name": "x", "scopes": []}, "scopes:"),
    ({"name": "x", "scopes": ["transactions:write"]},
     'scopes[0]: must be one of'),
    ({"name": "x", "scopes": ["cards:read", "cards:read"]},
     "scopes[1]: \"cards:read\" is given twice"),
    ({"name": "x", "scopes": ["cards:read"],
      "allowed_networks": ["10.0.0.1/8"]},
     'allowed_networks[0]: must be a network'),
    ({"name": "x", "scopes": ["cards:read"],
      "allowed_networks": ["example.com"]}, 'allowed_networks[0]:'),
    ({"name": "x", "scopes": ["cards:read"], "expires": "2027-01-01"},
     "expires: unknown field"),
])
def test_a_bad_key_request_is_422_naming_the_field(world, body, message):
    err = procs.error_of(world.cab.post("/api/v1/api-keys", body), 422,
                         "validation_failed", API_KEYS, "POST")
    assert message in err["message"], err


def test_creation_revocation_and_every_use_are_on_record(world):
    made = new_key(world.cab, "audited")
    assert export(made["key"], since="2026-01-01").status == 200
    assert export(made["key"], since="bad").status == 422
    r = world.cab.delete(f"/api/v1/api-keys/{made['id']}")
    assert r.status == 200 and r.json()["revoked_at"] is not None
    fc.check_openapi(r, API_KEY, "DELETE")
    assert export(made["key"], since="2026-01-01").status == 401

    uses = procs.query("SELECT status, ip FROM api_key_uses "
                       "WHERE key_id = %s ORDER BY id", (made["id"],))
    assert [u[0] for u in uses] == [200, 422, 401]
    assert all(u[1] == "127.0.0.1" for u in uses)

    audit = procs.query("SELECT action, details::text FROM audit_log "
                        "WHERE object_type = 'api_key' AND object_id = %s "
                        "ORDER BY id", (str(made["id"]),))
    assert [a[0] for a in audit] == ["api_key_create", "api_key_revoke"]

    # the key itself is nowhere but with the client
    for table in ("audit_log", "api_key_uses", "api_keys"):
        assert procs.scalar(f"SELECT count(*) FROM {table} t "
                            f"WHERE t::text LIKE %s",
                            (f"%{made['key'][4:]}%",)) == 0


# ---------------------------------------------------------------------
# who may export what

def test_a_missing_or_unknown_key_is_401(world):
    procs.error_of(export(None, since="2026-01-01"), 401, "unauthorized")
    procs.error_of(export("fck_" + "0" * 40, since="2026-01-01"), 401,
                   "unauthorized")


def test_a_revoked_key_is_401_at_once(world):
    made = new_key(world.cab)
    assert export(made["key"], since="2026-01-01").status == 200
    assert world.cab.delete(f"/api/v1/api-keys/{made['id']}").status == 200
    procs.error_of(export(made["key"], since="2026-01-01"), 401,
                   "unauthorized")

    # revoking again changes nothing
    r = world.cab.delete(f"/api/v1/api-keys/{made['id']}")
    assert r.status == 200 and r.json()["revoked_at"] is not None
    fc.check_openapi(r, API_KEY, "DELETE")


def test_a_key_without_the_transactions_scope_is_403(world):
    made = new_key(world.cab, scopes=["cards:read", "contracts:read"])
    err = procs.error_of(export(made["key"], since="2026-01-01"), 403,
                         "forbidden")
    assert "transactions:read" in err["message"]


def test_a_key_is_refused_outside_its_networks(world):
    outside = new_key(world.cab, networks=["10.0.0.0/8", "2001:db8::/32"])
    procs.error_of(export(outside["key"], since="2026-01-01"), 403,
                   "forbidden")

    inside = new_key(world.cab, networks=["10.0.0.0/8", "127.0.0.0/8"])
    assert export(inside["key"], since="2026-01-01").status == 200


def test_a_key_of_one_organization_never_sees_another(world):
    a_ids = {i["id"] for i in export_all(world.key, since="2000-01-01")}
    b_ids = {i["id"] for i in export_all(world.b_key, since="2000-01-01")}
    assert a_ids == world.a_ids
    assert b_ids == world.b_ids

    procs.error_of(export(world.key, since="2000-01-01",
                          contract_id=world.b_contract), 404, "not_found")
    procs.error_of(export(world.key, since="2000-01-01",
                          card_id=world.b_card.id), 404, "not_found")


# ---------------------------------------------------------------------
# what an export holds

def test_json_values_are_exact(world):
    got = {i["id"]: i for i in export_all(world.key, since="2025-01-01")}

    assert got[world.sale_2026] == {
        "id": world.sale_2026, "at": "2026-12-04T10:15:00+05:00",
        "operation": "sale", "contract_id": world.contract,
        "contract": procs.scalar("SELECT number FROM contracts "
                                 "WHERE id = %s", (world.contract,)),
        "card_id": world.card.id, "card": world.card.masked,
        "driver": "Сафонов Дмитрий", "vehicle_plate": "В802КВ 66",
        "station_id": world.station, "station": STATION_NAME,
        "station_address": STATION_ADDRESS, "product_code": "AI-95",
        "product": "Petrol AI-95", "volume": "60.000", "price": "62.90",
        "amount": "3774.00", "discount": "0.00", "vat_rate": 22,
        "vat": "680.56"}

    # 20 % before 2026: 1,000.00 * 20 / 120 = 166.666.. -> 166.67
    old = got[world.sale_2025]
    assert (old["at"], old["volume"], old["amount"], old["vat_rate"],
            old["vat"]) == ("2025-06-10T12:00:00+05:00", "15.898",
                            "1000.00", 20, "166.67")

    # a refund is negative, and its VAT mirrors a sale's
    ref = got[world.refund_2026]
    assert (ref["operation"], ref["volume"], ref["amount"],
            ref["vat"]) == ("refund", "-30.000", "-1887.00", "-340.28")

    # 10,000.00 * 22 / 122 = 1,803.28; 19:30 UTC is the next local day
    big = got[world.big_2026]
    assert (big["at"], big["amount"], big["vat"]) == (
        "2026-12-07T00:30:00+05:00", "10000.00", "1803.28")

    assert got[world.other]["driver"] is None
    assert got[world.other]["vehicle_plate"] is None


def test_csv_is_utf8_with_rfc4180_quoting_and_crlf(world):
    r = export(world.key, since="2025-01-01", format="csv")
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.headers["x-has-more"] == "false"
    assert r.body.startswith((CSV_HEADER + "\r\n").encode())
    assert r.body.endswith(b"\r\n") and b"\n" not in r.body.replace(
        b"\r\n", b"")

    rows = {int(row["id"]): row for row in csv_rows(r)}
    assert set(rows) == world.a_ids
    assert rows[world.quoted]["driver"] == 'Ivanov, "Big" Ivan'
    assert b'"Ivanov, ""Big"" Ivan"' in r.body
    assert rows[world.sale_2026]["vat_rate"] == "22%"
    assert rows[world.sale_2026]["amount"] == "3774.00"
    assert rows[world.other]["driver"] == ""


def test_csv1251_decodes_to_the_same_cyrillic_names(world):
    r = export(world.key, since="2025-01-01", format="csv1251")
    assert r.headers["content-type"] == "text/csv; charset=windows-1251"
    assert r.body.startswith((CSV_HEADER.replace(",", ";")
                              + "\r\n").encode("ascii"))
    assert STATION_NAME.encode("cp1251") in r.body
    # not UTF-8: the cp1251 bytes of the name are not valid UTF-8
    with pytest.raises(UnicodeDecodeError):
        r.body.decode("utf-8")

    rows = {int(row["id"]): row for row in csv_rows(r, "cp1251", ";")}
    assert set(rows) == world.a_ids
    row = rows[world.sale_2026]
    assert row["station"] == STATION_NAME
    assert row["station_address"] == STATION_ADDRESS
    assert row["driver"] == "Сафонов Дмитрий"
    assert row["volume"] == "60.000" and row["vat"] == "680.56"
    assert rows[world.quoted]["driver"] == 'Ivanov, "Big" Ivan'


def test_filters_by_dates_contract_and_card(world):
    def ids(**q):
        return {i["id"] for i in export_all(world.key, since="2025-01-01",
                                            **q)}

    # local dates: 2026-12-06T19:30Z is already the 7th in +05:00
    assert ids(**{"from": "2026-12-04", "to": "2026-12-06"}) == {
        world.sale_2026, world.refund_2026}
    assert ids(**{"from": "2026-12-07"}) == {world.big_2026, world.quoted,
                                            world.other}
    assert ids(to="2025-12-31") == {world.sale_2025}
    assert ids(contract_id=world.other_contract) == {world.other}
    assert ids(card_id=world.quoted_card.id) == {world.quoted}
    assert {i["id"] for i in export_all(world.key, since="2026-12-05")} == {
        world.refund_2026, world.big_2026, world.quoted, world.other}


def test_pages_follow_the_cursor_in_json_and_csv(world):
    first = items(export(world.key, since="2025-01-01", limit=2))
    assert len(first["items"]) == 2 and first["has_more"] is True

    # a cursor gives the same page whatever the format
    again = items(export(world.key, cursor=first["next_cursor"], limit=2))
    r = export(world.key, cursor=first["next_cursor"], limit=2,
               format="csv")
    assert [int(x["id"]) for x in csv_rows(r)] == [
        i["id"] for i in again["items"]]
    assert r.headers["x-next-cursor"] == again["next_cursor"]
    assert r.headers["x-has-more"] == "true"

    rest = export_all(world.key, cursor=again["next_cursor"], limit=2)
    seen = [i["id"] for i in first["items"] + again["items"] + rest]
    assert sorted(seen) == sorted(world.a_ids)

    # at the end the cursor moves on and the next call is empty
    last = items(export(world.key, since="2025-01-01", limit=10000))
    assert last["has_more"] is False
    empty = items(export(world.key, cursor=last["next_cursor"]))
    assert empty["items"] == [] and empty["has_more"] is False


@pytest.mark.parametrize("query, message", [
    ({}, "since: is required"),
    ({"since": "2026-02-30"}, "since: must be a date"),
    ({"since": "2026-01-01", "limit": "0"}, "limit: must be a whole number"),
    ({"since": "2026-01-01", "limit": "10001"}, "limit:"),
    ({"since": "2026-01-01", "format": "xml"}, "format: must be one of"),
    ({"since": "2026-01-01", "page": "2"}, "page: unknown field"),
    ({"cursor": "not-a-cursor!"}, "cursor: not a cursor"),
    ({"cursor": "YWJj"}, "cursor: not a cursor"),
    ({"cursor": "MTIzLjQ1", "since": "2026-01-01"}, "since: only for"),
    ({"since": "2026-01-01", "from": "2026-02-01", "to": "2026-01-01"},
     "to: must not be before from"),
])
def test_a_bad_query_is_422_naming_the_field(world, query, message):
    err = procs.error_of(export(world.key, **query), 422,
                         "validation_failed")
    assert message in err["message"], err


def test_the_rate_limit_answers_429_with_retry_after(world):
    made = new_key(world.cab, "rate")
    set_rate(made["id"], 3)

    answers = [export(made["key"], since="2026-12-01") for _ in range(10)]
    limited = [r for r in answers if r.status == 429]
    assert [r.status for r in answers if r.status != 429] == \
        [200] * (10 - len(limited))
    # ten calls span at most two minutes of three calls each
    assert len(limited) >= 4

    err = procs.error_of(limited[0], 429, "too_many_requests")
    assert "3 requests a minute" in err["message"]
    assert 1 <= int(limited[0].headers["retry-after"]) <= 60

    # another key is counted apart
    assert export(world.key, since="2026-12-01").status == 200


# ---------------------------------------------------------------------
# exactly once under concurrent writers

WRITERS = 6
LONG_WRITERS = 2
ROWS = 10_000


def test_concurrent_writers_lose_and_repeat_nothing():
    """Writers commit out of id order (a random few ms between insert and
    commit, some transactions held for a second, some rolled back) while
    a reader polls with cursors, in every format and page size, the whole
    time.  Every committed row arrives exactly once; no rolled-back row
    arrives at all."""
    b = procs.Builder()
    try:
        org = b.org(tz="Europe/Moscow")
        owner = b.user(org, "owner")
        card = b.card(b.contract(org))
        station = b.station()
        term = b.terminal(station)
        auth = add_auth(b.conn, term, station, card)
        made = new_key(procs.cabinet_for(owner), "concurrency")
        set_rate(made["id"], 1_000_000)

        committed, rolled_back = set(), set()
        lock = threading.Lock()
        stop = threading.Event()
        errors = []

        def writer(n, long_ones):
            conn = procs.owner_connect()
            conn.autocommit = False
            rng = random.Random()
            try:
                while not stop.is_set():
                    with lock:
                        if len(committed) >= ROWS:
                            return
                    with conn.cursor() as cur:
                        cur.execute("""
                            INSERT INTO transactions (contract_id, card_id,
                                auth_id, kind, station_id, product_code,
                                volume_ml, unit_price, amount)
                            SELECT %s, %s, %s, 'sale', %s, 'AI-95',
                                   1000, 6290, 6290
                              FROM generate_series(1, %s)
                            RETURNING id""",
                            (card.contract_id, card.id, auth, station,
                             rng.randint(1, 4)))
                        ids = {r[0] for r in cur.fetchall()}
                    time.sleep(rng.uniform(0.5, 1.5) if long_ones
                               else rng.uniform(0, 0.005))
                    if not long_ones and rng.random() < 0.05:
                        conn.rollback()
                        with lock:
                            rolled_back.update(ids)
                    else:
                        conn.commit()
                        with lock:
                            committed.update(ids)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=writer, args=(i, False))
                   for i in range(WRITERS)]
        threads += [threading.Thread(target=writer, args=(i, True))
                    for i in range(LONG_WRITERS)]
        for t in threads:
            t.start()

        seen = []
        cursor = None
        polls = 0
        formats = ["json", "csv", "csv1251"]
        limits = [1, 7, 499, 500, 501, 1000, 2500, 10000]

        def poll():
            nonlocal cursor, polls
            q = {"format": formats[polls % 3],
                 "limit": limits[polls % len(limits)]}
            if cursor is None:
                q["since"] = "2000-01-01"
            else:
                q["cursor"] = cursor
            polls += 1
            r = export(made["key"], **q)
            if q["format"] == "json":
                body = items(r)
                seen.extend(i["id"] for i in body["items"])
                cursor = body["next_cursor"]
                return body["has_more"]
            enc, sep = (("utf-8", ",") if q["format"] == "csv"
                        else ("cp1251", ";"))
            seen.extend(int(x["id"]) for x in csv_rows(r, enc, sep))
            cursor = r.headers["x-next-cursor"]
            return r.headers["x-has-more"] == "true"

        deadline = time.monotonic() + 300
        while any(t.is_alive() for t in threads):
            assert time.monotonic() < deadline, "writers did not finish"
            if not poll():
                time.sleep(0.01)
        for t in threads:
            t.join()
        assert not errors, errors

        # everything has ended: the horizon passes every row at last
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            more = poll()
            if not more and len(set(seen)) >= len(committed):
                break

        assert len(committed) >= ROWS
        assert len(seen) == len(set(seen)), "a row was exported twice"
        assert set(seen) == committed, (
            f"missed {len(committed - set(seen))}, "
            f"unexpected {len(set(seen) - committed)}")
        assert not set(seen) & rolled_back
        assert polls > 10
    finally:
        b.close()


# ---------------------------------------------------------------------
# streaming

@pytest.fixture(scope="module")
def big():
    """An organization with 10,000 transactions, for the streaming
    tests."""
    b = procs.Builder()
    w = types.SimpleNamespace()
    org = b.org(tz="Europe/Moscow")
    owner = b.user(org, "owner")
    card = b.card(b.contract(org), driver_name="Длинный Водитель " * 4)
    station = b.station()
    term = b.terminal(station)
    auth = add_auth(b.conn, term, station, card)
    w.ids = set(add_txn(b.conn, auth, station, card, count=10_000,
                        at="2026-11-01T10:00:00Z"))
    w.key = new_key(procs.cabinet_for(owner), "big")
    set_rate(w.key["id"], 1_000_000)
    yield w
    b.close()


def raw_get(path, key, rcvbuf=None):
    """An HTTP/1.1 GET on a socket of our own; returns the socket after
    sending."""
    url = urllib.parse.urlsplit(fc.env("FC_URL"))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect((url.hostname, url.port))
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: test\r\n"
               f"Authorization: Bearer {key}\r\n"
               f"Connection: close\r\n\r\n").encode())
    return s


def dechunk(data):
    head, _, body = data.partition(b"\r\n\r\n")
    out = bytearray()
    while True:
        line, _, body = body.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            return head.decode("latin-1"), bytes(out)
        out += body[:size]
        assert body[size:size + 2] == b"\r\n"
        body = body[size + 2:]


def test_a_slow_reader_gets_the_whole_page_in_chunks(big):
    """10,000 rows (several MB of JSON) read in small pieces with pauses
    through a small receive buffer: nginx must wait for the client to
    drain each chunk before it reads the next from PostgreSQL, and the
    page arrives whole and in order."""
    s = raw_get(f"{EXPORT}?since=2026-01-01&limit=10000", big.key["key"],
                rcvbuf=4096)
    data = bytearray()
    try:
        while True:
            piece = s.recv(4096)
            if not piece:
                break
            data += piece
            if len(data) < 1_000_000:
                time.sleep(0.002)
    finally:
        s.close()

    head, body = dechunk(bytes(data))
    assert head.startswith("HTTP/1.1 200")
    assert "Transfer-Encoding: chunked" in head
    assert "X-Has-More: false" in head
    assert len(body) > 4_000_000
    page = json.loads(body)
    assert [i["id"] for i in page["items"]] == sorted(big.ids)
    assert page["has_more"] is False


def test_a_client_that_leaves_mid_stream_harms_nothing(big):
    for _ in range(3):
        s = raw_get(f"{EXPORT}?since=2026-01-01&limit=10000",
                    big.key["key"], rcvbuf=4096)
        assert s.recv(1024).startswith(b"HTTP/1.1 200")
        s.close()

    body = items(export(big.key["key"], since="2026-01-01", limit=10000))
    assert {i["id"] for i in body["items"]} == big.ids
    assert body["has_more"] is False
