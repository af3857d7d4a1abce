#!/usr/bin/env python3
"""Sandbox of the CRM's payment intake.

  python3 tests/sandbox/crm.py --port 18093 --state-dir DIR

Protocol route:
  POST /payments    JSON object, header Idempotency-Key: 201 with the
                    stored record; the same key again answers 200 with
                    the record stored the first time and stores nothing
Control route (besides those of sandbox_common):
  GET  /_control/records   every record with how often its key came
                           (?key= filters)
"""

import sandbox_common as sc


class Crm(sc.App):
    """Sandbox of the CRM's payment intake."""

    name = "crm"

    def __init__(self, args):
        super().__init__(args)
        self.routes = [("POST", r"/payments", self.payment)]
        self.control_routes = [("GET", r"/_control/records", self.records)]

    def empty_data(self):
        return {"next_id": 1, "records": {}}

    def reset(self):
        with self.lock:
            next_id = self.data["next_id"]
            self.data = self.empty_data()
            self.data["next_id"] = next_id
            self.save()

    def payment(self, request):
        key = request.header("Idempotency-Key", "").strip()
        if not key:
            return sc.control_error(400, "the Idempotency-Key header is "
                                         "missing")
        try:
            body = request.json_object()
        except ValueError as e:
            return sc.control_error(400, str(e))
        with self.lock:
            record = self.data["records"].get(key)
            if record is not None:
                record["calls"] += 1
                if body != record["body"]:
                    record["differing_bodies"] += 1
                self.save()
                return sc.json_reply(200, self.view(record))
            record = {"id": self.data["next_id"], "key": key, "body": body,
                      "received_at": sc.iso(sc.now_utc()), "calls": 1,
                      "differing_bodies": 0}
            self.data["next_id"] += 1
            self.data["records"][key] = record
            self.save()
            return sc.json_reply(201, self.view(record))

    @staticmethod
    def view(record):
        return {"id": record["id"], "status": "stored",
                "received_at": record["received_at"]}

    def records(self, request):
        wanted = request.arg("key")
        with self.lock:
            return sc.json_reply(200, [
                r for r in self.data["records"].values()
                if wanted is None or r["key"] == wanted])


if __name__ == "__main__":
    sc.main(Crm)
