"""The nginx worker never blocks.

The test stack runs one worker process, so anything that blocked it
would hold up every other request.  Here requests that need no backend,
or only Redis, are answered at once while a PostgreSQL query sleeps and
while a password is hashed in the thread pool; and clients that walk
away from running or queued queries leave the pool whole: the queries
finish, their connections go back to the pool, nothing is logged above
"error" and the worker does not die.

/_test/pg_sleep?seconds=N (fc_test_routes on) holds one pool connection
for N seconds with SELECT pg_sleep(N).
"""

import base64
import hashlib
import os
import re
import secrets
import socket
import threading
import time
import urllib.parse

import pytest

import fc
import procs


# what "answered at once" means on a 2-core VM with a hundred client
# threads in one Python process
FAST = 0.5

# PBKDF2 iterations of the slow login: about a second of hashing, long
# enough that a blocked worker could not go unnoticed
SLOW_LOGIN_ITERATIONS = 4_000_000

SLEEP_QUERY = "SELECT pg_sleep(%"


# ---------------------------------------------------------------------
# helpers

class Call:
    """One finished request: the Response (or the exception) and when it
    started and ended, on the monotonic clock."""

    def __init__(self, response, started, ended):
        self.response = response
        self.started = started
        self.ended = ended

    @property
    def duration(self):
        return self.ended - self.started

    def __repr__(self):
        return f"<Call {self.duration:.3f}s {self.response!r}>"


def timed(method, path, body=None, timeout=15):
    client = fc.Client(timeout=timeout)
    started = time.monotonic()
    try:
        response = client.request(method, path, body=body)
    except Exception as e:          # reported by the caller's assertion
        response = e
    return Call(response, started, time.monotonic())


def burst(requests):
    """Sends every (method, path) at the same moment, each from its own
    thread on its own connection; returns the Calls in the same order."""
    barrier = threading.Barrier(len(requests))
    calls = [None] * len(requests)

    def run(i, method, path):
        barrier.wait()
        calls[i] = timed(method, path)

    threads = [threading.Thread(target=run, args=(i, m, p))
               for i, (m, p) in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return calls


class Background(threading.Thread):
    """Runs one timed request in a thread; .call holds the result."""

    def __init__(self, method, path, body=None):
        super().__init__(daemon=True)
        self.args_ = (method, path, body)
        self.call = None

    def run(self):
        self.call = timed(*self.args_)


def stack_conf():
    with open(os.path.join(fc.env("FC_VAR"), "nginx", "nginx.conf")) as f:
        return f.read()


def conf_number(directive):
    m = re.search(rf"^\s*{directive}\s+(\d+)\s*;", stack_conf(), re.M)
    assert m, f"{directive} is not in the stack's nginx.conf"
    return int(m.group(1))


def nginx_master():
    with open(os.path.join(fc.env("FC_VAR"), "run", "nginx.pid")) as f:
        return int(f.read().strip())


def nginx_workers():
    """Pids of the worker processes of the stack's nginx master."""
    master = nginx_master()
    workers = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if ppid == master and cmd.startswith(b"nginx: worker process"):
            workers.append(int(entry))
    return sorted(workers)


class ErrorLog:
    """What nginx's error log gains from the moment this is made."""

    ALARM = re.compile(r"\[(alert|crit|emerg)\]|segfault"
                       r"|worker process \d+ exited on signal")

    def __init__(self):
        self.path = os.path.join(fc.env("FC_VAR"), "log", "nginx-error.log")
        self.offset = os.path.getsize(self.path)

    def lines(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace").splitlines()

    def alarms(self):
        return [line for line in self.lines() if self.ALARM.search(line)]


def sleeping_backends(conn):
    """{pid: (state, xact_start)} of the stack's pg_sleep queries.

    (pid, xact_start) names one statement: the pool sends each in the
    extended protocol, and PostgreSQL moves query_start at its Parse,
    Bind and Execute messages, so a sample taken between them would
    count one statement twice.  Its implicit transaction starts once;
    once it has committed, the statement is over although the backend
    shows "active" until the Sync, with no xact_start."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT pid, state, xact_start FROM pg_stat_activity
             WHERE usename = 'fc_app' AND query LIKE %s""", (SLEEP_QUERY,))
        return {pid: (state, start) for pid, state, start in cur.fetchall()}


def running_sleeps(conn):
    return {pid: start for pid, (state, start)
            in sleeping_backends(conn).items()
            if state == "active" and start is not None}


def hold(path):
    """Sends a GET on a raw socket and leaves the answer unread, so that
    the test can go away in the middle of it."""
    url = urllib.parse.urlsplit(fc.env("FC_URL"))
    s = socket.create_connection((url.hostname, url.port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.hostname}\r\n"
              f"Connection: close\r\n\r\n".encode("ascii"))
    return s


def metrics():
    r = fc.Client().get("/metrics")
    assert r.status == 200, r
    out = {}
    for line in r.body.decode("utf-8").splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.fixture
def owner():
    conn = procs.owner_connect()
    yield conn
    conn.close()


@pytest.fixture
def one_worker():
    """Every test here means something only with a single worker, which
    is what the test stack runs."""
    workers = nginx_workers()
    assert conf_number("worker_processes") == 1
    assert len(workers) == 1, workers
    return workers[0]


# ---------------------------------------------------------------------
# tests

def test_the_test_stack_runs_a_single_worker_process(one_worker):
    assert nginx_workers() == [one_worker]


def test_health_and_redis_answer_at_once_while_a_query_sleeps(one_worker,
                                                             owner):
    sleeper = Background("GET", "/_test/pg_sleep?seconds=2")
    sleeper.start()
    fc.wait_for(lambda: running_sleeps(owner), timeout=5,
                interval=0.02, what="pg_sleep(2) to run")

    calls = burst([("GET", "/health")] * 50 + [("GET", "/_test/redis")] * 50)
    sleeper.join(15)

    slept = sleeper.call
    assert slept.response.status == 200, slept
    assert slept.response.json() == {"slept": 2}
    assert slept.duration >= 2.0, slept

    for c in calls[:50]:
        assert c.response.status == 200, c
        assert c.response.json() == {"status": "ok"}
    counters = set()
    for c in calls[50:]:
        assert c.response.status == 200, c
        counters.add(c.response.json()["counter"])
    # every INCR reached Redis: no answer was shared or made up
    assert len(counters) == 50

    slowest = max(calls, key=lambda c: c.duration)
    assert slowest.duration < FAST, slowest
    assert max(c.ended for c in calls) < slept.ended
    assert nginx_workers() == [one_worker]


def test_login_hashing_in_the_thread_pool_does_not_delay_health(one_worker,
                                                                owner):
    password = secrets.token_hex(12)
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt,
                                 SLOW_LOGIN_ITERATIONS)
    encoded = "pbkdf2-sha256$%d$%s$%s" % (
        SLOW_LOGIN_ITERATIONS, base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"))
    email = f"slow-login-{secrets.token_hex(4)}@test.example"
    with owner.cursor() as cur:
        # an operator belongs to no organization: nothing else sees it
        cur.execute("""
            INSERT INTO users (org_id, email, name, role, password_hash)
            VALUES (NULL, %s, 'Slow login', 'operator', %s)
            RETURNING id""", (email, encoded))
        user_id = cur.fetchone()[0]

    try:
        login = Background("POST", "/api/v1/session",
                           {"email": email, "password": password})
        login.start()
        # the SQL half of a login takes milliseconds, the hashing a second
        time.sleep(0.2)
        calls = burst([("GET", "/health")] * 50)
        login.join(30)
    finally:
        with owner.cursor() as cur:
            cur.execute("DELETE FROM sessions WHERE user_id = %s",
                        (user_id,))
            cur.execute("DELETE FROM audit_log WHERE user_id = %s",
                        (user_id,))
            cur.execute("DELETE FROM users WHERE id = %s", (user_id,))

    assert login.call.response.status == 200, login.call
    assert login.call.response.json()["user"]["email"] == email
    # the hashing outlasted the burst by more than FAST: had it blocked
    # the worker, the health checks would have waited that long
    assert login.call.duration > 0.2 + FAST, login.call

    for c in calls:
        assert c.response.status == 200, c
    slowest = max(calls, key=lambda c: c.duration)
    assert slowest.duration < FAST, slowest
    assert max(c.ended for c in calls) < login.call.ended
    assert nginx_workers() == [one_worker]


def test_client_gone_during_a_query_leaves_nothing_dangling(one_worker,
                                                           owner):
    log = ErrorLog()
    before = set(running_sleeps(owner))
    s = hold("/_test/pg_sleep?seconds=2")
    started = fc.wait_for(lambda: set(running_sleeps(owner)) - before,
                          timeout=5, interval=0.02,
                          what="pg_sleep(2) to run")
    assert len(started) == 1, started
    pid = started.pop()
    s.close()

    ready = timed("GET", "/ready")
    assert ready.response.status == 200, ready
    assert ready.duration < FAST, ready

    # the query runs to its end, then its connection is idle in the pool
    # again rather than closed or stuck
    fc.wait_for(lambda: sleeping_backends(owner).get(pid, ("",))[0]
                == "idle", timeout=5, interval=0.05,
                what=f"backend {pid} to finish its sleep and be idle")

    after = timed("GET", "/_test/pg_sleep?seconds=0")
    assert after.response.status == 200, after
    assert after.response.json() == {"slept": 0}
    assert fc.Client().get("/ready").status == 200

    assert log.alarms() == []
    assert nginx_workers() == [one_worker]


def test_clients_gone_while_queued_or_running_leave_the_pool_whole(
        one_worker, owner):
    pool_size = conf_number("fc_pg_pool_size")
    keepalive = conf_number("fc_pg_keepalive")
    queued = 4
    log = ErrorLog()

    # every sleep that ever ran, sampled while the test goes on
    seen = set()
    stop = threading.Event()
    sampler_conn = procs.owner_connect()

    def sample():
        while not stop.is_set():
            seen.update(running_sleeps(sampler_conn).items())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        held = []
        for _ in range(pool_size + queued):
            held.append(hold("/_test/pg_sleep?seconds=2"))
        fc.wait_for(lambda: len(running_sleeps(owner)) == pool_size,
                    timeout=5, interval=0.02,
                    what=f"{pool_size} sleeps to run")
        m = metrics()
        assert m['fc_pool_connections{backend="postgres",state="busy"}'] \
            == pool_size
        assert m['fc_pool_waiting{backend="postgres"}'] == queued

        for s in held:
            s.close()
            time.sleep(0.02)

        health = timed("GET", "/health")
        assert health.response.status == 200, health
        assert health.duration < FAST, health
        # the queued ones left the queue with their clients ...
        fc.wait_for(lambda: metrics()['fc_pool_waiting{backend="postgres"}']
                    == 0, timeout=FAST, interval=0.05,
                    what="the wait queue to empty")
        # ... and the running ones run to their end
        fc.wait_for(lambda: not running_sleeps(owner), timeout=6,
                    interval=0.05, what="the abandoned sleeps to end")
    finally:
        stop.set()
        sampler.join(5)
        sampler_conn.close()

    # a query whose client went away while it waited is never sent
    assert len(seen) == pool_size, sorted(seen)

    ready = timed("GET", "/ready")
    assert ready.response.status == 200, ready
    assert ready.duration < FAST, ready

    m = metrics()
    assert m['fc_pool_connections{backend="postgres",state="busy"}'] == 0
    assert m['fc_pool_connections{backend="postgres",state="idle"}'] \
        == keepalive

    # every slot is back: a full pool of one-second sleeps runs at once,
    # where a leaked slot would leave one to wait for the queue timeout
    calls = burst([("GET", "/_test/pg_sleep?seconds=1")] * pool_size)
    for c in calls:
        assert c.response.status == 200, c
        assert c.response.json() == {"slept": 1}
        assert c.duration < 1.0 + FAST, c

    assert log.alarms() == []
    assert nginx_workers() == [one_worker]
