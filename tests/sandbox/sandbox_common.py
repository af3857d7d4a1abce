"""What the four sandbox servers (bank, cash register, CRM, 1C) share.

Each server is a ThreadingHTTPServer on 127.0.0.1 that answers its
protocol's routes and, under /_control/, a control interface for tests:

  GET  /_control/health     {"name", "status": "ok"}
  GET  /_control/mode       the failure mode in force
  POST /_control/mode       {"mode": "ok"|"fail"|"slow"|"drop",
                             "count": N|null, "delay_ms": ms,
                             "status": 500|503, "path": "/prefix"|null}
  GET  /_control/log        protocol requests received, with bodies
                            (?path=/prefix filters, ?since=seq skips)
  POST /_control/reset      mode ok, log and data emptied

A failure mode applies to protocol requests only (never to /_control/),
to those whose path starts with "path" if given, and to the next
"count" of them (null: until reset or mode ok).  "fail" answers
"status" (default 500) without doing anything, "slow" sleeps delay_ms
and then answers normally, "drop" closes the connection unanswered.

A server keeps its data in memory and mirrors it, after every change,
into <state-dir>/<name>.json, so that a restart of the stack does not
forget what was paid, fiscalised or posted.  The request log is memory
only.

Money in request bodies is parsed as Decimal (never float) and written
back as the same number text.
"""

import argparse
import collections
import decimal
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


HOST = "127.0.0.1"
MSK = timezone(timedelta(hours=3), "MSK")   # Moscow has had no DST since 2014
LOG_LIMIT = 5000            # protocol requests kept for GET /_control/log
BODY_LIMIT = 1024 * 1024    # bytes; a larger request body answers 413
MODES = ("ok", "fail", "slow", "drop")

# header and JSON field names whose values the request log never keeps
SECRET_HEADERS = ("authorization", "token")
SECRET_FIELDS = ("pass", "password", "Password", "Token", "token")


# ---------------------------------------------------------------------
# JSON with exact decimals

def loads(raw):
    """Parses JSON text or bytes; fractional numbers become Decimal."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw, parse_float=decimal.Decimal)


# json cannot write a number it does not know, so a Decimal travels as
# a marked string and the mark is replaced by the bare number text
_DECIMAL_MARK = "\u0000decimal:"
_DECIMAL_RE = re.compile(r'"\\u0000decimal:(-?[0-9]+(?:\.[0-9]+)?)"')


def _encode_decimal(value):
    if isinstance(value, decimal.Decimal):
        return _DECIMAL_MARK + format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value, indent=None):
    """JSON text of value; Decimals are written as plain numbers."""
    text = json.dumps(value, ensure_ascii=False, indent=indent,
                      default=_encode_decimal)
    return _DECIMAL_RE.sub(r"\1", text)


def now_utc():
    return datetime.now(timezone.utc)


def iso(moment):
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def parse_moment(value):
    """A moment given by a test: unix seconds or ISO 8601 text (a naive
    one is taken as Moscow time, as the bank's own clock is)."""
    if isinstance(value, bool):
        raise ValueError(f"not a moment: {value!r}")
    if isinstance(value, (int, decimal.Decimal)):
        return datetime.fromtimestamp(int(value), timezone.utc)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=MSK)
        return moment.astimezone(timezone.utc)
    raise ValueError(f"not a moment: {value!r}")


def read_secret(path):
    """The first line of a secret file; an empty one is an error."""
    with open(path, encoding="utf-8") as f:
        value = f.read().strip()
    if not value:
        raise SystemExit(f"{path}: the secret file is empty")
    return value


def loopback_url(url):
    """True if url is plain http to this machine: the sandbox sends
    nothing anywhere else, whatever a client asks it to call back."""
    try:
        parts = urllib.parse.urlsplit(url)
        return (parts.scheme == "http"
                and parts.hostname in ("127.0.0.1", "localhost"))
    except ValueError:
        return False


def redact(value):
    """A copy of a parsed body without passwords and tokens, for the log."""
    if isinstance(value, dict):
        return {k: ("***" if k in SECRET_FIELDS else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def mask_pan(pan):
    """430000******0777: the form a card number may be shown in."""
    digits = re.sub(r"\D", "", str(pan))
    if len(digits) < 12:
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


# ---------------------------------------------------------------------
# requests and replies

class Request:
    """One parsed HTTP request as the routes see it."""

    def __init__(self, method, raw_path, headers, body):
        try:
            # http.server reads the request line as latin-1: a client
            # that sent UTF-8 unescaped (Document_Поступление...) gets
            # its text back
            raw_path = raw_path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            pass
        parts = urllib.parse.urlsplit(raw_path)
        self.method = method
        self.raw_path = raw_path
        self.path = urllib.parse.unquote(parts.path)
        self.query = urllib.parse.parse_qs(parts.query,
                                           keep_blank_values=True)
        self.headers = headers
        self.body = body
        self.match = None
        self._json = None

    def header(self, name, default=None):
        """A request header, whatever the case the client wrote it in."""
        name = name.lower()
        for key, value in self.headers.items():
            if key.lower() == name:
                return value
        return default

    def arg(self, name, default=None):
        values = self.query.get(name)
        return values[0] if values else default

    def args(self, name):
        return self.query.get(name, [])

    def json(self):
        """The body as JSON; raises ValueError naming the problem."""
        if self._json is None:
            if not self.body:
                raise ValueError("the request has no body")
            try:
                self._json = loads(self.body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"the body is not JSON: {e}") from None
        return self._json

    def json_object(self):
        value = self.json()
        if not isinstance(value, dict):
            raise ValueError("the body is not a JSON object")
        return value

    def form(self):
        text = self.body.decode("utf-8", "replace")
        return {k: v[0] for k, v in
                urllib.parse.parse_qs(text, keep_blank_values=True).items()}


class Reply:
    def __init__(self, status, body=b"", content_type="application/json",
                 headers=None):
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode("utf-8")
        self.content_type = content_type
        self.headers = headers or {}


def json_reply(status, value, headers=None):
    return Reply(status, dumps(value), "application/json; charset=utf-8",
                 headers)


def text_reply(status, text, content_type="text/plain; charset=utf-8"):
    return Reply(status, text, content_type)


def control_error(status, message):
    return json_reply(status, {"error": message})


class App:
    """A sandbox server's own part: its routes and its data.

    routes and control_routes are lists of (method, regex, function);
    a function takes a Request (with .match set) and returns a Reply.
    A subclass keeps its data in self.data (JSON-able, persisted by
    save()) and may start background threads in start().
    """

    name = "sandbox"

    def __init__(self, args):
        self.args = args
        self.port = args.port
        self.lock = threading.RLock()
        self.state_path = os.path.join(args.state_dir, self.name + ".json")
        self.data = self.empty_data()
        self.routes = []
        self.control_routes = []
        self.load()

    @staticmethod
    def add_arguments(parser):
        pass

    def empty_data(self):
        return {}

    def base_url(self):
        return f"http://{HOST}:{self.port}"

    def load(self):
        try:
            with open(self.state_path, encoding="utf-8") as f:
                saved = loads(f.read())
        except FileNotFoundError:
            return
        except ValueError as e:
            # a torn file is not worth refusing to start over
            log_line(self.name, f"ignoring {self.state_path}: {e}")
            return
        self.data.update(saved)

    def save(self):
        """Writes self.data atomically; callers hold self.lock."""
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(dumps(self.data))
        os.replace(tmp, self.state_path)

    def reset(self):
        """Forgets the data (counters that make ids unique survive)."""
        with self.lock:
            self.data = self.empty_data()
            self.save()

    def start(self):
        pass

    def stop(self):
        pass

    def log_body(self, request):
        """The body as the request log keeps it."""
        if not request.body:
            return None
        try:
            return redact(request.json())
        except ValueError:
            return request.body[:4096].decode("utf-8", "replace")


def log_line(name, text):
    stamp = now_utc().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    sys.stderr.write(f"{stamp} {name}: {text}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------
# the server

class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app):
        self.app = app
        self.mode_lock = threading.Lock()
        self.mode = self.default_mode()
        self.requests = collections.deque(maxlen=LOG_LIMIT)
        self.seq = 0
        super().__init__((HOST, app.port), Handler)

    @staticmethod
    def default_mode():
        return {"mode": "ok", "count": None, "delay_ms": 0, "status": 500,
                "path": None}

    def take_mode(self, path):
        """The failure mode for one protocol request, counting it down."""
        with self.mode_lock:
            mode = dict(self.mode)
            if mode["mode"] == "ok":
                return mode
            if mode["path"] and not path.startswith(mode["path"]):
                return self.default_mode()
            if mode["count"] is not None:
                self.mode["count"] -= 1
                if self.mode["count"] <= 0:
                    self.mode = self.default_mode()
            return mode

    def set_mode(self, req):
        mode = self.default_mode()
        unknown = set(req) - set(mode)
        if unknown:
            raise ValueError(f"unknown mode field {sorted(unknown)[0]!r}")
        mode.update(req)
        if mode["mode"] not in MODES:
            raise ValueError(f"mode {mode['mode']!r} is not one of {MODES}")
        for name in ("count", "delay_ms", "status"):
            value = mode[name]
            if value is None and name == "count":
                continue
            if (not isinstance(value, int) or isinstance(value, bool)
                    or value < 0):
                raise ValueError(f"{name} {value!r} is not a whole number")
        if mode["mode"] == "fail" and not 400 <= mode["status"] <= 599:
            raise ValueError(f"status {mode['status']} is not an error")
        if mode["count"] == 0:
            mode = self.default_mode()
        with self.mode_lock:
            self.mode = mode
        return mode

    def record(self, request):
        with self.mode_lock:
            self.seq += 1
            entry = {
                "seq": self.seq,
                "at": iso(now_utc()),
                "method": request.method,
                "path": request.raw_path,
                "headers": {k: ("***" if k.lower() in SECRET_HEADERS else v)
                            for k, v in request.headers.items()},
                "body": self.app.log_body(request),
                "status": None,
            }
            self.requests.append(entry)
        return entry


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300               # seconds an idle keep-alive connection lives
    server_version = "fc-sandbox"
    sys_version = ""

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def log_message(self, fmt, *args):
        # http.server's own lines (malformed requests) in our format
        log_line(self.server.app.name, fmt % args)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > BODY_LIMIT:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > BODY_LIMIT:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self):
        server = self.server
        app = server.app
        started = time.monotonic()
        try:
            body = self.read_body()
        except ValueError:
            self.send_reply(control_error(400, "unreadable request body"))
            return
        if body is None:
            self.close_connection = True
            self.send_reply(control_error(413, "request body too large"))
            return
        request = Request(self.command, self.path,
                          {k: v for k, v in self.headers.items()}, body)
        control = request.path.startswith("/_control/")
        entry = None if control else server.record(request)

        if control:
            reply = self.control(request)
        else:
            mode = server.take_mode(request.path)
            if mode["mode"] == "drop":
                self.drop(request, entry, started)
                return
            if mode["mode"] == "slow":
                time.sleep(mode["delay_ms"] / 1000)
            if mode["mode"] == "fail":
                reply = json_reply(mode["status"],
                                   {"error": "sandbox failure mode"})
            else:
                reply = self.route(app.routes, request)

        if entry is not None:
            entry["status"] = reply.status
        self.send_reply(reply)
        if request.path != "/_control/health":
            ms = int((time.monotonic() - started) * 1000)
            log_line(app.name, f"{request.method} {request.path} "
                               f"{reply.status} {ms}ms")

    def drop(self, request, entry, started):
        entry["status"] = "dropped"
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        ms = int((time.monotonic() - started) * 1000)
        log_line(self.server.app.name,
                 f"{request.method} {request.path} dropped {ms}ms")

    def route(self, routes, request):
        allowed = False
        for method, pattern, func in routes:
            match = re.fullmatch(pattern, request.path)
            if not match:
                continue
            if method != request.method:
                allowed = True
                continue
            request.match = match
            try:
                return func(request)
            except Exception:
                traceback.print_exc()
                return control_error(500, "sandbox internal error")
        if allowed:
            return control_error(405, "method not allowed")
        return control_error(404, f"no route for {request.path}")

    def control(self, request):
        server = self.server
        app = server.app
        path = request.path
        try:
            if path == "/_control/health" and request.method == "GET":
                return json_reply(200, {"name": app.name, "status": "ok"})
            if path == "/_control/mode" and request.method == "GET":
                return json_reply(200, server.mode)
            if path == "/_control/mode" and request.method == "POST":
                return json_reply(200, server.set_mode(request.json_object()))
            if path == "/_control/log" and request.method == "GET":
                since = int(request.arg("since", "0"))
                prefix = request.arg("path", "")
                with server.mode_lock:
                    entries = [e for e in server.requests
                               if e["seq"] > since
                               and urllib.parse.unquote(
                                   e["path"]).startswith(prefix)]
                return json_reply(200, entries)
            if path == "/_control/reset" and request.method == "POST":
                with server.mode_lock:
                    server.mode = server.default_mode()
                    server.requests.clear()
                app.reset()
                return json_reply(200, {"reset": True})
        except ValueError as e:
            return control_error(400, str(e))
        return self.route(app.control_routes, request)

    def send_reply(self, reply):
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_request(self, code="-", size="-"):
        # dispatch() writes one line per request itself
        pass


# ---------------------------------------------------------------------
# main

def main(app_class, argv=None):
    parser = argparse.ArgumentParser(
        prog=f"{app_class.name}.py",
        description=(app_class.__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--port", type=int, required=True,
                        help="TCP port on 127.0.0.1")
    parser.add_argument("--state-dir", required=True,
                        help="directory for <name>.json (created if absent)")
    parser.add_argument("--pid-file",
                        help="written once the port is bound, removed at exit")
    app_class.add_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a port")

    os.makedirs(args.state_dir, exist_ok=True)
    app = app_class(args)
    try:
        server = Server(app)
    except OSError as e:
        raise SystemExit(f"{app.name}: cannot listen on {HOST}:{args.port}:"
                         f" {e.strerror}")

    def on_signal(signum, frame):
        # shutdown() waits for serve_forever, so not from its own thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    app.start()
    if args.pid_file:
        tmp = args.pid_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, args.pid_file)
    log_line(app.name, f"listening on {app.base_url()}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        app.stop()
        server.server_close()
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except FileNotFoundError:
                pass
        log_line(app.name, "stopped")
