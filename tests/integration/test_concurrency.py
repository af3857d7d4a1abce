"""Two hundred pumps at once against one contract.

The contract has 10,000.00 RUB available and no limit; 200
authorizations of 60.00 RUB each (12,000.00 RUB in all) arrive together
from four terminals and ten cards.  Redis decides them one after the
other, so exactly 166 are approved in full, one gets the last 40.00 RUB
as a partial approval and the other 33 are declined: the holds add up to
exactly 1,000,000 kopecks, never more.  Afterwards Redis and PostgreSQL
agree: `fcctl compare` exits 0 and the approved amounts recorded in
pos_auths add up to the holds in Redis.
"""

import collections
import threading
import types

import pytest

import procs

REQUESTS = 200
AVAILABLE = 1_000_000
ASK = 6_000
PRICE = 5_000


@pytest.fixture(scope="module")
def world():
    b = procs.Builder()
    w = types.SimpleNamespace(b=b)
    w.org = b.org()
    w.contract = b.contract(w.org, balance=AVAILABLE)
    w.cards = [b.card(w.contract) for _ in range(10)]
    w.station = b.station()
    w.terms = [b.terminal(w.station) for _ in range(4)]
    w.owner = b.user(w.org, "owner")
    b.publish()
    yield w
    b.close()


def test_concurrent_authorizations_never_exceed_the_money_available(
        world, openapi, redis):
    barrier = threading.Barrier(REQUESTS)
    answers = [None] * REQUESTS

    def pump(i):
        pos = procs.Terminal(world.terms[i % len(world.terms)].key)
        card = world.cards[i % len(world.cards)]
        barrier.wait(timeout=60)
        try:
            answers[i] = pos.authorize(card.pan, amount=ASK, price=PRICE,
                                       txn=f"conc-{i}-{procs.tag()}")
        except Exception as e:              # reported below, per request
            answers[i] = e

    threads = [threading.Thread(target=pump, args=(i,))
               for i in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    failed = [a for a in answers if not hasattr(a, "status")
              or a.status != 200]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[:3]}"

    bodies = [openapi(a, "/pos/v1/authorize", "POST") for a in answers]
    by_status = collections.Counter(b["status"] for b in bodies)
    approved = sum(b["approved_amount"] for b in bodies)

    assert approved == AVAILABLE
    assert by_status == {"approved": 166, "partial": 1, "declined": 33}
    partial = [b for b in bodies if b["status"] == "partial"][0]
    assert (partial["approved_amount"], partial["approved_volume_ml"],
            partial["reason"]) == (4_000, 800, "INSUFFICIENT_FUNDS")
    assert all(b["decline_code"] == "INSUFFICIENT_FUNDS"
               for b in bodies if b["status"] == "declined")
    assert len({b["auth_id"] for b in bodies}) == REQUESTS

    # PostgreSQL recorded every decision, and its holds are Redis' holds
    rows = procs.query("""
        SELECT count(*), coalesce(sum(approved_amount), 0),
               count(*) FILTER (WHERE state = 'held')
          FROM pos_auths WHERE contract_id = %s""", (world.contract,))
    assert rows == [(REQUESTS, AVAILABLE, 167)]
    held = procs.scalar("""
        SELECT coalesce(sum(approved_amount), 0) FROM pos_auths
         WHERE contract_id = %s AND state = 'held'""", (world.contract,))
    ctr = procs.redis_ctr(redis, world.contract)
    assert int(ctr["holds"]) == held == AVAILABLE
    assert redis.zcard(f"{{c:{world.contract}}}:holds") == 167

    p = procs.fcctl("compare", world.contract, check=False)
    assert p.returncode == 0, p.stdout + p.stderr

    cab = procs.cabinet_for(world.owner)
    c = openapi(cab.get(f"/api/v1/contracts/{world.contract}"),
                "/api/v1/contracts/{id}")
    assert (c["balance"], c["holds"], c["available"]) == (AVAILABLE,
                                                          AVAILABLE, 0)

    # and the next one finds nothing left
    pos = procs.Terminal(world.terms[0].key)
    r = pos.authorize(world.cards[0].pan, amount=1, price=PRICE)
    body = openapi(r, "/pos/v1/authorize", "POST")
    assert (body["status"], body["decline_code"]) == ("declined",
                                                     "INSUFFICIENT_FUNDS")
