"""Attacks on top-up, reconciliation and export: forged and odd bank
notifications, double clicks and a failing bank at Init, hostile
registry files, tampered export cursors and clients that vanish in the
middle of a stream.

Tests named test_bug_* reproduce a defect found by attacking a stack:
each fails today and passes once the defect is fixed; its docstring
says what happens, what should, and where.  The others are attacks the
platform withstands; they guard against regressions.

Every test makes its own organization, contract and payments; the
sandbox bank's mode is put back to `ok` after a test changes it.
"""

import base64
import concurrent.futures
import os
import time
import types
import urllib.parse

import pytest

import fc
import procs
import test_export as te
import test_reconciliation as tr
from test_topup import (NOTIFICATION, World, assert_ok, balance, bank,
                        events, ledger, new_key, notification, notify,
                        pay, payment, signed, topup, wait_notes,
                        wait_status)


EXPORT = "/export/v1/transactions"
NGINX_ERROR_LOG = "log/nginx-error.log"


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.close()


@pytest.fixture
def bank_ok():
    yield
    bank().post("/_control/mode", {"mode": "ok"})


@pytest.fixture(scope="module")
def exporter():
    """An organization with a few transactions and an export key."""
    b = procs.Builder()
    org = b.org(tz="Europe/Moscow")
    owner = b.user(org, "owner")
    card = b.card(b.contract(org))
    station = b.station()
    term = b.terminal(station)
    auth = te.add_auth(b.conn, term, station, card)
    ids = te.add_txn(b.conn, auth, station, card, count=1200,
                     at="2026-11-02T10:00:00Z")
    b.publish()
    cab = procs.cabinet_for(owner)
    made = te.new_key(cab, "attacks")
    te.set_rate(made["id"], 1_000_000)
    yield types.SimpleNamespace(b=b, cab=cab, key=made["key"],
                                ids=set(ids))
    b.close()


@pytest.fixture(scope="module")
def operator():
    b = procs.Builder()
    org = b.org()
    w = {"builder": b, "org": org, "contract": b.contract(org, balance=0),
         "owner": b.user(org, "owner"), "operator": b.user(None, "operator")}
    w["cab"] = procs.cabinet_for(w["operator"])
    yield w
    b.close()


def cursor_of(text):
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def export_get(key, **query):
    return fc.Client(timeout=60).get(
        EXPORT + "?" + urllib.parse.urlencode(query),
        headers={"Authorization": f"Bearer {key}"})


def error_log_tail(start):
    with open(os.path.join(fc.env("FC_VAR"), NGINX_ERROR_LOG), "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", "replace")


def error_log_size():
    return os.path.getsize(os.path.join(fc.env("FC_VAR"), NGINX_ERROR_LOG))


def confirmed_topup(world, amount=100000):
    """A contract topped up through the sandbox bank, CONFIRMED."""
    cab = world.cabinet()
    cid = world.contract(balance=0)
    p = topup(cab, cid, amount)
    pay(p)
    wait_notes(p, 2)
    wait_status(cab, p["id"], "CONFIRMED")
    return cab, cid, p


# ---------------------------------------------------------------------
# bugs found by attacking, now fixed

def test_was_bug_a_cursor_with_a_since_outside_1900_to_2999_is_422(
        exporter):
    """GET /export/v1/transactions?cursor=<base64url "1.1.-999999999999">
    answered 500: fc_export_cursor_parse() called to_timestamp() on any
    since of up to 12 digits, outside the block that turns a bad cursor
    into 422.  Now (0012) a since that no first call's date 1900-01-01
    .. 2999-12-31 gives is 422 validation_failed naming the cursor."""
    r = export_get(exporter.key, cursor=cursor_of("1.1.-999999999999"))
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("cursor:"), err


def test_was_bug_a_registry_without_operations_gives_way_to_a_real_one(
        operator):
    """A header-only file posted with date=D (no operation line, no
    summary line) was reconciled for day D, and the bank's real registry
    of D uploaded next was a "conflict": its lines unmatched, the day's
    confirmed payment missing.  Now (fc_registry_import() of 0012) the
    first file of D with operation lines supersedes a reconciled registry
    that read none, as replace= would."""
    cab = operator["cab"]
    day = tr.fresh_day()
    p = tr.payment(operator, day, 100000)
    header = (f"Реестр {procs.tag()}\r\n" + ";".join(tr.HEADER)
              + "\r\n").encode("cp1251")
    empty = tr.upload(cab, header, date=day.isoformat())
    assert empty.status == 201, empty

    real = tr.upload(cab, tr.registry([tr.line(p, "Debit", 100000, 2000)]))
    assert real.status == 201, real
    assert real.json()["status"] == "reconciled", real.json()
    assert real.json()["classes"]["matched"] == 1, real.json()
    assert procs.scalar("SELECT status FROM registries WHERE id = %s",
                        (empty.json()["id"],)) == "superseded"


@pytest.mark.xfail(strict=True, reason=(
    "0006_topups.sql treats a refund notification with the status and "
    "Amount of one already applied as a retry, by design; the second of "
    "two equal partial refunds is never debited"))
def test_two_equal_partial_refunds_debit_twice(world):
    """The bank refunds 100.00 twice of a 1000.00 top-up (two
    PARTIAL_REFUNDED notifications with Amount 10000).  The second is
    recorded as "duplicate": refunded_amount stays 10000 and the
    contract keeps 100.00 that went back to the card.  The bank's own
    state (GetState, or the registry) has 20000 refunded."""
    cab, cid, p = confirmed_topup(world)
    for n in (3, 4):
        bank().post("/_control/refund", {"PaymentId": p["bank_payment_id"],
                                         "Amount": 10000})
        wait_notes(p, n)
    assert payment(cab, p["id"])["refunded_amount"] == 20000
    assert balance(cid) == 80000


# ---------------------------------------------------------------------
# bank notifications that hold

@pytest.mark.parametrize("raw, status", [
    (b"hello", 400), (b"[1,2]", 400), (b'"x"', 400), (b"", 400),
    (b'{"Amount": 99999999999999999999999}', 400),
    (b'{"a": "\\u0000"}', 400),
    (b"[" * 5000 + b"]" * 5000, 400),
    (b'{"a": "' + b"x" * 65536 + b'"}', 413),
])
def test_a_notification_that_is_not_a_json_object_is_refused(raw, status):
    before = procs.scalar("SELECT count(*) FROM payment_events")
    r = fc.Client().request("POST", NOTIFICATION, raw=raw,
                            headers={"Content-Type": "application/json",
                                     "Accept": "*/*"})
    assert r.status == status, r
    assert procs.scalar("SELECT count(*) FROM payment_events") == before


def test_forged_and_borrowed_tokens_change_nothing(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    p = topup(cab, cid, 50000)
    good = signed(notification(p, "CONFIRMED"))

    forged = dict(good, Token="0" * 64)
    missing = {k: v for k, v in good.items() if k != "Token"}
    # the Token of a REJECTED of the same order on a CONFIRMED body
    other = dict(notification(p, "CONFIRMED"),
                 Token=signed(notification(p, "REJECTED",
                                           success=False))["Token"])
    # signed with another terminal's password
    foreign = signed(notification(p, "CONFIRMED"), "another-password")
    # the amount raised after signing
    raised = dict(good, Amount=p["amount"] * 100)
    for body in (forged, missing, other, foreign, raised):
        r = notify(body)
        assert r.status == 403, (body, r)
    assert events(p["id"]) == []
    assert balance(cid) == 0


def test_signed_but_wrong_notifications_are_anomalies_never_credit(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    p = topup(cab, cid, 50000)
    q = topup(cab, cid, 60000)
    bad = [
        notification(p, "CONFIRMED", amount=p["amount"] + 1),
        notification(p, "CONFIRMED", amount=-p["amount"]),
        notification(p, "CONFIRMED", amount=2**62),
        notification(p, "CONFIRMED", success="false"),
        notification(p, "CONFIRMED", TerminalKey="SomebodyElsesTerminal"),
        # q's PaymentId on p's order, and the other way round
        notification(p, "CONFIRMED", PaymentId=int(q["bank_payment_id"])),
        dict(notification(q, "CONFIRMED"), PaymentId=int(
            p["bank_payment_id"])),
        notification(p, "CONFIRMED", OrderId="FC-0-000000"),
    ]
    for body in bad:
        assert_ok(notify(signed(body)))
    assert balance(cid) == 0
    assert ledger(cid) == []
    for x in (p, q):
        assert payment(cab, x["id"])["status"] == "NEW"
        assert {o for _, o, _ in events(x["id"])} <= {"anomaly"}


def test_strings_for_numbers_and_booleans_sign_and_credit_the_same(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    p = topup(cab, cid, 50000)
    body = notification(p, "CONFIRMED", amount=str(p["amount"]),
                        success="true",
                        PaymentId=str(p["bank_payment_id"]))
    assert_ok(notify(signed(body)))
    assert balance(cid) == 50000


def test_concurrent_and_repeated_confirmations_credit_once(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    p = topup(cab, cid, 70000)
    body = signed(notification(p, "CONFIRMED"))
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda _: notify(body), range(64)))
    for r in answers:
        assert_ok(r)
    for _ in range(200):
        assert_ok(notify(body))
    assert balance(cid) == 70000
    assert [(k, a) for k, a, _ in ledger(cid)] == [("topup", 70000)]
    outcomes = [o for _, o, _ in events(p["id"])]
    assert outcomes.count("applied") == 1
    assert len(outcomes) == 264


def test_refunded_before_confirmed_credits_then_debits(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    p = topup(cab, cid, 50000)
    assert_ok(notify(signed(notification(p, "REFUNDED"))))
    assert_ok(notify(signed(notification(p, "CONFIRMED"))))
    assert_ok(notify(signed(notification(p, "AUTHORIZED"))))
    got = payment(cab, p["id"])
    assert got["status"] == "REFUNDED" and got["refunded_amount"] == 50000
    assert balance(cid) == 0
    assert [(k, a) for k, a, _ in ledger(cid)] == [
        ("topup", 50000), ("topup_refund", -50000)]


def test_a_refund_beyond_the_amount_or_after_rejection_moves_nothing(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    p = topup(cab, cid, 50000)
    assert_ok(notify(signed(notification(p, "REJECTED", success=False))))
    assert_ok(notify(signed(notification(p, "REFUNDED"))))
    assert_ok(notify(signed(notification(p, "CONFIRMED"))))
    assert payment(cab, p["id"])["status"] == "REJECTED"
    assert balance(cid) == 0

    q = topup(cab, cid, 50000)
    assert_ok(notify(signed(notification(q, "CONFIRMED"))))
    assert_ok(notify(signed(notification(q, "PARTIAL_REFUNDED",
                                         amount=50001))))
    assert_ok(notify(signed(notification(q, "PARTIAL_REFUNDED",
                                         amount=0))))
    assert payment(cab, q["id"])["refunded_amount"] == 0
    assert balance(cid) == 50000


# ---------------------------------------------------------------------
# top-ups that hold

def test_a_double_click_makes_one_payment(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    key = new_key()
    path = f"/api/v1/contracts/{cid}/topups"
    body = {"amount": 50000, "email": "books@test.example"}
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        answers = list(ex.map(
            lambda _: cab.post(path, body, headers={"Idempotency-Key": key}),
            range(10)))
    assert {r.status for r in answers} <= {200, 201}, answers
    assert len({r.json()["id"] for r in answers}) == 1
    assert len({r.json()["bank_payment_id"] for r in answers}) == 1
    assert procs.scalar("SELECT count(*) FROM payments WHERE contract_id "
                        "= %s", (cid,)) == 1


def test_a_failing_or_slow_bank_at_init_is_503_then_retried(world, bank_ok):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    path = f"/api/v1/contracts/{cid}/topups"
    body = {"amount": 50000, "email": "books@test.example"}
    key = new_key()

    bank().mode(mode="fail", status=500, count=1, path="/v2/Init")
    r = cab.post(path, body, headers={"Idempotency-Key": key})
    procs.error_of(r, 503, "bank_unavailable")

    bank().mode(mode="slow", delay_ms=15000, count=1, path="/v2/Init")
    r = cab.post(path, body, headers={"Idempotency-Key": key})
    procs.error_of(r, 503, "bank_unavailable")

    bank().mode(mode="ok")
    r = cab.post(path, body, headers={"Idempotency-Key": key})
    assert r.status == 201, r
    assert r.json()["payment_url"]
    assert procs.scalar("SELECT count(*) FROM payments WHERE contract_id "
                        "= %s", (cid,)) == 1


def test_topups_refuse_odd_amounts_other_orgs_and_missing_csrf(world):
    cab = world.cabinet()
    cid = world.contract(balance=0)
    path = f"/api/v1/contracts/{cid}/topups"
    for amount in (10000.5, "10000", True, -10000, 1e4, None):
        r = cab.post(path, {"amount": amount, "email": "a@test.example"},
                     headers={"Idempotency-Key": new_key()})
        procs.error_of(r, 422, "validation_failed")
    r = cab.request("POST", path, {"amount": 10000,
                                   "email": "a@test.example"},
                    csrf=False, headers={"Idempotency-Key": new_key()})
    procs.error_of(r, 403, "forbidden")

    b = procs.Builder()
    try:
        other = b.contract(b.org())
        b.publish()
        r = cab.post(f"/api/v1/contracts/{other}/topups",
                     {"amount": 10000, "email": "a@test.example"},
                     headers={"Idempotency-Key": new_key()})
        procs.error_of(r, 404, "not_found")
    finally:
        b.close()
    assert procs.scalar("SELECT count(*) FROM payments WHERE contract_id "
                        "= %s", (cid,)) == 0


# ---------------------------------------------------------------------
# export that holds

@pytest.mark.parametrize("query", [
    {"since": "2026-01-01", "limit": 0},
    {"since": "2026-01-01", "limit": 10001},
    {"since": "2026-01-01", "limit": "1e3"},
    {"since": "2026-01-01", "format": "xml"},
    {"since": "0001-01-01"},
    {"since": "2026-02-30"},
    {"cursor": "!!!!"},
    {"cursor": cursor_of("hello.world")},
    {"cursor": cursor_of("-1.5")},
    {"cursor": cursor_of("1.99999999999999999999")},
    {"cursor": base64.urlsafe_b64encode(os.urandom(30)).decode()},
])
def test_a_bad_export_query_or_cursor_is_422(exporter, query):
    r = export_get(exporter.key, **query)
    procs.error_of(r, 422, "validation_failed")


def test_a_cursor_beyond_the_end_returns_nothing_and_stays(exporter):
    r = export_get(exporter.key, cursor=cursor_of("9223372036854775807.1"))
    body = te.items(r)
    assert body["items"] == [] and body["has_more"] is False


def test_a_vanishing_slow_reader_crashes_no_worker(exporter):
    start = error_log_size()
    for fmt in ("json", "csv", "csv1251"):
        for _ in range(3):
            s = te.raw_get(f"{EXPORT}?since=2026-01-01&limit=10000"
                           f"&format={fmt}", exporter.key, rcvbuf=2048)
            s.recv(1000)
            time.sleep(0.2)
            s.close()
    # the worker still serves the whole page
    got = te.export_all(exporter.key, since="2026-01-01", limit=500)
    assert {i["id"] for i in got} == exporter.ids
    log = error_log_tail(start)
    for word in ("signal", "[alert]", "[crit]", "[emerg]"):
        assert word not in log, log


def test_a_key_revoked_mid_stream_finishes_the_page_then_is_401(exporter):
    made = te.new_key(exporter.cab, "revoked mid-stream")
    te.set_rate(made["id"], 1_000_000)
    s = te.raw_get(f"{EXPORT}?since=2026-01-01&limit=10000", made["key"],
                   rcvbuf=2048)
    data = s.recv(1000)
    assert exporter.cab.delete(f"/api/v1/api-keys/{made['id']}").status \
        == 200
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.endswith(b"\r\n0\r\n\r\n")
    r = export_get(made["key"], since="2026-01-01")
    procs.error_of(r, 401, "unauthorized")


# ---------------------------------------------------------------------
# registries that hold

def test_junk_registries_are_422_and_store_nothing(operator):
    cab = operator["cab"]
    before = procs.scalar("SELECT count(*) FROM registries")
    for data in (os.urandom(10 * 1024 * 1024), b"a;b;c\r\n" * 100000,
                 b"\xef\xbb\xbf", b""):
        r = tr.upload(cab, data)
        assert r.status == 422, r
    assert procs.scalar("SELECT count(*) FROM registries") == before


@pytest.mark.parametrize("amount", ["1e5", "1,234.56", "1.234",
                                    "12 34,00", "--1,00", "1 234,567"])
def test_an_amount_that_is_not_one_is_a_bad_line(operator, amount):
    day = tr.fresh_day()
    p = tr.payment(operator, day, 100000)
    row = tr.line(p, "Debit", 100000, 2000)
    row["fields"][8] = amount
    r = tr.upload(operator["cab"], tr.registry([row], summary=False),
                  date=day.isoformat())
    assert r.status == 201, r
    reg = r.json()
    assert [b["line"] for b in reg["bad_lines"]] == [2], reg
    assert reg["totals"]["payments"] == 0


def test_a_negative_fee_is_a_bad_line(operator):
    """The sign of an operation comes from its type; a minus in the fee
    column would lower the fees and raise the net payout."""
    day = tr.fresh_day()
    p = tr.payment(operator, day, 100000)
    row = tr.line(p, "Debit", 100000, 2000)
    row["fields"][9] = "-20,00"
    r = tr.upload(operator["cab"], tr.registry([row], summary=False),
                  date=day.isoformat())
    assert r.status == 201, r
    reg = r.json()
    assert len(reg["bad_lines"]) == 1, reg
    bad = reg["bad_lines"][0]
    assert bad["line"] == 2, reg
    assert bad["reason"].startswith("Комиссия:"), bad
    assert "never negative" in bad["reason"] and '"-20,00"' in bad["reason"]
    assert reg["totals"]["fees"] == 0 and reg["totals"]["net_payout"] == 0


def test_a_line_with_a_hundred_fields_is_a_bad_line(operator):
    day = tr.fresh_day()
    p = tr.payment(operator, day, 100000)
    row = tr.line(p, "Debit", 100000, 2000)
    row["fields"] += ["x"] * 88
    r = tr.upload(operator["cab"], tr.registry([row], summary=False),
                  date=day.isoformat())
    assert r.status == 201, r
    assert len(r.json()["bad_lines"]) == 1


def test_the_same_file_twice_at_once_is_imported_once(operator):
    day = tr.fresh_day()
    p = tr.payment(operator, day, 100000)
    data = tr.registry([tr.line(p, "Debit", 100000, 2000)])
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(lambda _: tr.upload(operator["cab"], data),
                              range(4)))
    assert sorted(r.status for r in answers) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in answers}) == 1


def test_utf8_bom_lf_and_cp1251_crlf_read_alike(operator):
    day = tr.fresh_day()
    p = tr.payment(operator, day, 100000)
    rows = [tr.line(p, "Debit", 100000, 2000, group=True)]
    a = tr.upload(operator["cab"], tr.registry(rows))
    assert a.status == 201, a
    b = tr.upload(operator["cab"], b"\xef\xbb\xbf" + tr.registry(
        rows, encoding="utf-8").replace(b"\r\n", b"\n"))
    assert b.status == 201, b
    assert a.json()["totals"] == b.json()["totals"]
    assert a.json()["encoding"] == "cp1251"
    assert b.json()["encoding"] == "utf-8"


def test_only_operators_import_registries(world):
    r = world.cabinet("owner").post(
        "/api/v1/backoffice/registries?bank=tbank",
        raw=tr.registry([]), headers={"Content-Type": "text/csv"})
    procs.error_of(r, 403, "forbidden")
