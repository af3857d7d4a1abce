"""Reconciliation of the bank's daily registry (docs/reconciliation.md).

Our payments are written straight into PostgreSQL as the owner, each
test on a day of its own that nothing else uses (a random day of
2001-2019 without payments or registries), and the registry files are
built here the way T-Bank writes them: cp1251, ';', CRLF, a header row,
amounts in roubles with a decimal comma, a closing "Итого" line; with a
payer column our profile does not map.  The sandbox bank's own registry
and the fcreg tool are tried once each.
"""

import datetime
import json
import os
import random
import secrets
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest

import fc
import procs
from test_openapi import check_text


MSK = "Europe/Moscow"
FCREG = os.path.join(fc.ROOT, "core", "build", "fcreg")

# the back office's routes as docs/openapi.yaml writes them
REGISTRIES = "/api/v1/backoffice/registries"
RECONCILIATIONS = "/api/v1/backoffice/reconciliations"
CALENDAR = "/api/v1/backoffice/calendar"
CALENDAR_DAY = "/api/v1/backoffice/calendar/{region}/{date}"

HEADER = ["Дата операции", "Тип операции", "PaymentId", "OrderId", "RRN",
          "Код авторизации", "Карта", "Терминал", "Сумма", "Комиссия",
          "К перечислению", "Плательщик"]

SIGN = {"Debit": 1, "Credit": -1, "CancelRefund": 1, "Chargeback": -1,
        "AUTH_FAIL": 0}

CSV_HEADER = ("class;detail;registry_id;line;op_at;op_type;bank_payment_id;"
              "order_id;rrn;approval_code;pan;amount;fee;expected_fee;"
              "payment_id;our_order_id;our_bank_payment_id;our_amount;"
              "our_refunded_amount;our_status;confirmed_at;extra")

_rng = random.Random(secrets.randbits(64))


# ---------------------------------------------------------------------
# our side

@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    org = b.org()
    contract = b.contract(org, balance=0)
    w = {
        "builder": b,
        "org": org,
        "contract": contract,
        "owner": b.user(org, "owner"),
        "accountant": b.user(org, "accountant"),
        "operator": b.user(None, "operator"),
    }
    yield w
    b.close()


@pytest.fixture(scope="module")
def operator(world):
    return procs.cabinet_for(world["operator"])


def fresh_day(weekday=None):
    """A day no payment was confirmed on and no registry is of (an ISO
    weekday, 5 for Friday, if given)."""
    for _ in range(500):
        day = (datetime.date(2001, 1, 1)
               + datetime.timedelta(days=_rng.randrange(19 * 365)))
        if weekday and day.isoweekday() != weekday:
            continue
        used = procs.scalar("""
            SELECT (SELECT count(*) FROM payments
                     WHERE confirmed_at >= %s::timestamp AT TIME ZONE %s
                       AND confirmed_at < (%s::date + 1)::timestamp
                                          AT TIME ZONE %s)
                 + (SELECT count(*) FROM registries
                     WHERE registry_date = %s)""",
            (day, MSK, day, MSK, day))
        if used == 0:
            return day
    raise AssertionError("no free day found")


def moscow(day, hour, minute=0):
    return datetime.datetime(day.year, day.month, day.day, hour, minute,
                             tzinfo=procs.zoneinfo.ZoneInfo(MSK))


class Payment:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def payment(world, day, amount, minute=0, status="CONFIRMED", refunded=0):
    """One of our card payments, confirmed on day (unless its status
    says it never was), with the card data a bank reports."""
    p = Payment(amount=amount, status=status,
                order_id=f"FC-RC-{procs.tag()}",
                bank_payment_id="7" + "".join(_rng.choice("0123456789")
                                              for _ in range(12)),
                rrn="".join(_rng.choice("0123456789") for _ in range(12)),
                approval_code=secrets.token_hex(3).upper(),
                at=moscow(day, 10, minute))
    confirmed = p.at if status in ("CONFIRMED", "PARTIAL_REFUNDED",
                                   "REFUNDED") else None
    p.id = procs.scalar("""
        INSERT INTO payments (order_id, contract_id, org_id, user_id,
                              amount, email, status, bank_payment_id,
                              refunded_amount, pan, rrn, approval_code,
                              created_at, updated_at, confirmed_at)
        VALUES (%s, %s, %s, %s, %s, 'payer@test.example', %s, %s, %s,
                '430000******0777', %s, %s, %s, %s, %s)
        RETURNING id""",
        (p.order_id, world["contract"], world["org"], world["owner"].id,
         amount, status, p.bank_payment_id, refunded, p.rrn,
         p.approval_code, p.at, p.at, confirmed))
    return p


# ---------------------------------------------------------------------
# the bank's side

def rub(kopecks, group=False):
    """1234,56 (or 1 234,56 with a no-break space)."""
    sign = "-" if kopecks < 0 else ""
    whole, cents = divmod(abs(kopecks), 100)
    text = f"{whole:,}".replace(",", "\u00a0") if group else str(whole)
    return f"{sign}{text},{cents:02d}"


def line(p, op, amount, fee, payer="", at=None, pid=True, order=True,
         rrn=True, group=False):
    """A registry row for payment p (or any object with its fields)."""
    at = at or p.at
    return {"fields": [at.strftime("%d.%m.%Y %H:%M:%S"), op,
                       p.bank_payment_id if pid else "",
                       p.order_id if order else "",
                       p.rrn if rrn else "", p.approval_code if rrn else "",
                       "430000******0777", "FuelCardTest",
                       rub(amount, group), rub(fee), rub(amount - fee),
                       payer],
            "op": op, "amount": amount, "fee": fee}


def csv_field(text):
    if any(c in text for c in ';"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def registry(rows, summary=True, encoding="cp1251"):
    """The file: header, rows, and the Итого line with the count and the
    signed sums (its last column the payout)."""
    out = [";".join(HEADER)]
    for r in rows:
        out.append(";".join(csv_field(f) for f in r["fields"]))
    if summary:
        amount = sum(SIGN[r["op"]] * r["amount"] for r in rows)
        fee = sum(r["fee"] for r in rows)
        out.append(";".join(["Итого", str(len(rows)), "", "", "", "", "",
                             "", rub(amount), rub(fee), rub(amount - fee),
                             ""]))
    return ("\r\n".join(out) + "\r\n").encode(encoding)


def upload(cab, data, **query):
    """Posts a registry file; the answer, whatever its status, is
    checked against docs/openapi.yaml."""
    q = {"bank": "tbank", "filename": "registry.csv"}
    q.update({k: str(v) for k, v in query.items()})
    r = cab.post("/api/v1/backoffice/registries?"
                 + urllib.parse.urlencode(q),
                 raw=data, headers={"Content-Type": "text/csv"})
    fc.check_openapi(r, REGISTRIES, "POST")
    return r


def report(cab, day, now=None, fmt=None):
    """The day's reconciliation, checked against docs/openapi.yaml."""
    q = {"date": day.isoformat()}
    if fmt:
        q["format"] = fmt
    r = cab.get("/api/v1/backoffice/reconciliations?"
                + urllib.parse.urlencode(q), now=now)
    if r.content_type == "application/json":
        fc.check_openapi(r, RECONCILIATIONS)
    else:
        check_text(r, RECONCILIATIONS)
    return r


def counts(registry_id):
    return procs.query("""
        SELECT (SELECT count(*) FROM registries),
               (SELECT count(*) FROM registry_lines),
               (SELECT count(*) FROM payment_reconciliations),
               (SELECT count(*) FROM audit_log
                 WHERE action = 'registry_import')""")[0]


# ---------------------------------------------------------------------
# a registry with every class

class EveryClass:
    """Eight payments of ours on one day and a registry of 13 lines
    that gives each class once or more (line numbers count the header
    as line 1)."""

    def __init__(self, world):
        d = self.day = fresh_day()
        self.match = payment(world, d, 150000, 1)
        self.by_rrn = payment(world, d, 250050, 2)
        self.by_order = payment(world, d, 100025, 3)
        self.amount = payment(world, d, 300000, 4)
        self.fee = payment(world, d, 200000, 5)
        self.missing = payment(world, d, 120000, 6)
        self.refunded = payment(world, d, 500000, 7,
                                status="PARTIAL_REFUNDED", refunded=100000)
        self.charged_back = payment(world, d, 80000, 8)
        self.rejected = payment(world, d, 60000, 9, status="REJECTED")
        self.stranger = Payment(bank_payment_id="9" + "1" * 11,
                                order_id="FC-UNKNOWN-" + procs.tag(),
                                rrn="999999999999", approval_code="ZZ9999",
                                at=moscow(d, 12))
        self.rows = [
            # 2: matched by the bank's payment id
            line(self.match, "Debit", 150000, 3000,
                 'ООО "Ромашка"', group=True),
            # 3: matched by RRN, approval code and amount
            line(self.by_rrn, "Debit", 250050, 5001, "Иванов Иван Иванович",
                 pid=False, order=False),
            # 4: matched by order id; 2 % of 1000.25 is 20.005: 20.01
            line(self.by_order, "Debit", 100025, 2001, "Пётр Щукин",
                 pid=False, rrn=False),
            # 5: the bank took 1.00 more than we have
            line(self.amount, "Debit", 300100, 6002, "Семёнова А. Ж."),
            # 6: 41.00 where the tariff makes 40.00
            line(self.fee, "Debit", 200000, 4100, "ЗАО «Берёзка»"),
            # 7: nobody's
            line(self.stranger, "Debit", 123400, 2468,
                 "ИП Сидоров; филиал"),
            # 8: line 2 again
            line(self.match, "Debit", 150000, 3000,
                 'ООО "Ромашка"', group=True),
            # 9 and 10: a payment and its partial refund
            line(self.refunded, "Debit", 500000, 10000, "Эдуард Юрьев"),
            line(self.refunded, "Credit", 100000, 0, "Эдуард Юрьев"),
            # 11 and 12: a payment and its chargeback
            line(self.charged_back, "Debit", 80000, 1600, "Ёлкин"),
            line(self.charged_back, "Chargeback", 80000, 0, "Ёлкин"),
            # 13: paid out by the bank, refused as we know it
            line(self.rejected, "Debit", 60000, 1200, "Фёдор Ъ"),
            # 14: a failed authorization's fee
            line(self.stranger, "AUTH_FAIL", 70000, 500, "", pid=False,
                 order=False),
        ]
        self.file = registry(self.rows)


@pytest.fixture(scope="module")
def every(world, operator):
    e = EveryClass(world)
    r = upload(operator, e.file, filename=f"registry-{e.day}.csv")
    assert r.status == 201, r
    e.answer = r.json()
    return e


EVERY_TOTALS = {
    "our_payments": {"count": 8, "amount": 1700075},
    "bank_lines": {"count": 13, "amount": 1733575},
    "matched": {"count": 5, "amount": 1080075},
    "amount_mismatch": {"count": 1, "amount": 300100},
    "fee_mismatch": {"count": 1, "amount": 200000},
    "unconfirmed": {"count": 1, "amount": 60000},
    "missing": {"count": 1, "amount": 120000},
    "unknown": {"count": 1, "amount": 123400},
    "duplicate": {"count": 1, "amount": 150000},
    "refund": {"count": 1, "amount": 100000},
    "chargeback": {"count": 1, "amount": 80000},
    "fee_only": {"count": 1, "amount": 70000},
    "bad_lines": 0,
    "payments": 1913575,
    "refunds": 100000,
    "chargebacks": 80000,
    "fees": 38872,
    "expected_fees": 38272,
    "net_payout": 1694703,
    "file_payout": 1694703,
    "needs_attention": 7,
}


def test_every_class_is_found_with_exact_totals(every, operator):
    a = every.answer
    assert a["duplicate"] is False
    assert a["status"] == "reconciled"
    assert a["encoding"] == "cp1251"
    assert a["date"] == every.day.isoformat()
    assert a["lines"] == 13 and a["rows_read"] == 13
    assert a["bad_lines"] == [] and a["problems"] == []
    assert a["summary"]["found"] is True and a["summary"]["ok"] is True
    assert a["classes"] == {"matched": 5, "amount_mismatch": 1,
                            "unconfirmed": 1, "unknown": 1, "duplicate": 1,
                            "fee_mismatch": 1, "chargeback": 1, "refund": 1,
                            "fee": 1}
    assert a["totals"] == {"payments": 1913575, "refunds": 100000,
                           "chargebacks": 80000, "fees": 38872,
                           "net_payout": 1694703}
    assert a["reconciliation"] == EVERY_TOTALS

    r = report(operator, every.day)
    assert r.status == 200, r
    body = r.json()
    assert body["registry"] == "reconciled"
    assert body["totals"] == EVERY_TOTALS


def test_differences_carry_both_sides_in_order(every, operator):
    diffs = report(operator, every.day).json()["differences"]
    assert [(d["class"], d["line"] and d["line"]["line"]) for d in diffs] \
        == [("amount_mismatch", 5), ("unconfirmed", 13), ("missing", None),
            ("unknown", 7), ("duplicate", 8), ("fee_mismatch", 6),
            ("chargeback", 12)]

    by_class = {d["class"]: d for d in diffs}
    d = by_class["amount_mismatch"]
    assert d["detail"] == "the bank has 3001.00 RUB, we have 3000.00 RUB"
    assert d["line"]["amount"] == 300100
    assert d["line"]["matched_by"] == "bank_payment_id"
    assert d["payment"]["id"] == every.amount.id
    assert d["payment"]["amount"] == 300000
    assert d["line"]["extra"] == {"Плательщик": "Семёнова А. Ж."}

    assert by_class["unconfirmed"]["payment"]["status"] == "REJECTED"
    assert by_class["missing"]["payment"]["id"] == every.missing.id
    assert by_class["missing"]["line"] is None
    assert by_class["unknown"]["payment"] is None
    assert by_class["unknown"]["line"]["extra"] == {
        "Плательщик": "ИП Сидоров; филиал"}
    assert by_class["duplicate"]["detail"] == "repeats line 2"
    assert by_class["duplicate"]["payment"]["id"] == every.match.id
    assert by_class["fee_mismatch"]["detail"] == \
        "fee 41.00 RUB, the tariff of 2.00% gives 40.00 RUB"
    assert by_class["fee_mismatch"]["line"]["expected_fee"] == 4000
    assert by_class["chargeback"]["payment"]["id"] == every.charged_back.id


def test_each_key_of_matching_is_used(every):
    rows = procs.query("""
        SELECT line_no, matched_by, payment_id, class
          FROM registry_lines WHERE registry_id = %s ORDER BY line_no""",
        (every.answer["id"],))
    got = {r[0]: (r[1], r[2], r[3]) for r in rows}
    assert got[2] == ("bank_payment_id", every.match.id, "matched")
    assert got[3] == ("rrn", every.by_rrn.id, "matched")
    assert got[4] == ("order_id", every.by_order.id, "matched")
    assert got[10] == ("bank_payment_id", every.refunded.id, "refund")
    assert got[14][2] == "fee"


def test_matched_payments_are_marked_reconciled(every):
    marked = procs.query("""
        SELECT payment_id FROM payment_reconciliations
         WHERE registry_id = %s ORDER BY payment_id""",
        (every.answer["id"],))
    assert [m[0] for m in marked] == sorted([
        every.match.id, every.by_rrn.id, every.by_order.id, every.fee.id,
        every.refunded.id, every.charged_back.id])


def test_the_same_file_again_changes_nothing(every, operator):
    before = counts(every.answer["id"])
    report_before = report(operator, every.day).json()

    r = upload(operator, every.file, filename="again.csv")
    assert r.status == 200, r
    body = r.json()
    assert body["duplicate"] is True
    assert body["id"] == every.answer["id"]
    assert body["filename"] == f"registry-{every.day}.csv"

    assert counts(every.answer["id"]) == before
    assert report(operator, every.day).json() == report_before


def test_a_second_file_of_the_day_is_flagged_not_merged(world, operator):
    day = fresh_day()
    a = payment(world, day, 10000, 1)
    b = payment(world, day, 20000, 2)
    first = upload(operator, registry([line(a, "Debit", 10000, 200)]))
    assert first.status == 201, first
    first = first.json()
    assert first["reconciliation"]["missing"] == {"count": 1,
                                                  "amount": 20000}

    second = upload(operator, registry([line(a, "Debit", 10000, 200),
                                        line(b, "Debit", 20000, 400)]))
    assert second.status == 201, second
    second = second.json()
    assert second["status"] == "conflict"
    assert second["conflict_with"] == first["id"]
    assert second["problems"][0].startswith(
        f"registry {first['id']} of tbank for {day} was reconciled first")
    # nothing of the second file counts
    assert second["reconciliation"]["missing"]["count"] == 1
    assert second["classes"]["matched"] == 0

    body = report(operator, day).json()
    assert [(g["id"], g["status"]) for g in body["registries"]] == \
        [(first["id"], "reconciled"), (second["id"], "conflict")]

    # the operator decides: the second file replaces the first
    r = upload(operator, registry([line(a, "Debit", 10000, 200),
                                   line(b, "Debit", 20000, 400)]),
               replace=first["id"])
    assert r.status == 201, r
    assert r.json()["id"] == second["id"]
    assert r.json()["status"] == "reconciled"
    body = report(operator, day).json()
    assert body["totals"]["matched"] == {"count": 2, "amount": 30000}
    assert body["totals"]["missing"]["count"] == 0
    assert [(g["id"], g["status"]) for g in body["registries"]] == \
        [(second["id"], "reconciled"), (first["id"], "superseded")]

    # replace must name the registry that stands
    r = upload(operator, registry([line(b, "Debit", 20000, 400)]),
               replace=first["id"])
    err = procs.error_of(r, 409, "conflict")
    assert err["message"] == (
        f"replace: registry {first['id']} is not the reconciled registry "
        f"of tbank for {day} (that is {second['id']})")


def test_a_truncated_file_is_read_up_to_the_cut(world, operator):
    day = fresh_day()
    ps = [payment(world, day, 10000 * (i + 1), i) for i in range(4)]
    data = registry([line(p, "Debit", p.amount, p.amount // 50,
                          "Андреев") for p in ps])
    cut = data[:data.index(ps[3].order_id.encode()) + 3]

    r = upload(operator, cut)
    assert r.status == 201, r
    body = r.json()
    assert body["lines"] == 3 and body["rows_read"] == 4
    assert body["bad_lines"] == [{
        "line": 5,
        "reason": "has 4 fields, the header has 12: the line may be cut "
                  "off"}]
    assert body["summary"] == {"found": False, "ok": None, "checks": []}
    assert body["problems"] == [
        "no summary line (Итого): the file may be cut off",
        "1 line(s) could not be read, the first: line 5: has 4 fields, "
        "the header has 12: the line may be cut off"]
    assert body["reconciliation"]["matched"] == {"count": 3,
                                                 "amount": 60000}
    assert body["reconciliation"]["missing"] == {"count": 1,
                                                 "amount": 40000}
    assert body["reconciliation"]["bad_lines"] == 1
    assert body["reconciliation"]["needs_attention"] == 2


def test_a_broken_line_is_reported_and_the_rest_processed(world, operator):
    day = fresh_day()
    ps = [payment(world, day, 10000 * (i + 1), i) for i in range(3)]
    rows = [line(p, "Debit", p.amount, p.amount // 50, "Борисов")
            for p in ps]
    rows[1]["fields"][8] = "200,00,1"
    data = registry(rows, encoding="utf-8")

    r = upload(operator, data)
    assert r.status == 201, r
    body = r.json()
    assert body["encoding"] == "utf-8"
    assert body["bad_lines"] == [{
        "line": 3,
        "reason": 'Сумма: not an amount of roubles like 1234,56, got '
                  '"200,00,1"'}]
    assert body["classes"]["matched"] == 2
    # the count agrees, the sums lack the broken line
    checks = {c["what"]: c for c in body["summary"]["checks"]}
    assert checks["lines"]["ok"] is True
    assert checks["amount"] == {"line": 5, "label": "Итого",
                                "what": "amount", "file": 60000,
                                "computed": 40000, "ok": False}
    assert body["summary"]["ok"] is False
    assert "summary line 5 (Итого): amount 600.00 in the file, 400.00 in " \
           "its lines" in body["problems"]

    diffs = report(operator, day).json()["differences"]
    assert [d["class"] for d in diffs] == ["missing", "bad_line"]
    assert diffs[0]["payment"]["id"] == ps[1].id
    assert diffs[1]["line"] == {"registry_id": body["id"], "line": 3}


def test_a_refund_we_never_recorded_needs_a_person(world, operator):
    day = fresh_day()
    p = payment(world, day, 10000)
    refund = line(p, "Credit", 5000, 0, "4300000000000777")
    refund["fields"][6] = "4300000000000777"
    r = upload(operator, registry([line(p, "Debit", 10000, 200), refund]))
    assert r.status == 201, r
    assert r.json()["classes"]["amount_mismatch"] == 1

    diffs = report(operator, day).json()["differences"]
    assert len(diffs) == 1
    assert diffs[0]["class"] == "amount_mismatch"
    assert diffs[0]["detail"] == ("the bank has refunded 50.00 RUB of this "
                                  "payment in all, we recorded 0.00 RUB")
    # a full card number never gets stored, in any column
    assert diffs[0]["line"]["pan"] == "430000******0777"
    assert diffs[0]["line"]["extra"] == {"Плательщик": "430000******0777"}


def test_the_sandbox_banks_registry_reads(operator):
    day = fresh_day()
    url = (f"{fc.env('FC_TBANK_URL')}/_control/registry?"
           f"date={day}&extra=2")
    with urllib.request.urlopen(url, timeout=10) as f:
        data = f.read()
    r = upload(operator, data, filename=f"registry-{day}.csv")
    assert r.status == 201, r
    body = r.json()
    assert body["encoding"] == "cp1251"
    assert body["date"] == day.isoformat()
    assert body["summary"]["ok"] is True
    assert body["classes"]["unknown"] == 2
    assert body["totals"]["payments"] == 246800
    assert body["totals"]["fees"] == 4936


def test_the_csv_report_opens_with_its_header(every, operator):
    r = report(operator, every.day, fmt="csv")
    assert r.status == 200, r
    assert r.content_type == "text/csv"
    assert r.headers["content-disposition"] == \
        f'attachment; filename="reconciliation-{every.day}.csv"'
    text = r.body.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = text[1:].split("\r\n")
    assert rows[0] == CSV_HEADER
    assert [x.split(";")[0] for x in rows[1:8]] == [
        "amount_mismatch", "unconfirmed", "missing", "unknown", "duplicate",
        "fee_mismatch", "chargeback"]
    unknown = rows[4]
    assert ";1234,00;24,68;24,68;" in unknown
    assert unknown.endswith(';"Плательщик=ИП Сидоров; филиал"')
    assert rows[8] == ""
    assert rows[9] == "total;count;amount"
    assert "net_payout;;16947,03" in rows
    assert "missing;1;1200,00" in rows


def test_business_days_follow_the_2026_calendar(operator):
    assert str(procs.scalar(
        "SELECT fc_registry_expected_date('2026-04-30', 'RU')")) \
        == "2026-05-04"
    assert str(procs.scalar(
        "SELECT fc_registry_expected_date('2026-05-08', 'RU')")) \
        == "2026-05-12"
    # the New Year holidays: from the last working day of 2025 ...
    assert str(procs.scalar(
        "SELECT fc_registry_expected_date('2025-12-31', 'RU')")) \
        == "2026-01-12"

    r = operator.get("/api/v1/backoffice/calendar?region=RU&year=2026")
    assert r.status == 200, r
    body = fc.check_openapi(r, CALENDAR)
    assert body["working_days"] == 247
    days = {d["date"]: d for d in body["days"]}
    assert days["2026-05-11"]["kind"] == "holiday"
    assert days["2026-04-30"]["kind"] == "short"
    assert days["2026-04-30"]["business_day"] is True


def test_a_region_may_add_a_holiday_of_its_own(operator):
    # a Wednesday of a year nobody else uses
    path = "/api/v1/backoffice/calendar/RU-TA/2031-06-11"
    r = operator.put(path, {"kind": "holiday", "note": "Курбан-байрам"})
    assert r.status == 200, r
    assert fc.check_openapi(r, CALENDAR_DAY, "PUT") == {
        "date": "2031-06-11", "region": "RU-TA", "kind": "holiday",
        "set_in": "RU-TA", "note": "Курбан-байрам", "business_day": False}
    assert str(procs.scalar(
        "SELECT fc_business_day_next('2031-06-10', 'RU-TA')")) \
        == "2031-06-12"
    assert str(procs.scalar(
        "SELECT fc_business_day_next('2031-06-10', 'RU')")) == "2031-06-11"

    r = operator.put(path, {"kind": "default"})
    assert r.status == 200, r
    assert fc.check_openapi(r, CALENDAR_DAY, "PUT")["business_day"] is True

    r = operator.put("/api/v1/backoffice/calendar/Tatarstan/2031-06-11",
                     {"kind": "holiday"})
    err = procs.error_of(r, 422, "validation_failed", CALENDAR_DAY, "PUT")
    assert err["message"].startswith("region: must be a country code")


def test_an_overdue_registry_shows_after_the_deadline(world, operator):
    # a Friday: the registry is expected on Monday by 12:00 Moscow time
    day = fresh_day(weekday=5)
    payment(world, day, 10000)
    monday = day + datetime.timedelta(days=3)

    body = report(operator, day,
                  now=moscow(monday, 11, 59).timestamp()).json()
    assert body["registry"] == "awaited"
    assert body["expected_date"] == monday.isoformat()
    assert body["deadline"] == moscow(monday, 12).isoformat()

    body = report(operator, day,
                  now=moscow(monday, 12, 0).timestamp()).json()
    assert body["registry"] == "missing"
    assert body["totals"]["our_payments"] == {"count": 1, "amount": 10000}
    assert body["totals"]["missing"] == {"count": 0, "amount": 0}

    overdue = procs.query(
        "SELECT payment_date, expected_date, payments "
        "FROM fc_registry_missing(%s) WHERE payment_date = %s",
        (moscow(monday, 12, 0), day))
    assert overdue == [(day, monday, 1)]


def metric_missing():
    text = procs.scalar("SELECT fc_metrics_text()")
    for row in text.splitlines():
        if row.startswith("fc_registry_missing "):
            return int(row.split()[1])
    raise AssertionError(f"no fc_registry_missing in:\n{text}")


def test_the_metric_counts_overdue_registries(world, operator):
    text = procs.scalar("SELECT fc_metrics_text()")
    assert "# TYPE fc_payments gauge" in text
    assert "# TYPE fc_outbox_rows gauge" in text

    today = procs.scalar("SELECT (now() AT TIME ZONE %s)::date", (MSK,))
    day = today - datetime.timedelta(days=20)
    while procs.scalar("""
            SELECT (SELECT count(*) FROM payments
                     WHERE confirmed_at >= %s::timestamp AT TIME ZONE %s
                       AND confirmed_at < (%s::date + 1)::timestamp
                                          AT TIME ZONE %s)
                 + (SELECT count(*) FROM registries
                     WHERE registry_date = %s)""",
            (day, MSK, day, MSK, day)):
        day -= datetime.timedelta(days=1)

    before = metric_missing()
    p = payment(world, day, 10000)
    assert metric_missing() == before + 1

    r = upload(operator, registry([line(p, "Debit", 10000, 200)]))
    assert r.status == 201, r
    assert metric_missing() == before


def test_only_operators_may(world):
    for role in ("owner", "accountant"):
        cab = procs.cabinet_for(world[role])
        r = upload(cab, registry([]))
        procs.error_of(r, 403, "forbidden")
        for path in ("/api/v1/backoffice/registries",
                     "/api/v1/backoffice/reconciliations?date=2026-04-30",
                     "/api/v1/backoffice/calendar"):
            procs.error_of(cab.get(path), 403, "forbidden",
                           path.split("?")[0])
        procs.error_of(cab.put("/api/v1/backoffice/calendar/RU/2031-06-11",
                               {"kind": "holiday"}), 403, "forbidden",
                       CALENDAR_DAY, "PUT")

    r = procs.Cabinet().get(
        "/api/v1/backoffice/reconciliations?date=2026-04-30")
    procs.error_of(r, 401, "unauthorized", RECONCILIATIONS)


def test_files_that_are_no_registry_are_refused(operator):
    r = upload(operator, b"\x00\x01\x02 not text at all")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("body: the file is neither UTF-8 nor "
                                     "cp1251 text")

    r = upload(operator, "a;b;c\r\n1;2;3\r\n".encode("cp1251"))
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("body: no header row in the first 30 "
                                     "lines names the columns")

    r = upload(operator, registry([]), bank="sberbank")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"] == 'bank: no registry profile "sberbank"; ' \
                             'known: tbank'

    r = upload(operator, registry([]), filename="empty.csv")
    err = procs.error_of(r, 422, "validation_failed")
    assert err["message"].startswith("date: the file has no operation")

    r = operator.post("/api/v1/backoffice/registries",
                      raw=b"--x\r\n\r\n", headers={
                          "Content-Type": "multipart/form-data; boundary=x"})
    procs.error_of(r, 415, "unsupported_media_type", REGISTRIES, "POST")

    r = operator.get("/api/v1/backoffice/reconciliations")
    err = procs.error_of(r, 422, "validation_failed", RECONCILIATIONS)
    assert err["message"] == ("date: must be a date YYYY-MM-DD from "
                              "1900-01-01 to 2999-12-31, got null")

    r = operator.get("/api/v1/backoffice/reconciliations?date=2026-04-30"
                     "&format=xlsx")
    procs.error_of(r, 422, "validation_failed", RECONCILIATIONS)


def test_registries_list_shows_the_import(every, operator):
    r = operator.get(f"/api/v1/backoffice/registries?date={every.day}")
    assert r.status == 200, r
    items = fc.check_openapi(r, REGISTRIES)["items"]
    assert [i["id"] for i in items] == [every.answer["id"]]
    assert items[0]["filename"] == f"registry-{every.day}.csv"
    assert items[0]["source"] == "api"


def test_fcreg_imports_for_cron(world):
    if not os.access(FCREG, os.X_OK):
        pytest.skip(f"{FCREG} is not built")
    day = fresh_day()
    p = payment(world, day, 10000)
    conf = os.path.join(fc.env("FC_VAR"), "fcd.conf")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"registry-{day}.csv")
        with open(path, "wb") as f:
            f.write(registry([line(p, "Debit", 10000, 200, "Ёжиков")]))

        run = subprocess.run([FCREG, "-c", conf, path], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run
        assert f"tbank {day}, reconciled: 1 lines, 1 matched, 0 to look " \
               f"at; net payout 98.00 RUB" in run.stdout

        run = subprocess.run([FCREG, "-c", conf, "-j", path],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run
        answer = json.loads(run.stdout)
        assert answer["duplicate"] is True and answer["source"] == "fcreg"

        with open(path, "wb") as f:
            f.write(b"nothing here\r\n")
        run = subprocess.run([FCREG, "-c", conf, path], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2, run
        assert "not imported: body: no header row" in run.stderr
