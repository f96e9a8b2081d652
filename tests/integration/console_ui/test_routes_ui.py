"""The dashboard's static routes: content types, security headers, caching, config,
and the rules the page's files must keep (no inline script, no HTML built from data)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lambdas.api import routes_ui
from lambdas.api.app import create_app
from lambdas.api.deps import Container
from lambdas.api.routes_ui import UiConfig, UiConfigError, build_router, parse_ui_config
from lambdas.settings import parse_settings
from seg_contract.decision_rules import RULE_LABELS
from tests.support.aws import AwsEnv, aws  # noqa: F401  (fixture)

UI_DIR = routes_ui.UI_DIR


def _client(config: UiConfig | None = None) -> TestClient:
    app = FastAPI()
    app.include_router(build_router(config or UiConfig()))
    return TestClient(app)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return _client()


def test_page_is_html_with_strict_security_headers(client: TestClient) -> None:
    response = client.get("/console/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"].startswith('"')
    assert "<title>SEG Console" in response.text


def test_unchanged_file_revalidates_with_304(client: TestClient) -> None:
    first = client.get("/console/static/app.js")
    again = client.get("/console/static/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["x-content-type-options"] == "nosniff"


def test_console_without_slash_redirects_relatively(client: TestClient) -> None:
    response = client.get("/console", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "console/"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("devices.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
        ("config.json", "application/json"),
    ],
)
def test_static_files_have_exact_content_types(
    client: TestClient, name: str, content_type: str
) -> None:
    response = client.get(f"/console/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/console/static/nope.js",
        "/console/static/../routes_ui.py",
        "/console/static/%2e%2e/routes_ui.py",
        "/console/static/..%2Froutes_ui.py",
        "/console/static/index.html",
        "/console/static/",
    ],
)
def test_only_known_dashboard_files_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "detail" in response.json()


def test_config_defaults_to_pasted_tokens(client: TestClient) -> None:
    assert client.get("/console/static/config.json").json() == {
        "oauth": None,
        "refresh_seconds": 5,
    }


def test_config_names_the_cognito_hosted_ui_when_configured() -> None:
    config = parse_ui_config(
        {
            routes_ui.ENV_OAUTH_AUTHORIZE_URL: "https://seg.auth.eu-west-1.amazoncognito.com/oauth2/authorize",
            routes_ui.ENV_OAUTH_CLIENT_ID: "abc123",
            routes_ui.ENV_REFRESH_SECONDS: "3",
        }
    )
    body = _client(config).get("/console/static/config.json").json()
    assert body == {
        "oauth": {
            "authorize_url": "https://seg.auth.eu-west-1.amazoncognito.com/oauth2/authorize",
            "client_id": "abc123",
            "scopes": "openid email",
        },
        "refresh_seconds": 3,
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                routes_ui.ENV_OAUTH_AUTHORIZE_URL: "http://x/authorize",
                routes_ui.ENV_OAUTH_CLIENT_ID: "c",
            },
            "https://",
        ),
        ({routes_ui.ENV_OAUTH_AUTHORIZE_URL: "https://x/authorize"}, "set both"),
        ({routes_ui.ENV_OAUTH_CLIENT_ID: "c"}, "set both"),
        ({routes_ui.ENV_REFRESH_SECONDS: "soon"}, "whole number"),
        ({routes_ui.ENV_REFRESH_SECONDS: "0"}, "between 1 and 300"),
    ],
)
def test_bad_ui_configuration_fails_fast(env: dict[str, str], message: str) -> None:
    with pytest.raises(UiConfigError, match=message):
        parse_ui_config(env)


def test_missing_page_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        build_router(UiConfig(), ui_dir=tmp_path)


# --- rules the page's own files keep -------------------------------------------------


class _Audit(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.refs: list[str] = []
        self.ids: list[str] = []
        self.labelled: set[str] = set()
        self.controls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in a:
            if name.startswith("on"):
                self.problems.append(f"inline handler {name} on <{tag}>")
        if "style" in a:
            self.problems.append(f"inline style on <{tag}>")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            if not a.get("src"):
                self.problems.append("inline <script>")
            self.refs.append(a.get("src") or "")
            self._in_script = True
        if tag == "link" and a.get("href"):
            self.refs.append(a["href"] or "")
        if tag == "img" and a.get("src"):
            self.refs.append(a["src"] or "")
        if a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "label" and a.get("for"):
            self.labelled.add(a["for"] or "")
        if tag in {"input", "select", "textarea"}:
            self.controls.append(a.get("id") or f"<{tag} without id>")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script body")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def _audit() -> _Audit:
    audit = _Audit()
    audit.feed((UI_DIR / "index.html").read_text())
    return audit


def test_page_has_no_inline_script_style_or_handlers() -> None:
    assert _audit().problems == []


def test_every_form_control_has_a_label_and_ids_are_unique() -> None:
    audit = _audit()
    assert [c for c in audit.controls if c not in audit.labelled] == []
    assert len(audit.ids) == len(set(audit.ids))


def test_every_referenced_file_exists(client: TestClient) -> None:
    refs = [r for r in _audit().refs if r]
    imports = [
        "static/" + m
        for js in UI_DIR.glob("*.js")
        for m in re.findall(r'from "\./([\w.-]+)"', js.read_text())
    ]
    for ref in refs + imports:
        assert ref.startswith("static/"), ref  # relative: works behind any path prefix
        assert client.get("/console/" + ref).status_code == 200, ref


def test_scripts_never_build_html_from_strings() -> None:
    """Escaping by construction: data reaches the DOM through textContent only."""
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"createContextualFragment|DOMParser|setAttribute\(\s*[\"']on"
    )
    for js in sorted(UI_DIR.glob("*.js")):
        found = forbidden.findall(js.read_text())
        assert found == [], f"{js.name}: {found}"


def test_no_asset_is_fetched_from_the_internet() -> None:
    for path in UI_DIR.iterdir():
        text = path.read_text()
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", text)
        # The SVG namespace is an identifier, not a fetch.
        assert [u for u in urls if "www.w3.org" not in u] == [], path.name


def test_config_follows_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FastAPI()
    app.include_router(build_router())
    client = TestClient(app)
    monkeypatch.setenv(routes_ui.ENV_REFRESH_SECONDS, "2")
    assert client.get("/console/static/config.json").json()["refresh_seconds"] == 2
    monkeypatch.setenv(routes_ui.ENV_REFRESH_SECONDS, "7")
    assert client.get("/console/static/config.json").json()["refresh_seconds"] == 7


def test_the_control_plane_app_serves_the_dashboard(aws: AwsEnv) -> None:  # noqa: F811
    """The real app (``create_app``) includes these routes, outside the console API's
    authentication: the page loads without a token, the data does not."""
    settings = parse_settings(
        {**aws.env, "SEG_CONSOLE_AUTH": "static", "SEG_CONSOLE_TOKEN_SHA256": "0" * 64}
    )
    app = create_app(container=Container(settings, dynamodb=aws.dynamodb, sqs=aws.sqs))
    client = TestClient(app)
    page = client.get("/console/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/console/static/app.js").status_code == 200
    assert client.get("/console/v1/whoami").status_code == 401
    assert "/console/" not in client.get("/openapi.json").json()["paths"]


def test_rule_names_come_from_the_contract(client: TestClient) -> None:
    """The page's rule labels are rendered from seg_contract, never a copy in the script."""
    response = client.get("/console/static/rules.js")
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    for rule, label in RULE_LABELS.items():
        assert f'"{rule.value}": "{label}"' in response.text
    assert 'CLUSTER_RULE_PREFIX = "rule:"' in response.text
    for js in UI_DIR.glob("*.js"):
        for label in RULE_LABELS.values():
            assert f'"{label}"' not in js.read_text(), (js.name, label)
