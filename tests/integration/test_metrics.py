"""GET /metrics: Prometheus text that counts exactly what happened.

The test stack has one worker and nobody else talks to it, so counters
move only by what a test does: every delta below is exact.  A request
is counted in the log phase, after its answer is sent, so a scrape
never counts itself but the next scrape sees the previous one.
"""

import re
import threading
import time

import pytest

import fc
from test_nonblocking import hold


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
                    r'(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?)\})?'
                    r' (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')

BUCKETS = ["0.001", "0.002", "0.005", "0.010", "0.025", "0.050", "0.100",
           "0.250", "0.500", "1.000", "2.500", "5.000", "+Inf"]

BACKENDS = ("postgres", "redis")


def key(name, **labels):
    return (name, tuple(sorted(labels.items())))


def scrape():
    """(Response, {key(name, **labels): value}) of one GET /metrics."""
    r = fc.Client().get("/metrics")
    assert r.status == 200, r
    samples = {}
    for line in r.body.decode("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples[key(m.group(1), **labels)] = float(m.group(3))
    return r, samples


def samples():
    return scrape()[1]


def delta(before, after, name):
    """The series of `name` that changed, with how much."""
    out = {}
    for k in set(before) | set(after):
        if k[0] == name and after.get(k, 0) != before.get(k, 0):
            out[k] = after.get(k, 0) - before.get(k, 0)
    return out


def requests(route, status):
    return key("fc_http_requests_total", route=route, status=str(status))


def get(path):
    return fc.Client().get(path)


@pytest.fixture
def ready_afterwards():
    yield
    fc.wait_for(lambda: get("/ready").status == 200, timeout=20,
                what="/ready to answer 200 again")


# ---------------------------------------------------------------------
# the format

def test_metrics_are_prometheus_text():
    r, _ = scrape()
    assert r.content_type == "text/plain", r
    assert "version=0.0.4" in r.headers["content-type"]
    assert r.body.endswith(b"\n")


def test_every_family_has_one_help_and_type_and_one_group_of_lines():
    r, _ = scrape()
    helps, types, order = set(), {}, []

    for line in r.body.decode("utf-8").splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helps, f"second HELP of {name}"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in types, f"second TYPE of {name}"
            assert name not in order, f"TYPE of {name} after its samples"
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
        elif line:
            name = SAMPLE.match(line).group(1)
            family = name
            for suffix in ("_bucket", "_sum", "_count"):
                base = name[:-len(suffix)]
                if name.endswith(suffix) and types.get(base) == "histogram":
                    family = base
            assert family in types, f"{name} has no TYPE line before it"
            assert family in helps, f"{name} has no HELP line before it"
            if types[family] == "counter":
                assert family.endswith("_total"), family
            order.append(family)

    groups = [f for i, f in enumerate(order) if i == 0 or order[i - 1] != f]
    assert len(groups) == len(set(groups)), \
        f"a family's lines are split: {groups}"


# ---------------------------------------------------------------------
# requests

def test_requests_are_counted_by_route_and_status_exactly():
    before = samples()
    for _ in range(5):
        assert get("/health").status == 200
    for _ in range(3):
        assert get("/_test/pg_sleep?seconds=soon").status == 422
    for _ in range(2):
        assert get("/_test/redis").status == 200
    after = samples()

    assert delta(before, after, "fc_http_requests_total") == {
        requests("health", 200): 5,
        requests("test_pg_sleep", 422): 3,
        requests("test_redis", 200): 2,
        requests("metrics", 200): 1,
    }


def test_a_client_that_goes_away_is_counted_as_499():
    before = samples()
    s = hold("/_test/pg_sleep?seconds=1")
    time.sleep(0.3)
    s.close()
    time.sleep(0.2)
    after = samples()

    assert delta(before, after, "fc_http_requests_total") == {
        requests("test_pg_sleep", 499): 1,
        requests("metrics", 200): 1,
    }

    # the abandoned query still holds a connection until its sleep ends
    busy = key("fc_pool_connections", backend="postgres", state="busy")
    fc.wait_for(lambda: samples()[busy] == 0, timeout=5,
                what="the abandoned pg_sleep to end")


# ---------------------------------------------------------------------
# backends

@pytest.mark.parametrize("backend, route", [
    ("redis", "/_test/redis"),
    ("postgres", "/_test/pg_sleep?seconds=0"),
])
def test_backend_errors_grow_by_one_per_failed_call_during_an_outage(
        backend, route, ready_afterwards):
    route_name = "test_redis" if backend == "redis" else "test_pg_sleep"
    with fc.outage(backend):
        before = samples()
        for _ in range(4):
            assert get(route).status == 503
        after = samples()

    errors = delta(before, after, "fc_backend_errors_total")
    assert {dict(k[1])["backend"] for k in errors} == {backend}
    assert sum(errors.values()) == 4, errors
    assert errors.get(key("fc_backend_errors_total", backend=backend,
                          kind="connect"), 0) >= 1, errors
    assert delta(before, after, "fc_http_requests_total") == {
        requests(route_name, 503): 4,
        requests("metrics", 200): 1,
    }


def test_latency_histograms_are_cumulative_and_count_every_round_trip():
    assert get("/_test/redis").status == 200
    before = samples()

    for backend in BACKENDS:
        counts = []
        for le in BUCKETS:
            k = key("fc_backend_latency_seconds_bucket", backend=backend,
                    le=le)
            assert k in before, f"no bucket le={le} for {backend}"
            counts.append(before[k])
        assert counts == sorted(counts), (backend, counts)
        assert counts[-1] == before[key("fc_backend_latency_seconds_count",
                                        backend=backend)]
        assert key("fc_backend_latency_seconds_sum",
                   backend=backend) in before

    r = get("/_test/pg_sleep?seconds=1")
    assert r.status == 200, r
    after = samples()

    def moved(backend, name, **labels):
        k = key(f"fc_backend_latency_seconds_{name}", backend=backend,
                **labels)
        return after[k] - before[k]

    assert moved("postgres", "count") == 1
    assert moved("postgres", "bucket", le="+Inf") == 1
    assert moved("postgres", "bucket", le="2.500") == 1
    assert moved("postgres", "bucket", le="0.500") == 0
    assert 1.0 <= moved("postgres", "sum") < 2.5
    assert moved("redis", "count") == 0


def test_pool_gauges_show_busy_idle_and_waiting_connections():
    assert get("/_test/redis").status == 200
    m = samples()
    for backend in BACKENDS:
        for state in ("busy", "idle"):
            assert key("fc_pool_connections", backend=backend,
                       state=state) in m
        assert key("fc_pool_waiting", backend=backend) in m
    assert m[key("fc_pool_connections", backend="redis", state="idle")] >= 1

    box = {}
    sleeper = threading.Thread(
        target=lambda: box.update(r=get("/_test/pg_sleep?seconds=1")))
    sleeper.start()
    time.sleep(0.3)
    during = samples()
    sleeper.join(10)
    after = samples()

    assert box["r"].status == 200, box["r"]
    busy = key("fc_pool_connections", backend="postgres", state="busy")
    idle = key("fc_pool_connections", backend="postgres", state="idle")
    assert during[busy] == 1
    assert during[key("fc_pool_waiting", backend="postgres")] == 0
    assert after[busy] == 0
    assert after[idle] >= 1
