"""nginx's configuration and nginx's own errors.

`nginx -t` with our module accepts the stack's configuration and
refuses a broken one with a message that says what is wrong and where.
Each broken configuration is a copy of $FC_VAR/nginx/nginx.conf with
one edit, and every path nginx would write to (pid, lock file, logs,
temp directories) is moved into a temporary directory first, so the
running stack is never touched.

Then the errors nginx produces itself, before or instead of a route:
each answers with the one JSON error shape, never nginx's HTML page,
and the worker lives on.
"""

import http.client
import os
import re
import subprocess
import time
import urllib.parse

import pytest

import fc
from test_nonblocking import ErrorLog, nginx_master, nginx_workers


NGINX = "/usr/sbin/nginx"


# ---------------------------------------------------------------------
# nginx -t

def stack_conf_path():
    return os.path.join(fc.env("FC_VAR"), "nginx", "nginx.conf")


def relocated_conf(tmp):
    """The stack's nginx.conf with everything nginx writes moved under
    tmp; the secrets, scripts and the module still come from the
    stack."""
    with open(stack_conf_path()) as f:
        text = f.read()
    subs = [
        (r"(?m)^pid\s+\S+;", f"pid {tmp}/nginx.pid;"),
        (r"(?m)^lock_file\s+\S+;", f"lock_file {tmp}/nginx.lock;"),
        (r"(?m)^error_log\s+\S+", f"error_log {tmp}/error.log"),
        (r"access_log\s+\S+", f"access_log {tmp}/access.log"),
        (r"(\w+_temp_path)\s+\S+;", rf"\1 {tmp}/\1;"),
    ]
    for pattern, replacement in subs:
        text, n = re.subn(pattern, replacement, text)
        assert n >= 1, f"{pattern} not found in {stack_conf_path()}"
    var = fc.env("FC_VAR")
    for d in ("run", "log", "nginx"):
        assert f"{var}/{d}/" not in text, f"{var}/{d} is still written"
    return text


def edit(text, old, new):
    assert text.count(old) == 1, f"{old!r} is not in the configuration " \
                                 f"exactly once"
    return text.replace(old, new)


def nginx_test(tmp, text):
    """Runs nginx -t on text; returns (exit status, output, path)."""
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([NGINX, "-t", "-p", f"{tmp}/", "-c", path,
                        "-e", os.path.join(tmp, "error.log")],
                       capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL, cwd=tmp)
    return p.returncode, p.stdout + p.stderr, path


def line_of(text, fragment):
    """The line nginx reports for the directive holding fragment: the
    line of the semicolon that ends it."""
    end = text.index(";", text.index(fragment))
    return text.count("\n", 0, end) + 1


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture(autouse=True)
def running_stack_untouched():
    pid_file = os.path.join(fc.env("FC_VAR"), "run", "nginx.pid")
    with open(pid_file) as f:
        pid = f.read()
    mtime = os.stat(pid_file).st_mtime_ns
    master = nginx_master()
    yield
    with open(pid_file) as f:
        assert f.read() == pid
    assert os.stat(pid_file).st_mtime_ns == mtime
    assert nginx_master() == master


def test_nginx_accepts_the_stacks_configuration(tmp):
    rc, out, path = nginx_test(tmp, relocated_conf(tmp))
    assert rc == 0, out
    assert f"the configuration file {path} syntax is ok" in out
    assert f"configuration file {path} test is successful" in out
    assert "[emerg]" not in out and "[warn]" not in out, out


def _secret(name):
    return os.path.join(fc.env("FC_VAR"), "secrets", name)


# (what is broken, old text, new text, message); {tmp} is filled in
BROKEN = [
    ("pg_host_name", "host=127.0.0.1", "host=db.example.org",
     'host "db.example.org" is neither a numeric address nor an absolute '
     'socket directory; host names are not resolved'),
    ("pg_bad_port", "port={pg_port}", "port=65536",
     'invalid port "65536", expected 1-65535'),
    ("pg_unknown_key", "dbname=fc", "dbname=fc colour=blue",
     'unknown key "colour"'),
    ("pg_password_in_conf", "dbname=fc", "dbname=fc password=secret",
     'a password must not be written in the configuration, '
     'use "password_file="'),
    ("pg_missing_password_file", "password_file={pg_password}",
     "password_file={tmp}/no_pg_password",
     'open() "{tmp}/no_pg_password" failed (2: No such file or directory)'),
    ("pg_pool_size_zero", "fc_pg_pool_size 16;", "fc_pg_pool_size 0;",
     "value must be between 1 and 1024"),
    ("redis_host_name", "fc_redis_server 127.0.0.1:{redis_port};",
     "fc_redis_server redis.example.org:6379;",
     'invalid fc_redis_server "redis.example.org:6379": expected a numeric '
     'address with a port, such as 127.0.0.1:6379 or [::1]:6379, or '
     'unix:/path'),
    ("redis_timeout_junk", "fc_redis_timeout 1s;", "fc_redis_timeout soon;",
     '"fc_redis_timeout" directive invalid value'),
    ("secret_missing_file", "fc_secret pan_key {pan_key};",
     "fc_secret pan_key {tmp}/no_pan_key;",
     'fc_secret "pan_key": cannot open "{tmp}/no_pan_key" '
     '(2: No such file or directory)'),
    ("metrics_zone_too_small", "fc_metrics_zone 1m;", "fc_metrics_zone 8k;",
     re.compile(r'fc_metrics_zone "8k" is too small, '
                r'at least \d+k is needed')),
    ("api_unknown_group", "fc_api health;", "fc_api billing;",
     'unknown fc_api group "billing"'),
]


@pytest.mark.parametrize("what, old, new, message", BROKEN,
                         ids=[b[0] for b in BROKEN])
def test_nginx_refuses_a_broken_directive_and_says_where(tmp, what, old,
                                                         new, message):
    values = {"tmp": tmp, "pg_port": fc.env("FC_PG_PORT"),
              "redis_port": fc.env("FC_REDIS_PORT"),
              "pg_password": _secret("pg_password"),
              "pan_key": _secret("pan_key")}
    old, new = old.format(**values), new.format(**values)
    text = edit(relocated_conf(tmp), old, new)

    rc, out, path = nginx_test(tmp, text)

    assert rc == 1, out
    where = f" in {path}:{line_of(text, new)}"
    if isinstance(message, re.Pattern):
        assert re.search(r"nginx: \[emerg\] " + message.pattern
                         + re.escape(where) + "$", out, re.M), out
    else:
        message = message.format(**values)
        assert f"nginx: [emerg] {message}{where}\n" in out, out
    assert f"configuration file {path} test failed" in out


def test_nginx_refuses_a_keepalive_larger_than_the_pool(tmp):
    text = edit(relocated_conf(tmp), "fc_pg_keepalive 16;",
                "fc_pg_keepalive 20;")
    rc, out, path = nginx_test(tmp, text)
    assert rc == 1, out
    assert 'nginx: [emerg] "fc_pg_keepalive" 20 exceeds "fc_pg_pool_size" 16' \
        in out


# ---------------------------------------------------------------------
# nginx's own errors in the JSON shape

def assert_json_error(r, status, code):
    assert r.status == status, r
    assert r.content_type == "application/json", r
    assert b"<html" not in r.body.lower(), r
    body = r.json()
    assert list(body) == ["error"], body
    assert sorted(body["error"]) == ["code", "message"], body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str), body
    assert body["error"]["message"], body
    return body["error"]["message"]


def raw(data):
    """Sends bytes as they are and reads one HTTP answer."""
    url = urllib.parse.urlsplit(fc.env("FC_URL"))
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.connect()
    try:
        conn.sock.sendall(data)
        r = http.client.HTTPResponse(conn.sock, method="GET")
        r.begin()
        body = r.read()
        return fc.Response(r.status,
                           {k.lower(): v for k, v in r.getheaders()}, body)
    finally:
        conn.close()


BAD_JSON = b'{\n  "volume_ml": 10,\n  "amount": ,\n}'

# 100 KiB of valid JSON, over the stack's client_max_body_size 64k
BIG_JSON = b'{"pad":"' + b"x" * (100 * 1024 - 10) + b'"}'


# name: (request, status, code); a request is a function of a Client
OWN_ERRORS = {
    "wrong_method": (lambda c: c.delete("/health"),
                     405, "method_not_allowed"),
    "body_too_large": (lambda c: c.request(
        "POST", "/_test/echo", raw=BIG_JSON,
        headers={"Content-Type": "application/json"}),
        413, "payload_too_large"),
    "body_not_json": (lambda c: c.request(
        "POST", "/_test/echo", raw=b"volume=10",
        headers={"Content-Type": "text/plain"}),
        415, "unsupported_media_type"),
    "malformed_json": (lambda c: c.request(
        "POST", "/_test/echo", raw=BAD_JSON,
        headers={"Content-Type": "application/json"}),
        400, "invalid_json"),
    "unknown_path": (lambda c: c.get("/no/such/resource"),
                     404, "not_found"),
    "unknown_api_path": (lambda c: c.get("/api/v1/no-such-resource"),
                         404, "not_found"),
    "no_host_header": (lambda c: raw(b"GET /health HTTP/1.1\r\n\r\n"),
                       400, "bad_request"),
    "broken_request_line": (lambda c: raw(b"HELLO\r\n\r\n"),
                            400, "bad_request"),
}


@pytest.mark.parametrize("name", list(OWN_ERRORS))
def test_nginx_errors_have_the_json_error_shape(client, name):
    request, status, code = OWN_ERRORS[name]
    assert_json_error(request(client), status, code)


def test_malformed_json_names_the_line_and_column(client):
    request, status, code = OWN_ERRORS["malformed_json"]
    message = assert_json_error(request(client), status, code)
    assert message.startswith(
        "malformed JSON at line 3, column 13 (byte 34)"), message


def test_no_error_answer_kills_the_worker_or_alarms_the_log(client):
    harmed = []
    for name, (request, status, code) in OWN_ERRORS.items():
        workers = nginx_workers()
        log = ErrorLog()
        request(client)
        # a worker that died is replaced before the next request is
        # served; the master logs it when SIGCHLD arrives
        fc.Client().get("/health")
        time.sleep(0.1)
        if log.alarms() or nginx_workers() != workers:
            harmed.append(f"{name}: {log.alarms()}")
    assert harmed == [], "\n".join(harmed)
