"""Fixtures for the integration tests.

The tests run against a stack that is already up: scripts/test starts
one under var/test with test routes on and exports what `scripts/stack
env` prints.  Without that environment every test fails at once with a
message saying so, rather than probing some other server.

Fixtures:
  client    fc.Client for FC_URL (stdlib HTTP)
  openapi   check(response, path, method) against docs/openapi.yaml;
            skips the test when the document does not exist yet
  pg        psycopg2 connection as the application role, rolled back
            and closed after the test
  redis     redis.Redis authenticated with the stack's password
  stack_env the FC_* variables as a dict
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fc  # noqa: E402


def pytest_configure(config):
    missing = [v for v in ("FC_URL", "FC_VAR", "FC_PG_DSN", "FC_REDIS_PORT")
               if not os.environ.get(v)]
    if missing:
        raise pytest.UsageError(
            f"{', '.join(missing)} not set: run the integration tests "
            f"with scripts/test (or export `scripts/stack env` of a "
            f"running stack)")


@pytest.fixture(scope="session")
def stack_env():
    return {v: fc.env(v) for v in fc.STACK_VARS}


@pytest.fixture
def client():
    return fc.Client()


@pytest.fixture(scope="session")
def openapi():
    if not os.path.exists(fc.OPENAPI):
        pytest.skip("docs/openapi.yaml does not exist yet")
    doc = fc.openapi_document()

    def check(response, path, method="GET"):
        return fc.check_openapi(response, path, method, doc)

    return check


@pytest.fixture
def pg():
    conn = fc.pg_connect()
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture
def redis():
    r = fc.redis_client()
    try:
        yield r
    finally:
        r.close()
