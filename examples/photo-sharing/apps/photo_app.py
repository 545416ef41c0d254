"""A tiny application of the photo-sharing example (standard library only).

Listens on 127.0.0.1:$PORT. ``GET /`` answers JSON naming this workload and the client identity
its sidecar saw (the ``x-forwarded-client-cert`` header, absent over plaintext); when ``$NEXT``
is set it first calls that URL through ``$HTTP_PROXY`` (its sidecar) and reports the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORKLOAD = os.environ.get("MESHSEC_WORKLOAD", "unknown")
NEXT = os.environ.get("NEXT", "")


def call_next() -> dict[str, object]:
    # urllib reads HTTP_PROXY from the environment: the call goes through the sidecar
    try:
        with urllib.request.urlopen(NEXT, timeout=10) as resp:  # noqa: S310 - our own URL
            return {"url": NEXT, "status": resp.status, "body": json.loads(resp.read())}
    except urllib.error.HTTPError as exc:
        return {"url": NEXT, "status": exc.code, "body": exc.read().decode("utf-8", "replace")}
    except (OSError, ValueError) as exc:
        return {"url": NEXT, "error": str(exc)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        answer: dict[str, object] = {
            "workload": WORKLOAD,
            "path": self.path,
            "client": self.headers.get("x-forwarded-client-cert", "(plaintext, no client cert)"),
        }
        if NEXT and self.path == "/":
            answer["next"] = call_next()
        body = json.dumps(answer, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{WORKLOAD}: {format % args}", flush=True)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print(f"{WORKLOAD} listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
