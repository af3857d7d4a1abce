"""The outbox: what a confirmed top-up owes the cash register, the CRM
and 1C, delivered by fcd exactly once (docs/topup.md, core/README.md).

The stack's daemon delivers with the stack's fcd.conf, whose retry
schedule is the production one (2 s doubling, 12 attempts): a test of
retries would wait minutes.  scripts/stack renders conf/fcd.conf with
no placeholder for those values, so the tests that need failures to
come back quickly stop the stack's daemon and run their own fcd (the
same binary, as the same user) on a copy of the stack's fcd.conf with
a compressed schedule; the stack's daemon is started again afterwards.
A second daemon next to the stack's needs a copy too: the pid file of
the stack's fcd.conf is taken by the first, and fcd refuses to start
on a live pid file.

The sandboxes' failure modes are put back to "ok" after every test.
"""

import decimal
import grp
import os
import re
import signal
import subprocess

import pytest

import fc
import procs
from test_topup import (SETTLE, World, assert_ok, atol, balance, bank, crm,
                        moscow_unix, notification, notify, onec, pay,
                        payment, platform_metrics, signed, topup,
                        wait_deliveries, wait_notes)

D = decimal.Decimal

SELL = "/possystem/v4/fc-demo-group/sell"

KINDS = ["receipt", "onec", "crm"]

RECEIPT_FIELDS = ("fn_number", "fiscal_document_number",
                  "fiscal_document_attribute", "receipt_datetime",
                  "ecr_registration_number", "fiscal_receipt_number",
                  "shift_number", "ofd_receipt_url")

# the back office's routes as docs/openapi.yaml writes them
OUTBOX = "/api/v1/backoffice/outbox"
RETRY = "/api/v1/backoffice/outbox/{id}/retry"

# a schedule that makes a dead letter in about a second
FAST = {"tick_interval_ms": "100",
        "outbox_backoff_ms": "100",
        "outbox_backoff_max_ms": "400",
        "outbox_max_attempts": "5",
        "report_poll_ms": "100"}


# ---------------------------------------------------------------------
# daemons

def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return not re.search(r"^State:\s+Z", f.read(), re.M)
    except OSError:
        return False


def wait_gone(pid, timeout=10):
    fc.wait_for(lambda: not alive(pid), timeout=timeout,
                what=f"process {pid} to exit")


def stack_daemon_pid():
    var = fc.env("FC_VAR")
    with open(os.path.join(var, "run", "fcd.pid")) as f:
        pid = int(f.read().strip())
    with open(f"/proc/{pid}/comm") as f:
        assert f.read().startswith("fcd"), f"pid {pid} is not fcd"
    return pid


class Daemon:
    """An fcd of our own on a copy of the stack's fcd.conf, with its own
    pid file and log, and the settings given changed.  It runs the
    stack's copy of the binary as the user fc, the way scripts/stack
    starts it; its files live in the stack's daemon directory, so that
    `scripts/stack stop` would sweep it too."""

    def __init__(self, name, **settings):
        var = fc.env("FC_VAR")
        self.conf = os.path.join(var, "daemon", f"fcd-{name}.conf")
        self.log = os.path.join(var, "log", f"fcd-{name}.log")
        settings = dict(settings,
                        pid_file=os.path.join(var, "run",
                                              f"fcd-{name}.pid"),
                        log_file=self.log)
        with open(os.path.join(var, "fcd.conf"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            key = line.split("=", 1)[0].strip()
            if key in settings:
                line = f"{key} = {settings.pop(key)}"
            out.append(line)
        out += [f"{k} = {v}" for k, v in settings.items()]
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        os.chmod(self.conf, 0o640)
        os.chown(self.conf, 0, grp.getgrnam("fc").gr_gid)
        if os.path.exists(self.log):
            os.unlink(self.log)
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid=fc", "--regid=fc", "--init-groups",
             "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
             f"HOME={var}", "LANG=C.UTF-8", "TZ=UTC",
             os.path.join(var, "daemon", "fcd"), "-c", self.conf],
            cwd=os.path.join(var, "daemon"), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            fc.wait_for(lambda: "listening on fc_outbox" in self.text()
                        or self.proc.poll() is not None,
                        timeout=30, what=f"fcd {name} to connect")
        except AssertionError:
            self.stop()
            raise
        assert self.proc.poll() is None, \
            f"fcd {name} exited {self.proc.returncode}:\n{self.text()}"

    def text(self):
        try:
            with open(self.log, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        os.unlink(self.conf)


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.close()


@pytest.fixture
def fast_daemon():
    """The stack's daemon stopped, ours with the FAST schedule instead."""
    fc.stop_service("daemon")
    try:
        d = Daemon("fast", **FAST)
    except BaseException:
        fc.start_service("daemon")
        raise
    try:
        yield d
    finally:
        d.stop()
        fc.start_service("daemon")


@pytest.fixture(autouse=True)
def sandboxes_ok():
    yield
    for s in (atol(), crm(), onec(), bank()):
        s.mode(mode="ok")


def delivered(text):
    """(kind, row, attempt, outcome) of fcd's log lines about rows."""
    return [(m.group(1), int(m.group(2)), int(m.group(3)), m.group(4))
            for m in re.finditer(r"outbox (\w+) (\d+) payment \d+ "
                                 r"attempt (\d+): (\w+)", text)]


def outbox_rows(payment_id):
    """{kind: (id, idempotency_key, state, attempts)} of a payment."""
    return {k: (i, key, s, a) for i, k, key, s, a in procs.query(
        "SELECT id, kind, idempotency_key, state, attempts FROM outbox "
        "WHERE payment_id = %s ORDER BY id", (payment_id,))}


def receipts_of(payment_id):
    return atol().get("/_control/receipts",
                      external_id=f"receipt:{payment_id}")


def crm_records_of(payment_id):
    return [r for r in crm().get("/_control/records")
            if r["body"].get("payment_id") == payment_id]


def onec_documents(ref_key):
    return [d for d in onec().get("/_control/documents")
            if d["Ref_Key"] == ref_key]


def assert_fiscal_attributes(p, receipt):
    assert p["receipt"]["status"] == "done", p
    for name in RECEIPT_FIELDS:
        assert p["receipt"][name] == receipt["payload"][name], name


def sells_of(payment_id):
    """The sell requests the cash register received for a payment, with
    the status it answered (None while it is still answering)."""
    return [e["status"] for e in atol().get("/_control/log", path=SELL)
            if isinstance(e["body"], dict)
            and e["body"].get("external_id") == f"receipt:{payment_id}"]


def confirmed_topup(world, amount, now=None):
    """A top-up confirmed by a signed notification (at the test clock's
    `now` if given); returns (cabinet, payment)."""
    cab = world.cabinet()
    p = topup(cab, world.contract(), amount)
    assert_ok(notify(signed(notification(p, "CONFIRMED")), now=now))
    return cab, p


# ---------------------------------------------------------------------
# the receipt

def test_receipt_vat_is_the_calculated_rate_of_the_moscow_payment_date(
        world):
    cases = [
        # amount, confirmed at (Moscow), VAT type, VAT sum
        (1000000, (2026, 1, 1, 0, 30), "vat122", D("1803.28")),
        (100000, (2026, 6, 15, 12, 0), "vat122", D("180.33")),
        (1000000, (2025, 12, 31, 23, 30), "vat120", D("1666.67")),
    ]
    made = [(confirmed_topup(world, amount, moscow_unix(*at)), vat, vsum)
            for amount, at, vat, vsum in cases]

    for (cab, p), vat, vsum in made:
        done = wait_deliveries(cab, p["id"], ["receipt"])
        [receipt] = receipts_of(p["id"])
        sent = receipt["request"]["receipt"]
        total = D(p["amount"]) / 100
        assert sent["total"] == total and sent["items"][0]["sum"] == total
        assert sent["items"][0]["vat"] == {"type": vat, "sum": vsum}, \
            (p["amount"], sent["items"][0])
        assert sent["items"][0]["payment_method"] == "advance"
        assert sent["payments"] == [{"type": 1, "sum": total}]
        assert_fiscal_attributes(done, receipt)


def test_cash_register_down_for_a_while_receipt_delivered_once(
        world, fast_daemon):
    atol().mode(mode="fail", status=503, count=3, path=SELL)
    cab = world.cabinet()
    cid = world.contract()
    p = topup(cab, cid, 500000)
    pay(p)

    done = wait_deliveries(cab, p["id"], KINDS)
    assert sells_of(p["id"]) == [503, 503, 503, 200]
    [receipt] = receipts_of(p["id"])
    assert receipt["sell_calls"] == 1, receipt
    assert_fiscal_attributes(done, receipt)
    states = {d["kind"]: (d["state"], d["attempts"], d["last_error"])
              for d in done["deliveries"]}
    assert states == {"receipt": ("done", 4, None), "onec": ("done", 1, None),
                      "crm": ("done", 1, None)}, states


def test_dead_letter_after_max_attempts_is_shown_to_the_operator(
        world, fast_daemon):
    before = platform_metrics()
    atol().mode(mode="fail", status=503, path=SELL)
    cab = world.cabinet()
    p = topup(cab, world.contract(), 110000)
    pay(p)

    done = wait_deliveries(cab, p["id"], ["receipt"])
    row_id, _, state, attempts = outbox_rows(p["id"])["receipt"]
    assert (state, attempts) == ("dead", 5)
    assert done["receipt"]["status"] == "dead", done
    assert done["receipt"]["fn_number"] is None, done
    assert len(sells_of(p["id"])) == 5

    operator = world.cabinet("operator")
    r = operator.get("/api/v1/backoffice/outbox?state=dead")
    assert r.status == 200, r
    [row] = [i for i in fc.check_openapi(r, OUTBOX)["items"]
             if i["id"] == row_id]
    assert row["kind"] == "receipt" and row["payment_id"] == p["id"], row
    assert row["attempts"] == 5 and row["state"] == "dead", row
    assert row["last_error"], row
    procs.error_of(cab.get("/api/v1/backoffice/outbox?state=dead"),
                   403, "forbidden", OUTBOX)

    series = 'fc_outbox_rows{kind="receipt",state="dead"}'
    assert platform_metrics()[series] == before[series] + 1

    # back in service, the operator's retry delivers it
    atol().mode(mode="ok")
    r = operator.post(f"/api/v1/backoffice/outbox/{row_id}/retry")
    assert r.status == 200 and r.json()["state"] == "pending", r
    fc.check_openapi(r, RETRY, "POST")
    fc.wait_for(lambda: outbox_rows(p["id"])["receipt"][2] == "done",
                timeout=SETTLE, what="the retried receipt")
    [receipt] = receipts_of(p["id"])
    assert_fiscal_attributes(payment(cab, p["id"]), receipt)
    assert platform_metrics()[series] == before[series]

    # a delivered row is not sent again
    r = operator.post(f"/api/v1/backoffice/outbox/{row_id}/retry")
    procs.error_of(r, 409, "conflict", RETRY, "POST")
    r = operator.get(f"{OUTBOX}?state=done&cursor={row_id + 1}&limit=1")
    assert r.status == 200, r
    [row] = fc.check_openapi(r, OUTBOX)["items"]
    assert row["id"] == row_id and row["attempts"] == 6, row
    assert row["result"] and row["done_at"], row


# ---------------------------------------------------------------------
# crashes and company

def test_daemon_killed_mid_delivery_loses_nothing_and_sends_nothing_twice(
        world):
    atol().mode(mode="slow", delay_ms=3000, count=1, path=SELL)
    cab = world.cabinet()
    cid = world.contract()
    before = balance(cid)
    p = topup(cab, cid, 210000)
    pay(p)

    fc.wait_for(lambda: sells_of(p["id"]), timeout=SETTLE,
                what="the daemon to send the receipt")
    pid = stack_daemon_pid()
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)

    # the attempt was never recorded: all three rows are still owed
    rows = outbox_rows(p["id"])
    assert sorted(rows) == sorted(KINDS)
    assert all(r[2:] == ("pending", 0) for r in rows.values()), rows

    fc.start_service("daemon")
    done = wait_deliveries(cab, p["id"], KINDS)

    assert [(d["kind"], d["state"], d["attempts"])
            for d in done["deliveries"]] == [
        ("receipt", "done", 1), ("onec", "done", 1), ("crm", "done", 1)]
    # the killed daemon's sale is still being answered (slowly) when the
    # new one's is done; once it is, the cash register has seen the
    # sale twice and made one receipt
    fc.wait_for(lambda: None not in sells_of(p["id"]), timeout=SETTLE,
                what="the killed daemon's sale to be answered")
    assert sells_of(p["id"]) == [200, 200]
    [receipt] = receipts_of(p["id"])
    assert receipt["sell_calls"] == 2, receipt
    assert_fiscal_attributes(done, receipt)
    [record] = crm_records_of(p["id"])
    assert record["calls"] == 1, record
    [doc] = onec_documents(rows["onec"][1])
    assert doc["posts"] == 1, doc
    assert balance(cid) == before + 210000


def test_two_daemons_deliver_each_row_once(world):
    second = Daemon("second")
    try:
        cab = world.cabinet()
        cid = world.contract()
        before = balance(cid)
        made = [topup(cab, cid, 10000 + i) for i in range(20)]
        for p in made:
            pay(p)
        for p in made:
            wait_notes(p, 2)
        fc.wait_for(lambda: procs.scalar(
            "SELECT count(*) FROM outbox WHERE payment_id = ANY(%s) "
            "AND state = 'done'", ([p["id"] for p in made],)) == 60,
            timeout=60, what="60 rows of 20 payments to be delivered")
    finally:
        second.stop()

    rows = {}
    for p in made:
        for kind, (row_id, key, state, attempts) in \
                outbox_rows(p["id"]).items():
            assert (state, attempts) == ("done", 1), (p["id"], kind)
            rows[row_id] = (kind, key, p["id"])
    assert len(rows) == 60

    var = fc.env("FC_VAR")
    with open(os.path.join(var, "log", "fcd.log"), encoding="utf-8") as f:
        first_log = f.read()
    first = [d for d in delivered(first_log) if d[1] in rows]
    other = [d for d in delivered(second.text()) if d[1] in rows]
    assert first and other, "both daemons delivered"
    assert sorted(d[1] for d in first + other) == sorted(rows), \
        "every row delivered by one daemon, once"
    assert all(d[2:] == (1, "done") for d in first + other)

    receipts = atol().get("/_control/receipts")
    crm_records = crm().get("/_control/records")
    documents = {d["Ref_Key"]: d for d in onec().get("/_control/documents")}
    for row_id, (kind, key, payment_id) in rows.items():
        if kind == "receipt":
            mine = [r for r in receipts if r["external_id"] == key]
            assert [r["sell_calls"] for r in mine] == [1], key
        elif kind == "crm":
            mine = [r for r in crm_records if r["key"] == key]
            assert [r["calls"] for r in mine] == [1], key
        else:
            assert documents[key]["posts"] == 1, key
    assert balance(cid) == before + sum(p["amount"] for p in made)
