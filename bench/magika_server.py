"""The baseline for bench/service.py: what a user would write instead of `verge-device serve`.

A plain http.server, run with the venv's python (magika 1.0.3 from PyPI):
  POST (any path)  body -> {"label", "group", "score"} from magika.Magika().identify_bytes(body)
  GET  (any path)  {"status": "ready"}; the port only opens once the model is loaded
Usage: python magika_server.py --port N   (listens on 127.0.0.1 only)
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from magika import Magika


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the daemon offers
    # Headers and body go out in two writes; with Nagle on, the client's delayed
    # ACK would add ~40 ms to every answer and measure the socket, not Magika.
    disable_nagle_algorithm = True
    magika: Magika

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200, {"status": "ready"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        result = self.magika.identify_bytes(body)
        if not result.ok:
            self.answer(500, {"error": str(result.status)})
            return
        out = result.output
        self.answer(200, {"label": str(out.label), "group": out.group, "score": result.score})

    def log_message(self, *args):  # a stderr line per request would be part of the figures
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default backlog of 5 can drop simultaneous connects


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    Handler.magika = Magika()
    Server(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
