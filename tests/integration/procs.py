"""Helpers of the processing API tests (tests/integration/test_pos_*,
test_limits_time, test_concurrency, test_hot_state, test_cabinet,
test_isolation, test_mobile, test_validation, test_errors).

Each test module builds the world it needs with a Builder: an
organization, contracts with an opening balance, cards, users, a station
with a terminal, limits, all written straight into PostgreSQL as the
database owner, then published to Redis with `fcctl rebuild`.  Nothing
depends on the demo seed.  Card numbers are drawn at random under the
issuer prefix 7005839 (the seed uses 7005830), so modules never share a
card.

The clients speak the three APIs the way their users do: Terminal (a
bearer key), Cabinet (a session cookie and the CSRF token) and Mobile
(bearer access tokens).  Any call takes now=<unix seconds> to send the
test clock header X-FC-Test-Now.

Only the standard library, python3-psycopg2 and python3-redis (through
fc.redis_client) are used.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import random
import secrets
import subprocess
import uuid
import zoneinfo

import fc


FCCTL = os.path.join(fc.ROOT, "core", "build", "fcctl")

ISSUER_PREFIX = "7005839"

# logins of test users are fast on purpose: the scheme is the real one
# (fc_password.c reads the count from the hash), only the cost is lower
PASSWORD_ITERATIONS = 1000

PASSWORD = "Test-password-42"

# a far corner of the map where the seed has no station, so that the
# stations nearby are only the ones a test made
QUIET_LAT = -62.0
QUIET_LON = 102.0

_rng = random.Random(secrets.randbits(64))


# ---------------------------------------------------------------------
# small pieces

def luhn_digit(body):
    """The check digit that makes body + digit pass the Luhn test."""
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def new_pan(length=16):
    body = ISSUER_PREFIX + "".join(_rng.choice("0123456789")
                                   for _ in range(length - 1
                                                  - len(ISSUER_PREFIX)))
    return body + luhn_digit(body)


def bad_check_digit(pan):
    """The same number with a check digit that is wrong."""
    return pan[:-1] + str((int(pan[-1]) + 1) % 10)


def mask(pan):
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def pan_key():
    with open(os.path.join(fc.env("FC_VAR"), "secrets", "pan_key"),
              "rb") as f:
        return f.read().rstrip(b"\r\n ")


def pan_hash(pan):
    return hmac.new(pan_key(), pan.encode("ascii"),
                    hashlib.sha256).hexdigest()


def sha256_hex(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def password_hash(password, iterations=PASSWORD_ITERATIONS):
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt,
                                 iterations)
    return "pbkdf2-sha256$%d$%s$%s" % (
        iterations, base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"))


def new_inn():
    """A ten-digit INN with a valid check digit, not in the 77xx range
    the seed draws from."""
    body = "99" + "".join(_rng.choice("0123456789") for _ in range(7))
    weights = (2, 4, 10, 3, 5, 9, 4, 6, 8)
    check = sum(w * int(d) for w, d in zip(weights, body)) % 11 % 10
    return body + str(check)


def tag():
    """A short unique suffix for names, numbers and e-mails."""
    return secrets.token_hex(4)


def txn_id(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def local_unix(tz, year, month, day, hour=0, minute=0, second=0):
    """Unix seconds of a wall-clock time in the time zone tz: what the
    test clock header carries."""
    t = datetime.datetime(year, month, day, hour, minute, second,
                          tzinfo=zoneinfo.ZoneInfo(tz))
    return int(t.timestamp())


def amount_of(volume_ml, price):
    """amount(v) = round half up (v x price / 1000), docs/processing.md."""
    return (volume_ml * price + 500) // 1000


def error_of(response, status, code, path=None, method="GET"):
    """The error object of a JSON error answer, after checking its
    status, its code and its shape against docs/openapi.yaml: the answer
    documented for path and method, or the shared Error schema for the
    answers no route gives (an unknown path, nginx's own errors)."""
    assert response.status == status, response
    assert response.content_type == "application/json", response
    if path is not None:
        fc.check_openapi(response, path, method)
    else:
        check_error_shape(response)
    body = response.json()
    assert body["error"]["code"] == code, body
    return body["error"]


def decision(response):
    """The body of a 200 answer of POST /pos/v1/authorize, checked
    against docs/openapi.yaml."""
    assert response.status == 200, response
    return fc.check_openapi(response, "/pos/v1/authorize", "POST")


def check_error_shape(response):
    """Validates a body against components.schemas.Error."""
    import jsonschema

    doc = fc.openapi_document()
    schema = {"$ref": "#/components/schemas/Error",
              "components": doc["components"]}
    jsonschema.Draft4Validator(schema).validate(response.json())


# ---------------------------------------------------------------------
# PostgreSQL as the owner, fcctl and Redis

def owner_connect():
    """A psycopg2 connection as the database owner `fc` over the stack's
    unix socket (peer authentication maps root to fc), autocommit."""
    import psycopg2

    conn = psycopg2.connect(host=os.path.join(fc.env("FC_VAR"), "run"),
                            port=fc.env("FC_PG_PORT"), dbname="fc",
                            user="fc", connect_timeout=5)
    conn.autocommit = True
    return conn


def query(sql, args=()):
    """All rows of one statement run as the owner."""
    conn = owner_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def scalar(sql, args=()):
    rows = query(sql, args)
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def fcctl(*args, check=True, timeout=60):
    """Runs core/build/fcctl -c $FC_VAR/fcd.conf with args; returns the
    CompletedProcess.  check=True fails the test on a non-zero exit."""
    if not os.access(FCCTL, os.X_OK):
        raise AssertionError(f"{FCCTL} is not built")
    conf = os.path.join(fc.env("FC_VAR"), "fcd.conf")
    p = subprocess.run([FCCTL, "-c", conf, *[str(a) for a in args]],
                       capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"fcctl {' '.join(map(str, args))} exited "
                             f"{p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def redis_cli(*args):
    """Runs redis-cli against the stack with the password taken from the
    environment (REDISCLI_AUTH), never from the command line."""
    e = {"PATH": "/usr/bin:/bin",
         "REDISCLI_AUTH": fc.env("FC_REDIS_PASSWORD")}
    p = subprocess.run(["redis-cli", "--no-auth-warning",
                        "-h", fc.env("FC_REDIS_HOST"),
                        "-p", fc.env("FC_REDIS_PORT"), *args],
                       capture_output=True, text=True, timeout=30, env=e,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def redis_contract_state(r, contract_id):
    """Everything Redis holds under a contract's hash tag except the
    stored authorize results (txn keys, which a rebuild does not write):
    {key: value}, hashes as dicts of str, the holds zset as a dict of
    member -> score, strings as str."""
    state = {}
    for key in r.scan_iter(match=f"{{c:{contract_id}}}:*", count=1000):
        k = key.decode()
        if k.startswith(f"{{c:{contract_id}}}:txn:"):
            continue
        t = r.type(key).decode()
        if t == "hash":
            state[k] = {f.decode(): v.decode()
                        for f, v in r.hgetall(key).items()}
        elif t == "zset":
            state[k] = {m.decode(): s
                        for m, s in r.zrange(key, 0, -1, withscores=True)}
        elif t == "string":
            state[k] = r.get(key).decode()
        else:
            state[k] = t
    return state


def redis_ctr(r, contract_id):
    return {f.decode(): v.decode() for f, v in
            r.hgetall(f"{{c:{contract_id}}}:ctr").items()}


# ---------------------------------------------------------------------
# building a world

class Card:
    def __init__(self, id, contract_id, pan):
        self.id = id
        self.contract_id = contract_id
        self.pan = pan
        self.masked = mask(pan)


class User:
    def __init__(self, id, email, password, role, org_id):
        self.id = id
        self.email = email
        self.password = password
        self.role = role
        self.org_id = org_id


class TerminalKey:
    def __init__(self, id, key, station_id):
        self.id = id
        self.key = key
        self.station_id = station_id


class Builder:
    """Writes fixtures into PostgreSQL as the owner.  Every method
    returns what it made; publish() brings Redis up to date."""

    def __init__(self):
        self.conn = owner_connect()
        self.contracts = set()
        self.new_terminals = False

    def close(self):
        self.conn.close()

    def _one(self, sql, args):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0] if cur.description else None

    def org(self, tz="Europe/Moscow", name=None):
        return self._one("""
            INSERT INTO organizations (inn, name, timezone)
            VALUES (%s, %s, %s) RETURNING id""",
            (new_inn(), name or f"Test fleet {tag()}", tz))

    def contract(self, org_id, balance=0, credit=0, low_balance=0,
                 status="active"):
        cid = self._one("""
            INSERT INTO contracts (org_id, number, status, blocked_reason,
                                   credit_limit, low_balance)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
            (org_id, f"TST-{tag()}", status,
             "manual" if status == "blocked" else None, credit,
             low_balance))
        if balance:
            self.ledger(cid, balance, "opening")
        self.contracts.add(cid)
        return cid

    def ledger(self, contract_id, amount, kind="topup", at=None):
        self._one("""
            INSERT INTO ledger (contract_id, amount, kind, ref,
                                description, created_at)
            VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()))""",
            (contract_id, amount, kind, f"test-{kind}-{tag()}",
             f"test {kind}", at))

    def group(self, contract_id, name=None):
        return self._one("""
            INSERT INTO card_groups (contract_id, name) VALUES (%s, %s)
            RETURNING id""", (contract_id, name or f"group {tag()}"))

    def card(self, contract_id, group_id=None, status="active",
             expires="2035-12-31", driver_user_id=None, driver_name=None,
             plate=None, allowed_fuel=(), length=16):
        pan = new_pan(length)
        card_id = self._one("""
            INSERT INTO cards (contract_id, group_id, pan_hash, pan_masked,
                               status, expires, driver_name,
                               driver_user_id, vehicle_plate,
                               allowed_fuel)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING id""",
            (contract_id, group_id, pan_hash(pan), mask(pan), status,
             expires, driver_name, driver_user_id, plate,
             list(allowed_fuel)))
        self.contracts.add(contract_id)
        return Card(card_id, contract_id, pan)

    def user(self, org_id, role, password=PASSWORD, name=None):
        email = f"{role}-{tag()}@test.example"
        uid = self._one("""
            INSERT INTO users (org_id, email, name, role, password_hash)
            VALUES (%s, %s, %s, %s, %s) RETURNING id""",
            (org_id, email, name or f"Test {role}", role,
             password_hash(password)))
        return User(uid, email, password, role, org_id)

    def station(self, lat=56.8389, lon=60.6057, network="own", own=True,
                region="66", name=None, code=None):
        t = tag()
        return self._one("""
            INSERT INTO stations (code, name, own, network, address, region,
                                  lat, lon)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (code or f"TST-{t}", name or f"Test station {t}", own, network,
             f"Test road, km {_rng.randint(1, 999)}", region, lat, lon))

    def price(self, station_id, product, price, effective_from):
        self._one("""
            INSERT INTO station_prices (station_id, product_code, price,
                                        effective_from)
            VALUES (%s, %s, %s, %s)""",
            (station_id, product, price, effective_from))

    def terminal(self, station_id, status="active"):
        key = secrets.token_hex(24)
        tid = f"T-TST-{tag()}"
        self._one("""
            INSERT INTO terminals (id, station_id, key_hash, status)
            VALUES (%s, %s, %s, %s)""",
            (tid, station_id, sha256_hex(key), status))
        self.new_terminals = True
        return TerminalKey(tid, key, station_id)

    def limit(self, contract_id, kind, scope="contract", period=None,
              value=None, card_id=None, group_id=None, product_scope="all",
              product_group=None, product_code=None, weekdays=None,
              time_from=None, time_to=None, geo_mode=None, station_ids=(),
              networks=(), regions=(), name=None):
        """weekdays as a bit mask (bit 0 Monday), times in minutes."""
        self.contracts.add(contract_id)
        return self._one("""
            INSERT INTO limits (contract_id, scope, group_id, card_id,
                                product_scope, product_group, product_code,
                                kind, period, value, weekdays, time_from,
                                time_to, geo_mode, station_ids, networks,
                                regions, name)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                    %s, %s, %s, %s)
            RETURNING id""",
            (contract_id, scope, group_id, card_id, product_scope,
             product_group, product_code, kind, period, value, weekdays,
             time_from, time_to, geo_mode, list(station_ids),
             list(networks), list(regions), name))

    def publish(self):
        """Brings Redis up to date with what was written: a terminal is a
        global key, which only a full rebuild writes; otherwise each
        contract touched is rebuilt."""
        if self.new_terminals:
            fcctl("rebuild")
            self.new_terminals = False
        else:
            for cid in sorted(self.contracts):
                fcctl("rebuild", cid)
        self.contracts.clear()


# ---------------------------------------------------------------------
# clients

def _now_header(now):
    return {"X-FC-Test-Now": str(int(now))} if now is not None else {}


class Terminal:
    """A station terminal: its bearer key and its own operation ids."""

    def __init__(self, key, client=None):
        self.key = key
        self.client = client or fc.Client(timeout=30)

    def post(self, path, body=None, now=None, raw=None, headers=None):
        h = {"Authorization": f"Bearer {self.key}"}
        h.update(_now_header(now))
        h.update(headers or {})
        return self.client.request("POST", path, body=body, raw=raw,
                                   headers=h)

    def authorize(self, pan, volume_ml=None, amount=None, price=5000,
                  product="AI-95", txn=None, now=None):
        body = {"terminal_txn_id": txn or txn_id("a"), "card_number": pan,
                "product_code": product, "unit_price": price}
        if volume_ml is not None:
            body["requested_volume_ml"] = volume_ml
        if amount is not None:
            body["requested_amount"] = amount
        return self.post("/pos/v1/authorize", body, now=now)

    def complete(self, auth_id, volume_ml, amount, txn=None, now=None):
        return self.post("/pos/v1/complete",
                         {"terminal_txn_id": txn or txn_id("c"),
                          "auth_id": auth_id, "volume_ml": volume_ml,
                          "amount": amount}, now=now)

    def reverse(self, auth_id, txn=None, now=None):
        return self.post("/pos/v1/reverse",
                         {"terminal_txn_id": txn or txn_id("r"),
                          "auth_id": auth_id}, now=now)

    def refund(self, auth_id, amount, volume_ml, txn=None, now=None):
        return self.post("/pos/v1/refund",
                         {"terminal_txn_id": txn or txn_id("f"),
                          "auth_id": auth_id, "amount": amount,
                          "volume_ml": volume_ml}, now=now)


class Cabinet:
    """A browser in the web cabinet: the session cookie and the CSRF
    token of its login."""

    def __init__(self, client=None):
        self.client = client or fc.Client(timeout=30)
        self.cookie = None
        self.csrf = None

    def login(self, email, password, now=None):
        r = self.client.post("/api/v1/session",
                             {"email": email, "password": password},
                             headers=_now_header(now))
        if r.status == 200:
            cookie = r.headers.get("set-cookie", "")
            self.cookie = cookie.split(";")[0].strip()
            self.csrf = r.json()["csrf_token"]
        return r

    def request(self, method, path, body=None, csrf=True, now=None,
                raw=None, headers=None):
        h = {}
        if self.cookie:
            h["Cookie"] = self.cookie
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h["X-CSRF-Token"] = self.csrf
        h.update(_now_header(now))
        h.update(headers or {})
        return self.client.request(method, path, body=body, raw=raw,
                                   headers=h)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def cabinet_for(user):
    cab = Cabinet()
    r = cab.login(user.email, user.password)
    assert r.status == 200, r
    return cab


class Mobile:
    """The driver's app: a token pair from the password grant."""

    def __init__(self, client=None):
        self.client = client or fc.Client(timeout=30)
        self.access = None
        self.refresh_token = None

    def _take(self, r):
        if r.status == 200:
            body = r.json()
            self.access = body["access_token"]
            self.refresh_token = body["refresh_token"]
        return r

    def login(self, email, password):
        return self._take(self.client.post("/mobile/v1/token", {
            "grant_type": "password", "email": email,
            "password": password}))

    def refresh(self, token=None):
        return self._take(self.client.post("/mobile/v1/token", {
            "grant_type": "refresh_token",
            "refresh_token": token or self.refresh_token}))

    def request(self, method, path, body=None, now=None, raw=None,
                headers=None):
        h = {}
        if self.access:
            h["Authorization"] = f"Bearer {self.access}"
        h.update(_now_header(now))
        h.update(headers or {})
        return self.client.request(method, path, body=body, raw=raw,
                                   headers=h)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def mobile_for(user):
    m = Mobile()
    r = m.login(user.email, user.password)
    assert r.status == 200, r
    return m


def json_lines(obj):
    """Stable text of a JSON value, for messages."""
    return json.dumps(obj, indent=1, sort_keys=True)
