"""Helpers shared by the integration tests.

Everything here talks to a running stack described by the environment
that `scripts/stack env` prints (scripts/test exports it): FC_URL,
FC_PG_*, FC_REDIS_*, FC_VAR.  Only the standard library is needed for
HTTP; PostgreSQL and Redis use Debian's python3-psycopg2 and
python3-redis, imported when first used.
"""

import functools
import http.client
import json
import os
import re
import subprocess
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STACK = os.path.join(ROOT, "scripts", "stack")
MIGRATE = os.path.join(ROOT, "scripts", "migrate")
OPENAPI = os.path.join(ROOT, "docs", "openapi.yaml")
PYTHON = "/usr/bin/python3"

STACK_VARS = ("FC_URL", "FC_VAR", "FC_PG_HOST", "FC_PG_PORT", "FC_PG_DB",
              "FC_PG_USER", "FC_PG_PASSWORD", "FC_PG_DSN", "FC_REDIS_HOST",
              "FC_REDIS_PORT", "FC_REDIS_PASSWORD")


class StackEnvMissing(RuntimeError):
    pass


def env(name):
    """The value of one FC_* variable; fails clearly when the tests run
    outside scripts/test and nothing was exported."""
    value = os.environ.get(name)
    if not value:
        raise StackEnvMissing(
            f"{name} is not set: run the tests with scripts/test, or "
            f"export the output of `scripts/stack env` first")
    return value


# ---------------------------------------------------------------------
# HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # lower-cased names
        self.body = body                # bytes

    @property
    def content_type(self):
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        text = self.body[:300].decode("utf-8", "replace")
        return f"<Response {self.status} {self.content_type} {text!r}>"


class Client:
    """A small HTTP/1.1 client for the API; one connection per request
    so that a test never sees another test's keep-alive state."""

    def __init__(self, base_url=None, timeout=10):
        url = urllib.parse.urlsplit(base_url or env("FC_URL"))
        self.host = url.hostname
        self.port = url.port or 80
        self.timeout = timeout
        self.headers = {}

    def request(self, method, path, body=None, headers=None, raw=None):
        """Send a request; body is encoded as JSON unless raw bytes are
        given instead.  Returns a Response, whatever the status."""
        h = {"Accept": "application/json"}
        h.update(self.headers)
        if body is not None:
            raw = json.dumps(body).encode("utf-8")
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=self.timeout)
        try:
            conn.request(method, path, body=raw, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status,
                            {k.lower(): v for k, v in r.getheaders()},
                            data)
        finally:
            conn.close()

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


def wait_for(predicate, timeout=10.0, interval=0.1, what="condition"):
    """Poll predicate() until it returns a true value, which is
    returned; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what}")
        time.sleep(interval)


# ---------------------------------------------------------------------
# OpenAPI

@functools.lru_cache(maxsize=1)
def openapi_document(path=OPENAPI):
    import yaml
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    _nullable_to_type(doc)
    return doc


def _nullable_to_type(node):
    """OpenAPI 3.0 says `nullable: true`; JSON Schema says type null."""
    if isinstance(node, dict):
        if node.get("nullable") is True and "type" in node:
            t = node["type"]
            types = t if isinstance(t, list) else [t]
            if "null" not in types:
                node["type"] = types + ["null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = list(node["enum"]) + [None]
        for v in node.values():
            _nullable_to_type(v)
    elif isinstance(node, list):
        for v in node:
            _nullable_to_type(v)


def _resolve(doc, node):
    """Follow a local $ref (#/components/...) to what it names."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise KeyError(f"cannot resolve $ref {ref!r}")
        seen.add(ref)
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def response_schema(path, method, status, doc=None):
    """The JSON schema that docs/openapi.yaml gives for a response:
    paths[path][method].responses[status].content["application/json"]
    .schema.  The status falls back to its class ("4XX") and then to
    "default".  `path` is the template as written in the document
    ("/cards/{id}"), not a concrete URL."""
    doc = doc or openapi_document()
    try:
        item = _resolve(doc, doc["paths"][path])
    except KeyError:
        raise AssertionError(f"docs/openapi.yaml has no path {path}")
    op = item.get(method.lower())
    if op is None:
        raise AssertionError(f"docs/openapi.yaml: {path} has no "
                             f"{method.upper()}")
    responses = op.get("responses", {})
    for key in (str(status), f"{str(status)[0]}XX", "default"):
        if key in responses:
            resp = _resolve(doc, responses[key])
            break
    else:
        raise AssertionError(f"docs/openapi.yaml: {method.upper()} {path} "
                             f"documents no {status} response")
    try:
        return resp["content"]["application/json"]["schema"]
    except KeyError:
        raise AssertionError(f"docs/openapi.yaml: {method.upper()} {path} "
                             f"{status} has no application/json schema")


def check_openapi(response, path, method="GET", doc=None):
    """Assert that a Response is what docs/openapi.yaml promises for
    path/method/status: a JSON body valid against the schema.  $refs
    resolve against the whole document, so the schema keeps its
    components."""
    import jsonschema

    method = method.upper()
    doc = doc or openapi_document()
    schema = response_schema(path, method, response.status, doc)
    assert response.content_type == "application/json", \
        f"{method} {path}: Content-Type {response.content_type!r}"
    body = response.json()

    # the schema is validated inside a copy of the document's root, so
    # "#/components/schemas/X" means what it means in the document
    wrapped = dict(schema)
    wrapped["components"] = doc.get("components", {})
    # OpenAPI 3.0 schemas are close to draft 4 (boolean exclusiveMinimum),
    # 3.1 schemas are draft 2020-12
    if str(doc.get("openapi", "")).startswith("3.0"):
        cls = jsonschema.Draft4Validator
    else:
        cls = jsonschema.Draft202012Validator
    validator = cls(wrapped, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(body), key=lambda e: e.path)
    if errors:
        lines = [f"{method} {path} {response.status}: body does not match "
                 f"docs/openapi.yaml:"]
        for e in errors[:10]:
            where = "/".join(str(p) for p in e.path) or "(root)"
            lines.append(f"  at {where}: {e.message}")
        raise AssertionError("\n".join(lines))
    return body


# ---------------------------------------------------------------------
# the stack

def stack(*args, check=True, timeout=120, extra_env=None):
    """Run scripts/stack with this stack's FC_VAR; returns the
    CompletedProcess (text).  check=True fails on a non-zero exit."""
    e = dict(os.environ)
    e["FC_VAR"] = env("FC_VAR")
    e.update(extra_env or {})
    p = subprocess.run([STACK, *args], env=e, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"scripts/stack {' '.join(args)} exited "
                             f"{p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def stop_service(name):
    stack("stop", name)


def start_service(name):
    stack("start", name)


class outage:
    """`with fc.outage("redis"):` stops one service for the block and
    starts it again afterwards, even when the block fails."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        stop_service(self.name)
        return self

    def __exit__(self, *exc):
        start_service(self.name)
        return False


def parse_env(text):
    """NAME=value lines (as `scripts/stack env` prints) to a dict."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[m.group(1)] = value
    return out


def stack_processes(var, services=("pg", "redis", "daemon", "nginx",
                                   "sandbox")):
    """Pids of processes that belong to the stack under `var`: their
    command line names a service directory, or their working directory
    is inside one (the same rule scripts/stack stop applies)."""
    homes = [os.path.join(var, s) for s in services]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8",
                                                           "replace")
            with open(f"/proc/{entry}/status") as f:
                if re.search(r"^State:\s+Z", f.read(), re.M):
                    continue
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        for h in homes:
            if (h + "/" in cmd or (h + " ") in cmd + " "
                    or cwd == h or cwd.startswith(h + "/")):
                found.append((int(entry), cmd.strip()))
                break
    return found


# ---------------------------------------------------------------------
# PostgreSQL and Redis

def pg_connect(dsn=None, **kw):
    """A psycopg2 connection as the application role (FC_PG_DSN)."""
    import psycopg2
    return psycopg2.connect(dsn or env("FC_PG_DSN"), connect_timeout=5,
                            **kw)


def pg_admin(sql, dbname="fc", check=True):
    """Run SQL as the database owner `fc` through the stack's unix
    socket (peer authentication maps root to fc).  Returns psql's
    unaligned output."""
    cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
           "-h", os.path.join(env("FC_VAR"), "run"), "-p", env("FC_PG_PORT"),
           "-U", "fc", "-d", dbname, "-c", sql]
    e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env=e, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"psql failed ({p.returncode}): {p.stderr}")
    return p.stdout


def migrate(*args, dbname="fc", directory=None):
    """Run scripts/migrate as the owner over the unix socket."""
    cmd = [PYTHON, MIGRATE, "--host", os.path.join(env("FC_VAR"), "run"),
           "--port", env("FC_PG_PORT"), "--dbname", dbname, "--user", "fc"]
    if directory:
        cmd += ["--dir", directory]
    return subprocess.run(cmd + list(args), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def redis_client(password=True, **kw):
    """A redis.Redis for the stack; password=False connects without
    authenticating."""
    import redis
    return redis.Redis(host=env("FC_REDIS_HOST"),
                       port=int(env("FC_REDIS_PORT")),
                       password=env("FC_REDIS_PASSWORD") if password
                       else None,
                       socket_timeout=5, socket_connect_timeout=5, **kw)
