"""Start, kill and restart a `stockade serve` daemon for the E2B SDK tests and the benchmark.

The daemon runs on a fresh STOCKADE_HOME (a temporary directory) and a free loopback port, with
STOCKADE_E2B_DRIVER naming the driver the E2B surface creates sandboxes on. A token made with
`stockade token create` is the E2B API key; the SDK reaches both the control plane and envd's data
plane at http://127.0.0.1:PORT (E2B_API_URL and E2B_SANDBOX_URL).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[2]


def stockade_bin() -> str:
    return os.environ.get("STOCKADE_BIN") or str(REPO / "target" / "debug" / "stockade")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonError(RuntimeError):
    pass


class Daemon:
    """One `stockade serve` on its own STOCKADE_HOME and port.

    `start()` makes the home, the token and the process; `kill9()` and `start()` again restart it
    on the same home and port (what a crash and a supervisor's restart do); `stop()` sends SIGTERM
    and returns the exit code (None when it did not exit within the grace period).
    """

    def __init__(self, driver: str = "native", home: Optional[str] = None, port: Optional[int] = None):
        self.driver = driver
        self.bin = stockade_bin()
        self._own_home = home is None
        self.home = home or tempfile.mkdtemp(prefix=f"stockade-e2b-{driver}-")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = os.path.join(self.home, "d.sock")
        self.log_path = os.path.join(self.home, "daemon.log")
        self.token: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        self.starts = 0

    # -- environment -----------------------------------------------------------------------

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["STOCKADE_HOME"] = self.home
        env["STOCKADE_E2B_DRIVER"] = self.driver
        env.setdefault("NO_COLOR", "1")  # plain log lines
        # The daemon's own tracing; E2B_* of the test process are no business of the daemon.
        for k in list(env):
            if k.startswith("E2B_"):
                del env[k]
        return env

    def sdk_env(self) -> Dict[str, str]:
        """What the E2B SDKs read: the token as the API key, the daemon as API and sandbox URL."""
        assert self.token, "daemon not started"
        return {
            "E2B_API_KEY": self.token,
            "E2B_API_URL": self.url,
            "E2B_SANDBOX_URL": self.url,
        }

    def apply_sdk_env(self) -> None:
        os.environ.pop("E2B_DEBUG", None)
        os.environ.update(self.sdk_env())

    # -- lifecycle -------------------------------------------------------------------------

    def _make_token(self) -> str:
        if not os.path.exists(self.bin):
            raise DaemonError(f"no stockade binary at {self.bin} (build it, or set STOCKADE_BIN)")
        r = subprocess.run(
            [self.bin, "token", "create", "--name", "e2b"],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            raise DaemonError(f"stockade token create failed ({r.returncode}): {r.stderr.strip()}")
        lines = [line.strip() for line in r.stdout.splitlines() if line.strip()]
        if not lines:
            raise DaemonError(f"stockade token create printed no token; stderr: {r.stderr.strip()}")
        return lines[-1]

    def start(self, wait: float = 60.0) -> "Daemon":
        if self.proc is not None and self.proc.poll() is None:
            raise DaemonError("daemon already running")
        if self.token is None:
            self.token = self._make_token()
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n==== start #{self.starts + 1} driver={self.driver} port={self.port}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--listen", f"127.0.0.1:{self.port}", "--socket", self.socket],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.starts += 1
        self._wait_ready(wait)
        return self

    def _wait_ready(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"stockade serve exited with {self.proc.returncode} before answering;"
                    f" log tail:\n{self.log_tail()}"
                )
            try:
                urllib.request.urlopen(f"{self.url}/api/health", timeout=2).read()
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer (401 without a token) means it is up
            except Exception as e:  # noqa: BLE001 - not yet listening
                last = e
                time.sleep(0.1)
        raise DaemonError(f"stockade serve did not answer on {self.url} within {wait}s ({last});"
                          f" log tail:\n{self.log_tail()}")

    def kill9(self) -> None:
        """SIGKILL the daemon process only (not its process group: sandboxes must survive)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_log()

    def stop(self, grace: float = 30.0) -> Optional[int]:
        """SIGTERM; the exit code, or None when it was still running after `grace` seconds (then
        it is killed)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is not None:
            self._close_log()
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            code = None
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        """Remove the home (after stop). Kept when STOCKADE_E2B_KEEP_HOME is set, for debugging."""
        if self._own_home and not os.environ.get("STOCKADE_E2B_KEEP_HOME"):
            shutil.rmtree(self.home, ignore_errors=True)

    # -- diagnostics -----------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return "(no daemon log)"
        text = data.decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def kill_all_sandboxes(self) -> list:
        """DELETE every sandbox the E2B API still lists (sandboxes outlive the daemon by design, so
        a session that stops it must not leave any behind). Returns the ids killed."""
        import json
        import urllib.parse

        ids, token = [], None
        while True:
            q = {"limit": "100"}
            if token:
                q["nextToken"] = token
            req = urllib.request.Request(
                f"{self.url}/v2/sandboxes?{urllib.parse.urlencode(q)}", headers={"X-API-KEY": self.token}
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                ids += [s["sandboxID"] for s in json.loads(r.read() or b"[]")]
                token = r.headers.get("X-Next-Token")
            if not token:
                break
        for sid in ids:
            req = urllib.request.Request(f"{self.url}/sandboxes/{sid}", method="DELETE", headers={"X-API-KEY": self.token})
            try:
                urllib.request.urlopen(req, timeout=60).read()
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
        return ids

    def metrics(self) -> str:
        req = urllib.request.Request(f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.token}"})
        return urllib.request.urlopen(req, timeout=10).read().decode()

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()
