#!/usr/bin/env python3
"""What one `sandbox.commands.run("true")` through the real E2B Python SDK costs on Stockade, next
to the same SDK call against a minimal stand-in envd on this host.

    target/e2b-venv/new/bin/python e2b/python/bench_run_true.py [-n 200] [--warmup 20] [--driver native]

Stockade: a daemon started here (stockade_daemon.Daemon, driver native by default) and one sandbox
from the `base` template. Baseline: a tiny HTTP/1.1 server in this process that answers
/process.Process/Start the way envd does (Connect server-stream, `application/connect+json`
frames [flags u8][len u32 BE][json], a start event, the output, the end event, then the
end-of-stream frame with flags 0x02 and `{}`), running `true` with subprocess. Stockade runs what
the SDK asks for, `/bin/bash -l -c true`, so a login shell's profile is part of its time;
`--stand-in-sdk-argv` makes the stand-in run that argv too (on this host's own profile).

A second baseline in the same run: the same argv through Stockade's own API
(`POST /api/sandboxes/ID/execs?wait=true`) on the same daemon and sandbox, so the difference is
what the E2B layer (the SDK, Connect framing, envd emulation) costs.

Prints p50/p95 in milliseconds for each and the ratios.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stockade_daemon import Daemon  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The stand-in envd


def frame(obj, flags: int = 0) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(body)) + body


def read_frames(data: bytes):
    i = 0
    while i + 5 <= len(data):
        flags, n = struct.unpack(">BI", data[i : i + 5])
        yield flags, json.loads(data[i + 5 : i + 5 + n] or b"{}")
        i += 5 + n


class StandInEnvd(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        if self.path.startswith("/health"):
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_error(404)

    def do_POST(self):
        body = self._body()
        if self.path != "/process.Process/Start":
            msg = json.dumps({"code": "unimplemented", "message": self.path}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        req = next((m for f, m in read_frames(body) if not f & 0x02), {})
        proc = req.get("process", {})
        argv = [proc.get("cmd", "/bin/bash"), *proc.get("args", [])]
        if not self.server.run_sdk_argv:
            argv = ["true"]
        self.send_response(200)
        self.send_header("Content-Type", "application/connect+json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 cwd=proc.get("cwd") or None)
        self._chunk(frame({"event": {"start": {"pid": child.pid}}}))
        out, err = child.communicate()
        for field, data in (("stdout", out), ("stderr", err)):
            if data:
                self._chunk(frame({"event": {"data": {field: base64.b64encode(data).decode()}}}))
        code = child.returncode
        end = {"exitCode": code, "exited": code >= 0, "status": f"exit status {code}"}
        if code != 0:
            end["error"] = end["status"]
        self._chunk(frame({"event": {"end": end}}))
        self._chunk(frame({}, flags=0x02))
        self._chunk(b"")


def start_stand_in(run_sdk_argv: bool = False):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInEnvd)
    server.daemon_threads = True
    server.run_sdk_argv = run_sdk_argv
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------------
# Timing


def timed_runs(sbx, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        r = sbx.commands.run("true")
        assert r.exit_code == 0
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = sbx.commands.run("true")
        out.append(time.perf_counter() - t0)
        assert r.exit_code == 0
    return out


def timed_api_execs(daemon, sandbox_id: str, n: int, warmup: int) -> list[float]:
    """The same argv the SDK sends, through Stockade's own API on the same daemon and sandbox:
    `POST /api/sandboxes/ID/execs?wait=true` on one kept-alive connection."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", daemon.port)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"argv": ["/bin/bash", "-l", "-c", "true"], "cwd": "/root"})
    headers = {"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"}

    def once():
        conn.request("POST", f"/api/sandboxes/{sandbox_id}/execs?wait=true", body=body, headers=headers)
        r = conn.getresponse()
        data = json.loads(r.read())
        assert r.status == 200 and data["exit"]["code"] == 0, data

    for _ in range(warmup):
        once()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        once()
        out.append(time.perf_counter() - t0)
    conn.close()
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="timed calls per side (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls first (default 20)")
    ap.add_argument("--driver", default=os.environ.get("E2B_TEST_DRIVER", "native"))
    ap.add_argument("--stand-in-sdk-argv", action="store_true",
                    help="the stand-in runs the SDK's argv (/bin/bash -l -c true) instead of `true`")
    ap.add_argument("--baseline-only", action="store_true", help="time the stand-in envd only (no daemon)")
    args = ap.parse_args()

    from packaging.version import Version

    from e2b import ConnectionConfig, Sandbox

    server = start_stand_in(args.stand_in_sdk_argv)
    stand_in_url = f"http://127.0.0.1:{server.server_address[1]}"
    stand_in = Sandbox(
        sandbox_id="standin",
        sandbox_domain=None,
        envd_version=Version("0.5.7"),
        envd_access_token=None,
        traffic_access_token=None,
        connection_config=ConnectionConfig(
            sandbox_url=stand_in_url,
            extra_sandbox_headers={"E2b-Sandbox-Id": "standin", "E2b-Sandbox-Port": "49983"},
        ),
    )

    if args.baseline_only:
        try:
            baseline = timed_runs(stand_in, args.n, args.warmup)
        finally:
            server.shutdown()
        b50, b95 = pct(baseline, 50) * 1000, pct(baseline, 95) * 1000
        print(f"stand-in envd (local): n={args.n} p50 {b50:7.2f} ms  p95 {b95:7.2f} ms")
        return 0

    daemon = Daemon(driver=args.driver)
    daemon.start()
    try:
        daemon.apply_sdk_env()
        sbx = Sandbox.create(timeout=600)
        try:
            stockade = timed_runs(sbx, args.n, args.warmup)
            api = timed_api_execs(daemon, sbx.sandbox_id, args.n, args.warmup)
        finally:
            sbx.kill()
        baseline = timed_runs(stand_in, args.n, args.warmup)
    finally:
        daemon.kill_all_sandboxes()
        code = daemon.stop()
        daemon.cleanup()
        server.shutdown()

    ms = lambda s: s * 1000.0  # noqa: E731
    s50, s95 = ms(pct(stockade, 50)), ms(pct(stockade, 95))
    b50, b95 = ms(pct(baseline, 50)), ms(pct(baseline, 95))
    print(f"commands.run(\"true\") through the E2B Python SDK, n={args.n} after {args.warmup} warmup")
    print(f"  stockade ({args.driver}):  p50 {s50:7.2f} ms  p95 {s95:7.2f} ms  mean {ms(statistics.mean(stockade)):7.2f} ms")
    print(f"  stand-in envd (local):  p50 {b50:7.2f} ms  p95 {b95:7.2f} ms  mean {ms(statistics.mean(baseline)):7.2f} ms")
    a50, a95 = ms(pct(api, 50)), ms(pct(api, 95))
    print(f"  stockade's own API, same argv (/bin/bash -l -c true), same sandbox:  p50 {a50:7.2f} ms  p95 {a95:7.2f} ms")
    print(f"  ratio stockade/stand-in: p50 {s50 / b50:.2f}x  p95 {s95 / b95:.2f}x")
    print(f"  ratio E2B SDK/own API: p50 {s50 / a50:.2f}x  p95 {s95 / a95:.2f}x  (the E2B layer's cost: p50 {s50 - a50:+.2f} ms)")
    if code != 0:
        print(f"warning: the daemon exited {code} on SIGTERM", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
