"""The real E2B Python SDK (sync `Sandbox`) against Stockade's E2B-compatible surface.

Each test asserts what a user of E2B would check, with the values E2B itself gives (its SDK's own
tests and envd's behaviour are the reference). The `base` template runs as E2B's `user` in
/home/user on docker and as root in /root on native (conftest's USER and HOME), so paths are under
HOME, /tmp or relative (resolved against HOME); on the native driver the rest of / is the host's,
read-only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from packaging.version import Version

from e2b import (
    AuthenticationException,
    CommandExitException,
    ConnectionConfig,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    PtySize,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
    TimeoutException,
)
from e2b.sandbox.filesystem.filesystem import WriteEntry, WriteInfo

from conftest import DRIVER, HOME, USER, USER_TEMPLATE_REASON

SDK_VERSION = Version(importlib.metadata.version("e2b"))
NEW_SDK = SDK_VERSION >= Version("2.55.0")
ENVD_PORT = "49983"
MiB = 1024 * 1024


def now() -> datetime:
    return datetime.now(timezone.utc)


def approx_seconds(delta: timedelta, expected: float, slack: float = 3.0) -> bool:
    return abs(delta.total_seconds() - expected) <= slack


def envd_headers(sandbox_id: str, token: str | None = None) -> dict:
    h = {
        "Content-Type": "application/json",
        "Connect-Protocol-Version": "1",
        "E2b-Sandbox-Id": sandbox_id,
        "E2b-Sandbox-Port": ENVD_PORT,
    }
    if token is not None:
        h["X-Access-Token"] = token
    return h


def sandbox_with_token(sbx: Sandbox, token: str | None) -> Sandbox:
    """A second SDK object for the same sandbox whose envd requests carry `token` (None: no
    X-Access-Token at all) instead of the one the API handed out."""
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": ENVD_PORT}
    if token is not None:
        headers["X-Access-Token"] = token
    return Sandbox(
        sandbox_id=sbx.sandbox_id,
        sandbox_domain=None,
        envd_version=sbx._envd_version,
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=ConnectionConfig(extra_sandbox_headers=headers),
    )


def wait_until(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def collect_events(handle, until, timeout: float = 10.0, settle: float = 0.5):
    """Poll a sync WatchHandle until `until(events)` holds, then once more after `settle` s so a
    trailing extra event would be seen too."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += handle.get_new_events()
        if until(events):
            break
        time.sleep(0.1)
    time.sleep(settle)
    events += handle.get_new_events()
    return events


def seq(events):
    return [(e.type, e.name) for e in events]


def list_ids(query: SandboxQuery) -> list[str]:
    return [s.sandbox_id for s in Sandbox.list(query=query).next_items()]


class PtyReader:
    """Reads a PTY handle's output on a thread (the sync SDK delivers it only while waiting)."""

    def __init__(self, handle):
        self.handle = handle
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.result = self.handle.wait(on_pty=self._on_data)
        except Exception as e:  # noqa: BLE001 - looked at by the test
            self.error = e

    def _on_data(self, data: bytes):
        with self.lock:
            self.buf += data

    def text(self) -> str:
        with self.lock:
            return bytes(self.buf).decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 15.0, start: int = 0) -> int:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.text(), start)
            if m:
                return m.end()
            if not self.thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"PTY output never matched {pattern!r}; got {self.text()!r}")

    def join(self, timeout: float = 15.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"PTY did not end; output {self.text()!r}"


# =============================================================================================
# Create, info, timeouts, connect, list, kill


def test_create_with_envs_and_metadata(sandbox_factory, test_id):
    before = now()
    sbx = sandbox_factory(envs={"FOO": "bar"}, metadata={"k": "v", "test_id": test_id}, timeout=120)
    assert sbx.sandbox_id
    assert sbx.is_running() is True

    r = sbx.commands.run("echo $FOO")
    assert (r.stdout, r.stderr, r.exit_code) == ("bar\n", "", 0)

    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.metadata == {"k": "v", "test_id": test_id}
    assert info.template_id == "base" or info.name == "base", (info.template_id, info.name)
    assert info.state == SandboxState.RUNNING
    assert info.started_at.tzinfo is not None and info.end_at.tzinfo is not None
    assert before - timedelta(seconds=5) <= info.started_at <= now() + timedelta(seconds=5)
    assert approx_seconds(info.end_at - info.started_at, 120), (info.started_at, info.end_at)
    assert Version(info.envd_version) >= Version("0.5.7"), info.envd_version
    assert info.cpu_count >= 1 and info.memory_mb >= 1

    # The class-level variant answers the same.
    same = Sandbox.get_info(sbx.sandbox_id)
    assert (same.sandbox_id, same.metadata, same.end_at) == (sbx.sandbox_id, info.metadata, info.end_at)


def test_create_returns_envd_access_token(sandbox):
    # Every sandbox secures envd access (E2B's SDK notes `secure` is always on).
    assert isinstance(sandbox._envd_access_token, str) and sandbox._envd_access_token


def test_sandbox_envs_do_not_leak_from_command_envs(sandbox):
    r = sandbox.commands.run("echo $FOO", envs={"FOO": "bar"})
    assert r.stdout == "bar\n"
    r = sandbox.commands.run('echo "[$FOO]"')
    assert r.stdout == "[]\n"
    r = sandbox.commands.run("python3 -c \"import os; print(os.environ['FOO'])\"", envs={"FOO": "bar"})
    assert r.stdout == "bar\n"


def test_default_timeout_is_300s(sandbox_factory):
    sbx = sandbox_factory(timeout=None)
    info = sbx.get_info()
    assert approx_seconds(info.end_at - info.started_at, 300), (info.started_at, info.end_at)


def test_set_timeout_moves_end_at(sandbox):
    sandbox.set_timeout(600)
    info = sandbox.get_info()
    assert approx_seconds(info.end_at - now(), 600, slack=5), info.end_at
    Sandbox.set_timeout(sandbox.sandbox_id, 200)
    info = sandbox.get_info()
    assert approx_seconds(info.end_at - now(), 200, slack=5), info.end_at
    assert sandbox.is_running()


def test_set_timeout_of_unknown_sandbox_raises():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout("nosuchsandbox", 60)


def test_get_info_of_unknown_sandbox_raises():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("nosuchsandbox")


def test_connect_by_id(sandbox, test_id):
    sandbox.files.write(f"{HOME}/connect-{test_id}.txt", "from the first handle")
    other = Sandbox.connect(sandbox.sandbox_id)
    assert other.sandbox_id == sandbox.sandbox_id
    assert other.is_running() is True
    assert other.files.read(f"{HOME}/connect-{test_id}.txt") == "from the first handle"
    assert other.commands.run("echo ok").stdout == "ok\n"


def test_connect_extends_but_never_shortens_timeout(sandbox_factory):
    sbx = sandbox_factory(timeout=120)
    end0 = sbx.get_info().end_at
    Sandbox.connect(sbx.sandbox_id, timeout=10)
    assert sbx.get_info().end_at == end0
    Sandbox.connect(sbx.sandbox_id, timeout=600)
    end1 = sbx.get_info().end_at
    assert end1 > end0
    assert approx_seconds(end1 - now(), 600, slack=5), end1


def test_connect_to_unknown_sandbox_raises():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("nosuchsandbox")


def test_list_with_metadata_filter_finds_exactly_the_sandbox(sandbox_factory, test_id):
    group = f"grp-{test_id}"
    one = sandbox_factory(metadata={"group": group, "which": "one"})
    two = sandbox_factory(metadata={"group": group, "which": "two"})

    found = Sandbox.list(query=SandboxQuery(metadata={"group": group, "which": "two"})).next_items()
    assert [s.sandbox_id for s in found] == [two.sandbox_id]
    s = found[0]
    assert s.metadata == {"group": group, "which": "two", "test_id": test_id}
    assert s.state == SandboxState.RUNNING
    assert s.template_id == "base" or s.name == "base", (s.template_id, s.name)
    assert s.end_at > s.started_at

    both = set(list_ids(SandboxQuery(metadata={"group": group})))
    assert both == {one.sandbox_id, two.sandbox_id}
    assert list_ids(SandboxQuery(metadata={"group": f"{group}-none"})) == []
    running = set(list_ids(SandboxQuery(metadata={"group": group}, state=[SandboxState.RUNNING])))
    assert running == {one.sandbox_id, two.sandbox_id}
    assert list_ids(SandboxQuery(metadata={"group": group}, state=[SandboxState.PAUSED])) == []

    unfiltered = [s.sandbox_id for s in Sandbox.list().next_items()]
    assert one.sandbox_id in unfiltered and two.sandbox_id in unfiltered


def test_list_metadata_filter_with_reserved_characters(sandbox_factory, test_id):
    # The SDK url-encodes the `k=v&k=v` filter and the query string encodes it again.
    value = f"a b&c=d/é?%{test_id}"
    sbx = sandbox_factory(metadata={"tricky": value})
    sandbox_factory(metadata={"tricky": value + "x"})
    assert list_ids(SandboxQuery(metadata={"tricky": value})) == [sbx.sandbox_id]
    assert sbx.get_info().metadata["tricky"] == value


def test_list_pagination_three_sandboxes_three_pages(sandbox_factory, test_id):
    group = f"page-{test_id}"
    made = [sandbox_factory(metadata={"page_group": group}) for _ in range(3)]

    paginator = Sandbox.list(query=SandboxQuery(metadata={"page_group": group}), limit=1)
    assert paginator.has_next is True
    pages = []
    for i in range(3):
        items = paginator.next_items()
        assert len(items) == 1, f"page {i + 1}: {items}"
        pages.append(items[0].sandbox_id)
        if i < 2:
            assert paginator.has_next is True, f"after page {i + 1}"
            assert paginator.next_token, f"after page {i + 1}"
    assert paginator.has_next is False
    assert paginator.next_token is None
    ids = [s.sandbox_id for s in made]
    q = SandboxQuery(metadata={"page_group": group})
    assert [s.sandbox_id for s in Sandbox.list(query=q, order="asc").next_items()] == ids
    assert [s.sandbox_id for s in Sandbox.list(query=q, order="desc").next_items()] == ids[::-1]
    # E2B's API: "order ... Defaults to desc (newest first)".
    assert pages == ids[::-1], f"default order gave pages {pages}; made (oldest first) {ids}"

    # Iterating while has_next gets all of them once each.
    paginator = Sandbox.list(query=SandboxQuery(metadata={"page_group": group}), limit=2)
    seen = []
    while paginator.has_next:
        seen += [s.sandbox_id for s in paginator.next_items()]
    assert sorted(seen) == sorted(s.sandbox_id for s in made)


def test_kill_then_everything_says_not_found(sandbox_factory, test_id):
    sbx = sandbox_factory(metadata={"kill_group": test_id})
    h = sbx.commands.run("sleep 60", background=True)
    sid = sbx.sandbox_id

    assert sbx.kill() is True
    assert Sandbox.kill(sid) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sid)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sid)
    assert sid not in list_ids(SandboxQuery(metadata={"kill_group": test_id}))
    assert sbx.is_running() is False
    with pytest.raises(TimeoutException) as e:
        sbx.commands.run("echo still here")
    if NEW_SDK:
        from e2b import SandboxNotRunningException

        assert isinstance(e.value, SandboxNotRunningException), repr(e.value)
    with pytest.raises(SandboxException):
        sbx.files.read(f"{HOME}/anything")
    # The command running when the sandbox was killed ends with an error, not a result.
    with pytest.raises(SandboxException):
        h.wait()


def test_kill_of_unknown_sandbox_returns_false():
    assert Sandbox.kill("nosuchsandbox") is False


def test_unknown_template_raises_404():
    with pytest.raises(SandboxException) as e:
        Sandbox.create("no-such-template-" + uuid.uuid4().hex[:8])
    assert e.value.status_code == 404, repr(e.value)


def test_timeout_expiry_removes_the_sandbox(sandbox_factory, test_id):
    group = f"expire-{test_id}"
    a = sandbox_factory(timeout=5, metadata={"expire_group": group})
    b = sandbox_factory(timeout=120, metadata={"expire_group": group})
    b.set_timeout(5)
    end = max(a.get_info().end_at, b.get_info().end_at)
    assert end - now() <= timedelta(seconds=6)

    def gone():
        ids = list_ids(SandboxQuery(metadata={"expire_group": group}))
        return not ids and not a.is_running() and not b.is_running()

    wait_until(gone, timeout=(end - now()).total_seconds() + 30, interval=1.0, what="expiry")
    for s in (a, b):
        with pytest.raises(SandboxNotFoundException):
            Sandbox.connect(s.sandbox_id)
        assert Sandbox.kill(s.sandbox_id) is False


def test_shortened_timeout_stops_within_seconds(sandbox):
    sandbox.set_timeout(5)
    time.sleep(6)
    wait_until(lambda: sandbox.is_running(request_timeout=5) is False, timeout=30, what="stop")


# =============================================================================================
# Control-plane and data-plane errors on the wire


def test_api_without_key_is_401_json(daemon):
    r = httpx.get(f"{daemon.url}/sandboxes", timeout=10)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body.get("code") == 401 and isinstance(body.get("message"), str) and body["message"], body


def test_api_with_wrong_key_is_401_and_sdk_raises_authentication(daemon):
    r = httpx.get(f"{daemon.url}/sandboxes", headers={"X-API-KEY": "e2b_wrong"}, timeout=10)
    assert r.status_code == 401
    body = r.json()
    assert body.get("code") == 401 and isinstance(body.get("message"), str), body
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_wrong").next_items()
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_wrong")


def test_api_unknown_sandbox_is_404_json(daemon):
    r = httpx.get(f"{daemon.url}/sandboxes/nosuchsandbox", headers={"X-API-KEY": daemon.token}, timeout=10)
    assert r.status_code == 404
    body = r.json()
    assert body.get("code") == 404 and isinstance(body.get("message"), str), body
    r = httpx.delete(f"{daemon.url}/sandboxes/nosuchsandbox", headers={"X-API-KEY": daemon.token}, timeout=10)
    assert r.status_code == 404
    assert r.json().get("code") == 404, r.text


def test_api_unknown_template_is_404_json(daemon):
    for path in ("/sandboxes", "/v2/sandboxes"):
        r = httpx.post(
            f"{daemon.url}{path}",
            headers={"X-API-KEY": daemon.token},
            json={"templateID": "no-such-template"},
            timeout=30,
        )
        assert r.status_code == 404, (path, r.status_code, r.text)
        body = r.json()
        assert body.get("code") == 404 and isinstance(body.get("message"), str), (path, body)


def test_envd_wrong_access_token_is_401(daemon, sandbox):
    for token in ("wrong-token", None):
        r = httpx.post(
            f"{daemon.url}/process.Process/List",
            headers=envd_headers(sandbox.sandbox_id, token),
            content=b"{}",
            timeout=10,
        )
        assert r.status_code == 401, (token, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), r.headers
        assert isinstance(r.json().get("message"), str), r.text

    # The right token works on the same route.
    r = httpx.post(
        f"{daemon.url}/process.Process/List",
        headers=envd_headers(sandbox.sandbox_id, sandbox._envd_access_token),
        content=b"{}",
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert "processes" in r.json() or r.json() == {}

    bad = sandbox_with_token(sandbox, "wrong-token")
    with pytest.raises(AuthenticationException):
        bad.commands.run("echo no")
    with pytest.raises(AuthenticationException):
        bad.files.list(HOME)
    with pytest.raises(AuthenticationException):
        bad.files.read(f"{HOME}/.bashrc")
    with pytest.raises(AuthenticationException):
        bad.files.write(f"{HOME}/nope.txt", "no")
    assert not sandbox.files.exists(f"{HOME}/nope.txt")


def _read_head(sock) -> bytes:
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("case", ["wrong-token-401", "unknown-sandbox-502"])
def test_envd_early_error_leaves_connection_reusable(daemon, sandbox, case):
    """An error answered before the request body has all arrived (the SDKs stream Start's body,
    chunked) must either leave the keep-alive connection usable or say `Connection: close`:
    clients pool it, and their next request on it fails with a broken pipe otherwise. (Go's
    envd drains the rest of the body and keeps the connection.)"""
    import socket
    import struct

    sid = sandbox.sandbox_id if case.startswith("wrong") else "nosuchsandbox"
    msg = json.dumps({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo"]}}).encode()
    chunk = struct.pack(">BI", 0, len(msg)) + msg
    sock = socket.create_connection(("127.0.0.1", daemon.port))
    try:
        sock.sendall(
            (
                "POST /process.Process/Start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\n"
                f"Transfer-Encoding: chunked\r\nE2b-Sandbox-Id: {sid}\r\nE2b-Sandbox-Port: {ENVD_PORT}\r\n"
                "X-Access-Token: wrong-token\r\n\r\n"
            ).encode()
            + b"%x\r\n%s\r\n" % (len(chunk), chunk)
        )
        head = _read_head(sock)
        status = head.split(b"\r\n", 1)[0]
        assert status.split()[1] in (b"401", b"502"), status
        if re.search(rb"(?im)^connection:\s*close", head):
            return  # the server said it closes: a client will not reuse the connection
        time.sleep(0.05)
        sock.sendall(b"0\r\n\r\n")  # the body's end, after the answer
        sock.sendall(
            (
                f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nE2b-Sandbox-Id: {sandbox.sandbox_id}\r\n"
                f"E2b-Sandbox-Port: {ENVD_PORT}\r\nX-Access-Token: {sandbox._envd_access_token}\r\n\r\n"
            ).encode()
        )
        second = _read_head(sock).split(b"\r\n", 1)[0]
    except (BrokenPipeError, ConnectionResetError) as e:
        pytest.fail(f"{status!r} without `Connection: close`, then the connection was closed: {e!r}")
    finally:
        sock.close()
    assert second.startswith(b"HTTP/1.1 2"), (
        f"{status!r} without `Connection: close`; the next request on the connection got {second!r}"
    )


def test_a_sandbox_port_is_forwarded_with_the_access_token(daemon, sandbox):
    """A request for another port than envd's (the code interpreter's 49999) reaches the server
    listening there inside the sandbox; it needs the sandbox's access token, and a port nothing
    listens on is E2B's 502 naming the port."""
    sandbox.commands.run("mkdir -p /tmp/www && echo hello-port > /tmp/www/index.html")
    server = sandbox.commands.run(
        "cd /tmp/www && exec python3 -m http.server 49999 --bind 127.0.0.1", background=True
    )
    headers = {
        "E2b-Sandbox-Id": sandbox.sandbox_id,
        "E2b-Sandbox-Port": "49999",
        "X-Access-Token": sandbox._envd_access_token,
    }
    deadline = time.time() + 20
    while True:
        r = httpx.get(f"{daemon.url}/index.html", headers=headers, timeout=10)
        if r.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert (r.status_code, r.text) == (200, "hello-port\n"), r.text
    # The request's own headers and query arrive; the answer's headers come back.
    r = httpx.get(f"{daemon.url}/missing?x=1", headers=headers, timeout=10)
    assert r.status_code == 404 and "text/html" in r.headers["content-type"], r.text
    wrong = httpx.get(f"{daemon.url}/index.html", headers={**headers, "X-Access-Token": "nope"}, timeout=10)
    assert wrong.status_code == 401, wrong.text
    closed = httpx.get(f"{daemon.url}/", headers={**headers, "E2b-Sandbox-Port": "49998"}, timeout=10)
    assert closed.status_code == 502, closed.text
    body = closed.json()
    assert body["code"] == 502 and body["sandboxId"] == sandbox.sandbox_id and "49998" in body["message"], body
    sandbox.commands.kill(server.pid)


def test_envd_unknown_sandbox_is_502_sandbox_not_found(daemon):
    r = httpx.post(
        f"{daemon.url}/process.Process/List",
        headers=envd_headers("nosuchsandbox"),
        content=b"{}",
        timeout=10,
    )
    assert r.status_code == 502, (r.status_code, r.text)
    assert r.json() == {"sandboxId": "nosuchsandbox", "message": "The sandbox was not found", "code": 502}

    r = httpx.get(f"{daemon.url}/health", headers=envd_headers("nosuchsandbox"), timeout=10)
    assert r.status_code == 502, (r.status_code, r.text)

    ghost = Sandbox(
        sandbox_id="nosuchsandbox",
        sandbox_domain=None,
        envd_version=Version("0.5.7"),
        envd_access_token=None,
        traffic_access_token=None,
        connection_config=ConnectionConfig(
            extra_sandbox_headers={"E2b-Sandbox-Id": "nosuchsandbox", "E2b-Sandbox-Port": ENVD_PORT}
        ),
    )
    assert ghost.is_running() is False
    with pytest.raises(TimeoutException):
        ghost.commands.run("true")


# =============================================================================================
# Commands


def test_run_foreground_stdout_stderr_exit(shared_sandbox):
    r = shared_sandbox.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    assert r.error in (None, "")
    text = "!@#$%^&*()_+"
    assert shared_sandbox.commands.run(f'echo "{text}"').stdout == f"{text}\n"
    assert shared_sandbox.commands.run('printf "Hello,\\nWorld!"').stdout == "Hello,\nWorld!"


def test_run_nonzero_exit_raises_command_exit(shared_sandbox):
    with pytest.raises(CommandExitException) as e:
        shared_sandbox.commands.run("echo partial; echo boom >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stdout == "partial\n"
    assert e.value.stderr == "boom\n"
    # envd sets the end event's error to Go's exit status text.
    assert e.value.error in (None, "exit status 3"), e.value.error
    with pytest.raises(CommandExitException) as e:
        shared_sandbox.commands.run("false")
    assert e.value.exit_code == 1


def test_run_streams_to_callbacks(shared_sandbox):
    out, err = [], []
    r = shared_sandbox.commands.run(
        "for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.1; done",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "o1\no2\no3\n" == r.stdout
    assert "".join(err) == "e1\ne2\ne3\n" == r.stderr
    assert len(out) >= 2, out  # it streamed, not one chunk at the end


def test_run_cwd_envs_user_and_defaults(shared_sandbox):
    r = shared_sandbox.commands.run("pwd; echo $A-$B", cwd="/tmp", envs={"A": "1", "B": "two words"})
    assert r.stdout == "/tmp\n1-two words\n"
    r = shared_sandbox.commands.run("pwd; whoami; echo $HOME $USER")
    assert r.stdout == f"{HOME}\n{USER}\n{HOME} {USER}\n"
    assert shared_sandbox.commands.run("whoami", user="root").stdout == "root\n"
    r = shared_sandbox.commands.run("command -v bash python3 curl git")
    assert len(r.stdout.split()) == 4, r.stdout


def test_run_with_missing_cwd_raises_invalid_argument(shared_sandbox):
    with pytest.raises(InvalidArgumentException) as e:
        shared_sandbox.commands.run("pwd", cwd=f"{HOME}/no-such-dir-for-cwd")
    assert f"{HOME}/no-such-dir-for-cwd" in str(e.value)


def test_run_broken_utf8_is_replaced(shared_sandbox):
    r = shared_sandbox.commands.run('printf "%8191s\\xe2" "" | tr " " a')
    assert r.stdout == "a" * 8191 + "\ufffd"


def test_run_large_output(shared_sandbox):
    r = shared_sandbox.commands.run("head -c 3000000 /dev/zero | tr '\\0' x")
    assert r.stdout == "x" * 3_000_000


def test_run_timeout_raises(shared_sandbox):
    with pytest.raises(TimeoutException):
        shared_sandbox.commands.run("sleep 10", timeout=2)


def test_background_connect_wait(shared_sandbox):
    h = shared_sandbox.commands.run("sleep 1; echo done; echo bye >&2", background=True)
    assert isinstance(h.pid, int) and h.pid > 0
    c = shared_sandbox.commands.connect(h.pid)
    assert c.pid == h.pid
    r = c.wait()
    assert (r.stdout, r.stderr, r.exit_code) == ("done\n", "bye\n", 0)
    r = h.wait()
    assert (r.stdout, r.exit_code) == ("done\n", 0)


def test_background_nonzero_wait_raises(shared_sandbox):
    h = shared_sandbox.commands.run("sleep 0.3; echo x; exit 7", background=True)
    with pytest.raises(CommandExitException) as e:
        h.wait()
    assert (e.value.exit_code, e.value.stdout) == (7, "x\n")


def test_background_iterate_output(shared_sandbox):
    h = shared_sandbox.commands.run("echo a; sleep 0.2; echo b >&2", background=True)
    got = list(h)
    assert "".join(o for o, _, _ in got if o) == "a\n"
    assert "".join(e for _, e, _ in got if e) == "b\n"


def test_list_contains_background_pid_with_cmd(shared_sandbox):
    h1 = shared_sandbox.commands.run("sleep 30", background=True)
    h2 = shared_sandbox.commands.run("sleep 31", background=True, cwd="/tmp", envs={"X": "y"})
    try:
        procs = {p.pid: p for p in shared_sandbox.commands.list()}
        assert h1.pid in procs and h2.pid in procs, procs
        p = procs[h1.pid]
        # The SDK runs every command as `/bin/bash -l -c CMD`.
        assert (p.cmd, p.args) == ("/bin/bash", ["-l", "-c", "sleep 30"])
        assert p.tag is None
        p2 = procs[h2.pid]
        assert p2.args == ["-l", "-c", "sleep 31"]
        assert p2.cwd == "/tmp"
        assert p2.envs.get("X") == "y"
    finally:
        shared_sandbox.commands.kill(h1.pid)
        shared_sandbox.commands.kill(h2.pid)


def test_kill_background_command(shared_sandbox):
    h = shared_sandbox.commands.run("sleep 60", background=True)
    assert shared_sandbox.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException) as e:
        h.wait()
    # envd: {"exitCode": -1, "status": "signal: killed"}
    assert e.value.exit_code == -1
    assert e.value.error in (None, "signal: killed"), e.value.error
    assert h.pid not in [p.pid for p in shared_sandbox.commands.list()]
    with pytest.raises(CommandExitException):
        shared_sandbox.commands.run(f"kill -0 {h.pid}")
    # Killing it again: it is gone.
    assert shared_sandbox.commands.kill(h.pid) is False


def test_kill_via_handle(shared_sandbox):
    h = shared_sandbox.commands.run("sleep 60", background=True)
    assert h.kill() is True
    with pytest.raises(CommandExitException) as e:
        h.wait()
    assert e.value.exit_code == -1


def test_kill_unknown_pid_returns_false(shared_sandbox):
    assert shared_sandbox.commands.kill(999999) is False


def test_connect_unknown_pid_raises_not_found(shared_sandbox):
    with pytest.raises(NotFoundException):
        shared_sandbox.commands.connect(999999)


def test_send_stdin_to_unknown_pid_raises_not_found(shared_sandbox):
    with pytest.raises(NotFoundException):
        shared_sandbox.commands.send_stdin(999999, "x")


def test_stdin_send_and_close(shared_sandbox):
    h = shared_sandbox.commands.run("cat", background=True, stdin=True)
    shared_sandbox.commands.send_stdin(h.pid, "hello\n")
    shared_sandbox.commands.close_stdin(h.pid)
    r = h.wait()
    assert (r.stdout, r.exit_code) == ("hello\n", 0)


def test_stdin_bytes_via_handle_and_streaming(shared_sandbox):
    h = shared_sandbox.commands.run("cat", background=True, stdin=True)
    h.send_stdin(b"Hello, World!")
    for stdout, _, _ in h:
        assert stdout == "Hello, World!"
        break
    h.send_stdin("!@#$%^&*()_+\nline2")
    h.close_stdin()
    r = h.wait()
    assert r.stdout == "Hello, World!!@#$%^&*()_+\nline2"


def test_stdin_not_requested_reads_eof(shared_sandbox):
    # stdin=False (the default): the command's stdin is empty, so `cat` ends at once.
    r = shared_sandbox.commands.run("cat; echo end", timeout=10)
    assert r.stdout == "end\n"


# =============================================================================================
# PTY


def test_pty_size_and_resize(shared_sandbox):
    t = shared_sandbox.pty.create(PtySize(rows=24, cols=80))
    reader = PtyReader(t)
    shared_sandbox.pty.send_stdin(t.pid, b"stty size\n")
    pos = reader.wait_for(r"\b24 80\b")
    shared_sandbox.pty.resize(t.pid, PtySize(cols=100, rows=30))
    shared_sandbox.pty.send_stdin(t.pid, b"stty size; tput cols; exit\n")
    reader.wait_for(r"\b30 100\b", start=pos)
    reader.join()
    assert reader.error is None, repr(reader.error)
    assert reader.result.exit_code == 0


def test_pty_envs_cwd_and_term(shared_sandbox):
    t = shared_sandbox.pty.create(PtySize(rows=24, cols=80), envs={"ABC": "123"}, cwd="/tmp")
    reader = PtyReader(t)
    shared_sandbox.pty.send_stdin(t.pid, b"echo v=$ABC d=$(pwd) t=$TERM; exit\n")
    reader.wait_for(r"v=123 d=/tmp t=xterm-256color")
    reader.join()
    assert reader.result.exit_code == 0


def test_pty_exit_code(shared_sandbox):
    t = shared_sandbox.pty.create(PtySize(rows=24, cols=80))
    shared_sandbox.pty.send_stdin(t.pid, b"exit 5\n")
    with pytest.raises(CommandExitException) as e:
        t.wait()
    assert e.value.exit_code == 5


def test_pty_kill(shared_sandbox):
    t = shared_sandbox.pty.create(PtySize(rows=24, cols=80))
    reader = PtyReader(t)
    assert shared_sandbox.pty.kill(t.pid) is True
    reader.join()
    assert isinstance(reader.error, CommandExitException), repr(reader.error)
    assert reader.error.exit_code == -1
    with pytest.raises(CommandExitException):
        shared_sandbox.commands.run(f"kill -0 {t.pid}")
    assert shared_sandbox.pty.kill(999999) is False


def test_pty_disconnect_and_connect(shared_sandbox):
    t = shared_sandbox.pty.create(PtySize(rows=24, cols=80), envs={"FOO": "bar"})
    t.disconnect()
    again = shared_sandbox.pty.connect(t.pid)
    assert again.pid == t.pid
    reader = PtyReader(again)
    shared_sandbox.pty.send_stdin(t.pid, b"echo got-$FOO; exit\n")
    reader.wait_for(r"got-bar")
    reader.join()
    assert reader.result.exit_code == 0


def test_pty_listed_as_process(shared_sandbox):
    t = shared_sandbox.pty.create(PtySize(rows=24, cols=80))
    try:
        p = {p.pid: p for p in shared_sandbox.commands.list()}.get(t.pid)
        assert p is not None
        assert (p.cmd, p.args) == ("/bin/bash", ["-i", "-l"])
    finally:
        shared_sandbox.pty.kill(t.pid)


# =============================================================================================
# Files


def test_write_and_read_text(shared_sandbox, workdir):
    info = shared_sandbox.files.write(f"{workdir}/a.txt", "Hello, world!")
    assert isinstance(info, WriteInfo)
    assert (info.name, info.type, info.path) == ("a.txt", FileType.FILE, f"{workdir}/a.txt")
    assert shared_sandbox.files.read(f"{workdir}/a.txt") == "Hello, world!"
    data = shared_sandbox.files.read(f"{workdir}/a.txt", format="bytes")
    assert bytes(data) == b"Hello, world!"
    assert b"".join(shared_sandbox.files.read(f"{workdir}/a.txt", format="stream")) == b"Hello, world!"


def test_write_relative_path_resolves_against_home(shared_sandbox, test_id):
    name = f"rel-{test_id}.txt"
    info = shared_sandbox.files.write(name, "rel")
    assert info.path == f"{HOME}/{name}"
    assert shared_sandbox.commands.run(f"cat {HOME}/{name}").stdout == "rel"
    assert shared_sandbox.files.read(name) == "rel"
    shared_sandbox.files.remove(name)


def test_write_bytes_and_read_bytes(shared_sandbox, workdir):
    data = bytes(range(256)) * 16 + b"\xff\xfe\x00"
    shared_sandbox.files.write(f"{workdir}/b.bin", data)
    assert bytes(shared_sandbox.files.read(f"{workdir}/b.bin", format="bytes")) == data
    r = shared_sandbox.commands.run(f"wc -c < {workdir}/b.bin")
    assert r.stdout.strip() == str(len(data))


def test_write_file_like_and_octet_stream(shared_sandbox, workdir):
    text = "Streamed octet-stream upload. " * 10_000
    shared_sandbox.files.write(f"{workdir}/io.bin", io.BytesIO(text.encode()))
    assert shared_sandbox.files.read(f"{workdir}/io.bin") == text
    shared_sandbox.files.write(f"{workdir}/octet.txt", "octet", use_octet_stream=True)
    assert shared_sandbox.files.read(f"{workdir}/octet.txt") == "octet"
    shared_sandbox.files.write(f"{workdir}/gz.bin", io.BytesIO(text.encode()), use_octet_stream=True, gzip=True)
    assert shared_sandbox.files.read(f"{workdir}/gz.bin") == text
    assert b"".join(shared_sandbox.files.read(f"{workdir}/gz.bin", format="stream", gzip=True)) == text.encode()


def test_write_empty_and_overwrite(shared_sandbox, workdir):
    shared_sandbox.files.write(f"{workdir}/e.txt", "")
    assert shared_sandbox.files.read(f"{workdir}/e.txt") == ""
    shared_sandbox.files.write(f"{workdir}/e.txt", "Initial content, longer.")
    shared_sandbox.files.write(f"{workdir}/e.txt", "New content.")
    assert shared_sandbox.files.read(f"{workdir}/e.txt") == "New content."


def test_write_creates_missing_parents(shared_sandbox, workdir):
    shared_sandbox.files.write(f"{workdir}/x/y/z.txt", "deep")
    assert shared_sandbox.files.read(f"{workdir}/x/y/z.txt") == "deep"
    assert shared_sandbox.files.get_info(f"{workdir}/x/y").type == FileType.DIR


def test_write_files_multiple(shared_sandbox, workdir):
    assert shared_sandbox.files.write_files([]) == []
    entries = [WriteEntry(path=f"{workdir}/m{i}.txt", data=f"file {i}") for i in range(10)]
    entries.append(WriteEntry(path=f"{workdir}/m.bin", data=b"\x00\x01bytes"))
    infos = shared_sandbox.files.write_files(entries)
    assert [i.path for i in infos] == [e["path"] for e in entries]
    assert all(i.type == FileType.FILE for i in infos)
    for i in range(10):
        assert shared_sandbox.files.read(f"{workdir}/m{i}.txt") == f"file {i}"
    assert bytes(shared_sandbox.files.read(f"{workdir}/m.bin", format="bytes")) == b"\x00\x01bytes"


def test_write_to_a_directory_path_fails(shared_sandbox, workdir):
    shared_sandbox.files.make_dir(f"{workdir}/adir")
    with pytest.raises(InvalidArgumentException):
        shared_sandbox.files.write(f"{workdir}/adir", "x")


def test_read_missing_file_raises_file_not_found(shared_sandbox, workdir):
    with pytest.raises(FileNotFoundException):
        shared_sandbox.files.read(f"{workdir}/missing.txt")
    with pytest.raises(NotFoundException):
        shared_sandbox.files.read(f"{workdir}/missing.txt", format="bytes")
    with pytest.raises(FileNotFoundException):
        shared_sandbox.files.read(f"{workdir}/missing.txt", format="stream")


def test_read_directory_raises_invalid_argument(shared_sandbox, workdir):
    with pytest.raises(InvalidArgumentException):
        shared_sandbox.files.read(workdir)


def test_list_depth_order_and_paths(shared_sandbox, workdir):
    fs = shared_sandbox.files
    for d in ("subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2/subdir2_1", "subdir2/subdir2_2"):
        fs.make_dir(f"{workdir}/{d}")
    fs.write(f"{workdir}/file1.txt", "Hello, world!")

    level1 = [("file1.txt", FileType.FILE), ("subdir1", FileType.DIR), ("subdir2", FileType.DIR)]
    for depth in (None, 1):
        got = fs.list(workdir) if depth is None else fs.list(workdir, depth=depth)
        assert [(e.name, e.type) for e in got] == level1
        assert [e.path for e in got] == [f"{workdir}/{n}" for n, _ in level1]

    level2 = ["file1.txt", "subdir1", "subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2",
              "subdir2/subdir2_1", "subdir2/subdir2_2"]
    for depth in (2, 3):
        got = fs.list(workdir, depth=depth)
        assert [e.path for e in got] == [f"{workdir}/{p}" for p in level2], depth
        assert [e.name for e in got] == [p.rsplit("/", 1)[-1] for p in level2]
        assert [e.type for e in got] == [FileType.FILE] + [FileType.DIR] * 6

    assert fs.list(f"{workdir}/subdir2/subdir2_1") == []
    with pytest.raises(InvalidArgumentException, match="depth should be at least 1"):
        fs.list(workdir, depth=0)


def test_list_missing_directory_raises(shared_sandbox, workdir):
    with pytest.raises(FileNotFoundException):
        shared_sandbox.files.list(f"{workdir}/nope")


def test_entry_info_details(shared_sandbox, workdir):
    fs = shared_sandbox.files
    fs.make_dir(f"{workdir}/sub")
    fs.write(f"{workdir}/test.txt", "Hello, World!")

    entries = {e.name: e for e in fs.list(workdir)}
    assert set(entries) == {"sub", "test.txt"}
    f = entries["test.txt"]
    assert (f.type, f.path, f.size) == (FileType.FILE, f"{workdir}/test.txt", 13)
    assert (f.mode, f.permissions) == (0o644, "-rw-r--r--")
    assert (f.owner, f.group) == (USER, USER)
    assert f.modified_time is not None and f.modified_time.tzinfo is not None
    assert abs((now() - f.modified_time).total_seconds()) < 120
    assert f.symlink_target is None
    d = entries["sub"]
    assert (d.type, d.path, d.mode, d.permissions) == (FileType.DIR, f"{workdir}/sub", 0o755, "drwxr-xr-x")
    assert (d.owner, d.group) == (USER, USER)

    info = fs.get_info(f"{workdir}/test.txt")
    assert (info.name, info.type, info.path, info.size) == ("test.txt", FileType.FILE, f"{workdir}/test.txt", 13)
    assert (info.mode, info.permissions, info.owner, info.group) == (0o644, "-rw-r--r--", USER, USER)
    dinfo = fs.get_info(f"{workdir}/sub")
    assert (dinfo.name, dinfo.type, dinfo.mode, dinfo.permissions) == ("sub", FileType.DIR, 0o755, "drwxr-xr-x")
    assert dinfo.size > 0

    shared_sandbox.commands.run(f"chmod 0750 {workdir}/test.txt")
    info = fs.get_info(f"{workdir}/test.txt")
    assert (info.mode, info.permissions) == (0o750, "-rwxr-x---")


def test_get_info_relative_path_and_missing(shared_sandbox, test_id):
    name = f"info-{test_id}.txt"
    shared_sandbox.files.write(name, "test")
    pwd = shared_sandbox.commands.run("pwd").stdout.strip()
    info = shared_sandbox.files.get_info(name)
    assert (info.name, info.path, info.size) == (name, f"{pwd}/{name}", 4)
    with pytest.raises(FileNotFoundException):
        shared_sandbox.files.get_info(f"missing-{test_id}.txt")
    shared_sandbox.files.remove(name)


def test_symlinks_in_get_info_and_list(shared_sandbox, workdir):
    fs = shared_sandbox.files
    fs.write(f"{workdir}/test.txt", "Hello, World!")
    fs.make_dir(f"{workdir}/realdir")
    shared_sandbox.commands.run("ln -s test.txt link.txt && ln -s realdir linkdir", cwd=workdir)

    info = fs.get_info(f"{workdir}/link.txt")
    assert info.type == FileType.FILE
    assert info.symlink_target == f"{workdir}/test.txt"
    assert info.name == "link.txt" and info.path == f"{workdir}/link.txt"

    entries = {e.name: e for e in fs.list(workdir)}
    assert set(entries) == {"test.txt", "realdir", "link.txt", "linkdir"}
    assert entries["link.txt"].type == FileType.FILE
    assert entries["link.txt"].symlink_target == f"{workdir}/test.txt"
    assert entries["linkdir"].type == FileType.DIR
    assert entries["linkdir"].symlink_target == f"{workdir}/realdir"
    assert entries["test.txt"].symlink_target is None

    # Reading through the link reads the target.
    assert fs.read(f"{workdir}/link.txt") == "Hello, World!"


def test_exists(shared_sandbox, workdir):
    shared_sandbox.files.write(f"{workdir}/f.txt", "test")
    assert shared_sandbox.files.exists(f"{workdir}/f.txt") is True
    assert shared_sandbox.files.exists(workdir) is True
    assert shared_sandbox.files.exists(f"{workdir}/nope") is False


def test_rename(shared_sandbox, workdir):
    fs = shared_sandbox.files
    fs.write(f"{workdir}/old.txt", "This file will be renamed.")
    info = fs.rename(f"{workdir}/old.txt", f"{workdir}/new.txt")
    assert (info.name, info.path, info.type) == ("new.txt", f"{workdir}/new.txt", FileType.FILE)
    assert fs.exists(f"{workdir}/old.txt") is False
    assert fs.read(f"{workdir}/new.txt") == "This file will be renamed."
    fs.make_dir(f"{workdir}/d1")
    info = fs.rename(f"{workdir}/d1", f"{workdir}/d2")
    assert (info.path, info.type) == (f"{workdir}/d2", FileType.DIR)
    with pytest.raises(FileNotFoundException):
        fs.rename(f"{workdir}/missing.txt", f"{workdir}/other.txt")


def test_make_dir(shared_sandbox, workdir):
    fs = shared_sandbox.files
    assert fs.make_dir(f"{workdir}/new") is True
    assert fs.make_dir(f"{workdir}/new") is False
    assert fs.get_info(f"{workdir}/new").type == FileType.DIR
    assert fs.make_dir(f"{workdir}/a/b/c") is True
    assert fs.exists(f"{workdir}/a/b/c") is True


def test_remove(shared_sandbox, workdir):
    fs = shared_sandbox.files
    fs.write(f"{workdir}/r.txt", "This file will be removed.")
    fs.remove(f"{workdir}/r.txt")
    assert fs.exists(f"{workdir}/r.txt") is False
    fs.write(f"{workdir}/tree/a/b.txt", "x")
    fs.remove(f"{workdir}/tree")
    assert fs.exists(f"{workdir}/tree") is False
    fs.remove(f"{workdir}/never-existed.txt")  # not an error


def test_upload_download_50mib(shared_sandbox, workdir):
    data = os.urandom(50 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    path = f"{workdir}/big.bin"
    info = shared_sandbox.files.write(path, data)
    assert info.path == path
    assert shared_sandbox.files.get_info(path).size == 50 * MiB
    r = shared_sandbox.commands.run(f"sha256sum {path}")
    assert r.stdout.split()[0] == digest
    back = shared_sandbox.files.read(path, format="bytes")
    assert len(back) == 50 * MiB
    assert hashlib.sha256(back).hexdigest() == digest
    h = hashlib.sha256()
    for chunk in shared_sandbox.files.read(path, format="stream"):
        h.update(chunk)
    assert h.hexdigest() == digest
    shared_sandbox.files.remove(path)


def test_upload_streamed_file_object(shared_sandbox, workdir):
    data = os.urandom(8 * MiB)
    path = f"{workdir}/streamed.bin"
    shared_sandbox.files.write(path, io.BytesIO(data))
    r = shared_sandbox.commands.run(f"sha256sum {path}")
    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()


# =============================================================================================
# Watching a directory


def test_watch_new_file_gives_create_chmod_write(shared_sandbox, workdir):
    # envd opens the new file (CREATE), chowns it to the user (CHMOD), writes it (WRITE): E2B's
    # own test expects exactly three events for one write of a new file, the first CREATE.
    fs = shared_sandbox.files
    fs.make_dir(f"{workdir}/w")
    handle = fs.watch_dir(f"{workdir}/w")
    fs.write(f"{workdir}/w/new.txt", "This file will be watched.")
    events = collect_events(handle, lambda ev: any(e.type == FilesystemEventType.WRITE for e in ev))
    handle.stop()
    assert seq(events) == [
        (FilesystemEventType.CREATE, "new.txt"),
        (FilesystemEventType.CHMOD, "new.txt"),
        (FilesystemEventType.WRITE, "new.txt"),
    ]


def test_watch_overwrite_remove_rename(shared_sandbox, workdir):
    fs = shared_sandbox.files
    fs.make_dir(f"{workdir}/w")
    fs.write(f"{workdir}/w/f.txt", "This file will be watched.")
    fs.write(f"{workdir}/w/g.txt", "g")
    handle = fs.watch_dir(f"{workdir}/w")

    fs.write(f"{workdir}/w/f.txt", "This file has been modified.")
    events = collect_events(handle, lambda ev: (FilesystemEventType.WRITE, "f.txt") in seq(ev))
    assert (FilesystemEventType.WRITE, "f.txt") in seq(events), seq(events)
    assert all(name == "f.txt" for _, name in seq(events)), seq(events)
    assert FilesystemEventType.CREATE not in [t for t, _ in seq(events)], seq(events)

    fs.remove(f"{workdir}/w/f.txt")
    events = collect_events(handle, lambda ev: len(ev) >= 1)
    assert seq(events) == [(FilesystemEventType.REMOVE, "f.txt")]

    fs.rename(f"{workdir}/w/g.txt", f"{workdir}/w/h.txt")
    events = collect_events(handle, lambda ev: len(ev) >= 2)
    assert seq(events) == [(FilesystemEventType.RENAME, "g.txt"), (FilesystemEventType.CREATE, "h.txt")]

    shared_sandbox.commands.run(f"chmod 600 {workdir}/w/h.txt")
    events = collect_events(handle, lambda ev: len(ev) >= 1)
    assert seq(events) == [(FilesystemEventType.CHMOD, "h.txt")]

    fs.make_dir(f"{workdir}/w/sub")
    events = collect_events(handle, lambda ev: len(ev) >= 1)
    assert seq(events) == [(FilesystemEventType.CREATE, "sub")]
    # Not recursive: a file in the new subdirectory is not seen.
    fs.write(f"{workdir}/w/sub/inner.txt", "x")
    time.sleep(0.5)
    assert handle.get_new_events() == []
    handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


def test_watch_sees_writes_from_commands(shared_sandbox, workdir):
    fs = shared_sandbox.files
    fs.make_dir(f"{workdir}/w")
    handle = fs.watch_dir(f"{workdir}/w")
    shared_sandbox.commands.run(f"echo hi > {workdir}/w/cmd.txt")
    events = collect_events(handle, lambda ev: (FilesystemEventType.WRITE, "cmd.txt") in seq(ev))
    handle.stop()
    assert seq(events)[0] == (FilesystemEventType.CREATE, "cmd.txt")
    assert (FilesystemEventType.WRITE, "cmd.txt") in seq(events)


def test_watch_recursive(shared_sandbox, workdir):
    fs = shared_sandbox.files
    fs.make_dir(f"{workdir}/r/nested")
    handle = fs.watch_dir(f"{workdir}/r", recursive=True)
    fs.write(f"{workdir}/r/nested/f.txt", "This file will be watched.")
    events = collect_events(handle, lambda ev: any(e.type == FilesystemEventType.WRITE for e in ev))
    assert seq(events) == [
        (FilesystemEventType.CREATE, "nested/f.txt"),
        (FilesystemEventType.CHMOD, "nested/f.txt"),
        (FilesystemEventType.WRITE, "nested/f.txt"),
    ]

    # A directory made after the watch started is watched too.
    fs.make_dir(f"{workdir}/r/later")
    events = collect_events(handle, lambda ev: (FilesystemEventType.CREATE, "later") in seq(ev))
    assert (FilesystemEventType.CREATE, "later") in seq(events)
    fs.write(f"{workdir}/r/later/g.txt", "x")
    events = collect_events(handle, lambda ev: (FilesystemEventType.WRITE, "later/g.txt") in seq(ev))
    assert (FilesystemEventType.WRITE, "later/g.txt") in seq(events), seq(events)
    handle.stop()


def test_watch_missing_dir_and_file(shared_sandbox, workdir):
    with pytest.raises(FileNotFoundException):
        shared_sandbox.files.watch_dir(f"{workdir}/nope")
    shared_sandbox.files.write(f"{workdir}/plain.txt", "x")
    with pytest.raises(InvalidArgumentException):
        shared_sandbox.files.watch_dir(f"{workdir}/plain.txt")


# =============================================================================================
# E2B's own base template runs as `user` in /home/user; Stockade's does not yet.


@pytest.mark.skipif(DRIVER == "native", reason="the native driver's base is the host's root, which has no user `user`")
def test_a_template_with_user_user_runs_as_user_in_home_user(daemon, test_id):
    """E2B's base template runs as `user` in /home/user. On docker, Stockade's base image has
    that user, and a template registered through the API makes sandboxes that run as it: the
    home is theirs and writable, relative paths resolve there, `user="root"` is root."""
    auth = {"Authorization": f"Bearer {daemon.token}"}
    name = f"as-user-{test_id}"[:64].lower()
    r = httpx.post(f"{daemon.url}/api/templates", json={"name": name, "user": "user"}, headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    listed = httpx.get(f"{daemon.url}/api/templates", headers=auth, timeout=10).json()
    assert {"name": name, "user": "user"} in listed, listed
    sbx = Sandbox.create(template=name, timeout=120)
    try:
        r = sbx.commands.run("whoami; pwd; echo $HOME")
        assert r.stdout == "user\n/home/user\n/home/user\n"
        info = sbx.files.write("notes.txt", "x")
        assert info.path == "/home/user/notes.txt"
        e = sbx.files.get_info("notes.txt")
        assert (e.owner, e.group) == ("user", "user")
        assert sbx.commands.run("echo made > made.txt && stat -c %U made.txt").stdout == "user\n"
        assert sbx.commands.run("whoami", user="root").stdout == "root\n"
        assert sbx.get_info().template_id == name
    finally:
        sbx.kill()
        httpx.delete(f"{daemon.url}/api/templates/{name}", headers=auth, timeout=10)


@pytest.mark.skipif(DRIVER == "native", reason=USER_TEMPLATE_REASON)
def test_default_user_is_user_with_home_user(shared_sandbox):
    r = shared_sandbox.commands.run("whoami; pwd; echo $HOME")
    assert r.stdout == "user\n/home/user\n/home/user\n"


@pytest.mark.skipif(DRIVER == "native", reason=USER_TEMPLATE_REASON)
def test_relative_paths_resolve_against_home_user(shared_sandbox, test_id):
    info = shared_sandbox.files.write(f"u-{test_id}.txt", "x")
    assert info.path == f"/home/user/u-{test_id}.txt"
    e = shared_sandbox.files.get_info(f"u-{test_id}.txt")
    assert (e.owner, e.group) == ("user", "user")


@pytest.mark.skipif(DRIVER == "native", reason=USER_TEMPLATE_REASON)
def test_user_root_runs_as_root_and_user_as_user(shared_sandbox):
    assert shared_sandbox.commands.run("whoami", user="root").stdout == "root\n"
    assert shared_sandbox.commands.run("whoami", user="user").stdout == "user\n"
    shared_sandbox.files.write("/home/user/owned.txt", "x", user="user")
    assert shared_sandbox.files.get_info("/home/user/owned.txt").owner == "user"


# =============================================================================================
# Last: the daemon's answers held no 5xx but the sandbox-not-found 502; then it survives kill -9.


@pytest.mark.last(1)
def test_no_5xx_answered_but_the_not_found_502(daemon):
    text = daemon.metrics()
    bad = []
    for line in text.splitlines():
        if line.startswith("stockade_http_requests_total{"):
            m = re.search(r'status="(\d+)"', line)
            if m and int(m.group(1)) >= 500 and int(m.group(1)) != 502:
                bad.append(line)
    assert bad == [], "5xx answers:\n" + "\n".join(bad)
    log = open(daemon.log_path, encoding="utf-8", errors="replace").read()
    assert "panicked" not in log, "the daemon panicked; see its log"
    # The request log too (envd's routes count as `unmatched` in the metrics).
    bad = [line for line in log.splitlines()
           if (m := re.search(r"\bstatus=(5\d\d)\b", line)) and m.group(1) != "502"]
    assert bad == [], "5xx answers in the daemon log:\n" + "\n".join(bad[:20])


@pytest.mark.last(2)
@pytest.mark.timeout(240)
def test_sandbox_survives_daemon_kill9(daemon, test_id):
    sbx = Sandbox.create(timeout=600, metadata={"restart": test_id})
    try:
        sbx.files.write(f"{HOME}/before-restart.txt", "written before kill -9")
        sleeper = sbx.commands.run("sleep 600", background=True)
        ticker = sbx.commands.run(
            f"while true; do date +%s%N >> {HOME}/ticks; sleep 0.2; done", background=True
        )
        time.sleep(1)

        daemon.kill9()
        time.sleep(1)
        daemon.start()

        again = Sandbox.connect(sbx.sandbox_id)
        assert again.sandbox_id == sbx.sandbox_id
        assert again.is_running() is True
        assert again.commands.run("echo ok").stdout == "ok\n"
        assert again.files.read(f"{HOME}/before-restart.txt") == "written before kill -9"
        pids = [p.pid for p in again.commands.list()]
        assert sleeper.pid in pids and ticker.pid in pids, pids

        n1 = int(again.commands.run(f"wc -l < {HOME}/ticks").stdout)
        time.sleep(1.5)
        n2 = int(again.commands.run(f"wc -l < {HOME}/ticks").stdout)
        assert n2 > n1, "the background loop stopped"

        info = Sandbox.get_info(sbx.sandbox_id)
        assert info.metadata == {"restart": test_id}
        assert list_ids(SandboxQuery(metadata={"restart": test_id})) == [sbx.sandbox_id]

        # The old handle (made before the restart) works too.
        assert sbx.commands.run("echo old-handle").stdout == "old-handle\n"
        assert again.commands.kill(sleeper.pid) is True
    finally:
        Sandbox.kill(sbx.sandbox_id)
