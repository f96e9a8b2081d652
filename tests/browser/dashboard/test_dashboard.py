"""The email management dashboard, driven like an admin drives it."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.dashboard.conftest import (
    ARTIFACTS,
    OAUTH_AUTHORIZE_URL,
    Seg,
    event,
    sign_in,
    wait_until,
)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def row(page: Page, device_id: str) -> Locator:
    return page.locator("#devices-body tr", has=page.locator("td.cell-id", has_text=device_id))


# (user, device id, device type, model, OS, user agent, decision, rule, reason, command,
#  node, compliant posture, minutes since the last sync)
FLEET = [
    (
        "alice.martin",
        "F2LX0QK8Q1PM",
        "iPhone",
        "iPhone 15 Pro",
        "17.4",
        "Apple-iPhone16C1/2104.200",
        "allow",
        "entry",
        "compliant",
        "Sync",
        "node-1",
        True,
        0,
    ),
    (
        "bruno.costa",
        "SEC1A2B3C4D5",
        "SAMSUNGSMG991B",
        "Galaxy S21",
        "14",
        "Android-SAMSUNG-SM-G991B/101.11",
        "block",
        "entry",
        "device not compliant: no passcode",
        "Sync",
        "node-2",
        False,
        1,
    ),
    (
        "chen.wei",
        "4B7E2A9D1C03",
        "Android",
        "",
        "",
        "Android-Pixel8/14.0",
        "block",
        "unknown_device",
        "device is not enrolled in the MDM",
        "FolderSync",
        "node-1",
        None,
        1,
    ),
    (
        "dana.levi",
        "DMPX31KL8Q2R",
        "iPad",
        "iPad Air",
        "17.3",
        "Apple-iPad13C1/2102.100",
        "allow",
        "entry",
        "compliant",
        "Ping",
        "node-2",
        True,
        2,
    ),
    (
        "erik.berg",
        "OUTLK5F3A9C7",
        "Outlook",
        "iPhone 13",
        "17.2",
        "Outlook-iOS/2.0",
        "allow",
        "entry",
        "compliant",
        "Sync",
        "node-1",
        True,
        3,
    ),
    (
        "farah.khan",
        "GH7K2LQ9W4NB",
        "iPhone",
        "iPhone 14",
        "16.7",
        "Apple-iPhone15C2/2003.100",
        "quarantine",
        "rule:ios-16",
        "iOS 16 is quarantined",
        "Sync",
        "node-1",
        True,
        4,
    ),
    (
        "gopal.iyer",
        "SMA546B77X2Q",
        "SAMSUNGSMA546B",
        "Galaxy A54",
        "13",
        "Android-SAMSUNG-SM-A546B/100.3",
        "allow",
        "entry",
        "compliant",
        "SendMail",
        "node-2",
        True,
        6,
    ),
    (
        "hana.sato",
        "K9PQ2M7X4LZA",
        "iPhone",
        "iPhone 12",
        "17.4",
        "Apple-iPhone13C2/2104.200",
        "block",
        "entry",
        "device not compliant: compromised",
        "Ping",
        "node-1",
        False,
        9,
    ),
]


def summary(seg: Seg) -> dict[str, Any]:
    response = seg.admin("GET", "/console/v1/email-devices/summary")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_main_view_at_a_glance(page: Page, seg: Seg) -> None:
    """A realistic fleet, its last hour of syncs, and the screenshot of the main view."""
    now = datetime.now(UTC)
    events = []
    for i, (
        user,
        device,
        dtype,
        model,
        os_v,
        agent,
        decision,
        rule,
        reason,
        command,
        node,
        posture,
        minutes,
    ) in enumerate(FLEET):
        if posture is not None:
            seg.enroll(
                user,
                device,
                platform="Android" if "SAMSUNG" in dtype else "iOS",
                model=model,
                os_version=os_v,
                compliant=posture,
            )
        for k in range(40):  # a sync every ~90 s over the last hour, the newest last
            events.append(
                event(
                    user,
                    device,
                    node=node,
                    device_type=dtype,
                    user_agent=agent,
                    decision=decision
                    if k == 0 or decision == "allow" or (i + k) % 3 == 0
                    else "allow",
                    rule=rule,
                    reason=reason,
                    command=command if k == 0 else "Ping",
                    at=now - timedelta(minutes=minutes, seconds=k * 85 + i * 7),
                )
            )
    for node in ("node-1", "node-2"):
        seg.report(*[e for e in events if e["node_id"] == node], node=node)
    # Every row and every minute's counter written, so the screenshot shows it all.
    window_start = now + timedelta(minutes=1) - timedelta(hours=1)
    in_window = sum(1 for e in events if datetime.fromisoformat(e["at"]) >= window_start)
    wait_until(
        lambda: (
            seg.admin("GET", "/console/v1/email-devices").json()["total"] >= len(FLEET)
            and sum(p["requests"] for p in summary(seg)["series"]) >= in_window
        ),
        "the payload reader to write the fleet",
    )
    sign_in(page, seg)
    expect(row(page, "f2lx0qk8q1pm")).to_contain_text("Compliant")
    expect(row(page, "k9pq2m7x4lza")).to_contain_text("Non-compliant")
    expect(page.locator("#count-block")).not_to_have_text("\u2013")  # the placeholder dash
    assert int(page.locator("#blocked-last-hour").inner_text()) >= 2
    expect(page.locator("#chart svg rect.chart-bar").first).to_be_attached()
    expect(page.locator("#devices-body tr").first).to_contain_text("alice.martin")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))


def test_wrong_token_is_refused_with_a_message(page: Page, seg: Seg) -> None:
    page.goto(seg.console_url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Console token").fill("not-the-token")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signin-message")).to_contain_text("refused")
    expect(page.locator("#main")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('seg.console.token')") is None
    # And the API itself gives nothing without the token.
    status = page.evaluate("fetch('v1/email-devices').then(r => r.status)")
    assert status == 401


def test_devices_appear_after_access_events_without_reload(page: Page, seg: Seg) -> None:
    sign_in(page, seg)
    page.evaluate("window.__sameDocument = true")
    user, device = unique("arrive"), unique("dev")
    seg.report(event(user, device, command="FolderSync"))
    expect(row(page, device)).to_be_visible()
    expect(row(page, device)).to_contain_text(user)
    expect(row(page, device)).to_contain_text("FolderSync")
    expect(row(page, device).locator("time")).to_have_attribute(
        "datetime", re.compile(r"^\d{4}-\d\d-\d\dT")
    )
    assert page.evaluate("window.__sameDocument") is True


def test_filter_search_and_sort_survive_refreshes(page: Page, seg: Seg) -> None:
    tag = unique("flt")
    allowed = [f"{tag}-a{i}" for i in range(3)]
    blocked = [f"{tag}-b{i}" for i in range(2)]
    seg.report(
        *[event(d, d) for d in allowed],
        *[event(d, d, decision="block", reason="device not compliant") for d in blocked],
    )
    sign_in(page, seg)
    page.get_by_label("Search user, device ID or model").fill(tag)
    expect(page.locator("#devices-body tr")).to_have_count(5)

    page.get_by_label("Access state").select_option("block")
    expect(page.locator("#devices-body tr")).to_have_count(2)
    expect(page.locator("#devices-body .badge-block")).to_have_count(2)
    assert "access_state=block" in page.url

    # Search narrows to one device id; the filter and search hold across refreshes.
    page.get_by_label("Search user, device ID or model").fill(blocked[1])
    expect(page.locator("#devices-body tr")).to_have_count(1)
    refreshed = page.locator("#refresh-state").inner_text()
    expect(page.locator("#refresh-state")).not_to_have_text(refreshed, timeout=5000)
    expect(page.locator("#devices-body tr")).to_have_count(1)
    expect(page.get_by_label("Access state")).to_have_value("block")

    # Sort by user, server-side, both ways.
    page.get_by_label("Search user, device ID or model").fill(tag)
    page.get_by_label("Access state").select_option("")
    expect(page.locator("#devices-body tr")).to_have_count(5)
    header = page.locator("th[data-sort=user]")
    header.get_by_role("button").click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    users = page.locator("#devices-body th[scope=row]")
    expect(users.first).to_have_text(allowed[0])
    header.get_by_role("button").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(users.first).to_have_text(blocked[1])
    assert "sort=user" in page.url and "order=desc" in page.url


def test_cursor_paging(page: Page, seg: Seg) -> None:
    tag = unique("pg")
    start = datetime.now(UTC) - timedelta(minutes=5)
    seg.report(
        *[
            event(f"{tag}u{i:02d}", f"{tag}d{i:02d}", at=start + timedelta(seconds=i))
            for i in range(30)
        ]
    )
    sign_in(page, seg)
    page.get_by_label("Rows").select_option("25")
    page.get_by_label("Search user, device ID or model").fill(tag)
    # The search applies after its debounce: wait for it (the page state is in the URL),
    # or "Next" pages through the unfiltered list, and "of 30" may hold for it ("of 300").
    expect(page).to_have_url(re.compile(f"q={tag}"))
    expect(page.locator("#page-info")).to_have_text(re.compile(r"of 30$"))
    expect(page.locator("#devices-body tr")).to_have_count(25)
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#devices-body tr")).to_have_count(5)
    expect(page.locator("#page-info")).to_contain_text("Page 2")
    page.get_by_role("button", name="Previous").click()
    expect(page.locator("#devices-body tr")).to_have_count(25)
    # A stale cursor (bookmarked under another sort) starts again at page 1, no error.
    page.goto(seg.console_url + "?sort=user&cursor=bm90LW91cnM&page=3&q=" + tag)
    expect(page.locator("#page-info")).to_contain_text("Page 1")
    expect(page.locator("#devices-body tr")).to_have_count(30)
    expect(page.locator("#error-banner")).to_be_hidden()
    page.goto(seg.console_url + "?limit=25&q=" + tag)
    expect(page.locator("#devices-body tr")).to_have_count(25)
    # Newest first by default.
    expect(page.locator("#devices-body th[scope=row]").first).to_have_text(f"{tag}u29")


def test_html_in_device_data_is_shown_as_text(page: Page, seg: Seg) -> None:
    tag = unique("x")
    user = f'<img src=x onerror="window.__pwned=1">{tag}'
    # No "/" in the device id: it travels in the API's URL path (see the report on ids
    # with a slash); the user agent carries the closing tags.
    device = f"<svg onload=window.__pwned=2><script>{tag}"
    agent = f"<b id=bold{tag}>Mail</b><img src=x onerror=window.__pwned=3><script>x=4</script>"
    seg.report(event(user, device, user_agent=agent, reason="<i>reason</i>"))
    sign_in(page, seg)
    page.get_by_label("Search user, device ID or model").fill(tag)
    target = page.locator("#devices-body tr")
    expect(target).to_have_count(1)
    expect(target.locator("th[scope=row]")).to_have_text(user.lower())
    expect(target.locator("td.cell-id")).to_have_text(device)
    expect(target.locator("td.cell-agent")).to_have_text(agent)
    assert target.locator("img, script, svg, b, i").count() == 0
    assert page.evaluate("window.__pwned") is None
    # Into the confirmation dialog too.
    target.get_by_role("button", name=re.compile("^Block")).click()
    expect(page.locator("#confirm-user")).to_have_text(user.lower())
    expect(page.locator("#confirm-device")).to_have_text(device)
    expect(page.locator("#confirm-entries")).to_contain_text("No entry yet")
    assert page.locator("#confirm-dialog img, #confirm-dialog script").count() == 0
    page.get_by_role("button", name="Cancel").click()
    assert page.evaluate("window.__pwned") is None


def test_expired_token_returns_to_sign_in(page: Page, seg: Seg) -> None:
    sign_in(page, seg)
    page.evaluate("sessionStorage.setItem('seg.console.token', 'revoked-token')")
    expect(page.locator("#signin-view")).to_be_visible(timeout=5000)
    expect(page.locator("#signin-message")).to_contain_text("Sign in again")
    expect(page.locator("#main")).to_be_hidden()


def test_block_from_the_page_reaches_the_gateway(page: Page, seg: Seg) -> None:
    """The seed's manual console update, end to end: the admin blocks a device on the
    page, the compliance reader pushes it to the gateway node, the device's next sync is
    refused, the gateway reports it and the row shows blocked."""
    user, device = unique("maria"), unique("appl")
    seg.enroll(user, device)
    wait_until(lambda: seg.decision(user, device) == "allow", "the allow entry on the node")
    assert seg.sync(user, device).status_code != 403

    sign_in(page, seg)
    page.get_by_label("Search user, device ID or model").fill(device)
    target = row(page, device)
    expect(target.locator(".badge-allow")).to_have_text("Allowed")
    expect(target).to_contain_text("Compliant")
    expect(target).to_contain_text("iPhone 15")

    target.get_by_role("button", name=re.compile("^Block")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Block this device?")
    expect(dialog).to_contain_text(device)
    enforced = dialog.locator("#confirm-entries li")
    expect(enforced).to_contain_text("Allowed")  # what the cluster's gateways enforce now
    expect(enforced).to_contain_text("local")
    page.screenshot(path=str(ARTIFACTS / "block-dialog.png"))
    dialog.get_by_label("Reason").fill("lost phone")
    dialog.get_by_role("button", name="Block").click()
    expect(dialog).to_be_hidden()
    expect(target.locator(".badge-pending")).to_be_visible()

    wait_until(lambda: seg.decision(user, device) == "block", "the block pushed to the node")
    refused = seg.sync(user, device)
    assert refused.status_code == 403, refused.text
    expect(target.locator(".badge-block")).to_have_text("Blocked")
    expect(target.locator(".badge-override")).to_have_text("Manual block")
    expect(target.locator(".badge-pending")).to_have_count(0)

    # The cluster panel shows the node that enforced it, connected.
    page.get_by_role("tab", name="Gateway clusters").click()
    node_row = page.locator(".cluster tbody tr", has_text="node-1")
    expect(node_row).to_contain_text("Connected")
    version = page.locator(".cluster-facts strong").first.inner_text()
    expect(node_row.locator("td").nth(1)).to_have_text(version)  # enforces the newest policy
    expect(node_row.locator("td").nth(3)).to_have_text("0")  # nothing spooled
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "clusters.png"))


def test_sign_in_through_the_hosted_ui(page: Page, seg: Seg) -> None:
    """The Cognito hosted-UI round trip (implicit grant), answered inside the browser:
    the page sends the browser to the authorize URL with a state, the "hosted UI"
    redirects back with the token in the fragment, the page signs in and wipes it."""
    seen: dict[str, str] = {}

    def hosted_ui(route: Route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        seen.update({k: v[0] for k, v in query.items()})
        fragment = urlencode({"access_token": seg.admin_token, "state": seen["state"]})
        route.fulfill(status=302, headers={"Location": f"{seg.console_url}#{fragment}"})

    page.route(OAUTH_AUTHORIZE_URL + "*", hosted_ui)
    page.goto(seg.console_url)
    page.get_by_role("button", name="Sign in with your organisation").click()
    page.locator("#main").wait_for(state="visible")
    assert seen["client_id"] == "seg-console-test"
    assert seen["response_type"] == "token"
    assert seen["redirect_uri"] == seg.console_url
    assert "#" not in page.url and seg.admin_token not in page.url

    # A redirect that does not answer this browser's request is refused.
    page.evaluate("sessionStorage.clear()")
    forged = urlencode({"access_token": seg.admin_token, "state": "not-ours"})
    page.goto("about:blank")
    page.goto(f"{seg.console_url}#{forged}")
    expect(page.locator("#signin-message")).to_contain_text("did not match")
    expect(page.locator("#main")).to_be_hidden()


def test_keyboard_sorting_and_dialog(page: Page, seg: Seg) -> None:
    device = unique("kbd")
    seg.report(event(device, device))
    sign_in(page, seg)
    page.get_by_label("Search user, device ID or model").fill(device)
    expect(row(page, device)).to_be_visible()

    sort_button = page.locator("th[data-sort=device_id] button")
    sort_button.focus()
    page.keyboard.press("Enter")
    expect(page.locator("th[data-sort=device_id]")).to_have_attribute("aria-sort", "ascending")

    block = row(page, device).get_by_role("button", name=re.compile("^Block"))
    block.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.locator("#confirm-reason")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(block).to_be_focused()  # focus returns to the row, and survives refreshes
    refreshed = page.locator("#refresh-state").inner_text()
    expect(page.locator("#refresh-state")).not_to_have_text(refreshed)
    expect(block).to_be_focused()

    # Tabs follow the ARIA pattern: arrow keys move between them.
    page.get_by_role("tab", name="Email devices").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Gateway clusters")).to_have_attribute(
        "aria-selected", "true"
    )
    expect(page.locator("#panel-clusters")).to_be_visible()


def test_page_helpers(page: Page, seg: Seg) -> None:
    """The page's pure helpers, run in the browser that runs them for real."""
    page.goto(seg.console_url)
    results = page.evaluate(
        """async () => {
        const f = await import("./static/format.js");
        const d = await import("./static/devices.js");
        const c = await import("./static/chart.js");
        const now = new Date("2026-11-27T12:00:00Z");
        const ago = (s) => f.relativeTime(new Date(now - s * 1000), now);
        const state = d.readViewState(
            "?access_state=evil&compliance_state=non_compliant&sort=password&limit=7&q=bob");
        return {
            times: [ago(2), ago(42), ago(150), ago(7300), ago(200000), ago(-90),
                    f.relativeTime(null)],
            durations: [f.duration(8), f.duration(240), f.duration(7500), f.duration(null)],
            labels: [f.stateLabel("non_compliant"), f.accessLabel("quarantine"),
                     f.accessClass("<b>"), f.ruleLabel("rule:ios-16"), f.ruleLabel("override")],
            nice: [c.niceMax(0), c.niceMax(7), c.niceMax(130), c.niceMax(1000)],
            state: [state.access_state, state.compliance_state, state.sort, state.order,
                    state.limit, state.q],
            written: d.writeViewState({...state, access_state: "block"}),
            pending: [
                d.isPending({override: null, pending: false}, {action: "block"}),
                d.isPending({override: "block", pending: true}, {action: "block"}),
                d.isPending({override: "block", pending: false}, {action: "block"}),
                d.isPending({override: null, pending: false}, {action: "clear"}),
                d.isPending({override: null, pending: false}, undefined),
            ],
        };
    }"""
    )
    assert results["times"] == [
        "just now",
        "42 s ago",
        "2 min ago",
        "2 h ago",
        "2 d ago",
        "in 1 min",
        "never",
    ]
    assert results["durations"] == ["8 s", "4 min", "2 h 5 min", "\u2014"]
    assert results["labels"] == [
        "Non-compliant",
        "Quarantined",
        "unknown",
        "Cluster rule ios-16",
        "Manual override",
    ]
    assert results["nice"] == [1, 10, 200, 1000]
    # Unknown values from a hand-edited address are dropped, not sent to the API.
    assert results["state"] == ["", "non_compliant", "last_seen", "desc", 50, "bob"]
    assert results["written"] == "?q=bob&access_state=block&compliance_state=non_compliant"
    assert results["pending"] == [True, True, False, False, False]
