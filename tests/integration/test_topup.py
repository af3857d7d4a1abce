"""Top-up of a contract by bank card: the cabinet's request, the bank's
signed notifications and the money they move (docs/topup.md).

The bank is the stack's sandbox (tests/sandbox/bank.py, FC_TBANK_URL):
Init answers a PaymentId and a payment page, paying on that page (or
through /_control/pay) makes it send AUTHORIZED and CONFIRMED to
nginx's /bank/v1/tbank/notification, signed with the terminal's
password.  Some tests sign notifications themselves with
FC_TBANK_PASSWORD and post them to nginx directly: a wrong token, a
wrong amount, the test clock.

Each test tops up a contract of its own, so a balance is never shared;
the sandbox's settings changed by a test (duplicates, reverse order)
are put back in a finally.  The sandboxes' data are never reset: other
modules' payments stay where they are.

test_outbox.py imports the helpers below.
"""

import concurrent.futures
import datetime
import decimal
import hashlib
import json
import re
import urllib.parse
import zoneinfo

import pytest

import fc
import procs
from test_openapi import check_text


CARD_SUCCESS = "4300000000000777"
CARD_DECLINED = "5000000000000009"

NOTIFICATION = "/bank/v1/tbank/notification"

# the routes as docs/openapi.yaml writes them
TOPUPS = "/api/v1/contracts/{id}/topups"
PAYMENT = "/api/v1/payments/{id}"
PAYMENTS = "/api/v1/payments"

MSK = zoneinfo.ZoneInfo("Europe/Moscow")

# the bank's default settings, restored after a test changes them
BANK_DEFAULTS = {"duplicates": 0, "reverse_order": False}

# seconds a test waits at most for the bank, nginx and the daemon to
# settle (a few normally; a loaded machine and a daemon with a queue of
# receipts, each a second of report polling, take longer)
SETTLE = 60


# ---------------------------------------------------------------------
# the bank's signature

def tbank_token(fields, password):
    """T-Bank's Token: the root-level scalar fields except Token itself
    (nested objects, arrays and nulls do not take part; booleans as
    "true"/"false"), plus Password, sorted by name, the values
    concatenated, SHA-256 in lower-case hex."""
    pairs = {"Password": password}
    for name, value in fields.items():
        if name == "Token" or value is None or isinstance(value,
                                                          (dict, list)):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs[name] = str(value)
    text = "".join(pairs[name] for name in sorted(pairs))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def signed(fields, password=None):
    body = dict(fields)
    body["Token"] = tbank_token(body, password or fc.env("FC_TBANK_PASSWORD"))
    return body


# ---------------------------------------------------------------------
# the sandbox servers

def sandbox_loads(raw):
    """JSON of a sandbox answer; sums stay exact (Decimal)."""
    return json.loads(raw.decode("utf-8"), parse_float=decimal.Decimal)


class Sandbox:
    """One sandbox server by its URL variable (FC_TBANK_URL, ...)."""

    def __init__(self, var):
        self.url = fc.env(var)
        self.client = fc.Client(self.url, timeout=30)

    def call(self, method, path, body=None, status=200):
        r = self.client.request(method, path, body=body)
        assert r.status == status, (method, path, r)
        return sandbox_loads(r.body)

    def get(self, route, **query):
        if query:
            route += "?" + urllib.parse.urlencode(query)
        return self.call("GET", route)

    def post(self, path, body=None, status=200):
        return self.call("POST", path, {} if body is None else body, status)

    def mode(self, **mode):
        return self.post("/_control/mode", mode)


def bank():
    return Sandbox("FC_TBANK_URL")


def atol():
    return Sandbox("FC_ATOL_URL")


def crm():
    return Sandbox("FC_CRM_URL")


def onec():
    return Sandbox("FC_ONEC_URL")


class bank_config:
    """`with bank_config(duplicates=4):` sets the bank sandbox's
    settings for the block and puts the defaults back afterwards."""

    def __init__(self, **settings):
        self.settings = settings

    def __enter__(self):
        bank().post("/_control/config", self.settings)
        return self

    def __exit__(self, *exc):
        bank().post("/_control/config", BANK_DEFAULTS)
        return False


def bank_notes(payment):
    """The notifications the bank queued for a payment, oldest first."""
    found = bank().get("/_control/payments",
                       PaymentId=payment["bank_payment_id"])
    assert len(found) == 1, found
    return found[0]["notifications"]


def notes_settled(payment, count):
    """The bank's notifications of a payment once there are `count`
    and none is still being sent, else None."""
    notes = bank_notes(payment)
    if len(notes) == count and all(n["state"] != "pending" for n in notes):
        return notes
    return None


def wait_notes(payment, count):
    return fc.wait_for(lambda: notes_settled(payment, count),
                       timeout=SETTLE,
                       what=f"{count} notifications of payment "
                            f"{payment['id']} to be answered")


def pay(payment, card=CARD_SUCCESS):
    """Pays through the sandbox's control route, as a payer would."""
    return bank().post("/_control/pay", {"PaymentId":
                                         payment["bank_payment_id"],
                                         "card": card})


def pay_by_form(payment, card=CARD_SUCCESS):
    """Posts the card form of the payment page, as a browser does;
    returns the Response (the page after paying)."""
    url = urllib.parse.urlsplit(payment["payment_url"])
    page = fc.Client(f"{url.scheme}://{url.netloc}", timeout=30)
    return page.request("POST", url.path,
                        raw=urllib.parse.urlencode({"card": card}).encode(),
                        headers={"Content-Type":
                                 "application/x-www-form-urlencoded",
                                 "Accept": "text/html"})


# ---------------------------------------------------------------------
# the platform

class World:
    """An organization with a user of every cabinet role."""

    def __init__(self):
        self.builder = procs.Builder()
        self.org = self.builder.org(tz="Europe/Moscow")
        self.users = {role: self.builder.user(self.org, role)
                      for role in ("owner", "accountant", "manager",
                                   "driver")}
        self.operator = self.builder.user(None, "operator")
        self.cabinets = {}

    def cabinet(self, role="owner"):
        if role not in self.cabinets:
            user = self.operator if role == "operator" else self.users[role]
            self.cabinets[role] = procs.cabinet_for(user)
        return self.cabinets[role]

    def contract(self, balance=50000):
        cid = self.builder.contract(self.org, balance=balance)
        self.builder.publish()
        return cid

    def close(self):
        self.builder.close()


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.close()


def new_key():
    return "topup-" + procs.tag() + procs.tag()


def topup(cab, contract_id, amount, key=None, email="books@test.example"):
    """Starts a top-up through the cabinet; returns the payment object
    of the 201 answer (with the bank's PaymentId and page)."""
    r = cab.post(f"/api/v1/contracts/{contract_id}/topups",
                 {"amount": amount, "email": email},
                 headers={"Idempotency-Key": key or new_key()})
    assert r.status == 201, r
    p = fc.check_openapi(r, TOPUPS, "POST")
    assert p["status"] == "NEW" and p["amount"] == amount, p
    assert p["bank_payment_id"] and p["payment_url"], p
    return p


def payment(cab, payment_id):
    r = cab.get(f"/api/v1/payments/{payment_id}")
    assert r.status == 200, r
    return fc.check_openapi(r, PAYMENT)


def balance(contract_id):
    """The contract's balance as PostgreSQL has it."""
    return procs.scalar("SELECT coalesce((SELECT balance FROM "
                        "contract_balances WHERE contract_id = %s), 0)",
                        (contract_id,))


def cabinet_balance(cab, contract_id):
    r = cab.get(f"/api/v1/contracts/{contract_id}")
    assert r.status == 200, r
    return r.json()["balance"]


def ledger(contract_id, kinds=("topup", "topup_refund")):
    """(kind, amount, ref) of the contract's top-up entries, in order."""
    return procs.query("SELECT kind, amount, ref FROM ledger "
                       "WHERE contract_id = %s AND kind = ANY(%s) "
                       "ORDER BY id", (contract_id, list(kinds)))


def events(payment_id):
    """(bank_status, outcome, reason) of every notification recorded."""
    return procs.query("SELECT bank_status, outcome, reason "
                       "FROM payment_events WHERE payment_id = %s "
                       "ORDER BY id", (payment_id,))


def notification(p, status, amount=None, success=True, **extra):
    """A notification of the bank about payment p, as the sandbox bank
    would send it (unsigned)."""
    body = {"TerminalKey": fc.env("FC_TBANK_TERMINAL_KEY"),
            "OrderId": p["order_id"],
            "Success": success,
            "Status": status,
            "PaymentId": int(p["bank_payment_id"]),
            "ErrorCode": "0",
            "Amount": p["amount"] if amount is None else amount,
            "CardId": 777123,
            "Pan": "430000******0777",
            "ExpDate": "1230",
            "RRN": "612345678901",
            "ApprovalCode": "A1B2C3"}
    body.update(extra)
    return body


def notify(body, now=None):
    """Posts a notification to nginx as the bank does."""
    headers = {"Accept": "*/*"}
    if now is not None:
        headers["X-FC-Test-Now"] = str(int(now))
    return fc.Client().request("POST", NOTIFICATION, body=body,
                               headers=headers)


def assert_ok(r):
    """The acknowledgement the bank waits for: 200 with the body OK."""
    assert r.status == 200, r
    assert r.body == b"OK", r
    assert r.content_type == "text/plain", r
    check_text(r, NOTIFICATION, "POST")


def wait_status(cab, payment_id, status):
    return fc.wait_for(
        lambda: (lambda p: p if p["status"] == status else None)(
            payment(cab, payment_id)),
        timeout=SETTLE, what=f"payment {payment_id} to be {status}")


def wait_deliveries(cab, payment_id, kinds):
    """The payment once each of `kinds` has an outbox row that is no
    longer pending."""
    def settled():
        p = payment(cab, payment_id)
        states = {d["kind"]: d["state"] for d in p["deliveries"]}
        if all(states.get(k) in ("done", "dead") for k in kinds):
            return p
        return None
    return fc.wait_for(settled, timeout=SETTLE,
                       what=f"deliveries {kinds} of payment {payment_id}")


def platform_metrics():
    """The gauges of GET /metrics/platform as {series: value}."""
    r = fc.Client().get("/metrics/platform", headers={"Accept": "*/*"})
    assert r.status == 200, r
    out = {}
    for line in check_text(r, "/metrics/platform").splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (-?[0-9]+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def moscow_unix(*fields):
    return int(datetime.datetime(*fields, tzinfo=MSK).timestamp())


# ---------------------------------------------------------------------
# the signature

def test_published_init_token_example_reproduces_and_the_bank_accepts_it():
    example = {"TerminalKey": "MerchantTerminalKey", "Amount": 19200,
               "OrderId": "00000",
               "Description": "Подарочная карта на 1000 рублей",
               "DATA": {"Email": "a@test.example"},
               "Receipt": {"Items": []}}
    assert tbank_token(example, "11111111111111") == (
        "72dd466f8ace0a37a1f740ce5fb78101712bc0665d91a8108c7c8a0ccd426db2")

    # the same rule signs a request the sandbox bank takes
    init = {"TerminalKey": fc.env("FC_TBANK_TERMINAL_KEY"), "Amount": 19200,
            "OrderId": "token-" + procs.tag(),
            "Description": "Подарочная карта на 1000 рублей",
            "DATA": {"Email": "a@test.example"}}
    answer = bank().post("/v2/Init", signed(init))
    assert answer["Success"] is True and answer["ErrorCode"] == "0", answer
    assert answer["Amount"] == 19200 and answer["PaymentId"], answer

    # and the bank does check it
    init["OrderId"] = "token-" + procs.tag()
    answer = bank().post("/v2/Init", signed(init, "0" * 64))
    assert answer["Success"] is False and answer["ErrorCode"] == "204", answer


# ---------------------------------------------------------------------
# the cabinet

def test_cabinet_topup_is_idempotent_role_checked_bounded_and_credited_once(
        world, redis):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet("accountant")
    key = new_key()
    body = {"amount": 150000, "email": "books@test.example"}
    path = f"/api/v1/contracts/{cid}/topups"

    r = cab.post(path, body, headers={"Idempotency-Key": key})
    assert r.status == 201, r
    p = fc.check_openapi(r, TOPUPS, "POST")
    assert p["contract_id"] == cid and p["amount"] == 150000, p
    assert p["status"] == "NEW" and p["email"] == body["email"], p
    assert re.fullmatch(r"FC-%d-[0-9a-f]{6}" % p["id"], p["order_id"]), p
    assert p["payment_url"].startswith(fc.env("FC_TBANK_URL") + "/pay/"), p

    again = cab.post(path, body, headers={"Idempotency-Key": key})
    assert again.status == 200, again
    assert fc.check_openapi(again, TOPUPS, "POST") == p, \
        "the same key answers the same payment"

    other = cab.post(path, dict(body, amount=150001),
                     headers={"Idempotency-Key": key})
    procs.error_of(other, 409, "conflict", TOPUPS, "POST")

    for role in ("manager", "driver"):
        denied = world.cabinet(role).post(path, body,
                                          headers={"Idempotency-Key":
                                                   new_key()})
        procs.error_of(denied, 403, "forbidden", TOPUPS, "POST")

    for amount in (9999, 100000001):
        low_high = cab.post(path, dict(body, amount=amount),
                            headers={"Idempotency-Key": new_key()})
        err = procs.error_of(low_high, 422, "validation_failed", TOPUPS,
                             "POST")
        assert err["message"].startswith("amount:"), err
        assert "10000" in err["message"] and "100000000" in err["message"], \
            err

    # the bounds themselves are allowed
    small = topup(cab, cid, 10000)
    large = topup(cab, cid, 100000000)
    # nothing of this has moved money
    assert balance(cid) == before

    page = pay_by_form(p)
    assert page.status == 200 and b"CONFIRMED" in page.body, page
    done = wait_status(cab, p["id"], "CONFIRMED")
    assert done["pan"] == "430000******0777" and done["rrn"], done
    wait_notes(p, 2)

    assert balance(cid) == before + 150000
    assert cabinet_balance(cab, cid) == before + 150000
    assert procs.redis_ctr(redis, cid)["balance"] == str(before + 150000), \
        "Redis follows the credit"
    assert ledger(cid) == [("topup", 150000, p["bank_payment_id"])]

    after = cab.post(path, body, headers={"Idempotency-Key": key})
    assert after.status == 200 and after.json()["id"] == p["id"], after
    assert after.json()["status"] == "CONFIRMED", after
    assert balance(cid) == before + 150000, "credited once"

    # the list shows it, newest first, with what the payment shows
    listed = cab.get(f"{PAYMENTS}?contract_id={cid}&limit=2")
    assert listed.status == 200, listed
    page = fc.check_openapi(listed, PAYMENTS)
    assert [i["id"] for i in page["items"]] == [large["id"], small["id"]]
    assert page["next_cursor"] == str(small["id"]), page
    listed = cab.get(f"{PAYMENTS}?contract_id={cid}"
                     f"&cursor={page['next_cursor']}")
    assert listed.status == 200, listed
    page = fc.check_openapi(listed, PAYMENTS)
    assert page == {"items": [payment(cab, p["id"])], "next_cursor": None}


# ---------------------------------------------------------------------
# the bank's notifications

def test_confirmed_delivered_five_times_credits_once(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 250000)

    with bank_config(duplicates=4):
        pay(p)
        notes = wait_notes(p, 10)

    confirmed = [n for n in notes if n["body"]["Status"] == "CONFIRMED"]
    assert len(confirmed) == 5
    for n in notes:
        assert n["state"] == "delivered", n
        assert [(a["http_status"], a["answer"]) for a in n["attempts"]] \
            == [(200, "OK")], "every copy gets 200 OK at once"

    assert balance(cid) == before + 250000
    assert ledger(cid) == [("topup", 250000, p["bank_payment_id"])]
    outcomes = [(s, o) for s, o, _ in events(p["id"]) if s == "CONFIRMED"]
    assert outcomes == [("CONFIRMED", "applied")] \
        + [("CONFIRMED", "duplicate")] * 4
    assert payment(cab, p["id"])["status"] == "CONFIRMED"


def test_five_copies_of_confirmed_at_the_same_moment_credit_once(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 260000)
    body = signed(notification(p, "CONFIRMED"))

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: notify(body), range(5)))

    for r in answers:
        assert_ok(r)
    assert balance(cid) == before + 260000
    assert ledger(cid) == [("topup", 260000, p["bank_payment_id"])]
    assert sorted(o for _, o, _ in events(p["id"])) == \
        ["applied"] + ["duplicate"] * 4


def test_confirmed_before_authorized_credits_once(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 120000)

    with bank_config(reverse_order=True):
        pay(p)
        notes = wait_notes(p, 2)

    assert [n["body"]["Status"] for n in notes] == ["CONFIRMED",
                                                     "AUTHORIZED"]
    assert all(n["state"] == "delivered" for n in notes), notes
    assert [(s, o) for s, o, _ in events(p["id"])] == [
        ("CONFIRMED", "applied"), ("AUTHORIZED", "stale")]
    assert payment(cab, p["id"])["status"] == "CONFIRMED"
    assert balance(cid) == before + 120000
    assert ledger(cid) == [("topup", 120000, p["bank_payment_id"])]


def test_wrong_token_gets_403_and_changes_nothing(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 90000)
    good = notification(p, "CONFIRMED")

    wrong_password = signed(good, "0" * 64)
    tampered = dict(signed(good), Amount=9000000)
    unsigned = dict(good)
    for body in (wrong_password, tampered, unsigned):
        r = notify(body)
        procs.error_of(r, 403, "forbidden", NOTIFICATION, "POST")

    assert balance(cid) == before
    assert payment(cab, p["id"])["status"] == "NEW"
    assert events(p["id"]) == []
    assert ledger(cid) == []

    # the same notification signed right is taken
    assert_ok(notify(signed(good)))
    assert balance(cid) == before + 90000


def test_amount_differing_from_the_order_is_an_anomaly_never_credited(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 70000)
    anomalies = platform_metrics()["fc_payment_anomalies"]

    assert_ok(notify(signed(notification(p, "CONFIRMED", amount=7000000))))

    assert events(p["id"]) == [("CONFIRMED", "anomaly", "amount_mismatch")]
    assert payment(cab, p["id"])["status"] == "NEW"
    assert balance(cid) == before
    assert ledger(cid) == []
    assert platform_metrics()["fc_payment_anomalies"] == anomalies + 1


def test_refund_notifications_debit_back(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 100000)
    pay(p)
    wait_notes(p, 2)
    assert balance(cid) == before + 100000

    bank().post("/_control/refund", {"PaymentId": p["bank_payment_id"],
                                     "Amount": 40000})
    wait_notes(p, 3)
    partial = payment(cab, p["id"])
    assert partial["status"] == "PARTIAL_REFUNDED", partial
    assert partial["refunded_amount"] == 40000, partial
    assert balance(cid) == before + 60000

    bank().post("/_control/refund", {"PaymentId": p["bank_payment_id"]})
    wait_notes(p, 4)
    full = payment(cab, p["id"])
    assert full["status"] == "REFUNDED" and full["refunded_amount"] == 100000
    assert balance(cid) == before
    assert [(k, a) for k, a, _ in ledger(cid)] == [
        ("topup", 100000), ("topup_refund", -40000), ("topup_refund", -60000)]


def test_declined_card_rejects_credits_nothing_and_tells_the_crm(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 80000)

    page = pay_by_form(p, CARD_DECLINED)
    assert page.status == 200 and b"REJECTED" in page.body, page
    notes = wait_notes(p, 1)
    assert notes[0]["body"]["Status"] == "REJECTED", notes
    assert notes[0]["state"] == "delivered", notes

    done = wait_deliveries(cab, p["id"], ["crm"])
    assert done["status"] == "REJECTED", done
    assert done["receipt"] is None, "no receipt for money not taken"
    assert [(d["kind"], d["state"]) for d in done["deliveries"]] == [
        ("crm", "done")]
    assert balance(cid) == before
    assert ledger(cid) == []

    records = [r for r in crm().get("/_control/records")
               if r["body"].get("payment_id") == p["id"]]
    assert len(records) == 1, records
    assert records[0]["calls"] == 1, records
    assert records[0]["body"]["status"] == "REJECTED", records
    assert records[0]["body"]["order_id"] == p["order_id"], records


def test_topup_at_0330_on_a_saturday_is_credited_at_once(world):
    cid = world.contract()
    before = balance(cid)
    cab = world.cabinet()
    p = topup(cab, cid, 300000)
    saturday = datetime.datetime(2026, 11, 28, 3, 30, tzinfo=MSK)
    assert saturday.weekday() == 5
    now = int(saturday.timestamp())

    assert_ok(notify(signed(notification(p, "CONFIRMED")), now=now))
    assert cabinet_balance(cab, cid) == before + 300000

    got = payment(cab, p["id"])
    assert got["status"] == "CONFIRMED", got
    assert got["confirmed_at"] == "2026-11-28T03:30:00+03:00", got
    at = procs.scalar("SELECT extract(epoch FROM created_at)::bigint "
                      "FROM ledger WHERE kind = 'topup' AND ref = %s",
                      (p["bank_payment_id"],))
    assert at == now, "the credit is dated when the bank confirmed it"


# ---------------------------------------------------------------------
# the payer's return

def test_the_payers_return_page_promises_nothing_about_the_payment():
    for method in ("GET", "HEAD"):
        r = fc.Client().request(method, "/topup/success")
        assert r.status == 200, r
    body = fc.check_openapi(fc.Client().get("/topup/success"),
                            "/topup/success")
    assert "as soon as the bank confirms" in body["message"], body
