"""The Prefect UI behind the scale-out guide's nginx, in Debian's Chromium (Playwright).

A Prefect server of its own (SQLite, its own credentials, ``PREFECT_UI_API_URL`` at the proxy as
the guide says) behind nginx running ``docs/scale-out/nginx-prefect.conf``: a person who logged
in to nginx gets the UI without its password page (the server's credentials are added by nginx
and never reach the browser), and nobody gets it without a login.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import procs
from tests.proxy_support import PEOPLE, REALM, Proxy, nginx_in_front_of

pytestmark = pytest.mark.timeout(300)

SERVER_AUTH = "shared-string-of-the-ui-test-server"


@pytest.fixture(scope="module")
def proxied_ui() -> Iterator[Proxy]:
    """nginx in front of a fresh Prefect server whose UI calls the API through nginx."""
    port = procs.free_port()
    home = Path(tempfile.mkdtemp(prefix="opsflows-ui-proxy-"))
    header = "Basic " + base64.b64encode(SERVER_AUTH.encode()).decode("ascii")
    try:
        with nginx_in_front_of(f"127.0.0.1:{port}", header) as proxy:
            env = {
                key: value
                for key, value in os.environ.items()
                if key not in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")
            }
            env.update(
                {
                    "PREFECT_HOME": str(home),
                    "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/ui.db",
                    "PREFECT_SERVER_API_AUTH_STRING": SERVER_AUTH,
                    "PREFECT_UI_API_URL": proxy.url + "/api",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                }
            )
            argv = [sys.executable, "-m", "prefect", "server", "start"]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            log = home / "server.log"
            with procs.background(argv, env, log) as server:
                health = procs.http_ok(f"http://127.0.0.1:{port}/api/health")
                started = procs.wait_until(lambda: server.poll() is None and health(), 120)
                assert started, f"the Prefect server did not start:\n{procs.tail(log)}"
                yield proxy
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_person_gets_the_ui_without_the_server_password(proxied_ui: Proxy, browser: Any) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(
        http_credentials={"username": "alice", "password": PEOPLE["alice"]},
        ignore_https_errors=True,  # the test CA; people's browsers trust a real certificate
    )
    try:
        page = context.new_page()
        page.goto(proxied_ui.url + "/deployments")
        expect(page.get_by_role("button", name="Work Pools")).to_be_visible(timeout=30_000)
        # the UI's credential check (GET /api/admin/version) passed through nginx, so it
        # never showed its password page, and the browser holds no server credentials
        assert page.locator("input[type=password]").count() == 0
        assert "/login" not in page.url
        assert page.evaluate("localStorage.getItem('prefect-password')") is None
        assert SERVER_AUTH not in page.content()
    finally:
        context.close()
    lines = proxied_ui.log_lines()
    assert any('user=alice "GET /api/admin/version' in line and " 200 " in line for line in lines)
    api_calls = [line for line in lines if '"POST /api/' in line]
    assert api_calls and all("user=alice" in line for line in api_calls), lines[-10:]


def test_without_a_login_there_is_no_ui(proxied_ui: Proxy, browser: Any) -> None:
    """No login, or a wrong one: nginx's challenge (401), which a headless browser cannot
    answer; nothing of the UI is served."""
    from playwright.sync_api import Error as PlaywrightError

    for credentials in (None, {"username": "alice", "password": PEOPLE["bob"]}):
        context = browser.new_context(http_credentials=credentials, ignore_https_errors=True)
        try:
            page = context.new_page()
            try:
                shown = page.goto(proxied_ui.url + "/deployments")
                assert shown is not None and shown.status == 401
            except PlaywrightError as exc:  # Chromium gives up on a challenge it cannot answer
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
            assert page.get_by_role("button", name="Work Pools").count() == 0
            answer = context.request.get(proxied_ui.url + "/deployments")
            assert answer.status == 401
            assert answer.headers["www-authenticate"] == REALM
        finally:
            context.close()
