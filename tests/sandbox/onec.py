#!/usr/bin/env python3
"""Sandbox of 1C:Enterprise's standard OData interface, documents only.

  python3 tests/sandbox/onec.py --port 18094 --state-dir DIR \
      --user fc-exchange --password-file F

Protocol routes (HTTP Basic auth on all; a wrong one answers 401):
  POST /odata/standard.odata/Document_<Kind>?$format=json
        JSON object with a Ref_Key GUID: 201 with the document; a
        Ref_Key that exists answers 409 "already exists"
  GET  /odata/standard.odata/Document_<Kind>(guid'<Ref_Key>')?$format=json
        200 with the document, or 404
  GET  /odata/standard.odata/Document_<Kind>?$format=json
        {"value": [documents of that kind]}
Control route (besides those of sandbox_common):
  GET  /_control/documents    every document with how often it was
                              posted (?kind= filters)
"""

import base64
import binascii
import re
import secrets

import sandbox_common as sc


BASE = "/odata/standard.odata"
GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-" \
       r"[0-9a-fA-F]{12}"
KIND = r"Document_([^/()?]+)"


def odata_error(status, code, message):
    return sc.json_reply(status, {"odata.error": {
        "code": code, "message": {"lang": "ru", "value": message}}})


class OneC(sc.App):
    """Sandbox of 1C:Enterprise's OData interface."""

    name = "onec"

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--user", default="fc-exchange")
        parser.add_argument("--password-file", required=True)

    def __init__(self, args):
        self.user = args.user
        self.password = sc.read_secret(args.password_file)
        super().__init__(args)
        self.routes = [
            ("POST", rf"{BASE}/{KIND}", self.create),
            ("GET", rf"{BASE}/{KIND}", self.list),
            ("GET", rf"{BASE}/{KIND}\(guid'({GUID})'\)", self.get),
        ]
        self.control_routes = [
            ("GET", r"/_control/documents", self.control_documents),
        ]

    def empty_data(self):
        return {"next_number": 1, "documents": {}}

    def reset(self):
        with self.lock:
            next_number = self.data["next_number"]
            self.data = self.empty_data()
            self.data["next_number"] = next_number
            self.save()

    def authorized(self, request):
        scheme, _, value = request.header("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(
                value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (secrets.compare_digest(user.encode(), self.user.encode())
                and secrets.compare_digest(password.encode(),
                                           self.password.encode()))

    def unauthorized(self):
        reply = odata_error(401, "401", "Ошибка аутентификации")
        reply.headers["WWW-Authenticate"] = 'Basic realm="1C"'
        return reply

    def create(self, request):
        if not self.authorized(request):
            return self.unauthorized()
        kind = request.match.group(1)
        try:
            body = request.json_object()
        except ValueError as e:
            return odata_error(400, "6", f"Ошибка разбора тела: {e}")
        ref_key = body.get("Ref_Key")
        if not isinstance(ref_key, str) or not re.fullmatch(GUID, ref_key):
            return odata_error(400, "6", f"Ref_Key {ref_key!r} не является "
                                         f"GUID")
        ref_key = ref_key.lower()
        with self.lock:
            document = self.data["documents"].get(ref_key)
            if document is not None:
                document["posts"] += 1
                self.save()
                return odata_error(409, "15", f"Объект с Ref_Key {ref_key} "
                                              f"уже существует "
                                              f"(already exists)")
            document = dict(body)
            document.update({
                "Ref_Key": ref_key,
                "DataVersion": "AAAAAQAAAAA=",
                "DeletionMark": False,
                "Number": f"{self.data['next_number']:011d}",
                "Posted": False,
            })
            document.setdefault("Date", sc.now_utc().astimezone(sc.MSK)
                                .strftime("%Y-%m-%dT%H:%M:%S"))
            self.data["next_number"] += 1
            self.data["documents"][ref_key] = {
                "kind": kind, "document": document, "posts": 1,
                "created_at": sc.iso(sc.now_utc())}
            self.save()
            return self.document_reply(201, kind, document)

    def document_reply(self, status, kind, document):
        body = {"odata.metadata":
                f"{self.base_url()}{BASE}/$metadata#Document_{kind}/@Element"}
        body.update(document)
        return sc.json_reply(status, body)

    def get(self, request):
        if not self.authorized(request):
            return self.unauthorized()
        kind, ref_key = request.match.groups()
        with self.lock:
            stored = self.data["documents"].get(ref_key.lower())
            if stored is None or stored["kind"] != kind:
                return odata_error(404, "7", f"Объект Document_{kind} с "
                                             f"Ref_Key {ref_key} не найден")
            return self.document_reply(200, kind, stored["document"])

    def list(self, request):
        if not self.authorized(request):
            return self.unauthorized()
        kind = request.match.group(1)
        with self.lock:
            return sc.json_reply(200, {
                "odata.metadata":
                    f"{self.base_url()}{BASE}/$metadata#Document_{kind}",
                "value": [d["document"]
                          for d in self.data["documents"].values()
                          if d["kind"] == kind]})

    def control_documents(self, request):
        wanted = request.arg("kind")
        with self.lock:
            return sc.json_reply(200, [
                dict(d, Ref_Key=k) for k, d in self.data["documents"].items()
                if wanted is None or d["kind"] == wanted])


if __name__ == "__main__":
    sc.main(OneC)
