"""Tests of the sandbox servers themselves, without the platform.

  python3 -m pytest -q tests/sandbox

Starts bank, atol, crm and onec on 127.0.0.1 ports SANDBOX_TEST_PORT+1
to +4 (default 27891-27894) and a stand-in for the merchant's
notification endpoint on SANDBOX_TEST_RECEIVER_PORT (default 27880),
with secrets and state in a temporary directory; stops them at the end.
"""

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bank as bank_module  # noqa: E402

BASE_PORT = int(os.environ.get("SANDBOX_TEST_PORT", "27890"))
RECEIVER_PORT = int(os.environ.get("SANDBOX_TEST_RECEIVER_PORT", "27880"))
PORTS = {"bank": BASE_PORT + 1, "atol": BASE_PORT + 2, "crm": BASE_PORT + 3,
         "onec": BASE_PORT + 4}
TERMINAL_KEY = "FuelCardDemo0badf00d"
PASSWORD = "0123456789abcdef"
NOTIFY_PATH = "/bank/v1/tbank/notification"

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(name, method, path, body=None, headers=None, raw=None):
    """(status, parsed JSON or text) of one request to a sandbox."""
    data = raw if raw is not None else (
        None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORTS[name]}{path}", data=data, method=method,
        headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with OPENER.open(request, timeout=10) as response:
            status, payload = response.status, response.read()
            ctype = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
        ctype = e.headers.get("Content-Type", "")
    if ctype.startswith("application/json"):
        return status, json.loads(payload)
    return status, payload


def wait_until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------------
# fixtures

class Receiver:
    """The merchant's notification endpoint: records what it gets and
    answers what the test says (200 "OK" by default)."""

    def __init__(self, port):
        self.received = []
        self.answers = []           # (status, text) used first, in order
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                receiver.received.append(json.loads(self.rfile.read(length)))
                status, text = (receiver.answers.pop(0) if receiver.answers
                                else (200, "OK"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}{NOTIFY_PATH}"


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sandbox")
    secrets = {"tk": TERMINAL_KEY, "pw": PASSWORD, "atol": "atol-secret",
               "onec": "onec-secret"}
    for name, value in secrets.items():
        (tmp / name).write_text(value + "\n")
    extra = {
        "bank": ["--terminal-key-file", str(tmp / "tk"),
                 "--password-file", str(tmp / "pw")],
        "atol": ["--login", "fc-demo", "--password-file", str(tmp / "atol")],
        "crm": [],
        "onec": ["--user", "fc-exchange", "--password-file",
                 str(tmp / "onec")],
    }
    procs = []
    for name, port in PORTS.items():
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, f"{name}.py"), "--port",
             str(port), "--state-dir", str(tmp / "state")] + extra[name],
            stderr=open(tmp / f"{name}.log", "w")))
    try:
        for name in PORTS:
            wait_until(lambda: health(name))
        yield tmp
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(10) == 0


def health(name):
    try:
        return call(name, "GET", "/_control/health")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def receiver():
    r = Receiver(RECEIVER_PORT)
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(autouse=True)
def fresh(sandboxes):
    for name in PORTS:
        assert call(name, "POST", "/_control/reset", {})[0] == 200


# ---------------------------------------------------------------------
# bank

def signed(fields):
    fields = dict(fields, TerminalKey=TERMINAL_KEY)
    fields["Token"] = bank_module.token(fields, PASSWORD)
    return fields


def init(receiver, amount=500000, order_id=None):
    order_id = order_id or f"FC-1-{uuid.uuid4().hex[:6]}"
    status, body = call("bank", "POST", "/v2/Init", signed({
        "Amount": amount, "OrderId": order_id,
        "Description": "Пополнение договора FC-0001",
        "NotificationURL": receiver.url(), "DATA": {"Email": "a@b.ru"}}))
    assert status == 200 and body["Success"], body
    return body


def test_token_matches_the_published_example():
    fields = {"Amount": 19200, "Description": "Подарочная карта на 1000 "
              "рублей", "OrderId": "00000",
              "TerminalKey": "MerchantTerminalKey"}
    assert bank_module.token(fields, "11111111111111") == \
        "72dd466f8ace0a37a1f740ce5fb78101712bc0665d91a8108c7c8a0ccd426db2"


def test_token_skips_nested_and_null_and_writes_booleans_lowercase():
    fields = {"Success": False, "DATA": {"a": 1}, "Receipt": [1], "X": None,
              "Token": "ignored", "Amount": 5}
    assert bank_module.token(fields, "pw") == \
        hashlib.sha256("5pwfalse".encode()).hexdigest()


def test_init_is_idempotent_per_order_and_gives_a_payment_url(receiver):
    first = init(receiver, order_id="FC-7-aaaaaa")
    again = init(receiver, order_id="FC-7-aaaaaa")
    assert first["PaymentId"] == again["PaymentId"]
    assert first["PaymentId"].isdigit() and first["Status"] == "NEW"
    assert first["PaymentURL"] == \
        f"http://127.0.0.1:{PORTS['bank']}/pay/{first['PaymentId']}"


def test_wrong_token_is_error_204(receiver):
    fields = signed({"Amount": 100, "OrderId": "FC-x"})
    fields["Amount"] = 101
    status, body = call("bank", "POST", "/v2/Init", fields)
    assert status == 200
    assert (body["Success"], body["ErrorCode"], body["Message"]) == \
        (False, "204", "Неверный токен")


def test_success_card_notifies_authorized_then_confirmed_signed(receiver):
    receiver.received.clear()
    payment = init(receiver)
    status, view = call("bank", "POST", "/_control/pay", {
        "PaymentId": payment["PaymentId"], "card": "4300000000000777"})
    assert status == 200 and view["Status"] == "CONFIRMED"
    got = wait_until(lambda: len(receiver.received) >= 2 and receiver.received)
    assert [n["Status"] for n in got] == ["AUTHORIZED", "CONFIRMED"]
    for n in got:
        assert n["Token"] == bank_module.token(n, PASSWORD)
        assert n["Pan"] == "430000******0777" and n["Success"] is True
        assert n["PaymentId"] == int(payment["PaymentId"])
        assert n["Amount"] == 500000 and n["TerminalKey"] == TERMINAL_KEY
        assert len(n["RRN"]) == 12 and len(n["ApprovalCode"]) == 6
    _, state = call("bank", "POST", "/v2/GetState",
                    signed({"PaymentId": payment["PaymentId"]}))
    assert state["Status"] == "CONFIRMED"
    _, listed = call("bank", "GET", "/_control/payments")
    notes = listed[0]["notifications"]
    wait_until(lambda: all(n["state"] == "delivered" for n in
                           call("bank", "GET", "/_control/payments")[1][0]
                           ["notifications"]))
    assert len(notes) == 2


def test_declined_card_notifies_rejected_1051(receiver):
    receiver.received.clear()
    payment = init(receiver)
    call("bank", "POST", "/_control/pay", {"PaymentId": payment["PaymentId"],
                                           "card": "5000000000000009"})
    got = wait_until(lambda: receiver.received)
    assert (got[0]["Status"], got[0]["Success"], got[0]["ErrorCode"]) == \
        ("REJECTED", False, "1051")


def test_timeout_card_sends_nothing(receiver):
    receiver.received.clear()
    payment = init(receiver)
    status, view = call("bank", "POST", "/_control/pay", {
        "PaymentId": payment["PaymentId"], "card": "4000000000000002"})
    assert status == 200 and view["Status"] == "NEW"
    time.sleep(0.5)
    assert receiver.received == []


def test_payment_page_form_pays(receiver):
    payment = init(receiver)
    status, page = call("bank", "GET", f"/pay/{payment['PaymentId']}")
    assert status == 200 and b"<form" in page
    status, _ = call("bank", "POST", f"/pay/{payment['PaymentId']}",
                     raw=b"card=4300+0000+0000+0777",
                     headers={"Content-Type":
                              "application/x-www-form-urlencoded"})
    assert status == 200
    _, log = call("bank", "GET", "/_control/log?path=/pay/")
    assert log[-1]["body"]["card"] == "430000******0777"


def test_notification_is_retried_until_200_ok(receiver):
    receiver.received.clear()
    call("bank", "POST", "/_control/config", {"retry_interval_ms": 100})
    receiver.answers = [(500, "no"), (200, "NOT OK"), (200, "OK")]
    payment = init(receiver)
    call("bank", "POST", "/_control/expire",
         {"PaymentId": payment["PaymentId"]})
    wait_until(lambda: len(receiver.received) == 3)
    time.sleep(0.3)
    assert len(receiver.received) == 3
    _, notes = call("bank", "GET", "/_control/notifications")
    assert [a["http_status"] for a in notes[0]["attempts"]] == [500, 200, 200]
    assert notes[0]["state"] == "delivered"


def test_duplicates_and_reverse_order(receiver):
    receiver.received.clear()
    call("bank", "POST", "/_control/config",
         {"duplicates": 2, "reverse_order": True})
    payment = init(receiver)
    call("bank", "POST", "/_control/pay", {"PaymentId": payment["PaymentId"],
                                           "card": "4300000000000777"})
    got = wait_until(lambda: len(receiver.received) >= 6 and receiver.received)
    assert [n["Status"] for n in got[:2]] == ["CONFIRMED", "AUTHORIZED"]
    assert sorted(n["Status"] for n in got) == ["AUTHORIZED"] * 3 + \
        ["CONFIRMED"] * 3


def test_refunds_are_partial_then_full(receiver):
    receiver.received.clear()
    payment = init(receiver, amount=10000)
    pid = payment["PaymentId"]
    call("bank", "POST", "/_control/pay", {"PaymentId": pid,
                                           "card": "4300000000000777"})
    status, view = call("bank", "POST", "/_control/refund",
                        {"PaymentId": pid, "Amount": 3000})
    assert status == 200 and view["Status"] == "PARTIAL_REFUNDED"
    status, view = call("bank", "POST", "/_control/refund",
                        {"PaymentId": pid, "Amount": 7001})
    assert status == 409
    status, view = call("bank", "POST", "/_control/refund",
                        {"PaymentId": pid})
    assert view["Status"] == "REFUNDED"
    got = wait_until(lambda: len(receiver.received) >= 4 and receiver.received)
    assert [(n["Status"], n["Amount"]) for n in got[2:]] == \
        [("PARTIAL_REFUNDED", 3000), ("REFUNDED", 7000)]


def test_arbitrary_notification_signed_or_not(receiver):
    receiver.received.clear()
    call("bank", "POST", "/_control/notify", {
        "url": receiver.url(), "OrderId": "FC-9", "Status": "WHATEVER",
        "PaymentId": 5, "Amount": 1, "Success": True})
    call("bank", "POST", "/_control/notify", {
        "url": receiver.url(), "OrderId": "FC-9", "sign": False})
    got = wait_until(lambda: len(receiver.received) == 2 and receiver.received)
    assert got[0]["Token"] == bank_module.token(got[0], PASSWORD)
    assert "Token" not in got[1]


def test_notification_to_another_host_is_refused(receiver):
    status, note = call("bank", "POST", "/_control/notify", {
        "url": "http://192.0.2.1/x", "OrderId": "FC-9"})
    assert status == 200 and note["state"] == "refused"


def test_registry_lists_the_day_in_cp1251_with_fee_and_options(receiver):
    pids = []
    for amount in (10000, 123456):
        pid = init(receiver, amount=amount)["PaymentId"]
        call("bank", "POST", "/_control/pay", {
            "PaymentId": pid, "card": "4300000000000777",
            "at": "2026-03-10T23:30:00+03:00"})
        pids.append(pid)
    call("bank", "POST", "/_control/refund", {
        "PaymentId": pids[0], "Amount": 2500, "at": "2026-03-10T23:50:00"})
    status, raw = call("bank", "GET", "/_control/registry?date=2026-03-10")
    assert status == 200
    rows = list(csv.reader(io.StringIO(raw.decode("cp1251")), delimiter=";"))
    assert rows[0][:3] == ["Дата операции", "Тип операции", "PaymentId"]
    assert [r[1] for r in rows[1:-1]] == ["Debit", "Debit", "Credit"]
    assert rows[1][0] == "10.03.2026 23:30:00"
    assert rows[1][8:] == ["100,00", "2,00", "98,00"]
    assert rows[2][8:] == ["1234,56", "24,69", "1209,87"]
    assert rows[3][8:] == ["25,00", "0,00", "25,00"]
    assert rows[-1][0] == "Итого"
    assert rows[-1][8:] == ["1309,56", "26,69", "1282,87"]
    # the day before and after in Moscow time hold nothing
    _, raw = call("bank", "GET", "/_control/registry?date=2026-03-11"
                                 "&encoding=utf-8")
    assert len(raw.decode().splitlines()) == 2

    query = (f"date=2026-03-10&encoding=utf-8&omit={pids[0]}"
             f"&amount={pids[1]}:100000&fee={pids[1]}:1&repeat={pids[1]}"
             f"&extra=1")
    _, raw = call("bank", "GET", f"/_control/registry?{query}")
    rows = list(csv.reader(io.StringIO(raw.decode()), delimiter=";"))[1:-1]
    mine = [r for r in rows if r[2] == pids[1]]
    assert len(rows) == 3 and len(mine) == 2
    assert mine[0][8:] == ["1000,00", "0,01", "999,99"]


def test_failure_modes_fail_slow_drop(receiver):
    call("bank", "POST", "/_control/mode", {"mode": "fail", "count": 1,
                                            "status": 503})
    status, _ = call("bank", "POST", "/v2/GetState", signed({"PaymentId": 1}))
    assert status == 503
    status, body = call("bank", "POST", "/v2/GetState",
                        signed({"PaymentId": 1}))
    assert status == 200 and body["ErrorCode"] == "7"

    call("crm", "POST", "/_control/mode", {"mode": "slow", "delay_ms": 300})
    started = time.monotonic()
    status, _ = call("crm", "POST", "/payments", {"a": 1},
                     {"Idempotency-Key": "k-slow"})
    assert status == 201 and time.monotonic() - started >= 0.3

    call("onec", "POST", "/_control/mode", {"mode": "drop", "count": 1})
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call("onec", "GET", "/odata/standard.odata/Document_X")
    _, log = call("onec", "GET", "/_control/log")
    assert log[-1]["status"] == "dropped"


# ---------------------------------------------------------------------
# cash register

def receipt(external_id, total="5000.00", vat_sum="901.64", **changes):
    body = {
        "external_id": external_id,
        "timestamp": "10.03.2026 12:00:00",
        "service": {"callback_url": ""},
        "receipt": {
            "client": {"email": "payer@example.ru"},
            "company": {"email": "receipts@fuelcard.example", "sno": "osn",
                        "inn": "7736050003",
                        "payment_address": "https://cabinet.fuelcard.example"},
            "items": [{"name": "Аванс по договору FC-0001", "price": total,
                       "quantity": 1, "sum": total,
                       "payment_method": "advance",
                       "payment_object": "payment",
                       "vat": {"type": "vat122", "sum": vat_sum}}],
            "payments": [{"type": 1, "sum": total}],
            "total": total,
        },
    }
    body["receipt"].update(changes)
    # money goes over the wire as JSON numbers, written from text
    return json.dumps(body).replace(f'"{total}"', total) \
        .replace(f'"{vat_sum}"', vat_sum).encode()


def atol_token():
    status, body = call("atol", "POST", "/possystem/v4/getToken",
                        {"login": "fc-demo", "pass": "atol-secret"})
    assert status == 200 and body["error"] is None
    return body["token"]


def test_atol_sell_is_idempotent_and_reports_wait_then_done():
    assert call("atol", "POST", "/possystem/v4/getToken",
                {"login": "fc-demo", "pass": "wrong"})[0] == 401
    token = atol_token()
    path = "/possystem/v4/fc-demo-group/sell"
    status, first = call("atol", "POST", path, raw=receipt("receipt:1"),
                         headers={"Token": token})
    assert status == 200 and first["status"] == "wait"
    status, again = call("atol", "POST", path, raw=receipt("receipt:1"),
                         headers={"Token": token})
    assert again["uuid"] == first["uuid"]
    report = f"/possystem/v4/fc-demo-group/report/{first['uuid']}"
    _, r1 = call("atol", "GET", report, headers={"Token": token})
    _, r2 = call("atol", "GET", report, headers={"Token": token})
    assert r1["status"] == "wait" and r2["status"] == "done"
    p = r2["payload"]
    assert p["total"] == 5000.00 and len(p["fn_number"]) == 16
    for field in ("fiscal_receipt_number", "shift_number",
                  "fiscal_document_number", "fiscal_document_attribute",
                  "ecr_registration_number", "ofd_receipt_url"):
        assert p[field]
    assert len(p["receipt_datetime"]) == 19
    _, receipts = call("atol", "GET", "/_control/receipts")
    assert len(receipts) == 1 and receipts[0]["sell_calls"] == 2


@pytest.mark.parametrize("body,words", [
    (receipt("r:2", total="5000.00", vat_sum="900.00"), "vat.sum"),
    (receipt("r:3", total="5000.00", payments=[{"type": 1, "sum": 1}]),
     "payments"),
    (receipt("r:4", total="5000.00", client={}), "email"),
    (receipt("r:5", total="5000.00", company={"sno": "osn"}), "inn"),
], ids=["vat", "payments", "email", "inn"])
def test_atol_refuses_an_invalid_receipt(body, words):
    token = atol_token()
    status, reply = call("atol", "POST", "/possystem/v4/g/sell", raw=body,
                         headers={"Token": token})
    assert status == 400 and words in reply["error"]["text"]
    assert call("atol", "GET", "/_control/receipts")[1] == []


def test_atol_refuses_an_expired_token():
    token = atol_token()
    call("atol", "POST", "/_control/expire_tokens", {})
    status, _ = call("atol", "POST", "/possystem/v4/g/sell",
                     raw=receipt("r:6"), headers={"Token": token})
    assert status == 401


# ---------------------------------------------------------------------
# CRM and 1C

def test_crm_stores_once_per_idempotency_key():
    key = {"Idempotency-Key": "outbox 1"}
    assert call("crm", "POST", "/payments", {"a": 1}, key)[0] == 201
    assert call("crm", "POST", "/payments", {"a": 1}, key)[0] == 200
    assert call("crm", "POST", "/payments", {"a": 1})[0] == 400
    _, records = call("crm", "GET", "/_control/records")
    assert len(records) == 1 and records[0]["calls"] == 2


def test_onec_creates_once_and_answers_get():
    kind = "ПоступлениеОплатыПоПлатежнойКарте"
    quoted = urllib.request.quote(kind)
    auth = {"Authorization": "Basic " + base64.b64encode(
        b"fc-exchange:onec-secret").decode()}
    ref = str(uuid.uuid4())
    path = f"/odata/standard.odata/Document_{quoted}?$format=json"
    body = {"Ref_Key": ref, "СуммаДокумента": 5000.00}
    assert call("onec", "POST", path, body)[0] == 401
    status, doc = call("onec", "POST", path, body, auth)
    assert status == 201 and doc["Ref_Key"] == ref
    status, err = call("onec", "POST", path, body, auth)
    assert status == 409 and "already exists" in \
        err["odata.error"]["message"]["value"]
    one = f"/odata/standard.odata/Document_{quoted}(guid'{ref}')?$format=json"
    assert call("onec", "GET", one, headers=auth)[0] == 200
    missing = one.replace(ref, str(uuid.uuid4()))
    assert call("onec", "GET", missing, headers=auth)[0] == 404
    _, docs = call("onec", "GET", "/_control/documents")
    assert [(d["kind"], d["posts"]) for d in docs] == [(kind, 2)]
