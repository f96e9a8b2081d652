"""The console at tenant scale, in headless Chromium against the local system: a device
found among 250,000 that is neither recent nor on the first page, what a viewer may and
may not do (no action buttons; a forged action refused by the API), the audit trail
showing an action just taken, and one device's page.

A stack of its own (this module): the 250,000-device fleet would change the other
module's views."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import boto3
from playwright.sync_api import Page, expect

from lambdas import resources
from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices
from lambdas.adapters.dynamodb_roster import DynamoDbRoster
from seg_local import fleet
from seg_local.aws_events import REGION
from seg_local.provision import table_name
from tests.browser.dashboard.conftest import ARTIFACTS, Seg, event, sign_in, wait_until

FLEET = 250_000


def tables(seg: Seg) -> tuple[DynamoDbRoster, DynamoDbEmailDevices]:
    """The local control plane's roster and view, through its moto endpoint."""
    client = boto3.client(
        "dynamodb", endpoint_url=seg.stack.endpoints["moto_endpoint"], region_name=REGION
    )
    name = lambda table_id: table_name("seg-local", resources.table(table_id))  # noqa: E731
    view = DynamoDbEmailDevices(
        name("email_devices"),
        client,
        devices_table=name("devices"),
        overrides_table=name("manual_overrides"),
    )
    return DynamoDbRoster(name("roster"), client), view


def test_search_finds_one_device_among_250000(page: Page, seg: Seg) -> None:
    seg.report(event("recent.user", "RECENT1"))
    wait_until(
        lambda: seg.admin("GET", "/console/v1/email-devices").json()["total"] >= 1,
        "the first real device",
    )
    roster, view = tables(seg)
    fleet.publish(snapshots=roster, journal=roster, view=view, n=FLEET, now=datetime.now(UTC))
    wait_until(
        lambda: seg.admin("GET", "/console/v1/email-devices").json()["total"] == FLEET + 1,
        "the API to load the 250,000-device roster",
        timeout=90,
    )
    sign_in(page, seg, "viewer")
    expect(page.locator("#devices-total")).to_have_text(re.compile(r"250,001|250\.001|250 001"))
    # The oldest fleet device: last seen 90 days ago, far from the first page.
    target_user, target_device = fleet.user_of(FLEET - 7), fleet.device_of(FLEET - 7)
    first_page = page.locator("#devices-body th[scope=row]")
    expect(first_page.first).to_be_visible()
    assert target_user not in first_page.all_inner_texts()
    page.get_by_label("Search user, device ID or model").fill(target_device.upper())
    expect(page.locator("#devices-body tr")).to_have_count(1)
    expect(page.locator("#devices-body tr")).to_contain_text(target_user)
    expect(page.locator("#devices-total")).to_have_text("1")
    # Filters combine over every device too: blocked, not seen for 60 days.
    page.get_by_label("Search user, device ID or model").fill("")
    page.get_by_label("Access state").select_option("block")
    page.get_by_label("Not seen for (days)").fill("60")
    page.get_by_label("Not seen for (days)").press("Enter")
    expected = sum(
        1
        for i in range(FLEET)
        if fleet.decision_of(i)[0] == "block" and (i * 90 * 86_400) // FLEET > 60 * 86_400
    )
    expect(page.locator("#devices-total")).to_have_text(
        re.compile(f"{expected:,}".replace(",", ".?"))
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-250000.png"))


def test_a_viewer_sees_no_actions_and_the_api_refuses_a_forged_one(page: Page, seg: Seg) -> None:
    seg.report(event("viewer.target", "VIEWTARGET"))
    sign_in(page, seg, "viewer")
    expect(page.locator("#role")).to_have_text("viewer")
    page.get_by_label("Search user, device ID or model").fill("viewtarget")
    row = page.locator("#devices-body tr")
    expect(row).to_have_count(1)
    expect(row.get_by_role("button")).to_have_count(0)
    row.get_by_role("link", name="viewer.target").click()
    expect(page.locator("#device-title")).to_contain_text("viewtarget")
    expect(page.locator("#device-actions button")).to_have_count(0)
    expect(page.locator("#note-input")).to_have_count(0)
    # What the page does not offer, the API refuses: a hand-made request with the
    # viewer's own token.
    forged = page.evaluate(
        """async () => {
            const r = await fetch("v1/email-devices/viewer.target/VIEWTARGET/override", {
                method: "POST",
                headers: {"Content-Type": "application/json",
                          Authorization: `Bearer ${sessionStorage.getItem("seg.console.token")}`},
                body: JSON.stringify({action: "block", reason: "forged"}),
            });
            return [r.status, (await r.json()).detail];
        }"""
    )
    assert forged == [403, "this needs the operator role; viewer holds viewer"]
    page.get_by_role("tab", name="Notices to users").click()
    expect(page.locator("#notices-readonly")).to_be_visible()
    expect(page.locator("#notices-save")).to_be_hidden()
    expect(page.locator("#notices-subject")).to_be_disabled()


def test_the_audit_trail_shows_an_action_just_taken(page: Page, seg: Seg) -> None:
    seg.report(event("audit.target", "AUDITDEV1"))
    sign_in(page, seg, "operator")
    page.get_by_label("Search user, device ID or model").fill("auditdev1")
    row = page.locator("#devices-body tr")
    expect(row).to_have_count(1)
    row.get_by_role("button", name=re.compile("^Block")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Reason").fill("lost on the train")
    dialog.get_by_role("button", name="Block").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("tab", name="Audit trail").click()
    first = page.locator("#audit-body tr").first
    expect(first).to_contain_text("Blocked a device")
    expect(first).to_contain_text("audit.target/auditdev1")
    expect(first).to_contain_text("lost on the train")
    expect(first).to_contain_text("operator")
    expect(first).to_contain_text("override: — → block")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit.png"))


def test_a_device_page(page: Page, seg: Seg) -> None:
    now = datetime.now(UTC)
    seg.enroll(
        "page.owner",
        "PAGEDEV1",
        compliant=False,
        model="Pixel 8",
        platform="Android",
        os_version="Android 15",
    )
    seg.report(
        event("page.owner", "PAGEDEV1", command="FolderSync", at=now - timedelta(minutes=3)),
        event(
            "page.owner",
            "PAGEDEV1",
            decision="block",
            reason="non-compliant: no passcode",
            at=now - timedelta(minutes=1),
        ),
    )
    sign_in(page, seg, "operator")
    page.get_by_label("Search user, device ID or model").fill("pagedev1")
    expect(page.locator("#devices-body tr")).to_have_count(1)
    expect(page.locator("#devices-body tr")).to_contain_text("Android 15")
    expect(page.locator("#devices-body tr")).not_to_contain_text("Android Android")
    page.locator("#devices-body tr").get_by_role("link").click()
    device = page.locator("#device")
    expect(device.locator("#device-title")).to_contain_text("page.owner")
    expect(device).to_contain_text("What each cluster's gateways saw")
    history = device.locator(".history tbody tr")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("Sync")
    expect(history.first).to_contain_text("no passcode")
    expect(history.nth(1)).to_contain_text("FolderSync")
    expect(device).to_contain_text("check-in: compromised no, encrypted yes, passcode no")
    expect(device.locator("#device-actions button")).to_have_count(2)  # block, allow
    page.get_by_label("Note for operators").fill("Owner is travelling until Friday")
    page.get_by_role("button", name="Save note").click()
    expect(device.locator(".note-text")).to_contain_text("Owner is travelling until Friday")
    assert "#device=page.owner&id=pagedev1" in page.url
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "device-page.png"), full_page=True)
    page.get_by_role("button", name="Back to the list").click()
    expect(page.locator("#panel-devices")).to_be_visible()
