"""Backend outages: nginx keeps serving and recovers by itself.

While client threads keep calling a route that needs the backend,
/ready and /health, the backend is stopped with `scripts/stack stop`
(fc.outage) and started again.  While it is down every call that needs
it fails at once with a 503 and the JSON error body, /health stays 200,
and no worker dies; once it is back calls succeed again with the same
nginx master, nothing restarted.

Every outage is undone in a finally (fc.outage), and each test waits
for /ready to answer 200 before it ends, so that later test modules
find the stack whole.
"""

import threading
import time

import pytest

import fc
from test_nonblocking import FAST, ErrorLog, nginx_master, nginx_workers, \
    timed


# seconds a backend stays down; long enough for dozens of calls
OUTAGE = 1.5

# pause of a load thread between its calls
PAUSE = 0.01


class Load:
    """Threads that call their paths again and again until the block
    ends, one thread per path; every Call is kept with its path."""

    def __init__(self, paths):
        self.calls = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(p,),
                                         daemon=True) for p in paths]

    def run(self, path):
        while not self.stopped.is_set():
            call = timed("GET", path)
            with self.lock:
                self.calls.append((path, call))
            time.sleep(PAUSE)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        for t in self.threads:
            t.join(30)
        return False

    def between(self, path, since, until=float("inf")):
        """The calls of path that started at or after `since` and ended
        at or before `until`."""
        with self.lock:
            return [c for p, c in self.calls
                    if p == path and c.started >= since
                    and c.ended <= until]


def ready_again():
    fc.wait_for(lambda: fc.Client().get("/ready").status == 200,
                timeout=20, what="/ready to answer 200 again")


@pytest.fixture(autouse=True)
def stack_whole_afterwards():
    yield
    ready_again()


def unavailable(backend):
    return {"error": {"code": "service_unavailable",
                      "message": f"{backend} is unavailable"}}


def not_ready(postgres, redis, message):
    return {"error": {"code": "not_ready", "message": message,
                      "checks": {"postgres": postgres, "redis": redis}}}


def assert_fast_answers(calls, status, body=None, at_least=5):
    assert len(calls) >= at_least, calls
    for c in calls:
        assert not isinstance(c.response, Exception), c
        assert c.response.status == status, c
        assert c.response.content_type == "application/json", c
        if body is not None:
            assert c.response.json() == body, c
        assert c.duration < FAST, c


def outage_under_load(service, route, down_body, ready_body):
    """Stops `service` while threads call route, /ready and /health;
    checks the answers before, during and after the outage."""
    master = nginx_master()
    workers = nginx_workers()
    log = ErrorLog()
    probe = fc.Client()

    with Load([route, "/ready", "/health"]) as load:
        time.sleep(0.3)
        before = time.monotonic()
        with fc.outage(service):
            down = time.monotonic()
            time.sleep(OUTAGE)
            restarting = time.monotonic()
        recovered = fc.wait_for(
            lambda: probe.get(route).status == 200 and time.monotonic(),
            timeout=10, interval=0.05,
            what=f"{route} to answer 200 after {service} is back")
        time.sleep(0.5)

    assert_fast_answers(load.between(route, 0, before), 200)
    assert_fast_answers(load.between("/ready", 0, before), 200)

    assert_fast_answers(load.between(route, down, restarting), 503,
                        down_body)
    assert_fast_answers(load.between("/ready", down, restarting), 503,
                        ready_body)

    # no restart of nginx: the same master, even the same worker
    assert_fast_answers(load.between(route, recovered), 200)
    assert_fast_answers(load.between("/ready", recovered), 200)
    assert nginx_master() == master
    assert nginx_workers() == workers

    # liveness never depended on the backend
    assert_fast_answers(load.between("/health", 0), 200, {"status": "ok"})
    assert log.alarms() == []


def test_redis_outage_fails_fast_and_recovers_without_restart():
    outage_under_load(
        "redis", "/_test/redis", unavailable("redis"),
        not_ready("ok", "unavailable", "redis is unavailable"))


def test_postgres_outage_fails_fast_and_recovers_without_restart():
    outage_under_load(
        "postgres", "/_test/pg_sleep?seconds=0", unavailable("postgres"),
        not_ready("unavailable", "ok", "postgres is unavailable"))


def test_ready_names_both_backends_when_both_are_down():
    master = nginx_master()
    with fc.outage("redis"), fc.outage("postgres"):
        ready = timed("GET", "/ready")
        health = timed("GET", "/health")
        redis_call = timed("GET", "/_test/redis")
        pg_call = timed("GET", "/_test/pg_sleep?seconds=0")

    assert_fast_answers([ready], 503, not_ready(
        "unavailable", "unavailable", "postgres and redis are unavailable"),
        at_least=1)
    assert_fast_answers([health], 200, {"status": "ok"}, at_least=1)
    assert_fast_answers([redis_call], 503, unavailable("redis"), at_least=1)
    assert_fast_answers([pg_call], 503, unavailable("postgres"), at_least=1)

    ready_again()
    assert nginx_master() == master
