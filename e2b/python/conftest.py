"""One `stockade serve` per test session, on the driver named by E2B_TEST_DRIVER (native by
default), with the real E2B SDK pointed at it through E2B_API_KEY / E2B_API_URL / E2B_SANDBOX_URL.

When a test fails, the tail of the daemon's log is attached to its report. At the end of the
session the daemon gets SIGTERM and must exit 0 within 30 s.

Tests marked `last` run after all others (they kill -9 and restart the daemon).
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stockade_daemon import Daemon  # noqa: E402

DRIVER = os.environ.get("E2B_TEST_DRIVER", "native")
# Who the base template runs as: E2B's `user` in /home/user where the driver runs Stockade's base
# image (docker), root in /root on native (the host's root has no `user`).
USER, HOME = ("root", "/root") if DRIVER == "native" else ("user", "/home/user")

# Stockade's `base` template runs as root with home /root. E2B's own base runs as `user` with
# home /home/user: on docker that is a registered template (Stockade's base image has the user;
# test_a_template_with_user_user_runs_as_user_in_home_user); base itself is not switched yet.
USER_TEMPLATE_REASON = "the native driver's base is the host's root, which has no user `user`"

_daemon: Daemon | None = None


def pytest_configure(config):
    config.addinivalue_line("markers", "last(n): run after every other test, in order of n (restarts the daemon)")


def pytest_collection_modifyitems(session, config, items):
    def order(item):
        m = item.get_closest_marker("last")
        return (m.args[0] if m.args else 1) if m else 0

    items.sort(key=order)  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def daemon():
    global _daemon
    d = Daemon(driver=DRIVER)
    d.start()
    _daemon = d
    d.apply_sdk_env()
    yield d
    try:
        left = d.kill_all_sandboxes()
        if left:
            print(f"\nteardown: killed sandboxes the tests left running: {left}")
    except Exception as e:  # noqa: BLE001 - the exit check below still runs
        print(f"\nteardown: could not list/kill leftover sandboxes: {e!r}")
    code = d.stop(grace=30.0)
    tail = d.log_tail()
    _daemon = None
    if code == 0:
        d.cleanup()
    assert code == 0, (
        f"stockade serve did not exit 0 within 30 s of SIGTERM (exit {code}); log tail:\n{tail}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _daemon is not None:
        rep.sections.append(("stockade daemon log (tail)", _daemon.log_tail(40)))
    if rep.when == "call":
        item._failed = rep.failed


@pytest.fixture()
def test_id() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture()
def sandbox_factory(daemon, test_id):
    """Sandbox.create with a per-test metadata tag; every sandbox is killed after the test."""
    from e2b import Sandbox

    made = []

    def factory(**kwargs):
        metadata = kwargs.setdefault("metadata", {})
        metadata.setdefault("test_id", test_id)
        kwargs.setdefault("timeout", 300)
        sbx = Sandbox.create(**kwargs)
        made.append(sbx)
        return sbx

    yield factory
    for sbx in made:
        try:
            sbx.kill()
        except Exception as e:  # noqa: BLE001 - the test may have killed it already
            print(f"teardown: kill {sbx.sandbox_id}: {e!r}")


@pytest.fixture()
def sandbox(sandbox_factory):
    return sandbox_factory()


@pytest.fixture(scope="module")
def shared_sandbox(daemon):
    """One sandbox for a module's command and file tests (each works under its own paths)."""
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=900, metadata={"suite": "shared"})
    yield sbx
    try:
        sbx.kill()
    except Exception as e:  # noqa: BLE001
        print(f"teardown: kill {sbx.sandbox_id}: {e!r}")


@pytest.fixture()
def workdir(shared_sandbox, test_id) -> str:
    """A fresh directory under the base template's home for one test."""
    path = f"{HOME}/t-{test_id}"
    shared_sandbox.files.make_dir(path)
    return path
