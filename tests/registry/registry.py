#!/usr/bin/env python3
"""A stand-in Confluent Schema Registry for the tests: the REST subset serializers use.

POST /subjects/{subject}/versions, GET /schemas/ids/{id}, GET /subjects/{subject}/versions/latest
(and /versions/{n}), GET /subjects. No compatibility checks. 127.0.0.1 only; `--port 0` picks a
free port; the chosen one is printed as `listening on 127.0.0.1:PORT`. `--user` with the password
in $REGISTRY_PASSWORD turns on basic auth. `--state FILE` keeps the schemas across restarts.
`--tls-cert`/`--tls-key` (PEM) serve https.
"""
import argparse
import base64
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class Registry:
    def __init__(self, state_path):
        self.lock = threading.Lock()
        self.state_path = state_path
        self.schemas = []  # index + 1 = id: {"schema": text, "schemaType": ...}
        self.subjects = {}  # subject -> [id, ...] (versions in order)
        if state_path and os.path.exists(state_path):
            with open(state_path) as f:
                state = json.load(f)
            self.schemas, self.subjects = state["schemas"], state["subjects"]

    def save(self):
        if self.state_path:
            with open(self.state_path + ".tmp", "w") as f:
                json.dump({"schemas": self.schemas, "subjects": self.subjects}, f)
            os.replace(self.state_path + ".tmp", self.state_path)

    def register(self, subject, body):
        entry = {"schema": body["schema"]}
        if body.get("schemaType", "AVRO") != "AVRO":
            entry["schemaType"] = body["schemaType"]
        same = lambda e: json.loads(e["schema"]) == json.loads(entry["schema"]) and e.get("schemaType") == entry.get("schemaType")
        with self.lock:
            ids = next((i + 1 for i, e in enumerate(self.schemas) if same(e)), None)
            if ids is None:
                self.schemas.append(entry)
                ids = len(self.schemas)
            versions = self.subjects.setdefault(subject, [])
            if ids not in versions:
                versions.append(ids)
            self.save()
            return {"id": ids, "subject": subject, "version": versions.index(ids) + 1}


def handler_for(registry, user, password):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the tests read stdout for the port only
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def not_found(self, code, message):
            self.answer(404, {"error_code": code, "message": message})

        def authorized(self):
            if user is None:
                return True
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if self.headers.get("Authorization") == expected:
                return True
            self.answer(401, {"error_code": 401, "message": "Unauthorized"})
            return False

        def parts(self):
            return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]

        def do_GET(self):
            if not self.authorized():
                return
            parts = self.parts()
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                index = int(parts[2]) - 1
                if 0 <= index < len(registry.schemas):
                    return self.answer(200, registry.schemas[index])
                return self.not_found(40403, "Schema not found")
            if parts == ["subjects"]:
                return self.answer(200, sorted(registry.subjects))
            if len(parts) == 4 and parts[0] == "subjects" and parts[2] == "versions":
                versions = registry.subjects.get(parts[1])
                if not versions:
                    return self.not_found(40401, "Subject not found")
                n = len(versions) if parts[3] == "latest" else int(parts[3]) if parts[3].isdigit() else 0
                if not 1 <= n <= len(versions):
                    return self.not_found(40402, "Version not found")
                schema_id = versions[n - 1]
                body = {"subject": parts[1], "version": n, "id": schema_id}
                body.update(registry.schemas[schema_id - 1])
                return self.answer(200, body)
            self.not_found(404, "Not found")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if not self.authorized():
                return
            parts = self.parts()
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                try:
                    request = json.loads(body)
                    json.loads(request["schema"])
                except (ValueError, KeyError, TypeError) as e:
                    return self.answer(422, {"error_code": 42201, "message": f"Invalid schema: {e}"})
                return self.answer(200, registry.register(parts[1], request))
            self.not_found(404, "Not found")

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user")
    parser.add_argument("--state")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    password = os.environ.get("REGISTRY_PASSWORD") if args.user else None
    if args.user and not password:
        sys.exit("--user needs the password in $REGISTRY_PASSWORD")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(Registry(args.state), args.user, password))
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
