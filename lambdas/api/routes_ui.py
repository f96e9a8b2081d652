"""The email management dashboard's static page: ``GET /console/`` and
``/console/static/*``.

The page itself needs no authentication (it holds no data); every datum it shows comes
from the console API (``/console/v1/...``) with the admin's token. The files live in
``lambdas/api/console_ui/`` and ship in the Lambda bundle as package data.

Why these headers:
- a strict Content-Security-Policy (``script-src 'self'``, no inline script, no inline
  style, ``connect-src 'self'``) so that even a rendering bug cannot run injected script
  or send data elsewhere: user names, device ids and user agents come from devices;
- ``X-Content-Type-Options: nosniff`` and exact content types, so a file is only ever
  interpreted as what it is;
- ``Cache-Control: no-cache`` with a strong ``ETag``: the browser revalidates each file
  (a cheap 304) so a deployment never mixes an old script with a new page.

``config.json`` is generated from the environment (``ENV_OAUTH_AUTHORIZE_URL``,
``ENV_OAUTH_CLIENT_ID``, ``ENV_OAUTH_SCOPES``): in AWS it points the sign-in page at the
Cognito hosted UI; locally it is empty and the admin pastes the token ``seg up`` prints.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from lambdas import resources
from seg_contract.decision_rules import (
    CLUSTER_RULE_LABEL,
    CLUSTER_RULE_PREFIX,
    RULE_LABELS,
    DecisionRule,
)

UI_DIR = Path(__file__).with_name("console_ui")

# Cognito hosted UI (implicit grant): the authorize endpoint, e.g.
# https://<domain>.auth.<region>.amazoncognito.com/oauth2/authorize, and the app client id.
ENV_OAUTH_AUTHORIZE_URL = resources.ENV_CONSOLE_OAUTH_AUTHORIZE_URL
ENV_OAUTH_CLIENT_ID = resources.ENV_CONSOLE_OAUTH_CLIENT_ID
ENV_OAUTH_SCOPES = resources.ENV_CONSOLE_OAUTH_SCOPES
ENV_REFRESH_SECONDS = resources.ENV_CONSOLE_REFRESH_SECONDS

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The token never travels in a URL we link to, but no page of ours needs a referrer.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class UiConfigError(ValueError):
    """The dashboard's sign-in configuration in the environment is unusable."""


@dataclass(frozen=True)
class UiConfig:
    """What the page reads from ``config.json`` before sign-in."""

    oauth_authorize_url: str = ""
    oauth_client_id: str = ""
    oauth_scopes: str = "openid email"
    refresh_seconds: int = 5

    def to_json(self) -> bytes:
        oauth = None
        if self.oauth_authorize_url:
            oauth = {
                "authorize_url": self.oauth_authorize_url,
                "client_id": self.oauth_client_id,
                "scopes": self.oauth_scopes,
            }
        body = {"oauth": oauth, "refresh_seconds": self.refresh_seconds}
        return json.dumps(body, separators=(",", ":")).encode()


def parse_ui_config(env: Mapping[str, str]) -> UiConfig:
    """Fail fast with a message naming the variable at fault."""
    authorize_url = env.get(ENV_OAUTH_AUTHORIZE_URL, "").strip()
    client_id = env.get(ENV_OAUTH_CLIENT_ID, "").strip()
    if authorize_url and not authorize_url.startswith("https://"):
        raise UiConfigError(f"{ENV_OAUTH_AUTHORIZE_URL} must be an https:// URL")
    if bool(authorize_url) != bool(client_id):
        raise UiConfigError(f"set both {ENV_OAUTH_AUTHORIZE_URL} and {ENV_OAUTH_CLIENT_ID}")
    raw_refresh = env.get(ENV_REFRESH_SECONDS, "5").strip() or "5"
    try:
        refresh = int(raw_refresh)
    except ValueError:
        raise UiConfigError(f"{ENV_REFRESH_SECONDS} must be a whole number of seconds") from None
    if not 1 <= refresh <= 300:
        raise UiConfigError(f"{ENV_REFRESH_SECONDS} must be between 1 and 300")
    return UiConfig(
        oauth_authorize_url=authorize_url,
        oauth_client_id=client_id,
        oauth_scopes=env.get(ENV_OAUTH_SCOPES, "").strip() or "openid email",
        refresh_seconds=refresh,
    )


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, content_type: str) -> _Asset:
    return _Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


RULES_MODULE = "rules.js"


def render_rules_module() -> str:
    """The console's ES module of the decision-rule names and their labels, from the
    contract (``seg_contract.decision_rules``): the one definition, never copied."""
    names = {rule.name: str(rule) for rule in DecisionRule}
    labels = {str(rule): label for rule, label in RULE_LABELS.items()}
    return (
        "// Rendered from seg_contract/decision_rules.py when the dashboard is served.\n"
        f"export const RULES = Object.freeze({json.dumps(names, sort_keys=True)});\n"
        f"export const RULE_LABELS = Object.freeze({json.dumps(labels, sort_keys=True)});\n"
        f"export const CLUSTER_RULE_PREFIX = {json.dumps(CLUSTER_RULE_PREFIX)};\n"
        f"export const CLUSTER_RULE_LABEL = {json.dumps(CLUSTER_RULE_LABEL)};\n"
    )


def load_assets(ui_dir: Path = UI_DIR) -> dict[str, _Asset]:
    """Every servable file, read once (a warm Lambda serves them from memory), and the
    rendered ``rules.js``. Only files with a known content type are served; nothing else
    under the directory is reachable."""
    assets: dict[str, _Asset] = {
        RULES_MODULE: _asset(render_rules_module().encode(), CONTENT_TYPES[".js"])
    }
    for path in sorted(ui_dir.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type:
            assets[path.relative_to(ui_dir).as_posix()] = _asset(path.read_bytes(), content_type)
    if "index.html" not in assets:
        raise FileNotFoundError(f"dashboard page missing: {ui_dir / 'index.html'}")
    return assets


def _respond(request: Request, asset: _Asset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(content=asset.body, media_type=asset.content_type, headers=headers)


_CONFIG_ENV = (ENV_OAUTH_AUTHORIZE_URL, ENV_OAUTH_CLIENT_ID, ENV_OAUTH_SCOPES, ENV_REFRESH_SECONDS)


@lru_cache(maxsize=4)
def _config_asset(values: tuple[tuple[str, str], ...]) -> _Asset:
    return _asset(parse_ui_config(dict(values)).to_json(), CONTENT_TYPES[".json"])


def _env_config_asset() -> _Asset:
    """config.json for the process environment, parsed once per distinct value (so a test
    or the local runtime that sets the variables after import is still honoured)."""
    return _config_asset(tuple((name, os.environ.get(name, "")) for name in _CONFIG_ENV))


def build_router(config: UiConfig | None = None, ui_dir: Path = UI_DIR) -> APIRouter:
    """The dashboard's routes; ``config`` None means "from the environment"."""
    assets = load_assets(ui_dir)
    fixed_config = None if config is None else _asset(config.to_json(), CONTENT_TYPES[".json"])
    ui = APIRouter(tags=["dashboard"], include_in_schema=False)

    @ui.get("/console")
    def console_redirect() -> RedirectResponse:
        # Relative, so it also works behind a stage or path prefix.
        return RedirectResponse("console/", status_code=308)

    @ui.get("/console/")
    def console_page(request: Request) -> Response:
        return _respond(request, assets["index.html"])

    @ui.get("/console/static/{name:path}")
    def console_static(name: str, request: Request) -> Response:
        if name == "config.json":
            return _respond(request, fixed_config or _env_config_asset())
        asset = assets.get(name)
        if asset is None or name == "index.html":
            raise HTTPException(status_code=404, detail=f"no dashboard file named {name!r}")
        return _respond(request, asset)

    return ui


# Fail fast on a broken configuration when the app is built, not on the first page view.
parse_ui_config(os.environ)
# What the app includes (config.json follows the environment).
router = build_router()
