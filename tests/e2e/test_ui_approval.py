"""A person approves a release in the Prefect UI, with a real browser.

The served runbooks (``devstack.stack.serve_runbooks``, as ``make up`` starts them) pick up a
``staged-deploy`` run created through the REST API as the UI's Run button creates it; the run
pauses at the promotion gate; Debian's Chromium, driven by Playwright, opens the run's page,
clicks Resume, reads what it is asked to approve, is refused without an approver, fills the
form and submits it; the run completes and production serves the new image. Screenshots
are taken on the way, into a temporary folder; to refresh the README's, run it with
``OPSFLOWS_UI_SCREENSHOTS=docs/screenshots``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import procs
from devstack import stack as devstack
from devstack.stack import StackInfo
from tests.deploy_support import new_image, steady_load

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "staged-deploy/staged-deploy"
VIEWPORT = {"width": 1100, "height": 820}
FAST: dict[str, Any] = {"bake_seconds": 4, "bake_interval_s": 1, "smoke_retry_s": 3}


@pytest.fixture(scope="module")
def served(stack: StackInfo, bootstrapped: Any) -> Iterator[StackInfo]:
    """Blocks saved and every runbook served from one process, as ``make up`` does."""
    started = devstack.serve_runbooks(stack)
    try:
        yield stack
    finally:
        if started:
            procs.stop(Path(stack.state_dir), "runbooks")


@pytest.fixture(scope="module")
def production_traffic(stack: StackInfo) -> Iterator[None]:
    """Steady load on production: the bake judges real error rate and p95."""
    with steady_load(stack.app_url("production") + "/"):
        yield


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``OPSFLOWS_UI_SCREENSHOTS`` (e.g. docs/screenshots) or tmp."""
    wanted = os.environ.get("OPSFLOWS_UI_SCREENSHOTS")
    folder = REPO / wanted if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def api_client(stack: StackInfo) -> httpx.Client:
    """The Prefect REST API with the stack's credentials (401 without them)."""
    return httpx.Client(base_url=stack.prefect_api_url, headers=stack.prefect_headers(), timeout=10)


def create_run(api: httpx.Client, parameters: dict[str, Any]) -> str:
    """Create a run of the served deployment through the REST API (the UI's Run button)."""
    deployment = api.get(f"/deployments/name/{DEPLOYMENT}")
    deployment.raise_for_status()
    response = api.post(
        f"/deployments/{deployment.json()['id']}/create_flow_run",
        json={"parameters": parameters},
    )
    response.raise_for_status()
    return str(response.json()["id"])


def wait_for_state(api: httpx.Client, run_id: str, wanted: str, timeout_s: float) -> dict[str, Any]:
    """The run once its state type is ``wanted``; fails early on another final state."""
    deadline = time.monotonic() + timeout_s
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{run_id}").json()
        if run["state_type"] == wanted:
            return run
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} is {run.get('state_name')}, expected {wanted}")


def run_logs(api: httpx.Client, run_id: str) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    response = api.post("/logs/filter", json=body)
    response.raise_for_status()
    return [str(entry["message"]) for entry in response.json()]


def log_in(page: Any, stack: StackInfo) -> None:
    """The UI asks for the API's credentials first (the stack's ``prefect_api`` secret)."""
    from playwright.sync_api import expect

    page.goto(stack.prefect_ui_url)
    password = page.locator("input[type=password]")
    expect(password).to_be_visible()
    password.fill(stack.prefect_auth_string or "")
    password.press("Enter")
    expect(password).to_be_hidden()


def show_whole_description(page: Any, dialog: Any) -> None:
    """For the screenshot: the dialog's description unscrolled, in a viewport tall enough."""
    # The description (an <article>) scrolls inside a card of limited height: unclip both.
    height = dialog.locator("article").first.evaluate(
        """article => {
            const extra = article.scrollHeight - article.clientHeight;
            for (let e = article; e && !e.matches("[role=dialog]"); e = e.parentElement) {
                e.style.maxHeight = "none";
                if (e === article) {
                    e.style.height = "auto";
                    e.style.overflowY = "visible";
                }
            }
            return extra;
        }"""
    )
    page.set_viewport_size({"width": VIEWPORT["width"], "height": VIEWPORT["height"] + height})


def production_image(stack: StackInfo) -> str:
    return str(httpx.get(stack.app_url("production") + "/health", timeout=5).json()["image"])


def test_a_person_approves_the_release_in_the_prefect_ui(
    served: StackInfo, production_traffic: None, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    stack = served
    api = api_client(stack)
    before = production_image(stack)
    image = new_image()
    run_id = create_run(
        api, {"image": image, "policy": "manual", "approval_timeout_s": 600, **FAST}
    )
    wait_for_state(api, run_id, "PAUSED", 180)
    assert production_image(stack) == before, "nothing reaches production before approval"

    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)
    log_in(page, stack)
    page.goto(f"{stack.prefect_ui_url}/runs/flow-run/{run_id}")
    expect(page.get_by_text("Paused").first).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog")
    # What the person approves: the image, what it replaces, the staging evidence.
    expect(dialog).to_contain_text(f"Promote {image} to production?")
    expect(dialog).to_contain_text(f"replaces in production: {before}")
    expect(dialog).to_contain_text("checks passed")
    expect(dialog).to_contain_text("PASS GET /health")
    expect(dialog).to_contain_text("What your answer does")
    show_whole_description(page, dialog)
    page.screenshot(path=str(screenshots / "approval-request.png"))

    # The approver is required: the form refuses to submit without one, or with spaces.
    approver, reason = dialog.locator("textarea").nth(0), dialog.locator("textarea").nth(1)
    submit = dialog.get_by_role("button", name="Submit")
    submit.click()
    expect(dialog).to_contain_text("'approver' is a required property")
    approver.fill("   ")
    submit.click()
    # The UI submits it; the server validates it against the form's schema and refuses.
    refused = page.get_by_text("Validation failed for field 'approver'")
    expect(refused.first).to_be_visible()
    expect(refused).to_have_count(0, timeout=30_000)
    assert wait_for_state(api, run_id, "PAUSED", 1)["state_name"] == "Paused"

    dialog.get_by_role("switch").first.click()
    approver.fill("alice")
    reason.fill("staging green; release 4.x approved in the change meeting")
    expect(dialog).not_to_contain_text("does not match")
    dialog.locator(".p-modal__card").screenshot(path=str(screenshots / "approval-form.png"))
    submit.click()
    expect(dialog).to_be_hidden()

    wait_for_state(api, run_id, "COMPLETED", 240)
    assert production_image(stack) == image
    assert any("promote: approved by alice: staging green" in m for m in run_logs(api, run_id))
    page.set_viewport_size(VIEWPORT)
    page.reload()
    expect(page.get_by_text("Completed").first).to_be_visible()
    expect(page.get_by_text("Beginning flow run").first).to_be_visible()
    page.screenshot(path=str(screenshots / "approval-completed.png"))
    page.close()
