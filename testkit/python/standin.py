"""A local stand-in for CKAN and a file host, for scripts/image.sh's smoke test.

usage: standin.py PORT FILES_DIR RECORD_FILE

GET /<name> serves FILES_DIR/<name>; POST /api/action/<action> answers {"success": true} and
appends {"path", "authorization", "body"} as one JSON line to RECORD_FILE.
"""
import json
import os
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


def main():
    port, files, record = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=files, **kwargs)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            with open(record, "a", encoding="utf-8") as out:
                out.write(json.dumps({"path": self.path,
                                      "authorization": self.headers.get("Authorization"),
                                      "body": body}) + "\n")
            answer = b'{"success": true, "result": {}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    # Threads: a slow or stuck client (a download, a report) does not hold up the others.
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    os.umask(0o022)
    main()
