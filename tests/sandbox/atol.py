#!/usr/bin/env python3
"""Sandbox of a cloud cash register in the style of ATOL Online v4.

  python3 tests/sandbox/atol.py --port 18092 --state-dir DIR \
      --login fc-demo --password-file F

Protocol routes (base /possystem/v4):
  POST getToken                 {"login", "pass"} -> {"token", "error"}
  POST <group>/sell             header Token (or ?token=); body
                                {external_id, timestamp, service:
                                {callback_url}, receipt}
                                -> {"uuid", "status": "wait", "error"}
  GET  <group>/report/<uuid>    "wait" on the first poll, then "done"
                                with the fiscal attributes
  GET  /ofd/<fn>/<fd>/<fp>      the receipt as the OFD would show it
A second sell with the same external_id answers the first one's uuid
and never makes a second receipt.  An invalid receipt answers 400
with error.text naming the field.  A missing or expired token answers
401.

Control routes (besides those of sandbox_common):
  GET  /_control/receipts        every receipt with its sell_calls
  POST /_control/expire_tokens   forget every token issued
  GET  /_control/config, POST /_control/config
                                 {"wait_polls", "token_ttl_s"}
"""

import decimal
import hashlib
import re
import secrets
import threading
import time
import uuid as uuidlib
from datetime import datetime

import sandbox_common as sc


D = decimal.Decimal
CENT = D("0.01")

SNO = ("osn", "usn_income", "usn_income_outcome", "envd", "esn", "patent")
PAYMENT_METHODS = ("full_prepayment", "prepayment", "advance",
                   "full_payment", "partial_payment", "credit",
                   "credit_payment")
PAYMENT_OBJECTS = ("commodity", "excise", "job", "service", "gambling_bet",
                   "gambling_prize", "lottery", "lottery_prize",
                   "intellectual_activity", "payment", "agent_commission",
                   "composite", "award", "another", "property_right",
                   "non-operating_gain", "insurance_premium", "sales_tax",
                   "resort_fee")
# VAT type -> the rate in percent; a sum includes its VAT, so the VAT
# of a sum is sum * rate / (100 + rate) whichever of the two names
VAT_RATES = {"none": 0, "vat0": 0, "vat5": 5, "vat105": 5, "vat7": 7,
             "vat107": 7, "vat10": 10, "vat110": 10, "vat18": 18,
             "vat118": 18, "vat20": 20, "vat120": 20, "vat22": 22,
             "vat122": 22}

FN_NUMBER = "9999078902012345"
ECR_REGISTRATION_NUMBER = "0000000001012345"

DEFAULT_CONFIG = {
    "wait_polls": 1,            # report polls answered "wait" first
    "token_ttl_s": 86400,       # a token's lifetime
}


class Invalid(ValueError):
    pass


def money(value, what):
    """A sum in roubles with at most two decimals, as a Decimal."""
    if isinstance(value, bool) or not isinstance(value, (int, D)):
        raise Invalid(f"{what} {value!r} is not a number")
    value = D(value)
    if value < 0 or value != value.quantize(CENT):
        raise Invalid(f"{what} {value} is not a sum of roubles and kopecks")
    return value


def vat_of(total, rate):
    """VAT included in total at rate percent, rounded half up to the
    kopeck, in integers."""
    kopecks = int(total * 100)
    base = 100 + rate
    return D((2 * kopecks * rate + base) // (2 * base)) / 100


def validate(body):
    """Raises Invalid naming the first thing wrong with a sell request."""
    if not isinstance(body.get("external_id"), str) or not body["external_id"]:
        raise Invalid("external_id is missing")
    try:
        datetime.strptime(str(body.get("timestamp")), "%d.%m.%Y %H:%M:%S")
    except ValueError:
        raise Invalid(f"timestamp {body.get('timestamp')!r} is not "
                      f"dd.mm.yyyy HH:MM:SS") from None
    service = body.get("service")
    if (not isinstance(service, dict)
            or not isinstance(service.get("callback_url"), str)):
        raise Invalid("service.callback_url is missing")
    receipt = body.get("receipt")
    if not isinstance(receipt, dict):
        raise Invalid("receipt is missing")

    client = receipt.get("client")
    email = client.get("email") if isinstance(client, dict) else None
    if not isinstance(email, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+",
                                                      email):
        raise Invalid(f"receipt.client.email {email!r} is not an e-mail")
    company = receipt.get("company")
    if not isinstance(company, dict):
        raise Invalid("receipt.company is missing")
    inn = company.get("inn")
    if not isinstance(inn, str) or not re.fullmatch(r"\d{10}|\d{12}", inn):
        raise Invalid(f"receipt.company.inn {inn!r} is not 10 or 12 digits")
    if company.get("sno") not in SNO:
        raise Invalid(f"receipt.company.sno {company.get('sno')!r} is not "
                      f"one of {', '.join(SNO)}")
    address = company.get("payment_address")
    if not isinstance(address, str) or not address:
        raise Invalid("receipt.company.payment_address is missing")

    items = receipt.get("items")
    if not isinstance(items, list) or not items:
        raise Invalid("receipt.items is empty")
    items_sum = D(0)
    for i, item in enumerate(items):
        where = f"receipt.items[{i}]"
        if not isinstance(item, dict):
            raise Invalid(f"{where} is not an object")
        if not isinstance(item.get("name"), str) or not item["name"]:
            raise Invalid(f"{where}.name is missing")
        price = money(item.get("price"), f"{where}.price")
        quantity = item.get("quantity")
        if (isinstance(quantity, bool) or not isinstance(quantity, (int, D))
                or quantity <= 0):
            raise Invalid(f"{where}.quantity {quantity!r} is not positive")
        total = money(item.get("sum"), f"{where}.sum")
        expected = (price * D(quantity)).quantize(CENT, decimal.ROUND_HALF_UP)
        if total != expected:
            raise Invalid(f"{where}.sum {total} is not price x quantity "
                          f"= {expected}")
        if item.get("payment_method") not in PAYMENT_METHODS:
            raise Invalid(f"{where}.payment_method "
                          f"{item.get('payment_method')!r} is unknown")
        obj = item.get("payment_object")
        if not (obj in PAYMENT_OBJECTS
                or (isinstance(obj, int) and not isinstance(obj, bool)
                    and 1 <= obj <= 33)):
            raise Invalid(f"{where}.payment_object {obj!r} is unknown")
        vat = item.get("vat")
        vat_type = vat.get("type") if isinstance(vat, dict) else None
        if vat_type not in VAT_RATES:
            raise Invalid(f"{where}.vat.type {vat_type!r} is unknown")
        if vat.get("sum") is not None:
            vat_sum = money(vat["sum"], f"{where}.vat.sum")
            expected = vat_of(total, VAT_RATES[vat_type])
            if vat_sum != expected:
                raise Invalid(f"{where}.vat.sum {vat_sum} is not the "
                              f"{vat_type} of {total} = {expected}")
        items_sum += total

    total = money(receipt.get("total"), "receipt.total")
    if items_sum != total:
        raise Invalid(f"receipt.total {total} is not the sum of the items "
                      f"{items_sum}")
    payments = receipt.get("payments")
    if not isinstance(payments, list) or not payments:
        raise Invalid("receipt.payments is empty")
    paid = D(0)
    for i, payment in enumerate(payments):
        where = f"receipt.payments[{i}]"
        kind = payment.get("type") if isinstance(payment, dict) else None
        if isinstance(kind, bool) or kind not in range(10):
            raise Invalid(f"{where}.type {kind!r} is not 0 to 9")
        paid += money(payment.get("sum"), f"{where}.sum")
    if paid != total:
        raise Invalid(f"receipt.payments add up to {paid}, not to the "
                      f"total {total}")


def atol_time(moment=None):
    return (moment or sc.now_utc()).astimezone(sc.MSK).strftime(
        "%d.%m.%Y %H:%M:%S")


class Atol(sc.App):
    """Sandbox of an ATOL Online v4 style cloud cash register."""

    name = "atol"

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--login", default="fc-demo")
        parser.add_argument("--password-file", required=True)

    def __init__(self, args):
        self.login = args.login
        self.password = sc.read_secret(args.password_file)
        self.config = dict(DEFAULT_CONFIG)
        self.tokens = {}            # token -> monotonic expiry
        self.tokens_lock = threading.Lock()
        super().__init__(args)
        base = "/possystem/v4"
        self.routes = [
            ("POST", base + r"/getToken", self.get_token),
            ("POST", base + r"/([A-Za-z0-9_.-]+)/sell", self.sell),
            ("GET", base + r"/([A-Za-z0-9_.-]+)/report/([0-9a-f-]{36})",
             self.report),
            ("GET", r"/ofd/(\d+)/(\d+)/(\d+)", self.ofd_page),
        ]
        self.control_routes = [
            ("GET", r"/_control/receipts", self.control_receipts),
            ("POST", r"/_control/expire_tokens", self.control_expire),
            ("GET", r"/_control/config", self.control_config),
            ("POST", r"/_control/config", self.control_config),
        ]

    def empty_data(self):
        return {"receipts": {}, "by_external_id": {},
                "shift_day": None, "shift_number": 0,
                "receipts_in_shift": 0, "fiscal_document_number": 0}

    def reset(self):
        with self.lock:
            counters = {k: self.data[k] for k in
                        ("shift_day", "shift_number", "receipts_in_shift",
                         "fiscal_document_number")}
            self.data = self.empty_data()
            self.data.update(counters)
            self.config = dict(DEFAULT_CONFIG)
            self.save()
        with self.tokens_lock:
            self.tokens.clear()

    def error(self, http_status, code, text, **fields):
        body = {"error": {"error_id": str(uuidlib.uuid4()), "code": code,
                          "text": text, "type": "system"},
                "timestamp": atol_time()}
        body.update(fields)
        return sc.json_reply(http_status, body)

    # -----------------------------------------------------------------
    # protocol

    def get_token(self, request):
        try:
            req = request.json_object()
        except ValueError as e:
            return self.error(400, 2, str(e), token="")
        given = req.get("pass")
        if (req.get("login") != self.login or not isinstance(given, str)
                or not secrets.compare_digest(given, self.password)):
            return self.error(401, 12, "Неверный логин или пароль",
                              token="")
        token = secrets.token_hex(16)
        with self.tokens_lock:
            self.tokens[token] = (time.monotonic()
                                  + self.config["token_ttl_s"])
        return sc.json_reply(200, {"error": None, "token": token,
                                   "timestamp": atol_time()})

    def token_ok(self, request):
        token = request.header("Token") or request.arg("token")
        with self.tokens_lock:
            expiry = self.tokens.get(token)
            return expiry is not None and expiry > time.monotonic()

    def sell(self, request):
        if not self.token_ok(request):
            return self.error(401, 11, "Токен не передан, неверен или "
                                       "истёк", uuid=None, status="fail")
        group = request.match.group(1)
        try:
            body = request.json_object()
        except ValueError as e:
            return self.error(400, 2, str(e), uuid=None, status="fail")
        external_id = body.get("external_id")
        with self.lock:
            known = self.data["by_external_id"].get(f"{group}/{external_id}")
            if known:
                receipt = self.data["receipts"][known]
                receipt["sell_calls"] += 1
                self.save()
                return sc.json_reply(200, {
                    "uuid": receipt["uuid"], "error": None,
                    "status": receipt["status"], "timestamp": atol_time()})
        try:
            validate(body)
        except Invalid as e:
            return self.error(400, 32, f"Ошибка валидации: {e}", uuid=None,
                              status="fail")
        with self.lock:
            # a concurrent twin may have won while validate() ran
            known = self.data["by_external_id"].get(f"{group}/{external_id}")
            if known:
                receipt = self.data["receipts"][known]
                receipt["sell_calls"] += 1
            else:
                receipt = self.register(group, body)
            self.save()
            return sc.json_reply(200, {
                "uuid": receipt["uuid"], "error": None,
                "status": receipt["status"], "timestamp": atol_time()})

    def register(self, group, body):
        """Fiscalises a receipt; callers hold self.lock."""
        now = sc.now_utc()
        day = now.astimezone(sc.MSK).date().isoformat()
        if self.data["shift_day"] != day:
            self.data["shift_day"] = day
            self.data["shift_number"] += 1
            self.data["receipts_in_shift"] = 0
        self.data["receipts_in_shift"] += 1
        self.data["fiscal_document_number"] += 1
        uuid = str(uuidlib.uuid4())
        fd = self.data["fiscal_document_number"]
        fp = int(hashlib.sha256(f"{FN_NUMBER}/{fd}/{uuid}".encode())
                 .hexdigest()[:12], 16) % 10 ** 10
        payload = {
            "fiscal_receipt_number": self.data["receipts_in_shift"],
            "shift_number": self.data["shift_number"],
            "receipt_datetime": atol_time(now),
            "total": body["receipt"]["total"],
            "fn_number": FN_NUMBER,
            "ecr_registration_number": ECR_REGISTRATION_NUMBER,
            "fiscal_document_number": fd,
            "fiscal_document_attribute": fp,
            "fns_site": "www.nalog.gov.ru",
            "ofd_receipt_url": f"{self.base_url()}/ofd/{FN_NUMBER}/{fd}/{fp}",
        }
        receipt = {"uuid": uuid, "external_id": body["external_id"],
                   "group": group, "status": "wait", "polls": 0,
                   "sell_calls": 1, "created_at": sc.iso(now),
                   "request": body, "payload": payload}
        self.data["receipts"][uuid] = receipt
        self.data["by_external_id"][f"{group}/{body['external_id']}"] = uuid
        return receipt

    def report(self, request):
        if not self.token_ok(request):
            return self.error(401, 11, "Токен не передан, неверен или "
                                       "истёк", uuid=None, status="fail")
        group, uuid = request.match.groups()
        with self.lock:
            receipt = self.data["receipts"].get(uuid)
            if receipt is None or receipt["group"] != group:
                return self.error(404, 34, f"Документ {uuid} не найден",
                                  uuid=uuid, status="fail")
            receipt["polls"] += 1
            if (receipt["status"] == "wait"
                    and receipt["polls"] > self.config["wait_polls"]):
                receipt["status"] = "done"
            self.save()
            done = receipt["status"] == "done"
            return sc.json_reply(200, {
                "uuid": uuid, "error": None, "status": receipt["status"],
                "payload": receipt["payload"] if done else None,
                "timestamp": atol_time(), "group_code": group,
                "daemon_code": "sandbox-1", "device_code": "KKT012345",
                "external_id": receipt["external_id"],
                "callback_url": receipt["request"]["service"]
                ["callback_url"]})

    def ofd_page(self, request):
        fn, fd, fp = request.match.groups()
        with self.lock:
            for receipt in self.data["receipts"].values():
                p = receipt["payload"]
                if (p["fn_number"], str(p["fiscal_document_number"]),
                        str(p["fiscal_document_attribute"])) == (fn, fd, fp):
                    break
            else:
                return sc.text_reply(404, "Чек не найден\n")
            lines = ["Кассовый чек. Приход",
                     f"ФН {fn} ФД {fd} ФП {fp}",
                     f"Дата {p['receipt_datetime']}"]
            for item in receipt["request"]["receipt"]["items"]:
                lines.append(f"{item['name']}: {item['sum']}")
            lines.append(f"Итого: {p['total']}")
        return sc.text_reply(200, "\n".join(lines) + "\n")

    # -----------------------------------------------------------------
    # control

    def control_receipts(self, request):
        wanted = request.arg("external_id")
        with self.lock:
            return sc.json_reply(200, [
                r for r in self.data["receipts"].values()
                if wanted is None or r["external_id"] == wanted])

    def control_expire(self, request):
        with self.tokens_lock:
            count = len(self.tokens)
            self.tokens.clear()
        return sc.json_reply(200, {"expired": count})

    def control_config(self, request):
        if request.method == "POST":
            try:
                req = request.json_object()
                for name, value in req.items():
                    if name not in DEFAULT_CONFIG:
                        raise ValueError(f"unknown setting {name!r}")
                    if type(value) is not int or value < 0:
                        raise ValueError(f"{name} {value!r} is not a "
                                         f"whole number")
            except ValueError as e:
                return sc.control_error(400, str(e))
            self.config.update(req)
        return sc.json_reply(200, self.config)


if __name__ == "__main__":
    sc.main(Atol)
