"""The real E2B Python SDK's `AsyncSandbox` against Stockade's E2B-compatible surface: the
streaming directory watch (filesystem.Filesystem/WatchDir, unlike the sync SDK's polled watcher),
commands with callbacks, stdin, PTY, files, and the sandbox API."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re

import pytest
import pytest_asyncio

from e2b import (
    AsyncSandbox,
    CommandExitException,
    FileNotFoundException,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    NotFoundException,
    PtySize,
    SandboxNotFoundException,
    SandboxQuery,
)

from conftest import HOME

MiB = 1024 * 1024


@pytest_asyncio.fixture
async def asbx(daemon, test_id):
    sbx = await AsyncSandbox.create(timeout=300, metadata={"test_id": test_id, "suite": "async"})
    yield sbx
    try:
        await sbx.kill()
    except Exception as e:  # noqa: BLE001
        print(f"teardown: kill {sbx.sandbox_id}: {e!r}")


async def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def seq(events):
    return [(e.type, e.name) for e in events]


async def test_async_commands(asbx):
    r = await asbx.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)

    with pytest.raises(CommandExitException) as e:
        await asbx.commands.run("echo o; echo e >&2; exit 4")
    assert (e.value.exit_code, e.value.stdout, e.value.stderr) == (4, "o\n", "e\n")

    out, err = [], []
    r = await asbx.commands.run(
        "for i in 1 2 3; do echo $i; echo x$i >&2; sleep 0.1; done",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "1\n2\n3\n" == r.stdout
    assert "".join(err) == "x1\nx2\nx3\n" == r.stderr

    r = await asbx.commands.run("pwd; echo $V", cwd="/tmp", envs={"V": "w"})
    assert r.stdout == "/tmp\nw\n"


async def test_async_background_connect_kill_list(asbx):
    h = await asbx.commands.run("sleep 0.5; echo done", background=True)
    c = await asbx.commands.connect(h.pid)
    assert c.pid == h.pid
    r = await c.wait()
    assert (r.stdout, r.exit_code) == ("done\n", 0)

    long = await asbx.commands.run("sleep 60", background=True)
    procs = {p.pid: p for p in await asbx.commands.list()}
    assert long.pid in procs
    assert procs[long.pid].args == ["-l", "-c", "sleep 60"]
    assert await asbx.commands.kill(long.pid) is True
    with pytest.raises(CommandExitException) as e:
        await long.wait()
    assert e.value.exit_code == -1
    assert long.pid not in [p.pid for p in await asbx.commands.list()]
    assert await asbx.commands.kill(999999) is False
    with pytest.raises(NotFoundException):
        await asbx.commands.connect(999999)


async def test_async_stdin(asbx):
    h = await asbx.commands.run("cat", background=True, stdin=True)
    await asbx.commands.send_stdin(h.pid, "hello\n")
    await asbx.commands.close_stdin(h.pid)
    r = await h.wait()
    assert (r.stdout, r.exit_code) == ("hello\n", 0)


async def test_async_pty_with_resize(asbx):
    buf = bytearray()

    t = await asbx.pty.create(PtySize(rows=24, cols=80), on_data=buf.extend)

    def seen(pattern, start=0):
        m = re.search(pattern, bytes(buf).decode("utf-8", "replace")[start:])
        return m

    await asbx.pty.send_stdin(t.pid, b"stty size\n")
    await wait_for(lambda: seen(r"\b24 80\b"), what="24 80")
    pos = len(bytes(buf).decode("utf-8", "replace"))
    await asbx.pty.resize(t.pid, PtySize(cols=100, rows=30))
    await asbx.pty.send_stdin(t.pid, b"stty size; exit\n")
    r = await t.wait()
    assert r.exit_code == 0
    assert seen(r"\b30 100\b", pos), bytes(buf)

    t2 = await asbx.pty.create(PtySize(rows=24, cols=80), on_data=lambda _: None)
    assert await asbx.pty.kill(t2.pid) is True
    with pytest.raises(CommandExitException):
        await t2.wait()


async def test_async_files(asbx, test_id):
    d = f"{HOME}/async-{test_id}"
    fs = asbx.files
    assert await fs.make_dir(d) is True
    assert await fs.make_dir(d) is False
    info = await fs.write(f"{d}/a.txt", "Hello")
    assert (info.path, info.type) == (f"{d}/a.txt", FileType.FILE)
    assert await fs.read(f"{d}/a.txt") == "Hello"
    assert bytes(await fs.read(f"{d}/a.txt", format="bytes")) == b"Hello"
    assert await fs.exists(f"{d}/a.txt") is True
    e = await fs.get_info(f"{d}/a.txt")
    assert (e.name, e.size, e.mode, e.permissions) == ("a.txt", 5, 0o644, "-rw-r--r--")
    await fs.make_dir(f"{d}/sub")
    assert [(x.name, x.type) for x in await fs.list(d)] == [("a.txt", FileType.FILE), ("sub", FileType.DIR)]
    moved = await fs.rename(f"{d}/a.txt", f"{d}/b.txt")
    assert moved.path == f"{d}/b.txt"
    assert await fs.exists(f"{d}/a.txt") is False
    await fs.remove(f"{d}/b.txt")
    assert await fs.exists(f"{d}/b.txt") is False
    await fs.remove(f"{d}/b.txt")  # missing: not an error
    with pytest.raises(FileNotFoundException):
        await fs.read(f"{d}/b.txt")

    data = os.urandom(16 * MiB)
    await fs.write(f"{d}/big.bin", data)
    back = await fs.read(f"{d}/big.bin", format="bytes")
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_async_watch_dir_new_file(asbx, test_id):
    d = f"{HOME}/awatch-{test_id}"
    await asbx.files.make_dir(d)
    events: list[FilesystemEvent] = []
    exits = []

    handle = await asbx.files.watch_dir(d, on_event=events.append, on_exit=exits.append)
    await asbx.files.write(f"{d}/new.txt", "This file will be watched.")
    await wait_for(lambda: any(e.type == FilesystemEventType.WRITE for e in events), what="WRITE")
    await asyncio.sleep(0.5)
    assert seq(events) == [
        (FilesystemEventType.CREATE, "new.txt"),
        (FilesystemEventType.CHMOD, "new.txt"),
        (FilesystemEventType.WRITE, "new.txt"),
    ]

    events.clear()
    await asbx.files.write(f"{d}/new.txt", "This file has been modified.")
    await wait_for(lambda: (FilesystemEventType.WRITE, "new.txt") in seq(events), what="WRITE again")
    await asyncio.sleep(0.5)  # an overwrite may give a second WRITE (the truncate, then the data)
    assert all(name == "new.txt" for _, name in seq(events)), seq(events)
    assert FilesystemEventType.CREATE not in [t for t, _ in seq(events)], seq(events)

    events.clear()
    await asbx.files.remove(f"{d}/new.txt")
    await wait_for(lambda: events, what="REMOVE")
    await asyncio.sleep(0.3)
    assert seq(events) == [(FilesystemEventType.REMOVE, "new.txt")]

    await handle.stop()
    assert exits == [None]


async def test_async_watch_dir_recursive(asbx, test_id):
    d = f"{HOME}/arwatch-{test_id}"
    await asbx.files.make_dir(d)
    events: list[FilesystemEvent] = []
    handle = await asbx.files.watch_dir(d, on_event=events.append, recursive=True)

    await asbx.files.make_dir(f"{d}/nested")
    await wait_for(lambda: (FilesystemEventType.CREATE, "nested") in seq(events), what="CREATE nested")
    await asbx.files.write(f"{d}/nested/f.txt", "x")
    await wait_for(lambda: (FilesystemEventType.WRITE, "nested/f.txt") in seq(events), what="WRITE nested/f.txt")
    await handle.stop()


async def test_async_watch_missing_dir(asbx):
    with pytest.raises(FileNotFoundException):
        await asbx.files.watch_dir(f"{HOME}/no-such-dir", on_event=lambda e: None)


async def test_async_sandbox_api(asbx, test_id):
    info = await asbx.get_info()
    assert info.sandbox_id == asbx.sandbox_id
    assert info.metadata == {"test_id": test_id, "suite": "async"}

    again = await AsyncSandbox.connect(asbx.sandbox_id)
    assert (await again.commands.run("echo ok")).stdout == "ok\n"

    paginator = AsyncSandbox.list(query=SandboxQuery(metadata={"test_id": test_id, "suite": "async"}))
    items = await paginator.next_items()
    assert [s.sandbox_id for s in items] == [asbx.sandbox_id]

    await asbx.set_timeout(400)
    assert await asbx.is_running() is True
    assert await asbx.kill() is True
    assert await AsyncSandbox.kill(asbx.sandbox_id) is False
    assert await asbx.is_running() is False
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.connect(asbx.sandbox_id)
