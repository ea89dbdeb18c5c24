#!/usr/bin/env python3
"""A tiny fault agent for the NFS server machine: on `POST /restart-nfs` it
restarts the NFS server (systemctl restart nfs-server) and answers once it is
back. It listens on the server's lab address only (never on user networking).

    python3 fault_agent.py ADDRESS PORT
"""

from __future__ import annotations

import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/restart-nfs":
            self.send_error(404)
            return
        done = subprocess.run(
            ["systemctl", "restart", "nfs-server"], capture_output=True, text=True, check=False
        )
        body = (done.stdout + done.stderr).encode() or b"restarted\n"
        self.send_response(200 if done.returncode == 0 else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
