#!/usr/bin/env python3
"""Sandbox of T-Bank internet acquiring: Init, GetState, Cancel, a
payment page, signed notifications with retries, and the next-day
registry.

  python3 tests/sandbox/bank.py --port 18091 --state-dir DIR \
      --terminal-key-file F --password-file F

Protocol routes (JSON, always HTTP 200, Success false on errors):
  POST /v2/Init        TerminalKey, Amount, OrderId, Description,
                       NotificationURL, SuccessURL, FailURL, DATA, Token
  POST /v2/GetState    TerminalKey, PaymentId, Token
  POST /v2/Cancel      TerminalKey, PaymentId, Amount?, Token
  GET  /pay/<id>       the payment page (an HTML form)
  POST /pay/<id>       card=<number>: pays
Test cards: 4300000000000777 succeeds (AUTHORIZED, then CONFIRMED),
5000000000000009 is declined (REJECTED, ErrorCode 1051),
4000000000000002 never answers (the payment stays NEW).

Control routes (besides those of sandbox_common):
  POST /_control/pay          {"PaymentId", "card", "at"?}
  POST /_control/refund       {"PaymentId", "Amount"?, "at"?}
  POST /_control/expire       {"PaymentId"}: DEADLINE_EXPIRED
  POST /_control/notify       {fields..., "sign"?, "url"?, "raw"?}
  GET  /_control/payments     every payment with its notifications
  GET  /_control/notifications
  GET  /_control/config, POST /_control/config
                              {"retry_interval_ms", "duplicates",
                               "reverse_order", "fee_bp", "max_attempts",
                               "timeout_ms"}
  GET  /_control/registry?date=YYYY-MM-DD[&encoding=utf-8][&omit=ID]
       [&amount=ID:kopecks][&fee=ID:kopecks][&repeat=ID][&extra=N]

Notifications carry, besides the bank's usual fields, RRN and
ApprovalCode: the registry's matching keys.
"""

import hashlib
import heapq
import html
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime

import sandbox_common as sc


# test cards and what paying with them does
CARD_SUCCESS = "4300000000000777"
CARD_DECLINED = "5000000000000009"
CARD_TIMEOUT = "4000000000000002"
DECLINE_CODE = "1051"

ERR_TOKEN = ("204", "Неверный токен")
ERR_TERMINAL = ("202", "Терминал не найден")
ERR_PARAMS = ("9999", "Неверные параметры запроса")
ERR_NOT_FOUND = ("7", "Платёж не найден")
ERR_STATUS = ("8", "Операция невозможна в текущем статусе платежа")
ERR_ORDER = ("335", "Заказ с таким OrderId уже создан с другой суммой")

DEFAULT_CONFIG = {
    "retry_interval_ms": 2000,  # between attempts of one notification
    "duplicates": 0,            # extra copies of every notification
    "reverse_order": False,     # CONFIRMED before AUTHORIZED
    "fee_bp": 200,              # the bank's fee, 1/100 of a percent
    "max_attempts": 1800,       # then the bank gives up (0: never)
    "timeout_ms": 10000,        # the merchant's time to answer
}

REGISTRY_COLUMNS = ("Дата операции", "Тип операции", "PaymentId", "OrderId",
                    "RRN", "Код авторизации", "Карта", "Терминал", "Сумма",
                    "Комиссия", "К перечислению")


def token(fields, password):
    """T-Bank's signature: the root-level scalar fields but Token, plus
    Password, sorted by name, values concatenated, SHA-256 in hex."""
    pairs = {"Password": password}
    for name, value in fields.items():
        if name == "Token" or value is None or isinstance(value, (dict,
                                                              list)):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs[name] = str(value)
    text = "".join(pairs[name] for name in sorted(pairs))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rubles(kopecks):
    """1234,56: the registry's number format, from integer kopecks."""
    sign = "-" if kopecks < 0 else ""
    kopecks = abs(kopecks)
    return f"{sign}{kopecks // 100},{kopecks % 100:02d}"


def fee_of(amount, fee_bp):
    """The bank's fee in kopecks, rounded half up, in integers."""
    return (amount * fee_bp + 5000) // 10000


def is_kopecks(value):
    return isinstance(value, int) and not isinstance(value, bool)


class Bank(sc.App):
    """Sandbox of T-Bank internet acquiring."""

    name = "bank"

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--terminal-key-file", required=True)
        parser.add_argument("--password-file", required=True)

    def __init__(self, args):
        self.terminal_key = sc.read_secret(args.terminal_key_file)
        self.password = sc.read_secret(args.password_file)
        self.config = dict(DEFAULT_CONFIG)
        self.wakeup = threading.Condition()
        self.queue = []         # (due monotonic time, notification id)
        self.running = False
        super().__init__(args)
        # PaymentIds must never repeat, not even across a lost state
        # file: the ledger credits once per PaymentId
        self.data["next_id"] = max(self.data["next_id"],
                                   int(time.time()) * 1000)
        self.routes = [
            ("POST", r"/v2/Init", self.init),
            ("POST", r"/v2/GetState", self.get_state),
            ("POST", r"/v2/Cancel", self.cancel),
            ("GET", r"/pay/(\d+)", self.pay_page),
            ("POST", r"/pay/(\d+)", self.pay_form),
        ]
        self.control_routes = [
            ("POST", r"/_control/pay", self.control_pay),
            ("POST", r"/_control/refund", self.control_refund),
            ("POST", r"/_control/expire", self.control_expire),
            ("POST", r"/_control/notify", self.control_notify),
            ("GET", r"/_control/payments", self.control_payments),
            ("GET", r"/_control/notifications", self.control_notifications),
            ("GET", r"/_control/config", self.control_config),
            ("POST", r"/_control/config", self.control_config),
            ("GET", r"/_control/registry", self.control_registry),
        ]

    def empty_data(self):
        return {"next_id": 0, "payments": {}, "orders": {},
                "notifications": []}

    def reset(self):
        with self.lock:
            next_id = self.data["next_id"]
            self.data = self.empty_data()
            self.data["next_id"] = next_id
            self.config = dict(DEFAULT_CONFIG)
            self.save()
        with self.wakeup:
            self.queue = []
            self.wakeup.notify()

    def log_body(self, request):
        if request.path.startswith("/pay/"):
            form = request.form()
            if "card" in form:
                form["card"] = sc.mask_pan(form["card"])
            return form
        return super().log_body(request)

    # -----------------------------------------------------------------
    # protocol

    def answer(self, fields=None, error=None, details=None):
        body = {"Success": error is None,
                "ErrorCode": error[0] if error else "0",
                "TerminalKey": self.terminal_key}
        if error:
            body["Message"] = error[1]
            if details:
                body["Details"] = details
        body.update(fields or {})
        return sc.json_reply(200, body)

    def signed_request(self, request):
        """The request's fields if its terminal and Token are right,
        else the error answer to send."""
        try:
            fields = request.json_object()
        except ValueError as e:
            return None, self.answer(error=ERR_PARAMS, details=str(e))
        if fields.get("TerminalKey") != self.terminal_key:
            return None, self.answer(error=ERR_TERMINAL)
        sent = fields.get("Token")
        if not isinstance(sent, str) or not secrets.compare_digest(
                sent.lower(), token(fields, self.password)):
            return None, self.answer(
                error=ERR_TOKEN,
                details="Неверный токен. Проверьте пару TerminalKey и "
                        "пароль терминала.")
        return fields, None

    def payment_state(self, payment):
        return {"Status": payment["Status"],
                "PaymentId": payment["PaymentId"],
                "OrderId": payment["OrderId"],
                "Amount": payment["Amount"]}

    def init(self, request):
        fields, error = self.signed_request(request)
        if error:
            return error
        amount = fields.get("Amount")
        order_id = fields.get("OrderId")
        if not is_kopecks(amount) or amount <= 0:
            return self.answer(error=ERR_PARAMS,
                               details=f"Amount {amount!r} is not a "
                                       f"positive number of kopecks")
        if not isinstance(order_id, str) or not 0 < len(order_id) <= 36:
            return self.answer(error=ERR_PARAMS,
                               details=f"OrderId {order_id!r} is not 1 to "
                                       f"36 characters")
        with self.lock:
            known = self.data["orders"].get(order_id)
            if known:
                payment = self.data["payments"][known]
                if payment["Amount"] != amount:
                    return self.answer(error=ERR_ORDER)
            else:
                payment_id = str(self.data["next_id"])
                self.data["next_id"] += 1
                payment = {
                    "PaymentId": payment_id,
                    "OrderId": order_id,
                    "Amount": amount,
                    "Description": fields.get("Description"),
                    "NotificationURL": fields.get("NotificationURL"),
                    "SuccessURL": fields.get("SuccessURL"),
                    "FailURL": fields.get("FailURL"),
                    "DATA": fields.get("DATA"),
                    "Status": "NEW",
                    "created_at": sc.iso(sc.now_utc()),
                    "confirmed_at": None,
                    "refunds": [],
                    "refunded": 0,
                    "card": None,
                    "ErrorCode": "0",
                }
                self.data["payments"][payment_id] = payment
                self.data["orders"][order_id] = payment_id
                self.save()
            state = self.payment_state(payment)
        state["PaymentURL"] = f"{self.base_url()}/pay/{state['PaymentId']}"
        return self.answer(state)

    def find(self, fields):
        payment_id = fields.get("PaymentId")
        if is_kopecks(payment_id):
            payment_id = str(payment_id)
        if not isinstance(payment_id, str):
            return None
        return self.data["payments"].get(payment_id)

    def get_state(self, request):
        fields, error = self.signed_request(request)
        if error:
            return error
        with self.lock:
            payment = self.find(fields)
            if payment is None:
                return self.answer(error=ERR_NOT_FOUND)
            state = self.payment_state(payment)
        state["Message"] = "OK"
        return self.answer(state)

    def cancel(self, request):
        fields, error = self.signed_request(request)
        if error:
            return error
        with self.lock:
            payment = self.find(fields)
            if payment is None:
                return self.answer(error=ERR_NOT_FOUND)
            original = payment["Amount"] - payment["refunded"]
            if payment["Status"] == "NEW":
                payment["Status"] = "CANCELED"
                self.save()
                return self.answer({"Status": "CANCELED",
                                    "PaymentId": payment["PaymentId"],
                                    "OrderId": payment["OrderId"],
                                    "OriginalAmount": original,
                                    "NewAmount": 0})
            amount = fields.get("Amount", original)
            problem = self.refund(payment, amount, sc.now_utc())
            if problem:
                return self.answer(error=ERR_STATUS, details=problem)
            return self.answer({"Status": payment["Status"],
                                "PaymentId": payment["PaymentId"],
                                "OrderId": payment["OrderId"],
                                "OriginalAmount": original,
                                "NewAmount": original - amount})

    # -----------------------------------------------------------------
    # paying

    def pay(self, payment, card, at):
        """Pays a NEW payment with a test card; returns an error text or
        None.  Callers hold self.lock."""
        if payment["Status"] != "NEW":
            return f"payment {payment['PaymentId']} is {payment['Status']}"
        if card not in (CARD_SUCCESS, CARD_DECLINED, CARD_TIMEOUT):
            return (f"card {sc.mask_pan(card)} is not a test card (use "
                    f"{CARD_SUCCESS}, {CARD_DECLINED} or {CARD_TIMEOUT})")
        if card == CARD_TIMEOUT:
            # the payer never finishes 3-D Secure: nothing happens
            payment["card"] = self.card_data(card)
            self.save()
            return None
        payment["card"] = self.card_data(card)
        if card == CARD_DECLINED:
            payment["Status"] = "REJECTED"
            payment["ErrorCode"] = DECLINE_CODE
            self.notify_status(payment, ["REJECTED"])
        else:
            payment["Status"] = "CONFIRMED"
            payment["confirmed_at"] = sc.iso(at)
            statuses = ["AUTHORIZED", "CONFIRMED"]
            if self.config["reverse_order"]:
                statuses.reverse()
            self.notify_status(payment, statuses)
        self.save()
        return None

    @staticmethod
    def card_data(card):
        return {"CardId": int(card[-4:]) * 1000 + secrets.randbelow(1000),
                "Pan": sc.mask_pan(card),
                "ExpDate": "1230",
                "RRN": "".join(str(secrets.randbelow(10))
                               for _ in range(12)),
                "ApprovalCode": secrets.token_hex(3).upper()}

    def refund(self, payment, amount, at):
        """Refunds part or all of a confirmed payment and notifies;
        returns an error text or None.  Callers hold self.lock."""
        if payment["Status"] not in ("CONFIRMED", "PARTIAL_REFUNDED"):
            return f"payment {payment['PaymentId']} is {payment['Status']}"
        left = payment["Amount"] - payment["refunded"]
        if not is_kopecks(amount) or not 0 < amount <= left:
            return f"Amount {amount!r} is not between 1 and {left}"
        payment["refunded"] += amount
        payment["refunds"].append({"amount": amount, "at": sc.iso(at)})
        payment["Status"] = ("REFUNDED" if payment["refunded"]
                             == payment["Amount"] else "PARTIAL_REFUNDED")
        self.notify_status(payment, [payment["Status"]], amount)
        self.save()
        return None

    def pay_page(self, request):
        payment_id = request.match.group(1)
        with self.lock:
            payment = self.data["payments"].get(payment_id)
            if payment is None:
                return sc.text_reply(404, "Платёж не найден\n")
            amount = payment["Amount"]
            description = payment["Description"] or ""
            status = payment["Status"]
        page = f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8">
<title>Оплата {payment_id}</title></head>
<body>
<h1>Оплата картой (песочница)</h1>
<p>{html.escape(description)}</p>
<p>Сумма: {rubles(amount)} ₽. Статус: {html.escape(status)}.</p>
<form method="post" action="/pay/{payment_id}">
<label>Номер карты <input name="card" value="{CARD_SUCCESS}"></label>
<button type="submit">Оплатить</button>
</form>
<p>Тестовые карты: {CARD_SUCCESS} (успех), {CARD_DECLINED} (отказ),
{CARD_TIMEOUT} (нет ответа).</p>
</body></html>
"""
        return sc.text_reply(200, page, "text/html; charset=utf-8")

    def pay_form(self, request):
        payment_id = request.match.group(1)
        card = re.sub(r"\D", "", request.form().get("card", ""))
        with self.lock:
            payment = self.data["payments"].get(payment_id)
            if payment is None:
                return sc.text_reply(404, "Платёж не найден\n")
            problem = self.pay(payment, card, sc.now_utc())
            status = payment["Status"]
            back = (payment["SuccessURL"] if status == "CONFIRMED"
                    else payment["FailURL"]) or ""
        if problem:
            return sc.text_reply(409, problem + "\n")
        link = (f'<p><a href="{html.escape(back)}">Вернуться в магазин</a></p>'
                if back else "")
        page = f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>{status}</title></head>
<body><h1>{html.escape(status)}</h1>{link}</body></html>
"""
        return sc.text_reply(200, page, "text/html; charset=utf-8")

    # -----------------------------------------------------------------
    # notifications
    #
    # Every notification is a record in data["notifications"] with the
    # body as sent and each attempt with our answer.  One thread sends
    # them in the order they became due; one that is not answered
    # 200 "OK" is due again retry_interval_ms later and does not hold
    # back the others, as with the real bank, where order is not
    # guaranteed either.

    def notify_status(self, payment, statuses, amount=None):
        """Queues one notification per status (plus duplicates).
        Callers hold self.lock."""
        bodies = []
        for status in statuses:
            card = payment["card"] or {}
            body = {
                "TerminalKey": self.terminal_key,
                "OrderId": payment["OrderId"],
                "Success": status not in ("REJECTED", "DEADLINE_EXPIRED"),
                "Status": status,
                "PaymentId": int(payment["PaymentId"]),
                "ErrorCode": payment["ErrorCode"],
                "Amount": payment["Amount"] if amount is None else amount,
            }
            for name in ("CardId", "Pan", "ExpDate", "RRN", "ApprovalCode"):
                if name in card:
                    body[name] = card[name]
            body["Token"] = token(body, self.password)
            bodies.append(body)
        for _ in range(1 + self.config["duplicates"]):
            for body in bodies:
                self.enqueue(payment["NotificationURL"], body,
                             payment["PaymentId"])

    def enqueue(self, url, body, payment_id, raw=None):
        """Records a notification and wakes the sender.  Callers hold
        self.lock."""
        note = {"id": len(self.data["notifications"]) + 1,
                "PaymentId": payment_id,
                "url": url,
                "body": body if raw is None else raw,
                "state": "pending",
                "attempts": []}
        if not url:
            note["state"] = "no_url"
        elif not sc.loopback_url(url):
            note["state"] = "refused"
            note["error"] = "the sandbox sends only to http://127.0.0.1"
        self.data["notifications"].append(note)
        if note["state"] == "pending":
            with self.wakeup:
                heapq.heappush(self.queue, (time.monotonic(), note["id"]))
                self.wakeup.notify()
        return note

    def start(self):
        with self.lock:
            now = time.monotonic()
            for note in self.data["notifications"]:
                if note["state"] == "pending":
                    self.queue.append((now, note["id"]))
            heapq.heapify(self.queue)
        self.running = True
        self.sender = threading.Thread(target=self.send_loop, daemon=True,
                                       name="notifications")
        self.sender.start()

    def stop(self):
        with self.wakeup:
            self.running = False
            self.wakeup.notify()

    def send_loop(self):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            with self.wakeup:
                while self.running:
                    if self.queue:
                        wait = self.queue[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                    else:
                        wait = None
                    self.wakeup.wait(wait)
                if not self.running:
                    return
                _, note_id = heapq.heappop(self.queue)
            with self.lock:
                if note_id > len(self.data["notifications"]):
                    continue            # reset in the meantime
                note = self.data["notifications"][note_id - 1]
                if note["state"] != "pending":
                    continue
                url, body = note["url"], note["body"]
                timeout = self.config["timeout_ms"] / 1000
            attempt = self.send(opener, url, body, timeout)
            with self.lock:
                if (note_id > len(self.data["notifications"])
                        or self.data["notifications"][note_id - 1]
                        is not note):
                    continue
                note["attempts"].append(attempt)
                if attempt["http_status"] == 200 and attempt["answer"] == "OK":
                    note["state"] = "delivered"
                elif (self.config["max_attempts"]
                      and len(note["attempts"])
                      >= self.config["max_attempts"]):
                    note["state"] = "gave_up"
                else:
                    due = (time.monotonic()
                           + self.config["retry_interval_ms"] / 1000)
                    with self.wakeup:
                        heapq.heappush(self.queue, (due, note_id))
                self.save()
            sc.log_line(self.name,
                        f"notification {note_id} payment "
                        f"{note['PaymentId']} attempt "
                        f"{len(note['attempts'])}: "
                        f"{attempt['http_status'] or attempt['error']} "
                        f"-> {note['state']}")

    @staticmethod
    def send(opener, url, body, timeout):
        data = (body if isinstance(body, str) else sc.dumps(body))
        request = urllib.request.Request(
            url, data=data.encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json"})
        attempt = {"at": sc.iso(sc.now_utc()), "http_status": None,
                   "answer": None, "error": None, "ms": None}
        started = time.monotonic()
        try:
            with opener.open(request, timeout=timeout) as response:
                attempt["http_status"] = response.status
                answer = response.read(4096)
        except urllib.error.HTTPError as e:
            attempt["http_status"] = e.code
            answer = e.read(4096)
        except (OSError, ValueError) as e:
            attempt["error"] = str(getattr(e, "reason", e))
            answer = None
        attempt["ms"] = int((time.monotonic() - started) * 1000)
        if answer is not None:
            attempt["answer"] = answer.decode("utf-8", "replace")
        return attempt

    # -----------------------------------------------------------------
    # control

    def payment_of(self, req):
        payment = self.find(req)
        if payment is None:
            raise LookupError(f"no payment {req.get('PaymentId')!r}")
        return payment

    def controlled(self, request, action):
        """Runs action(req) under the lock with the usual error replies."""
        try:
            req = request.json_object()
            with self.lock:
                return action(req)
        except LookupError as e:
            return sc.control_error(404, str(e.args[0]))
        except ValueError as e:
            return sc.control_error(400, str(e))

    def moment(self, req):
        return sc.parse_moment(req["at"]) if req.get("at") is not None \
            else sc.now_utc()

    def with_notes(self, payment):
        view = dict(payment)
        view["notifications"] = [n for n in self.data["notifications"]
                                 if n["PaymentId"] == payment["PaymentId"]]
        return view

    def control_pay(self, request):
        def action(req):
            payment = self.payment_of(req)
            problem = self.pay(payment, re.sub(r"\D", "",
                                               str(req.get("card", ""))),
                               self.moment(req))
            if problem:
                return sc.control_error(409, problem)
            return sc.json_reply(200, self.with_notes(payment))
        return self.controlled(request, action)

    def control_refund(self, request):
        def action(req):
            payment = self.payment_of(req)
            amount = req.get("Amount",
                             payment["Amount"] - payment["refunded"])
            problem = self.refund(payment, amount, self.moment(req))
            if problem:
                return sc.control_error(409, problem)
            return sc.json_reply(200, self.with_notes(payment))
        return self.controlled(request, action)

    def control_expire(self, request):
        def action(req):
            payment = self.payment_of(req)
            if payment["Status"] != "NEW":
                return sc.control_error(
                    409, f"payment {payment['PaymentId']} is "
                         f"{payment['Status']}")
            payment["Status"] = "DEADLINE_EXPIRED"
            payment["ErrorCode"] = "101"
            self.notify_status(payment, ["DEADLINE_EXPIRED"])
            self.save()
            return sc.json_reply(200, self.with_notes(payment))
        return self.controlled(request, action)

    def control_notify(self, request):
        def action(req):
            fields = dict(req)
            sign = fields.pop("sign", True)
            url = fields.pop("url", None)
            raw = fields.pop("raw", None)
            payment = self.find(fields)
            if payment is None and isinstance(fields.get("OrderId"), str):
                payment_id = self.data["orders"].get(fields["OrderId"])
                payment = self.data["payments"].get(payment_id)
            if url is None and payment is not None:
                url = payment["NotificationURL"]
            if url is None:
                raise ValueError("no url given and no payment to take the "
                                 "NotificationURL of")
            if raw is None:
                fields.setdefault("TerminalKey", self.terminal_key)
                # a Token given by the test is sent as it is
                if sign and "Token" not in fields:
                    fields["Token"] = token(fields, self.password)
            note = self.enqueue(url, fields, str(fields.get("PaymentId",
                                                            "")) or None,
                                raw)
            self.save()
            return sc.json_reply(200, note)
        return self.controlled(request, action)

    def control_payments(self, request):
        wanted = request.arg("PaymentId")
        with self.lock:
            return sc.json_reply(200, [
                self.with_notes(p) for p in self.data["payments"].values()
                if not wanted or p["PaymentId"] == wanted])

    def control_notifications(self, request):
        with self.lock:
            return sc.json_reply(200, self.data["notifications"])

    def control_config(self, request):
        if request.method == "POST":
            try:
                req = request.json_object()
                for name, value in req.items():
                    if name not in DEFAULT_CONFIG:
                        raise ValueError(f"unknown setting {name!r}")
                    kind = type(DEFAULT_CONFIG[name])
                    if type(value) is not kind or (kind is int and value < 0):
                        raise ValueError(f"{name} {value!r} is not a "
                                         f"{kind.__name__} >= 0")
            except ValueError as e:
                return sc.control_error(400, str(e))
            with self.lock:
                self.config.update(req)
            with self.wakeup:
                self.wakeup.notify()
        return sc.json_reply(200, self.config)

    # -----------------------------------------------------------------
    # the registry
    #
    # One row per operation of the Moscow day: Debit for a confirmed
    # payment, Credit for each refund.  Amounts are unsigned, the type
    # gives the sign; the fee is charged on payments only.  The "Итого"
    # line sums with signs, so its last column is the day's payout.

    def control_registry(self, request):
        try:
            day = datetime.strptime(request.arg("date", ""),
                                    "%Y-%m-%d").date()
            encoding = request.arg("encoding", "cp1251").lower()
            "".encode(encoding)
            omit = set(request.args("omit"))
            amounts = self.overrides(request.args("amount"), "amount")
            fees = self.overrides(request.args("fee"), "fee")
            repeat = request.args("repeat")
            extra = int(request.arg("extra", "0"))
        except (ValueError, LookupError) as e:
            return sc.control_error(400, f"registry: {e}")

        rows = []
        with self.lock:
            fee_bp = self.config["fee_bp"]
            for payment in self.data["payments"].values():
                if payment["PaymentId"] in omit:
                    continue
                if payment["confirmed_at"]:
                    rows.append(self.registry_row(payment, "Debit",
                                                  payment["confirmed_at"],
                                                  payment["Amount"]))
                for refund in payment["refunds"]:
                    rows.append(self.registry_row(payment, "Credit",
                                                  refund["at"],
                                                  refund["amount"]))
        rows = [r for r in rows if r["at"].date() == day]
        for _ in range(extra):
            rows.append(self.unknown_row(day))
        rows.sort(key=lambda r: r["at"])

        for payment_id, kopecks in amounts.items():
            row = self.first_row(rows, payment_id)
            if row:
                row["amount"] = kopecks
        for row in rows:
            row["fee"] = fee_of(row["amount"], fee_bp) \
                if row["type"] == "Debit" else 0
        for payment_id, kopecks in fees.items():
            row = self.first_row(rows, payment_id)
            if row:
                row["fee"] = kopecks
        for payment_id in repeat:
            row = self.first_row(rows, payment_id)
            if row:
                rows.insert(rows.index(row) + 1, dict(row))

        lines = [";".join(REGISTRY_COLUMNS)]
        total = total_fee = total_net = 0
        for row in rows:
            net = row["amount"] - row["fee"]
            sign = 1 if row["type"] == "Debit" else -1
            total += sign * row["amount"]
            total_fee += row["fee"]
            total_net += sign * net
            lines.append(";".join([
                row["at"].strftime("%d.%m.%Y %H:%M:%S"), row["type"],
                row["PaymentId"], row["OrderId"], row["RRN"],
                row["ApprovalCode"], row["Pan"], self.terminal_key,
                rubles(row["amount"]), rubles(row["fee"]), rubles(net)]))
        lines.append(";".join(["Итого", str(len(rows)), "", "", "", "", "",
                               "", rubles(total), rubles(total_fee),
                               rubles(total_net)]))
        text = "\r\n".join(lines) + "\r\n"
        charset = "windows-1251" if encoding in ("cp1251", "windows-1251") \
            else encoding
        return sc.Reply(200, text.encode(encoding),
                        f"text/csv; charset={charset}",
                        {"Content-Disposition":
                         f'attachment; filename="registry-{day}.csv"'})

    @staticmethod
    def overrides(values, what):
        result = {}
        for value in values:
            payment_id, sep, kopecks = value.partition(":")
            if not sep or not kopecks.isdigit():
                raise ValueError(f"{what}={value!r} is not "
                                 f"<PaymentId>:<kopecks>")
            result[payment_id] = int(kopecks)
        return result

    @staticmethod
    def first_row(rows, payment_id):
        """The payment's Debit row, else its first row, else None."""
        mine = [r for r in rows if r["PaymentId"] == payment_id]
        debits = [r for r in mine if r["type"] == "Debit"]
        return (debits or mine or [None])[0]

    @staticmethod
    def registry_row(payment, kind, at, amount):
        card = payment["card"] or {}
        return {"at": datetime.fromisoformat(at).astimezone(sc.MSK),
                "type": kind, "PaymentId": payment["PaymentId"],
                "OrderId": payment["OrderId"],
                "RRN": card.get("RRN", ""),
                "ApprovalCode": card.get("ApprovalCode", ""),
                "Pan": card.get("Pan", ""), "amount": amount}

    @staticmethod
    def unknown_row(day):
        """An operation the bank never processed for us."""
        return {"at": datetime(day.year, day.month, day.day, 12, 0, 0,
                               tzinfo=sc.MSK),
                "type": "Debit",
                "PaymentId": "9" + "".join(str(secrets.randbelow(10))
                                           for _ in range(11)),
                "OrderId": "FC-UNKNOWN-" + secrets.token_hex(3),
                "RRN": "".join(str(secrets.randbelow(10))
                               for _ in range(12)),
                "ApprovalCode": secrets.token_hex(3).upper(),
                "Pan": "430000******0777", "amount": 123400}


if __name__ == "__main__":
    sc.main(Bank)
